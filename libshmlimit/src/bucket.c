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
 * at later readings, can over-credit by at most the time it lost (and by
 * at most its own cost).  So the library's refunds (cancel, settle,
 * rollback) pass SHL_NOW_FRESH: the clock is read inside the CAS loop,
 * after the pair and the horizon, a few instructions before the
 * cmpxchg16b, which leaves that window as small as it can be.  (With the
 * reading taken at the top of shl_cancel, the crash test under heavy
 * preemption saw an over-admission of one request in about one run in
 * ten once reservations made the pool go idle and burst again.)
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
 * involve time.  The cost is credit: while reservations are queued, the
 * horizon rule gives back at most what lies past the last release.  A
 * scribbled H far ahead (over 2^62 ns) makes that rule give nothing.
 *
 * Slack: a surplus given back under a line, or late
 * --------------------------------------------------
 * At saturation there is always a line, and a settle often comes after
 * its own region has passed (an answer slower than the burst refills), so
 * the rules above alone give a settle's surplus back almost never: the
 * learned estimate errs high by a few percent of every request, which the
 * server keeps and the word never sees again.  The step of (I2) that needs
 * t_k <= now' can also be closed per take: (I1) for k itself gives
 * tat >= start_k - G_k + N_k, where start_k = max(tat before k, t_k) is
 * where k's region began and G_k what was given back since k's take, so a
 * give of b keeps tat - b >= t_k + N_k as long as
 *
 *      b <= slack_k = start_k - t_k - G_k = L_k - R_now,
 *      L_k = start_k - t_k + R_take(k)     (a constant of the take),
 *
 * whether k was taken before now or reserved ahead of it.  A take at a
 * saturated bucket finds it in debt by about tol - c_k: most of a burst.
 * A take into an idle bucket finds no debt (slack 0), and neither does
 * the first of a batch placed at once, in the span every later take of
 * the batch shares; but a give of b needs no slack of a take k after j
 * for an instant t_k <= P_j - b (it is covered as in (I1)-(I2)), nor of
 * any take before j.  So every take of the ITPM bucket (the
 * one settles refund) is noted, before its CAS (a release fence orders
 * them, as for H), in the slot of its instant's span (2^32 ns; struct
 * shl_slack, layout.h), by one of two things: a deep take (slack over
 * half of tol - c_k, the most it could find; SHL_SLACK_DEEP: a take at
 * the margin of a line, large or small, is deep) lowers the span's least
 * L; a shallow one
 * raises the span's latest shallow instant (kept in the tag's low half at
 * 1-ms grain, SHL_SLACK_GRAIN, read back as the grain's end: late).  A
 * slot is given only to later spans.
 * A refund of ticket j, whose end is P_j = mark - R_now, asking ns: every
 * take no slot holds was for an instant at or before `far` (below), so
 * b <= P_j - far; it reads the slots, then the clock, and if every span
 * from P_j - ns to max(now, H) is in the slots (tag equal: its notes;
 * tag lower: no take for that span yet, else its note would be there),
 * may give the least of P_j - far, L - R_now of the deep takes read and
 * P_j - s of the latest shallow instants s read; else nothing by this
 * rule.  It gives the larger of that and the horizon rule's amount.
 * Sound: a take after j for an instant t_k <= P_j - b is covered as in
 * (I1)-(I2); a later one is in a span read (noted before its CAS, which
 * precedes the refund's, so visible past the pair the refund validates;
 * its instant is at most the refund's clock or H), not shallow (its
 * instant would bound b below P_j - t_k), so deep, and its slack is at
 * least that span's least L - R_now.  L read with an older ledger (a
 * refund between the ledger read and the CAS: the CAS then fails and
 * notes again) is smaller: only less credit.  A note for a span whose
 * slot a later span already holds is dropped: a refund that needs that
 * span finds the later tag and gives nothing by the rule.  A note that
 * would take a slot for a span more than eight spans ahead of its clock
 * (evicting one less than three behind it) raises `far` instead, as does
 * one contended beyond reason; an apply that moves the word's regions
 * raises far to max(now, H), which covers every take made before it.  A
 * slot is read as tag, low, tag: tags only grow (until a reset), so two
 * equal readings bracket a low of one span; one torn eight times running
 * turns the rule off.  A scribbled far or span only turns the rule off;
 * a scribbled low or shallow instant can over-credit up to the ticket's
 * own request.
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

#if SHL_HAVE_CAS16
/* A take's note, past the common case of shl__slack_note (internal.h):
 * its span's slot holds an earlier span, or says less than this take. */
void shl__slack_note_slow(struct shl_slack *sl, uint64_t at, uint64_t slack, uint64_t r,
			  uint64_t room, uint64_t now)
{
	const uint64_t span = (at >> SHL_SLACK_SHIFT) + 1, cur = (now >> SHL_SLACK_SHIFT) + 1;
	const int deep = slack > room >> SHL_SLACK_DEEP;
	const uint64_t low = slack + r; /* mod 2^64, as the ledger */
	const uint32_t mk = deep ? 0 : shl__slack_mark(at);
	struct shl_slack_slot *s = &sl->slot[(span - 1) % SHL_SLACK_SLOTS];
	/* relaxed: a first guess; the cmpxchg16b validates the pair. */
	uint64_t lo = atomic_load_explicit(&s->low, memory_order_relaxed);
	uint64_t tg = atomic_load_explicit(&s->tag, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		uint64_t nlo, ntg;
		if (tg >> 32 > span)
			return; /* a later span's: refunds needing this one give nothing */
		if (tg >> 32 == span) {
			if (deep ? (int64_t)(lo - low) <= 0 : (uint32_t)tg >= mk)
				return; /* the slot says as much already */
			nlo = deep ? low : lo;
			ntg = deep ? tg : (tg & ~(uint64_t)0xffffffffu) | mk;
		} else {
			if (span > cur + SHL_SLACK_SLOTS - 3)
				break; /* too far ahead to evict a span refunds may need: far */
			/* a span with no deep take yet: a least L no refund reaches */
			nlo = deep ? low : r + (1ULL << 62);
			ntg = span << 32 | mk;
		}
		/* Full barrier (locked); the caller's release fence then orders
		 * it before the take's CAS. */
		if (shl__cas16(s, &lo, &tg, nlo, ntg))
			return;
	}
	shl__horizon_raise(&sl->far, at);
}

/* Read the slots, each as one snapshot (see the top); -1 if one kept
 * changing under the reads. */
static int slack_read(struct shl_slack *sl, uint64_t lo[SHL_SLACK_SLOTS],
		      uint64_t tg[SHL_SLACK_SLOTS])
{
	for (int i = 0; i < SHL_SLACK_SLOTS; i++) {
		struct shl_slack_slot *s = &sl->slot[i];
		int k;
		for (k = 0; k < 8; k++) {
			/* acquire, all three: kept in this order. */
			uint64_t a = atomic_load_explicit(&s->tag, memory_order_acquire);
			lo[i] = atomic_load_explicit(&s->low, memory_order_acquire);
			tg[i] = atomic_load_explicit(&s->tag, memory_order_acquire);
			if (a == tg[i])
				break;
		}
		if (k == 8)
			return -1;
	}
	return 0;
}

/* What the slots allow giving back of a take ending at p (tat scale, the
 * ledger taken off), asked ns, r the ledger, n the clock read after the
 * slots, hz the horizon (see the top): -1 for nothing by this rule. */
static int64_t slack_left(uint64_t p, uint64_t ns, uint64_t r, uint64_t n, uint64_t hz,
			  uint64_t far, const uint64_t lo[SHL_SLACK_SLOTS],
			  const uint64_t tg[SHL_SLACK_SLOTS])
{
	/* p is a time, or below 0 once gives since the take passed its end
	 * (modular, as a signed quantity); ns <= 2^62.  A give b needs every
	 * take no slot holds (for instants <= far) at or before p - b. */
	if ((int64_t)p <= 0 || far >= p)
		return -1;
	uint64_t cap = p - far < ns ? p - far : ns, from = p - cap;
	uint64_t top = hz > n ? hz : n;
	if (top - n > (1ULL << 62))
		return -1; /* a scribbled horizon */
	uint64_t e0 = from >> SHL_SLACK_SHIFT, e1 = top >> SHL_SLACK_SHIFT;
	int64_t left = (int64_t)cap;
	if (e1 < e0)
		return left; /* no take after j is for an instant past from */
	if (e1 - e0 >= SHL_SLACK_SLOTS)
		return -1; /* more spans than slots */
	for (uint64_t e = e0; e <= e1; e++) {
		int i = (int)(e % SHL_SLACK_SLOTS);
		if (tg[i] >> 32 > e + 1)
			return -1; /* the span's takes are gone from the slots */
		if (tg[i] >> 32 != e + 1)
			continue; /* no take for it yet */
		if ((int64_t)(lo[i] - r) < left)
			left = (int64_t)(lo[i] - r); /* its deep takes' least slack */
		if ((uint32_t)tg[i] != 0) {
			/* its latest shallow take, read late: b <= p - that */
			uint64_t s = (e << SHL_SLACK_SHIFT) +
				     ((uint64_t)(uint32_t)tg[i] << SHL_SLACK_GRAIN) - 1;
			if (s >= p)
				return -1;
			if ((int64_t)(p - s) < left)
				left = (int64_t)(p - s);
		}
	}
	return left;
}
#endif

/* A take from a bucket pair for the instant `at` (a reservation's release,
 * or now): the ticket's mark is the new tat plus the ledger as read before
 * the CAS (see the top).  With `sl` (the ITPM bucket), the take is noted
 * in the slack slots before its CAS; `now` is the taker's clock. */
int64_t shl__bucket_take_at(struct shl_bkt *b, int64_t at, uint64_t cost_ns, uint64_t tol,
			    uint64_t *mark, struct shl_slack *sl, int64_t now)
{
	uint64_t n = at < 0 ? 0 : (uint64_t)at;
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		/* acquire: pairs with the refund's cmpxchg16b (a full barrier):
		 * a ledger value seen here is of a refund whose tat write the
		 * CAS below then sees (the top comment); the tat load itself is
		 * relaxed, the CAS re-validates it. */
		uint64_t r = atomic_load_explicit(&b->refunded, memory_order_acquire);
		uint64_t old = atomic_load_explicit(&b->tat, memory_order_relaxed), after;
		if (sl != NULL && shl__gcra_next(old, n, cost_ns) - n <= tol) {
			shl__slack_note(sl, n, (old > n ? old : n) - n, r, tol - cost_ns,
					now < 0 ? 0 : (uint64_t)now);
			/* release: the note above before the CAS below; pairs
			 * with the acquire load of tat in shl__bucket_refund. */
			shl__release_fence();
		}
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

/* What is left of a take by one rule: mark - ledger - max(now, from), or
 * 0 when `from` is scribbled (over 2^62 ns ahead). */
static inline int64_t left_past(uint64_t end, uint64_t n0, uint64_t from)
{
	uint64_t n = from > n0 ? from : n0;
	return n - n0 > (1ULL << 62) ? 0 : (int64_t)(end - n); /* modular, as a signed difference */
}

/*
 * Give back up to `ns` of a take whose ticket holds `mark` (see the top):
 * at most what is left of it, full_at - (gives since the take) - now', by
 * one 16-byte CAS of (tat, ledger), where now' = max(now, the pool's
 * reservation horizon); or, with `sl` (the ITPM bucket), what the slack
 * of the takes after it allows, if that is more.  Returns what was given.
 */
uint64_t shl__bucket_refund(struct shl_bkt *b, int64_t now, uint64_t ns, uint64_t mark,
			    _Atomic uint64_t *horizon, struct shl_slack *sl)
{
	if (ns == 0)
		return 0;
#if SHL_HAVE_CAS16
	/* SHL_NOW_FRESH: read the clock inside the loop, after the pair, the
	 * horizon and the slots, right before each cmpxchg16b (see the limit
	 * above; the slack rule needs the clock read after the slots). */
	const int fresh = now == SHL_NOW_FRESH;
	uint64_t n0 = now < 0 ? 0 : (uint64_t)now;
	/* acquire: a first guess, which the cmpxchg16b validates (on failure
	 * it reloads the pair into t, r, as a full barrier); acquire so that
	 * the horizon and slot reads below see the raise and the note of
	 * every take whose CAS wrote the tat read here (pairs with the
	 * release fences of admit.c and shl__bucket_take_at). */
	uint64_t t = atomic_load_explicit(&b->tat, memory_order_acquire);
	uint64_t r = atomic_load_explicit(&b->refunded, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		/* relaxed: ordered after the pair by the acquire load above or
		 * by the failed cmpxchg16b's barrier. */
		uint64_t hz = atomic_load_explicit(horizon, memory_order_relaxed);
		uint64_t far = 0, lo[SHL_SLACK_SLOTS], tg[SHL_SLACK_SLOTS];
		int slots = sl != NULL;
		if (slots) {
			/* relaxed: as the horizon. */
			far = atomic_load_explicit(&sl->far, memory_order_relaxed);
			slots = slack_read(sl, lo, tg) == 0;
		}
		if (fresh) {
			int64_t c = shl__now();
			n0 = c < 0 ? 0 : (uint64_t)c;
		}
		int64_t left = left_past(mark - r, n0, hz);
		if (slots) {
			int64_t ls = slack_left(mark - r, ns, r, n0, hz, far, lo, tg);
			if (ls > left)
				left = ls;
		}
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
	(void)sl;
	return 0;
#endif
}

/* An apply moved the word's regions (a rescale): every take made before
 * it is covered by far from now on (see the top). */
void shl__slack_cover(struct shl_slack *sl, _Atomic uint64_t *horizon, int64_t now)
{
	/* acquire: after the rescale's RMW of tat, so that the horizon read
	 * sees the raise of every reservation whose CAS that RMW followed
	 * (pairs with admit.c's release fence). */
	atomic_thread_fence(memory_order_acquire);
	uint64_t hz = atomic_load_explicit(horizon, memory_order_relaxed);
	uint64_t n = now < 0 ? 0 : (uint64_t)now;
	shl__horizon_raise(&sl->far, hz > n ? hz : n);
}

/* A reset: the words start over, and so do the slots. */
void shl__slack_clear(struct shl_slack *sl)
{
	/* relaxed: a reset racing admissions is an operator's choice
	 * (segment.c); tickets from before it get no refund. */
	atomic_store_explicit(&sl->far, 0, memory_order_relaxed);
	for (int i = 0; i < SHL_SLACK_SLOTS; i++) {
		atomic_store_explicit(&sl->slot[i].tag, 0, memory_order_relaxed);
		atomic_store_explicit(&sl->slot[i].low, 0, memory_order_relaxed);
	}
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
