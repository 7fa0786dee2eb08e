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

void suite_spend(void)
{
	CU_pSuite s = CU_add_suite("spend", NULL, NULL);
	TU_ADD(s, test_cap);
	TU_ADD(s, test_units_bounds);
	TU_ADD(s, test_rollover);
	TU_ADD(s, test_exhausted);
	TU_ADD(s, test_rollover_race);
}
