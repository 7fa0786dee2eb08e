/*
 * test_threads.c - one handle shared by many threads while the
 * configuration is re-applied underneath them: the local config cache, the
 * model lookup table (rebuilt per generation under RCU) and the buckets
 * must all stay consistent.  Run it under ThreadSanitizer (make check-tsan).
 */
#include <pthread.h>
#include <time.h>

#include "testutil.h"

#define THREADS 4
#define ITERS 20000

static shl_t *th;
static _Atomic int stop;
static _Atomic uint64_t admitted, settled, errors;

static void *admitter(void *arg)
{
	const char *ids[] = {"claude-sonnet-4-5", "claude-opus-4-1-x", "claude-haiku-4-5-y",
			     "unknown-model"};
	for (int i = 0; i < ITERS; i++) {
		const char *id = ids[(i + (intptr_t)arg) % 4];
		int m = shl_lookup(th, id);
		if (m == -ESRCH) {
			if (strcmp(id, "unknown-model") != 0)
				atomic_fetch_add(&errors, 1);
			continue;
		}
		if (m < 0) {
			atomic_fetch_add(&errors, 1);
			continue;
		}
		shl_cost c = {.input_tokens = 1, .max_tokens = 1};
		shl_ticket t;
		int r = shl_try(th, m, &c, &t, NULL);
		if (r == 0) {
			atomic_fetch_add(&admitted, 1);
			/* Half settle below the estimate: a refund (the ledger's
			 * 16-byte CAS) racing the other threads' takes. */
			shl_usage u = {.input_tokens = (uint64_t)(i & 1), .output_tokens = 1};
			if (shl_settle(th, &t, &u) == 0)
				atomic_fetch_add(&settled, 1);
		} else if (r != -EAGAIN) {
			atomic_fetch_add(&errors, 1);
		}
	}
	return NULL;
}

static void *applier(void *arg)
{
	shl_config *a, *b;
	shl_config_preset(3, &a);
	shl_config_preset(4, &b);
	for (int i = 0; i < 50 && !atomic_load(&stop); i++)
		if (shl_apply(th, (i & 1) ? a : b, NULL) != 0)
			atomic_fetch_add(&errors, 1);
	shl_config_free(a);
	shl_config_free(b);
	return NULL;
}

static void test_threads_and_applies(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c;
	shl_config_preset(4, &c);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, &th, NULL), 0);
	pthread_t t[THREADS + 1];
	for (intptr_t i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, admitter, (void *)i);
	pthread_create(&t[THREADS], NULL, applier, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&stop, 1);
	pthread_join(t[THREADS], NULL);
	CU_ASSERT_EQUAL(atomic_load(&errors), 0);
	CU_ASSERT(atomic_load(&admitted) > 0);
	CU_ASSERT_EQUAL(atomic_load(&admitted), atomic_load(&settled));
	shl_stats st;
	shl_stats_get(th, &st);
	uint64_t adm = 0, set = 0;
	for (int p = 0; p < st.npools; p++) {
		adm += st.pools[p].admitted;
		set += st.pools[p].settled;
	}
	CU_ASSERT_EQUAL(adm, atomic_load(&admitted));
	CU_ASSERT_EQUAL(set, atomic_load(&settled));
	shl_detach(th);
	shl_unlink(name);
	shl_config_free(c);
}

/*
 * Threads in one pool's line: reservations (up to 5 ms ahead), half given
 * up at once, half slept to their release, started and settled above or
 * below the estimate (a charge, a refund by the ledger's 16-byte CAS,
 * both measured against the horizon the others keep raising).
 */
static shl_t *rh;
static _Atomic uint64_t r_admitted, r_cancelled, r_settled, r_errors;

static void *reserver(void *arg)
{
	int m = shl_lookup(rh, "m");
	for (int i = 0; i < 1000; i++) {
		shl_cost c = {.input_tokens = 10, .max_tokens = 1};
		shl_ticket t;
		int r = shl_reserve(rh, m, &c, 5000000, &t, NULL);
		if (r == -ETIMEDOUT)
			continue;
		if (r != 0) {
			atomic_fetch_add(&r_errors, 1);
			continue;
		}
		atomic_fetch_add(&r_admitted, 1);
		if ((i + (intptr_t)arg) % 2 == 0) {
			if (shl_cancel(rh, &t) == 0)
				atomic_fetch_add(&r_cancelled, 1);
			continue;
		}
		struct timespec ts = {.tv_sec = t.admitted_at / 1000000000LL,
				      .tv_nsec = t.admitted_at % 1000000000LL};
		while (clock_nanosleep(CLOCK_BOOTTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
		if (shl_start(rh, &t, NULL) != 0)
			atomic_fetch_add(&r_errors, 1);
		shl_usage u = {.input_tokens = (i & 2) ? 14 : 6, .output_tokens = 1};
		if (shl_settle(rh, &t, &u) == 0)
			atomic_fetch_add(&r_settled, 1);
	}
	return NULL;
}

static void test_threads_reserve(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	/* 100,000 requests a minute (0.6 ms each), burst 2: a line forms. */
	shl_config *c = tu_pool_cfg(100000, 60000000, 60000000, 2, 1000000, 1000000, NULL, NULL);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, &rh, NULL), 0);
	pthread_t t[THREADS];
	for (intptr_t i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, reserver, (void *)i);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	CU_ASSERT_EQUAL(atomic_load(&r_errors), 0);
	CU_ASSERT(atomic_load(&r_admitted) > 0);
	shl_stats st;
	shl_stats_get(rh, &st);
	CU_ASSERT_EQUAL(st.pools[0].admitted, atomic_load(&r_admitted));
	CU_ASSERT_EQUAL(st.pools[0].cancelled, atomic_load(&r_cancelled));
	CU_ASSERT_EQUAL(st.pools[0].settled, atomic_load(&r_settled));
	CU_ASSERT(st.pools[0].waited > 0);
	if (getenv("TU_VERBOSE"))
		printf("\n  reserve threads: %llu admitted (%llu waited), %llu cancelled, %llu settled\n",
		       (unsigned long long)st.pools[0].admitted, (unsigned long long)st.pools[0].waited,
		       (unsigned long long)st.pools[0].cancelled,
		       (unsigned long long)st.pools[0].settled);
	shl_detach(rh);
	shl_unlink(name);
	shl_config_free(c);
}

void suite_threads(void)
{
	CU_pSuite s = CU_add_suite("threads", NULL, NULL);
	TU_ADD(s, test_threads_and_applies);
	TU_ADD(s, test_threads_reserve);
}
