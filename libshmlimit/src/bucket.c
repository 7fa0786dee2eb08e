/*
 * bucket.c - a token bucket in one 64-bit word (GCRA), and the stats window.
 *
 * A bucket that refills continuously at `limit` per minute with capacity
 * `burst` is kept as its theoretical arrival time (tat): the CLOCK_BOOTTIME
 * instant at which it would be full again.  One unit costs `interval` ns
 * (60e9 / limit, rounded UP so rounding can only under-admit), and the
 * bucket holds `tol` = burst * interval ns of credit.  Taking `c` units at
 * `now`:
 *
 *      next = max(tat, now) + c * interval
 *      admit  iff  next - now <= tol          (then tat = next, by CAS)
 *      else   wait next - now - tol ns
 *
 * Because the whole state is one word, a take is one compare-and-swap, and a
 * process killed at any instruction leaves the word either before or after
 * its CAS: never half-updated, never locked.  Whatever it took and did not
 * give back is simply consumed, and refills like any other use.
 *
 * Concurrency contract: every function here may run at the same time as any
 * other on the same word, in any process.  No data is published through a
 * bucket word (each is an independent counter), so relaxed atomics suffice:
 * the RMW's atomicity is the whole guarantee, and the modification order of
 * the single word is what serialises takers.
 *
 * Arithmetic is unsigned and saturating: a scribbled word can make a bucket
 * refuse (a huge wait) but never overflow, loop or crash.
 *
 * Refunds and the refund ledger
 * -----------------------------
 * A cancel, a settle below the estimate and a rollback give back part of a
 * take.  The word cannot say which part of [now, tat) is whose, so a refund
 * removes from the tail (tat -= b), which moves every region laid after the
 * refunded one down by b.  A ticket's own "full again" instant, recorded at
 * its take, is then stale: two tickets could each give back "what is left"
 * of regions that overlap after the shift, and the bucket would be credited
 * with more than it lent (two 500-ns tickets cancelled at the instant where
 * only 500 ns of either is left, both giving 500: 1.5 x burst admitted at
 * once).  So each bucket keeps, next to tat in the same 16 bytes, a ledger
 * R: the total ns every refund of this bucket ever gave back (mod 2^64).
 *
 *   take:   read R (acquire), then the CAS loop on tat alone (re-reading R
 *           before every retry); the ticket records mark = next + R.
 *   refund of up to b_req: read (tat, R) (the cmpxchg16b validates the
 *           pair, and reloads it together when it fails); left = mark - R - now
 *           as a signed difference, clamped at 0; b = min(b_req, left);
 *           (tat, R) := (tat - b saturating at 0, R + b) by one cmpxchg16b.
 *
 * Why no refund can over-credit.  Let P_j = full_at_j - G_j, where G_j is
 * everything given back (to any ticket) after take j's CAS: j's end, moved
 * down by every give since.  mark_j - R_now <= P_j (equal when the take's
 * ledger read is fresh; see below).  The "true" bucket places every ticket
 * at its take with its net cost (cost minus what was given back to it):
 * T = max over takes k of (t_k + N_k), N_k the net costs of take k and all
 * later ones.  Two invariants, for every take j, at every instant:
 *
 *   (I1)  tat - P_j >= net cost of all takes after j.
 *         At j's take both sides are 0.  A later take raises tat by at
 *         least its cost.  A give of b to a ticket after j lowers tat by at
 *         most b, P_j by b and the right side by b; a give to j or to an
 *         earlier ticket lowers tat by at most b and P_j by b.  Charges and
 *         raises only raise tat.
 *   (I2)  max(tat, now) >= T.
 *         A take adds the same term to both (its net cost is at most its
 *         cost).  Time only raises the left side.  A give of b to ticket j
 *         lowers the true terms k <= j by b, which were <= max(tat, now),
 *         and leaves those of the takes after j, t_k + N_k <= now + N_k;
 *         and since b <= P_j - now, tat - b >= tat - P_j + now >= now +
 *         (net of the takes after j) by (I1).
 *
 * So every admission the word makes, the true bucket (net costs) makes
 * too, and the net admitted over any interval T is at most burst + rate x
 * T.  The ledger is what makes b <= P_j - now checkable: each give and its
 * ledger increment are one atomic step, so R_now - R_take counts every give
 * since the take.
 *
 * One limit, not closed by the ledger: `now` is the refunder's clock
 * reading, and (I2) uses t_k <= now for the takes after j.  A refunder
 * descheduled between its clock reading and its CAS, while others take
 * at later readings, can over-credit by at most the time it lost; callers
 * read the clock just before refunding (a rollback reads a fresh one).
 *
 * Concurrency of the ledger read: a take reads R (acquire) before it reads
 * tat and CASes it.  A refund landing between the R read and the CAS
 * changes tat, so the CAS fails and the take retries with a fresh R.  A
 * stale R (a refund landing between the R read and the tat read, or an ABA
 * on tat) is smaller, so R_now - R_take is larger and the refund smaller:
 * the safe direction.  R can never be read "from the future" (a refund
 * ordered after the take's CAS): the acquire load keeps the R read before
 * the CAS, and if it sees a refund's R, that refund's tat write is before
 * the CAS in the word's modification order.  Refunds of tickets laid after
 * j count in R too, which only makes j's refunds smaller.  Takes never
 * change R; shl_clamp (raise) and settle's charge only raise tat, shifting
 * nothing down.  An apply's rescale and a reset change tat freely, but only
 * before publishing a new generation, and tickets of an older generation
 * get no bucket refund at all (admit.c); R is left as it is by a reset
 * (only its differences mean anything).
 *
 * Without a 16-byte CAS (not x86-64) refunds give nothing back: never an
 * over-admission, only less credit.
 *
 * Reservations (shl_reserve, admit.c)
 * -----------------------------------
 * A reservation is a take at a release time R >= now instead of at now:
 * next = max(tat, R) + c, admitted iff next - R <= tol.  The word's history
 * is then the history of a bucket whose takes happen at their release
 * times, not necessarily in time order, and the window bound holds for
 * release times: for the takes k1..km released in [a, b], in CAS order,
 * the tat after the last one is at least a + (their costs) (each adds its
 * cost to max(tat, t) >= a) and at most t_km + tol <= b + tol.
 *
 * It breaks one step of the refund argument: (I2) used t_k <= now for the
 * takes after j, and a reservation's t_k = R_k lies ahead.  Giving back
 * room that lies before a later reservation's release would move that
 * reservation's region to before its own release: a take at R_k would
 * find room the reserved request, released at R_k too, still uses (A takes
 * the whole burst at 0, B reserves the next burst at release 1000, A is
 * cancelled at 0 and gives 1000 back: C then reserves at release 1000 as
 * well, and 2 x burst goes at one instant).  So each pool keeps a horizon
 * H: the latest release of any reservation into the future, only ever
 * raised, raised BEFORE the reservation's CAS (a release fence orders the
 * two).  A refund uses max(now, H) where it used now, read after the pair
 * it validates (acquire, or the reload of a failed cmpxchg16b, a full
 * barrier): a reservation whose CAS precedes the refund's in the word's
 * order has its H raise visible there.  With now' = max(now, H) >= t_k
 * for every take after j, (I2)'s step holds as written, and (I1) does not
 * involve time.  The cost is only credit: while reservations are queued,
 * a cancel gives back at most what lies past the last release.  A scribbled
 * H far ahead (over 2^62 ns) makes refunds give nothing.
 */
#include <stdint.h>

#include "internal.h"

/* Bound on CAS retries: lock-free means someone always progresses, but a
 * hostile writer hammering the word must not pin us forever. */
#define SHL_CAS_TRIES 100000

/* The GCRA rule on one word: 0 and *after = the new tat, or the wait. */
static inline int64_t take_word(_Atomic uint64_t *tat, uint64_t n, uint64_t *old, uint64_t cost_ns,
				uint64_t tol, uint64_t *after, int *done)
{
	uint64_t next = shl__gcra_next(*old, n, cost_ns);
	uint64_t ahead = next - n;
	*done = 1;
	if (ahead > tol) {
		uint64_t w = ahead - tol;
		return w > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)w;
	}
	/* relaxed/relaxed: the word publishes nothing but itself. */
	if (atomic_compare_exchange_weak_explicit(tat, old, next, memory_order_relaxed,
						  memory_order_relaxed)) {
		*after = next;
		return 0;
	}
	*done = 0;
	return 0;
}

int64_t shl__bucket_take(_Atomic uint64_t *tat, int64_t now, uint64_t cost_ns, uint64_t tol)
{
	uint64_t n = now < 0 ? 0 : (uint64_t)now, after;
	/* relaxed: see the contract above; the CAS below re-validates. */
	uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		int done;
		int64_t w = take_word(tat, n, &old, cost_ns, tol, &after, &done);
		if (done)
			return w;
	}
	return 1; /* contended beyond reason: refuse, retry in 1 ns */
}

/* A take from a bucket pair: the ticket's mark is the new tat plus the
 * ledger as read before the CAS (see the top). */
int64_t shl__bucket_take_at(struct shl_bkt *b, int64_t now, uint64_t cost_ns, uint64_t tol,
			    uint64_t *mark)
{
	uint64_t n = now < 0 ? 0 : (uint64_t)now;
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		/* acquire: pairs with the refund's cmpxchg16b (a full barrier):
		 * a ledger value seen here is of a refund whose tat write the
		 * CAS below then sees (the top comment); the tat load itself is
		 * relaxed, the CAS re-validates it. */
		uint64_t r = atomic_load_explicit(&b->refunded, memory_order_acquire);
		uint64_t old = atomic_load_explicit(&b->tat, memory_order_relaxed), after;
		int done;
		int64_t w = take_word(&b->tat, n, &old, cost_ns, tol, &after, &done);
		if (done) {
			if (w == 0)
				*mark = after + r; /* mod 2^64 */
			return w;
		}
	}
	return 1; /* contended beyond reason: refuse, retry in 1 ns */
}

/*
 * Give back up to `ns` of a take whose ticket holds `mark` (see the top):
 * at most what is left of it, full_at - (gives since the take) - now', by
 * one 16-byte CAS of (tat, ledger), where now' = max(now, the pool's
 * reservation horizon).  Returns what was given.
 */
uint64_t shl__bucket_refund(struct shl_bkt *b, int64_t now, uint64_t ns, uint64_t mark,
			    _Atomic uint64_t *horizon)
{
	if (ns == 0)
		return 0;
#if SHL_HAVE_CAS16
	const uint64_t n0 = now < 0 ? 0 : (uint64_t)now;
	/* acquire: a first guess, which the cmpxchg16b validates (on failure
	 * it reloads the pair into t, r, as a full barrier); acquire so that
	 * the horizon read below sees the raise of every reservation whose
	 * CAS wrote the tat read here (pairs with the release fence in
	 * admit.c's reserve path). */
	uint64_t t = atomic_load_explicit(&b->tat, memory_order_acquire);
	uint64_t r = atomic_load_explicit(&b->refunded, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		/* relaxed: ordered after the pair by the acquire load above or
		 * by the failed cmpxchg16b's barrier. */
		uint64_t hz = atomic_load_explicit(horizon, memory_order_relaxed);
		uint64_t n = hz > n0 ? hz : n0;
		if (n - n0 > (1ULL << 62))
			return 0; /* a scribbled horizon: give nothing */
		int64_t left = (int64_t)(mark - r - n); /* modular, as a signed difference */
		uint64_t give = left <= 0 ? 0 : ((uint64_t)left < ns ? (uint64_t)left : ns);
		/* Nothing left: final even if t and r were read apart.  r is
		 * the ledger now or an older value, and the ledger only grows,
		 * so a fresher one leaves even less (and H only grows). */
		if (give == 0)
			return 0;
		/* Full barrier (locked); pairs with the acquire ledger load of
		 * shl__bucket_take_at. */
		if (shl__cas16(b, &t, &r, t > give ? t - give : 0, r + give))
			return give;
	}
	return 0;
#else
	(void)b;
	(void)now;
	(void)mark;
	(void)horizon;
	return 0;
#endif
}

/* Raise a pool's reservation horizon to `release` (never lowers it). */
void shl__horizon_raise(_Atomic uint64_t *horizon, uint64_t release)
{
	/* relaxed: the caller's release fence orders this before its CAS on
	 * the bucket word (the top comment, "Reservations"). */
	uint64_t old = atomic_load_explicit(horizon, memory_order_relaxed);
	while (old < release &&
	       !atomic_compare_exchange_weak_explicit(horizon, &old, release, memory_order_relaxed,
						      memory_order_relaxed))
		;
}

void shl__bucket_charge(_Atomic uint64_t *tat, int64_t now, uint64_t ns)
{
	if (ns == 0)
		return;
	uint64_t n = now < 0 ? 0 : (uint64_t)now;
	uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
	/* No bound on the retries: a charge that gave up would be usage the
	 * bucket never saw (an over-admission).  Lock-free all the same: each
	 * failed CAS is another writer's CAS that landed. */
	for (;;) {
		/* relaxed: a test-only switch (fault.c). */
		if (shl_unlikely(atomic_load_explicit(&shl__charge_interfere,
						      memory_order_relaxed) > 0))
			shl__charge_interfere_step(tat);
		/* A charge may push the bucket into debt: that is the point of
		 * settling with real usage larger than the estimate. */
		uint64_t next = shl__gcra_next(old, n, ns);
		/* relaxed: independent counter, as in shl__bucket_take. */
		if (atomic_compare_exchange_weak_explicit(tat, &old, next, memory_order_relaxed,
							  memory_order_relaxed))
			return;
	}
}

void shl__bucket_raise(_Atomic uint64_t *tat, uint64_t floor)
{
	uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES && old < floor; i++) {
		/* relaxed: independent counter, as in shl__bucket_take. */
		if (atomic_compare_exchange_weak_explicit(tat, &old, floor, memory_order_relaxed,
							  memory_order_relaxed))
			return;
	}
}

/*
 * The last-minute window: 12 slots of 5 s.  Each counter word carries the
 * 5-s epoch it counts (mod 65536) in its top 16 bits, so a slot is recycled
 * by the same CAS that adds to it: no separate reset that could lose a count.
 */
void shl__window_add(struct shl_pool_rt *rt, int64_t now, const uint64_t add[SHL_NBUCKETS])
{
	uint64_t epoch = (uint64_t)(now < 0 ? 0 : now) / (uint64_t)SHL_WINDOW_SLOT_NS;
	uint64_t tag = (epoch & 0xffff) << SHL_WIN_BITS;
	struct shl_win_slot *s = &rt->win[epoch % SHL_WINDOW_SLOTS];
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		if (add[d] == 0)
			continue;
		uint64_t old = atomic_load_explicit(&s->v[d], memory_order_relaxed);
		for (int i = 0; i < SHL_CAS_TRIES; i++) {
			uint64_t cnt = (old & ~SHL_WIN_MASK) == tag ? (old & SHL_WIN_MASK) : 0;
			cnt = shl__add_sat(cnt, add[d]);
			if (cnt > SHL_WIN_MASK)
				cnt = SHL_WIN_MASK;
			/* relaxed: a statistic; nothing is published through it. */
			if (atomic_compare_exchange_weak_explicit(&s->v[d], &old, tag | cnt,
								  memory_order_relaxed,
								  memory_order_relaxed))
				break;
		}
	}
}

void shl__window_sum(const struct shl_pool_rt *rt, int64_t now, uint64_t out[SHL_NBUCKETS])
{
	uint64_t epoch = (uint64_t)(now < 0 ? 0 : now) / (uint64_t)SHL_WINDOW_SLOT_NS;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		out[d] = 0;
	for (int k = 0; k < SHL_WINDOW_SLOTS; k++) {
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			/* relaxed: each word is read whole; a stale slot is skipped. */
			uint64_t w = atomic_load_explicit(&rt->win[k].v[d], memory_order_relaxed);
			uint64_t age = ((epoch & 0xffff) - (w >> SHL_WIN_BITS)) & 0xffff;
			if (age < SHL_WINDOW_SLOTS)
				out[d] = shl__add_sat(out[d], w & SHL_WIN_MASK);
		}
	}
}
