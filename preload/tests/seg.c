/*
 * seg.c - a tiny segment helper for the preload tests and the demo (create,
 * stats, rm), so the tests depend on the library only, not on the tools.
 *
 *   shmlimit-preload-seg create NAME CONFIG.json
 *   shmlimit-preload-seg stats NAME      one "key value" line per counter
 *                                        (POOL.admitted, POOL.limit_rpm, ...,
 *                                        POOL.avail_itpm, all.admitted,
 *                                        spend_month, ...)
 *   shmlimit-preload-seg rm NAME
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmlimit.h"

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	while (buf != NULL) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
		if (n == cap) {
			char *nb = realloc(buf, cap * 2);
			if (nb == NULL) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	fclose(f);
	*len = n;
	return buf;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s create NAME CONFIG | stats NAME | rm NAME\n", argv[0]);
		return 2;
	}
	shl_err err = {{0}};
	if (strcmp(argv[1], "create") == 0 && argc == 4) {
		size_t len;
		char *json = slurp(argv[3], &len);
		if (json == NULL) {
			perror(argv[3]);
			return 1;
		}
		shl_config *cfg;
		int r = shl_config_parse(json, len, &cfg, &err);
		free(json);
		if (r == 0) {
			r = shl_create(argv[2], cfg, SHL_CREATE_REPLACE, NULL, &err);
			shl_config_free(cfg);
		}
		if (r < 0) {
			fprintf(stderr, "create: %s: %s\n", shl_strerror(r), err.msg);
			return 1;
		}
		return 0;
	}
	if (strcmp(argv[1], "rm") == 0) {
		int r = shl_unlink(argv[2]);
		return r < 0 && r != -ENOENT;
	}
	if (strcmp(argv[1], "stats") == 0) {
		shl_t *h;
		int r = shl_attach(argv[2], SHL_ATTACH_RDONLY, &h, &err);
		if (r < 0) {
			fprintf(stderr, "attach: %s: %s\n", shl_strerror(r), err.msg);
			return 1;
		}
		shl_stats *st = malloc(sizeof(*st));
		if (st == NULL || shl_stats_get(h, st) < 0) {
			fprintf(stderr, "stats failed\n");
			return 1;
		}
		printf("spend_month %" PRId64 "\nspend_exhausted %d\nspend_cap %" PRId64 "\n",
		       st->spend_month, st->spend_exhausted, st->spend_cap);
		uint64_t tot[9] = {0};
		for (int i = 0; i < st->npools; i++) {
			const shl_pool_stats *p = &st->pools[i];
			uint64_t v[9] = {p->admitted, p->refused, p->settled, p->cancelled,
					 p->server_429, p->tokens_in, p->tokens_out, p->cache_write,
					 p->cache_read};
			static const char *k[9] = {"admitted", "refused", "settled", "cancelled",
						   "server_429", "tokens_in", "tokens_out",
						   "cache_write", "cache_read"};
			for (int j = 0; j < 9; j++) {
				printf("%s.%s %" PRIu64 "\n", p->name, k[j], v[j]);
				tot[j] += v[j];
			}
			printf("%s.hold_ns %" PRId64 "\n", p->name, p->hold_ns);
			printf("%s.limit_rpm %" PRIu64 "\n%s.limit_itpm %" PRIu64 "\n%s.limit_otpm %" PRIu64
			       "\n", p->name, p->limit[0], p->name, p->limit[1], p->name, p->limit[2]);
			printf("%s.burst_rpm %" PRIu64 "\n%s.burst_itpm %" PRIu64 "\n%s.burst_otpm %" PRIu64
			       "\n", p->name, p->burst[0], p->name, p->burst[1], p->name, p->burst[2]);
			printf("%s.spend %" PRId64 "\n", p->name, p->spend);
			printf("%s.waited %" PRIu64 "\n", p->name, p->waited);
			printf("%s.avail_rpm %.3f\n%s.avail_itpm %.3f\n%s.avail_otpm %.3f\n", p->name,
			       p->available[0], p->name, p->available[1], p->name, p->available[2]);
		}
		static const char *k[9] = {"admitted", "refused", "settled", "cancelled",
					   "server_429", "tokens_in", "tokens_out",
					   "cache_write", "cache_read"};
		for (int j = 0; j < 9; j++)
			printf("all.%s %" PRIu64 "\n", k[j], tot[j]);
		free(st);
		shl_detach(h);
		return 0;
	}
	fprintf(stderr, "bad command\n");
	return 2;
}
