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

/* Proleptic Gregorian calendar arithmetic on days since 1970-01-01 (the
 * well-known era-based algorithms), instead of gmtime_r and timegm: those
 * read /etc/localtime on their first call (tzset), a file read that every
 * short-lived process under the shim paid for. */
static int64_t days_from_civil(int64_t y, unsigned m /* 1..12 */, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m /* 1..12 */)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

uint32_t shl__month_of(int64_t unix_ns, int64_t *next_month_unix_s)
{
	int64_t s = unix_ns < 0 ? 0 : unix_ns / 1000000000LL, y;
	unsigned mon; /* 1..12 */
	civil_from_days(s / 86400, &y, &mon);
	if (next_month_unix_s != NULL)
		*next_month_unix_s = 86400 * (mon == 12 ? days_from_civil(y + 1, 1, 1)
							: days_from_civil(y, mon + 1, 1));
	int64_t m = (y - 1970) * 12 + (int64_t)mon - 1;
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
