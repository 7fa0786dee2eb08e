/*
 * test_bucket.c - the GCRA word and the last-minute window, on a fake clock.
 */
#include "testutil.h"

#define S 1000000000LL

/* No reservation ahead of any refund here (bucket.c, "Reservations"). */
static _Atomic uint64_t no_horizon;

static void test_take_exact(void)
{
	_Atomic uint64_t tat = 0;
	/* 60 per minute: 1 s per unit; burst 3. */
	uint64_t iv = 1000000000ULL, tol = 3 * iv;
	int64_t now = 100 * S;
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(shl__bucket_take(&tat, now, iv, tol), 0);
	/* Empty: the exact wait for one more unit is one interval. */
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, now, iv, tol), (int64_t)iv);
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, now, 2 * iv, tol), (int64_t)(2 * iv));
	/* 1 ns before the wait: still refused, by exactly 1 ns. */
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, now + S - 1, iv, tol), 1);
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, now + S, iv, tol), 0);
	/* A long idle refills to the burst, never beyond it. */
	now += 1000 * S;
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(shl__bucket_take(&tat, now, iv, tol), 0);
	CU_ASSERT(shl__bucket_take(&tat, now, iv, tol) > 0);
}

static void test_zero_and_full_cost(void)
{
	_Atomic uint64_t tat = 0;
	uint64_t iv = 10, tol = 100;
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, 1000, 0, tol), 0); /* zero cost always fits */
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, 1000, tol, tol), 0); /* exactly the burst */
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, 1000, 0, tol), 0);
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, 1000, iv, tol), (int64_t)iv);
}

static void test_give_charge_raise(void)
{
	struct shl_bkt b = {0};
	_Atomic uint64_t *tat = &b.tat;
	uint64_t iv = 10, tol = 100, mark;
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 1000, 100, tol, &mark, NULL, 1000), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1000, 50, mark, &no_horizon, NULL), 50);
	CU_ASSERT_EQUAL(atomic_load(tat), 1050);
	CU_ASSERT_EQUAL(atomic_load(&b.refunded), 50);
	CU_ASSERT_EQUAL(shl__bucket_take(tat, 1000, 50, tol), 0);
	/* A charge may go into debt; admissions then wait it out. */
	shl__bucket_charge(tat, 1000, 200);
	CU_ASSERT_EQUAL(atomic_load(tat), 1300);
	CU_ASSERT_EQUAL(shl__bucket_take(tat, 1000, 0, tol), 200);
	/* A charge to a full bucket starts from now, not from the past. */
	struct shl_bkt b2 = {0};
	_Atomic uint64_t *t2 = &b2.tat;
	atomic_store(t2, 5);
	shl__bucket_charge(t2, 1000, 30);
	CU_ASSERT_EQUAL(atomic_load(t2), 1030);
	/* Giving back more than the word holds floors at 0, no wrap (a
	 * mark far ahead lets the whole 5000 through). */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b2, 1000, 5000, 10000, &no_horizon, NULL), 5000);
	CU_ASSERT_EQUAL(atomic_load(t2), 0);
	/* Raise only raises. */
	shl__bucket_raise(t2, 700);
	CU_ASSERT_EQUAL(atomic_load(t2), 700);
	shl__bucket_raise(t2, 600);
	CU_ASSERT_EQUAL(atomic_load(t2), 700);
	(void)iv;
}

static void test_hostile_words(void)
{
	/* A scribbled word refuses with a huge wait; it never wraps to "admit". */
	_Atomic uint64_t tat = UINT64_MAX - 5;
	int64_t w = shl__bucket_take(&tat, 1000, 1000, 100);
	CU_ASSERT(w > 0);
	CU_ASSERT_EQUAL(atomic_load(&tat), UINT64_MAX - 5);
	shl__bucket_charge(&tat, 1000, 1000);
	CU_ASSERT_EQUAL(atomic_load(&tat), UINT64_MAX); /* saturates */
	CU_ASSERT_EQUAL(shl__mul_sat(1ULL << 40, 1ULL << 40), UINT64_MAX);
	CU_ASSERT_EQUAL(shl__mul_sat(3, 5), 15);
	/* A negative "now" is treated as 0, not as a huge unsigned time. */
	_Atomic uint64_t t0 = 0;
	CU_ASSERT_EQUAL(shl__bucket_take(&t0, -5, 10, 100), 0);
	CU_ASSERT_EQUAL(atomic_load(&t0), 10);
}

static void test_window(void)
{
	static struct shl_pool_rt rt;
	memset(&rt, 0, sizeof(rt));
	int64_t now = 1000 * S;
	uint64_t add[3] = {1, 100, 10}, sum[3];
	for (int i = 0; i < 12; i++)
		shl__window_add(&rt, now + i * 5 * S, add);
	shl__window_sum(&rt, now + 55 * S, sum);
	CU_ASSERT_EQUAL(sum[0], 12);
	CU_ASSERT_EQUAL(sum[1], 1200);
	CU_ASSERT_EQUAL(sum[2], 120);
	/* 5 s later the oldest slot is recycled by the next add. */
	shl__window_add(&rt, now + 60 * S, add);
	shl__window_sum(&rt, now + 60 * S, sum);
	CU_ASSERT_EQUAL(sum[0], 12);
	/* A minute of silence: nothing left. */
	shl__window_sum(&rt, now + 200 * S, sum);
	CU_ASSERT_EQUAL(sum[0], 0);
	CU_ASSERT_EQUAL(sum[1], 0);
}

/*
 * The refund ledger (bucket.c, "Refunds and the refund ledger").  The
 * colleague's repro: tol 1000 ns, costs in ns, the bucket empty at 1000.
 * X0 and X1 take 500 each; X0 is cancelled; X2 takes 500 (X1 and X2 then
 * both end at 2000 by their own take).  At 1500, X1's region has gone by
 * (it moved down to [1000, 1500) when X0 gave back), X2 holds 500.  With
 * the old rule (give min(cost, full_at - now)) X1 and X2 each gave 500,
 * and 1500 ns were admitted at one instant against a burst of 1000.
 */
static void test_refund_shifted_by_earlier_refund(void)
{
	struct shl_bkt b = {0};
	atomic_store(&b.tat, 1000);
	const uint64_t tol = 1000;
	int64_t now = 1000;
	uint64_t x0, x1, x2, y1, y2;
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, now, 500, tol, &x0, NULL, now), 0);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, now, 500, tol, &x1, NULL, now), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, now, 500, x0, &no_horizon, NULL), 500); /* cancel X0 */
	CU_ASSERT_EQUAL(atomic_load(&b.tat), 1500);
	CU_ASSERT_EQUAL(atomic_load(&b.refunded), 500);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, now, 500, tol, &x2, NULL, now), 0);
	now = 1500;
	/* X1 is all gone by now: nothing to give. */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, now, 500, x1, &no_horizon, NULL), 0);
	int64_t w1 = shl__bucket_take_at(&b, now, 1000, tol, &y1, NULL, now);
	CU_ASSERT_EQUAL(w1, 500); /* X2 still holds 500 */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, now, 500, x2, &no_horizon, NULL), 500); /* cancel X2 */
	int64_t w2 = shl__bucket_take_at(&b, now, 500, tol, &y2, NULL, now);
	CU_ASSERT_EQUAL(w2, 0);
	/* Admitted at 1500, net: at most the burst. */
	uint64_t sent = (w1 == 0 ? 1000u : 0u) + (w2 == 0 ? 500u : 0u);
	CU_ASSERT(sent <= tol);
	/* And the bucket is not emptier than that history allows. */
	CU_ASSERT(atomic_load(&b.tat) >= 2000);
	/* Y1 again: the bucket holds Y2's 500, so 1000 more must wait 500. */
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, now, 1000, tol, &y1, NULL, now), 500);
}

/* The ledger and the ticket's mark are modular: a ledger near 2^64 wraps
 * and a refund still gives exactly what is left. */
static void test_refund_ledger_wraps(void)
{
	struct shl_bkt b = {0};
	atomic_store(&b.tat, 0);
	atomic_store(&b.refunded, UINT64_MAX - 100);
	uint64_t m;
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 1000, 700, 1000, &m, NULL, 1000), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1000, 300, m, &no_horizon, NULL), 300);
	CU_ASSERT_EQUAL(atomic_load(&b.refunded), 199); /* wrapped */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1200, 1000, m, &no_horizon, NULL), 200); /* 700-300 left, 200 gone by */
	CU_ASSERT_EQUAL(atomic_load(&b.tat), 1200);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1200, 1000, m, &no_horizon, NULL), 0);
	/* A mark far in the past (or a scribbled ledger) gives nothing more
	 * than asked. */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1200, 5, m + (1ULL << 40), &no_horizon, NULL), 5);
}

/*
 * Randomized model check of the refund rule, single process, fake clock.
 * Tickets take random costs, now or as reservations (a take at a release
 * time R >= now: R is the bucket's own release, r = max(now, tat + c -
 * tol), or later, as when another dimension or a hold binds; the pool's
 * horizon is raised to R first, as admit.c does); random cancels and
 * partial refunds give back parts of them.  The oracle is the "true"
 * bucket: every admitted ticket placed at its release, in take order, with
 * its NET cost (its cost minus everything given back to it so far):
 *
 *     T = max(T, t_k) + (c_k - r_k)   over the takes k, from the start state.
 *
 * Checked after every step: max(tat, now) >= max(T, now), i.e. the word
 * never holds more credit than that history allows (below `now` both are
 * just "full", and GCRA only compares max(tat, now)).  The net costs only
 * fall, so T with the final nets is below every earlier T, and every take
 * the word admitted the true bucket admits: at the end, every interval
 * [a, b] between two releases holds at most tol + (b - a) ns of net cost
 * released in it, checked directly over the tickets sorted by release.
 * With the old rule (full_at - now, no ledger) this fails within a few
 * hundred steps; with reservations and no horizon (refunds measured from
 * now alone) it fails too (test_reserve_model_check_needs_horizon).
 */
struct mc_ticket {
	int64_t t;
	uint64_t cost, given, mark;
};

static int cmp_mc(const void *x, const void *y)
{
	const struct mc_ticket *a = x, *b = y;
	return (a->t > b->t) - (a->t < b->t);
}

/* The refund rule a model check runs: refunds measured from now alone,
 * from the horizon, or from the horizon and the slack slots (with every
 * take noted, and times scaled by 2^24 so that a burst spans about four of
 * the slots' 2^32-ns spans and a run some hundreds). */
enum { MC_NOW, MC_HORIZON, MC_SLACK };

/* Returns the number of violations found (0: sound); *takes: tickets;
 * *given: everything the refunds gave back. */
static int model_check(unsigned seed, int steps, int reserve_pct, int rule, int *takes,
		       uint64_t *given)
{
	enum { MAXT = 8192 };
	static struct mc_ticket tk[MAXT], sorted[MAXT];
	static int open_[MAXT];
	int n = 0, nopen = 0;
	struct shl_bkt b = {0};
	_Atomic uint64_t horizon = 0, unused = 0;
	struct shl_slack slack = {0};
	struct shl_slack *sp = rule == MC_SLACK ? &slack : NULL;
	const uint64_t K = rule == MC_SLACK ? 1ULL << 24 : 1;
	*given = 0;
	const uint64_t tol = (1000 + (seed % 7) * 150) * K;
	const int64_t start = (1000 + (int64_t)(seed % 1000)) * (int64_t)K;
	int64_t now = start;
	atomic_store(&b.tat, (uint64_t)now);
	uint64_t x = seed * 2654435761u + 1;
#define RND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
	int bad = 0;
	for (int step = 0; step < steps && !bad; step++) {
		unsigned op = (unsigned)(RND() % 100);
		if (op < 25) {
			now += (int64_t)(RND() % 400 * K); /* the clock moves on */
		} else if (op < 60 && n < MAXT) {
			uint64_t c = (1 + RND() % 700) * K, m;
			int64_t at = now;
			if ((int)(RND() % 100) < reserve_pct) {
				/* a reservation: at the bucket's release, or later */
				uint64_t tat = atomic_load(&b.tat), need = tat + c;
				uint64_t r = need > tol && need - tol > (uint64_t)now ? need - tol
										: (uint64_t)now;
				at = (int64_t)r + (RND() % 2 ? (int64_t)(RND() % 600 * K) : 0);
				shl__horizon_raise(&horizon, (uint64_t)at);
				CU_ASSERT_EQUAL(shl__bucket_take_at(&b, at, c, tol, &m, sp, now), 0);
				tk[n] = (struct mc_ticket){at, c, 0, m};
				open_[nopen++] = n++;
			} else if (shl__bucket_take_at(&b, now, c, tol, &m, sp, now) == 0) {
				tk[n] = (struct mc_ticket){now, c, 0, m};
				open_[nopen++] = n++;
			}
		} else if (nopen > 0) {
			int i = (int)(RND() % (uint64_t)nopen), k = open_[i];
			uint64_t left = tk[k].cost - tk[k].given;
			/* a cancel (all that is left), or a partial refund (settle). */
			uint64_t ask = op < 80 ? left : RND() % (left + 1);
			uint64_t g = shl__bucket_refund(&b, now, ask, tk[k].mark,
							rule != MC_NOW ? &horizon : &unused, sp);
			CU_ASSERT(g <= ask);
			tk[k].given += g;
			*given += g;
			if (op < 80 || RND() % 3 == 0)
				open_[i] = open_[--nopen]; /* settled or cancelled: closed */
		}
		/* The oracle. */
		uint64_t T = (uint64_t)start;
		for (int k = 0; k < n; k++)
			T = ((uint64_t)tk[k].t > T ? (uint64_t)tk[k].t : T) + (tk[k].cost - tk[k].given);
		uint64_t tat = atomic_load(&b.tat), nn = (uint64_t)now;
		if ((tat > nn ? tat : nn) < (T > nn ? T : nn))
			bad++;
	}
	/* Every interval between two releases, by net cost. */
	memcpy(sorted, tk, (size_t)n * sizeof(tk[0]));
	qsort(sorted, (size_t)n, sizeof(sorted[0]), cmp_mc);
	int64_t minp = INT64_MAX, pre = 0;
	for (int j = 0; j < n; j++) {
		int64_t pi = pre - sorted[j].t; /* P[j] - t_j, the start of a window at j */
		if (pi < minp)
			minp = pi;
		pre += (int64_t)(sorted[j].cost - sorted[j].given);
		if ((pre - sorted[j].t) - minp > (int64_t)tol)
			bad++;
	}
	*takes = n;
	return bad;
#undef RND
}

static void test_refund_model_check(void)
{
	for (unsigned seed = 1; seed <= 24; seed++) {
		int n;
		uint64_t g;
		CU_ASSERT_EQUAL(model_check(seed, 6000, 0, MC_HORIZON, &n, &g), 0);
		CU_ASSERT(n > 600); /* the check had something to check */
	}
}

/* The same with reservations among the takes: a third of them, some
 * released later than the bucket alone would (another dimension binds). */
static void test_reserve_model_check(void)
{
	for (unsigned seed = 1; seed <= 24; seed++) {
		int n;
		uint64_t g;
		CU_ASSERT_EQUAL(model_check(seed, 6000, 33, MC_HORIZON, &n, &g), 0);
		CU_ASSERT(n > 600);
	}
}

/* Without the horizon (refunds measured from now alone), a refund gives
 * back room that lies before a queued release, and the check sees the
 * over-admission: the check can fail, and the horizon is what passes it. */
static void test_reserve_model_check_needs_horizon(void)
{
	int found = 0;
	for (unsigned seed = 1; seed <= 24; seed++) {
		int n;
		uint64_t g;
		found += model_check(seed, 6000, 33, MC_NOW, &n, &g) > 0;
	}
	CU_ASSERT(found > 0);
}

/* The slack slots (bucket.c, "Slack"): the same check, with takes at
 * now only, a third and most of them reservations, stays sound. */
static void test_slack_model_check(void)
{
	for (unsigned seed = 1; seed <= 24; seed++) {
		for (int pct = 0; pct <= 90; pct += 45) {
			int n;
			uint64_t g;
			CU_ASSERT_EQUAL(model_check(seed, 6000, pct, MC_SLACK, &n, &g), 0);
			CU_ASSERT(n > 600);
		}
	}
}

/* What they are for: a saturated line (a burst of 4 spans, requests of 1
 * span reserved as each settles, eight in flight: twice the burst, as
 * curl --parallel queues them), each settling `late` after its release
 * with 5% less than it took: 1.5 spans (its region not yet passed, the
 * line more than a burst past it) or 6 spans (its region passed).  The
 * horizon rule gives back nothing either way; the slack of the takes
 * after each gives back the surplus, all but the first line's (the first
 * takes found the bucket empty: no slack). */
#define SPAN (1ULL << SHL_SLACK_SHIFT)
#define GRAIN (1ULL << SHL_SLACK_GRAIN)
static uint64_t line_surplus(int use_slack, int64_t late, uint64_t *asked)
{
	enum { N = 400, INFLIGHT = 8 };
	const uint64_t tol = 4 * SPAN, c = SPAN, surplus = SPAN / 20;
	struct shl_bkt b = {0};
	_Atomic uint64_t hz = 0;
	struct shl_slack slack = {0};
	struct shl_slack *sp = use_slack ? &slack : NULL;
	uint64_t mark[N], given = 0;
	int64_t rel[N], now = 0;
	*asked = 0;
	for (int k = 0; k < N; k++) {
		if (k >= INFLIGHT) { /* the oldest in flight settles */
			int o = k - INFLIGHT;
			if (now < rel[o] + late)
				now = rel[o] + late;
			given += shl__bucket_refund(&b, now, surplus, mark[o], &hz, sp);
			*asked += surplus;
		}
		uint64_t tat = atomic_load(&b.tat);
		int64_t r = tat + c > tol && (int64_t)(tat + c - tol) > now ? (int64_t)(tat + c - tol)
									  : now;
		shl__horizon_raise(&hz, (uint64_t)r);
		CU_ASSERT_EQUAL(shl__bucket_take_at(&b, r, c, tol, &mark[k], sp, now), 0);
		rel[k] = r;
	}
	return given;
}

static void test_slack_gives_surplus(void)
{
	const int64_t late[2] = {(int64_t)(3 * SPAN / 2), (int64_t)(6 * SPAN)};
	for (int i = 0; i < 2; i++) {
		uint64_t asked, g;
		g = line_surplus(0, late[i], &asked);
		CU_ASSERT(asked > 0 && g == 0);
		g = line_surplus(1, late[i], &asked);
		CU_ASSERT(asked > 0 && g >= asked - asked / 20);
	}
}

/* The repro of bucket.c's "Reservations": A takes the whole burst at 0, B
 * reserves the next burst (release 1000), A is cancelled at 0.  With the
 * horizon at B's release, A's cancel gives nothing back (all of A lies
 * before it), and C's reservation goes after B, not with it. */
static void test_cancel_before_queued_release(void)
{
	struct shl_bkt b = {0};
	_Atomic uint64_t hz = 0;
	const uint64_t tol = 1000;
	uint64_t ma, mb, mc;
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 0, 1000, tol, &ma, NULL, 0), 0);
	shl__horizon_raise(&hz, 1000);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 1000, 1000, tol, &mb, NULL, 1000), 0); /* B at 1000 */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, 1000, ma, &hz, NULL), 0);     /* A: nothing */
	/* C: released no earlier than 2000 (1000 is B's whole burst). */
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 1000, 1000, tol, &mc, NULL, 1000), 1000);
	/* B itself, cancelled before its release, gives back all of it. */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, 1000, mb, &hz, NULL), 1000);
	CU_ASSERT_EQUAL(atomic_load(&b.tat), 1000);
	/* Horizon: only raised; a scribbled one far ahead gives nothing. */
	shl__horizon_raise(&hz, 500);
	CU_ASSERT_EQUAL(atomic_load(&hz), 1000);
	atomic_store(&hz, UINT64_MAX - 3);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, 1000, ma + (1ULL << 40), &hz, NULL), 0);
}

/* A settle after its own place has passed (times in spans): A and B take
 * 2 each of a burst of 4 at 0; C takes 2 at 2 and D 1 at 3 (slack 2, 3).
 * C settles at 6 with 1 less than it took: its region [4, 6) has passed,
 * so the horizon rule gives nothing; no take after it is for an instant
 * past 5, so the slack rule gives the 1.  E then takes the whole burst at
 * 7, the bucket having refilled a while (slack 0): a settle of D now gives
 * nothing, or a take of 1 would fit at 7 beside E's 4. */
static void test_slack_late_settle(void)
{
	const uint64_t tol = 4 * SPAN;
	struct shl_bkt b = {0};
	_Atomic uint64_t hz = 0;
	struct shl_slack slack = {0};
	uint64_t ma, mb, mc, md, me, mf;
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 0, 2 * SPAN, tol, &ma, &slack, 0), 0);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 0, 2 * SPAN, tol, &mb, &slack, 0), 0);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 2 * SPAN, 2 * SPAN, tol, &mc, &slack, 2 * SPAN), 0);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 3 * SPAN, SPAN, tol, &md, &slack, 3 * SPAN), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 6 * SPAN, SPAN, mc, &hz, NULL), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 6 * SPAN, SPAN, mc, &hz, &slack), SPAN);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 7 * SPAN, 4 * SPAN, tol, &me, &slack, 7 * SPAN), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 7 * SPAN, SPAN, md, &hz, &slack), 0);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 7 * SPAN, SPAN, tol, &mf, &slack, 7 * SPAN), SPAN);
}

/* A line (times in spans): A takes 1 and B 3 of a burst of 4 at 0; C
 * reserves 1 (release 1, its region [4, 5): slack 3).  A's surplus of a
 * quarter lies before the horizon (1), so the horizon rule gives nothing.
 * The slack rule reads spans 0 and 1: A's take found the bucket empty
 * (shallow: for the instant 0, before A's end less the quarter), B's and
 * C's found it as much in debt as they could (1 and 3: deep): it gives
 * the quarter, which moves C's region to [3 3/4, 4 3/4), after its
 * release.  B's cancel then gives 2 3/4 (the horizon rule: what lies past
 * C's release; the slack rule reads its own take's 1 less the quarter
 * given since, the cautious way).  Cancelled
 * first, B's gives all 3.  Either way C's region moves to [1, 2), starting
 * at its release and no earlier, and D, taken at 0, waits until C's end. */
static void test_slack_under_line(void)
{
	const uint64_t tol = 4 * SPAN;
	for (int a_first = 1; a_first >= 0; a_first--) {
		struct shl_bkt b = {0};
		_Atomic uint64_t hz = 0;
		struct shl_slack slack = {0};
		uint64_t ma, mb, mc, md;
		CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 0, SPAN, tol, &ma, &slack, 0), 0);
		CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 0, 3 * SPAN, tol, &mb, &slack, 0), 0);
		shl__horizon_raise(&hz, SPAN);
		CU_ASSERT_EQUAL(shl__bucket_take_at(&b, SPAN, SPAN, tol, &mc, &slack, 0), 0);
		CU_ASSERT_EQUAL(atomic_load(&b.tat), 5 * SPAN);
		CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, SPAN / 4, ma, &hz, NULL), 0);
		if (a_first) {
			CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, SPAN / 4, ma, &hz, &slack), SPAN / 4);
			CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, 3 * SPAN, mb, &hz, &slack),
					3 * SPAN - SPAN / 4);
		} else {
			CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, 3 * SPAN, mb, &hz, &slack), 3 * SPAN);
		}
		CU_ASSERT_EQUAL(atomic_load(&b.tat), 2 * SPAN);
		/* D, taken now, goes after C: the bucket holds A and C until 2. */
		CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 0, 4 * SPAN, tol, &md, &slack, 0), 2 * SPAN);
	}
}

/* A batch into an idle bucket (times in spans): 24 requests of half a
 * span placed at once (the first 8 taken at 0, a burst of 4, the rest
 * reserved at their releases), each settled 1.5 spans after its release
 * with 5% less than it took, in order.  The horizon rule gives back
 * nothing before the last release (8); the slack rule gives back all of
 * every surplus: the first takes found the bucket less than half as much
 * in debt as they could (shallow, for the instant 0, before every
 * settle's end less its surplus), every later one more than that.  (When the slots kept the
 * least slack of every take, the first settles got nothing: span 0 held
 * the first take's slack of 0.) */
static void test_slack_batch(void)
{
	enum { N = 24 };
	const uint64_t tol = 4 * SPAN, c = SPAN / 2, surplus = c / 20;
	for (int use_slack = 0; use_slack <= 1; use_slack++) {
		struct shl_bkt b = {0};
		_Atomic uint64_t hz = 0;
		struct shl_slack slack = {0};
		struct shl_slack *sp = use_slack ? &slack : NULL;
		uint64_t mark[N], given = 0;
		int64_t rel[N], now = 0;
		for (int k = 0; k < N; k++) {
			uint64_t tat = atomic_load(&b.tat);
			rel[k] = tat + c > tol ? (int64_t)(tat + c - tol) : 0;
			shl__horizon_raise(&hz, (uint64_t)rel[k]);
			CU_ASSERT_EQUAL(shl__bucket_take_at(&b, rel[k], c, tol, &mark[k], sp, 0), 0);
		}
		for (int k = 0; k < N; k++) {
			if (now < rel[k] + (int64_t)(3 * SPAN / 2))
				now = rel[k] + (int64_t)(3 * SPAN / 2);
			given += shl__bucket_refund(&b, now, surplus, mark[k], &hz, sp);
		}
		/* without it: nothing until past the last release (k 13) */
		CU_ASSERT(use_slack ? given == N * surplus : given <= (N - 14) * surplus);
	}
}

/* The counter-example of "Reservations" (A's whole burst, B reserved at
 * its end, A cancelled): with the slack rule too, A gives nothing (B's
 * slack is 0), and C goes after B. */
static void test_slack_cancel_before_queued_release(void)
{
	struct shl_bkt b = {0};
	_Atomic uint64_t hz = 0;
	struct shl_slack slack = {0};
	const uint64_t tol = 4 * SPAN;
	uint64_t ma, mb, mc;
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 0, tol, tol, &ma, &slack, 0), 0);
	shl__horizon_raise(&hz, tol);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, tol, tol, tol, &mb, &slack, 0), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, tol, ma, &hz, &slack), 0);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, tol, tol, tol, &mc, &slack, 0), tol);
}

/* The slots themselves: a span's deep takes keep their least low, its
 * shallow ones their latest instant (in the tag's low half, read back
 * late); a slot goes to a later span, never back; a note too far ahead of
 * its clock raises far; a refund of b needs far, and every shallow take
 * of the spans it reads, at or before its end less b, a span whose slot a
 * later span holds gets nothing by the rule; an apply's cover raises far
 * to the horizon or now; a reset clears them. */
static void test_slack_slots(void)
{
	struct shl_slack sl = {0};
	_Atomic uint64_t hz = 0;
	const uint64_t room = 1000; /* tol less the cost; deep: a slack over 500 */
	CU_ASSERT_EQUAL(SHL_SLACK_SLOTS, 11);
	shl__slack_note(&sl, 5 * SPAN + 1, 700, 0, room, 5 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].tag), 6ULL << 32);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].low), 700);
	shl__slack_note(&sl, 5 * SPAN + 2, 900, 0, room, 5 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].low), 700);
	shl__slack_note(&sl, 5 * SPAN + 3, 501, 99, room, 5 * SPAN); /* ledger 99 */
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].low), 600);
	/* shallow takes (slack 500 or less): the latest instant (in 1-ms
	 * grains: 1 + 3), low unchanged */
	shl__slack_note(&sl, 5 * SPAN + 3 * GRAIN + 101, 0, 0, room, 5 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].tag), 6ULL << 32 | 4);
	shl__slack_note(&sl, 5 * SPAN + 2 * GRAIN, 500, 0, room, 5 * SPAN);
	shl__slack_note(&sl, 5 * SPAN + 4 * GRAIN - 1, 500, 0, room, 5 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].tag), 6ULL << 32 | 4);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].low), 600);
	/* a span's first take shallow: a least low no refund reaches */
	shl__slack_note(&sl, 6 * SPAN + 3 * GRAIN + 7, 3, 40, room, 5 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[6].tag), 7ULL << 32 | 4);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[6].low), 40 + (1ULL << 62));
	shl__slack_note(&sl, 6 * SPAN + 9, 600, 40, room, 5 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[6].low), 640);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[6].tag), 7ULL << 32 | 4);
	/* span 16 (slot 5 again) from a clock in span 13: evicts span 5 */
	shl__slack_note(&sl, 16 * SPAN, 50, 0, 50, 13 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].tag), 17ULL << 32);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].low), 50);
	/* late notes for span 5: dropped (its refunds find span 16's tag) */
	shl__slack_note(&sl, 5 * SPAN, 10, 0, 10, 13 * SPAN);
	shl__slack_note(&sl, 5 * SPAN + 999, 0, 0, 10, 13 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].tag), 17ULL << 32);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].low), 50);
	/* span 25 (slot 3) from a clock in span 13: more than 8 ahead: far */
	shl__slack_note(&sl, 25 * SPAN, 10, 0, 10, 13 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[3].tag), 0);
	CU_ASSERT_EQUAL(atomic_load(&sl.far), 25 * SPAN);
	/* Refunds of a take ending at 18 (a fresh word each time, no
	 * horizon), asked 1 at 19: spans 17..19 (slots 6..8).  far at 25 is
	 * in the way: nothing (the horizon rule: its end has passed). */
	struct shl_bkt b;
#define FRESH() (atomic_store(&b.tat, 30 * SPAN), atomic_store(&b.refunded, 0))
	FRESH();
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 19 * SPAN, SPAN, 18 * SPAN, &hz, &sl), 0);
	/* far at 17 1/4: three quarters */
	atomic_store(&sl.far, 17 * SPAN + SPAN / 4);
	FRESH();
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 19 * SPAN, SPAN, 18 * SPAN, &hz, &sl),
			3 * SPAN / 4);
	/* far cleared: no slot holds a take for spans 17..19: all of it */
	atomic_store(&sl.far, 0);
	FRESH();
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 19 * SPAN, SPAN, 18 * SPAN, &hz, &sl), SPAN);
	/* a deep take for span 18 with half a span of slack: half */
	shl__slack_note(&sl, 18 * SPAN, SPAN / 2, 0, SPAN / 2, 18 * SPAN);
	FRESH();
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 19 * SPAN, SPAN, 18 * SPAN, &hz, &sl), SPAN / 2);
	/* a shallow take for 17 1/2 (read as the end of its grain): up to it */
	shl__slack_note(&sl, 17 * SPAN + SPAN / 2, 0, 0, SPAN, 17 * SPAN);
	FRESH();
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 19 * SPAN, SPAN, 18 * SPAN, &hz, &sl),
			SPAN / 2 - GRAIN + 1);
	/* one for an instant past the take's end (18 + 1000): nothing */
	shl__slack_note(&sl, 18 * SPAN + 1000, 0, 0, SPAN, 18 * SPAN);
	FRESH();
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 19 * SPAN, SPAN, 18 * SPAN, &hz, &sl), 0);
	/* slot 7 given to span 29 (a note from a clock in span 22): span
	 * 18's takes are gone, nothing even for a take ending later */
	shl__slack_note(&sl, 29 * SPAN, 15, 0, 15, 22 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[7].tag), 30ULL << 32);
	FRESH();
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 19 * SPAN, SPAN, 18 * SPAN + SPAN / 2, &hz, &sl),
			0);
#undef FRESH
	/* an apply's cover; a reset */
	shl__horizon_raise(&hz, 40 * SPAN);
	shl__slack_cover(&sl, &hz, 30 * SPAN);
	CU_ASSERT_EQUAL(atomic_load(&sl.far), 40 * SPAN);
	shl__slack_clear(&sl);
	CU_ASSERT_EQUAL(atomic_load(&sl.far), 0);
	CU_ASSERT_EQUAL(atomic_load(&sl.slot[5].tag), 0);
}

/* A charge (usage above the estimate) always lands, however many times
 * other writers move the word under its CAS (fault.c's contention hook:
 * more interference than any fixed retry bound). */
static void test_charge_always_lands(void)
{
	_Atomic uint64_t tat = 5000;
	const long moves = 300000;
	atomic_store(&shl__charge_interfere, moves);
	shl__bucket_charge(&tat, 1000, 700);
	CU_ASSERT_EQUAL(atomic_load(&shl__charge_interfere), 0);
	atomic_store(&shl__charge_interfere, 0);
	/* the others' moves, then the charge on top of them */
	CU_ASSERT_EQUAL(atomic_load(&tat), 5000 + (uint64_t)moves + 700);
}

void suite_bucket(void)
{
	CU_pSuite s = CU_add_suite("bucket", NULL, NULL);
	TU_ADD(s, test_take_exact);
	TU_ADD(s, test_zero_and_full_cost);
	TU_ADD(s, test_give_charge_raise);
	TU_ADD(s, test_hostile_words);
	TU_ADD(s, test_window);
	TU_ADD(s, test_refund_shifted_by_earlier_refund);
	TU_ADD(s, test_refund_ledger_wraps);
	TU_ADD(s, test_refund_model_check);
	TU_ADD(s, test_reserve_model_check);
	TU_ADD(s, test_reserve_model_check_needs_horizon);
	TU_ADD(s, test_slack_model_check);
	TU_ADD(s, test_slack_gives_surplus);
	TU_ADD(s, test_slack_late_settle);
	TU_ADD(s, test_slack_under_line);
	TU_ADD(s, test_slack_batch);
	TU_ADD(s, test_slack_cancel_before_queued_release);
	TU_ADD(s, test_slack_slots);
	TU_ADD(s, test_cancel_before_queued_release);
	TU_ADD(s, test_charge_always_lands);
}
