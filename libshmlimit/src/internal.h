/*
 * internal.h - the library's internal API: the process-local configuration,
 * the handle, each module's hidden entry points and the inline hot paths.
 *
 * The shared-memory layout (the byte table, its structs and the asserts that
 * pin it) is in layout.h.  Nothing here is exported from the shared library;
 * our own tools, tests and benchmarks link the static archive.
 */
#ifndef SHL_INTERNAL_H
#define SHL_INTERNAL_H

#include "layout.h"

/* ------------------------------------------------------------------ */
/* The process-local configuration: a validated copy of the live slot,  */
/* with the derived numbers the hot path needs.                         */
/* ------------------------------------------------------------------ */

struct shl_pool_local {
	uint64_t interval[SHL_NBUCKETS]; /* ns per unit, rounded up */
	uint64_t tol[SHL_NBUCKETS];      /* burst * interval, ns */
	uint64_t burst[SHL_NBUCKETS];
	uint32_t flags;
	uint32_t name_hash; /* identifies the pool in tickets across applies */
};

/* The multi-host part of a configuration (cluster.c); kept in the
 * segment's cluster area, not in the configuration slot. */
struct shl_cluster_cfg {
	uint32_t enabled, port, lease_ms, fallback_ppm;
	char host[SHL_CL_HOST_MAX + 1];
	char prefix[SHL_CL_PREFIX_MAX + 1];
};

/* A parsed configuration (also the public opaque shl_config). */
struct shl_config {
	struct shl_cfg_slot slot;
	struct shl_cluster_cfg cluster;
};

struct shl_local {
	uint64_t gen;
	int cluster; /* some pool is governed by leases (SHL_PF_CLUSTER) */
	int64_t spend_cap; /* units, INT64_MAX when none */
	struct shl_cfg_slot slot;
	struct shl_pool_local pools[SHL_MAX_POOLS];
};

/* ------------------------------------------------------------------ */
/* Module entry points (hidden).                                       */
/* ------------------------------------------------------------------ */

#define SHL_HIDDEN __attribute__((visibility("hidden")))
#define shl_likely(x) __builtin_expect(!!(x), 1)
#define shl_unlikely(x) __builtin_expect(!!(x), 0)

/* errors.c */
SHL_HIDDEN void shl__err(shl_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* fault.c: countdown fault injection (tests set the countdown). */
SHL_HIDDEN extern _Atomic long shl__fault_countdown;
SHL_HIDDEN int shl__fault(void);
SHL_HIDDEN void *shl__malloc(size_t n);
SHL_HIDDEN void *shl__calloc(size_t k, size_t n);
SHL_HIDDEN int shl__shm_open(const char *path, int flags, mode_t mode);
SHL_HIDDEN int shl__fchmod(int fd, mode_t mode);
SHL_HIDDEN int shl__flock(int fd, int op);
SHL_HIDDEN int shl__ftruncate(int fd, off_t len);
SHL_HIDDEN void *shl__mmap(size_t len, int prot, int fd);
/* fault.c: shl_acquire's attempt counter (tests set shl__acquire_count_on). */
SHL_HIDDEN extern _Atomic int shl__acquire_count_on;
SHL_HIDDEN extern _Atomic long shl__acquire_attempts;
SHL_HIDDEN void shl__acquire_attempt(void);
/* fault.c: contention for shl__bucket_charge (tests set shl__charge_interfere). */
SHL_HIDDEN extern _Atomic long shl__charge_interfere;
SHL_HIDDEN void shl__charge_interfere_step(_Atomic uint64_t *tat);

/* clock.c: the clock, with a test hook. */
typedef int64_t (*shl_clock_fn)(void);
SHL_HIDDEN extern shl_clock_fn shl__clock_boot;  /* NULL: the real clock */
SHL_HIDDEN extern shl_clock_fn shl__clock_unix;  /* NULL: the real clock (ns) */
SHL_HIDDEN int64_t shl__unix_ns(void);
static inline int64_t shl__now(void);
/* Month index (months since 1970-01) of a wall-clock time, and the start of
 * the next month (unix seconds). */
SHL_HIDDEN uint32_t shl__month_of(int64_t unix_ns, int64_t *next_month_unix_s);

/* config.c */
/* pools[].margin's default, 0.2%: three times the 0.06% by which network
 * jitter was seen to bunch requests spaced at the limit (gaps of 0.9994 s
 * at 60 RPM enforced as one a second); it leaves at most 0.2% of a limit
 * unused (README, Configuration). */
#define SHL_MARGIN_DEFAULT_PPM 2000u
SHL_HIDDEN int shl__slot_validate(const struct shl_cfg_slot *s, shl_err *e);
SHL_HIDDEN void shl__local_build(struct shl_local *l, const struct shl_cfg_slot *s);
SHL_HIDDEN uint64_t shl__slot_checksum(const struct shl_cfg_slot *s);
SHL_HIDDEN int shl__model_match(const struct shl_cfg_slot *s, const char *id);
SHL_HIDDEN int shl__model_match_ex(const struct shl_cfg_slot *s, const char *id, int *unknown);
SHL_HIDDEN uint32_t shl__name_hash(const char *s);
/* presets_gen.c (scripts/embed.sh): each preset's JSON and its file name. */
extern const char *const shl__presets[];
extern const char *const shl__preset_names[];
extern const char shl__preset_list[]; /* the names, comma-separated */
extern const int shl__npresets;
/* observe.c: the limits the bucket runs at, from the configured ones and
 * what the server reported (shl_observe_limits). */
SHL_HIDDEN uint64_t shl__interval(uint64_t limit_per_min, uint32_t margin_ppm); /* ns per unit */
/* Is pool p the configuration's catch-all (unknown_model)? */
static inline int shl__catchall_pool(const struct shl_cfg_slot *s, int p)
{
	return s->unknown_policy == SHL_UNKNOWN_POOL && s->unknown_pool == (uint32_t)p;
}
SHL_HIDDEN void shl__local_observe(struct shl_local *l, const struct shl_seg *seg);
SHL_HIDDEN int shl__observe_apply(struct shl *h, int pool, const uint64_t limit[SHL_NBUCKETS]);
SHL_HIDDEN void shl__effective(const struct shl_pool_cfg *p, const struct shl_observed *o,
			       uint64_t limit[SHL_NBUCKETS], uint64_t burst[SHL_NBUCKETS]);
/* unknown.c: note a model id no entry matched in the segment's table;
 * 1 if this call added it, 0 if it was there, negative if not recorded. */
SHL_HIDDEN int shl__unknown_record(struct shl *h, const char *id);

/* bucket.c: GCRA arithmetic on one word, shared with the benchmarks, and
 * the bucket pair with its refund ledger (see bucket.c's top comment). */
SHL_HIDDEN int64_t shl__bucket_take(_Atomic uint64_t *tat, int64_t now,
				    uint64_t cost_ns, uint64_t tol);
SHL_HIDDEN int64_t shl__bucket_take_at(struct shl_bkt *b, int64_t at, uint64_t cost_ns,
				       uint64_t tol, uint64_t *mark, struct shl_slack *sl,
				       int64_t now);
SHL_HIDDEN uint64_t shl__bucket_refund(struct shl_bkt *b, int64_t now, uint64_t ns,
				       uint64_t mark, _Atomic uint64_t *horizon,
				       struct shl_slack *sl);
SHL_HIDDEN void shl__slack_note_slow(struct shl_slack *sl, uint64_t at, uint64_t slack,
				     uint64_t r, uint64_t room, uint64_t now);
SHL_HIDDEN void shl__slack_cover(struct shl_slack *sl, _Atomic uint64_t *horizon, int64_t now);
SHL_HIDDEN void shl__slack_clear(struct shl_slack *sl);
#define SHL_NOW_FRESH INT64_MIN /* shl__bucket_refund's `now`: read it in the loop */
SHL_HIDDEN void shl__horizon_raise(_Atomic uint64_t *horizon, uint64_t release);
SHL_HIDDEN void shl__bucket_charge(_Atomic uint64_t *tat, int64_t now, uint64_t ns);
SHL_HIDDEN void shl__bucket_raise(_Atomic uint64_t *tat, uint64_t floor);

/* Saturating arithmetic on bucket nanoseconds (a scribbled word or a huge
 * settle must saturate, never wrap), and the GCRA step of one take:
 * max(tat, now) + cost.  Inline: admit.c's fused path uses them too. */
static inline uint64_t shl__mul_sat(uint64_t a, uint64_t b)
{
	uint64_t r;
	return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

static inline uint64_t shl__add_sat(uint64_t a, uint64_t b)
{
	uint64_t r;
	return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

static inline uint64_t shl__gcra_next(uint64_t tat, uint64_t n, uint64_t cost_ns)
{
	return shl__add_sat(tat > n ? tat : n, cost_ns);
}

/* admit.c: feedback with the details the exchange needs.  shl__hold counts
 * a server 429 only with `count_429` (a 529 holds without being one);
 * shl__clamp_at clamps as of the instant `at` the server reported
 * `remaining`, with `after` units used since then that it had not counted;
 * with `since` (> 0, < at: the request's release), only when that count
 * does not fit the bucket as of `since` (the server counted it somewhere
 * in [since, at]). */
SHL_HIDDEN int shl__hold(struct shl *h, int pool, int64_t duration_ns, int count_429);
/* shl_settle, shl_cancel and shl_settle_as, and what each gave back to
 * each bucket of the ticket's pool, in ns of its word (all 0 when nothing:
 * shl_ex_given). */
SHL_HIDDEN int shl__settle_given(struct shl *h, shl_ticket *t, const shl_usage *u,
				 uint64_t given[SHL_NBUCKETS]);
SHL_HIDDEN int shl__cancel_given(struct shl *h, shl_ticket *t, uint64_t given[SHL_NBUCKETS]);
SHL_HIDDEN int shl__settle_as_given(struct shl *h, shl_ticket *t, int served, const shl_usage *u,
				    uint64_t given[SHL_NBUCKETS]);
/* The gives as the public calls say them: ns, at most INT64_MAX. */
SHL_HIDDEN void shl__given_out(const uint64_t given[SHL_NBUCKETS], int64_t given_ns[3]);
/* The earliest a reservation's release may be moved to (shl_ex_advance):
 * the latest over its buckets of its end, less every refund since its
 * take, less the bucket's tolerance; INT64_MAX when that is not known
 * (another generation, a cluster pool, not open). */
SHL_HIDDEN int64_t shl__ticket_floor(struct shl *h, const shl_ticket *t);
/* shl_ex_place's rule for an open ticket (admit.c). */
SHL_HIDDEN void shl__ticket_place(struct shl *h, const shl_ticket *t, shl_place *out);
/* shl_ex_advance for a ticket (admit.c): its release moved to *release_ns,
 * clamped to [the floor, its release] and never before now. */
SHL_HIDDEN int shl__ticket_advance(struct shl *h, shl_ticket *t, int64_t *release_ns);
SHL_HIDDEN int shl__clamp_at(struct shl *h, int pool, int dim, uint64_t remaining,
			     uint64_t after, int64_t at, int64_t since);
/* cluster.c: multi-host leases (see its top comment) */
struct cJSON;
SHL_HIDDEN int shl__cluster_parse(const struct cJSON *o, struct shl_cluster_cfg *c, shl_err *e);
SHL_HIDDEN void shl__cluster_to_json(const struct shl_cluster_cfg *c, struct cJSON *root);
SHL_HIDDEN void shl__cluster_store(struct shl_seg *seg, const struct shl_cluster_cfg *c);
SHL_HIDDEN void shl__cluster_load(const struct shl_seg *seg, struct shl_cluster_cfg *c);
SHL_HIDDEN void shl__cluster_pool_zero(struct shl_seg *seg, int p);
SHL_HIDDEN int shl__cluster_fallback(struct shl_seg *seg, int p, int d, int64_t now, uint64_t len);
struct shl_pool_local;
SHL_HIDDEN uint64_t shl__cluster_validity(const struct shl_pool_local *pl, int d);

/* spend.c */
SHL_HIDDEN int shl__spend_reserve(struct shl_spend_line *sp, uint32_t month,
				  int64_t units, int64_t cap, uint32_t *charged);
SHL_HIDDEN void shl__spend_adjust(struct shl_spend_line *sp, uint32_t month,
				  uint32_t admitted_month, int64_t delta);
SHL_HIDDEN int64_t shl__spend_read(const struct shl_spend_line *sp, uint32_t month);

/* segment.c: the handle */
struct shl {
	struct shl_seg *seg;
	int fd;
	int rdonly;
	char name[256];
	/* process-local config cache, replaced when the generation changes */
	_Atomic(struct shl_local *) local;
	void *lookup; /* lookup.c's table */
	/* Month cache, one word so that the month and the instant it ends are
	 * always read together (two fields could be read torn between two
	 * concurrent refreshes): the CLOCK_BOOTTIME instant at which the
	 * cached month stops being valid, rounded down to a multiple of
	 * 2^16 ns, with the month index in the low 16 bits (enough until the
	 * year 7431).  0: nothing cached. */
	_Atomic uint64_t month_end_boot;
	uint64_t hid; /* unique per handle in this process (never 0) */
};
/* pslot.c: the calling thread's process slot for a handle. */
struct shl_tls {
	uint64_t hid, fgen;
	struct shl_pslot *slot;
};
#define SHL_TLS_WAYS 4
SHL_HIDDEN extern __thread struct shl_tls shl__tls[SHL_TLS_WAYS]
	__attribute__((tls_model("initial-exec")));
SHL_HIDDEN extern _Atomic uint64_t shl__forkgen;
SHL_HIDDEN uint64_t shl__hid_new(void);
SHL_HIDDEN struct shl_pslot *shl__pslot_slow(struct shl *h);

/* Process slot i (0 <= i < SHL_PSLOTS), wherever the layout keeps it. */
static inline struct shl_pslot *shl__pslot_at(const struct shl_seg *seg, unsigned i)
{
	struct shl_seg *s = (struct shl_seg *)seg;
	return i < SHL_PSLOTS_FIRST ? &s->pslots[i] : &s->pslots_more[i - SHL_PSLOTS_FIRST];
}

/* How many slots a reader has to look at: every slot ever claimed is below
 * it (a scribbled value is clamped). */
static inline unsigned shl__pslots_used(const struct shl_seg *seg)
{
	/* acquire: pairs with the raise in pslot.c's claim, made before the
	 * claimer's first count. */
	uint32_t n = atomic_load_explicit(&((struct shl_seg *)seg)->pslotl.used,
					  memory_order_acquire);
	return n < SHL_PSLOTS ? n : SHL_PSLOTS;
}
SHL_HIDDEN void shl__pslots_release(struct shl *h);
SHL_HIDDEN uint64_t shl__owner_me(const struct shl *h);
SHL_HIDDEN void shl__stats_rebase(struct shl_seg *seg, int p, int64_t now);
SHL_HIDDEN void shl__pool_totals(const struct shl_seg *seg, int p, int64_t now,
				 uint64_t cnt[SHL_PSTATS], uint64_t win[SHL_NBUCKETS]);
SHL_HIDDEN int64_t shl__lifetime(const struct shl_seg *seg);
/* spend.c: a slot's spend lease back to the word, when the slot is
 * claimed (perhaps from a dead owner) and when its handle lets it go. */
SHL_HIDDEN void shl__pslot_lease_return(struct shl *h, struct shl_pslot *s);
SHL_HIDDEN int shl__lease_reserve(struct shl *h, const struct shl_local *l, struct shl_pslot *ps,
				  uint32_t month, int64_t units, uint32_t *charged);
SHL_HIDDEN void shl__lease_adjust(struct shl *h, const struct shl_local *l, struct shl_pslot *ps,
				  uint32_t month, uint32_t admitted_month, int64_t delta);
SHL_HIDDEN int64_t shl__spend_month(const struct shl_seg *seg, uint32_t month,
				    uint64_t spend_epoch);

/* The admission's spend from the caller's lease: a load and a store on its
 * own slot when the lease covers it (spend.c, "Spend leases").  Returns 1
 * if it was taken so (counted in `month`); 0 if not, and then the caller
 * reserves with shl__lease_reserve. */
static inline int shl__lease_take(struct shl *h, const struct shl_local *l, struct shl_pslot *ps,
				  uint32_t month, int64_t units)
{
	if (shl_likely(ps != NULL)) {
		uint64_t lw = atomic_load_explicit(&ps->lease, memory_order_relaxed);
		uint64_t tag = (uint64_t)(month & 127u) << SHL_SPEND_BITS;
		/* relaxed: the word and the mark are only compared; a lease is
		 * used only while the word still counts its month. */
		uint64_t w = atomic_load_explicit(&h->seg->spendl.spend, memory_order_relaxed);
		/* Both tags are this month's: one test; then lw ^ tag is the
		 * lease's units (lw & SHL_SPEND_MASK). */
		uint64_t x = lw ^ tag;
		if (shl_likely(((x | (w ^ tag)) >> SHL_SPEND_BITS) == 0 && x >= (uint64_t)units &&
			       atomic_load_explicit(&ps->lease_gen, memory_order_relaxed) == l->gen &&
			       atomic_load_explicit(&h->seg->spendl.exhausted,
						    memory_order_relaxed) != month + 1)) {
			atomic_store_explicit(&ps->lease, lw - (uint64_t)units,
					      memory_order_relaxed);
			return 1;
		}
	}
	return 0;
}

/* The calling thread's slot for h, or NULL (none free, or read-only):
 * then the shared counters are used.  One TLS compare on the hot path. */
static inline struct shl_pslot *shl__pslot(struct shl *h)
{
	struct shl_tls *t = &shl__tls[0];
	if (shl_likely(t->hid == h->hid &&
		       t->fgen == atomic_load_explicit(&shl__forkgen, memory_order_relaxed)))
		return t->slot;
	return shl__pslot_slow(h);
}

/* Single-writer add to a word of the caller's own slot: no lock prefix. */
static inline void shl__padd(_Atomic uint64_t *w, uint64_t v)
{
	atomic_store_explicit(w, atomic_load_explicit(w, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

#define SHL_MONTH_BITS 16
#define SHL_MONTH_MASK ((1ULL << SHL_MONTH_BITS) - 1)

SHL_HIDDEN struct shl_local *shl__local_refresh(struct shl *h);
SHL_HIDDEN int shl__cluster_short(struct shl *h, const struct shl_local *l, int p, int d,
				  const uint64_t cost_ns[SHL_NBUCKETS], int64_t now);
SHL_HIDDEN int shl__cluster_take(struct shl *h, int p, const uint64_t cost_ns[SHL_NBUCKETS]);
SHL_HIDDEN void shl__cluster_untake(struct shl *h, int p, const uint64_t cost_ns[SHL_NBUCKETS]);
SHL_HIDDEN int64_t shl__cluster_wait(const struct shl *h);
SHL_HIDDEN int64_t shl__cluster_cap(const struct shl *h, const struct shl_local *l, uint32_t month);
SHL_HIDDEN int shl__cluster_org_exhausted(const struct shl *h, uint32_t month);
SHL_HIDDEN uint32_t shl__month_slow(struct shl *h, int64_t now);
SHL_HIDDEN int shl__lookup_init(struct shl *h);
SHL_HIDDEN void shl__lookup_free(struct shl *h);
SHL_HIDDEN int shl__lookup_reset(struct shl *h);
SHL_HIDDEN int shl__lookup_tables(struct shl *h);
SHL_HIDDEN void shl__window_add(struct shl_pool_rt *rt, int64_t now,
				const uint64_t add[SHL_NBUCKETS]);
SHL_HIDDEN void shl__window_sum(const struct shl_pool_rt *rt, int64_t now,
				uint64_t out[SHL_NBUCKETS]);

/* ------------------------------------------------------------------ */
/* Inline hot-path helpers.                                            */
/* ------------------------------------------------------------------ */

/*
 * A 16-byte compare-and-swap of a bucket pair (tat, refunded), or of a slack
 * slot (low, tag; bucket.c), at a 16-byte aligned p: x86-64's lock
 * cmpxchg16b.  Like every locked instruction it is a full barrier;
 * relaxed is all the bucket words need, except the ledger's pairing with a
 * take (bucket.c).  The ThreadSanitizer build uses it too: TSan does not see
 * the asm (no false report: no data is published through bucket words).
 * Without it (SHL_HAVE_CAS16 0, other platforms) refunds give nothing back
 * (bucket.c): conservative, never an over-admission.
 */
#if defined(__x86_64__)
#define SHL_HAVE_CAS16 1
static inline int shl__cas16(void *p, uint64_t *o0, uint64_t *o1, uint64_t n0, uint64_t n1)
{
	_Bool ok;
	__asm__ __volatile__("lock cmpxchg16b %1"
			     : "=@ccz"(ok), "+m"(*(volatile unsigned __int128 *)(void *)p),
			       "+a"(*o0), "+d"(*o1)
			     : "b"(n0), "c"(n1)
			     : "memory");
	return ok;
}
#else
#define SHL_HAVE_CAS16 0
#endif

/*
 * The release fence that orders a take's note (or a horizon raise) before
 * its CAS.  GCC refuses atomic_thread_fence in some inlined contexts under
 * -fsanitize=thread (TSan does not model fences); there it is a compiler
 * barrier, which is all a release fence is on x86-64 (stores are not
 * reordered with later stores), and TSan does not see the cmpxchg16b that
 * writes the slots anyway.
 */
#if defined(__SANITIZE_THREAD__)
#define shl__release_fence() atomic_signal_fence(memory_order_release)
#else
#define shl__release_fence() atomic_thread_fence(memory_order_release)
#endif

/* A shallow take's mark in its slot's tag: 1 + its offset in its span in
 * grains of 2^SHL_SLACK_GRAIN ns (bucket.c, "Slack"), read back as the
 * grain's end: late, the safe way.  The grain keeps the common case of an
 * idle bucket one read: its takes' marks change once a grain. */
static inline uint32_t shl__slack_mark(uint64_t at)
{
	return (uint32_t)((at & 0xffffffffu) >> SHL_SLACK_GRAIN) + 1;
}

/*
 * Note a take of the ITPM bucket for the instant `at` before its CAS
 * (bucket.c, "Slack"): `slack` = start - at (what it found the bucket in
 * debt by), `r` the ledger it read, `room` = tol - its cost (the most
 * slack it could have found).  A deep take (slack over half its room)
 * lowers its span's least slack + r; a shallow one raises its span's
 * latest shallow instant.  The common case is one read of its span's
 * slot, which already says as much; the caller orders the note before its
 * CAS with a release fence.
 */
static inline void shl__slack_note(struct shl_slack *sl, uint64_t at, uint64_t slack, uint64_t r,
				   uint64_t room, uint64_t now)
{
#if SHL_HAVE_CAS16
	uint64_t span = (at >> SHL_SLACK_SHIFT) + 1;
	struct shl_slack_slot *s = &sl->slot[(span - 1) % SHL_SLACK_SLOTS];
	/* relaxed: hints.  Read tag then low: a low of a later occupancy
	 * means the slot went to a later span, and refunds that need this
	 * one give nothing by the rule (bucket.c). */
	uint64_t tg = atomic_load_explicit(&s->tag, memory_order_relaxed);
	if (shl_likely(tg >> 32 == span)) {
		if (slack > room >> SHL_SLACK_DEEP) {
			if ((int64_t)(atomic_load_explicit(&s->low, memory_order_relaxed) -
				      (slack + r)) <= 0)
				return;
		} else if ((uint32_t)tg >= shl__slack_mark(at)) {
			return;
		}
	}
	shl__slack_note_slow(sl, at, slack, r, room, now);
#else
	(void)sl;
	(void)at;
	(void)slack;
	(void)r;
	(void)room;
	(void)now;
#endif
}

#include <time.h>

static inline int64_t shl__now(void)
{
	if (shl_unlikely(shl__clock_boot != NULL))
		return shl__clock_boot();
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The month index for `now`, from the handle's cache (one load, one compare). */
static inline uint32_t shl__month(struct shl *h, int64_t now)
{
	/* relaxed: the month and its end travel in this one word, which
	 * publishes nothing else; it pairs with the relaxed store in
	 * shl__month_slow only through the word's own atomicity. */
	uint64_t w = atomic_load_explicit(&h->month_end_boot, memory_order_relaxed);
	if (shl_likely(now < (int64_t)(w & ~SHL_MONTH_MASK)))
		return (uint32_t)(w & SHL_MONTH_MASK);
	return shl__month_slow(h, now);
}

/* The live local config: one acquire load of the shared generation. */
static inline struct shl_local *shl__local(struct shl *h)
{
	struct shl_local *l = atomic_load_explicit(&h->local, memory_order_acquire);
	/* acquire: pairs with the release store of gen in shl_apply, so a new
	 * generation seen here means its slot is complete. */
	uint64_t g = atomic_load_explicit(&h->seg->genl.gen, memory_order_acquire);
	if (shl_likely(l != NULL && l->gen == g))
		return l;
	return shl__local_refresh(h);
}

#endif /* SHL_INTERNAL_H */
