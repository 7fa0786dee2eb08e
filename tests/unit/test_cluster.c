/*
 * test_cluster.c - multi-host mode, the host side without Redis: the
 * `cluster` configuration, the credit an admission takes, the fallback
 * share, the spend budget, and the layout of the cluster areas.  (The
 * agent against a real redis-server: tests/cluster/cluster.c.)
 */
#include <stddef.h>

#include "testutil.h"

#define CL_POOL \
	"{\"spend_cap_usd\": %s, \"pools\": [{\"name\": \"p\", \"rpm\": 600, \"itpm\": 60000," \
	" \"otpm\": 6000, \"burst\": {\"rpm\": 8, \"itpm\": 1000, \"otpm\": 100}, \"margin\": 0," \
	" \"prices\": {\"input\": 3, \"output\": 15, \"cache_write_5m\": 3.75," \
	" \"cache_write_1h\": 6, \"cache_read\": 0.3}}]," \
	" \"models\": [{\"match\": \"m*\", \"pool\": \"p\"}]%s}"

static shl_config *cl_cfg(const char *cap, const char *cluster)
{
	char j[2048];
	snprintf(j, sizeof(j), CL_POOL, cap, cluster);
	return tu_cfg(j);
}

static void cl_bad(const char *cluster, const char *prefix)
{
	char j[2048];
	snprintf(j, sizeof(j), CL_POOL, "null", cluster);
	shl_config *c = NULL;
	shl_err e = {{0}};
	CU_ASSERT_EQUAL(shl_config_parse(j, strlen(j), &c, &e), -EINVAL);
	CU_ASSERT_PTR_NULL(c);
	if (strncmp(e.msg, prefix, strlen(prefix)) != 0) {
		fprintf(stderr, "\n  expected '%s...', got '%s'\n", prefix, e.msg);
		CU_FAIL("error does not name the key path");
	}
}

#define CL_OK ", \"cluster\": {\"redis\": \"127.0.0.1:6390\", \"prefix\": \"acme\", \"lease_ms\": 100}"

static void test_cluster_config(void)
{
	shl_config *c = cl_cfg("null", CL_OK);
	CU_ASSERT_EQUAL(c->cluster.enabled, 1);
	CU_ASSERT_EQUAL(c->cluster.port, 6390);
	CU_ASSERT_STRING_EQUAL(c->cluster.host, "127.0.0.1");
	CU_ASSERT_STRING_EQUAL(c->cluster.prefix, "acme");
	CU_ASSERT_EQUAL(c->cluster.lease_ms, 100);
	CU_ASSERT(c->slot.pools[0].flags & SHL_PF_CLUSTER);
	/* Round trip, and through a segment (create, then show). */
	char *t = shl_config_to_json(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(t, "\"redis\":\t\"127.0.0.1:6390\""));
	shl_config *back = tu_cfg(t);
	CU_ASSERT_EQUAL(memcmp(&back->cluster, &c->cluster, sizeof(c->cluster)), 0);
	free(t);
	shl_config_free(back);
	const char *name = tu_name();
	shl_t *h;
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, &h, NULL), 0);
	shl_config *live;
	CU_ASSERT_EQUAL(shl_config_get(h, &live), 0);
	CU_ASSERT_EQUAL(memcmp(&live->cluster, &c->cluster, sizeof(c->cluster)), 0);
	shl_config_free(live);
	/* An apply without the object turns multi-host mode off. */
	shl_config *single = cl_cfg("null", "");
	CU_ASSERT_FALSE(single->cluster.enabled);
	CU_ASSERT_EQUAL(shl_apply(h, single, NULL), 0);
	CU_ASSERT_EQUAL(shl_config_get(h, &live), 0);
	CU_ASSERT_FALSE(live->cluster.enabled);
	CU_ASSERT_FALSE(live->slot.pools[0].flags & SHL_PF_CLUSTER);
	shl_config_free(live);
	shl_config_free(single);
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c);
	/* Bad input names the key. */
	cl_bad(", \"cluster\": 3", "cluster: expected an object");
	cl_bad(", \"cluster\": {\"prefix\": \"a\"}", "cluster.redis: expected");
	cl_bad(", \"cluster\": {\"redis\": \"localhost\", \"prefix\": \"a\"}", "cluster.redis: expected");
	cl_bad(", \"cluster\": {\"redis\": \"h:70000\", \"prefix\": \"a\"}", "cluster.redis: expected");
	cl_bad(", \"cluster\": {\"redis\": \"h;rm:1\", \"prefix\": \"a\"}", "cluster.redis: host has");
	cl_bad(", \"cluster\": {\"redis\": \"h:1\"}", "cluster.prefix: expected");
	cl_bad(", \"cluster\": {\"redis\": \"h:1\", \"prefix\": \"a{b\"}", "cluster.prefix: printable");
	cl_bad(", \"cluster\": {\"redis\": \"h:1\", \"prefix\": \"a\", \"lease_ms\": 5}",
	       "cluster.lease_ms: expected an integer from 10 to 10000");
	cl_bad(", \"cluster\": {\"redis\": \"h:1\", \"prefix\": \"a\", \"fallback_share\": 2}",
	       "cluster.fallback_share: expected a fraction");
	cl_bad(", \"cluster\": {\"redis\": \"h:1\", \"prefix\": \"a\", \"hosts\": 2}",
	       "cluster.hosts: unknown key");
}

/* A segment in multi-host mode whose agent "beats" (the fake clock's now),
 * so that workers do not grant themselves fallback credit. */
static shl_t *cl_seg(const char *cap, const char *cluster, const char **name)
{
	shl_config *c = cl_cfg(cap, cluster);
	*name = tu_name();
	shl_t *h = NULL;
	CU_ASSERT_EQUAL(shl_create(*name, c, 0, &h, NULL), 0);
	shl_config_free(c);
	return h;
}

static void beat(shl_t *h)
{
	atomic_store(&h->seg->ext.cluster.agent_beat, tu_boot);
	atomic_store(&h->seg->ext.cluster.fallback, 0);
}

static void test_credit(void)
{
	tu_fake_clock(1);
	tu_boot = 1000000000000LL;
	tu_unix = 1764547200000000000LL;
	const char *name;
	shl_t *h = cl_seg("null", CL_OK, &name);
	beat(h);
	int m = shl_lookup(h, "m1");
	struct shl_cluster_pool *cp = &h->seg->pext[0].cluster;
	shl_cost c = {.input_tokens = 100, .max_tokens = 10};
	shl_ticket t;
	shl_refusal why;
	/* No credit: refused, the demand recorded for the agent, the wait is
	 * the agent's period (lease_ms / 4), the local buckets untouched. */
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.wait_ns, 25000000);
	CU_ASSERT_EQUAL(atomic_load(&cp->short_refusals), 1);
	CU_ASSERT(atomic_load(&cp->dim[SHL_DIM_RPM].need_ns) >= 100000000ULL ||
		  atomic_load(&cp->dim[SHL_DIM_ITPM].need_ns) >= 100000000ULL);
	CU_ASSERT_EQUAL(atomic_load(&h->seg->pools[0].bkt[0].tat), 0);
	/* Credit for one request in every leased dimension: admitted, and
	 * the credit is spent exactly (RPM 100 ms a request, ITPM 1 ms a
	 * token); the next request is refused again. */
	atomic_store(&cp->dim[SHL_DIM_RPM].credit, 100000000);
	atomic_store(&cp->dim[SHL_DIM_ITPM].credit, 100000000);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	CU_ASSERT_EQUAL(atomic_load(&cp->dim[SHL_DIM_RPM].credit), 0);
	CU_ASSERT_EQUAL(atomic_load(&cp->dim[SHL_DIM_ITPM].credit), 0);
	CU_ASSERT_EQUAL(shl_settle(h, &t, &(shl_usage){.input_tokens = 100, .output_tokens = 5}), 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	/* Credit in RPM only: all or nothing, the RPM credit given back. */
	atomic_store(&cp->dim[SHL_DIM_RPM].credit, 100000000);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_ITPM);
	CU_ASSERT_EQUAL(atomic_load(&cp->dim[SHL_DIM_RPM].credit), 100000000);
	/* The local bucket still rules: with plenty of credit, at most the
	 * burst (8 requests) at once. */
	atomic_store(&cp->dim[SHL_DIM_RPM].credit, 10000000000LL);
	atomic_store(&cp->dim[SHL_DIM_ITPM].credit, 10000000000LL);
	tu_boot += 60000000000LL;
	int n = 0;
	while (shl_try(h, m, &(shl_cost){.input_tokens = 1}, &t, &why) == 0 && n < 100)
		n++;
	CU_ASSERT_EQUAL(n, 8);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_RPM);
	CU_ASSERT_EQUAL(atomic_load(&cp->dim[SHL_DIM_RPM].credit), 10000000000LL - 8 * 100000000LL);
	/* A request over three quarters of a bucket can never hold a lease. */
	tu_boot += 60000000000LL;
	CU_ASSERT_EQUAL(shl_try(h, m, &(shl_cost){.input_tokens = 751}, &t, &why), -E2BIG);
	CU_ASSERT_EQUAL(why.capacity, 750);
	CU_ASSERT_EQUAL(shl_try(h, m, &(shl_cost){.input_tokens = 750}, &t, &why), 0);
	/* shl_reserve has no line here: admitted now, or -ETIMEDOUT past the
	 * deadline with the agent's period as the wait. */
	atomic_store(&cp->dim[SHL_DIM_RPM].credit, 0);
	beat(h);
	CU_ASSERT_EQUAL(shl_reserve(h, m, &c, 0, &t, &why), -ETIMEDOUT);
	CU_ASSERT_EQUAL(shl_reserve(h, m, &c, 1000000000, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.wait_ns, 25000000);
	shl_detach(h);
	shl_unlink(name);
	tu_fake_clock(0);
}

static void test_fallback(void)
{
	tu_fake_clock(1);
	tu_boot = 1000000000000LL;
	tu_unix = 1764547200000000000LL;
	const char *name;
	shl_t *h = cl_seg("null",
			  ", \"cluster\": {\"redis\": \"127.0.0.1:6390\", \"prefix\": \"acme\","
			  " \"lease_ms\": 100, \"fallback_share\": 0.25}",
			  &name);
	int m = shl_lookup(h, "m1");
	struct shl_cluster_pool *cp = &h->seg->pext[0].cluster;
	shl_ticket t;
	shl_refusal why;
	shl_cost c = {.input_tokens = 1};
	/* No agent ever beat: the worker grants itself V of each dimension
	 * (6 requests of RPM: three quarters of the burst of 8) at the share,
	 * once per V / share of time. */
	int n = 0;
	while (shl_try(h, m, &c, &t, &why) == 0 && n < 100) {
		n++;
		tu_boot += 100000000; /* the local bucket's rate: never the limit here */
	}
	CU_ASSERT_EQUAL(n, 6);
	CU_ASSERT_EQUAL(atomic_load(&cp->fallback_grants), 2); /* RPM and ITPM */
	/* The share's clock: the next grant after V / 0.25 = 2.4 s from the
	 * first. */
	tu_boot += 1000000000;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	tu_boot += 1000000000;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	/* A live agent that says Redis is up: no fallback. */
	tu_boot += 60000000000LL;
	beat(h);
	atomic_store(&cp->dim[SHL_DIM_RPM].credit, 0);
	uint64_t grants = atomic_load(&cp->fallback_grants);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(atomic_load(&cp->fallback_grants), grants);
	/* The agent says Redis is away: fallback again. */
	atomic_store(&h->seg->ext.cluster.fallback, 1);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.cluster, 1);
	CU_ASSERT_EQUAL(st.cluster_fallback, 1);
	CU_ASSERT(st.pools[0].lease_fallback >= 3);
	shl_detach(h);
	shl_unlink(name);
	tu_fake_clock(0);
}

static void test_spend_budget(void)
{
	tu_fake_clock(1);
	tu_boot = 1000000000000LL;
	tu_unix = 1764547200000000000LL; /* 2025-12-01 */
	const char *name;
	shl_t *h = cl_seg("10", CL_OK, &name);
	beat(h);
	int m = shl_lookup(h, "m1");
	struct shl_cluster_pool *cp = &h->seg->pext[0].cluster;
	atomic_store(&cp->dim[SHL_DIM_RPM].credit, 100000000000LL);
	atomic_store(&cp->dim[SHL_DIM_ITPM].credit, 100000000000LL);
	shl_ticket t;
	shl_refusal why;
	/* 1000 input tokens at 3 USD/MTok + 100 output at 15: 4.5e6 units. */
	shl_cost c = {.input_tokens = 100, .max_tokens = 100};
	int64_t one;
	CU_ASSERT_EQUAL(shl_price(h, m, &c, &one), 0);
	/* No budget leased for this month: not the cap, a wait for the agent. */
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_SPEND);
	CU_ASSERT(why.wait_ns > 0);
	/* A budget of two requests: two admitted, the third waits. */
	uint32_t month = shl__month_of(tu_unix, NULL);
	atomic_store(&h->seg->ext.cluster.spend_budget,
		     (uint64_t)(month & 127u) << SHL_SPEND_BITS | (uint64_t)(2 * one));
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	tu_boot += 1000000000;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	tu_boot += 1000000000;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	/* The organisation's cap is reached (the agent's mark): -EDQUOT. */
	atomic_store(&h->seg->ext.cluster.global_exhausted, month + 1);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EDQUOT);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.cluster_spend_budget, 2 * one);
	CU_ASSERT(st.spend_month <= st.cluster_spend_budget);
	shl_detach(h);
	shl_unlink(name);
	tu_fake_clock(0);
}

static void test_cluster_layout(void)
{
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, port), 4);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, lease_ms), 8);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, fallback_ppm), 12);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, host), 16);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, prefix), 144);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, agent_beat), 208);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, redis_ok_at), 216);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, redis_up), 224);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, hosts_seen), 228);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, redis_ops), 232);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, refills), 240);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, spend_budget), 248);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, global_exhausted), 256);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, fallback), 260);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_seg, rtt_ns), 264);
	CU_ASSERT_EQUAL(sizeof(struct shl_cluster_seg), 512);
	CU_ASSERT_EQUAL(offsetof(struct shl_cl_dim, credit), 0);
	CU_ASSERT_EQUAL(offsetof(struct shl_cl_dim, fb_tat), 8);
	CU_ASSERT_EQUAL(offsetof(struct shl_cl_dim, need_ns), 16);
	CU_ASSERT_EQUAL(offsetof(struct shl_cl_dim, granted_ns), 24);
	CU_ASSERT_EQUAL(offsetof(struct shl_cl_dim, expired_ns), 32);
	CU_ASSERT_EQUAL(sizeof(struct shl_cl_dim), 64);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_pool, short_refusals), 192);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_pool, refills), 200);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_pool, fallback_grants), 208);
	CU_ASSERT_EQUAL(offsetof(struct shl_cluster_pool, hold_pushed), 216);
	CU_ASSERT_EQUAL(sizeof(struct shl_cluster_pool), 256);
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, ext.cluster), 0x180000 + 1088);
	CU_ASSERT_EQUAL(offsetof(struct shl_seg, pext[1].cluster), 0x181000 + 1024 + 576);
	CU_ASSERT_EQUAL(SHL_PF_CLUSTER, 0x100);
}

void suite_cluster(void)
{
	CU_pSuite s = CU_add_suite("cluster", NULL, NULL);
	TU_ADD(s, test_cluster_layout);
	TU_ADD(s, test_cluster_config);
	TU_ADD(s, test_credit);
	TU_ADD(s, test_fallback);
	TU_ADD(s, test_spend_budget);
}
