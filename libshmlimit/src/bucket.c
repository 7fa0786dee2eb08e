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
 */
#include <stdint.h>

#include "internal.h"

/* Bound on CAS retries: lock-free means someone always progresses, but a
 * hostile writer hammering the word must not pin us forever. */
#define SHL_CAS_TRIES 100000

uint64_t shl__mul_sat(uint64_t a, uint64_t b)
{
	uint64_t r;
	if (__builtin_mul_overflow(a, b, &r))
		return UINT64_MAX;
	return r;
}

static inline uint64_t add_sat(uint64_t a, uint64_t b)
{
	uint64_t r;
	if (__builtin_add_overflow(a, b, &r))
		return UINT64_MAX;
	return r;
}

int64_t shl__bucket_take(_Atomic uint64_t *tat, int64_t now, uint64_t cost_ns, uint64_t tol)
{
	uint64_t after;
	return shl__bucket_take_at(tat, now, cost_ns, tol, &after);
}

int64_t shl__bucket_take_at(_Atomic uint64_t *tat, int64_t now, uint64_t cost_ns, uint64_t tol,
			    uint64_t *after)
{
	uint64_t n = now < 0 ? 0 : (uint64_t)now;
	/* relaxed: see the contract above; the CAS below re-validates. */
	uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		uint64_t next = add_sat(old > n ? old : n, cost_ns);
		uint64_t ahead = next - n;
		if (ahead > tol) {
			uint64_t w = ahead - tol;
			return w > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)w;
		}
		/* relaxed/relaxed: the word publishes nothing but itself. */
		if (atomic_compare_exchange_weak_explicit(tat, &old, next, memory_order_relaxed,
							  memory_order_relaxed)) {
			*after = next;
			return 0;
		}
	}
	return 1; /* contended beyond reason: refuse, retry in 1 ns */
}

void shl__bucket_give(_Atomic uint64_t *tat, uint64_t ns)
{
	if (ns == 0)
		return;
	uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		uint64_t next = old > ns ? old - ns : 0;
		/* relaxed: independent counter, as in shl__bucket_take. */
		if (atomic_compare_exchange_weak_explicit(tat, &old, next, memory_order_relaxed,
							  memory_order_relaxed))
			return;
	}
}

/*
 * Give back part of an earlier take, made when the bucket became full again
 * at `full_at`.  A plain give would be wrong once the bucket has refilled
 * past that take: max(tat, now) has already forgotten it, and subtracting
 * it again would credit the bucket with units it never lent.  What is left
 * of the take at `now` is at most full_at - now, so never give more.
 */
void shl__bucket_refund(_Atomic uint64_t *tat, int64_t now, uint64_t ns, uint64_t full_at)
{
	uint64_t n = now < 0 ? 0 : (uint64_t)now;
	uint64_t left = full_at > n ? full_at - n : 0;
	shl__bucket_give(tat, ns < left ? ns : left);
}

void shl__bucket_charge(_Atomic uint64_t *tat, int64_t now, uint64_t ns)
{
	if (ns == 0)
		return;
	uint64_t n = now < 0 ? 0 : (uint64_t)now;
	uint64_t old = atomic_load_explicit(tat, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		/* A charge may push the bucket into debt: that is the point of
		 * settling with real usage larger than the estimate. */
		uint64_t next = add_sat(old > n ? old : n, ns);
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
			cnt = add_sat(cnt, add[d]);
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
				out[d] = add_sat(out[d], w & SHL_WIN_MASK);
		}
	}
}
