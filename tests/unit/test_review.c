/*
 * test_review.c - regression tests for bugs found in review.  Each test
 * fails on the code as reviewed and passes once the bug is fixed.
 */
#include "testutil.h"

void suite_review(void);

#define S 1000000000LL

static char name[64];
static shl_t *h;

static void open_seg(shl_config *c)
{
	snprintf(name, sizeof(name), "%s", tu_name());
	tu_boot = 5000 * S;
	tu_unix = 1790000000LL * S; /* 2026-09-21, UTC */
	tu_fake_clock(1);
	shl_err e = {{0}};
	int r = shl_create(name, c, 0, &h, &e);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	shl_config_free(c);
}

static void close_seg(void)
{
	shl_detach(h);
	shl_unlink(name);
	h = NULL;
	tu_fake_clock(0);
}

static double avail(int pool, int dim)
{
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	return st.pools[pool].available[dim];
}

/* ------------------------------------------------------------------ */
/* 1. The all-or-nothing rollback in try_impl is a plain give with the
 *    stale `now`: if the admitting process is descheduled between its
 *    bucket CAS and the spend reservation long enough for the bucket to
 *    refill and someone else to take it, the rollback erases the other
 *    process's take (over-credit, over-admission).                       */
/* ------------------------------------------------------------------ */

static int rb_armed;
static int64_t rb_other_take_at;
static int64_t rb_unix_fn(void)
{
	if (rb_armed) {
		rb_armed = 0;
		/* "preempted" for 5 s inside try_impl (between step 2 and 3) ... */
		tu_boot += 5 * S;
		rb_other_take_at = tu_boot;
		/* ... while another process admits one request (RPM burst 1). */
		uint64_t after;
		int64_t w = shl__bucket_take_at(&h->seg->pools[0].bkt[SHL_DIM_RPM], tu_boot, S, S,
						&after, NULL, tu_boot);
		CU_ASSERT_EQUAL(w, 0);
	}
	return tu_unix;
}

static void test_rollback_after_preemption_over_credits(void)
{
	/* rpm 60 (1 s per request), burst 1; spend cap 0: step 3 refuses. */
	open_seg(tu_pool_cfg(60, 60000, 60000, 1, 10000, 10000, NULL, "0"));
	int m = shl_lookup(h, "m");
	shl_ticket t;
	shl_refusal why;
	shl_cost c = {.input_tokens = 10};
	shl__clock_unix = rb_unix_fn;
	atomic_store(&h->month_end_boot, 0); /* step 3 re-reads the wall clock */
	rb_armed = 1;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EDQUOT);
	CU_ASSERT_EQUAL(rb_armed, 0);
	shl__clock_unix = tu_unix_fn;
	/* The other process's take (at rb_other_take_at, 1 s) must still be
	 * there: the bucket is full again no earlier than +1 s. */
	uint64_t tat = atomic_load(&h->seg->pools[0].bkt[SHL_DIM_RPM].tat);
	CU_ASSERT(tat >= (uint64_t)(rb_other_take_at + S));
	CU_ASSERT(avail(0, SHL_DIM_RPM) <= 1e-9);
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 2. A refund after an apply that raised the limit over-credits: the
 *    ticket's full_at is on the old time scale, bucket_rescale shrank the
 *    deficit, so "what is left of the take" is over-estimated.           */
/* ------------------------------------------------------------------ */

static void test_refund_after_limit_raise_over_credits(void)
{
	/* itpm 600/min: 0.1 s per token, burst 100 (10 s) */
	open_seg(tu_pool_cfg(6000, 600, 6000, 100, 100, 1000, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket x, y;
	shl_cost c = {.input_tokens = 100};
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &x, NULL), 0); /* full_at = now + 10 s */
	/* Tier upgrade: itpm 1200/min, same burst. The deficit (100 tokens)
	 * is kept in units: the bucket is now full at now + 5 s. */
	shl_config *c2 = tu_pool_cfg(6000, 1200, 6000, 100, 100, 1000, NULL, NULL);
	CU_ASSERT_EQUAL_FATAL(shl_apply(h, c2, NULL), 0);
	shl_config_free(c2);
	tu_boot += 6 * S; /* x has fully refilled (at +5 s) */
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &y, NULL), 0); /* y takes the whole bucket */
	CU_ASSERT(avail(0, SHL_DIM_ITPM) <= 1e-9);
	/* Cancelling x must give nothing back: x is long forgotten. */
	CU_ASSERT_EQUAL(shl_cancel(h, &x), 0);
	CU_ASSERT(avail(0, SHL_DIM_ITPM) <= 1e-9); /* was 80 tokens over-credited */
	c.input_tokens = 50;
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &x, NULL), -EAGAIN);
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 3. A dimension taken at settle (OTPM in "actual" mode, need 0) is only
 *    checked by the read-only pass, whose `(int64_t)(ahead - tol) > wmax`
 *    is negative once the debt exceeds 2^63 ns: the bucket then admits.
 *    Reachable by scribbling the word, or legitimately by one settle
 *    (the charge saturates to UINT64_MAX).                               */
/* ------------------------------------------------------------------ */

static void test_otpm_deep_debt_admits(void)
{
	/* otpm 1/min (60 s per token), burst 1, "actual" mode */
	open_seg(tu_pool_cfg(6000, 60000, 1, 100, 10000, 1, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket t;
	shl_refusal why;
	shl_cost c = {.input_tokens = 10, .max_tokens = 1};
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &t, NULL), 0);
	shl_usage u = {.input_tokens = 10, .output_tokens = 0xffffffffULL};
	CU_ASSERT_EQUAL(shl_settle(h, &t, &u), 0); /* OTPM deep in debt */
	CU_ASSERT(avail(0, SHL_DIM_OTPM) < 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_OTPM);
	/* Same with a scribbled word "far in the future" (README: refuses). */
	atomic_store(&h->seg->pools[0].bkt[SHL_DIM_OTPM].tat, UINT64_MAX);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, &why), -EAGAIN);
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 4. shl_acquire / shl_route compute `start + timeout` in int64_t: a
 *    large timeout (INT64_MAX, "wait as long as needed") overflows (UB),
 *    the deadline goes negative and the call returns -ETIMEDOUT at once. */
/* ------------------------------------------------------------------ */

static int64_t adv_fn(void)
{
	tu_boot += S / 4; /* every read of the clock: 0.25 s later */
	return tu_boot;
}

static void test_huge_timeout_overflows(void)
{
	open_seg(tu_pool_cfg(60, 60000, 60000, 1, 10000, 10000, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket t;
	shl_refusal why;
	shl_cost c = {.input_tokens = 10};
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &t, NULL), 0); /* RPM empty for 1 s */
	shl__clock_boot = adv_fn;
	CU_ASSERT_EQUAL(shl_acquire(h, m, &c, INT64_MAX, &t, &why), 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &c, &t, NULL), -EAGAIN);
	shl_route_policy pol = {.min_free = 0, .timeout_ns = INT64_MAX};
	CU_ASSERT_EQUAL(shl_route(h, &m, 1, &c, &pol, &t, &why), 0);
	shl__clock_boot = tu_boot_fn;
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 5. shl_route's min_free is truncated (k = (uint64_t)(keep * burst)),
 *    so less than min_free of the bucket is kept free.                   */
/* ------------------------------------------------------------------ */

static void test_route_min_free_truncated(void)
{
	open_seg(tu_pool_cfg(60, 60000, 60000, 3, 10000, 10000, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket t;
	shl_refusal why;
	shl_cost c = {.input_tokens = 1};
	shl_route_policy pol = {.min_free = 0.5, .timeout_ns = 0};
	CU_ASSERT_EQUAL(shl_route(h, &m, 1, &c, &pol, &t, &why), 0); /* 2 of 3 left */
	/* A second one would leave 1 of 3 (33%) free, under the 50% asked. */
	CU_ASSERT_EQUAL(shl_route(h, &m, 1, &c, &pol, &t, &why), -ETIMEDOUT);
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 6. Monthly spend: a lagging process (clock still in month M) reserves
 *    into a word already rolled to M+1 (counted there, by design), but
 *    its ticket says month M, so its refund is dropped: the worst case
 *    stays charged to M+1 for the month ("spend is conserved exactly").  */
/* ------------------------------------------------------------------ */

static void test_spend_refund_lost_after_newer_tag(void)
{
	open_seg(tu_pool_cfg(6000, 600000, 600000, 100, 100000, 100000, NULL, NULL));
	int m = shl_lookup(h, "m");
	uint32_t sept = shl__month(h, tu_boot);
	/* A process whose clock is a moment ahead already rolled the word over
	 * to October and charged 10 units there. */
	atomic_store(&h->seg->spendl.spend, ((uint64_t)((sept + 1) & 127) << SHL_SPEND_BITS) | 10);
	/* We still say September: our worst case (3,000,000) lands in October. */
	shl_ticket t;
	shl_cost c = {.input_tokens = 1000};
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &t, NULL), 0);
	/* Now we see October too, and the request is cancelled (never sent). */
	tu_unix = 1790812800LL * S; /* 2026-10-01T00:00:00Z */
	tu_boot += 1;
	atomic_store(&h->month_end_boot, 0);
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.month, 10);
	CU_ASSERT_EQUAL(st.spend_month, 10 + 3000000);
	CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, 10); /* is 3,000,010: the refund was dropped */
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 7. shl_check reports a sound segment corrupt after a legitimate apply
 *    that removed the highest-index pool: its tat words are left as they
 *    were and p >= npools trips "non-zero in an unused pool".            */
/* ------------------------------------------------------------------ */

#define PRICES                                                                      \
	"\"prices\":{\"input\":1,\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1," \
	"\"cache_read\":1}"

static void test_check_after_removing_last_pool(void)
{
	open_seg(tu_cfg("{\"pools\":[{\"name\":\"a\",\"rpm\":60,\"itpm\":600,\"otpm\":600," PRICES
			"},{\"name\":\"b\",\"rpm\":60,\"itpm\":600,\"otpm\":600," PRICES "}],"
			"\"models\":[{\"match\":\"a*\",\"pool\":\"a\"},"
			"{\"match\":\"b*\",\"pool\":\"b\"}]}"));
	shl_ticket t;
	shl_cost c = {.input_tokens = 10};
	CU_ASSERT_EQUAL_FATAL(shl_try(h, shl_lookup(h, "b1"), &c, &t, NULL), 0);
	shl_config *c2 = tu_cfg("{\"pools\":[{\"name\":\"a\",\"rpm\":60,\"itpm\":600,\"otpm\":600,"
				PRICES "}],\"models\":[{\"match\":\"a*\",\"pool\":\"a\"}]}");
	CU_ASSERT_EQUAL_FATAL(shl_apply(h, c2, NULL), 0);
	shl_config_free(c2);
	char rep[1024] = "";
	int r = shl_check(h, rep, sizeof(rep));
	if (r != 0)
		fprintf(stderr, "\n  shl_check: %s", rep);
	CU_ASSERT_EQUAL(r, 0);
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 8. A model index from shl_lookup (README: "once per id; cached") is
 *    silently re-bound to another model after an apply that reorders the
 *    models: the request is admitted against the wrong pool.             */
/* ------------------------------------------------------------------ */

static void test_cached_model_index_rebound_by_apply(void)
{
	const char *pools = "\"pools\":[{\"name\":\"a\",\"rpm\":60,\"itpm\":600,\"otpm\":600," PRICES
			    "},{\"name\":\"b\",\"rpm\":60,\"itpm\":600,\"otpm\":600," PRICES "}]";
	char j[2048];
	snprintf(j, sizeof(j), "{%s,\"models\":[{\"match\":\"a*\",\"pool\":\"a\"},"
			       "{\"match\":\"b*\",\"pool\":\"b\"}]}", pools);
	open_seg(tu_cfg(j));
	int mb = shl_lookup(h, "b1");
	int pb = shl_model_pool(h, mb);
	snprintf(j, sizeof(j), "{%s,\"models\":[{\"match\":\"b*\",\"pool\":\"b\"},"
			       "{\"match\":\"a*\",\"pool\":\"a\"}]}", pools);
	shl_config *c2 = tu_cfg(j);
	CU_ASSERT_EQUAL_FATAL(shl_apply(h, c2, NULL), 0);
	shl_config_free(c2);
	shl_ticket t;
	shl_cost c = {.input_tokens = 10};
	CU_ASSERT_EQUAL(shl_try(h, mb, &c, &t, NULL), 0);
	CU_ASSERT_EQUAL(t.pool, pb); /* the "b1" request must be charged to b */
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 10. shl_reset while tickets are open: their later refunds are taken
 *     off takes (and charges) made after the reset.                      */
/* ------------------------------------------------------------------ */

static void test_refund_after_reset_over_credits(void)
{
	open_seg(tu_pool_cfg(6000, 600, 6000, 100, 100, 1000, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket x, y;
	shl_cost c = {.input_tokens = 100};
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &x, NULL), 0);
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_BUCKETS | SHL_RESET_SPEND), 0);
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &y, NULL), 0); /* the whole bucket again */
	int64_t spent_y = y.spend;
	CU_ASSERT_EQUAL(shl_cancel(h, &x), 0); /* x belongs to before the reset */
	CU_ASSERT(avail(0, SHL_DIM_ITPM) <= 1e-9);        /* is 100: y erased */
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, spent_y);          /* is 0: y's reservation erased */
	close_seg();
}

/* ------------------------------------------------------------------ */
/* 9. Configuration parsing gaps.                                        */
/* ------------------------------------------------------------------ */

static int parse(const char *j, shl_config **c)
{
	shl_err e = {{0}};
	*c = NULL;
	return shl_config_parse(j, strlen(j), c, &e);
}

#define POOL1(extra)                                                                     \
	"\"pools\":[{\"name\":\"p\",\"rpm\":119,\"itpm\":600,\"otpm\":600" extra "," PRICES \
	"}]"

static void test_config_trailing_garbage(void)
{
	shl_config *c;
	int r = parse("{" POOL1("") "} {\"pools\": 5}", &c);
	CU_ASSERT_EQUAL(r, -EINVAL);
	shl_config_free(c);
}

static void test_config_default_rpm_burst_rounds_up(void)
{
	/* 119 RPM is 1.98 requests per second: one second's worth is 1. */
	shl_config *c;
	CU_ASSERT_EQUAL_FATAL(parse("{" POOL1("") "}", &c), 0);
	CU_ASSERT_EQUAL(c->slot.pools[0].burst[SHL_DIM_RPM], 1);
	shl_config_free(c);
}

static void test_config_spend_cap_rounds_up(void)
{
	/* $0.006 must not become a cap of $0.01. */
	shl_config *c;
	/* (refusing sub-cent amounts would be a fix too) */
	if (parse("{\"spend_cap_usd\":0.006," POOL1("") "}", &c) == 0)
		CU_ASSERT(c->slot.spend_cap <= 6000000);
	shl_config_free(c);
	if (parse("{\"spend_cap_usd\":100.0061," POOL1("") "}", &c) == 0)
		CU_ASSERT(c->slot.spend_cap <= 100006100000LL);
	shl_config_free(c);
}

static void test_config_price_extra_decimals(void)
{
	/* "at most 3 decimals": 1000.0004 has 4 and is silently rounded. */
	shl_config *c;
	const char *j = "{\"pools\":[{\"name\":\"p\",\"rpm\":60,\"itpm\":600,\"otpm\":600,"
			"\"prices\":{\"input\":1000.0004,\"output\":1,\"cache_write_5m\":1,"
			"\"cache_write_1h\":1,\"cache_read\":1}}]}";
	CU_ASSERT_EQUAL(parse(j, &c), -EINVAL);
	shl_config_free(c);
}

/* ------------------------------------------------------------------ */
/* 14. A refund was bounded by full_at - now, full_at recorded at the   */
/*    take; but a refund takes from the tail of the bucket, which moves */
/*    every later take's region down while its full_at stays.  Two     */
/*    tickets could then each give back "what is left" of the same     */
/*    room: 1.5 x burst admitted at one instant (the refund ledger,    */
/*    bucket.c).  The colleague's repro, through shl_try/shl_cancel:   */
/*    ITPM 60000/min (1 ms a token), burst 1000 tokens.                */
/* ------------------------------------------------------------------ */

static void test_refund_after_earlier_refund_over_credits(void)
{
	open_seg(tu_pool_cfg(6000, 60000, 60000, 100, 1000, 10000, NULL, NULL));
	int m = shl_lookup(h, "m");
	shl_ticket x0, x1, x2, y1, y2;
	shl_refusal why;
	shl_cost half = {.input_tokens = 500}, full = {.input_tokens = 1000};
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &half, &x0, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &half, &x1, NULL), 0);
	CU_ASSERT_EQUAL(shl_cancel(h, &x0), 0);
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &half, &x2, NULL), 0);
	tu_boot += S / 2; /* 500 tokens refilled: X1's region has gone by */
	CU_ASSERT_EQUAL(shl_cancel(h, &x1), 0);
	int r1 = shl_try(h, m, &full, &y1, &why);
	CU_ASSERT_EQUAL(r1, -EAGAIN); /* X2 still holds 500 */
	if (r1 == -EAGAIN) {
		CU_ASSERT_EQUAL(why.dim, SHL_DIM_ITPM);
		CU_ASSERT_EQUAL(why.wait_ns, S / 2);
	}
	CU_ASSERT_EQUAL(shl_cancel(h, &x2), 0);
	int r2 = shl_try(h, m, &half, &y2, NULL);
	CU_ASSERT_EQUAL(r2, 0);
	/* At this instant, net of cancels: at most the burst. */
	unsigned sent = (r1 == 0 ? 1000u : 0u) + (r2 == 0 ? 500u : 0u);
	CU_ASSERT(sent <= 1000);
	CU_ASSERT(avail(0, SHL_DIM_ITPM) <= 500 + 1e-6);
	close_seg();
}

void suite_review(void)
{
	CU_pSuite s = CU_add_suite("review", NULL, NULL);
	TU_ADD(s, test_rollback_after_preemption_over_credits);
	TU_ADD(s, test_refund_after_limit_raise_over_credits);
	TU_ADD(s, test_otpm_deep_debt_admits);
	TU_ADD(s, test_huge_timeout_overflows);
	TU_ADD(s, test_route_min_free_truncated);
	TU_ADD(s, test_spend_refund_lost_after_newer_tag);
	TU_ADD(s, test_check_after_removing_last_pool);
	TU_ADD(s, test_cached_model_index_rebound_by_apply);
	TU_ADD(s, test_refund_after_reset_over_credits);
	TU_ADD(s, test_config_trailing_garbage);
	TU_ADD(s, test_config_default_rpm_burst_rounds_up);
	TU_ADD(s, test_config_spend_cap_rounds_up);
	TU_ADD(s, test_config_price_extra_decimals);
	TU_ADD(s, test_refund_after_earlier_refund_over_credits);
}
