/*
 * mech_floor.c - the floor: one clock read and one compare-and-swap.
 *
 * The least any correct shared-memory limiter can do per admission: read
 * the shared clock and move one word shared by every process with one CAS.
 * It applies the GCRA rule to the RPM dimension only (a correct limiter for
 * that one dimension, so its accuracy can be measured too) and ignores
 * ITPM, OTPM and spend.  Its settle is one atomic add (a counter).
 *
 * Each pool's word sits alone on its own cache line, so "separate pools"
 * runs of the floor do not share a line at all.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"

struct floor_line {
	_Atomic uint64_t tat;
	_Atomic uint64_t settled;
	uint64_t pad[6];
};
_Static_assert(sizeof(struct floor_line) == 64, "one line per pool");

static int floor_setup(struct bench_mech *m)
{
	void *p = mmap(NULL, sizeof(struct floor_line) * BENCH_MAX_POOLS, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	memset(p, 0, sizeof(struct floor_line) * BENCH_MAX_POOLS);
	m->state = p;
	return 0;
}

static int floor_attach(struct bench_mech *m, int id)
{
	return 0;
}

static int floor_admit(struct bench_mech *m, int pool, struct bench_adm *a)
{
	struct floor_line *l = (struct floor_line *)m->state + pool;
	const struct bench_scenario *sc = m->sc;
	int64_t now = bench_boot_ns();
	uint64_t old = atomic_load_explicit(&l->tat, memory_order_relaxed);
	for (;;) {
		uint64_t next;
		if (bench_rule_take(old, now, sc->interval[0], sc->tol[0], &next) != 0)
			return 1;
		/* relaxed: the word publishes nothing but itself. */
		if (atomic_compare_exchange_weak_explicit(&l->tat, &old, next, memory_order_relaxed,
							  memory_order_relaxed))
			break;
	}
	a->pool = pool;
	a->now = now;
	a->reserved = 0;
	return 0;
}

static int floor_settle(struct bench_mech *m, struct bench_adm *a)
{
	struct floor_line *l = (struct floor_line *)m->state + a->pool;
	atomic_fetch_add_explicit(&l->settled, 1, memory_order_relaxed);
	return 0;
}

static void floor_detach(struct bench_mech *m)
{
}

static void floor_teardown(struct bench_mech *m)
{
	if (m->state != NULL)
		munmap(m->state, sizeof(struct floor_line) * BENCH_MAX_POOLS);
	m->state = NULL;
}

const struct bench_mech_ops bench_mech_floor = {
	.name = "floor",
	.what = "CLOCK_BOOTTIME read + one CAS on a shared line (RPM only); settle: one atomic add",
	.setup = floor_setup,
	.attach = floor_attach,
	.admit = floor_admit,
	.settle = floor_settle,
	.detach = floor_detach,
	.teardown = floor_teardown,
};
