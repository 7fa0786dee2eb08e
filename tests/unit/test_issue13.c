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

void suite_issue13(void)
{
	CU_pSuite s = CU_add_suite("issue13", NULL, NULL);
	TU_ADD(s, test_pool_index_after_apply);
}
