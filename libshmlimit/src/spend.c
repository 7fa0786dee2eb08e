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
		if (cap >= 0 && next > (uint64_t)cap)
			return -EDQUOT;
		/* relaxed/relaxed: see the contract above. */
		if (atomic_compare_exchange_weak_explicit(&sp->spend, &old, tag | next,
							  memory_order_relaxed, memory_order_relaxed)) {
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
		/* relaxed/relaxed: see the contract above. */
		if (atomic_compare_exchange_weak_explicit(&sp->spend, &old, tag | next,
							  memory_order_relaxed, memory_order_relaxed))
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
/* Spend leases (none yet).                                            */
/* ------------------------------------------------------------------ */

void shl__pslot_adopt(struct shl *h, struct shl_pslot *s, int dead)
{
	(void)h;
	(void)s;
	(void)dead;
}

void shl__pslot_retire(struct shl *h, struct shl_pslot *s)
{
	(void)h;
	(void)s;
}
