/*
 * clock.c - the one clock every process shares, and calendar months.
 *
 * Buckets run on CLOCK_BOOTTIME: system-wide (every process reads the same
 * time base, so a deadline written by one is meaningful to all), never goes
 * backwards, and keeps counting across suspend - which is what the server's
 * buckets do too, so a host that wakes from suspend finds its buckets refilled
 * exactly as the server's are.  Two processes can still read it a few ns
 * apart: every comparison against a time another process wrote takes
 * max(stored, now), so a "late" reader never sees negative elapsed time.
 *
 * The spend cap follows the UTC calendar, so months come from the wall clock
 * (CLOCK_REALTIME).  The hot path does not read it: each handle caches the
 * current month and the CLOCK_BOOTTIME instant at which it ends, packed in
 * one 64-bit word (so concurrent refreshes can never leave one's month with
 * the other's end), re-derived at least every 10 s so that a wall-clock step
 * (NTP, an operator) is picked up within 10 s.
 *
 * Tests replace both clocks through the two hooks below.
 */
#include <time.h>

#include "internal.h"

shl_clock_fn shl__clock_boot;
shl_clock_fn shl__clock_unix;

int64_t shl_now(void)
{
	return shl__now();
}

int64_t shl__unix_ns(void)
{
	if (shl__clock_unix != NULL)
		return shl__clock_unix();
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint32_t shl__month_of(int64_t unix_ns, int64_t *next_month_unix_s)
{
	time_t s = (time_t)(unix_ns / 1000000000LL);
	if (unix_ns < 0)
		s = 0;
	struct tm tm;
	gmtime_r(&s, &tm);
	int64_t y = (int64_t)tm.tm_year + 1900, mon = tm.tm_mon; /* 0..11 */
	if (next_month_unix_s != NULL) {
		struct tm nx = {0};
		nx.tm_year = (int)(mon == 11 ? y + 1 - 1900 : y - 1900);
		nx.tm_mon = (int)(mon == 11 ? 0 : mon + 1);
		nx.tm_mday = 1;
		*next_month_unix_s = (int64_t)timegm(&nx);
	}
	int64_t m = (y - 1970) * 12 + mon;
	return m < 0 ? 0 : (uint32_t)m;
}

#define SHL_MONTH_RECHECK_NS 10000000000LL

uint32_t shl__month_slow(struct shl *h, int64_t now)
{
	int64_t unix_ns = shl__unix_ns(), next_s;
	uint32_t m = shl__month_of(unix_ns, &next_s);
	int64_t left = next_s * 1000000000LL - unix_ns;
	if (left > SHL_MONTH_RECHECK_NS || left < 0)
		left = SHL_MONTH_RECHECK_NS;
	m &= (uint32_t)SHL_MONTH_MASK; /* what the cache can hold, so both paths agree */
	/* The end is rounded down (the cache may expire up to 65 us early,
	 * never late); a negative or tiny one caches nothing. */
	int64_t end = now > INT64_MAX - left ? INT64_MAX : now + left;
	uint64_t w = end > 0 ? (((uint64_t)end & ~SHL_MONTH_MASK) | m) : 0;
	/* relaxed: one word holds the month and its end, so a reader sees a
	 * pair written together, never one refresh's month with another's
	 * end; nothing else is published through it. */
	atomic_store_explicit(&h->month_end_boot, w, memory_order_relaxed);
	return m;
}
