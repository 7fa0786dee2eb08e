/*
 * test_pslot.c - process slots for the statistics (pslot.c): a dead
 * process's slot is reused and its counts stay in the totals, a forked
 * child gets a slot of its own, reset zeroes what the slots hold, threads
 * each write their own slot, and the fallback to the shared counters when
 * every slot is taken.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "testutil.h"

#define S 1000000000LL

static shl_config *big_cfg(const char *cap)
{
	return tu_pool_cfg(60000000, 600000000, 600000000, 1000000, 10000000, 10000000, NULL, cap);
}

static int slots_owned_by(shl_t *h, pid_t pid)
{
	int n = 0;
	for (int i = 0; i < SHL_PSLOTS; i++)
		if ((uint32_t)atomic_load(&h->seg->pslots[i].owner) == (uint32_t)pid)
			n++;
	return n;
}

static void one(shl_t *h, int m, int settle)
{
	shl_cost c = {.input_tokens = 10, .max_tokens = 20};
	shl_usage u = {.input_tokens = 10, .output_tokens = 5};
	shl_ticket t;
	if (shl_try(h, m, &c, &t, NULL) != 0)
		_exit(9);
	if (settle)
		shl_settle(h, &t, &u);
}

/* A child attaches, admits and settles 100 requests, signals, and is
 * SIGKILLed without detaching.  Its slot stays counted; once it is dead, a
 * new claimer takes the slot over and keeps counting on top. */
static void test_dead_slot_counted_and_reused(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c = big_cfg(NULL);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, NULL), 0);
	int pfd[2];
	CU_ASSERT_FATAL(pipe(pfd) == 0);
	pid_t pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		shl_t *hc = NULL;
		if (shl_attach(name, 0, &hc, NULL) != 0)
			_exit(3);
		int m = shl_lookup(hc, "m");
		for (int i = 0; i < 100; i++)
			one(hc, m, i < 60);
		char b = 1;
		if (write(pfd[1], &b, 1) != 1)
			_exit(4);
		pause();
		_exit(0);
	}
	char b;
	CU_ASSERT_EQUAL(read(pfd[0], &b, 1), 1);
	shl_t *h = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &h, NULL), 0);
	CU_ASSERT_EQUAL(slots_owned_by(h, pid), 1);
	kill(pid, SIGKILL);
	int st;
	waitpid(pid, &st, 0);
	shl_stats s;
	CU_ASSERT_EQUAL(shl_stats_get(h, &s), 0);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 100);
	CU_ASSERT_EQUAL(s.pools[0].settled, 60);
	CU_ASSERT_EQUAL(s.pools[0].tokens_in, 600);
	CU_ASSERT_EQUAL(s.pools[0].used_last_minute[SHL_DIM_RPM], 60);
	/* Fill every other slot from this process (one thread per slot is
	 * how slots are claimed, so claim directly), then one more claim
	 * must reuse the dead child's slot. */
	uint64_t me = shl__owner_me(h);
	int taken = 0;
	for (int i = 0; i < SHL_PSLOTS; i++) {
		uint64_t z = 0;
		if (atomic_compare_exchange_strong(&h->seg->pslots[i].owner, &z, me))
			taken++;
	}
	CU_ASSERT_EQUAL(taken, SHL_PSLOTS - 1);
	int m = shl_lookup(h, "m");
	for (int i = 0; i < 10; i++)
		one(h, m, 1);
	CU_ASSERT_EQUAL(slots_owned_by(h, pid), 0); /* taken over */
	CU_ASSERT_EQUAL(shl_stats_get(h, &s), 0);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 110);
	CU_ASSERT_EQUAL(s.pools[0].settled, 70);
	CU_ASSERT_EQUAL(s.pools[0].used_last_minute[SHL_DIM_RPM], 70);
	CU_ASSERT_EQUAL(shl_check(h, NULL, 0), 0);
	shl_detach(h);
	/* Detach let every slot of that handle go. */
	shl_t *h2 = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &h2, NULL), 0);
	CU_ASSERT_EQUAL(slots_owned_by(h2, getpid()), 0);
	CU_ASSERT_EQUAL(shl_stats_get(h2, &s), 0);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 110);
	shl_detach(h2);
	close(pfd[0]);
	close(pfd[1]);
	shl_unlink(name);
	shl_config_free(c);
}

/* A forked child using its parent's handle claims a slot of its own and
 * never writes (or releases) the parent's. */
static void test_fork_child_own_slot(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c = big_cfg(NULL);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, NULL), 0);
	shl_t *h = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &h, NULL), 0);
	int m = shl_lookup(h, "m");
	one(h, m, 1);
	CU_ASSERT_EQUAL(slots_owned_by(h, getpid()), 1);
	struct shl_pslot *mine = NULL;
	for (int i = 0; i < SHL_PSLOTS; i++)
		if ((uint32_t)atomic_load(&h->seg->pslots[i].owner) == (uint32_t)getpid())
			mine = &h->seg->pslots[i];
	CU_ASSERT_FATAL(mine != NULL);
	uint64_t before = atomic_load(&mine->pools[0].cnt[SHL_PS_ADMITTED]);
	pid_t pid = fork();
	if (pid == 0) {
		for (int i = 0; i < 5; i++)
			one(h, m, 1);
		int ok = slots_owned_by(h, getpid()) == 1 &&
			 atomic_load(&mine->pools[0].cnt[SHL_PS_ADMITTED]) == before;
		shl_detach(h);
		_exit(ok ? 0 : 7);
	}
	int st;
	waitpid(pid, &st, 0);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* The parent's slot is untouched and still its own. */
	CU_ASSERT_EQUAL(atomic_load(&mine->pools[0].cnt[SHL_PS_ADMITTED]), before);
	CU_ASSERT_EQUAL((uint32_t)atomic_load(&mine->owner), (uint32_t)getpid());
	shl_stats s;
	shl_stats_get(h, &s);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 6);
	CU_ASSERT_EQUAL(s.pools[0].settled, 6);
	one(h, m, 0);
	shl_stats_get(h, &s);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 7);
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c);
}

/* shl_reset(COUNTERS) and a pool's removal zero the slots' share too. */
static void test_reset_counts_slots(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c = big_cfg(NULL);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, NULL), 0);
	shl_t *h = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &h, NULL), 0);
	int m = shl_lookup(h, "m");
	for (int i = 0; i < 7; i++)
		one(h, m, 1);
	shl_stats s;
	shl_stats_get(h, &s);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 7);
	CU_ASSERT_EQUAL(s.pools[0].used_last_minute[SHL_DIM_RPM], 7);
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_COUNTERS), 0);
	shl_stats_get(h, &s);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 0);
	CU_ASSERT_EQUAL(s.pools[0].settled, 0);
	CU_ASSERT_EQUAL(s.pools[0].tokens_in, 0);
	CU_ASSERT_EQUAL(s.pools[0].spend, 0);
	CU_ASSERT_EQUAL(s.pools[0].used_last_minute[SHL_DIM_RPM], 0);
	one(h, m, 1);
	shl_stats_get(h, &s);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 1);
	CU_ASSERT_EQUAL(s.pools[0].used_last_minute[SHL_DIM_RPM], 1);
	CU_ASSERT_EQUAL(shl_check(h, NULL, 0), 0);
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c);
}

struct tharg {
	shl_t *h;
	int m, n;
	struct shl_pslot *slot;
};

static void *th(void *p)
{
	struct tharg *a = p;
	for (int i = 0; i < a->n; i++)
		one(a->h, a->m, 1);
	a->slot = shl__pslot(a->h);
	return NULL;
}

/* Threads sharing a handle each write their own slot; totals are exact. */
static void test_threads_own_slots(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c = big_cfg(NULL);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, NULL), 0);
	shl_t *h = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &h, NULL), 0);
	pthread_t t[4];
	struct tharg a[4];
	for (int i = 0; i < 4; i++) {
		a[i] = (struct tharg){h, shl_lookup(h, "m"), 5000, NULL};
		pthread_create(&t[i], NULL, th, &a[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 4; i++) {
		CU_ASSERT(a[i].slot != NULL);
		for (int j = 0; j < i; j++)
			CU_ASSERT(a[i].slot != a[j].slot);
	}
	shl_stats s;
	shl_stats_get(h, &s);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 20000);
	CU_ASSERT_EQUAL(s.pools[0].settled, 20000);
	CU_ASSERT_EQUAL(s.pools[0].tokens_in, 200000);
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c);
}

/* Every slot held by live owners: the shared counters take over. */
static void test_no_free_slot_falls_back(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c = big_cfg(NULL);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, NULL), 0);
	shl_t *h = NULL, *h2 = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &h, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &h2, NULL), 0);
	uint64_t other = shl__owner_me(h2);
	for (int i = 0; i < SHL_PSLOTS; i++)
		atomic_store(&h->seg->pslots[i].owner, other);
	int m = shl_lookup(h, "m");
	for (int i = 0; i < 3; i++)
		one(h, m, 1);
	CU_ASSERT(shl__pslot(h) == NULL);
	shl_stats s;
	shl_stats_get(h, &s);
	CU_ASSERT_EQUAL(s.pools[0].admitted, 3);
	CU_ASSERT_EQUAL(s.pools[0].settled, 3);
	CU_ASSERT_EQUAL(s.pools[0].used_last_minute[SHL_DIM_RPM], 3);
	shl_detach(h);
	shl_detach(h2);
	shl_unlink(name);
	shl_config_free(c);
}

void suite_pslot(void)
{
	CU_pSuite s = CU_add_suite("pslot", NULL, NULL);
	TU_ADD(s, test_dead_slot_counted_and_reused);
	TU_ADD(s, test_fork_child_own_slot);
	TU_ADD(s, test_reset_counts_slots);
	TU_ADD(s, test_threads_own_slots);
	TU_ADD(s, test_no_free_slot_falls_back);
}
