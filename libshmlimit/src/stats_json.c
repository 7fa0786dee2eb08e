/*
 * stats_json.c - shl_stats_json(): one shl_stats_get() snapshot as the JSON
 * document of `shmlimit-stat --json` (tools/README.md, "JSON fields"), for
 * bindings (Python, Node) that want plain data rather than the C struct.
 *
 * The document is the tool's, field for field and in the same order:
 * segment, generation, created_unix, npools, nmodels, spend{month,
 * spent_usd, cap_usd, exhausted, resets_unix, resets_utc}, pools[]{name,
 * limit, burst, available, used_last_minute, used_pct, otpm_mode,
 * cache_reads_count, hold_seconds, counters, tokens, spend_usd, estimate,
 * prices}.
 * USD amounts are units / 1e9, prices USD per million tokens.  `segment`
 * is the name without shm_open's leading '/' (the tool prints the name as
 * typed; "fleet" and "/fleet" are the same segment).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "internal.h"

static const char *const dim_key[SHL_NBUCKETS] = {"rpm", "itpm", "otpm"};
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

/* {rpm, itpm, otpm} of three unsigned counts; NULL when out of memory. */
static cJSON *dims(const uint64_t v[SHL_NBUCKETS])
{
	cJSON *o = cJSON_CreateObject();
	for (int d = 0; o != NULL && d < SHL_NBUCKETS; d++)
		if (cJSON_AddNumberToObject(o, dim_key[d], (double)v[d]) == NULL) {
			cJSON_Delete(o);
			return NULL;
		}
	return o;
}

/* Attach `item` to `parent` as `key`; 0, or -1 (item freed) when either is missing. */
static int put(cJSON *parent, const char *key, cJSON *item)
{
	if (item == NULL)
		return -1;
	if (!cJSON_AddItemToObject(parent, key, item)) {
		cJSON_Delete(item);
		return -1;
	}
	return 0;
}

static int add_pool(cJSON *arr, const shl_pool_stats *ps)
{
	cJSON *o = cJSON_CreateObject();
	if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
		cJSON_Delete(o);
		return -1;
	}
	int bad = cJSON_AddStringToObject(o, "name", ps->name) == NULL;
	bad |= put(o, "limit", dims(ps->limit));
	bad |= put(o, "burst", dims(ps->burst));
	cJSON *av = cJSON_AddObjectToObject(o, "available");
	bad |= av == NULL;
	bad |= put(o, "used_last_minute", dims(ps->used_last_minute));
	cJSON *pc = cJSON_AddObjectToObject(o, "used_pct");
	bad |= pc == NULL;
	for (int d = 0; !bad && d < SHL_NBUCKETS; d++) {
		bad |= cJSON_AddNumberToObject(av, dim_key[d], ps->available[d]) == NULL;
		bad |= cJSON_AddNumberToObject(pc, dim_key[d],
					       pct(ps->used_last_minute[d], ps->limit[d])) == NULL;
	}
	bad |= cJSON_AddStringToObject(o, "otpm_mode", ps->otpm_reserve ? "reserve" : "actual") ==
	       NULL;
	bad |= cJSON_AddBoolToObject(o, "cache_reads_count", ps->cache_reads_count != 0) == NULL;
	bad |= cJSON_AddNumberToObject(o, "hold_seconds",
				       ps->hold_ns > 0 ? (double)ps->hold_ns / 1e9 : 0.0) == NULL;
	cJSON *c = cJSON_AddObjectToObject(o, "counters");
	bad |= c == NULL;
	if (!bad) {
		bad |= cJSON_AddNumberToObject(c, "admitted", (double)ps->admitted) == NULL;
		bad |= cJSON_AddNumberToObject(c, "refused", (double)ps->refused) == NULL;
		bad |= cJSON_AddNumberToObject(c, "waited", (double)ps->waited) == NULL;
		bad |= cJSON_AddNumberToObject(c, "settled", (double)ps->settled) == NULL;
		bad |= cJSON_AddNumberToObject(c, "cancelled", (double)ps->cancelled) == NULL;
		bad |= cJSON_AddNumberToObject(c, "server_429", (double)ps->server_429) == NULL;
	}
	cJSON *t = cJSON_AddObjectToObject(o, "tokens");
	bad |= t == NULL;
	if (!bad) {
		bad |= cJSON_AddNumberToObject(t, "input", (double)ps->tokens_in) == NULL;
		bad |= cJSON_AddNumberToObject(t, "output", (double)ps->tokens_out) == NULL;
		bad |= cJSON_AddNumberToObject(t, "cache_read", (double)ps->cache_read) == NULL;
		bad |= cJSON_AddNumberToObject(t, "cache_write", (double)ps->cache_write) == NULL;
	}
	bad |= cJSON_AddNumberToObject(o, "spend_usd", usd(ps->spend)) == NULL;
	cJSON *es = cJSON_AddObjectToObject(o, "estimate");
	bad |= es == NULL;
	if (!bad) {
		bad |= cJSON_AddNumberToObject(es, "ratio", ps->est_ratio) == NULL;
		bad |= cJSON_AddNumberToObject(es, "samples", (double)ps->est_samples) == NULL;
	}
	cJSON *pr = cJSON_AddObjectToObject(o, "prices");
	bad |= pr == NULL;
	for (int i = 0; !bad && i < 5; i++) /* units/token -> USD per million tokens */
		bad |= cJSON_AddNumberToObject(pr, price_key[i],
					       (double)ps->prices[i] /
						       (double)SHL_UNITS_PER_TOKEN_PER_USD_PER_MTOK) ==
		       NULL;
	return bad ? -1 : 0;
}

char *shl_stats_json(shl_t *h)
{
	shl_stats *s = malloc(sizeof(*s));
	if (h == NULL || s == NULL) {
		free(s);
		return NULL;
	}
	if (shl_stats_get(h, s) < 0) {
		free(s);
		return NULL;
	}
	char buf[64];
	char *out = NULL;
	cJSON *root = cJSON_CreateObject();
	if (root == NULL)
		goto done;
	/* The name as users write it: shl_name() keeps shm_open's leading '/'. */
	const char *name = shl_name(h);
	if (name == NULL)
		name = "";
	else if (name[0] == '/')
		name++;
	int bad = cJSON_AddStringToObject(root, "segment", name) == NULL;
	bad |= cJSON_AddNumberToObject(root, "generation", (double)s->generation) == NULL;
	bad |= cJSON_AddNumberToObject(root, "created_unix",
				       (double)(s->created_unix_ns / 1000000000LL)) == NULL;
	bad |= cJSON_AddNumberToObject(root, "npools", s->npools) == NULL;
	bad |= cJSON_AddNumberToObject(root, "nmodels", s->nmodels) == NULL;

	cJSON *sp = cJSON_AddObjectToObject(root, "spend");
	bad |= sp == NULL;
	if (!bad) {
		snprintf(buf, sizeof(buf), "%04d-%02d", s->month_year, s->month);
		bad |= cJSON_AddStringToObject(sp, "month", buf) == NULL;
		bad |= cJSON_AddNumberToObject(sp, "spent_usd", usd(s->spend_month)) == NULL;
		if (s->spend_cap >= 0)
			bad |= cJSON_AddNumberToObject(sp, "cap_usd", usd(s->spend_cap)) == NULL;
		else
			bad |= cJSON_AddNullToObject(sp, "cap_usd") == NULL;
		bad |= cJSON_AddBoolToObject(sp, "exhausted", s->spend_exhausted != 0) == NULL;
		bad |= cJSON_AddNumberToObject(sp, "resets_unix", (double)s->month_resets_unix) ==
		       NULL;
		fmt_utc(buf, sizeof(buf), s->month_resets_unix);
		bad |= cJSON_AddStringToObject(sp, "resets_utc", buf) == NULL;
	}
	cJSON *pools = cJSON_AddArrayToObject(root, "pools");
	bad |= pools == NULL;
	for (int p = 0; !bad && p < s->npools && p < SHL_MAX_POOLS; p++)
		bad |= add_pool(pools, &s->pools[p]);
	if (!bad)
		out = cJSON_Print(root);
done:
	cJSON_Delete(root);
	free(s);
	return out;
}
