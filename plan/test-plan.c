/*
 * test-plan.c - the planner's figures against hand computation, its error
 * messages, and its command line.
 *
 * Usage: test-plan PATH/TO/shmlimit-plan [DOC...]
 * (each DOC must mention every long option that --help lists)
 *
 * Every expected figure below is worked out by hand in the comment above
 * it, from the tier presets (libshmlimit/presets) and the API's pricing
 * rules; the planner must print exactly that text.  Prices are in the
 * library's units: USD per million tokens x 1000 = nano-dollars per token,
 * e.g. Sonnet input $3/MTok = 3000 units per token.  Closes with
 * "N passed, N failed" and exits non-zero on any failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plan.h"

static int npass, nfail;
static const char *plan_bin;
static char tmpdir[64];

#define CHECK(cond, ...)                                                                     \
	do {                                                                                 \
		if (cond) {                                                                  \
			npass++;                                                             \
		} else {                                                                     \
			nfail++;                                                             \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                 \
			fprintf(stderr, __VA_ARGS__);                                        \
			fputc('\n', stderr);                                                 \
		}                                                                            \
	} while (0)

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* The item at a path like "pools[1].load.itpm", or NULL. */
static const cJSON *jpath(const cJSON *root, const char *path)
{
	const cJSON *cur = root;
	const char *p = path;
	while (cur != NULL && *p != '\0') {
		if (*p == '.')
			p++;
		if (*p == '[') {
			char *end = NULL;
			long i = strtol(p + 1, &end, 10);
			if (end == NULL || *end != ']')
				return NULL;
			cur = cJSON_GetArrayItem(cur, (int)i);
			p = end + 1;
			continue;
		}
		size_t n = strcspn(p, ".[");
		char key[64];
		if (n >= sizeof(key))
			return NULL;
		memcpy(key, p, n);
		key[n] = '\0';
		cur = cJSON_GetObjectItemCaseSensitive(cur, key);
		p += n;
	}
	return cur;
}

/* The JSON text of the item at `path` equals `want`. */
static void expect_json(const cJSON *root, const char *path, const char *want, int line)
{
	const cJSON *it = jpath(root, path);
	char *got = it ? cJSON_PrintUnformatted(it) : NULL;
	if (got != NULL && strcmp(got, want) == 0) {
		npass++;
	} else {
		nfail++;
		fprintf(stderr, "FAIL %s:%d: %s = %s, expected %s\n", __FILE__, line, path,
			got ? got : "(missing)", want);
	}
	free(got);
}
#define EXPECT(root, path, want) expect_json(root, path, want, __LINE__)

/* Plan `mix` at a tier (tier > 0) or with a config text; the JSON result. */
static cJSON *plan(int tier, const char *cfgjson, const char *mixjson)
{
	static struct plan_cfg cfg;
	static struct plan_mix mix;
	static struct plan_result res;
	char err[512] = "";
	int r = tier > 0 ? plan_cfg_preset(tier, &cfg, err, sizeof(err))
			 : plan_cfg_parse(cfgjson, strlen(cfgjson), "test.json", &cfg, err,
					  sizeof(err));
	if (r == 0)
		r = plan_mix_parse(mixjson, strlen(mixjson), &mix, err, sizeof(err));
	if (r == 0)
		r = plan_compute(&cfg, &mix, &res, err, sizeof(err));
	CHECK(r == 0, "plan failed: %s", err);
	return r == 0 ? plan_to_json(&res) : NULL;
}

/* The error of planning `mix`: returns the code and the message in err. */
static int plan_err(int tier, const char *cfgjson, const char *mixjson, char *err, size_t n)
{
	static struct plan_cfg cfg;
	static struct plan_mix mix;
	static struct plan_result res;
	err[0] = '\0';
	int r = tier > 0 ? plan_cfg_preset(tier, &cfg, err, n)
			 : plan_cfg_parse(cfgjson, strlen(cfgjson), "test.json", &cfg, err, n);
	if (r == 0)
		r = plan_mix_parse(mixjson, strlen(mixjson), &mix, err, n);
	if (r == 0)
		r = plan_compute(&cfg, &mix, &res, err, n);
	return r;
}

static void expect_err(int tier, const char *cfg, const char *mix, const char *want, int line)
{
	char err[512];
	int r = plan_err(tier, cfg, mix, err, sizeof(err));
	if (r < 0 && strcmp(err, want) == 0) {
		npass++;
	} else {
		nfail++;
		fprintf(stderr, "FAIL %s:%d: got %d \"%s\", expected \"%s\"\n", __FILE__, line, r,
			err, want);
	}
}
#define EXPECT_ERR(tier, mix, want) expect_err(tier, NULL, mix, want, __LINE__)

/* Does any warning contain `needle`? */
static int has_warning(const cJSON *root, const char *needle)
{
	const cJSON *w;
	cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(root, "warnings"))
		if (cJSON_IsString(w) && strstr(w->valuestring, needle) != NULL)
			return 1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Hand-computed cases                                                 */
/* ------------------------------------------------------------------ */

/*
 * The prompt-caching case: a 10,000-token request on Sonnet with
 * 5,000 cacheable tokens at an 80% hit rate (5 min TTL), 500 output tokens,
 * 5 requests per minute, at tier 1 (Sonnet pool: 50 RPM, 30,000 ITPM,
 * 8,000 OTPM; $100 cap).  Prices, units per token: input 3000, output 15000,
 * 5 min write 3750, read 300.
 *
 * Per request, expected tokens:
 *   uncached input  10,000 - 5,000            = 5,000
 *   cache writes    5,000 x (1 - 0.8) misses  = 1,000
 *   cache reads     5,000 x 0.8 hits          = 4,000 (not counted in ITPM)
 *   ITPM per request 5,000 + 1,000            = 6,000   (10,000 without caching)
 * Load at 5 rpm: RPM 5 (10.00 %), ITPM 30,000 (100.00 %), OTPM 2,500 (31.25 %).
 * ITPM binds first; the most this mix sustains is 30,000 / 6,000 = 5 rpm,
 * and without caching 30,000 / 10,000 = 3 rpm (ITPM 50,000 at 5 rpm:
 * 166.67 %, headroom -20,000).
 *
 * Cost per request:
 *   no caching: 10,000 x 3000 + 500 x 15000                       = 37,500,000 units ($0.0375)
 *   caching:    5,000 x 3000 + 1,000 x 3750 + 4,000 x 300 + 500 x 15000
 *             = 15,000,000 + 3,750,000 + 1,200,000 + 7,500,000  = 27,450,000 units ($0.02745)
 * Requests per month: 5 x 60 x 24 x 30 = 216,000.
 *   no caching: 216,000 x $0.0375  = $8,100   = 8,100,000,000,000 units
 *   caching:    216,000 x $0.02745 = $5,929.2 = 5,929,200,000,000 units
 *   no Batch share, so caching + Batch = caching.
 * Against the $100 cap: 8,100 % and 5,929.20 %; the cap is reached after
 * 100 x 30 / 8,100 = 0.370 days (0.37) and 100 x 30 / 5,929.2 = 0.5059 (0.51);
 * months of budget 100 / 8,100 = 0.0123 (0.012), 100 / 5,929.2 = 0.01686 (0.017).
 */
static void test_caching_case(void)
{
	cJSON *j = plan(1, NULL,
			"{\"tasks\":[{\"name\":\"chat\",\"model\":\"claude-sonnet-4-5-20250929\","
			"\"rpm\":5,\"input_tokens\":10000,\"output_tokens\":500,"
			"\"cacheable_tokens\":5000,\"cache_hit_rate\":0.8}]}");
	if (j == NULL)
		return;
	EXPECT(j, "tasks[0].pool", "\"sonnet\"");
	EXPECT(j, "tasks[0].match", "\"claude-sonnet-4*\"");
	EXPECT(j, "tasks[0].itpm_per_request", "6000.000");
	EXPECT(j, "tasks[0].requests_per_month", "216000.000");
	EXPECT(j, "pools[1].name", "\"sonnet\"");
	EXPECT(j, "pools[1].load.rpm", "5.000");
	EXPECT(j, "pools[1].load.itpm", "30000.000");
	EXPECT(j, "pools[1].load.otpm", "2500.000");
	EXPECT(j, "pools[1].utilisation_pct.rpm", "10.00");
	EXPECT(j, "pools[1].utilisation_pct.itpm", "100.00");
	EXPECT(j, "pools[1].utilisation_pct.otpm", "31.25");
	EXPECT(j, "pools[1].headroom.rpm", "45.000");
	EXPECT(j, "pools[1].headroom.itpm", "0.000");
	EXPECT(j, "pools[1].headroom.otpm", "5500.000");
	EXPECT(j, "pools[1].binds_first", "\"itpm\"");
	EXPECT(j, "pools[1].max_requests_per_min", "5.000");
	EXPECT(j, "pools[1].max_messages_requests_per_min", "5.000");
	EXPECT(j, "pools[1].no_cache_no_batch.load.itpm", "50000.000");
	EXPECT(j, "pools[1].no_cache_no_batch.utilisation_pct.itpm", "166.67");
	EXPECT(j, "pools[1].no_cache_no_batch.headroom.itpm", "-20000.000");
	EXPECT(j, "pools[1].no_cache_no_batch.binds_first", "\"itpm\"");
	EXPECT(j, "pools[1].no_cache_no_batch.max_requests_per_min", "3.000");
	EXPECT(j, "pools[1].burst.rpm", "1");
	EXPECT(j, "pools[1].burst.itpm", "30000");
	EXPECT(j, "tasks[0].cost_per_request_usd.no_cache", "0.037500000000");
	EXPECT(j, "tasks[0].cost_per_request_usd.cache", "0.027450000000");
	EXPECT(j, "cost_units.no_cache", "8100000000000");
	EXPECT(j, "cost_units.cache", "5929200000000");
	EXPECT(j, "cost_units.cache_batch", "5929200000000");
	EXPECT(j, "cost_usd.cache", "5929.200000000");
	EXPECT(j, "pools[1].cost_units.cache", "5929200000000");
	EXPECT(j, "spend_cap.units", "100000000000");
	EXPECT(j, "spend_cap.no_cache.cap_share_pct", "8100.00");
	EXPECT(j, "spend_cap.cache.cap_share_pct", "5929.20");
	EXPECT(j, "spend_cap.no_cache.days_to_cap", "0.37");
	EXPECT(j, "spend_cap.cache.days_to_cap", "0.51");
	EXPECT(j, "spend_cap.no_cache.months_of_budget", "0.012");
	EXPECT(j, "spend_cap.cache.months_of_budget", "0.017");
	EXPECT(j, "spend_cap.cache_batch.within_cap", "false");
	/* The idle pools are listed, with no load and nothing binding. */
	EXPECT(j, "pools[0].name", "\"opus\"");
	EXPECT(j, "pools[0].tasks", "0");
	EXPECT(j, "pools[0].binds_first", "null");
	EXPECT(j, "pools[0].max_requests_per_min", "null");
	EXPECT(j, "pools[2].load.itpm", "0.000");
	CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "warnings")) == 0, "no warning expected");
	cJSON_Delete(j);
}

/*
 * A Batch case, at tier 2 (Haiku 4.5 pool: 1,000 RPM, 450,000 ITPM,
 * 90,000 OTPM; Sonnet pool the same; $500 cap), a month of 20 days of 8 h.
 *
 * Task 0 "digest", Haiku 4.5 (input 1000, output 5000 units/token): 100 rpm,
 * 2,000 input and 1,000 output tokens, no caching, half through Batch.
 *   Messages API: 50 rpm -> RPM 50 (5.00 %), ITPM 100,000 (22.22 %),
 *   OTPM 50,000 (55.56 %, binds).  The mix scales by 90,000 / 50,000 = 1.8:
 *   180 requests/min in all, 90 through the Messages API.  Without Batch
 *   (and caching): OTPM 100,000 > 90,000 (111.11 %, headroom -10,000),
 *   max 90 rpm.
 *   Per request: 2,000 x 1000 + 1,000 x 5000 = 7,000,000 units ($0.007).
 *   Requests per month 100 x 60 x 8 x 20 = 960,000: $6,720 without Batch;
 *   with half at 50 % off: 6,720 x (1 - 0.5 / 2) = $5,040.
 *
 * Task 1 "backfill", Sonnet (3000 / 15000; 1 h write 6000, read 300): 10 rpm,
 * all through Batch, 4,000 input tokens of which 3,000 cacheable at a 50 %
 * hit rate with the 1 h TTL, 200 output tokens.
 *   Messages API load: none -> nothing binds, no maximum.  Without Batch
 *   and caching: RPM 10 (1 %), ITPM 40,000 (8.89 %, binds), OTPM 2,000
 *   (2.22 %): max 10 x 450,000 / 40,000 = 112.5 rpm.
 *   Per request, caching: 1,000 x 3000 + 1,500 x 6000 + 1,500 x 300 +
 *   200 x 15000 = 3,000,000 + 9,000,000 + 450,000 + 3,000,000 = 15,450,000
 *   units ($0.01545); Batch halves it (discounts stack): $0.007725.
 *   No caching: 4,000 x 3000 + 200 x 15000 = 15,000,000 ($0.015).
 *   Requests per month 10 x 60 x 8 x 20 = 96,000: no caching $1,440,
 *   caching $1,483.20 (a 50 % hit rate on 1 h writes costs more than it
 *   saves), caching + Batch $741.60.
 *
 * Totals: $8,160 / $8,203.20 / $5,781.60.  Batch: 50 + 10 = 60 rpm.
 * Cap $500: 5,781.60 is 1,156.32 % of it, reached after
 * 500 x 20 / 5,781.6 = 1.7296 days (1.73).
 */
static void test_batch_case(void)
{
	cJSON *j = plan(2, NULL,
			"{\"days_per_month\":20,\"hours_per_day\":8,\"tasks\":["
			"{\"name\":\"digest\",\"model\":\"claude-haiku-4-5\",\"rpm\":100,"
			"\"input_tokens\":2000,\"output_tokens\":1000,\"batch_share\":0.5},"
			"{\"name\":\"backfill\",\"model\":\"claude-sonnet-4-5\",\"rpm\":10,"
			"\"input_tokens\":4000,\"cacheable_tokens\":3000,\"cache_hit_rate\":0.5,"
			"\"cache_ttl\":\"1h\",\"output_tokens\":200,\"batch_share\":1}]}");
	if (j == NULL)
		return;
	/* tier 2 lists opus, sonnet, haiku */
	EXPECT(j, "pools[2].name", "\"haiku\"");
	EXPECT(j, "pools[2].requests_per_min", "100.000");
	EXPECT(j, "pools[2].batch_requests_per_min", "50.000");
	EXPECT(j, "pools[2].load.rpm", "50.000");
	EXPECT(j, "pools[2].load.itpm", "100000.000");
	EXPECT(j, "pools[2].load.otpm", "50000.000");
	EXPECT(j, "pools[2].utilisation_pct.rpm", "5.00");
	EXPECT(j, "pools[2].utilisation_pct.itpm", "22.22");
	EXPECT(j, "pools[2].utilisation_pct.otpm", "55.56");
	EXPECT(j, "pools[2].binds_first", "\"otpm\"");
	EXPECT(j, "pools[2].max_requests_per_min", "180.000");
	EXPECT(j, "pools[2].max_messages_requests_per_min", "90.000");
	EXPECT(j, "pools[2].no_cache_no_batch.utilisation_pct.otpm", "111.11");
	EXPECT(j, "pools[2].no_cache_no_batch.headroom.otpm", "-10000.000");
	EXPECT(j, "pools[2].no_cache_no_batch.max_requests_per_min", "90.000");
	EXPECT(j, "tasks[0].requests_per_month", "960000.000");
	EXPECT(j, "tasks[0].cost_per_request_usd.no_cache", "0.007000000000");
	EXPECT(j, "tasks[0].cost_per_request_usd.cache_batch", "0.005250000000");
	EXPECT(j, "tasks[0].cost_usd.no_cache", "6720.000000000");
	EXPECT(j, "tasks[0].cost_usd.cache", "6720.000000000");
	EXPECT(j, "tasks[0].cost_usd.cache_batch", "5040.000000000");

	EXPECT(j, "pools[1].load.rpm", "0.000");
	EXPECT(j, "pools[1].binds_first", "null");
	EXPECT(j, "pools[1].max_requests_per_min", "null");
	EXPECT(j, "pools[1].no_cache_no_batch.utilisation_pct.itpm", "8.89");
	EXPECT(j, "pools[1].no_cache_no_batch.binds_first", "\"itpm\"");
	EXPECT(j, "pools[1].no_cache_no_batch.max_requests_per_min", "112.500");
	EXPECT(j, "tasks[1].itpm_per_request", "2500.000"); /* 1,000 + 1,500 writes */
	EXPECT(j, "tasks[1].cost_per_request_usd.no_cache", "0.015000000000");
	EXPECT(j, "tasks[1].cost_per_request_usd.cache", "0.015450000000");
	EXPECT(j, "tasks[1].cost_per_request_usd.cache_batch", "0.007725000000");
	EXPECT(j, "tasks[1].cost_units.no_cache", "1440000000000");
	EXPECT(j, "tasks[1].cost_units.cache", "1483200000000");
	EXPECT(j, "tasks[1].cost_units.cache_batch", "741600000000");

	EXPECT(j, "batch_requests_per_min", "60.000");
	EXPECT(j, "cost_units.no_cache", "8160000000000");
	EXPECT(j, "cost_units.cache", "8203200000000");
	EXPECT(j, "cost_units.cache_batch", "5781600000000");
	EXPECT(j, "spend_cap.usd", "500.000000000");
	EXPECT(j, "spend_cap.cache_batch.cap_share_pct", "1156.32");
	EXPECT(j, "spend_cap.cache_batch.days_to_cap", "1.73");
	cJSON_Delete(j);
}

/*
 * A pool that counts cache reads (as Haiku 3.5 did), a configuration file
 * with model patterns, and no spend cap.
 *   pool "h35": 60 RPM, 60,000 ITPM, 6,000 OTPM, cache_reads_count;
 *     prices 0.8 / 4 / 1 / 1.6 / 0.08 -> 800 / 4000 / 1000 / 1600 / 80 units
 *   pool "other": 10 / 1000 / 1000, prices all 1.
 *   models: "claude-3*" -> other, "claude-3-5-haiku*" -> h35,
 *           "claude-3-5-haiku-x" (exact) -> h35 with input price 2.
 * Task 0, "claude-3-5-haiku-20241022": the longest prefix wins (h35).
 *   4 rpm, 10,000 input of which 8,000 cacheable at 75 %, 100 output.
 *   ITPM per request: 2,000 + 8,000 x 0.25 writes + 8,000 x 0.75 reads
 *   = 2,000 + 2,000 + 6,000 = 10,000: everything counts here.
 *   Load: RPM 4 (6.67 %), ITPM 40,000 (66.67 %), OTPM 400 (6.67 %);
 *   ITPM binds; max 4 x 60,000 / 40,000 = 6 rpm.
 *   Cost per request: 2,000 x 800 + 2,000 x 1000 + 6,000 x 80 + 100 x 4000
 *   = 1,600,000 + 2,000,000 + 480,000 + 400,000 = 4,480,000 units.
 * Task 1, "claude-3-5-haiku-x": the exact entry wins, input at 2000 units:
 *   1 request of 1,000 input, 0 output: 2,000,000 units, 1 rpm.
 * The h35 pool at 5 rpm: ITPM 41,000.
 */
static void test_cache_reads_and_patterns(void)
{
	static const char cfg[] =
		"{\"spend_cap_usd\":null,\"pools\":["
		"{\"name\":\"h35\",\"rpm\":60,\"itpm\":60000,\"otpm\":6000,"
		"\"cache_reads_count\":true,\"prices\":{\"input\":0.8,\"output\":4,"
		"\"cache_write_5m\":1,\"cache_write_1h\":1.6,\"cache_read\":0.08}},"
		"{\"name\":\"other\",\"rpm\":10,\"itpm\":1000,\"otpm\":1000,\"prices\":"
		"{\"input\":1,\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1,"
		"\"cache_read\":1}}],"
		"\"models\":[{\"match\":\"claude-3*\",\"pool\":\"other\"},"
		"{\"match\":\"claude-3-5-haiku*\",\"pool\":\"h35\"},"
		"{\"match\":\"claude-3-5-haiku-x\",\"pool\":\"h35\",\"prices\":{\"input\":2,"
		"\"output\":4,\"cache_write_5m\":1,\"cache_write_1h\":1.6,\"cache_read\":0.08}}]}";
	cJSON *j = plan(0, cfg,
			"{\"tasks\":[{\"model\":\"claude-3-5-haiku-20241022\",\"rpm\":4,"
			"\"input_tokens\":10000,\"cacheable_tokens\":8000,\"cache_hit_rate\":0.75,"
			"\"output_tokens\":100},"
			"{\"model\":\"claude-3-5-haiku-x\",\"rpm\":1,\"input_tokens\":1000,"
			"\"output_tokens\":0}]}");
	if (j == NULL)
		return;
	EXPECT(j, "tasks[0].name", "\"tasks[0]\"");
	EXPECT(j, "tasks[0].match", "\"claude-3-5-haiku*\"");
	EXPECT(j, "tasks[0].pool", "\"h35\"");
	EXPECT(j, "tasks[0].itpm_per_request", "10000.000");
	EXPECT(j, "tasks[0].cost_per_request_usd.cache", "0.004480000000");
	EXPECT(j, "tasks[1].match", "\"claude-3-5-haiku-x\"");
	EXPECT(j, "tasks[1].cost_per_request_usd.cache", "0.002000000000");
	EXPECT(j, "pools[0].cache_reads_count", "true");
	EXPECT(j, "pools[0].load.itpm", "41000.000");
	EXPECT(j, "pools[0].load.rpm", "5.000");
	EXPECT(j, "pools[0].binds_first", "\"itpm\"");
	EXPECT(j, "pools[1].tasks", "0");
	EXPECT(j, "spend_cap", "null");
	cJSON_Delete(j);

	/* Task 0 alone: exactly the figures of the comment above. */
	j = plan(0, cfg,
		 "{\"tasks\":[{\"model\":\"claude-3-5-haiku-20241022\",\"rpm\":4,"
		 "\"input_tokens\":10000,\"cacheable_tokens\":8000,\"cache_hit_rate\":0.75,"
		 "\"output_tokens\":100}]}");
	if (j == NULL)
		return;
	EXPECT(j, "pools[0].utilisation_pct.rpm", "6.67");
	EXPECT(j, "pools[0].utilisation_pct.itpm", "66.67");
	EXPECT(j, "pools[0].utilisation_pct.otpm", "6.67");
	EXPECT(j, "pools[0].max_requests_per_min", "6.000");
	cJSON_Delete(j);

	/* "claude-3-opus" falls to the shorter prefix, pool "other". */
	j = plan(0, cfg, "{\"tasks\":[{\"model\":\"claude-3-opus\",\"rpm\":1,\"input_tokens\":1,"
			 "\"output_tokens\":1}]}");
	if (j != NULL)
		EXPECT(j, "tasks[0].pool", "\"other\"");
	cJSON_Delete(j);
}

/*
 * Which limit binds, decided exactly.  Tier 1 Sonnet, 10 rpm:
 *   3,000 in / 800 out: ITPM 30,000 and OTPM 8,000 are both at exactly
 *   100 %: a tie goes to the earlier dimension (itpm).
 *   3,000 in / 801 out: OTPM 8,010 is 100.125 %: otpm binds, and the mix
 *   fits 10 x 8,000 / 8,010 = 9.98751... -> 9.988 rpm.
 */
static void test_binding(void)
{
	cJSON *j = plan(1, NULL,
			"{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"rpm\":10,"
			"\"input_tokens\":3000,\"output_tokens\":800}]}");
	if (j != NULL) {
		EXPECT(j, "pools[1].binds_first", "\"itpm\"");
		EXPECT(j, "pools[1].max_requests_per_min", "10.000");
	}
	cJSON_Delete(j);
	j = plan(1, NULL,
		 "{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"rpm\":10,"
		 "\"input_tokens\":3000,\"output_tokens\":801}]}");
	if (j != NULL) {
		EXPECT(j, "pools[1].binds_first", "\"otpm\"");
		EXPECT(j, "pools[1].utilisation_pct.otpm", "100.13");
		EXPECT(j, "pools[1].headroom.otpm", "-10.000");
		EXPECT(j, "pools[1].max_requests_per_min", "9.988");
	}
	cJSON_Delete(j);
}

/*
 * Warnings: 250,000 input tokens is over 200K (long context), and at
 * tier 1 it is also over the Sonnet ITPM burst of 30,000 (E2BIG).  The
 * same task sent wholly through Batch gets only the long-context warning.
 */
static void test_warnings(void)
{
	cJSON *j = plan(1, NULL,
			"{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"rpm\":1,"
			"\"input_tokens\":250000,\"output_tokens\":10}]}");
	if (j != NULL) {
		CHECK(has_warning(j, "over 200K"), "long-context warning expected");
		CHECK(has_warning(j, "needs up to 250000 ITPM but pool sonnet holds at most 30000"),
		      "E2BIG warning expected");
	}
	cJSON_Delete(j);
	j = plan(1, NULL,
		 "{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"rpm\":1,\"batch_share\":1,"
		 "\"input_tokens\":250000,\"output_tokens\":10}]}");
	if (j != NULL) {
		CHECK(has_warning(j, "over 200K"), "long-context warning expected");
		CHECK(!has_warning(j, "E2BIG"), "no E2BIG warning for Batch only");
	}
	cJSON_Delete(j);
}

static void test_format(void)
{
	static const struct {
		unsigned long long num, den;
		int dec;
		const char *want;
	} cases[] = {
		{2, 3, 2, "0.67"},   {1, 3, 2, "0.33"},	    {5, 1000, 2, "0.01"},
		{4, 1000, 2, "0.00"}, {0, 7, 3, "0.000"},   {123456, 1, 0, "123456"},
		{1, 16, 3, "0.063"}, {1999, 1000, 2, "2.00"}, {10, 1, 3, "10.000"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char b[96];
		plan_fmt_q(b, sizeof(b), cases[i].num, cases[i].den, cases[i].dec);
		CHECK(strcmp(b, cases[i].want) == 0, "%llu/%llu .%d = %s, expected %s",
		      cases[i].num, cases[i].den, cases[i].dec, b, cases[i].want);
	}
	/* Beyond 64 bits. */
	char b[96];
	plan_u128 big = (plan_u128)1000000000000000000ULL * 1000000000000000000ULL;
	plan_fmt_q(b, sizeof(b), big * 3, 1000, 1);
	CHECK(strcmp(b, "3000000000000000000000000000000000.0") == 0, "big: %s", b);
}

/* ------------------------------------------------------------------ */
/* Error paths                                                         */
/* ------------------------------------------------------------------ */

#define NOMODEL "\"input_tokens\":100,\"output_tokens\":1"
#define NORPM "{\"model\":\"claude-sonnet-4-5\"," NOMODEL
#define OKT NORPM ",\"rpm\":1"

static void test_errors(void)
{
	EXPECT_ERR(1, "{\"tasks\":[" OKT "}," NORPM ",\"rpm\":-1}]}",
		   "tasks[1].rpm: expected a non-negative number");
	EXPECT_ERR(1, "{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"rpm\":\"10\","
		      "\"input_tokens\":1,\"output_tokens\":1}]}",
		   "tasks[0].rpm: expected a non-negative number");
	EXPECT_ERR(1, "{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"input_tokens\":1,"
		      "\"output_tokens\":1}]}",
		   "tasks[0].rpm: missing (requests per minute)");
	EXPECT_ERR(1, "{\"tasks\":[" NORPM ",\"rpm\":2000000}]}",
		   "tasks[0].rpm: expected at most 1000000 requests per minute");
	EXPECT_ERR(1, "{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"rpm\":1,"
		      "\"input_tokens\":1.5,\"output_tokens\":1}]}",
		   "tasks[0].input_tokens: expected an integer from 0 to 100000000");
	EXPECT_ERR(1, "{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"rpm\":1,"
		      "\"input_tokens\":1}]}",
		   "tasks[0].output_tokens: missing (tokens per request)");
	EXPECT_ERR(1, "{\"tasks\":[" OKT ",\"cacheable_tokens\":101}]}",
		   "tasks[0].cacheable_tokens: expected an integer from 0 to input_tokens (100)");
	EXPECT_ERR(1, "{\"tasks\":[" OKT ",\"cache_hit_rate\":1.5}]}",
		   "tasks[0].cache_hit_rate: expected a number from 0 to 1");
	EXPECT_ERR(1, "{\"tasks\":[" OKT ",\"batch_share\":-0.1}]}",
		   "tasks[0].batch_share: expected a number from 0 to 1");
	EXPECT_ERR(1, "{\"tasks\":[" OKT ",\"cache_ttl\":\"10m\"}]}",
		   "tasks[0].cache_ttl: expected \"5m\" or \"1h\"");
	EXPECT_ERR(1, "{\"tasks\":[" OKT ",\"rpn\":1}]}", "tasks[0].rpn: unknown key");
	EXPECT_ERR(1, "{\"tasks\":[" OKT ",\"name\":\"\"}]}",
		   "tasks[0].name: expected a string of 1 to 63 bytes");
	EXPECT_ERR(1, "{\"tasks\":[{\"rpm\":1,\"input_tokens\":1,\"output_tokens\":1}]}",
		   "tasks[0].model: missing (a model id, e.g. \"claude-sonnet-4-5\")");
	EXPECT_ERR(1, "{\"tasks\":[{\"model\":\"gpt-4\",\"rpm\":1," NOMODEL "}]}",
		   "tasks[0].model: no model entry of tier 1 preset matches \"gpt-4\"");
	EXPECT_ERR(1, "{\"tasks\":[1]}",
		   "tasks[0]: expected an object {name, model, rpm, input_tokens, "
		   "output_tokens, ...}");
	EXPECT_ERR(1, "{\"tasks\":[]}", "tasks: expected an array of 1 to 256 tasks");
	EXPECT_ERR(1, "{}", "tasks: expected an array of 1 to 256 tasks");
	EXPECT_ERR(1, "[]", "(root): expected an object {tasks, days_per_month, hours_per_day}");
	EXPECT_ERR(1, "{\"days\":1,\"tasks\":[" OKT "}]}", "days: unknown key");
	EXPECT_ERR(1, "{\"days_per_month\":0,\"tasks\":[" OKT "}]}",
		   "days_per_month: expected an integer from 1 to 31");
	EXPECT_ERR(1, "{\"hours_per_day\":25,\"tasks\":[" OKT "}]}",
		   "hours_per_day: expected an integer from 1 to 24");
	EXPECT_ERR(1, "{\"tasks\":\n[", "(root): not valid JSON (near byte 10, line 2)");

	char err[512];
	CHECK(plan_err(9, NULL, "{}", err, sizeof(err)) < 0 &&
		      strcmp(err, "--tier 9: no such preset (tiers 1 to 4)") == 0,
	      "tier 9: %s", err);
	/* A configuration error is the library's, with its key path. */
	int r = plan_err(0, "{\"pools\":[{\"name\":\"a\",\"rpm\":0,\"itpm\":1,\"otpm\":1}]}",
			 "{}", err, sizeof(err));
	CHECK(r < 0 && strncmp(err, "pools[0].rpm: expected a positive integer", 41) == 0,
	      "config error: %d %s", r, err);
	/* Duplicate keys are refused (cJSON would silently use the first). */
	EXPECT_ERR(1, "{\"tasks\":[" OKT ",\"rpm\":2}]}", "tasks[0].rpm: duplicate key");
	/* An out-of-range exponent parses as infinity: still refused. */
	EXPECT_ERR(1, "{\"tasks\":[" NORPM ",\"rpm\":1e400}]}",
		   "tasks[0].rpm: expected at most 1000000 requests per minute");
	EXPECT_ERR(1, "{\"tasks\":[" OKT ",\"cache_hit_rate\":-1e400}]}",
		   "tasks[0].cache_hit_rate: expected a number from 0 to 1");
}

/* ------------------------------------------------------------------ */
/* The command line                                                    */
/* ------------------------------------------------------------------ */

/* Run the planner with args (NULL-ended) and optional stdin text. Returns
 * its exit status; its output lands in out/err files read back here. */
static int run(const char *stdin_text, char *out, size_t outn, char *errt, size_t errn, ...)
{
	const char *argv[16];
	int argc = 0;
	argv[argc++] = plan_bin;
	va_list ap;
	va_start(ap, errn);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;

	char pin[128], pout[128], perr[128];
	snprintf(pin, sizeof(pin), "%s/stdin", tmpdir);
	snprintf(pout, sizeof(pout), "%s/stdout", tmpdir);
	snprintf(perr, sizeof(perr), "%s/stderr", tmpdir);
	FILE *f = fopen(pin, "w");
	if (f == NULL)
		return -1;
	if (stdin_text)
		fputs(stdin_text, f);
	fclose(f);
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int i = open(pin, O_RDONLY), o = open(pout, O_WRONLY | O_CREAT | O_TRUNC, 0600),
		    e = open(perr, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (i < 0 || o < 0 || e < 0)
			_exit(127);
		dup2(i, 0);
		dup2(o, 1);
		dup2(e, 2);
		execv(plan_bin, (char *const *)argv);
		_exit(127);
	}
	int st = 0;
	if (waitpid(pid, &st, 0) < 0)
		return -1;
	const char *paths[2] = {pout, perr};
	char *bufs[2] = {out, errt};
	size_t ns[2] = {outn, errn};
	for (int k = 0; k < 2; k++) {
		bufs[k][0] = '\0';
		f = fopen(paths[k], "r");
		if (f == NULL)
			continue;
		size_t n = fread(bufs[k], 1, ns[k] - 1, f);
		bufs[k][n] = '\0';
		fclose(f);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f != NULL) {
		fputs(text, f);
		fclose(f);
	}
}

static void test_cli(void)
{
	static char out[1 << 16], err[4096];
	static const char mix[] =
		"{\"tasks\":[{\"name\":\"chat\",\"model\":\"claude-sonnet-4-5\",\"rpm\":5,"
		"\"input_tokens\":10000,\"output_tokens\":500,\"cacheable_tokens\":5000,"
		"\"cache_hit_rate\":0.8}]}";
	char mixp[128], cfgp[128], badp[128];
	snprintf(mixp, sizeof(mixp), "%s/mix.json", tmpdir);
	snprintf(cfgp, sizeof(cfgp), "%s/cfg.json", tmpdir);
	snprintf(badp, sizeof(badp), "%s/bad.json", tmpdir);
	write_file(mixp, mix);
	write_file(cfgp, shl_preset_json(1));
	write_file(badp, "{\"tasks\":[" OKT "}," NORPM ",\"rpm\":-1}]}");

	int st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "1", mixp, NULL);
	CHECK(st == 0, "table: exit %d, stderr %s", st, err);
	CHECK(strstr(out, "binds first: itpm; this mix fits up to 5.000 requests/min") != NULL,
	      "table: binding line missing:\n%s", out);
	CHECK(strstr(out, "without caching and Batch: binds first: itpm; up to 3.000") != NULL,
	      "table: baseline line missing");
	CHECK(strstr(out, "5929.20") != NULL && strstr(out, "8100.00") != NULL,
	      "table: costs missing");
	CHECK(strstr(out, "reached after 0.51 days") != NULL, "table: cap line missing");
	CHECK(strstr(out, "opus             idle") != NULL, "table: idle pool missing");

	/* --json, the mix from standard input, a config file. */
	st = run(mix, out, sizeof(out), err, sizeof(err), "--config", cfgp, "--json", "-", NULL);
	CHECK(st == 0, "json: exit %d, stderr %s", st, err);
	cJSON *j = cJSON_Parse(out);
	CHECK(j != NULL, "json: output does not parse");
	if (j != NULL) {
		const cJSON *c = cJSON_GetObjectItem(j, "config");
		CHECK(cJSON_IsString(c) && strcmp(c->valuestring, cfgp) == 0, "json: config name");
		EXPECT(j, "cost_units.cache", "5929200000000");
		EXPECT(j, "pools[1].max_requests_per_min", "5");
	}
	cJSON_Delete(j);

	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "1", badp, NULL);
	CHECK(st == 1 && strstr(err, "tasks[1].rpm: expected a non-negative number") != NULL,
	      "bad mix: exit %d, stderr %s", st, err);
	st = run(NULL, out, sizeof(out), err, sizeof(err), mixp, NULL);
	CHECK(st == 2 && strstr(err, "exactly one of --tier N or --config FILE") != NULL,
	      "no config: exit %d, %s", st, err);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "1", "--config", cfgp, mixp,
		 NULL);
	CHECK(st == 2, "both: exit %d", st);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "x", mixp, NULL);
	CHECK(st == 2 && strstr(err, "--tier x: no such preset") != NULL &&
		      strstr(err, "start") != NULL,
	      "tier x: exit %d, %s", st, err);
	/* Today's tiers by name, as shmlimit-ctl takes them: their caps. */
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "build", "--json", mixp, NULL);
	CHECK(st == 0, "tier build: exit %d, %s", st, err);
	j = cJSON_Parse(out);
	CHECK(j != NULL && cJSON_IsString(cJSON_GetObjectItem(j, "config")) &&
		      strcmp(cJSON_GetObjectItem(j, "config")->valuestring, "build preset") == 0,
	      "tier build: config name");
	cJSON_Delete(j);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "Scale", mixp, NULL);
	CHECK(st == 0, "tier Scale: exit %d, %s", st, err);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "9", mixp, NULL);
	CHECK(st == 2 && strstr(err, "no such preset") != NULL, "tier 9: exit %d, %s", st, err);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "1", NULL);
	CHECK(st == 2, "no mix: exit %d", st);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "1", "/nonexistent/mix.json",
		 NULL);
	CHECK(st == 1 && strstr(err, "No such file") != NULL, "missing file: exit %d, %s", st,
	      err);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--config", badp, mixp, NULL);
	CHECK(st == 1 && strstr(err, "tasks: unknown key") != NULL,
	      "bad config: exit %d, %s", st, err);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--bogus", NULL);
	CHECK(st == 2, "unknown option: exit %d", st);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--help", NULL);
	CHECK(st == 0 && strstr(out, "usage: shmlimit-plan") != NULL, "help: exit %d", st);
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--version", NULL);
	CHECK(st == 0 && strstr(out, SHL_VERSION_STRING) != NULL, "version: exit %d", st);

	/* Warnings close the table. */
	write_file(mixp, "{\"tasks\":[{\"model\":\"claude-sonnet-4-5\",\"rpm\":1,"
			 "\"input_tokens\":250000,\"output_tokens\":1}]}");
	st = run(NULL, out, sizeof(out), err, sizeof(err), "--tier", "1", mixp, NULL);
	CHECK(st == 0 && strstr(out, "\nWarnings:\n  tasks[0] (tasks[0]): 250000 input tokens") != NULL,
	      "table warnings: exit %d:\n%s", st, out);

	unlink(mixp);
	unlink(cfgp);
	unlink(badp);
}

/* Every long option of --help appears in each documentation file. */
static void test_docs(int ndocs, char **docs)
{
	static char out[8192], err[1024];
	int st = run(NULL, out, sizeof(out), err, sizeof(err), "--help", NULL);
	CHECK(st == 0, "help: exit %d", st);
	for (int i = 0; i < ndocs; i++) {
		size_t len = 0;
		char e[256];
		char *doc = plan_read_file(docs[i], &len, e, sizeof(e));
		CHECK(doc != NULL, "%s", e);
		if (doc == NULL)
			continue;
		/* man pages write "--" as "\-\-": drop backslashes. */
		size_t w = 0;
		for (size_t r = 0; r < len; r++)
			if (doc[r] != '\\')
				doc[w++] = doc[r];
		doc[w] = '\0';
		int nopts = 0;
		for (const char *p = strstr(out, "--"); p != NULL; p = strstr(p + 2, "--")) {
			char opt[32];
			size_t n = strspn(p + 2, "abcdefghijklmnopqrstuvwxyz-");
			if (n == 0 || n + 3 > sizeof(opt))
				continue;
			snprintf(opt, sizeof(opt), "--%.*s", (int)n, p + 2);
			nopts++;
			CHECK(strstr(doc, opt) != NULL, "%s does not document %s", docs[i], opt);
		}
		CHECK(nopts >= 5, "help lists %d options", nopts);
		free(doc);
	}
}

/*
 * The planner's resolved bursts are the library's (issue 13, defect 6): at
 * rpm 119 the default RPM burst is 119 / 60 rounded down, 1 (the planner
 * used to say 2), and a segment created from the same configuration holds
 * the same numbers.
 */
static void test_burst_is_the_library_s(void)
{
	static const char cfg[] =
		"{\"spend_cap_usd\":null,\"pools\":["
		"{\"name\":\"p\",\"rpm\":119,\"itpm\":1000,\"otpm\":1000,\"prices\":"
		"{\"input\":1,\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1,"
		"\"cache_read\":1}},"
		"{\"name\":\"q\",\"rpm\":59,\"itpm\":7,\"otpm\":9,\"burst\":{\"itpm\":5},\"prices\":"
		"{\"input\":1,\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1,"
		"\"cache_read\":1}}],"
		"\"models\":[{\"match\":\"m\",\"pool\":\"p\"}]}";
	cJSON *j = plan(0, cfg, "{\"tasks\":[{\"model\":\"m\",\"rpm\":1,\"input_tokens\":1,"
				"\"output_tokens\":1}]}");
	if (j == NULL)
		return;
	EXPECT(j, "pools[0].burst.rpm", "1");
	EXPECT(j, "pools[0].burst.itpm", "1000");
	EXPECT(j, "pools[1].burst.rpm", "1");
	EXPECT(j, "pools[1].burst.itpm", "5");
	EXPECT(j, "pools[1].burst.otpm", "9");
	cJSON_Delete(j);
	/* The segment's own numbers, for the same text. */
	shl_config *c = NULL;
	shl_t *h = NULL;
	shl_stats st;
	char name[64];
	snprintf(name, sizeof(name), "test-plan-%d", (int)getpid());
	CHECK(shl_config_parse(cfg, strlen(cfg), &c, NULL) == 0, "parse");
	if (c != NULL && shl_create(name, c, 0, &h, NULL) == 0) {
		CHECK(shl_stats_get(h, &st) == 0 && st.pools[0].burst[SHL_DIM_RPM] == 1,
		      "the segment's rpm burst at 119 rpm is %llu",
		      (unsigned long long)st.pools[0].burst[SHL_DIM_RPM]);
		shl_detach(h);
		shl_unlink(name);
	} else {
		CHECK(0, "create %s", name);
	}
	shl_config_free(c);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: test-plan PATH/TO/shmlimit-plan [DOC...]\n");
		return 2;
	}
	plan_bin = argv[1];
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-plan.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	test_format();
	test_caching_case();
	test_batch_case();
	test_cache_reads_and_patterns();
	test_binding();
	test_burst_is_the_library_s();
	test_warnings();
	test_errors();
	test_cli();
	test_docs(argc - 2, argv + 2);
	char p[128];
	static const char *const names[] = {"stdin", "stdout", "stderr"};
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
		unlink(p);
	}
	CHECK(rmdir(tmpdir) == 0, "rmdir %s: %s", tmpdir, strerror(errno));
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail == 0 ? 0 : 1;
}
