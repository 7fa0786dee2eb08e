/*
 * internal.h - the shared-memory layout and the library's internal API.
 *
 * Everything other processes can see is defined here, as fixed-width fields
 * at fixed offsets, drawn as a byte table and pinned by _Static_asserts and
 * by tests/unit/test_layout.c.  Nothing here is exported from the shared
 * library; our own tools, tests and benchmarks link the static archive.
 *
 * Segment layout, version 2 (all integers little-endian, host order):
 *
 *   OFFSET   SIZE    DESCRIPTION
 *   0x00000  64      header: written once by the creator, read-only after
 *   0x00040  64      generation line: config generation (apply writes, all read)
 *   0x00080  64      spend line: month-tagged spend word, exhaustion mark
 *   0x000C0  64      reserved (zero)
 *   0x00100  32768   pool runtime: 64 pools x 512 bytes (8 cache lines each)
 *   0x08100  41024   configuration slot 0
 *   0x12140  41024   configuration slot 1
 *   0x1C180  8192    statistics bases: 64 pools x 128 bytes
 *   0x1E180  3712    reserved (zero)
 *   0x1F000  1445888 process slots: 64 x 22592 bytes
 *   0x180000 -       end; the object is SHL_SEG_SIZE bytes (1.5 MiB)
 *
 * Header (0x00000):
 *   +0   u64  magic          SHL_MAGIC ("SHMLIMT1" as bytes)
 *   +8   u32  version        SHL_LAYOUT_VERSION
 *   +12  u32  header_size    sizeof(struct shl_hdr) == 64
 *   +16  u64  total_size     SHL_SEG_SIZE
 *   +24  i64  created_unix_ns  wall clock at creation
 *   +32  u32  owner_uid      creator's euid
 *   +36  u32  max_pools      64
 *   +40  u32  max_models     256
 *   +44  u32  flags          SHL_CREATE_* used at creation
 *   +48  i64  created_boot_ns  shl_now() at creation
 *   +56  u64  reserved
 *
 * Generation line (0x00040):
 *   +0   u64  gen            configuration generation; the live slot is
 *                            gen & 1.  Written (release) by apply after the
 *                            slot is complete; read (acquire) on every call.
 *   +8   u64  applies        number of applies (stats)
 *   +16  i64  applied_unix_ns  wall clock of the last apply
 *
 * Spend line (0x00080):
 *   +0   u64  spend          (month mod 128) << 57 | units spent this month
 *   +8   u32  exhausted      month index + 1 the server said the cap was hit, 0 none
 *   +16  i64  lifetime       units charged since creation (never rolls)
 *
 * Pool runtime (0x00100 + 512 * p), one cache line per writer group:
 *   line 0 (hot: every admission of this pool): per RPM/ITPM/OTPM d, a
 *   16-byte aligned bucket pair (refunds update both words with one
 *   cmpxchg16b, bucket.c):
 *     +0   u64 tat[0]        GCRA theoretical arrival time, ns (RPM)
 *     +8   u64 refunded[0]   refund ledger: ns given back by refunds
 *                            since creation, mod 2^64, only ever grows
 *     +16  u64 tat[1], +24 u64 refunded[1]   (ITPM)
 *     +32  u64 tat[2], +40 u64 refunded[2]   (OTPM)
 *     +48  i64 hold_until    no admission before this shl_now() (retry-after)
 *     +56  u64 refused
 *   line 1 (settle)
 *     +64  u64 tokens_in, +72 tokens_out, +80 cache_read, +88 cache_write,
 *     +96  i64 spend, +104 u64 settled, +112 u64 cancelled, +120 u64 server_429
 *   +128: last-minute window, 12 slots x 24 bytes, one slot per 5 s:
 *     +0 u64 rpm, +8 u64 in, +16 u64 out, each (epoch mod 65536) << 48 | count
 *   +416 u64 admitted        (only admissions without a process slot)
 *   +424 u64 waited, +432 u64 clamps   (times the server's remaining lowered
 *                            a bucket)
 *   +440 72 bytes reserved (zero)
 *
 * Statistics base (0x1C180 + 128 * p), written by reset and apply under the
 * flock: what the process slots held for pool p when its counters were
 * last zeroed.  A pool's counter is the shared one plus the sum over the
 * process slots minus the base (mod 2^64).
 *   +0   u64 admitted, +8 settled, +16 cancelled, +24 tokens_in,
 *   +32  tokens_out, +40 cache_read, +48 cache_write, +56 i64 spend
 *   +64  u64 win_epoch   the 5-s epoch of the last zeroing: slot windows
 *                        count only this epoch and later ones
 *   +72  u64 win[3]      rpm, in, out the slots held in win_epoch then
 *   +96  32 bytes reserved
 *
 * Process slot (0x1F000 + 22592 * i): the statistics and spend lease of one
 * (thread, handle); only the thread that owns it writes it (plain stores),
 * readers sum.  A slot keeps counting for its pools after its owner is
 * gone, so the totals include dead processes.
 *   +0   u64 owner        0 free; else pid | (handle tag << 32).  Claimed
 *                         by CAS from 0, or from a dead pid's value
 *   +8   u64 lease        (month mod 128) << 57 | spend units leased from
 *                         the spend word and not yet reserved
 *   +16  u64 lease_gen    configuration generation the lease was taken in
 *   +24  i64 lifetime     units charged by this slot's settles
 *   +32  u64 claims       times the slot was claimed
 *   +40  u64 lease_seq    odd while the owner moves units between the spend
 *                         word and its lease (spend.c); readers retry
 *   +48  16 bytes reserved
 *   +64  64 x 352        per pool: u64 admitted, settled, cancelled,
 *                        tokens_in, tokens_out, cache_read, cache_write,
 *                        i64 spend; then a last-minute window of 12 x 3
 *                        words in the pool window format
 *
 * Configuration slot (41024 bytes):
 *   +0      64         slot header: u32 npools, u32 nmodels, i64 spend_cap
 *                      (units, -1 none), u64 gen (the generation it serves),
 *                      u64 checksum of the slot (FNV-1a over the slot with
 *                      this field zero), u64 spend_epoch at +32 (the
 *                      generation published by the last shl_reset of the
 *                      spend, 0 if none: tickets of an earlier generation
 *                      get no spend refund), pad
 *                      (spend_epoch was zero padding in the first release of
 *                      this layout: a reader that predates it ignores it and
 *                      misreads nothing, so the version stays 1)
 *   +64     64 x 128   pools   (struct shl_pool_cfg)
 *   +8256   256 x 128  models  (struct shl_model_cfg)
 *
 * Pool config (128 bytes):
 *   +0 char name[32], +32 u64 limit[3], +56 u64 burst[3], +80 i64 price[5],
 *   +120 u32 flags (SHL_PF_*), +124 u32 reserved
 * Model config (128 bytes):
 *   +0 char match[64], +64 u32 pool, +68 u32 flags (SHL_MF_*), +72 i64 price[5],
 *   +112 16 bytes reserved
 */
#ifndef SHL_INTERNAL_H
#define SHL_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmlimit.h"

/* A lock-based 64-bit atomic would silently not work across processes. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(sizeof(void *) == 8, "libshmlimit needs a 64-bit platform");

#define SHL_MAGIC 0x31544d494c4d4853ULL /* "SHMLIMT1" */
#define SHL_LAYOUT_VERSION 2u
#define SHL_CACHELINE 64
#define SHL_WINDOW_SLOTS 12
#define SHL_WINDOW_SLOT_NS 5000000000LL
#define SHL_NPRICES 5 /* input, output, cache write 5m, cache write 1h, cache read */

enum { SHL_P_INPUT, SHL_P_OUTPUT, SHL_P_CW5, SHL_P_CW1, SHL_P_READ };

/* Pool flags. */
#define SHL_PF_USED 0x1
#define SHL_PF_OTPM_RESERVE 0x2
#define SHL_PF_CACHE_READS 0x4
#define SHL_PF_BURST_SET 0x8 /* burst came from the config, not the default */
/* Model flags. */
#define SHL_MF_PREFIX 0x1 /* match is a prefix (written with a trailing '*') */
#define SHL_MF_PRICES 0x2 /* prices are the model's own, not the pool's */

/* Spend word: month tag in the top 7 bits, units in the low 57. */
#define SHL_SPEND_BITS 57
#define SHL_SPEND_MASK ((1ULL << SHL_SPEND_BITS) - 1)
#define SHL_WIN_BITS 48
#define SHL_WIN_MASK ((1ULL << SHL_WIN_BITS) - 1)

struct shl_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t header_size;
	uint64_t total_size;
	int64_t created_unix_ns;
	uint32_t owner_uid;
	uint32_t max_pools;
	uint32_t max_models;
	uint32_t flags;
	int64_t created_boot_ns;
	uint64_t reserved;
};

struct shl_gen_line {
	_Atomic uint64_t gen;
	_Atomic uint64_t applies;
	_Atomic int64_t applied_unix_ns;
	uint64_t pad[5];
};

struct shl_spend_line {
	_Atomic uint64_t spend;
	_Atomic uint32_t exhausted;
	uint32_t pad0;
	_Atomic int64_t lifetime;
	uint64_t pad[5];
};

struct shl_win_slot {
	_Atomic uint64_t v[SHL_NBUCKETS];
};

/* One bucket: its GCRA word and its refund ledger, updated together by a
 * refund's 16-byte CAS (bucket.c), hence the alignment. */
struct shl_bkt {
	_Atomic uint64_t tat;
	_Atomic uint64_t refunded;
} __attribute__((aligned(16)));

struct shl_pool_rt {
	/* line 0: written by every admission of this pool */
	struct shl_bkt bkt[SHL_NBUCKETS];
	_Atomic int64_t hold_until;
	_Atomic uint64_t refused;
	/* line 1: written by settle and cancel */
	_Atomic uint64_t tokens_in;
	_Atomic uint64_t tokens_out;
	_Atomic uint64_t cache_read;
	_Atomic uint64_t cache_write;
	_Atomic int64_t spend;
	_Atomic uint64_t settled;
	_Atomic uint64_t cancelled;
	_Atomic uint64_t server_429;
	/* +128 */
	struct shl_win_slot win[SHL_WINDOW_SLOTS];
	/* +416: rarely written counters */
	_Atomic uint64_t admitted;
	_Atomic uint64_t waited;
	_Atomic uint64_t clamps;
	uint64_t pad[9];
};

struct shl_pool_cfg {
	char name[32];
	uint64_t limit[SHL_NBUCKETS];
	uint64_t burst[SHL_NBUCKETS];
	int64_t price[SHL_NPRICES];
	uint32_t flags;
	uint32_t reserved;
};

struct shl_model_cfg {
	char match[64];
	uint32_t pool;
	uint32_t flags;
	int64_t price[SHL_NPRICES];
	uint8_t reserved[16];
};

struct shl_cfg_slot {
	uint32_t npools;
	uint32_t nmodels;
	int64_t spend_cap;
	uint64_t gen;
	uint64_t checksum;
	uint64_t spend_epoch; /* generation of the last spend reset, 0 none */
	uint8_t pad[24];
	struct shl_pool_cfg pools[SHL_MAX_POOLS];
	struct shl_model_cfg models[SHL_MAX_MODELS];
};

#define SHL_PSLOTS 64
#define SHL_PSTATS 8 /* admitted .. spend, in this order */

struct shl_pool_base {
	_Atomic uint64_t cnt[SHL_PSTATS];
	_Atomic uint64_t win_epoch;
	_Atomic uint64_t win[SHL_NBUCKETS];
	uint64_t pad[4];
};

struct shl_pslot_pool {
	_Atomic uint64_t cnt[SHL_PSTATS]; /* see SHL_PS_* */
	_Atomic uint64_t win[SHL_WINDOW_SLOTS][SHL_NBUCKETS];
};
enum { SHL_PS_ADMITTED, SHL_PS_SETTLED, SHL_PS_CANCELLED, SHL_PS_TOKENS_IN, SHL_PS_TOKENS_OUT,
       SHL_PS_CACHE_READ, SHL_PS_CACHE_WRITE, SHL_PS_SPEND };

struct shl_pslot {
	_Atomic uint64_t owner;
	_Atomic uint64_t lease;
	_Atomic uint64_t lease_gen;
	_Atomic int64_t lifetime;
	_Atomic uint64_t claims;
	_Atomic uint64_t lease_seq;
	uint64_t pad[2];
	struct shl_pslot_pool pools[SHL_MAX_POOLS];
};

struct shl_seg {
	struct shl_hdr hdr;
	struct shl_gen_line genl;
	struct shl_spend_line spendl;
	uint8_t reserved[64];
	struct shl_pool_rt pools[SHL_MAX_POOLS];
	struct shl_cfg_slot cfg[2];
	struct shl_pool_base bases[SHL_MAX_POOLS];
	uint8_t reserved2[3712];
	struct shl_pslot pslots[SHL_PSLOTS];
};

#define SHL_SEG_BYTES sizeof(struct shl_seg)
#define SHL_SEG_SIZE ((SHL_SEG_BYTES + 4095) & ~(size_t)4095)

_Static_assert(sizeof(struct shl_hdr) == 64, "header is one line");
_Static_assert(sizeof(struct shl_gen_line) == 64, "gen line");
_Static_assert(sizeof(struct shl_spend_line) == 64, "spend line");
_Static_assert(sizeof(struct shl_pool_rt) == 512, "pool runtime is 8 lines");
_Static_assert(sizeof(struct shl_pool_cfg) == 128, "pool config");
_Static_assert(sizeof(struct shl_model_cfg) == 128, "model config");
_Static_assert(sizeof(struct shl_cfg_slot) == 41024, "config slot");
_Static_assert(__builtin_offsetof(struct shl_seg, genl) == 0x40, "gen line offset");
_Static_assert(__builtin_offsetof(struct shl_seg, spendl) == 0x80, "spend line offset");
_Static_assert(__builtin_offsetof(struct shl_seg, pools) == 0x100, "pools offset");
_Static_assert(__builtin_offsetof(struct shl_seg, cfg) == 0x8100, "cfg offset");
_Static_assert(__builtin_offsetof(struct shl_seg, bases) == 0x1C180, "bases offset");
_Static_assert(__builtin_offsetof(struct shl_seg, pslots) == 0x1F000, "process slots offset");
_Static_assert(sizeof(struct shl_pool_base) == 128, "stats base");
_Static_assert(sizeof(struct shl_pslot_pool) == 352, "slot pool");
_Static_assert(sizeof(struct shl_pslot) == 22592, "process slot");
_Static_assert(sizeof(struct shl_seg) == 0x180000, "segment size");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, tokens_in) == 64, "settle line");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, win) == 128, "window lines");
_Static_assert(sizeof(struct shl_bkt) == 16, "bucket pair");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, bkt) == 0, "bucket pairs");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, hold_until) == 48, "hold");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, refused) == 56, "refused");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, admitted) == 416, "cold counters");
_Static_assert(__builtin_offsetof(struct shl_seg, pools) % 16 == 0, "pairs 16-byte aligned");

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

/* A parsed configuration (also the public opaque shl_config). */
struct shl_config {
	struct shl_cfg_slot slot;
};

struct shl_local {
	uint64_t gen;
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
SHL_HIDDEN int shl__ftruncate(int fd, off_t len);
SHL_HIDDEN void *shl__mmap(size_t len, int prot, int fd);
/* fault.c: shl_acquire's attempt counter (tests set shl__acquire_count_on). */
SHL_HIDDEN extern _Atomic int shl__acquire_count_on;
SHL_HIDDEN extern _Atomic long shl__acquire_attempts;
SHL_HIDDEN void shl__acquire_attempt(void);

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
SHL_HIDDEN int shl__slot_validate(const struct shl_cfg_slot *s, shl_err *e);
SHL_HIDDEN void shl__local_build(struct shl_local *l, const struct shl_cfg_slot *s);
SHL_HIDDEN uint64_t shl__slot_checksum(const struct shl_cfg_slot *s);
SHL_HIDDEN int shl__model_match(const struct shl_cfg_slot *s, const char *id);
SHL_HIDDEN uint32_t shl__name_hash(const char *s);
extern const char *const shl__presets[];
extern const int shl__npresets;

/* bucket.c: GCRA arithmetic on one word, shared with the benchmarks, and
 * the bucket pair with its refund ledger (see bucket.c's top comment). */
SHL_HIDDEN int64_t shl__bucket_take(_Atomic uint64_t *tat, int64_t now,
				    uint64_t cost_ns, uint64_t tol);
SHL_HIDDEN int64_t shl__bucket_take_at(struct shl_bkt *b, int64_t now, uint64_t cost_ns,
				       uint64_t tol, uint64_t *mark);
SHL_HIDDEN uint64_t shl__bucket_refund(struct shl_bkt *b, int64_t now, uint64_t ns,
				       uint64_t mark);
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
 * A 16-byte compare-and-swap of a bucket pair (tat, refunded): x86-64's
 * lock cmpxchg16b.  Like every locked instruction it is a full barrier;
 * relaxed is all the bucket words need, except the ledger's pairing with a
 * take (bucket.c).  The ThreadSanitizer build uses it too: TSan does not see
 * the asm (no false report: no data is published through bucket words).
 * Without it (SHL_HAVE_CAS16 0, other platforms) refunds give nothing back
 * (bucket.c): conservative, never an over-admission.
 */
#if defined(__x86_64__)
#define SHL_HAVE_CAS16 1
static inline int shl__cas16(struct shl_bkt *p, uint64_t *o0, uint64_t *o1, uint64_t n0,
			     uint64_t n1)
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
