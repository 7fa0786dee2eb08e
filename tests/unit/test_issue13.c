/*
 * test_issue13.c - regression tests for issue 13 (an outside review): each
 * test failed on the code as reviewed and passes with the fix.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "testutil.h"

void suite_issue13(void);

#define PRICES "\"prices\": {\"input\": 1, \"output\": 1, \"cache_write_5m\": 1, " \
	       "\"cache_write_1h\": 1, \"cache_read\": 1}"
#define POOL(n) "{\"name\": \"" n "\", \"rpm\": 600, \"itpm\": 100000, \"otpm\": 100000, " PRICES "}"

/* ------------------------------------------------------------------ */
/* 1. Pool identity: shl_pool_stats is compacted, so its position is not  */
/*    the pool index.  After [a,b,c] -> [b,c], b is index 1 at position  */
/*    0; the statistics carry the index and shl_pool_find names it.      */
/* ------------------------------------------------------------------ */

static void test_pool_index_after_apply(void)
{
	const char *name = tu_name();
	shl_config *abc = tu_cfg("{\"spend_cap_usd\": null, \"pools\": [" POOL("a") ", " POOL("b")
				 ", " POOL("c") "], \"models\": [{\"match\": \"mc\", \"pool\": \"c\"}]}");
	shl_config *bc = tu_cfg("{\"spend_cap_usd\": null, \"pools\": [" POOL("b") ", " POOL("c")
				"], \"models\": [{\"match\": \"mc\", \"pool\": \"c\"}]}");
	shl_t *h = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_create(name, abc, 0, &h, NULL), 0);
	CU_ASSERT_EQUAL(shl_pool_find(h, "a"), 0);
	CU_ASSERT_EQUAL(shl_pool_find(h, "c"), 2);
	CU_ASSERT_EQUAL(shl_apply(h, bc, NULL), 0);
	CU_ASSERT_EQUAL(shl_pool_find(h, "a"), -ESRCH);
	CU_ASSERT_EQUAL(shl_pool_find(h, "b"), 1);
	CU_ASSERT_EQUAL(shl_pool_find(h, "c"), 2);
	CU_ASSERT_EQUAL(shl_pool_find(h, ""), -ESRCH);
	CU_ASSERT_EQUAL(shl_pool_find(h, NULL), -EINVAL);
	CU_ASSERT_EQUAL(shl_model_pool(h, shl_lookup(h, "mc")), 2);
	shl_stats st;
	CU_ASSERT_EQUAL_FATAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL_FATAL(st.npools, 2);
	CU_ASSERT_STRING_EQUAL(st.pools[0].name, "b");
	CU_ASSERT_EQUAL(st.pools[0].index, 1);
	CU_ASSERT_STRING_EQUAL(st.pools[1].name, "c");
	CU_ASSERT_EQUAL(st.pools[1].index, 2);
	/* A hold on c is seen on the entry whose index is 2. */
	CU_ASSERT_EQUAL(shl_hold(h, shl_pool_find(h, "c"), 30000000000LL), 0);
	CU_ASSERT_EQUAL_FATAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[0].hold_ns, 0);
	CU_ASSERT(st.pools[1].hold_ns > 0);
	shl_config_free(abc);
	shl_config_free(bc);
	shl_detach(h);
	shl_unlink(name);
}

/* ------------------------------------------------------------------ */
/* 5. A NUL inside a configuration string ("claude-opus\u0000-evil*")    */
/*    was truncated by cJSON and accepted: a prefix pattern became an    */
/*    exact id.  Refused, naming the key path.                           */
/* ------------------------------------------------------------------ */

static int parse_err(const char *json, shl_err *e)
{
	shl_config *c = NULL;
	memset(e, 0, sizeof(*e));
	int r = shl_config_parse(json, strlen(json), &c, e);
	shl_config_free(c);
	return r;
}

static void test_config_nul_in_string(void)
{
	shl_err e;
	const char *models = "{\"pools\": [" POOL("p") "], \"models\": [{\"match\": \"a\", \"pool\": "
			     "\"p\"}, {\"match\": \"claude-opus\\u0000-evil*\", \"pool\": \"p\"}]}";
	CU_ASSERT_EQUAL(parse_err(models, &e), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "models[1].match"));
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "NUL"));
	const char *pool = "{\"pools\": [{\"name\": \"p\\u0000x\", \"rpm\": 1, \"itpm\": 1, "
			   "\"otpm\": 1, " PRICES "}]}";
	CU_ASSERT_EQUAL(parse_err(pool, &e), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "pools[0].name"));
	const char *pn = "{\"pools\": [" POOL("p") "], \"models\": [{\"match\": \"a\", \"pool\": "
			 "\"p\\u0000q\"}]}";
	CU_ASSERT_EQUAL(parse_err(pn, &e), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "models[0].pool"));
	const char *mode = "{\"pools\": [{\"name\": \"p\", \"rpm\": 1, \"itpm\": 1, \"otpm\": 1, "
			   "\"otpm_mode\": \"reserve\\u0000junk\", " PRICES "}]}";
	CU_ASSERT_EQUAL(parse_err(mode, &e), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "pools[0].otpm_mode"));
	/* In a key: "name\u0000x" would read as "name". */
	const char *key = "{\"pools\": [{\"name\\u0000x\": \"p\", \"rpm\": 1, \"itpm\": 1, "
			  "\"otpm\": 1, " PRICES "}]}";
	CU_ASSERT_EQUAL(parse_err(key, &e), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "pools[0]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "NUL"));
	/* An escaped backslash before "u0000" is not a NUL: "a\\u0000" is the
	 * 7 characters a \ u 0 0 0 0, refused for its backslash, not a NUL. */
	const char *lit = "{\"pools\": [" POOL("p") "], \"models\": [{\"match\": \"a\\\\u0000\", "
			  "\"pool\": \"p\"}]}";
	CU_ASSERT_EQUAL(parse_err(lit, &e), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "models[0].match: expected a model id"));
	const char *ok = "{\"pools\": [" POOL("p") "], \"models\": [{\"match\": \"a\\u0041*\", "
			 "\"pool\": \"p\"}]}";
	CU_ASSERT_EQUAL(parse_err(ok, &e), 0); /* other escapes still read */
}

/* 8. Messages: JSON nested too deep says so; a price of 1e-400 (a finer
 *    amount than 0.001, read as 0 by strtod) is refused like 0.0001. */
static void test_config_messages(void)
{
	shl_err e;
	char deep[4200];
	size_t n = 0;
	for (int i = 0; i < 2000; i++)
		deep[n++] = '[';
	deep[n] = 0;
	CU_ASSERT_EQUAL(parse_err(deep, &e), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "nested"));
	const char *tiny = "{\"pools\": [{\"name\": \"p\", \"rpm\": 1, \"itpm\": 1, \"otpm\": 1, "
			   "\"prices\": {\"input\": 1e-400, \"output\": 1, \"cache_write_5m\": 1, "
			   "\"cache_write_1h\": 1, \"cache_read\": 1}}]}";
	CU_ASSERT_EQUAL(parse_err(tiny, &e), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "pools[0].prices.input"));
	const char *zero = "{\"pools\": [{\"name\": \"p\", \"rpm\": 1, \"itpm\": 1, \"otpm\": 1, "
			   "\"prices\": {\"input\": 0e-400, \"output\": 1, \"cache_write_5m\": 1, "
			   "\"cache_write_1h\": 1, \"cache_read\": 0}}]}";
	CU_ASSERT_EQUAL(parse_err(zero, &e), 0); /* a zero written so is still zero */
}

void suite_issue13(void)
{
	CU_pSuite s = CU_add_suite("issue13", NULL, NULL);
	TU_ADD(s, test_pool_index_after_apply);
	TU_ADD(s, test_config_nul_in_string);
	TU_ADD(s, test_config_messages);
}
