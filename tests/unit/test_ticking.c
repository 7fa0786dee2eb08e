/*
 * test_ticking.c - admission on a clock that moves between any two
 * readings, as the real one does: a request that can go now is admitted
 * whatever its deadline, 0 included (shl_reserve once computed the release
 * from a fresh reading but the deadline from the first one, so every
 * reservation with max_wait 0 came back -ETIMEDOUT with room to spare).
 */
#include "testutil.h"

static int64_t ticking(void)
{
	return tu_boot += 1000; /* 1 us per reading */
}

static void test_zero_wait_on_a_moving_clock(void)
{
	tu_fake_clock(1);
	shl__clock_boot = ticking;
	tu_boot = 1000000000000LL;
	tu_unix = 1764547200000000000LL;
	shl_config *c = tu_pool_cfg(600, 60000, 6000, 10, 10000, 1000, NULL, NULL);
	const char *name = tu_name();
	shl_t *h;
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, &h, NULL), 0);
	shl_config_free(c);
	int m = shl_lookup(h, "m1");
	shl_cost cost = {.input_tokens = 10, .max_tokens = 10};
	shl_ticket t;
	shl_refusal why;
	for (int i = 0; i < 5; i++) {
		CU_ASSERT_EQUAL(shl_reserve(h, m, &cost, 0, &t, &why), 0);
		CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);
		CU_ASSERT_EQUAL(shl_acquire(h, m, &cost, 0, &t, &why), 0);
		CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);
		CU_ASSERT_EQUAL(shl_reserve(h, m, &cost, 1, &t, &why), 0);
		CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);
	}
	shl_detach(h);
	shl_unlink(name);
	tu_fake_clock(0);
}

void suite_ticking(void)
{
	CU_pSuite s = CU_add_suite("ticking", NULL, NULL);
	TU_ADD(s, test_zero_wait_on_a_moving_clock);
}
