/*
 * test_config.c - the JSON configuration: presets, round trips, model
 * matching, and one test per kind of bad input, each checking the key
 * path named in the error.
 */
#include "testutil.h"

static void expect_bad(const char *json, const char *msg_prefix)
{
	shl_config *c = NULL;
	shl_err e = {{0}};
	int r = shl_config_parse(json, strlen(json), &c, &e);
	CU_ASSERT_EQUAL(r, -EINVAL);
	CU_ASSERT_PTR_NULL(c);
	if (strncmp(e.msg, msg_prefix, strlen(msg_prefix)) != 0) {
		fprintf(stderr, "\n  expected '%s...', got '%s'\n", msg_prefix, e.msg);
		CU_FAIL("error message does not name the key path");
	}
}

#define POOL(extra) \
	"{\"pools\":[{\"name\":\"a\",\"rpm\":60,\"itpm\":6000,\"otpm\":600," extra \
	"\"prices\":{\"input\":1,\"output\":5,\"cache_write_5m\":1.25,\"cache_write_1h\":2," \
	"\"cache_read\":0.1}}]}"

static void test_presets(void)
{
	for (int t = 1; t <= 4; t++) {
		shl_config *c = NULL;
		CU_ASSERT_EQUAL_FATAL(shl_config_preset(t, &c), 0);
		/* opus, sonnet, haiku, and the catch-all for unknown models */
		CU_ASSERT_EQUAL(c->slot.npools, 4);
		CU_ASSERT(c->slot.nmodels >= 4);
		CU_ASSERT_EQUAL(c->slot.unknown_policy, SHL_UNKNOWN_POOL);
		CU_ASSERT(c->slot.spend_cap > 0);
		shl_config_free(c);
	}
	shl_config *c = NULL;
	CU_ASSERT_EQUAL(shl_config_preset(0, &c), -EINVAL);
	CU_ASSERT_EQUAL(shl_config_preset(5, &c), -EINVAL);
	CU_ASSERT_PTR_NULL(shl_preset_json(5));
	/* Tier 1 against the reference table: $100 cap, Haiku 4.5 50/50000/10000. */
	CU_ASSERT_EQUAL(shl_config_preset(1, &c), 0);
	CU_ASSERT_EQUAL(c->slot.spend_cap, 100 * SHL_UNITS_PER_USD);
	CU_ASSERT_STRING_EQUAL(c->slot.pools[2].name, "haiku");
	CU_ASSERT_EQUAL(c->slot.pools[2].limit[SHL_DIM_ITPM], 50000);
	/* Default bursts: rpm one second's worth rounded down (at least 1),
	 * tokens a minute. */
	CU_ASSERT_EQUAL(c->slot.pools[2].burst[SHL_DIM_RPM], 1);
	CU_ASSERT_EQUAL(c->slot.pools[2].burst[SHL_DIM_ITPM], 50000);
	shl_config_free(c);
	CU_ASSERT_EQUAL(shl_config_preset(4, &c), 0);
	CU_ASSERT_EQUAL(c->slot.pools[0].burst[SHL_DIM_RPM], 66); /* floor(4000 / 60) */
	shl_config_free(c);
}

static void test_round_trip(void)
{
	const char *j = "{\"spend_cap_usd\":12.34,\"pools\":[{\"name\":\"x\",\"rpm\":7,\"itpm\":700,"
			"\"otpm\":70,\"burst\":{\"itpm\":100},\"otpm_mode\":\"reserve\","
			"\"cache_reads_count\":true,\"prices\":{\"input\":0.8,\"output\":4,"
			"\"cache_write_5m\":1,\"cache_write_1h\":1.6,\"cache_read\":0.08}}],"
			"\"models\":[{\"match\":\"claude-3-5-haiku*\",\"pool\":\"x\"},"
			"{\"match\":\"exact\",\"pool\":\"x\",\"prices\":{\"input\":0.25,"
			"\"output\":1.25,\"cache_write_5m\":0.3,\"cache_write_1h\":0.5,"
			"\"cache_read\":0.03}}]}";
	shl_config *a = tu_cfg(j);
	char *t1 = shl_config_to_json(a);
	shl_config *b = tu_cfg(t1);
	char *t2 = shl_config_to_json(b);
	CU_ASSERT_STRING_EQUAL(t1, t2);
	CU_ASSERT_EQUAL(memcmp(&a->slot, &b->slot, sizeof(a->slot)), 0);
	CU_ASSERT_EQUAL(b->slot.spend_cap, 1234 * SHL_UNITS_PER_USD / 100);
	CU_ASSERT_EQUAL(b->slot.pools[0].burst[SHL_DIM_ITPM], 100);
	CU_ASSERT_EQUAL(b->slot.pools[0].burst[SHL_DIM_RPM], 1);
	CU_ASSERT(b->slot.pools[0].flags & SHL_PF_OTPM_RESERVE);
	CU_ASSERT(b->slot.pools[0].flags & SHL_PF_CACHE_READS);
	/* Exact cheapest price: 0.03 USD/MTok = 30 units per token. */
	CU_ASSERT_EQUAL(b->slot.models[1].price[SHL_P_READ], 30);
	CU_ASSERT_EQUAL(b->slot.models[0].price[SHL_P_CW1], 1600);
	CU_ASSERT_PTR_NULL(strstr(t1, "\"rpm\":\t1,")); /* default burst not written */
	free(t1);
	free(t2);
	shl_config_free(a);
	shl_config_free(b);
	/* Presets round-trip too. */
	for (int t = 1; t <= 4; t++) {
		shl_config *p;
		shl_config_preset(t, &p);
		char *x = shl_config_to_json(p);
		shl_config *q = tu_cfg(x);
		CU_ASSERT_EQUAL(memcmp(&p->slot, &q->slot, sizeof(p->slot)), 0);
		free(x);
		shl_config_free(p);
		shl_config_free(q);
	}
}

static void test_model_match(void)
{
	shl_config *c;
	shl_config_preset(2, &c);
	struct shl_cfg_slot *s = &c->slot;
	int m = shl__model_match(s, "claude-opus-4-1-20250805");
	CU_ASSERT_STRING_EQUAL(s->models[m].match, "claude-opus-4-1*"); /* longest prefix */
	m = shl__model_match(s, "claude-opus-4-6");
	CU_ASSERT_STRING_EQUAL(s->models[m].match, "claude-opus-4*");
	CU_ASSERT_EQUAL(s->models[m].price[SHL_P_INPUT], 5000);
	m = shl__model_match(s, "claude-sonnet-4-5-20250929");
	CU_ASSERT_STRING_EQUAL(s->pools[s->models[m].pool].name, "sonnet");
	/* A family the preset does not name: its catch-all entry. */
	CU_ASSERT(s->models[shl__model_match(s, "claude-2")].flags & SHL_MF_CATCHALL);
	CU_ASSERT(s->models[shl__model_match(s, "")].flags & SHL_MF_CATCHALL);
	shl_config_free(c);
	/* An exact id beats any prefix. */
	c = tu_cfg("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"prices\":{\"input\":1,"
		   "\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1,\"cache_read\":1}},"
		   "{\"name\":\"b\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"prices\":{\"input\":1,"
		   "\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1,\"cache_read\":1}}],"
		   "\"models\":[{\"match\":\"abc*\",\"pool\":\"a\"},{\"match\":\"abcd\",\"pool\":\"b\"},"
		   "{\"match\":\"*\",\"pool\":\"a\"}]}");
	CU_ASSERT_EQUAL(shl__model_match(&c->slot, "abcd"), 1);
	CU_ASSERT_EQUAL(shl__model_match(&c->slot, "abcde"), 0);
	CU_ASSERT_EQUAL(shl__model_match(&c->slot, "zzz"), 2); /* catch-all */
	shl_config_free(c);
}

static void test_bad_configs(void)
{
	expect_bad("", "(root): not valid JSON");
	expect_bad("{\"pools\": [", "(root): not valid JSON");
	expect_bad("[]", "(root): expected an object");
	expect_bad("{\"poolz\": []}", "(root).poolz: unknown key");
	expect_bad("{\"pools\": [], \"pools\": []}", "(root).pools: key given twice");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":50,\"rpm\":0,\"itpm\":1,\"otpm\":1}]}",
		   "pools[0].rpm: key given twice");
	expect_bad("{}", "pools: expected an array");
	expect_bad("{\"pools\": []}", "pools: expected an array of 1 to 64");
	expect_bad("{\"pools\": [5]}", "pools[0]: expected an object");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":0,\"itpm\":1,\"otpm\":1}]}", "pools[0].rpm: expected a positive integer");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":-3,\"otpm\":1}]}",
		   "pools[0].itpm: expected a positive integer");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1.5,\"otpm\":1}]}",
		   "pools[0].itpm: expected a positive integer");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":\"9\",\"otpm\":1}]}",
		   "pools[0].itpm: expected a positive integer");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1}]}", "pools[0].otpm: missing");
	expect_bad("{\"pools\":[{\"name\":\"a b\",\"rpm\":1,\"itpm\":1,\"otpm\":1}]}",
		   "pools[0].name: expected 1 to 31");
	expect_bad("{\"pools\":[{\"rpm\":1,\"itpm\":1,\"otpm\":1}]}", "pools[0].name:");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1}]}",
		   "pools[0].prices: missing");
	expect_bad(POOL("\"ipm\":1,"), "pools[0].ipm: unknown key");
	expect_bad(POOL("\"burst\":{\"rpm\":0},"), "pools[0].burst.rpm: expected a positive integer");
	expect_bad(POOL("\"burst\":{\"rmp\":1},"), "pools[0].burst.rmp: unknown key");
	expect_bad(POOL("\"burst\":[1],"), "pools[0].burst: expected an object");
	expect_bad(POOL("\"otpm_mode\":\"lazy\","), "pools[0].otpm_mode: expected \"actual\" or");
	expect_bad(POOL("\"cache_reads_count\":1,"), "pools[0].cache_reads_count: expected true");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"prices\":{"
		   "\"input\":1,\"output\":-5,\"cache_write_5m\":1,\"cache_write_1h\":1,"
		   "\"cache_read\":1}}]}",
		   "pools[0].prices.output: expected a price");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"prices\":{"
		   "\"input\":1.0005,\"output\":5,\"cache_write_5m\":1,\"cache_write_1h\":1,"
		   "\"cache_read\":1}}]}",
		   "pools[0].prices.input: expected at most 3 decimals");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"prices\":{"
		   "\"input\":1,\"output\":5,\"cache_write_5m\":1,\"cache_write_1h\":1}}]}",
		   "pools[0].prices.cache_read: missing");
	expect_bad("{\"spend_cap_usd\":-1,\"pools\":[]}", "spend_cap_usd: expected a number");
	expect_bad("{\"spend_cap_usd\":\"100\",\"pools\":[]}", "spend_cap_usd: expected a number");
	expect_bad("{\"spend_cap_usd\":1e12,\"pools\":[]}", "spend_cap_usd: expected a number");
	expect_bad("{\"spend_cap_usd\":0.006,\"pools\":[]}", "spend_cap_usd: expected whole cents");
	expect_bad("{\"spend_cap_usd\":100.0061,\"pools\":[]}", "spend_cap_usd: expected whole cents");
	expect_bad(POOL("") " x", "(root): unexpected text after the JSON document (at byte");
	expect_bad(POOL("") "\n{}", "(root): unexpected text after the JSON document");
	/* two pools of one name */
	char j[1024];
	snprintf(j, sizeof(j), "{\"pools\":[%s,%s]}",
		 "{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"prices\":{\"input\":1,\"output\":1,"
		 "\"cache_write_5m\":1,\"cache_write_1h\":1,\"cache_read\":1}}",
		 "{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1}");
	expect_bad(j, "pools[1].name: duplicate pool name");
	const char *pool = "\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"prices\":{"
			   "\"input\":1,\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1,"
			   "\"cache_read\":1}}]";
	snprintf(j, sizeof(j), "{%s,\"models\":[{\"match\":\"x\",\"pool\":\"nope\"}]}", pool);
	expect_bad(j, "models[0].pool: no pool of that name");
	snprintf(j, sizeof(j), "{%s,\"models\":[{\"match\":\"x*y\",\"pool\":\"a\"}]}", pool);
	expect_bad(j, "models[0].match: expected a model id or a prefix");
	snprintf(j, sizeof(j), "{%s,\"models\":[{\"match\":\"\",\"pool\":\"a\"}]}", pool);
	expect_bad(j, "models[0].match:");
	snprintf(j, sizeof(j), "{%s,\"models\":[{\"match\":\"x\",\"pool\":\"a\"},{\"match\":\"x\","
		 "\"pool\":\"a\"}]}", pool);
	expect_bad(j, "models[1].match: duplicate model pattern");
	snprintf(j, sizeof(j), "{%s,\"models\":[{\"match\":\"x\",\"pool\":\"a\",\"price\":1}]}", pool);
	expect_bad(j, "models[0].price: unknown key");
	snprintf(j, sizeof(j), "{%s,\"models\":{}}", pool);
	expect_bad(j, "models: expected an array");
	/* 65 pools */
	size_t cap = 65 * 200 + 64;
	char *big = malloc(cap);
	size_t at = (size_t)snprintf(big, cap, "{\"pools\":[");
	for (int i = 0; i < 65; i++)
		at += (size_t)snprintf(big + at, cap - at, "%s{\"name\":\"p%d\",\"rpm\":1,\"itpm\":1,"
				       "\"otpm\":1}", i ? "," : "", i);
	snprintf(big + at, cap - at, "]}");
	expect_bad(big, "pools: expected an array of 1 to 64");
	free(big);
	/* NULL and missing arguments */
	shl_config *c = NULL;
	CU_ASSERT_EQUAL(shl_config_parse(NULL, 0, &c, NULL), -EINVAL);
	CU_ASSERT_PTR_NULL(shl_config_to_json(NULL));
}

static void test_exact_amounts(void)
{
	/* Cents and 3-decimal prices whose doubles are a hair off are exact. */
	shl_config *c = tu_pool_cfg(60, 600, 600, 1, 600, 600, NULL, "0.29");
	CU_ASSERT_EQUAL(c->slot.spend_cap, 29 * SHL_UNITS_PER_USD / 100);
	shl_config_free(c);
	c = tu_pool_cfg(60, 600, 600, 1, 600, 600, NULL, "143999999.99");
	CU_ASSERT_EQUAL(c->slot.spend_cap, 14399999999LL * (SHL_UNITS_PER_USD / 100));
	shl_config_free(c);
	c = tu_cfg("{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"prices\":{"
		   "\"input\":99999.999,\"output\":0.007,\"cache_write_5m\":1.1,"
		   "\"cache_write_1h\":2.675,\"cache_read\":0.001}}]}");
	CU_ASSERT_EQUAL(c->slot.pools[0].price[SHL_P_INPUT], 99999999);
	CU_ASSERT_EQUAL(c->slot.pools[0].price[SHL_P_OUTPUT], 7);
	CU_ASSERT_EQUAL(c->slot.pools[0].price[SHL_P_CW5], 1100);
	CU_ASSERT_EQUAL(c->slot.pools[0].price[SHL_P_CW1], 2675);
	CU_ASSERT_EQUAL(c->slot.pools[0].price[SHL_P_READ], 1);
	shl_config_free(c);
	/* White space after the document is fine, and so is a NUL ending it. */
	const char *j = POOL("") " \n\t";
	c = NULL;
	CU_ASSERT_EQUAL(shl_config_parse(j, strlen(j), &c, NULL), 0);
	shl_config_free(c);
	c = NULL;
	CU_ASSERT_EQUAL(shl_config_parse(j, strlen(j) + 1, &c, NULL), 0);
	shl_config_free(c);
	/* Default RPM burst: one second's worth rounded down, at least 1. */
	const int rpm[] = {1, 59, 60, 119, 120, 4000};
	const uint64_t burst[] = {1, 1, 1, 1, 2, 66};
	for (int i = 0; i < 6; i++) {
		char b[512];
		snprintf(b, sizeof(b), "{\"pools\":[{\"name\":\"a\",\"rpm\":%d,\"itpm\":7,"
			 "\"otpm\":7,\"prices\":{\"input\":1,\"output\":1,\"cache_write_5m\":1,"
			 "\"cache_write_1h\":1,\"cache_read\":1}}]}", rpm[i]);
		c = tu_cfg(b);
		CU_ASSERT_EQUAL(c->slot.pools[0].burst[SHL_DIM_RPM], burst[i]);
		CU_ASSERT_EQUAL(c->slot.pools[0].burst[SHL_DIM_ITPM], 7);
		shl_config_free(c);
	}
}

static void test_limits_and_bursts(void)
{
	/* burst * interval must fit: 1 per minute with a burst of 1e12 is 60e21 ns */
	expect_bad(POOL("\"burst\":{\"otpm\":1000000000000},"), "pools[0].burst.otpm");
	/* the maximum limit is accepted */
	shl_config *c = tu_pool_cfg(1000000, 1000000, 1000000, 1, 1, 1, NULL, "144000");
	CU_ASSERT_EQUAL(c->slot.spend_cap, 144000LL * SHL_UNITS_PER_USD);
	shl_config_free(c);
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":1000000000001,\"itpm\":1,\"otpm\":1}]}",
		   "pools[0].rpm: expected a positive integer up to");
}

/*
 * pools[].margin (issue 12, cause 3): a fraction 0..0.5, default 0.002,
 * stored as parts per million; it lengthens every bucket's interval by
 * 1 + margin; written back only when it is not the default, so configs
 * written before it round-trip unchanged.
 */
static void test_margin(void)
{
	shl_config *c = tu_cfg(POOL(""));
	CU_ASSERT_EQUAL(c->slot.pools[0].margin_ppm, 2000); /* the default */
	char *t = shl_config_to_json(c);
	CU_ASSERT_PTR_NULL(strstr(t, "margin")); /* default: not written */
	free(t);
	struct shl_local *l = malloc(sizeof(*l));
	shl__local_build(l, &c->slot);
	/* 60 RPM: 1 s per request, 1.002 s with the margin; itpm 6000: 10 ms
	 * a token, 10.02 ms; the burst in units is unchanged. */
	CU_ASSERT_EQUAL(l->pools[0].interval[SHL_DIM_RPM], 1002000000ULL);
	CU_ASSERT_EQUAL(l->pools[0].interval[SHL_DIM_ITPM], 10020000ULL);
	CU_ASSERT_EQUAL(l->pools[0].interval[SHL_DIM_OTPM], 100200000ULL);
	CU_ASSERT_EQUAL(l->pools[0].tol[SHL_DIM_RPM], 1002000000ULL);
	shl_config_free(c);
	/* margin 0: exactly the limit; 0.5: half as fast again. */
	c = tu_cfg(POOL("\"margin\":0,"));
	shl__local_build(l, &c->slot);
	CU_ASSERT_EQUAL(l->pools[0].interval[SHL_DIM_RPM], 1000000000ULL);
	t = shl_config_to_json(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(t, "\"margin\""));
	shl_config *back = tu_cfg(t);
	CU_ASSERT_EQUAL(memcmp(&c->slot, &back->slot, sizeof(c->slot)), 0);
	free(t);
	shl_config_free(back);
	shl_config_free(c);
	c = tu_cfg(POOL("\"margin\":0.5,"));
	shl__local_build(l, &c->slot);
	CU_ASSERT_EQUAL(c->slot.pools[0].margin_ppm, 500000);
	CU_ASSERT_EQUAL(l->pools[0].interval[SHL_DIM_RPM], 1500000000ULL);
	t = shl_config_to_json(c);
	back = tu_cfg(t);
	CU_ASSERT_EQUAL(back->slot.pools[0].margin_ppm, 500000);
	free(t);
	shl_config_free(back);
	shl_config_free(c);
	/* A rate that does not divide evenly is rounded up (under-admits). */
	c = tu_cfg(POOL("\"margin\":0.000001,"));
	shl__local_build(l, &c->slot);
	CU_ASSERT_EQUAL(l->pools[0].interval[SHL_DIM_RPM], 1000001000ULL);
	CU_ASSERT_EQUAL(l->pools[0].interval[SHL_DIM_ITPM], 10000010ULL);
	shl_config_free(c);
	free(l);
	/* Out of range, or not a number: the key path named. */
	expect_bad(POOL("\"margin\":0.51,"), "pools[0].margin: expected a fraction from 0 to 0.5");
	expect_bad(POOL("\"margin\":-0.001,"), "pools[0].margin: expected a fraction");
	expect_bad(POOL("\"margin\":\"2%\","), "pools[0].margin: expected a fraction");
	expect_bad(POOL("\"margin\":0.0000001,"), "pools[0].margin: expected at most 6 decimals");
	expect_bad("{\"pools\":[{\"name\":\"a\",\"rpm\":60,\"itpm\":6000,\"otpm\":600,\"prices\":{"
		   "\"input\":1,\"output\":5,\"cache_write_5m\":1.25,\"cache_write_1h\":2,"
		   "\"cache_read\":0.1}},{\"name\":\"b\",\"rpm\":60,\"itpm\":6000,\"otpm\":600,"
		   "\"margin\":1,\"prices\":{\"input\":1,\"output\":5,\"cache_write_5m\":1.25,"
		   "\"cache_write_1h\":2,\"cache_read\":0.1}}]}",
		   "pools[1].margin: expected a fraction from 0 to 0.5");
	/* A slot read back from shared memory with a scribbled margin. */
	c = tu_cfg(POOL(""));
	c->slot.pools[0].margin_ppm = 500001;
	shl_err e = {{0}};
	CU_ASSERT_EQUAL(shl__slot_validate(&c->slot, &e), -EUCLEAN);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "config.pools[0].margin"));
	shl_config_free(c);
}

void suite_config(void)
{
	CU_pSuite s = CU_add_suite("config", NULL, NULL);
	TU_ADD(s, test_presets);
	TU_ADD(s, test_round_trip);
	TU_ADD(s, test_model_match);
	TU_ADD(s, test_bad_configs);
	TU_ADD(s, test_limits_and_bursts);
	TU_ADD(s, test_exact_amounts);
	TU_ADD(s, test_margin);
}
