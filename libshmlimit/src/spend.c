/*
 * spend.c - the one monthly spend counter shared by every pool.
 *
 * The counter is a single 64-bit word: the month it counts (mod 128) in the
 * top 7 bits and the units spent in the low 57 (1e-9 USD each: up to
 * 144 million USD a month).  Keeping the month inside the word makes the
 * rollover part of the same CAS as a charge:
 *
 *   - the first charge made in a new month finds an older tag and replaces
 *     the word with (new month, its own units): the rollover happens exactly
 *     once (one CAS can win), and no charge of the new month is lost to it,
 *     because every charge of the new month lands in a word already tagged
 *     with it, or is the one that tags it;
 *   - a charge from a process whose clock still says the old month, landing
 *     after the rollover, is counted in the new month (never lost), and the
 *     reservation reports that month so that its refund finds it;
 *   - a refund (settle below the reservation, cancel) whose month has already
 *     rolled over is dropped: it belonged to a month that is closed.
 *
 * Admission reserves the worst-case cost and checks the cap in the same CAS,
 * so concurrent admissions can never together pass the cap.
 *
 * Concurrency contract: reserve, adjust and read may all run at once in any
 * process.  The word publishes nothing else, so it is accessed relaxed; the
 * exhaustion mark is a separate word written only from server feedback.
 */
#include <errno.h>
#include <sched.h>
#include <time.h>

#include "internal.h"

#define SHL_CAS_TRIES 100000

/*
 * Is the word's month tag `m`, a newer month (the word was rolled over by a
 * process whose clock is a moment ahead of ours), or an older one?  Only the
 * month right after ours counts as newer: processes disagree about the month
 * for milliseconds at a boundary, never for a month, and anything else is a
 * month that has ended (however long the segment sat idle).
 */
enum { SAME, OLDER, NEWER };
static int reserve_guarded(struct shl_spend_line *sp, uint32_t month, int64_t units, int64_t cap,
			   uint64_t guard, uint32_t *charged);
#define SHL_MONTH_TAG_MASK 127u
static inline int rel(uint64_t w, uint32_t m)
{
	unsigned d = (unsigned)((m - (uint32_t)(w >> SHL_SPEND_BITS)) & SHL_MONTH_TAG_MASK);
	return d == 0 ? SAME : (d == SHL_MONTH_TAG_MASK ? NEWER : OLDER);
}

/*
 * Reserve `units` in `month` (the caller's view), checking the cap.  On
 * success `*charged` (if not NULL) is the month the units were actually
 * counted in: `month`, or the month after it when the word had already been
 * rolled over by a process whose clock is a moment ahead.  A later refund
 * must name that month, or it would be taken for a refund to a closed month
 * and dropped.
 */
int shl__spend_reserve(struct shl_spend_line *sp, uint32_t month, int64_t units, int64_t cap,
		       uint32_t *charged)
{
	return reserve_guarded(sp, month, units, cap, 0, charged);
}

/* The same, but succeeding only if at least `guard` units stay free
 * under the cap after it (a lease must leave room for exact callers). */
static int reserve_guarded(struct shl_spend_line *sp, uint32_t month, int64_t units, int64_t cap,
			   uint64_t guard, uint32_t *charged)
{
	/* relaxed: the exhaustion mark is advisory server feedback; it pairs
	 * with nothing. */
	if (atomic_load_explicit(&sp->exhausted, memory_order_relaxed) == month + 1)
		return -EDQUOT;
	uint64_t u = units < 0 ? 0 : (uint64_t)units;
	uint64_t old = atomic_load_explicit(&sp->spend, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		uint64_t tag, cur;
		int r = rel(old, month);
		if (r == OLDER) {
			tag = (uint64_t)(month & SHL_MONTH_TAG_MASK) << SHL_SPEND_BITS;
			cur = 0;
		} else {
			tag = old & ~SHL_SPEND_MASK;
			cur = old & SHL_SPEND_MASK;
		}
		uint64_t next = cur + u; /* both < 2^60: no overflow */
		if (next > SHL_SPEND_MASK)
			return -EOVERFLOW;
		if (cap >= 0 && (next > (uint64_t)cap || (uint64_t)cap - next < guard))
			return -EDQUOT;
		/* release on success: a lease move's odd lease_seq is visible
		 * before this (pairs with the acquire load of the word in
		 * shl__spend_month); otherwise see the contract above. */
		if (atomic_compare_exchange_weak_explicit(&sp->spend, &old, tag | next,
							  memory_order_release, memory_order_relaxed)) {
			if (charged)
				*charged = r == NEWER ? month + 1 : month;
			return 0;
		}
	}
	return -EAGAIN;
}

void shl__spend_adjust(struct shl_spend_line *sp, uint32_t month, uint32_t admitted_month,
		       int64_t delta)
{
	if (delta == 0)
		return;
	uint64_t old = atomic_load_explicit(&sp->spend, memory_order_relaxed);
	for (int i = 0; i < SHL_CAS_TRIES; i++) {
		uint64_t tag, cur;
		if (rel(old, admitted_month) == SAME) {
			/* The admission's month is still the counted one. */
			tag = old & ~SHL_SPEND_MASK;
			cur = old & SHL_SPEND_MASK;
		} else if (delta < 0) {
			return; /* a refund to a closed month */
		} else if (rel(old, month) == OLDER) {
			tag = (uint64_t)(month & SHL_MONTH_TAG_MASK) << SHL_SPEND_BITS;
			cur = 0;
		} else {
			tag = old & ~SHL_SPEND_MASK;
			cur = old & SHL_SPEND_MASK;
		}
		uint64_t next;
		if (delta < 0) {
			uint64_t d = (uint64_t)(-(delta + 1)) + 1;
			next = cur > d ? cur - d : 0;
		} else {
			next = cur + (uint64_t)delta;
			if (next > SHL_SPEND_MASK || next < cur)
				next = SHL_SPEND_MASK;
		}
		/* release on success: as in reserve_guarded. */
		if (atomic_compare_exchange_weak_explicit(&sp->spend, &old, tag | next,
							  memory_order_release, memory_order_relaxed))
			return;
	}
}

int64_t shl__spend_read(const struct shl_spend_line *sp, uint32_t month)
{
	/* relaxed: one whole word; see the contract above. */
	uint64_t w = atomic_load_explicit(&((struct shl_spend_line *)sp)->spend,
					  memory_order_relaxed);
	if (rel(w, month) == OLDER)
		return 0;
	return (int64_t)(w & SHL_SPEND_MASK);
}

/* ------------------------------------------------------------------ */
/* Spend leases.                                                       */
/* ------------------------------------------------------------------ */

/*
 * A sloppy counter over the spend word.  A thread's process slot (pslot.c)
 * takes spend budget from the word in chunks, by the same capped CAS as a
 * reservation, and reserves against its chunk locally: a load and a store
 * on its own line.  The word therefore counts what was spent plus what
 * sits unused in leases, and never passes the cap, so the reservations
 * never pass it either.  Readers subtract the leases (shl__spend_month).
 *
 *   - chunk = cap / 16384 (2^34 units, about 17 USD, with no cap);
 *   - a lease is taken only if at least 2 x chunk x N units stay free
 *     under the cap after it, N the slots in use (at least 64; every slot
 *     that can hold a lease is below that mark, pslot.c); nearer the cap
 *     every reservation is the exact per-call CAS.  So leases never
 *     strand more than that, and refusals near the cap can start at most
 *     that much early (0.8% of the cap with up to 64 slots in use, 6.25%
 *     with all 512) while other live threads hold leases;
 *   - refunds (settle below the reservation, cancel) go into the settling
 *     thread's lease; above 2 x chunk, the excess goes back to the word;
 *   - a lease belongs to one month (its tag) and one configuration
 *     generation: when either changes, the rest goes back to the word (to
 *     its month, dropped if that month has closed, or if a spend reset
 *     already erased it); a lease is never used once the word counts a
 *     newer month;
 *   - shl_detach returns the handle's leases; a slot taken over from a
 *     dead process returns the dead lease.  A process killed between
 *     taking a chunk from the word and recording it in its slot loses
 *     that chunk: it stays counted as spent for the month (conservative).
 */
#define SHL_LEASE_NOCAP (1ULL << 34)

static inline uint64_t lease_chunk(int64_t cap)
{
	return cap == INT64_MAX || cap < 0 ? SHL_LEASE_NOCAP : (uint64_t)cap >> 14;
}

/* The full month index a 7-bit tag names, at or before `month`. */
static inline uint32_t tag_month(uint64_t w, uint32_t month)
{
	return month - ((month - (uint32_t)(w >> SHL_SPEND_BITS)) & SHL_MONTH_TAG_MASK);
}

/*
 * The lease sequence.  Moving units between the word and a lease takes two
 * writes (the word's CAS, the lease's store), and a reader that saw one
 * but not the other would be off by a whole chunk.  So the slot's owner
 * makes lease_seq odd around every such move, seqlock style, and
 * shl__spend_month retries a read that overlapped one.  A dead owner can
 * leave it odd; whoever claims the slot next closes it.  Only the owner
 * (or that claimer) writes it: plain stores.
 */
static inline void lease_open(struct shl_pslot *ps)
{
	uint64_t s = atomic_load_explicit(&ps->lease_seq, memory_order_relaxed);
	/* relaxed: every write of the move that follows (the word's CAS,
	 * the lease's store) is a release, so a reader that sees one of them
	 * with an acquire load sees this odd value too. */
	atomic_store_explicit(&ps->lease_seq, s | 1, memory_order_relaxed);
}

static inline void lease_close(struct shl_pslot *ps)
{
	uint64_t s = atomic_load_explicit(&ps->lease_seq, memory_order_relaxed);
	/* release: the writes above are visible before the even value; pairs
	 * with the acquire load in shl__spend_month. */
	atomic_store_explicit(&ps->lease_seq, (s | 1) + 1, memory_order_release);
}

/* Give a slot's lease back to the word (or drop it) and clear it.  Only
 * the slot's owner (or the claimer of a dead owner's slot) calls this,
 * between lease_open and lease_close. */
static void lease_return(struct shl *h, const struct shl_local *l, struct shl_pslot *ps,
			 uint32_t month)
{
	uint64_t lw = atomic_load_explicit(&ps->lease, memory_order_relaxed);
	uint64_t rem = lw & SHL_SPEND_MASK;
	if (rem == 0)
		return;
	uint64_t lg = atomic_load_explicit(&ps->lease_gen, memory_order_relaxed);
	/* Clear first: a reader then sees the units counted as spent for a
	 * moment, never subtracted twice. */
	/* release: see lease_open. */
	atomic_store_explicit(&ps->lease, 0, memory_order_release);
	if (l != NULL && lg < l->slot.spend_epoch)
		return; /* a spend reset erased it with the rest of the word */
	shl__spend_adjust(&h->seg->spendl, month, tag_month(lw, month), -(int64_t)rem);
}

static int lease_refill(struct shl *h, const struct shl_local *l, struct shl_pslot *ps,
			uint32_t month, int64_t units, uint32_t *charged)
{
	struct shl_spend_line *sp = &h->seg->spendl;
	uint64_t lw = atomic_load_explicit(&ps->lease, memory_order_relaxed);
	uint64_t w = atomic_load_explicit(&sp->spend, memory_order_relaxed);
	if ((lw & SHL_SPEND_MASK) != 0 &&
	    ((uint32_t)(lw >> SHL_SPEND_BITS) != (month & SHL_MONTH_TAG_MASK) ||
	     atomic_load_explicit(&ps->lease_gen, memory_order_relaxed) != l->gen ||
	     rel(w, month) != SAME)) {
		lease_return(h, l, ps, month);
		lw = 0;
	}
	uint64_t chunk = lease_chunk(l->spend_cap);
	/* Multi-host: the cap is this host's leased budget (cluster.c). */
	int64_t cap = l->cluster ? shl__cluster_cap(h, l, month) : l->spend_cap;
	if (chunk > 0 && units >= 0) {
		unsigned used = shl__pslots_used(h->seg);
		uint64_t guard = 2 * chunk * (used > SHL_PSLOTS_FIRST ? used : SHL_PSLOTS_FIRST);
		uint32_t ch = month;
		int r = reserve_guarded(sp, month, units + (int64_t)chunk, cap,
					cap == INT64_MAX ? 0 : guard, &ch);
		if (r == 0) {
			uint64_t rem = ch == month ? (lw & SHL_SPEND_MASK) : 0;
			if (ch != month)
				lease_return(h, l, ps, month); /* a month behind the word */
			atomic_store_explicit(&ps->lease_gen, l->gen, memory_order_relaxed);
			/* release: see lease_open; also publishes lease_gen. */
			atomic_store_explicit(&ps->lease,
					      (uint64_t)(ch & SHL_MONTH_TAG_MASK) << SHL_SPEND_BITS |
						      (rem + chunk),
					      memory_order_release);
			*charged = ch;
			return 0;
		}
		if (r != -EDQUOT)
			return r;
	}
	return shl__spend_reserve(sp, month, units, cap, charged);
}

int shl__lease_reserve(struct shl *h, const struct shl_local *l, struct shl_pslot *ps,
		       uint32_t month, int64_t units, uint32_t *charged)
{
	if (ps == NULL)
		return shl__spend_reserve(&h->seg->spendl, month, units,
					  l->cluster ? shl__cluster_cap(h, l, month) : l->spend_cap,
					  charged);
	lease_open(ps);
	int r = lease_refill(h, l, ps, month, units, charged);
	lease_close(ps);
	return r;
}

void shl__lease_adjust(struct shl *h, const struct shl_local *l, struct shl_pslot *ps,
		       uint32_t month, uint32_t admitted_month, int64_t delta)
{
	struct shl_spend_line *sp = &h->seg->spendl;
	if (delta == 0)
		return;
	if (ps != NULL && admitted_month == month) {
		uint64_t lw = atomic_load_explicit(&ps->lease, memory_order_relaxed);
		uint64_t w = atomic_load_explicit(&sp->spend, memory_order_relaxed);
		uint64_t rem = lw & SHL_SPEND_MASK, chunk = lease_chunk(l->spend_cap);
		int ok = chunk > 0 && rel(w, month) == SAME;
		if (ok && rem == 0 && delta < 0) {
			/* No lease: a refund starts one in this month. */
			lw = (uint64_t)(month & SHL_MONTH_TAG_MASK) << SHL_SPEND_BITS;
			atomic_store_explicit(&ps->lease_gen, l->gen, memory_order_relaxed);
		} else if (ok) {
			ok = rem != 0 &&
			     (uint32_t)(lw >> SHL_SPEND_BITS) == (month & SHL_MONTH_TAG_MASK) &&
			     atomic_load_explicit(&ps->lease_gen, memory_order_relaxed) == l->gen;
		}
		if (ok) {
			if (delta > 0 && rem >= (uint64_t)delta) {
				atomic_store_explicit(&ps->lease, lw - (uint64_t)delta,
						      memory_order_relaxed);
				return;
			}
			if (delta < 0) {
				uint64_t back = (uint64_t)(-(delta + 1)) + 1;
				if (rem + back <= 2 * chunk) {
					/* release: publishes a lease_gen stored
					 * above (pairs with shl__spend_month). */
					atomic_store_explicit(&ps->lease, lw + back,
							      memory_order_release);
					return;
				}
				/* Keep one chunk; the rest goes back to the word. */
				lease_open(ps);
				/* release: see lease_open. */
				atomic_store_explicit(&ps->lease, (lw & ~SHL_SPEND_MASK) | chunk,
						      memory_order_release);
				shl__spend_adjust(sp, month, month, -(int64_t)(rem + back - chunk));
				lease_close(ps);
				return;
			}
		}
	}
	shl__spend_adjust(sp, month, admitted_month, delta);
}

/*
 * The month's spend: the word less the unused leases counted in it.  A
 * read that overlapped a move between the word and a lease (an odd or
 * changed lease_seq) is retried, yielding to let a preempted owner finish
 * its two writes, and after SHL_SEQ_YIELDS tries sleeping 1 ms a try (a
 * yield need not run the preempted owner: with more runnable writers than
 * cores, 64 yields were seen to run out under ASan, and 5 reads in 200,000
 * came back off by a chunk).  After SHL_SEQ_TRIES (at most about 64 ms of
 * sleep, only ever in a statistics read) the last read is returned: that
 * happens only if an owner died between its two writes and nobody has
 * claimed its slot since (the chunk then stays counted as spent, as the
 * lease contract says), or it stalled there that long.
 */
#define SHL_SEQ_YIELDS 64
#define SHL_SEQ_TRIES (SHL_SEQ_YIELDS + 64)
int64_t shl__spend_month(const struct shl_seg *seg, uint32_t month, uint64_t spend_epoch)
{
	struct shl_seg *sg = (struct shl_seg *)seg;
	uint64_t seq[SHL_PSLOTS];
	int64_t v = 0;
	for (int tries = 0; tries < SHL_SEQ_TRIES; tries++) {
		if (tries >= SHL_SEQ_YIELDS)
			nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
		else if (tries >= 2)
			sched_yield();
		int odd = 0;
		/* A slot claimed after this load holds no lease taken before
		 * the word is read below. */
		unsigned n = shl__pslots_used(sg);
		for (unsigned i = 0; i < n; i++) {
			/* acquire: pairs with the release store in lease_close. */
			seq[i] = atomic_load_explicit(&shl__pslot_at(sg, i)->lease_seq,
						      memory_order_acquire);
			odd |= (int)(seq[i] & 1);
		}
		/* acquire: pairs with the release CAS of a lease move; seeing
		 * one means the re-read below sees its odd lease_seq. */
		uint64_t w = atomic_load_explicit(&sg->spendl.spend, memory_order_acquire);
		uint64_t tag = w & ~SHL_SPEND_MASK, u = w & SHL_SPEND_MASK, leased = 0;
		for (unsigned i = 0; i < n; i++) {
			struct shl_pslot *ps = shl__pslot_at(sg, i);
			/* acquire: pairs with the release stores of the lease
			 * (and publishes its lease_gen), as for the word. */
			uint64_t lw = atomic_load_explicit(&ps->lease, memory_order_acquire);
			if ((lw & ~SHL_SPEND_MASK) != tag || (lw & SHL_SPEND_MASK) == 0)
				continue;
			if (atomic_load_explicit(&ps->lease_gen, memory_order_relaxed) < spend_epoch)
				continue;
			leased += lw & SHL_SPEND_MASK;
		}
		v = rel(w, month) == OLDER ? 0 : leased >= u ? 0 : (int64_t)(u - leased);
		/* relaxed: after the acquire loads above, which order them. */
		int same = !odd;
		for (unsigned i = 0; same && i < n; i++)
			same = atomic_load_explicit(&shl__pslot_at(sg, i)->lease_seq,
						    memory_order_relaxed) == seq[i];
		same = same && shl__pslots_used(sg) == n;
		if (same)
			break;
	}
	return v;
}

/* A slot's lease back to the word: when its handle lets the slot go, and
 * when a claimer takes it (a dead owner's lease: nobody can use it any
 * more; lease_open also closes a move the dead owner left open). */
void shl__pslot_lease_return(struct shl *h, struct shl_pslot *s)
{
	struct shl_local *l = shl__local(h);
	lease_open(s);
	lease_return(h, l, s, shl__month(h, shl__now()));
	lease_close(s);
}
