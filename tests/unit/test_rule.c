/*
 * test_rule.c - the benchmark's baselines run the library's admission rule:
 * bench_rule_take (bench/rule.c, plain arithmetic for the lock-based
 * baselines) makes the same decision and writes the same word as
 * shl__bucket_take on random inputs, so the baselines cannot drift into a
 * cheaper rule.  Here rather than in the benchmark, which sees only the
 * public header (issue 13: nothing outside the library includes internal.h).
 */
#include "testutil.h"

#include "bench.h"

void suite_rule(void);

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void test_bench_rule_is_the_library_s(void)
{
	int bad = 0;
	for (int i = 0; i < 200000 && bad == 0; i++) {
		uint64_t tat = rnd() >> (rnd() % 64);
		int64_t now = (int64_t)(rnd() >> (1 + rnd() % 63));
		uint64_t cost = rnd() >> (rnd() % 64), tol = rnd() >> (rnd() % 64);
		if (i % 4 == 0)
			tat = (uint64_t)now + (rnd() % 1000); /* near the boundary */
		_Atomic uint64_t w = tat;
		int64_t a = shl__bucket_take(&w, now, cost, tol);
		uint64_t next = tat;
		int64_t b = bench_rule_take(tat, now, cost, tol, &next);
		if (a != b || (a == 0 && next != atomic_load(&w)))
			bad++;
	}
	CU_ASSERT_EQUAL(bad, 0);
}

void suite_rule(void)
{
	CU_pSuite s = CU_add_suite("rule", NULL, NULL);
	TU_ADD(s, test_bench_rule_is_the_library_s);
}
