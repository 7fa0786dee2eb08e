/*
 * test_mt.c - the library's multi-threaded paths, one handle shared by
 * threads, for ThreadSanitizer (make check-tsan runs this suite, "threads"
 * and "pslot" under TSan; issue 13, defect 10).  Each test also checks the
 * books balance, so it is a plain test in the normal build too.
 *
 *   admission   shl_acquire sleeping waits, shl_try, shl_route, from 4 threads
 *   settle      settles above the estimate (charges), below (refunds), cancels
 *   apply       shl_apply and shl_reset underneath the admitters
 *   lookup      shl_lookup of many ids while applies rebuild the table
 *   stats       shl_stats_get reading every process slot while they write
 */
#include <pthread.h>

#include "testutil.h"

void suite_mt(void);

#define NT 4
#define ITERS 3000

static shl_t *mh;
static _Atomic int mstop;
static _Atomic uint64_t m_adm, m_done, m_err;

static const char *const ids[] = {"claude-sonnet-4-5", "claude-opus-4-1-x", "claude-haiku-4-5-y",
				  "claude-sonnet-4-5-20250929", "claude-opus-4-5", "no-such-model"};
#define NIDS (int)(sizeof(ids) / sizeof(ids[0]))

static void finish(shl_ticket *t, int i)
{
	int r;
	if (i % 3 == 0) {
		r = shl_cancel(mh, t);
	} else {
		/* Alternately above the estimate (a charge) and below (a refund). */
		shl_usage u = {.input_tokens = (i & 1) ? 40 : 1, .output_tokens = (i & 1) ? 30 : 1};
		r = shl_settle(mh, t, &u);
	}
	if (r == 0)
		atomic_fetch_add(&m_done, 1);
	else
		atomic_fetch_add(&m_err, 1);
}

static void *mt_admitter(void *arg)
{
	intptr_t k = (intptr_t)arg;
	for (int i = 0; i < ITERS; i++) {
		const char *id = ids[(i + k) % NIDS];
		int m = shl_lookup(mh, id);
		if (m < 0) {
			if (m != -ESRCH || strcmp(id, "no-such-model") != 0)
				atomic_fetch_add(&m_err, 1);
			continue;
		}
		shl_cost c = {.input_tokens = 10, .max_tokens = 10};
		shl_ticket t;
		int r;
		if (i % 4 == 0) {
			r = shl_acquire(mh, m, &c, 2000000, &t, NULL); /* sleeps up to 2 ms */
		} else if (i % 4 == 1) {
			int prefs[3] = {m, shl_lookup(mh, "claude-haiku-4-5"),
					shl_lookup(mh, "claude-opus-4-5")};
			shl_route_policy pol = {.min_free = 0.1, .timeout_ns = 0};
			r = shl_route(mh, prefs, 3, &c, &pol, &t, NULL);
			r = r >= 0 ? 0 : r;
		} else {
			r = shl_try(mh, m, &c, &t, NULL);
		}
		if (r == 0) {
			atomic_fetch_add(&m_adm, 1);
			finish(&t, i);
		} else if (r != -EAGAIN && r != -ETIMEDOUT && r != -ESRCH) {
			atomic_fetch_add(&m_err, 1);
		}
	}
	return NULL;
}

static void *mt_changer(void *arg)
{
	shl_config *a, *b;
	shl_config_preset(3, &a);
	shl_config_preset(4, &b);
	for (int i = 0; !atomic_load(&mstop); i++) {
		int r = (i % 3 == 2) ? shl_reset(mh, SHL_RESET_BUCKETS | SHL_RESET_COUNTERS)
				     : shl_apply(mh, (i & 1) ? a : b, NULL);
		if (r != 0)
			atomic_fetch_add(&m_err, 1);
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	shl_config_free(a);
	shl_config_free(b);
	return NULL;
}

static void *mt_reader(void *arg)
{
	shl_stats *s = malloc(sizeof(*s));
	while (s != NULL && !atomic_load(&mstop)) {
		if (shl_stats_get(mh, s) != 0 || s->npools < 1)
			atomic_fetch_add(&m_err, 1);
		if (shl_pool_find(mh, "sonnet") < 0)
			atomic_fetch_add(&m_err, 1);
	}
	free(s);
	return NULL;
}

static void test_mt_admit_settle_apply_lookup(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c;
	shl_config_preset(4, &c);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, &mh, NULL), 0);
	shl_config_free(c);
	pthread_t t[NT + 2];
	for (intptr_t i = 0; i < NT; i++)
		pthread_create(&t[i], NULL, mt_admitter, (void *)i);
	pthread_create(&t[NT], NULL, mt_changer, NULL);
	pthread_create(&t[NT + 1], NULL, mt_reader, NULL);
	for (int i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	atomic_store(&mstop, 1);
	pthread_join(t[NT], NULL);
	pthread_join(t[NT + 1], NULL);
	CU_ASSERT_EQUAL(atomic_load(&m_err), 0);
	CU_ASSERT(atomic_load(&m_adm) > 0);
	CU_ASSERT_EQUAL(atomic_load(&m_adm), atomic_load(&m_done));
	char report[4096];
	CU_ASSERT_EQUAL(shl_check(mh, report, sizeof(report)), 0);
	shl_detach(mh);
	shl_unlink(name);
}

/* Several handles in one process, each used by two threads, attached and
 * detached while the others admit: handle tags, slot claims and releases. */
struct hh {
	const char *name;
	_Atomic uint64_t *err;
};

static void *mt_handle_user(void *arg)
{
	struct hh *a = arg;
	for (int round = 0; round < 20; round++) {
		shl_t *h = NULL;
		if (shl_attach(a->name, 0, &h, NULL) != 0) {
			atomic_fetch_add(a->err, 1);
			return NULL;
		}
		int m = shl_lookup(h, "claude-haiku-4-5");
		for (int i = 0; i < 50; i++) {
			shl_cost c = {.input_tokens = 1, .max_tokens = 1};
			shl_ticket tk;
			if (shl_try(h, m, &c, &tk, NULL) == 0) {
				shl_usage u = {.input_tokens = 1, .output_tokens = 1};
				if (shl_settle(h, &tk, &u) != 0)
					atomic_fetch_add(a->err, 1);
			}
		}
		shl_detach(h);
	}
	return NULL;
}

static void test_mt_attach_detach(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c;
	shl_config_preset(4, &c);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, NULL), 0);
	shl_config_free(c);
	_Atomic uint64_t err = 0;
	struct hh a = {name, &err};
	pthread_t t[NT];
	for (int i = 0; i < NT; i++)
		pthread_create(&t[i], NULL, mt_handle_user, &a);
	for (int i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	CU_ASSERT_EQUAL(atomic_load(&err), 0);
	shl_t *h = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &h, NULL), 0);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	uint64_t adm = 0, set = 0;
	for (int p = 0; p < st.npools; p++) {
		adm += st.pools[p].admitted;
		set += st.pools[p].settled;
	}
	CU_ASSERT_EQUAL(adm, set);
	CU_ASSERT(adm > 0);
	shl_detach(h);
	shl_unlink(name);
}

void suite_mt(void)
{
	CU_pSuite s = CU_add_suite("mt", NULL, NULL);
	TU_ADD(s, test_mt_admit_settle_apply_lookup);
	TU_ADD(s, test_mt_attach_detach);
}
