/*
 * pslot.c - per-(thread, handle) process slots for the statistics.
 *
 * Statistics used to be atomic adds on lines every process writes, which
 * made each settle move four cache lines between cores.  Now each thread
 * that uses a handle claims a slot of counters in the segment and is its
 * only writer: a relaxed load and a relaxed store, no lock prefix, on a
 * line no other core writes.  Readers (shl_stats_get) sum the shared
 * counters, every slot, and subtract the base that reset and apply record
 * when they zero a pool's counters.
 *
 * Ownership: the owner word holds the owner's pid and a per-handle tag.
 * A slot is claimed by CAS from 0, or from the value of a process that no
 * longer exists (kill(pid, 0) fails with ESRCH).  Its counters are never
 * cleared: the new owner keeps adding to them, so a dead process's counts
 * stay in the totals with no folding step that a reader could see half
 * done.  shl_detach releases the handle's slots.  A forked child sees a new
 * fork generation in its thread cache and claims its own slot, so it never
 * writes its parent's.  When no slot is free, the thread uses the shared
 * atomic counters, as before: correct, but every admission then does
 * locked read-modify-writes on lines every such process writes, and per-
 * call CAS on the shared spend word (no lease), which is what made 128
 * processes admit 0.72x what 2 did when there were 64 slots.  Hence 512.
 *
 * Claiming, once per (thread, handle): a slot freed by a detach, below the
 * high-water mark `used` (no system call); else a never-used slot above
 * it, raising the mark first; else a dead owner's slot, checked with one
 * kill() per live owner met, starting at a place that depends on our pid
 * so that claimers spread out.  Readers sum only the slots below the mark,
 * so a segment used by a few processes is read (and paged in) as little
 * as it was with 64 slots.
 *
 * Limits: a thread that exits keeps its slot until its handle is detached
 * or its process exits; a pid reused by an unrelated live process keeps a
 * dead owner's slot taken; both only cost slots (the fallback is correct).
 * The liveness test assumes the processes sharing a segment see each other
 * in one pid namespace.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

__thread struct shl_tls shl__tls[SHL_TLS_WAYS] __attribute__((tls_model("initial-exec")));
_Atomic uint64_t shl__forkgen = 1;
static _Atomic uint64_t next_hid = 1;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
	/* relaxed: the child is single-threaded here. */
	atomic_fetch_add_explicit(&shl__forkgen, 1, memory_order_relaxed);
}

static void init_once(void)
{
	pthread_atfork(NULL, NULL, on_fork_child);
}

uint64_t shl__hid_new(void)
{
	pthread_once(&once, init_once);
	return atomic_fetch_add_explicit(&next_hid, 1, memory_order_relaxed);
}

uint64_t shl__owner_me(const struct shl *h)
{
	return (uint64_t)(uint32_t)getpid() | ((h->hid & 0xffffffffULL) << 32);
}

static int pid_dead(uint32_t pid)
{
	if (pid == 0 || pid > 0x7fffffffu)
		return 1; /* not a pid: a scribbled word; take it */
	return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

static struct shl_pslot *take(struct shl *h, struct shl_pslot *s, uint64_t o, uint64_t me)
{
	/* acq_rel: the acquire side pairs with the release store of a
	 * detaching owner, so its last counts are seen before we add to
	 * them. */
	if (!atomic_compare_exchange_strong_explicit(&s->owner, &o, me, memory_order_acq_rel,
						     memory_order_relaxed))
		return NULL;
	shl__pslot_lease_return(h, s);
	shl__padd(&s->claims, 1);
	return s;
}

/* Raise the mark to cover slot i before anything is counted in it. */
static void used_raise(struct shl_seg *seg, unsigned i)
{
	uint32_t n = atomic_load_explicit(&seg->pslotl.used, memory_order_relaxed);
	/* release: pairs with the acquire load in shl__pslots_used; a slot
	 * is under the mark before its first count is written. */
	while (n < i + 1 && !atomic_compare_exchange_weak_explicit(
				    &seg->pslotl.used, &n, i + 1, memory_order_release,
				    memory_order_relaxed))
		;
}

static struct shl_pslot *claim(struct shl *h)
{
	struct shl_seg *seg = h->seg;
	uint64_t me = shl__owner_me(h);
	unsigned used = shl__pslots_used(seg);
	struct shl_pslot *got = NULL;
	int saved = errno;
	/* 1: a slot a detach let go. */
	for (unsigned i = 0; got == NULL && i < used; i++) {
		struct shl_pslot *s = shl__pslot_at(seg, i);
		if (atomic_load_explicit(&s->owner, memory_order_relaxed) == 0)
			got = take(h, s, 0, me);
	}
	/* 2: a slot never used. */
	for (unsigned i = used; got == NULL && i < SHL_PSLOTS; i++) {
		struct shl_pslot *s = shl__pslot_at(seg, i);
		if (atomic_load_explicit(&s->owner, memory_order_relaxed) != 0)
			continue;
		used_raise(seg, i);
		got = take(h, s, 0, me);
	}
	/* 3: a dead owner's slot. */
	unsigned n = shl__pslots_used(seg), start = n ? (unsigned)getpid() % n : 0;
	for (unsigned k = 0; got == NULL && k < n; k++) {
		struct shl_pslot *s = shl__pslot_at(seg, (start + k) % n);
		uint64_t o = atomic_load_explicit(&s->owner, memory_order_relaxed);
		if (o == 0 || pid_dead((uint32_t)o))
			got = take(h, s, o, me);
	}
	errno = saved;
	return got;
}

struct shl_pslot *shl__pslot_slow(struct shl *h)
{
	uint64_t fg = atomic_load_explicit(&shl__forkgen, memory_order_relaxed);
	struct shl_tls hit = {0, 0, NULL};
	int k;
	for (k = 1; k < SHL_TLS_WAYS; k++)
		if (shl__tls[k].hid == h->hid && shl__tls[k].fgen == fg) {
			hit = shl__tls[k];
			break;
		}
	if (k == SHL_TLS_WAYS) {
		k = SHL_TLS_WAYS - 1; /* the oldest way is forgotten (its slot stays the handle's) */
		hit.hid = h->hid;
		hit.fgen = fg;
		hit.slot = h->rdonly ? NULL : claim(h);
	}
	memmove(&shl__tls[1], &shl__tls[0], (size_t)k * sizeof(shl__tls[0]));
	shl__tls[0] = hit;
	return hit.slot;
}

void shl__pslots_release(struct shl *h)
{
	if (h->rdonly)
		return;
	uint64_t me = shl__owner_me(h);
	unsigned n = shl__pslots_used(h->seg);
	for (unsigned i = 0; i < n; i++) {
		struct shl_pslot *s = shl__pslot_at(h->seg, i);
		if (atomic_load_explicit(&s->owner, memory_order_relaxed) != me)
			continue;
		shl__pslot_lease_return(h, s);
		/* release: our counts and lease are visible to the next owner. */
		atomic_store_explicit(&s->owner, 0, memory_order_release);
	}
	/* This thread's cache; other threads' entries die with the hid. */
	for (int k = 0; k < SHL_TLS_WAYS; k++)
		if (shl__tls[k].hid == h->hid)
			shl__tls[k].hid = 0;
}

/* ------------------------------------------------------------------ */
/* Reading and rebasing the totals.                                    */
/* ------------------------------------------------------------------ */

#define LD(x) atomic_load_explicit((_Atomic uint64_t *)&(x), memory_order_relaxed)

static void slots_sum(const struct shl_seg *seg, int p, uint64_t cnt[SHL_PSTATS])
{
	for (int j = 0; j < SHL_PSTATS; j++)
		cnt[j] = 0;
	for (unsigned i = 0, n = shl__pslots_used(seg); i < n; i++) {
		const struct shl_pslot_pool *q = &shl__pslot_at(seg, i)->pools[p];
		for (int j = 0; j < SHL_PSTATS; j++)
			cnt[j] += LD(q->cnt[j]);
	}
}

/* The slots' window counts of one absolute epoch. */
static void slots_win_at(const struct shl_seg *seg, int p, uint64_t epoch,
			 uint64_t out[SHL_NBUCKETS])
{
	uint64_t tag = (epoch & 0xffff) << SHL_WIN_BITS;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		out[d] = 0;
	for (unsigned i = 0, n = shl__pslots_used(seg); i < n; i++) {
		const struct shl_pslot_pool *q = &shl__pslot_at(seg, i)->pools[p];
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			uint64_t w = LD(q->win[epoch % SHL_WINDOW_SLOTS][d]);
			if ((w & ~SHL_WIN_MASK) == tag)
				out[d] += w & SHL_WIN_MASK;
		}
	}
}

static inline uint64_t epoch_of(int64_t now)
{
	return (uint64_t)(now < 0 ? 0 : now) / (uint64_t)SHL_WINDOW_SLOT_NS;
}

/* Called with the flock held, where the shared counters of pool p are
 * zeroed: from now on the slots count from what they hold now. */
void shl__stats_rebase(struct shl_seg *seg, int p, int64_t now)
{
	struct shl_pool_base *b = &seg->bases[p];
	uint64_t cnt[SHL_PSTATS], win[SHL_NBUCKETS], e = epoch_of(now);
	slots_sum(seg, p, cnt);
	slots_win_at(seg, p, e, win);
	for (int j = 0; j < SHL_PSTATS; j++)
		atomic_store_explicit(&b->cnt[j], cnt[j], memory_order_relaxed);
	for (int d = 0; d < SHL_NBUCKETS; d++)
		atomic_store_explicit(&b->win[d], win[d], memory_order_relaxed);
	atomic_store_explicit(&b->win_epoch, e, memory_order_relaxed);
}

/* Slot totals of pool p since its last rebase, and the slots' use in the
 * last minute (to be added to the shared counters and window). */
void shl__pool_totals(const struct shl_seg *seg, int p, int64_t now, uint64_t cnt[SHL_PSTATS],
		      uint64_t win[SHL_NBUCKETS])
{
	const struct shl_pool_base *b = &seg->bases[p];
	slots_sum(seg, p, cnt);
	for (int j = 0; j < SHL_PSTATS; j++)
		cnt[j] -= LD(b->cnt[j]); /* mod 2^64: slots only grow */
	uint64_t e = epoch_of(now), be = LD(b->win_epoch);
	for (int d = 0; d < SHL_NBUCKETS; d++)
		win[d] = 0;
	for (uint64_t age = 0; age < SHL_WINDOW_SLOTS && age <= e; age++) {
		uint64_t ep = e - age, x[SHL_NBUCKETS];
		if (ep < be)
			break;
		slots_win_at(seg, p, ep, x);
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			uint64_t base = ep == be ? LD(b->win[d]) : 0;
			win[d] += x[d] > base ? x[d] - base : 0;
		}
	}
}

int64_t shl__lifetime(const struct shl_seg *seg)
{
	uint64_t t = LD(seg->spendl.lifetime);
	for (unsigned i = 0, n = shl__pslots_used(seg); i < n; i++)
		t += LD(shl__pslot_at(seg, i)->lifetime);
	return (int64_t)t;
}
