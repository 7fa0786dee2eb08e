/*
 * test_spend.c - the month-tagged spend word: cap, overflow, rollover.
 */
#include <sys/mman.h>
#include <sys/wait.h>

#include "testutil.h"

static struct shl_spend_line sp;

static void reset(uint32_t month)
{
	memset(&sp, 0, sizeof(sp));
	atomic_store(&sp.spend, (uint64_t)(month & 127) << SHL_SPEND_BITS);
}

static void test_cap(void)
{
	reset(600);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 600, 70, 100, NULL), 0);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 600, 30, 100, NULL), 0); /* exactly the cap */
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 600, 1, 100, NULL), -EDQUOT);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 600), 100);
	shl__spend_adjust(&sp, 600, 600, -40); /* settle below the reservation */
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 600), 60);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 600, 40, 100, NULL), 0);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 600, 0, -1, NULL), 0); /* no cap */
	/* A refund larger than the month's total floors at 0. */
	shl__spend_adjust(&sp, 600, 600, -1000);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 600), 0);
}

static void test_units_bounds(void)
{
	reset(1);
	/* 100 million USD fits in a month; the word's maximum is exact. */
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 1, 100000000LL * SHL_UNITS_PER_USD, -1, NULL), 0);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 1), 100000000LL * SHL_UNITS_PER_USD);
	reset(1);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 1, (int64_t)SHL_SPEND_MASK, -1, NULL), 0);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 1, 1, -1, NULL), -EOVERFLOW);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 1), (int64_t)SHL_SPEND_MASK);
	/* A charge past the top saturates, never wraps into the tag. */
	shl__spend_adjust(&sp, 1, 1, 5);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 1), (int64_t)SHL_SPEND_MASK);
	CU_ASSERT_EQUAL(atomic_load(&sp.spend) >> SHL_SPEND_BITS, 1);
}

static void test_rollover(void)
{
	reset(600);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 600, 90, 100, NULL), 0);
	/* New month: the first charge rolls the word over and counts alone. */
	uint32_t charged = 0;
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 601, 10, 100, &charged), 0);
	CU_ASSERT_EQUAL(charged, 601);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 601), 10);
	/* A late charge from a process still in the old month is not lost, and
	 * says it was counted in the new month, so its refund goes there. */
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 600, 5, 100, &charged), 0);
	CU_ASSERT_EQUAL(charged, 601);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 601), 15);
	shl__spend_adjust(&sp, 600, charged, -5);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 601), 10);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 600, 5, 100, &charged), 0);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 601), 15);
	/* Refunds of the closed month are dropped; extra charges are kept. */
	shl__spend_adjust(&sp, 601, 600, -50);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 601), 15);
	shl__spend_adjust(&sp, 601, 600, 7);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 601), 22);
	/* Reading in a month nobody has charged yet: zero. */
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 602), 0);
	/* A year idle, and 126 months idle, still roll over (only exactly 127 months
	 * idle, the tag period minus one, would read as "next month"). */
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 613, 1, 100, NULL), 0);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 613), 1);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 613 + 126, 3, 100, NULL), 0);
	CU_ASSERT_EQUAL(shl__spend_read(&sp, 613 + 126), 3);
}

static void test_exhausted(void)
{
	reset(42);
	atomic_store(&sp.exhausted, 43); /* month 42 + 1 */
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 42, 1, -1, NULL), -EDQUOT);
	CU_ASSERT_EQUAL(shl__spend_reserve(&sp, 43, 1, -1, NULL), 0); /* next month: open again */
}

/* Two processes race the rollover at the boundary: the new month's total
 * must be exactly the sum of the new month's charges. */
static void test_rollover_race(void)
{
	struct shl_spend_line *shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE,
					     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CU_ASSERT_FATAL(shared != MAP_FAILED);
	memset(shared, 0, sizeof(*shared));
	atomic_store(&shared->spend, (uint64_t)(10u & 127) << SHL_SPEND_BITS);
	const int P = 4, N = 20000;
	for (int p = 0; p < P; p++) {
		if (fork() == 0) {
			/* Each process charges 1 unit N times in month 10, then
			 * N times in month 11 (units 2 each). */
			for (int i = 0; i < N; i++)
				shl__spend_reserve(shared, 10, 1, -1, NULL);
			for (int i = 0; i < N; i++)
				shl__spend_reserve(shared, 11, 2, -1, NULL);
			_exit(0);
		}
	}
	for (int p = 0; p < P; p++)
		wait(NULL);
	/* Every month-11 charge counted; month-10 charges that landed after a
	 * faster process rolled over count in month 11 too (never lost). */
	int64_t got = shl__spend_read(shared, 11);
	CU_ASSERT(got >= 2LL * P * N);
	CU_ASSERT(got <= 2LL * P * N + (int64_t)P * N);
	munmap(shared, sizeof(*shared));
}

/*
 * Month rollover on an injected clock at the boundaries a calendar gets
 * wrong most easily: December to January (the year changes too) and, in a
 * leap year, February 28 to 29 (the same month) to March 1.  Both clocks
 * move together, as real ones do, so the handle's month cache expires by
 * itself.  Cap 0.01 USD = 10,000,000 units; a request of 1000 input tokens
 * at $3 / MTok reserves 3,000,000: three fit a month, the fourth does not.
 */
#define S 1000000000LL

static shl_t *sh_h;

static void advance(int64_t ns)
{
	tu_unix += ns;
	tu_boot += ns;
}

/* The month the stats say, as year * 100 + month, and when it resets. */
static int stat_month(int64_t *resets)
{
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(sh_h, &st), 0);
	*resets = st.month_resets_unix;
	return st.month_year * 100 + st.month;
}

/* Fill the month: three admissions, then the cap refuses. */
static void fill_month(int m, shl_ticket t[3])
{
	shl_cost c = {.input_tokens = 1000};
	shl_ticket x;
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(shl_try(sh_h, m, &c, &t[i], NULL), 0);
	CU_ASSERT_EQUAL(shl_try(sh_h, m, &c, &x, NULL), -EDQUOT);
}

static void test_rollover_year_and_leap_day(void)
{
	/* The month index and the next month's start, directly. */
	int64_t next;
	CU_ASSERT_EQUAL(shl__month_of(1798761600LL * S - 1, &next), (2026 - 1970) * 12 + 11);
	CU_ASSERT_EQUAL(next, 1798761600LL); /* 2027-01-01 */
	CU_ASSERT_EQUAL(shl__month_of(1798761600LL * S, &next), (2027 - 1970) * 12 + 0);
	CU_ASSERT_EQUAL(next, 1801440000LL); /* 2027-02-01 */
	/* 2027 is not a leap year: Feb 28 is followed by March 1. */
	CU_ASSERT_EQUAL(shl__month_of(1803859200LL * S - 1, &next), (2027 - 1970) * 12 + 1);
	CU_ASSERT_EQUAL(next, 1803859200LL); /* 2027-03-01 */
	/* 2028 is: Feb 29 is still February, March starts a day later. */
	CU_ASSERT_EQUAL(shl__month_of(1835395200LL * S, &next), (2028 - 1970) * 12 + 1);
	CU_ASSERT_EQUAL(next, 1835481600LL); /* 2028-03-01 */
	CU_ASSERT_EQUAL(shl__month_of(1835481600LL * S, &next), (2028 - 1970) * 12 + 2);
	CU_ASSERT_EQUAL(next, 1838160000LL); /* 2028-04-01 */

	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	tu_boot = 5000 * S;
	tu_unix = 1798761600LL * S - 5 * S; /* 2026-12-31T23:59:55Z */
	tu_fake_clock(1);
	shl_config *cfg = tu_pool_cfg(6000, 600000, 600000, 100, 100000, 100000, NULL, "0.01");
	CU_ASSERT_EQUAL_FATAL(shl_create(name, cfg, 0, &sh_h, NULL), 0);
	shl_config_free(cfg);
	int m = shl_lookup(sh_h, "m");
	shl_cost c = {.input_tokens = 1000};
	shl_ticket dec[3], t, x;
	int64_t resets;

	/* December 2026 fills up. */
	fill_month(m, dec);
	CU_ASSERT_EQUAL(stat_month(&resets), 202612);
	CU_ASSERT_EQUAL(resets, 1798761600LL);
	/* The last nanosecond of the year is still December: refused. */
	advance(5 * S - 1);
	CU_ASSERT_EQUAL(shl_try(sh_h, m, &c, &x, NULL), -EDQUOT);
	CU_ASSERT_EQUAL(stat_month(&resets), 202612);
	/* 2027-01-01T00:00:00Z: a new month in a new year, counted alone. */
	advance(1);
	CU_ASSERT_EQUAL(shl_try(sh_h, m, &c, &t, NULL), 0);
	CU_ASSERT_EQUAL(stat_month(&resets), 202701);
	CU_ASSERT_EQUAL(resets, 1801440000LL);
	shl_stats st;
	shl_stats_get(sh_h, &st);
	CU_ASSERT_EQUAL(st.spend_month, 3000000);
	/* A December ticket settling in January: its refund is dropped (the
	 * month closed), so January's spend does not move. */
	shl_usage u = {.input_tokens = 10};
	CU_ASSERT_EQUAL(shl_settle(sh_h, &dec[0], &u), 0);
	shl_stats_get(sh_h, &st);
	CU_ASSERT_EQUAL(st.spend_month, 3000000);
	CU_ASSERT_EQUAL(shl_cancel(sh_h, &t), 0);

	/* 2028-02-28T23:59:59Z, leap year: February fills up. */
	advance(1835395200LL * S - S - tu_unix);
	shl_ticket feb[3];
	fill_month(m, feb);
	CU_ASSERT_EQUAL(stat_month(&resets), 202802);
	CU_ASSERT_EQUAL(resets, 1835481600LL); /* March 1, not February 29 */
	/* Midnight into February 29: the same month, still refused. */
	advance(S);
	CU_ASSERT_EQUAL(shl_try(sh_h, m, &c, &x, NULL), -EDQUOT);
	CU_ASSERT_EQUAL(stat_month(&resets), 202802);
	/* The last nanosecond of February 29: still February. */
	advance(86400 * S - 1);
	CU_ASSERT_EQUAL(shl_try(sh_h, m, &c, &x, NULL), -EDQUOT);
	CU_ASSERT_EQUAL(stat_month(&resets), 202802);
	/* 2028-03-01T00:00:00Z: March, counted alone. */
	advance(1);
	CU_ASSERT_EQUAL(shl_try(sh_h, m, &c, &t, NULL), 0);
	CU_ASSERT_EQUAL(stat_month(&resets), 202803);
	CU_ASSERT_EQUAL(resets, 1838160000LL);
	shl_stats_get(sh_h, &st);
	CU_ASSERT_EQUAL(st.spend_month, 3000000);

	shl_detach(sh_h);
	shl_unlink(name);
	sh_h = NULL;
	tu_fake_clock(0);
}

void suite_spend(void)
{
	CU_pSuite s = CU_add_suite("spend", NULL, NULL);
	TU_ADD(s, test_cap);
	TU_ADD(s, test_units_bounds);
	TU_ADD(s, test_rollover);
	TU_ADD(s, test_rollover_year_and_leap_day);
	TU_ADD(s, test_exhausted);
	TU_ADD(s, test_rollover_race);
}
