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
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 1000, 100, tol, &mark), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1000, 50, mark, &no_horizon), 50);
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
	CU_ASSERT_EQUAL(shl__bucket_refund(&b2, 1000, 5000, 10000, &no_horizon), 5000);
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
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, now, 500, tol, &x0), 0);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, now, 500, tol, &x1), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, now, 500, x0, &no_horizon), 500); /* cancel X0 */
	CU_ASSERT_EQUAL(atomic_load(&b.tat), 1500);
	CU_ASSERT_EQUAL(atomic_load(&b.refunded), 500);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, now, 500, tol, &x2), 0);
	now = 1500;
	/* X1 is all gone by now: nothing to give. */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, now, 500, x1, &no_horizon), 0);
	int64_t w1 = shl__bucket_take_at(&b, now, 1000, tol, &y1);
	CU_ASSERT_EQUAL(w1, 500); /* X2 still holds 500 */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, now, 500, x2, &no_horizon), 500); /* cancel X2 */
	int64_t w2 = shl__bucket_take_at(&b, now, 500, tol, &y2);
	CU_ASSERT_EQUAL(w2, 0);
	/* Admitted at 1500, net: at most the burst. */
	uint64_t sent = (w1 == 0 ? 1000u : 0u) + (w2 == 0 ? 500u : 0u);
	CU_ASSERT(sent <= tol);
	/* And the bucket is not emptier than that history allows. */
	CU_ASSERT(atomic_load(&b.tat) >= 2000);
	/* Y1 again: the bucket holds Y2's 500, so 1000 more must wait 500. */
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, now, 1000, tol, &y1), 500);
}

/* The ledger and the ticket's mark are modular: a ledger near 2^64 wraps
 * and a refund still gives exactly what is left. */
static void test_refund_ledger_wraps(void)
{
	struct shl_bkt b = {0};
	atomic_store(&b.tat, 0);
	atomic_store(&b.refunded, UINT64_MAX - 100);
	uint64_t m;
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 1000, 700, 1000, &m), 0);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1000, 300, m, &no_horizon), 300);
	CU_ASSERT_EQUAL(atomic_load(&b.refunded), 199); /* wrapped */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1200, 1000, m, &no_horizon), 200); /* 700-300 left, 200 gone by */
	CU_ASSERT_EQUAL(atomic_load(&b.tat), 1200);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1200, 1000, m, &no_horizon), 0);
	/* A mark far in the past (or a scribbled ledger) gives nothing more
	 * than asked. */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 1200, 5, m + (1ULL << 40), &no_horizon), 5);
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

/* Returns the number of violations found (0: sound); *takes: tickets. */
static int model_check(unsigned seed, int steps, int reserve_pct, int use_horizon, int *takes)
{
	enum { MAXT = 8192 };
	static struct mc_ticket tk[MAXT], sorted[MAXT];
	static int open_[MAXT];
	int n = 0, nopen = 0;
	struct shl_bkt b = {0};
	_Atomic uint64_t horizon = 0, unused = 0;
	const uint64_t tol = 1000 + (seed % 7) * 150;
	int64_t now = 1000 + (int64_t)(seed % 1000);
	atomic_store(&b.tat, (uint64_t)now);
	uint64_t x = seed * 2654435761u + 1;
#define RND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
	int bad = 0;
	for (int step = 0; step < steps && !bad; step++) {
		unsigned op = (unsigned)(RND() % 100);
		if (op < 25) {
			now += (int64_t)(RND() % 400); /* the clock moves on */
		} else if (op < 60 && n < MAXT) {
			uint64_t c = 1 + RND() % 700, m;
			int64_t at = now;
			if ((int)(RND() % 100) < reserve_pct) {
				/* a reservation: at the bucket's release, or later */
				uint64_t tat = atomic_load(&b.tat), need = tat + c;
				uint64_t r = need > tol && need - tol > (uint64_t)now ? need - tol
										: (uint64_t)now;
				at = (int64_t)r + (RND() % 2 ? (int64_t)(RND() % 600) : 0);
				shl__horizon_raise(&horizon, (uint64_t)at);
				CU_ASSERT_EQUAL(shl__bucket_take_at(&b, at, c, tol, &m), 0);
				tk[n] = (struct mc_ticket){at, c, 0, m};
				open_[nopen++] = n++;
			} else if (shl__bucket_take_at(&b, now, c, tol, &m) == 0) {
				tk[n] = (struct mc_ticket){now, c, 0, m};
				open_[nopen++] = n++;
			}
		} else if (nopen > 0) {
			int i = (int)(RND() % (uint64_t)nopen), k = open_[i];
			uint64_t left = tk[k].cost - tk[k].given;
			/* a cancel (all that is left), or a partial refund (settle). */
			uint64_t ask = op < 80 ? left : RND() % (left + 1);
			uint64_t g = shl__bucket_refund(&b, now, ask, tk[k].mark,
							use_horizon ? &horizon : &unused);
			CU_ASSERT(g <= ask);
			tk[k].given += g;
			if (op < 80 || RND() % 3 == 0)
				open_[i] = open_[--nopen]; /* settled or cancelled: closed */
		}
		/* The oracle. */
		uint64_t T = (uint64_t)(1000 + (int64_t)(seed % 1000));
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
		CU_ASSERT_EQUAL(model_check(seed, 6000, 0, 1, &n), 0);
		CU_ASSERT(n > 600); /* the check had something to check */
	}
}

/* The same with reservations among the takes: a third of them, some
 * released later than the bucket alone would (another dimension binds). */
static void test_reserve_model_check(void)
{
	for (unsigned seed = 1; seed <= 24; seed++) {
		int n;
		CU_ASSERT_EQUAL(model_check(seed, 6000, 33, 1, &n), 0);
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
		found += model_check(seed, 6000, 33, 0, &n) > 0;
	}
	CU_ASSERT(found > 0);
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
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 0, 1000, tol, &ma), 0);
	shl__horizon_raise(&hz, 1000);
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 1000, 1000, tol, &mb), 0); /* B at 1000 */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, 1000, ma, &hz), 0);     /* A: nothing */
	/* C: released no earlier than 2000 (1000 is B's whole burst). */
	CU_ASSERT_EQUAL(shl__bucket_take_at(&b, 1000, 1000, tol, &mc), 1000);
	/* B itself, cancelled before its release, gives back all of it. */
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, 1000, mb, &hz), 1000);
	CU_ASSERT_EQUAL(atomic_load(&b.tat), 1000);
	/* Horizon: only raised; a scribbled one far ahead gives nothing. */
	shl__horizon_raise(&hz, 500);
	CU_ASSERT_EQUAL(atomic_load(&hz), 1000);
	atomic_store(&hz, UINT64_MAX - 3);
	CU_ASSERT_EQUAL(shl__bucket_refund(&b, 0, 1000, ma + (1ULL << 40), &hz), 0);
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
	TU_ADD(s, test_cancel_before_queued_release);
	TU_ADD(s, test_charge_always_lands);
}
