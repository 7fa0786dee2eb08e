/*
 * test_stats_json.c - shl_stats_json(): the document has every field of
 * `shmlimit-stat --json` (tools/README.md), each equal to the same
 * snapshot's shl_stats_get() value, after admissions, settlements, a cancel,
 * a hold and a spend exhaustion; no cap gives null; a read-only handle
 * works; a NULL handle gives NULL.
 */
#include <CUnit/Basic.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmlimit.h"

static char seg[64];

static const char *cfg_json(int cap)
{
	static char j[2048];
	snprintf(j, sizeof(j),
		 "{\"spend_cap_usd\": %s, \"pools\": ["
		 "{\"name\": \"sonnet\", \"rpm\": 600, \"itpm\": 60000, \"otpm\": 12000, "
		 "\"burst\": {\"rpm\": 10}, "
		 "\"prices\": {\"input\": 3, \"output\": 15, \"cache_write_5m\": 3.75, "
		 "\"cache_write_1h\": 6, \"cache_read\": 0.3}},"
		 "{\"name\": \"haiku\", \"rpm\": 120, \"itpm\": 6000, \"otpm\": 1200, "
		 "\"otpm_mode\": \"reserve\", \"cache_reads_count\": true, "
		 "\"prices\": {\"input\": 1, \"output\": 5, \"cache_write_5m\": 1.25, "
		 "\"cache_write_1h\": 2, \"cache_read\": 0.1}}],"
		 "\"models\": [{\"match\": \"claude-sonnet-4*\", \"pool\": \"sonnet\"},"
		 "{\"match\": \"claude-haiku-4*\", \"pool\": \"haiku\"}]}",
		 cap ? "25.5" : "null");
	return j;
}

static shl_t *make(int cap)
{
	shl_config *c = NULL;
	shl_err e;
	const char *j = cfg_json(cap);
	CU_ASSERT_FATAL(shl_config_parse(j, strlen(j), &c, &e) == 0);
	snprintf(seg, sizeof(seg), "shltest-statsjson-%d", (int)getpid());
	shl_t *h = NULL;
	CU_ASSERT_FATAL(shl_create(seg, c, SHL_CREATE_REPLACE, &h, &e) == 0);
	shl_config_free(c);
	return h;
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	CU_ASSERT_PTR_NOT_NULL(v);
	CU_ASSERT(cJSON_IsNumber(v));
	return v ? v->valuedouble : NAN;
}

static const cJSON *obj(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	CU_ASSERT_PTR_NOT_NULL_FATAL(v);
	return v;
}

static void check_dims(const cJSON *o, const char *k, const uint64_t v[3])
{
	const cJSON *d = obj(o, k);
	CU_ASSERT_EQUAL(num(d, "rpm"), (double)v[0]);
	CU_ASSERT_EQUAL(num(d, "itpm"), (double)v[1]);
	CU_ASSERT_EQUAL(num(d, "otpm"), (double)v[2]);
	CU_ASSERT_EQUAL(cJSON_GetArraySize(d), 3);
}

static void test_fields(void)
{
	shl_t *h = make(1);
	int sonnet = shl_lookup(h, "claude-sonnet-4-5");
	int haiku = shl_lookup(h, "claude-haiku-4-5");
	CU_ASSERT_FATAL(sonnet >= 0 && haiku >= 0);
	shl_cost c = {.input_tokens = 1000, .max_tokens = 500};
	shl_ticket t;
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_FATAL(shl_try(h, sonnet, &c, &t, NULL) == 0);
		shl_usage u = {.input_tokens = 900, .output_tokens = 100 + i, .cache_read = 7,
			       .cache_write_5m = 11};
		CU_ASSERT(shl_settle(h, &t, &u) == 0);
	}
	CU_ASSERT_FATAL(shl_try(h, haiku, &c, &t, NULL) == 0);
	CU_ASSERT(shl_cancel(h, &t) == 0);
	CU_ASSERT_FATAL(shl_try(h, haiku, &c, &t, NULL) == 0); /* left open: spend reserved */
	CU_ASSERT(shl_hold(h, shl_model_pool(h, haiku), 30 * 1000000000LL) == 0);
	CU_ASSERT(shl_spend_exhaust(h) == 0);

	char *j = shl_stats_json(h);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	shl_stats s;
	CU_ASSERT_FATAL(shl_stats_get(h, &s) == 0);
	cJSON *root = cJSON_Parse(j);
	CU_ASSERT_PTR_NOT_NULL_FATAL(root);

	CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(obj(root, "segment")), seg);
	CU_ASSERT_EQUAL(num(root, "generation"), (double)s.generation);
	CU_ASSERT_EQUAL(num(root, "created_unix"), (double)(s.created_unix_ns / 1000000000LL));
	CU_ASSERT_EQUAL(num(root, "npools"), 2);
	CU_ASSERT_EQUAL(num(root, "nmodels"), 2);

	const cJSON *sp = obj(root, "spend");
	char month[16];
	snprintf(month, sizeof(month), "%04d-%02d", s.month_year, s.month);
	CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(obj(sp, "month")), month);
	CU_ASSERT_DOUBLE_EQUAL(num(sp, "spent_usd"), (double)s.spend_month / 1e9, 1e-12);
	CU_ASSERT(num(sp, "spent_usd") > 0);
	CU_ASSERT_DOUBLE_EQUAL(num(sp, "cap_usd"), 25.5, 1e-12);
	CU_ASSERT(cJSON_IsTrue(obj(sp, "exhausted")));
	CU_ASSERT_EQUAL(num(sp, "resets_unix"), (double)s.month_resets_unix);
	const char *utc = cJSON_GetStringValue(obj(sp, "resets_utc"));
	CU_ASSERT_PTR_NOT_NULL_FATAL(utc);
	CU_ASSERT_EQUAL(strlen(utc), 20);
	CU_ASSERT(strstr(utc, "-01T00:00:00Z") != NULL);

	const cJSON *pools = obj(root, "pools");
	CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(pools), 2);
	for (int p = 0; p < 2; p++) {
		const shl_pool_stats *ps = &s.pools[p];
		const cJSON *o = cJSON_GetArrayItem(pools, p);
		CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(obj(o, "name")), ps->name);
		check_dims(o, "limit", ps->limit);
		check_dims(o, "burst", ps->burst);
		check_dims(o, "used_last_minute", ps->used_last_minute);
		const cJSON *av = obj(o, "available");
		/* available refills between the two snapshots: close, not equal */
		CU_ASSERT_DOUBLE_EQUAL(num(av, "rpm"), ps->available[0], 1.0);
		CU_ASSERT_DOUBLE_EQUAL(num(av, "itpm"), ps->available[1], 100.0);
		CU_ASSERT_DOUBLE_EQUAL(num(av, "otpm"), ps->available[2], 100.0);
		const cJSON *pc = obj(o, "used_pct");
		CU_ASSERT_DOUBLE_EQUAL(num(pc, "itpm"),
				       100.0 * (double)ps->used_last_minute[1] / (double)ps->limit[1],
				       1e-9);
		CU_ASSERT_STRING_EQUAL(cJSON_GetStringValue(obj(o, "otpm_mode")),
				       p == 0 ? "actual" : "reserve");
		CU_ASSERT(p == 0 ? cJSON_IsFalse(obj(o, "cache_reads_count"))
				 : cJSON_IsTrue(obj(o, "cache_reads_count")));
		double hold = num(o, "hold_seconds");
		CU_ASSERT(p == 0 ? hold == 0.0 : hold > 29.0 && hold <= 30.0);
		const cJSON *c2 = obj(o, "counters");
		CU_ASSERT_EQUAL(num(c2, "admitted"), (double)ps->admitted);
		CU_ASSERT_EQUAL(num(c2, "refused"), (double)ps->refused);
		CU_ASSERT_EQUAL(num(c2, "waited"), (double)ps->waited);
		CU_ASSERT_EQUAL(num(c2, "settled"), (double)ps->settled);
		CU_ASSERT_EQUAL(num(c2, "cancelled"), (double)ps->cancelled);
		CU_ASSERT_EQUAL(num(c2, "server_429"), (double)ps->server_429);
		const cJSON *tk = obj(o, "tokens");
		CU_ASSERT_EQUAL(num(tk, "input"), (double)ps->tokens_in);
		CU_ASSERT_EQUAL(num(tk, "output"), (double)ps->tokens_out);
		CU_ASSERT_EQUAL(num(tk, "cache_read"), (double)ps->cache_read);
		CU_ASSERT_EQUAL(num(tk, "cache_write"), (double)ps->cache_write);
		CU_ASSERT_DOUBLE_EQUAL(num(o, "spend_usd"), (double)ps->spend / 1e9, 1e-12);
		const cJSON *es = obj(o, "estimate");
		CU_ASSERT_DOUBLE_EQUAL(num(es, "ratio"), ps->est_ratio, 1e-12);
		CU_ASSERT_EQUAL(num(es, "samples"), (double)ps->est_samples);
		const cJSON *pr = obj(o, "prices");
		CU_ASSERT_DOUBLE_EQUAL(num(pr, "input"), p == 0 ? 3.0 : 1.0, 1e-12);
		CU_ASSERT_DOUBLE_EQUAL(num(pr, "output"), p == 0 ? 15.0 : 5.0, 1e-12);
		CU_ASSERT_DOUBLE_EQUAL(num(pr, "cache_write_5m"), p == 0 ? 3.75 : 1.25, 1e-12);
		CU_ASSERT_DOUBLE_EQUAL(num(pr, "cache_write_1h"), p == 0 ? 6.0 : 2.0, 1e-12);
		CU_ASSERT_DOUBLE_EQUAL(num(pr, "cache_read"), p == 0 ? 0.3 : 0.1, 1e-12);
	}
	/* the values the test put there, not only agreement with the struct */
	const cJSON *o0 = cJSON_GetArrayItem(pools, 0);
	CU_ASSERT_EQUAL(num(obj(o0, "counters"), "admitted"), 3);
	CU_ASSERT_EQUAL(num(obj(o0, "counters"), "settled"), 3);
	CU_ASSERT_EQUAL(num(obj(o0, "tokens"), "input"), 2700);
	CU_ASSERT_EQUAL(num(obj(o0, "tokens"), "output"), 303);
	CU_ASSERT_EQUAL(num(obj(o0, "tokens"), "cache_read"), 21);
	CU_ASSERT_EQUAL(num(obj(o0, "tokens"), "cache_write"), 33);
	CU_ASSERT_EQUAL(num(obj(o0, "limit"), "rpm"), 600);
	CU_ASSERT_EQUAL(num(obj(o0, "burst"), "rpm"), 10);
	const cJSON *o1 = cJSON_GetArrayItem(pools, 1);
	CU_ASSERT_EQUAL(num(obj(o1, "counters"), "cancelled"), 1);
	CU_ASSERT_EQUAL(num(obj(o1, "counters"), "admitted"), 2);
	cJSON_Delete(root);
	free(j);
	shl_detach(h);
	shl_unlink(seg);
}

static void test_nocap_readonly(void)
{
	shl_t *h = make(0);
	shl_t *ro = NULL;
	CU_ASSERT_FATAL(shl_attach(seg, SHL_ATTACH_RDONLY, &ro, NULL) == 0);
	char *j = shl_stats_json(ro);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	cJSON *root = cJSON_Parse(j);
	CU_ASSERT_PTR_NOT_NULL_FATAL(root);
	const cJSON *sp = obj(root, "spend");
	CU_ASSERT(cJSON_IsNull(obj(sp, "cap_usd")));
	CU_ASSERT(cJSON_IsFalse(obj(sp, "exhausted")));
	CU_ASSERT_EQUAL(num(sp, "spent_usd"), 0.0);
	/* a fresh pool is full */
	const cJSON *o0 = cJSON_GetArrayItem(obj(root, "pools"), 0);
	CU_ASSERT_DOUBLE_EQUAL(num(obj(o0, "available"), "rpm"), 10.0, 1e-9);
	cJSON_Delete(root);
	free(j);
	CU_ASSERT_PTR_NULL(shl_stats_json(NULL));
	shl_detach(ro);
	shl_detach(h);
	shl_unlink(seg);
}

int main(void)
{
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	CU_pSuite s = CU_add_suite("stats_json", NULL, NULL);
	CU_add_test(s, "every field equals the snapshot", test_fields);
	CU_add_test(s, "no cap is null; read-only handle", test_nocap_readonly);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	unsigned fails = CU_get_number_of_failures();
	unsigned errs = CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return (fails || errs) ? 1 : 0;
}
