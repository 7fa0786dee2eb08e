/*
 * testutil.h - shared helpers for the CUnit suites: unique segment names,
 * an injectable clock, and the suite registry.
 */
#ifndef SHL_TESTUTIL_H
#define SHL_TESTUTIL_H

#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* A fresh segment name for this process. */
static inline const char *tu_name(void)
{
	static __thread char buf[64];
	static int n;
	snprintf(buf, sizeof(buf), "shltest-%d-%d", (int)getpid(), __atomic_add_fetch(&n, 1, __ATOMIC_RELAXED));
	return buf;
}

/* The fake clocks, driven by the tests. */
extern int64_t tu_boot, tu_unix;
int64_t tu_boot_fn(void);
int64_t tu_unix_fn(void);
void tu_fake_clock(int on);

/* Parse or die (the tests' own configs are known good). */
shl_config *tu_cfg(const char *json);
/* A one-pool config: limits and burst given. */
shl_config *tu_pool_cfg(unsigned rpm, unsigned itpm, unsigned otpm, unsigned brpm, unsigned bitpm,
			unsigned botpm, const char *extra_pool_keys, const char *cap);

#define TU_SUITE(fn) void fn(void)
TU_SUITE(suite_layout);
TU_SUITE(suite_config);
TU_SUITE(suite_bucket);
TU_SUITE(suite_spend);
TU_SUITE(suite_segment);
TU_SUITE(suite_admit);
TU_SUITE(suite_multiproc);
TU_SUITE(suite_threads);
TU_SUITE(suite_fault);
TU_SUITE(suite_review);
TU_SUITE(suite_pslot);
TU_SUITE(suite_lease);
TU_SUITE(suite_exchange);
TU_SUITE(suite_fair);
TU_SUITE(suite_issue13);
TU_SUITE(suite_mt);
TU_SUITE(suite_rule);
TU_SUITE(suite_ticking);
TU_SUITE(suite_cluster);
TU_SUITE(suite_account);

#define TU_ADD(s, t) CU_add_test(s, #t, t)

#endif
