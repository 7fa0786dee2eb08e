/*
 * test_bucket.c - the GCRA word and the last-minute window, on a fake clock.
 */
#include "testutil.h"

#define S 1000000000LL

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
	_Atomic uint64_t tat = 0;
	uint64_t iv = 10, tol = 100;
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, 1000, 100, tol), 0);
	shl__bucket_give(&tat, 50);
	CU_ASSERT_EQUAL(atomic_load(&tat), 1050);
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, 1000, 50, tol), 0);
	/* A charge may go into debt; admissions then wait it out. */
	shl__bucket_charge(&tat, 1000, 200);
	CU_ASSERT_EQUAL(atomic_load(&tat), 1300);
	CU_ASSERT_EQUAL(shl__bucket_take(&tat, 1000, 0, tol), 200);
	/* A charge to a full bucket starts from now, not from the past. */
	_Atomic uint64_t t2 = 5;
	shl__bucket_charge(&t2, 1000, 30);
	CU_ASSERT_EQUAL(atomic_load(&t2), 1030);
	/* Giving back more than was ever taken floors at 0, no wrap. */
	shl__bucket_give(&t2, 5000);
	CU_ASSERT_EQUAL(atomic_load(&t2), 0);
	/* Raise only raises. */
	shl__bucket_raise(&t2, 700);
	CU_ASSERT_EQUAL(atomic_load(&t2), 700);
	shl__bucket_raise(&t2, 600);
	CU_ASSERT_EQUAL(atomic_load(&t2), 700);
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

void suite_bucket(void)
{
	CU_pSuite s = CU_add_suite("bucket", NULL, NULL);
	TU_ADD(s, test_take_exact);
	TU_ADD(s, test_zero_and_full_cost);
	TU_ADD(s, test_give_charge_raise);
	TU_ADD(s, test_hostile_words);
	TU_ADD(s, test_window);
}
