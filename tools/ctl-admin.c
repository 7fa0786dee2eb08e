/*
 * ctl-admin.c - shmlimit-ctl's operator commands: create, apply, show,
 * reset, rm, check and hold.  Each is one small function over the public
 * API (see ctl.h for the helpers).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Short options of each subcommand; tools/check-flag-docs.sh reads these lines. */
#define CREATE_SHORTOPTS "t:c:fgh"
#define APPLY_SHORTOPTS "t:h"
#define RESET_SHORTOPTS "bscah"

static const struct option create_opts[] = {
	{"tier", required_argument, NULL, 't'},
	{"config", required_argument, NULL, 'c'},
	{"force", no_argument, NULL, 'f'},
	{"group", no_argument, NULL, 'g'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option apply_opts[] = {
	{"tier", required_argument, NULL, 't'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option reset_opts[] = {
	{"buckets", no_argument, NULL, 'b'},
	{"spend", no_argument, NULL, 's'},
	{"counters", no_argument, NULL, 'c'},
	{"all", no_argument, NULL, 'a'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
int cmd_create(int argc, char **argv)
{
	const char *tier = NULL, *file = NULL;
	unsigned flags = 0;
	int c;
	while ((c = getopt_long(argc, argv, CREATE_SHORTOPTS, create_opts, NULL)) != -1) {
		switch (c) {
		case 't':
			tier = optarg;
			break;
		case 'c':
			file = optarg;
			break;
		case 'f':
			flags |= SHL_CREATE_REPLACE;
			break;
		case 'g':
			flags |= SHL_CREATE_GROUP;
			break;
		default:
			return common_opt(c);
		}
	}
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	if (!tier == !file)
		return usage_error("give exactly one of --tier N and --config FILE", NULL);
	const char *name = argv[optind];
	shl_config *cfg = NULL;
	if ((r = load_config(tier, file, &cfg)) != 0)
		return r;
	shl_err e;
	memset(&e, 0, sizeof(e));
	r = shl_create(name, cfg, flags, NULL, &e);
	shl_config_free(cfg);
	if (r == -EEXIST) {
		fprintf(stderr, PROG " create: segment '%s' already exists (use --force to replace it)\n",
			name);
		return TX_EXISTS;
	}
	if (r < 0)
		return lib_error(name, r, &e);
	printf("created %s from %s%s\n", name, tier ? "preset " : "", tier ? tier : file);
	return TX_OK;
}

int cmd_apply(int argc, char **argv)
{
	const char *tier = NULL;
	int c;
	while ((c = getopt_long(argc, argv, APPLY_SHORTOPTS, apply_opts, NULL)) != -1) {
		if (c == 't')
			tier = optarg;
		else
			return common_opt(c);
	}
	int r = want_args(argc, argv, tier ? 1 : 2, tier ? "segment NAME" : "segment NAME or FILE");
	if (r)
		return r;
	const char *name = argv[optind];
	shl_config *cfg = NULL;
	if ((r = load_config(tier, tier ? NULL : argv[optind + 1], &cfg)) != 0)
		return r;
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0) {
		shl_config_free(cfg);
		return r;
	}
	shl_err e;
	memset(&e, 0, sizeof(e));
	r = shl_apply(h, cfg, &e);
	shl_config_free(cfg);
	if (r < 0) {
		shl_detach(h);
		return lib_error(name, r, &e);
	}
	printf("applied to %s: generation %llu\n", name, (unsigned long long)shl_generation(h));
	shl_detach(h);
	return TX_OK;
}

int cmd_show(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, PLAIN_SHORTOPTS, ctl_plain_opts, NULL)) != -1)
		return common_opt(c);
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	const char *name = argv[optind];
	shl_t *h = NULL;
	if ((r = attach(name, SHL_ATTACH_RDONLY | SHL_ATTACH_ANY_OWNER, &h)) != 0)
		return r;
	shl_config *cfg = NULL;
	r = shl_config_get(h, &cfg);
	/* Pools whose limits are a preset's stand-ins, named on stderr below. */
	static struct {
		char name[SHL_NAME_MAX + 1];
		int observed;
	} prov[SHL_MAX_POOLS + 1];
	shl_stats *st = malloc(sizeof(*st));
	int k = 0;
	if (r == 0 && st != NULL && shl_stats_get(h, st) == 0)
		for (int i = 0; i < st->npools; i++)
			if (st->pools[i].provisional) {
				snprintf(prov[k].name, sizeof(prov[k].name), "%s", st->pools[i].name);
				prov[k++].observed = st->pools[i].observed[0] != 0 ||
						     st->pools[i].observed[1] != 0 ||
						     st->pools[i].observed[2] != 0;
			}
	free(st);
	shl_detach(h);
	if (r < 0)
		return lib_error(name, r, NULL);
	char *json = shl_config_to_json(cfg);
	shl_config_free(cfg);
	if (json == NULL) {
		fprintf(stderr, PROG " show: out of memory\n");
		return TX_FAIL;
	}
	puts(json);
	free(json);
	/* Provisional pools said so, on stderr (stdout stays the JSON). */
	for (int i = 0; i < k; i++)
		fprintf(stderr, PROG " show: pool '%s' has provisional limits (%s): the lowest "
				"published numbers for its model class, until the server's "
				"rate-limit headers or 'shmlimit-ctl sync' replace them\n",
			prov[i].name, prov[i].observed ? "the server's numbers are in force" :
							 "no server numbers seen yet");
	return TX_OK;
}

int cmd_reset(int argc, char **argv)
{
	unsigned what = 0;
	int c;
	while ((c = getopt_long(argc, argv, RESET_SHORTOPTS, reset_opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			what |= SHL_RESET_BUCKETS;
			break;
		case 's':
			what |= SHL_RESET_SPEND;
			break;
		case 'c':
			what |= SHL_RESET_COUNTERS;
			break;
		case 'a':
			what |= SHL_RESET_BUCKETS | SHL_RESET_SPEND | SHL_RESET_COUNTERS;
			break;
		default:
			return common_opt(c);
		}
	}
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	if (what == 0)
		return usage_error("say what to reset: --buckets, --spend, --counters or --all", NULL);
	const char *name = argv[optind];
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0)
		return r;
	r = shl_reset(h, what);
	shl_detach(h);
	if (r < 0)
		return lib_error(name, r, NULL);
	printf("reset %s:%s%s%s\n", name, what & SHL_RESET_BUCKETS ? " buckets" : "",
	       what & SHL_RESET_SPEND ? " spend" : "", what & SHL_RESET_COUNTERS ? " counters" : "");
	return TX_OK;
}

int cmd_rm(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, PLAIN_SHORTOPTS, ctl_plain_opts, NULL)) != -1)
		return common_opt(c);
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	const char *name = argv[optind];
	r = shl_unlink(name);
	if (r == -ENOENT) {
		fprintf(stderr, PROG " rm: segment '%s' does not exist\n", name);
		return TX_NOSEG;
	}
	if (r < 0)
		return lib_error(name, r, NULL);
	printf("removed %s\n", name);
	return TX_OK;
}

int cmd_check(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, PLAIN_SHORTOPTS, ctl_plain_opts, NULL)) != -1)
		return common_opt(c);
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	const char *name = argv[optind];
	shl_t *h = NULL;
	shl_err e;
	memset(&e, 0, sizeof(e));
	r = shl_attach(name, SHL_ATTACH_RDONLY | SHL_ATTACH_ANY_OWNER, &h, &e);
	if (r == -ENOENT || r == -EACCES || r == -EPERM || r == -ENOMEM || r == -ENAMETOOLONG)
		return lib_error(name, r, &e); /* not a finding about the segment */
	if (r < 0) {
		/* An unreadable header is a finding, reported like the others. */
		printf("%s: BAD\n%s\n", name, e.msg[0] ? e.msg : shl_strerror(r));
		return tool_exit_code(r);
	}
	char report[8192];
	report[0] = '\0';
	r = shl_check(h, report, sizeof(report));
	shl_detach(h);
	if (r < 0) {
		printf("%s: BAD\n%s", name, report[0] ? report : shl_strerror(r));
		if (report[0] == '\0' || report[strlen(report) - 1] != '\n')
			putchar('\n');
		return tool_exit_code(r);
	}
	printf("%s: ok\n", name);
	return TX_OK;
}

#define HOLD_MAX_SECONDS 86400 /* shl_check calls a longer hold corrupt */

int cmd_hold(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, PLAIN_SHORTOPTS, ctl_plain_opts, NULL)) != -1)
		return common_opt(c);
	int r = want_args(argc, argv, 3, "segment NAME, POOL and SECONDS");
	if (r)
		return r;
	const char *name = argv[optind], *pool = argv[optind + 1];
	int64_t ns = 0;
	if (tool_parse_seconds(argv[optind + 2], &ns) != 0 || ns <= 0 ||
	    ns > HOLD_MAX_SECONDS * 1000000000LL)
		return usage_error("SECONDS: expected a number of seconds above 0, at most 86400, got",
				   argv[optind + 2]);
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0)
		return r;
	shl_stats *s = malloc(sizeof(*s));
	if (s == NULL) {
		shl_detach(h);
		fprintf(stderr, PROG " hold: out of memory\n");
		return TX_FAIL;
	}
	int rc = TX_OK;
	int p = shl_pool_find(h, pool);
	if (p == -ESRCH) {
		fprintf(stderr, PROG " hold: segment '%s' has no pool '%s' (pools:", name, pool);
		if (shl_stats_get(h, s) == 0)
			for (int i = 0; i < s->npools; i++)
				fprintf(stderr, " %s", s->pools[i].name);
		fprintf(stderr, ")\n");
		rc = TX_USAGE;
		goto out;
	}
	if (p < 0 || (r = shl_hold(h, p, ns)) < 0) {
		rc = lib_error(name, p < 0 ? p : r, NULL);
		goto out;
	}
	/* A hold extends, never shortens: print what is in force now. */
	const shl_pool_stats *ps;
	if (shl_stats_get(h, s) == 0 && (ps = tool_pool_stats(s, p)) != NULL)
		printf("held pool=%s seconds=%.3f\n", pool, (double)ps->hold_ns / 1e9);
out:
	free(s);
	shl_detach(h);
	return rc;
}
