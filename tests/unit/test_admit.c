/*
 * test_admit.c - admission, settle and cancel, spend, feedback, lookup;
 * on a fake clock, so every figure is exact.
 */
#include "testutil.h"

#define S 1000000000LL

static char name[64];
static shl_t *h;

/* A segment from c (freed) on whatever clock is installed. */
static void create_seg(shl_config *c)
{
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_err e = {{0}};
	int r = shl_create(name, c, 0, &h, &e);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	shl_config_free(c);
}

/* The same on the fake clock. */
static void open_seg(shl_config *c)
{
	tu_boot = 5000 * S;
	tu_unix = 1790000000LL * S; /* 2026-09-21, UTC */
	tu_fake_clock(1);
	create_seg(c);
}

static void close_seg(void)
{
	shl_detach(h);
	shl_unlink(name);
	h = NULL;
	tu_fake_clock(0);
}

static void test_all_or_nothing(void)
{
	/* rpm 60 (burst 5), itpm 600 (burst 1000), otpm reserve, 6000 (burst 500) */
	open_seg(tu_pool_cfg(60, 600, 6000, 5, 1000, 500, "\"otpm_mode\":\"reserve\"", NULL));
	int m = shl_lookup(h, "model-x");
	CU_ASSERT_EQUAL_FATAL(m, 0);
	shl_ticket t;
	shl_refusal why;
	shl_cost c = {.input_tokens = 900, .max_tokens = 100};
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	CU_ASSERT_EQUAL(t.itpm, 900);
	CU_ASSERT_EQUAL(t.otpm, 100);
	/* ITPM has 100 left: a 200-token request is refused by ITPM with the
	 * exact wait (100 tokens at 10/s = 10 s), and nothing else moves. */
	c.input_tokens = 200;
	uint64_t rpm_before = atomic_load(&h->seg->pools[0].bkt[SHL_DIM_RPM].tat);
	uint64_t otpm_before = atomic_load(&h->seg->pools[0].bkt[SHL_DIM_OTPM].tat);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_ITPM);
	CU_ASSERT_EQUAL(why.wait_ns, 10 * S);
	CU_ASSERT_EQUAL(why.need, 200);
	CU_ASSERT_EQUAL(why.capacity, 1000);
	CU_ASSERT_EQUAL(atomic_load(&h->seg->pools[0].bkt[SHL_DIM_RPM].tat), rpm_before);
	CU_ASSERT_EQUAL(atomic_load(&h->seg->pools[0].bkt[SHL_DIM_OTPM].tat), otpm_before);
	/* 10 s later it fits exactly. */
	tu_boot += 10 * S;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	/* Bigger than a bucket: its own error at once, never a wait. */
	c.input_tokens = 1001;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -E2BIG);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_ITPM);
	CU_ASSERT_EQUAL(why.capacity, 1000);
	c.input_tokens = 1;
	c.max_tokens = 501;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -E2BIG);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_OTPM);
	CU_ASSERT_EQUAL(shl_acquire(h, m, &c, -1, &t, &why), -E2BIG);
	/* Counts that do not fit the 32-bit fields are refused, not wrapped. */
	c.max_tokens = 1ULL << 33;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EOVERFLOW);
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.pools[0].admitted, 2);
	CU_ASSERT_EQUAL(st.pools[0].refused, 4);
	close_seg();
}

static void test_rpm_burst(void)
{
	open_seg(tu_pool_cfg(120, 100000, 100000, 3, 100000, 100000, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket t;
	shl_refusal why;
	shl_cost c = {.input_tokens = 1};
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_RPM);
	CU_ASSERT_EQUAL(why.wait_ns, S / 2);
	/* acquire with no time left fails at once without sleeping */
	CU_ASSERT_EQUAL(shl_acquire(h, m, &c, 0, &t, &why), -ETIMEDOUT);
	CU_ASSERT_EQUAL(shl_acquire(h, m, &c, S / 2 - 1, &t, &why), -ETIMEDOUT);
	/* Over 10 s exactly 20 more are admitted, one per 0.5 s. */
	int n = 0;
	for (int step = 0; step < 1000; step++) {
		tu_boot += S / 100;
		while (shl_try(h, m, &c, &t, NULL) == 0)
			n++;
	}
	CU_ASSERT_EQUAL(n, 20);
	close_seg();
}

static void test_settle_and_cancel(void)
{
	open_seg(tu_pool_cfg(6000, 60000, 60000, 100, 10000, 10000, NULL, "1000"));
	int m = shl_lookup(h, "m");
	shl_ticket t;
	shl_cost c = {.input_tokens = 1000, .cache_write_5m = 100, .cache_read = 500, .max_tokens = 400};
	int64_t worst;
	CU_ASSERT_EQUAL(shl_price(h, m, &c, &worst), 0);
	/* 1000*3 + 100*3.75 + 500*0.3 + 400*15 USD/MTok, in nano-USD per token */
	CU_ASSERT_EQUAL(worst, 1000 * 3000 + 100 * 3750 + 500 * 300 + 400 * 15000);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, NULL), 0);
	CU_ASSERT_EQUAL(t.spend, worst);
	CU_ASSERT_EQUAL(t.itpm, 1100); /* cache reads do not count here */
	CU_ASSERT_EQUAL(t.otpm, 0);    /* "actual" mode: charged at settle */
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, worst);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 10000 - 1100, 1e-9);
	/* Real usage: more input than estimated, less output. */
	shl_usage u = {.input_tokens = 1200, .output_tokens = 50, .cache_write_5m = 100,
		       .cache_write_1h = 10, .cache_read = 500};
	int64_t real;
	CU_ASSERT_EQUAL(shl_price_usage(h, m, &u, 0, &real), 0);
	CU_ASSERT_EQUAL(real, 1200 * 3000 + 50 * 15000 + 100 * 3750 + 10 * 6000 + 500 * 300);
	CU_ASSERT_EQUAL(shl_settle(h, &t, &u), 0);
	CU_ASSERT_EQUAL(shl_settle(h, &t, &u), -EALREADY);
	CU_ASSERT_EQUAL(shl_cancel(h, &t), -EALREADY);
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, real);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 10000 - 1310, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_OTPM], 10000 - 50, 1e-9);
	CU_ASSERT_EQUAL(st.pools[0].tokens_in, 1200);
	CU_ASSERT_EQUAL(st.pools[0].tokens_out, 50);
	CU_ASSERT_EQUAL(st.pools[0].cache_read, 500);
	CU_ASSERT_EQUAL(st.pools[0].cache_write, 110);
	CU_ASSERT_EQUAL(st.pools[0].spend, real);
	CU_ASSERT_EQUAL(st.pools[0].used_last_minute[SHL_DIM_RPM], 1);
	CU_ASSERT_EQUAL(st.pools[0].used_last_minute[SHL_DIM_ITPM], 1310);
	CU_ASSERT_EQUAL(st.pools[0].used_last_minute[SHL_DIM_OTPM], 50);
	/* Cancel gives back everything. */
	shl_ticket t2;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t2, NULL), 0);
	CU_ASSERT_EQUAL(shl_cancel(h, &t2), 0);
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, real);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 10000 - 1310, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_RPM], 100 - 1, 1e-9);
	CU_ASSERT_EQUAL(st.pools[0].cancelled, 1);
	/* Batch halves every price, rounding up. */
	int64_t b;
	shl_cost cb = {.input_tokens = 1, .batch = 1};
	CU_ASSERT_EQUAL(shl_price(h, m, &cb, &b), 0);
	CU_ASSERT_EQUAL(b, 1500);
	cb.input_tokens = 0;
	cb.cache_read = 1;
	CU_ASSERT_EQUAL(shl_price(h, m, &cb, &b), 0);
	CU_ASSERT_EQUAL(b, 150);
	close_seg();
}

/* A refund after the bucket has refilled past the take gives nothing back:
 * the bucket already forgot it (found by the kill -9 crash test). */
static void test_late_refund_not_credited(void)
{
	open_seg(tu_pool_cfg(60, 6000, 6000, 2, 1000, 1000, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket x, y;
	shl_cost c = {.input_tokens = 600};
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &x, NULL), 0); /* full at +6 s */
	tu_boot += 7 * S;                                   /* refilled past x */
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &y, NULL), 0);  /* full at +6 s again */
	CU_ASSERT_EQUAL(shl_cancel(h, &x), 0);            /* x is long gone */
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 400, 1e-9);
	/* a refund while the take is partly still there gives back that part */
	tu_boot += 3 * S; /* y: 300 of its 600 still owed */
	shl_usage u = {.input_tokens = 0};
	CU_ASSERT_EQUAL(shl_settle(h, &y, &u), 0);
	shl_stats_get(h, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 1000, 1e-9);
	/* (the slack rule gives all of y back: its take found the bucket
	 * idle, for an instant before its end less that; full either way) */
	CU_ASSERT(atomic_load(&h->seg->pools[0].bkt[SHL_DIM_ITPM].tat) <= (uint64_t)tu_boot);
	close_seg();
}

static void test_cache_reads_and_reserve(void)
{
	open_seg(tu_pool_cfg(6000, 60000, 60000, 100, 10000, 10000,
			     "\"cache_reads_count\":true,\"otpm_mode\":\"reserve\"", NULL));
	int m = shl_lookup(h, "m");
	shl_ticket t;
	shl_cost c = {.input_tokens = 100, .cache_read = 900, .max_tokens = 1000};
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, NULL), 0);
	CU_ASSERT_EQUAL(t.itpm, 1000);
	CU_ASSERT_EQUAL(t.otpm, 1000);
	shl_usage u = {.input_tokens = 100, .cache_read = 900, .output_tokens = 300};
	CU_ASSERT_EQUAL(shl_settle(h, &t, &u), 0);
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 9000, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_OTPM], 9700, 1e-9); /* 700 refunded */
	close_seg();
}

static void test_spend_cap(void)
{
	/* cap 0.01 USD = 10,000,000 units; 1000 input tokens at $3/MTok = 3,000,000 */
	open_seg(tu_pool_cfg(6000, 600000, 600000, 100, 100000, 100000, NULL, "0.01"));
	int m = shl_lookup(h, "m");
	shl_ticket t[4];
	shl_refusal why;
	shl_cost c = {.input_tokens = 1000};
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(shl_try(h, m, &c, &t[i], &why), 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t[3], &why), -EDQUOT);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_SPEND);
	CU_ASSERT_EQUAL(why.capacity, 10000000);
	/* refused spend gave the buckets back */
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_RPM], 97, 1e-9);
	CU_ASSERT_EQUAL(shl_acquire(h, m, &c, -1, &t[3], &why), -EDQUOT); /* never waits */
	/* a cancel frees the reservation */
	CU_ASSERT_EQUAL(shl_cancel(h, &t[0]), 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t[0], &why), 0);
	/* The month rolls over at 00:00 UTC on the 1st: 2026-10-01. */
	tu_unix = 1790812800LL * S - 1; /* 2026-09-30T23:59:59.999999999Z */
	atomic_store(&h->month_end_boot, 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t[3], &why), -EDQUOT);
	tu_unix += 1;
	tu_boot += 1;
	atomic_store(&h->month_end_boot, 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t[3], &why), 0);
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, 3000000);
	CU_ASSERT_EQUAL(st.month, 10);
	CU_ASSERT_EQUAL(st.month_year, 2026);
	CU_ASSERT_EQUAL(st.month_resets_unix, 1793491200LL); /* 2026-11-01 */
	/* A September ticket settling in October: its refund is dropped. */
	shl_usage u = {.input_tokens = 10};
	CU_ASSERT_EQUAL(shl_settle(h, &t[1], &u), 0);
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, 3000000);
	/* The server says the cap is reached: refused until next month. */
	CU_ASSERT_EQUAL(shl_spend_exhaust(h), 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t[3], &why), -EDQUOT);
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_exhausted, 1);
	tu_unix = 1793491200LL * S;
	atomic_store(&h->month_end_boot, 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t[3], &why), 0);
	close_seg();
}

static void test_hold_and_clamp(void)
{
	open_seg(tu_pool_cfg(6000, 60000, 60000, 100, 6000, 6000, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket t;
	shl_refusal why;
	shl_cost c = {.input_tokens = 10};
	CU_ASSERT_EQUAL(shl_hold(h, 0, 3 * S), 0);
	CU_ASSERT_EQUAL(shl_hold(h, 0, 1 * S), 0); /* never shortens */
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_HOLD);
	CU_ASSERT_EQUAL(why.wait_ns, 3 * S);
	CU_ASSERT_EQUAL(shl_hold(h, 7, S), -ESRCH);
	tu_boot += 3 * S;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	/* The server says 1000 input tokens remain: we have at most that. */
	CU_ASSERT_EQUAL(shl_clamp(h, 0, SHL_DIM_ITPM, 1000), 0);
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 1000, 1e-9);
	CU_ASSERT_EQUAL(st.pools[0].server_429, 2);
	/* A clamp never raises what is available. */
	CU_ASSERT_EQUAL(shl_clamp(h, 0, SHL_DIM_ITPM, 5000), 0);
	shl_stats_get(h, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 1000, 1e-9);
	CU_ASSERT_EQUAL(shl_clamp(h, 0, 3, 5), -EINVAL);
	close_seg();
}

static void test_lookup(void)
{
	shl_config *c;
	shl_config_preset(3, &c);
	open_seg(c);
	int a = shl_lookup(h, "claude-sonnet-4-5-20250929");
	CU_ASSERT(a >= 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "claude-sonnet-4-5-20250929"), a); /* cached */
	/* The presets send a model they do not name to their catch-all pool. */
	CU_ASSERT_EQUAL(shl_model_pool(h, shl_lookup(h, "gpt-5")), 3);
	CU_ASSERT_EQUAL(shl_model_pool(h, shl_lookup(h, "gpt-5")), 3); /* cached */
	char longid[200];
	memset(longid, 'x', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = 0;
	memcpy(longid, "claude-haiku-4-5", 16);
	CU_ASSERT(shl_lookup(h, longid) >= 0); /* too long to cache, still resolved */
	CU_ASSERT_EQUAL(shl_lookup(h, NULL), -EINVAL);
	/* Many distinct ids: the cache stops growing, answers stay right. */
	for (int i = 0; i < 5000; i++) {
		char id[64];
		snprintf(id, sizeof(id), "claude-opus-4-%d", i);
		int r = shl_lookup(h, id);
		CU_ASSERT_EQUAL(shl_model_pool(h, r), 0);
	}
	/* An apply that reorders the models keeps every kept entry at its
	 * index: a cached index still names the same model (and pool). */
	int pool_a = shl_model_pool(h, a);
	shl_config *c2;
	shl_config_preset(3, &c2);
	struct shl_model_cfg tmp = c2->slot.models[0];
	c2->slot.models[0] = c2->slot.models[4];
	c2->slot.models[4] = tmp;
	CU_ASSERT_NOT_EQUAL(shl__model_match(&c2->slot, "claude-sonnet-4-5-20250929"), a);
	CU_ASSERT_EQUAL(shl_apply(h, c2, NULL), 0);
	int b = shl_lookup(h, "claude-sonnet-4-5-20250929");
	CU_ASSERT_EQUAL(b, a);
	CU_ASSERT_EQUAL(shl_model_pool(h, a), pool_a);
	shl_config_free(c2);
	close_seg();
}

/* Resets and applies that leave the model patterns alone keep the lookup
 * table (a long-lived worker does not grow with every reset); an apply
 * that changes a pattern gets a new table with the new answers. */
static void test_lookup_tables_bounded(void)
{
	shl_config *c;
	shl_config_preset(3, &c);
	open_seg(c);
	int a = shl_lookup(h, "claude-sonnet-4-5-20250929");
	CU_ASSERT(a >= 0);
	CU_ASSERT_EQUAL(shl__lookup_tables(h), 1);
	for (int i = 0; i < 50; i++) {
		CU_ASSERT_EQUAL(shl_reset(h, i % 2 ? SHL_RESET_BUCKETS : SHL_RESET_SPEND), 0);
		CU_ASSERT_EQUAL(shl_lookup(h, "claude-sonnet-4-5-20250929"), a);
		CU_ASSERT_EQUAL(shl_model_pool(h, shl_lookup(h, "gpt-5")), 3); /* catch-all */
	}
	CU_ASSERT_EQUAL(shl__lookup_tables(h), 1);
	/* New limits and prices, same patterns: still one table. */
	shl_config *c2;
	shl_config_preset(4, &c2);
	CU_ASSERT_EQUAL(shl__model_match(&c2->slot, "claude-sonnet-4-5-20250929"), a);
	CU_ASSERT_EQUAL(shl_apply(h, c2, NULL), 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "claude-sonnet-4-5-20250929"), a);
	CU_ASSERT_EQUAL(shl__lookup_tables(h), 1);
	/* A pattern changes: a new table, and the cached negative answer for
	 * the id it now matches is gone. */
	snprintf(c2->slot.models[0].match, sizeof(c2->slot.models[0].match), "gpt-*");
	c2->slot.models[0].flags |= SHL_MF_PREFIX;
	CU_ASSERT_EQUAL(shl_apply(h, c2, NULL), 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "gpt-5"), 0);
	CU_ASSERT_EQUAL(shl__lookup_tables(h), 2);
	shl_config_free(c2);
	close_seg();
}

static void test_route(void)
{
	/* three pools: a (rpm burst 2), b (rpm burst 1), c (itpm burst 100) */
	const char *pr = "\"margin\":0,\"prices\":{\"input\":1,\"output\":1,\"cache_write_5m\":1,"
			 "\"cache_write_1h\":1,\"cache_read\":1}";
	char j[2048];
	snprintf(j, sizeof(j),
		 "{\"pools\":[{\"name\":\"a\",\"rpm\":60,\"itpm\":60000,\"otpm\":6000,"
		 "\"burst\":{\"rpm\":2},%s},{\"name\":\"b\",\"rpm\":30,\"itpm\":60000,"
		 "\"otpm\":6000,\"burst\":{\"rpm\":1},%s},{\"name\":\"c\",\"rpm\":600,"
		 "\"itpm\":600,\"otpm\":6000,\"burst\":{\"rpm\":10,\"itpm\":100},%s}],"
		 "\"models\":[{\"match\":\"a*\",\"pool\":\"a\"},{\"match\":\"b*\","
		 "\"pool\":\"b\"},{\"match\":\"c*\",\"pool\":\"c\"}]}",
		 pr, pr, pr);
	open_seg(tu_cfg(j));
	int ms[3] = {shl_lookup(h, "a1"), shl_lookup(h, "b1"), shl_lookup(h, "c1")};
	shl_cost c = {.input_tokens = 50};
	shl_ticket t;
	shl_refusal why;
	shl_route_policy pol = {.min_free = 0, .timeout_ns = 0};
	/* falls through in order: a, a, b, c, c, then nothing */
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &c, &pol, &t, &why), 0);
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &c, &pol, &t, &why), 0);
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &c, &pol, &t, &why), 1);
	CU_ASSERT_EQUAL(t.pool, 1);
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &c, &pol, &t, &why), 2);
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &c, &pol, &t, &why), 2);
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &c, &pol, &t, &why), -ETIMEDOUT);
	/* the reported wait is the shortest: pool a, 1 s for one request;
	 * c needs 5 s for 50 tokens, b 2 s */
	CU_ASSERT_EQUAL(why.pool, 0);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_RPM);
	CU_ASSERT_EQUAL(why.wait_ns, S);
	tu_boot += S;
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &c, &pol, &t, &why), 0);
	/* min_free: with half of each bucket to keep, c (100-token burst) can
	 * take at most 50 tokens of a 100 bucket; 60 never fits there */
	tu_boot += 100 * S;
	pol.min_free = 0.5;
	shl_cost big = {.input_tokens = 60};
	int only_c[1] = {ms[2]};
	CU_ASSERT_EQUAL(shl_route(h, only_c, 1, &big, &pol, &t, &why), -E2BIG);
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &big, &pol, &t, &why), 0);
	/* a has rpm burst 2: keeping 1 free leaves 1 to take, now taken; b has
	 * rpm burst 1, and half of it kept free rounds UP to 1, so b never
	 * fits (truncated, min_free would keep nothing of it free) */
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &big, &pol, &t, &why), -ETIMEDOUT);
	CU_ASSERT_EQUAL(why.pool, 0);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_RPM);
	int only_b[1] = {ms[1]};
	CU_ASSERT_EQUAL(shl_route(h, only_b, 1, &c, &pol, &t, &why), -E2BIG);
	CU_ASSERT_EQUAL(why.pool, 1);
	/* entries that name no model are skipped; none left: -ESRCH */
	int none[2] = {-ESRCH, 999};
	CU_ASSERT_EQUAL(shl_route(h, none, 2, &c, &pol, &t, &why), -ESRCH);
	/* bad arguments */
	pol.min_free = 1.5;
	CU_ASSERT_EQUAL(shl_route(h, ms, 3, &c, &pol, &t, &why), -EINVAL);
	CU_ASSERT_EQUAL(shl_route(h, ms, 0, &c, NULL, &t, &why), -EINVAL);
	int unknown[2] = {-ESRCH, ms[0]};
	CU_ASSERT_EQUAL(shl_route(h, unknown, 2, &c, NULL, &t, &why), 1);
	close_seg();
}

/*
 * Routing past a spend refusal: prices differ by model, so a model whose
 * worst-case price does not fit the cap left is passed over for a cheaper
 * one later in the list; -EDQUOT only when no model can be admitted by
 * waiting and one fits its pool but not the cap, with `why` filled; and at
 * once, whatever the list, once the month is marked exhausted.
 */
static void test_route_spend(void)
{
	/* cap $0.01 = 10,000,000 units.  a: $100 / MTok output (100,000 units
	 * a token), rpm burst 1; b: $1 / MTok (1,000 a token), rpm burst 10;
	 * c: like b but an input burst of 5 tokens. */
	const char *pa = "\"margin\":0,\"prices\":{\"input\":1,\"output\":100,\"cache_write_5m\":1,"
			 "\"cache_write_1h\":1,\"cache_read\":1}";
	const char *pb = "\"margin\":0,\"prices\":{\"input\":1,\"output\":1,\"cache_write_5m\":1,"
			 "\"cache_write_1h\":1,\"cache_read\":1}";
	char j[2048];
	snprintf(j, sizeof(j),
		 "{\"spend_cap_usd\":0.01,\"pools\":[{\"name\":\"a\",\"rpm\":60,\"itpm\":60000,"
		 "\"otpm\":60000,\"burst\":{\"rpm\":1},%s},{\"name\":\"b\",\"rpm\":600,"
		 "\"itpm\":60000,\"otpm\":60000,\"burst\":{\"rpm\":10},%s},{\"name\":\"c\","
		 "\"rpm\":600,\"itpm\":60000,\"otpm\":60000,\"burst\":{\"itpm\":5},%s}],"
		 "\"models\":[{\"match\":\"a*\",\"pool\":\"a\"},{\"match\":\"b*\","
		 "\"pool\":\"b\"},{\"match\":\"c*\",\"pool\":\"c\"}]}",
		 pa, pb, pb);
	open_seg(tu_cfg(j));
	int ma = shl_lookup(h, "a1"), mb = shl_lookup(h, "b1"), mc = shl_lookup(h, "c1");
	int ab[2] = {ma, mb};
	shl_ticket t;
	shl_refusal why, tw;
	shl_route_policy pol = {.min_free = 0, .timeout_ns = 0};
	/* 10 x 1,000 + 200 x 100,000 = 20,010,000 units on a: over the cap; on b
	 * 210,000.  shl_try on a alone is refused on spend... */
	shl_cost c = {.input_tokens = 10, .max_tokens = 200};
	int64_t pa_units, pb_units;
	CU_ASSERT_EQUAL(shl_price(h, ma, &c, &pa_units), 0);
	CU_ASSERT_EQUAL(shl_price(h, mb, &c, &pb_units), 0);
	CU_ASSERT_EQUAL(pa_units, 20010000);
	CU_ASSERT_EQUAL(pb_units, 210000);
	CU_ASSERT_EQUAL(shl_try(h, ma, &c, &t, &tw), -EDQUOT);
	/* ...and a route goes on to b, which admits. */
	shl_stats st;
	shl_stats_get(h, &st);
	double a_rpm = st.pools[0].available[SHL_DIM_RPM];
	CU_ASSERT_DOUBLE_EQUAL(a_rpm, 1, 1e-9);
	CU_ASSERT_EQUAL(shl_route(h, ab, 2, &c, &pol, &t, &why), 1);
	CU_ASSERT_EQUAL(t.pool, 1);
	CU_ASSERT_EQUAL(t.spend, pb_units);
	shl_stats_get(h, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_RPM], a_rpm, 1e-9); /* given back */
	CU_ASSERT_EQUAL(st.spend_month, pb_units);
	CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);

	/* Every model refused on spend: -EDQUOT, `why` from the first of them,
	 * the very refusal shl_try reports for it. */
	shl_cost big = {.input_tokens = 10, .max_tokens = 20000}; /* b: 20,010,000 */
	CU_ASSERT_EQUAL(shl_try(h, ma, &big, &t, &tw), -EDQUOT);
	memset(&why, 0, sizeof(why));
	CU_ASSERT_EQUAL(shl_route(h, ab, 2, &big, &pol, &t, &why), -EDQUOT);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_SPEND);
	CU_ASSERT_EQUAL(why.pool, 0);
	CU_ASSERT_EQUAL(why.need, tw.need);
	CU_ASSERT_EQUAL(why.capacity, 10000000);
	CU_ASSERT(why.need > why.capacity);
	int ba[2] = {mb, ma};
	CU_ASSERT_EQUAL(shl_route(h, ba, 2, &big, &pol, &t, &why), -EDQUOT);
	CU_ASSERT_EQUAL(why.pool, 1);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_SPEND);

	/* Mixed: c can never take 10 input tokens (-E2BIG), a is refused on
	 * spend: -EDQUOT, `why` from a. */
	int ca[2] = {mc, ma};
	CU_ASSERT_EQUAL(shl_route(h, ca, 2, &c, &pol, &t, &why), -EDQUOT);
	CU_ASSERT_EQUAL(why.pool, 0);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_SPEND);
	/* Mixed: a refused on spend, b must wait (rpm burst 10 taken): -EAGAIN,
	 * `why` the wait on b (0.1 s for one request at 600 / min). */
	shl_ticket tb[10];
	for (int i = 0; i < 10; i++)
		CU_ASSERT_EQUAL_FATAL(shl_try(h, mb, &c, &tb[i], NULL), 0);
	CU_ASSERT_EQUAL(shl_route(h, ab, 2, &c, &pol, &t, &why), -ETIMEDOUT);
	CU_ASSERT_EQUAL(why.pool, 1);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_RPM);
	CU_ASSERT_EQUAL(why.wait_ns, S / 10);
	tu_boot += S / 10;
	CU_ASSERT_EQUAL(shl_route(h, ab, 2, &c, &pol, &t, &why), 1);
	for (int i = 0; i < 10; i++)
		CU_ASSERT_EQUAL(shl_cancel(h, &tb[i]), 0);
	CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);

	/* The server says the cap is reached: no model can help, -EDQUOT at
	 * once, also for a cost b would fit, and with a wait allowed (the fake
	 * clock would make a sleep spin: returning proves it never waits). */
	tu_boot += 10 * S;
	CU_ASSERT_EQUAL(shl_route(h, ab, 2, &c, &pol, &t, &why), 1);
	CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);
	CU_ASSERT_EQUAL(shl_spend_exhaust(h), 0);
	pol.timeout_ns = -1;
	memset(&why, 0, sizeof(why));
	CU_ASSERT_EQUAL(shl_route(h, ab, 2, &c, &pol, &t, &why), -EDQUOT);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_SPEND);
	CU_ASSERT_EQUAL(why.pool, 0); /* a, the first model, already refused */
	int bonly[1] = {mb};
	CU_ASSERT_EQUAL(shl_route(h, bonly, 1, &c, &pol, &t, &why), -EDQUOT);
	CU_ASSERT_EQUAL(why.pool, 1);
	shl_stats_get(h, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[1].available[SHL_DIM_RPM], 10, 1e-9); /* given back */
	close_seg();
}

/*
 * "The blocking acquire sleeps until the computed time; it does not spin",
 * checked by counting the attempts of shl_acquire's loop (fault.c's
 * counter), on the real clock, never by timing.  An acquire that must wait
 * reserves its place (shl_reserve: one attempt), then sleeps until the
 * release (clock_nanosleep, TIMER_ABSTIME, on the clock the buckets read)
 * and starts: one attempt for one wait, and the release has come when it
 * returns.  A spinning loop would make millions of attempts in the same
 * time; the old sleep-and-retry loop made two.
 */
static long attempts_of(int m, const shl_cost *c, int64_t timeout, shl_ticket *t,
			shl_refusal *why, int *r)
{
	atomic_store(&shl__acquire_attempts, 0);
	atomic_store(&shl__acquire_count_on, 1);
	*r = shl_acquire(h, m, c, timeout, t, why);
	atomic_store(&shl__acquire_count_on, 0);
	return atomic_load(&shl__acquire_attempts);
}

static void test_acquire_sleeps_not_spins(void)
{
	/* rpm 300, burst 1: after a take, the RPM bucket is empty for 200 ms */
	create_seg(tu_pool_cfg(300, 600000, 600000, 1, 100000, 100000, NULL, NULL)); /* the real clock */
	int m = shl_lookup(h, "m");
	shl_cost c = {.input_tokens = 10};
	shl_ticket t;
	shl_refusal why;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	uint64_t waited = 0;
	for (int i = 0; i < 3; i++) {
		int r;
		int64_t before = shl_now();
		long a = attempts_of(m, &c, 5 * S, &t, &why, &r);
		CU_ASSERT_EQUAL(r, 0);
		CU_ASSERT_EQUAL(a, 1);
		/* It returned at or after its release, never before. */
		CU_ASSERT(shl_now() >= t.admitted_at);
		shl_stats st;
		shl_stats_get(h, &st);
		/* A call that had to wait counts once in `waited`. */
		waited += t.admitted_at > before;
		CU_ASSERT_EQUAL(st.pools[0].waited, waited);
	}
	/* Counting off: the loop does not count. */
	atomic_store(&shl__acquire_attempts, 0);
	CU_ASSERT_EQUAL(shl_acquire(h, m, &c, 5 * S, &t, &why), 0);
	CU_ASSERT_EQUAL(atomic_load(&shl__acquire_attempts), 0);
	close_seg();
}

static void test_acquire_deadline_before_wait(void)
{
	/* rpm 1, burst 1: after a take, the RPM bucket is empty for 60 s */
	create_seg(tu_pool_cfg(1, 600000, 600000, 1, 100000, 100000, NULL, NULL)); /* the real clock */
	int m = shl_lookup(h, "m");
	shl_cost c = {.input_tokens = 10};
	shl_ticket t;
	shl_refusal why;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), 0);
	/* A deadline (100 ms, then none at all) before the computed wait:
	 * -ETIMEDOUT from the first attempt, without sleeping. */
	int64_t timeouts[2] = {S / 10, 0};
	for (int i = 0; i < 2; i++) {
		int r;
		memset(&why, 0, sizeof(why));
		long a = attempts_of(m, &c, timeouts[i], &t, &why, &r);
		CU_ASSERT_EQUAL(r, -ETIMEDOUT);
		CU_ASSERT_EQUAL(a, 1);
		CU_ASSERT_EQUAL(why.dim, SHL_DIM_RPM);
		CU_ASSERT(why.wait_ns > timeouts[i]);
	}
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.pools[0].admitted, 1);
	CU_ASSERT_EQUAL(st.pools[0].waited, 0);
	close_seg();
}

static void test_errors_and_names(void)
{
	CU_ASSERT_STRING_EQUAL(shl_strerror(-E2BIG),
			       "request is larger than a bucket's capacity; it can never be admitted");
	CU_ASSERT_STRING_EQUAL(shl_strerror(-EDQUOT), "monthly spend cap reached");
	CU_ASSERT_STRING_EQUAL(shl_strerror(0), "success");
	CU_ASSERT_PTR_NOT_NULL(shl_strerror(-EBADF));
	CU_ASSERT_STRING_EQUAL(shl_dim_name(SHL_DIM_ITPM), "itpm");
	CU_ASSERT_STRING_EQUAL(shl_dim_name(99), "none");
	CU_ASSERT_STRING_EQUAL(shl_dim_name(-1), "none");
	CU_ASSERT(shl_now() > 0);
	shl_ticket t;
	shl_cost c = {0};
	CU_ASSERT_EQUAL(shl_try(NULL, 0, &c, &t, NULL), -EINVAL);
}

void suite_admit(void)
{
	CU_pSuite s = CU_add_suite("admit", NULL, NULL);
	TU_ADD(s, test_all_or_nothing);
	TU_ADD(s, test_rpm_burst);
	TU_ADD(s, test_settle_and_cancel);
	TU_ADD(s, test_cache_reads_and_reserve);
	TU_ADD(s, test_late_refund_not_credited);
	TU_ADD(s, test_spend_cap);
	TU_ADD(s, test_hold_and_clamp);
	TU_ADD(s, test_lookup);
	TU_ADD(s, test_lookup_tables_bounded);
	TU_ADD(s, test_route);
	TU_ADD(s, test_route_spend);
	TU_ADD(s, test_acquire_sleeps_not_spins);
	TU_ADD(s, test_acquire_deadline_before_wait);
	TU_ADD(s, test_errors_and_names);
}
