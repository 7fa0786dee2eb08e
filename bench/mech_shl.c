/*
 * mech_shl.c - libshmlimit itself, through its public API only.
 *
 * The parent writes the scenario as the JSON configuration a user would
 * write (one pool per bench pool, one exact model id per pool), creates a
 * fresh segment from it for every run, and unlinks it after.  Each worker
 * attaches by name, as an unrelated process would, and admits with
 * shl_try() / shl_settle(): the full four-dimension admission, never a
 * cheaper internal entry point.
 *
 * Segment names carry the bench's pid and a run counter, so concurrent
 * benches and test runs never share one; main() unlinks the current one on
 * SIGINT/SIGTERM too.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

struct shl_state {
	char name[64];
};

struct shl_local {
	shl_t *h;
	int model[BENCH_MAX_POOLS];
	shl_cost cost;
	shl_usage usage;
};

char bench_shl_segment[64];

static int append(char *buf, size_t cap, size_t *n, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int append(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(buf + *n, cap - *n, fmt, ap);
	va_end(ap);
	if (w < 0 || (size_t)w >= cap - *n)
		return -E2BIG;
	*n += (size_t)w;
	return 0;
}

int bench_shl_config_json(const struct bench_scenario *sc, char *buf, size_t cap)
{
	size_t n = 0;
	int rc = 0;
	if (sc->spend_cap >= 0)
		rc |= append(buf, cap, &n, "{\"spend_cap_usd\": %.9f, \"pools\": [",
			     (double)sc->spend_cap / (double)SHL_UNITS_PER_USD);
	else
		rc |= append(buf, cap, &n, "{\"spend_cap_usd\": null, \"pools\": [");
	for (int p = 0; p < sc->npools; p++)
		rc |= append(buf, cap, &n,
			     "%s{\"name\": \"p%d\", \"rpm\": %llu, \"itpm\": %llu, \"otpm\": %llu,"
			     " \"burst\": {\"rpm\": %llu, \"itpm\": %llu, \"otpm\": %llu},"
			     " \"otpm_mode\": \"actual\", \"cache_reads_count\": false,"
			     " \"prices\": {\"input\": %.3f, \"output\": %.3f, \"cache_write_5m\": %.3f,"
			     " \"cache_write_1h\": %.3f, \"cache_read\": %.3f}}",
			     p ? ", " : "", p, (unsigned long long)sc->limit[0],
			     (unsigned long long)sc->limit[1], (unsigned long long)sc->limit[2],
			     (unsigned long long)sc->burst[0], (unsigned long long)sc->burst[1],
			     (unsigned long long)sc->burst[2], sc->price_in / 1000.0,
			     sc->price_out / 1000.0, sc->price_in * 1.25 / 1000.0,
			     sc->price_in * 2.0 / 1000.0, sc->price_in * 0.1 / 1000.0);
	rc |= append(buf, cap, &n, "], \"models\": [");
	for (int p = 0; p < sc->npools; p++)
		rc |= append(buf, cap, &n, "%s{\"match\": \"bench-model-%d\", \"pool\": \"p%d\"}",
			     p ? ", " : "", p, p);
	rc |= append(buf, cap, &n, "]}");
	return rc ? -E2BIG : 0;
}

static unsigned run_counter;

static int shl_setup_mech(struct bench_mech *m)
{
	struct shl_state *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	snprintf(st->name, sizeof(st->name), "shmlimit-bench-%ld-%u", (long)getpid(),
		 run_counter++);
	char json[16384];
	int rc = bench_shl_config_json(m->sc, json, sizeof(json));
	shl_config *cfg = NULL;
	shl_err err = {{0}};
	if (rc == 0)
		rc = shl_config_parse(json, strlen(json), &cfg, &err);
	if (rc == 0) {
		snprintf(bench_shl_segment, sizeof(bench_shl_segment), "%s", st->name);
		rc = shl_create(st->name, cfg, SHL_CREATE_REPLACE, NULL, &err);
	}
	shl_config_free(cfg);
	if (rc != 0) {
		snprintf(m->errmsg, sizeof(m->errmsg), "%.60s: %.180s", shl_strerror(rc), err.msg);
		bench_shl_segment[0] = '\0';
		free(st);
		return rc;
	}
	m->state = st;
	return 0;
}

static int shl_attach_mech(struct bench_mech *m, int id)
{
	struct shl_state *st = m->state;
	const struct bench_scenario *sc = m->sc;
	struct shl_local *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -ENOMEM;
	shl_err err = {{0}};
	int rc = shl_attach(st->name, 0, &l->h, &err);
	if (rc != 0) {
		snprintf(m->errmsg, sizeof(m->errmsg), "shl_attach: %.60s: %.170s", shl_strerror(rc),
			 err.msg);
		free(l);
		return rc;
	}
	for (int p = 0; p < sc->npools; p++) {
		char id_s[32];
		snprintf(id_s, sizeof(id_s), "bench-model-%d", p);
		l->model[p] = shl_lookup(l->h, id_s);
		if (l->model[p] < 0) {
			rc = l->model[p];
			snprintf(m->errmsg, sizeof(m->errmsg), "shl_lookup(%s): %s", id_s,
				 shl_strerror(rc));
			shl_detach(l->h);
			free(l);
			return rc;
		}
	}
	l->cost.input_tokens = sc->req_in;
	l->cost.max_tokens = sc->req_max_out;
	l->usage.input_tokens = sc->used_in;
	l->usage.output_tokens = sc->used_out;
	m->local = l;
	return 0;
}

static int shl_admit_mech(struct bench_mech *m, int pool, struct bench_adm *a)
{
	struct shl_local *l = m->local;
	int rc = shl_try(l->h, l->model[pool], &l->cost, &a->ticket, NULL);
	if (rc == -EAGAIN)
		return 1;
	if (rc != 0)
		return rc;
	a->pool = pool;
	a->now = a->ticket.admitted_at;
	a->reserved = a->ticket.spend;
	return 0;
}

static int shl_settle_mech(struct bench_mech *m, struct bench_adm *a)
{
	struct shl_local *l = m->local;
	return shl_settle(l->h, &a->ticket, &l->usage);
}

static void shl_detach_mech(struct bench_mech *m)
{
	struct shl_local *l = m->local;
	if (l == NULL)
		return;
	shl_detach(l->h);
	free(l);
	m->local = NULL;
}

static void shl_teardown_mech(struct bench_mech *m)
{
	struct shl_state *st = m->state;
	if (st == NULL)
		return;
	shl_unlink(st->name);
	bench_shl_segment[0] = '\0';
	free(st);
	m->state = NULL;
}

const struct bench_mech_ops bench_mech_shl = {
	.name = "shl",
	.what = "libshmlimit: shl_try + shl_settle on a POSIX shm segment (lock-free CAS words)",
	.setup = shl_setup_mech,
	.attach = shl_attach_mech,
	.admit = shl_admit_mech,
	.settle = shl_settle_mech,
	.detach = shl_detach_mech,
	.teardown = shl_teardown_mech,
};
