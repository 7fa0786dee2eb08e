/*
 * stats_json.c - a statistics snapshot as JSON: the document of
 * `shmlimit-stat --json` (tools/README.md, "JSON fields"), written here
 * once for the tool and for the bindings (Python, Node) that want plain
 * data rather than the C struct.
 *
 * segment, generation, created_unix, npools, nmodels, spend{month,
 * spent_usd, cap_usd, exhausted, resets_unix, resets_utc},
 * attach_failures{count, owner_refusals, last_uid, last_pid, last_error,
 * last_unix}, pools[]{name, limit, burst, available, used_last_minute,
 * used_pct, otpm_mode, cache_reads_count, hold_seconds, counters, tokens,
 * spend_usd, estimate, prices}, and in multi-host mode cluster{...}.
 * USD amounts are units / 1e9, prices USD per million tokens.
 * shl_stats_json() names the segment without shm_open's leading '/'
 * ("fleet" and "/fleet" are the same segment).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "internal.h"

static const char *const price_key[5] = {"input", "output", "cache_write_5m", "cache_write_1h",
					 "cache_read"};

static double usd(int64_t units)
{
	return (double)units / (double)SHL_UNITS_PER_USD;
}

static double pct(uint64_t used, uint64_t limit)
{
	return limit ? 100.0 * (double)used / (double)limit : 0.0;
}

/* RFC 3339 UTC ("2026-12-01T00:00:00Z"); the number itself if out of range. */
static void fmt_utc(char *buf, size_t len, int64_t unix_s)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)unix_s);
}

/* {rpm, itpm, otpm} of three unsigned counts. */
static cJSON *dims(const uint64_t v[SHL_NBUCKETS])
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "rpm", (double)v[0]);
	cJSON_AddNumberToObject(o, "itpm", (double)v[1]);
	cJSON_AddNumberToObject(o, "otpm", (double)v[2]);
	return o;
}

char *shl_stats_to_json(const shl_stats *s, const char *name)
{
	char buf[64];
	if (s == NULL)
		return NULL;
	cJSON *root = cJSON_CreateObject();
	if (root == NULL)
		return NULL;
	if (name == NULL)
		name = "";
	cJSON_AddStringToObject(root, "segment", name);
	cJSON_AddNumberToObject(root, "generation", (double)s->generation);
	int64_t created_s = s->created_unix_ns / 1000000000LL; /* whole seconds */
	cJSON_AddNumberToObject(root, "created_unix", (double)created_s);
	cJSON_AddNumberToObject(root, "npools", s->npools);
	cJSON_AddNumberToObject(root, "nmodels", s->nmodels);

	cJSON *sp = cJSON_AddObjectToObject(root, "spend");
	snprintf(buf, sizeof(buf), "%04d-%02d", s->month_year, s->month);
	cJSON_AddStringToObject(sp, "month", buf);
	cJSON_AddNumberToObject(sp, "spent_usd", usd(s->spend_month));
	if (s->spend_cap >= 0)
		cJSON_AddNumberToObject(sp, "cap_usd", usd(s->spend_cap));
	else
		cJSON_AddNullToObject(sp, "cap_usd");
	cJSON_AddBoolToObject(sp, "exhausted", s->spend_exhausted != 0);
	cJSON_AddNumberToObject(sp, "resets_unix", (double)s->month_resets_unix);
	fmt_utc(buf, sizeof(buf), s->month_resets_unix);
	cJSON_AddStringToObject(sp, "resets_utc", buf);

	cJSON *af = cJSON_AddObjectToObject(root, "attach_failures");
	cJSON_AddNumberToObject(af, "count", (double)s->attach_failures);
	cJSON_AddNumberToObject(af, "owner_refusals", (double)s->attach_owner_refusals);
	if (s->attach_failures > 0) {
		cJSON_AddNumberToObject(af, "last_uid", s->attach_last_uid);
		cJSON_AddNumberToObject(af, "last_pid", s->attach_last_pid);
		cJSON_AddStringToObject(af, "last_error", shl_strerror(s->attach_last_error));
		int64_t last_s = s->attach_last_unix_ns / 1000000000LL; /* whole seconds */
		cJSON_AddNumberToObject(af, "last_unix", (double)last_s);
	} else {
		cJSON_AddNullToObject(af, "last_uid");
		cJSON_AddNullToObject(af, "last_pid");
		cJSON_AddNullToObject(af, "last_error");
		cJSON_AddNullToObject(af, "last_unix");
	}

	cJSON *pools = cJSON_AddArrayToObject(root, "pools");
	for (int p = 0; p < s->npools; p++) {
		const shl_pool_stats *ps = &s->pools[p];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddItemToArray(pools, o);
		cJSON_AddStringToObject(o, "name", ps->name);
		cJSON_AddItemToObject(o, "limit", dims(ps->limit));
		if (ps->observed[0] || ps->observed[1] || ps->observed[2])
			cJSON_AddItemToObject(o, "observed", dims(ps->observed));
		else
			cJSON_AddNullToObject(o, "observed");
		int64_t observed_s = ps->observed_unix_ns / 1000000000LL; /* whole seconds */
		cJSON_AddNumberToObject(o, "observed_unix", (double)observed_s);
		cJSON_AddItemToObject(o, "effective", dims(ps->effective));
		cJSON_AddBoolToObject(o, "follow_server", ps->follow_server != 0);
		cJSON_AddBoolToObject(o, "provisional", ps->provisional != 0);
		cJSON_AddItemToObject(o, "burst", dims(ps->burst));
		cJSON *av = cJSON_AddObjectToObject(o, "available");
		cJSON *pc = cJSON_CreateObject();
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			const char *k = d == 0 ? "rpm" : d == 1 ? "itpm" : "otpm";
			cJSON_AddNumberToObject(av, k, ps->available[d]);
			cJSON_AddNumberToObject(pc, k, pct(ps->used_last_minute[d], ps->limit[d]));
		}
		cJSON_AddItemToObject(o, "used_last_minute", dims(ps->used_last_minute));
		cJSON_AddItemToObject(o, "used_pct", pc);
		cJSON_AddStringToObject(o, "otpm_mode", ps->otpm_reserve ? "reserve" : "actual");
		cJSON_AddBoolToObject(o, "cache_reads_count", ps->cache_reads_count != 0);
		cJSON_AddNumberToObject(o, "hold_seconds",
					ps->hold_ns > 0 ? (double)ps->hold_ns / 1e9 : 0.0);
		cJSON *c = cJSON_AddObjectToObject(o, "counters");
		cJSON_AddNumberToObject(c, "admitted", (double)ps->admitted);
		cJSON_AddNumberToObject(c, "refused", (double)ps->refused);
		cJSON_AddNumberToObject(c, "waited", (double)ps->waited);
		cJSON_AddNumberToObject(c, "settled", (double)ps->settled);
		cJSON_AddNumberToObject(c, "cancelled", (double)ps->cancelled);
		cJSON_AddNumberToObject(c, "server_429", (double)ps->server_429);
		cJSON *t = cJSON_AddObjectToObject(o, "tokens");
		cJSON_AddNumberToObject(t, "input", (double)ps->tokens_in);
		cJSON_AddNumberToObject(t, "output", (double)ps->tokens_out);
		cJSON_AddNumberToObject(t, "cache_read", (double)ps->cache_read);
		cJSON_AddNumberToObject(t, "cache_write", (double)ps->cache_write);
		cJSON_AddNumberToObject(o, "spend_usd", usd(ps->spend));
		cJSON *es = cJSON_AddObjectToObject(o, "estimate");
		cJSON_AddNumberToObject(es, "ratio", ps->est_ratio);
		cJSON_AddNumberToObject(es, "samples", (double)ps->est_samples);
		cJSON *pr = cJSON_AddObjectToObject(o, "prices");
		for (int i = 0; i < 5; i++) /* units/token -> USD per million tokens */
			cJSON_AddNumberToObject(pr, price_key[i],
						(double)ps->prices[i] /
							(double)SHL_UNITS_PER_TOKEN_PER_USD_PER_MTOK);
	}
	/* The unknown-model policy; the ids seen are added by the caller that
	 * holds the handle (shl_unknown_list): shmlimit-stat's "seen". */
	cJSON *um = cJSON_AddObjectToObject(root, "unknown_model");
	cJSON_AddStringToObject(um, "policy", s->unknown_model == 1   ? "refuse"
					       : s->unknown_model == 2 ? "pool"
								   : "pass");
	if (s->unknown_model == 2 && s->unknown_pool >= 0 && s->unknown_pool < s->npools)
		cJSON_AddStringToObject(um, "pool", s->pools[s->unknown_pool].name);
	else
		cJSON_AddNullToObject(um, "pool");
	if (s->cluster) {
		cJSON *cl = cJSON_AddObjectToObject(root, "cluster");
		cJSON_AddBoolToObject(cl, "redis_up", s->cluster_redis_up != 0);
		cJSON_AddBoolToObject(cl, "fallback", s->cluster_fallback != 0);
		cJSON_AddNumberToObject(cl, "hosts_seen", s->cluster_hosts);
		cJSON_AddNumberToObject(cl, "agent_age_seconds",
					s->cluster_agent_age_ns < 0 ? -1 : s->cluster_agent_age_ns / 1e9);
		cJSON_AddNumberToObject(cl, "leases", (double)s->cluster_refills);
		cJSON_AddNumberToObject(cl, "redis_commands", (double)s->cluster_redis_ops);
		cJSON_AddNumberToObject(cl, "rtt_seconds", s->cluster_rtt_ns / 1e9);
		cJSON_AddNumberToObject(cl, "spend_budget_usd", usd(s->cluster_spend_budget));
		cJSON *pl = cJSON_AddObjectToObject(cl, "pools");
		for (int i = 0; i < s->npools; i++) {
			const shl_pool_stats *ps = &s->pools[i];
			cJSON *o = cJSON_AddObjectToObject(pl, ps->name);
			uint64_t c[SHL_NBUCKETS];
			for (int d = 0; d < SHL_NBUCKETS; d++)
				c[d] = ps->lease_ns[d] > 0 && ps->limit[d]
					       ? (uint64_t)((double)ps->lease_ns[d] * ps->limit[d] / 60e9)
					       : 0;
			cJSON_AddItemToObject(o, "credit", dims(c));
			cJSON_AddNumberToObject(o, "leases", (double)ps->lease_refills);
			cJSON_AddNumberToObject(o, "short", (double)ps->lease_short);
			cJSON_AddNumberToObject(o, "fallback_grants", (double)ps->lease_fallback);
		}
	}
	char *out = cJSON_Print(root);
	cJSON_Delete(root);
	return out;
}

char *shl_stats_json(shl_t *h)
{
	shl_stats *s = malloc(sizeof(*s));
	if (h == NULL || s == NULL) {
		free(s);
		return NULL;
	}
	char *out = NULL;
	if (shl_stats_get(h, s) == 0) {
		const char *name = shl_name(h);
		out = shl_stats_to_json(s, name != NULL && name[0] == '/' ? name + 1 : name);
	}
	free(s);
	/* The unknown model ids seen (the segment's table), as the tool adds
	 * them: unknown_model.seen[] of {model, lookups}. */
	shl_unknown_model ids[16];
	int n = out != NULL ? shl_unknown_list(h, ids, 16) : 0;
	cJSON *root = out != NULL ? cJSON_Parse(out) : NULL;
	cJSON *um = cJSON_GetObjectItemCaseSensitive(root, "unknown_model");
	cJSON *ul = um != NULL ? cJSON_AddArrayToObject(um, "seen") : NULL;
	if (ul == NULL) {
		cJSON_Delete(root);
		return out;
	}
	for (int i = 0; i < n; i++) {
		cJSON *e = cJSON_CreateObject();
		cJSON_AddItemToArray(ul, e);
		cJSON_AddStringToObject(e, "model", ids[i].id);
		cJSON_AddNumberToObject(e, "lookups", (double)ids[i].seen);
	}
	char *full = cJSON_Print(root);
	cJSON_Delete(root);
	if (full == NULL)
		return out;
	free(out);
	return full;
}
