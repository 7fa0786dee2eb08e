/*
 * layout.h - the shared-memory layout: every byte other processes see.
 *
 * Everything other processes can see is defined here, as fixed-width fields
 * at fixed offsets, drawn as a byte table and pinned by _Static_asserts and
 * by tests/unit/test_layout.c.  Nothing here is exported from the shared
 * library; our own tools, tests and benchmarks link the static archive.
 *
 * Segment layout, version 5 (all integers little-endian, host order):
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
 *   0x1E180  64      process slot line: how many slots were ever claimed
 *   0x1E1C0  3648    reserved (zero)
 *   0x1F000  1445888 process slots 0..63: 64 x 22592 bytes
 *   0x180000 4096    segment extension (struct shl_seg_ext, below)
 *   0x181000 65536   pool extensions: 64 pools x 1024 bytes (struct shl_pool_ext)
 *   0x191000 10121216 process slots 64..511: 448 x 22592 bytes
 *   0xB38000 -       end; the object is SHL_SEG_SIZE bytes (11,763,712; pages
 *                    nobody touched take no memory)
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
 *   +440 64 bytes reserved (zero)
 *   +504 u64 horizon         the latest release time (shl_now() scale) of any
 *                            reservation into the future (shl_reserve); only
 *                            raised; refunds give nothing back that lies
 *                            before it (bucket.c, "Reservations")
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
 * Process slot line (0x1E180):
 *   +0   u32  used         slots 0..used-1 may have been claimed: readers
 *                          sum only those, claimers raise it (atomic max)
 *                          before their first count
 *   +4   60 bytes reserved (zero)
 *
 * Process slot i (0x1F000 + 22592 * i for i < 64, 0x191000 + 22592 *
 * (i - 64) above; shl__pslot_at): the statistics and spend lease of one
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
 * Segment extension (0x180000, 4096 bytes; layout 3), one area per feature,
 * each starting on a cache line:
 *   +0     64    attach: workers that could not attach a segment they were
 *                told to use (tools show it), struct shl_attach_log:
 *     +0   u64 failures     attaches refused after the file was opened
 *                           read-write (any process; atomic add)
 *     +8   i64 last_unix_ns wall clock of the last one
 *     +16  u32 last_uid     its euid
 *     +20  u32 last_pid     its pid
 *     +24  i32 last_error   its negative errno (-EPERM: owner check,
 *                           -EUCLEAN: corrupt configuration)
 *     +28  u32 reserved
 *     +32  u64 owner_refusals  how many of them were -EPERM
 *     +40  24 bytes reserved (zero)
 *                Only a process that opened the file read-write and found
 *                a valid header (magic, version, size) writes here: a
 *                failure before that (no segment, EACCES from the mode
 *                bits, a read-only attach, a foreign or truncated object)
 *                cannot be recorded in the segment; the last_* fields of
 *                two racing failures may mix.
 *   +64    1024  unknown: model ids no entry matched, as seen by workers
 *                 (struct shl_unknown_tab): +0 u32 n (entries claimed),
 *                 +4 u32 dropped (ids not recorded: table full), +8 56
 *                 bytes reserved; +64 12 entries x 80 bytes: u64 tag (0
 *                 free; else the id's hash with bit 0 set once id[] is
 *                 written, clear while it is), u64 seen (lookups that
 *                 met it: once per process and configuration), char
 *                 id[64]
 *   +1088  512   cluster (struct shl_cluster_seg): multi-host mode
 *          +0 u32 enabled, +4 u32 port, +8 u32 lease_ms, +12 u32 fallback_ppm,
 *          +16 char host[128], +144 char prefix[64]   (create/apply, flock)
 *          +208 i64 agent_beat, +216 i64 redis_ok_at, +224 u32 redis_up,
 *          +228 u32 hosts_seen, +232 u64 redis_ops, +240 u64 refills,
 *          +248 u64 spend_budget (month-tagged as the spend word),
 *          +256 u32 global_exhausted, +260 u32 fallback, +264 i64 rtt_ns,
 *          +272 240 bytes reserved                  (the agent writes)
 *   +1600  2496  reserved (zero)
 *
 * Pool extension (0x181000 + 1024 * p; layout 3):
 *   +0     512   learn: the input estimate's learned ratio (struct shl_learn;
 *                settles write, learn.c):
 *     +0   u64 count      samples ever added (the next goes to count % 112);
 *                         fetch_add by each settle that learns
 *     +8   u32 ratio      the upper quantile (p95) of the ring, fixed point,
 *                         4096 = 1.0; 0: nothing learned yet.  Recomputed and
 *                         stored by the settle that added the last sample
 *     +12  u32 reserved
 *     +16  u64 owner      1 << 32 | the name hash of the pool the samples
 *                         belong to (0: none); a pool index reused by
 *                         another pool after an apply starts afresh
 *     +24  40 bytes reserved (zero)
 *     +64  u32 ring[112]  the last 112 ratios (server count / raw estimate),
 *                         same fixed point, 0 = empty
 *   +512   64    observed: the limits the server's headers report
 *   +512   64    observed: the limits the server's headers report
 *                 (struct shl_observed): +0 u64 limit[3] (rpm, itpm,
 *                 otpm per minute; 0: none reported), +24 i64
 *                 updated_unix_ns, +32 u64 changes (times they changed),
 *                 +40 u32 name_hash (the pool they were reported for: an
 *                 apply that puts another pool at this index ignores
 *                 them), +44 u32 reserved, +48 16 bytes reserved.
 *                 Written under the segment's flock, before the
 *                 generation that derives from them is published.
 *   +576   256   cluster (struct shl_cluster_pool): this host's leases
 *          per RPM/ITPM/OTPM d, 64 bytes at +64d: i64 credit, u64 fb_tat,
 *          need_ns, granted_ns, expired_ns, 24 bytes pad;
 *          +192 u64 short_refusals, +200 refills, +208 fallback_grants,
 *          +216 i64 hold_pushed, +224 u64 charged_reported, +232 pad
 *   +832   192   slack (struct shl_slack; layout 5): the ITPM bucket's
 *                takes, by the span of time they are taken for, so that a
 *                settle can give a surplus back when the line of takes
 *                after it leaves room for it (bucket.c, "Slack"):
 *     +0   u64 far        every take no slot holds was for an instant at
 *                         or before this one (only raised: a take too far
 *                         ahead of its clock, or an apply, which moves
 *                         every take's place)
 *     +8   u64 reserved
 *     +16  11 slots x 16 bytes, 16-byte aligned, each written by one
 *          cmpxchg16b:
 *            u64 low  the least (start - instant + refund ledger at the
 *                     take) of the span's deep takes (start - instant
 *                     over half of tol - cost), mod 2^64; the
 *                     ledger + 2^62 when it has none
 *            u64 tag  bits 63-32: the span + 1 (0: never used; span =
 *                     instant >> 32, 4.3 s; slot = span mod 11; a slot is
 *                     only ever given to a later span); bits 31-0: 0, or
 *                     1 + the latest in-span offset of its shallow
 *                     takes (the others), in 2^20-ns grains.  Only ever
 *                     grows.
 *
 * Configuration slot (41024 bytes):
 *   +0      64         slot header: u32 npools, u32 nmodels, i64 spend_cap
 *                      (units, -1 none), u64 gen (the generation it serves),
 *                      u64 checksum of the slot (FNV-1a over the slot with
 *                      this field zero), u64 spend_epoch at +32 (the
 *                      generation published by the last shl_reset of the
 *                      spend, 0 if none: tickets of an earlier generation
 *                      get no spend refund), pad
 *                      (spend_epoch was zero padding before it was added: a
 *                      reader that predates it ignores it and misreads
 *                      nothing, so adding it needed no new layout version)
 *                      u32 unknown_policy at +40 (SHL_UNKNOWN_*: what a
 *                      model id no entry matches gets; 0, "pass", is what
 *                      zero padding always meant), u32 unknown_pool at +44
 *                      (the catch-all pool's index for SHL_UNKNOWN_POOL),
 *                      16 bytes pad
 *   +64     64 x 128   pools   (struct shl_pool_cfg)
 *   +8256   256 x 128  models  (struct shl_model_cfg)
 *
 * Pool config (128 bytes):
 *   +0 char name[32], +32 u64 limit[3], +56 u64 burst[3], +80 i64 price[5],
 *   +120 u32 flags (SHL_PF_*), +124 u32 margin_ppm (pools[].margin in parts
 *   per million, 0..500000: every bucket's interval is lengthened by
 *   1 + margin; was zero padding before, read as no margin)
 *   (SHL_PF_NOFOLLOW: the server's observed limits only ever lower the
 *   pool; SHL_PF_PROVISIONAL: the limits are a preset's stand-ins, the
 *   lowest published numbers for the model class, until the server's
 *   headers or sync replace them)
 * Model config (128 bytes):
 *   +0 char match[64], +64 u32 pool, +68 u32 flags (SHL_MF_*), +72 i64 price[5],
 *   +112 16 bytes reserved
 */
#ifndef SHL_LAYOUT_H
#define SHL_LAYOUT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmlimit.h"

/* A lock-based 64-bit atomic would silently not work across processes. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(sizeof(void *) == 8, "libshmlimit needs a 64-bit platform");

#define SHL_MAGIC 0x31544d494c4d4853ULL /* "SHMLIMT1" */
#define SHL_LAYOUT_VERSION 5u
#define SHL_CACHELINE 64
#define SHL_WINDOW_SLOTS 12
#define SHL_WINDOW_SLOT_NS 5000000000LL
#define SHL_NPRICES 5 /* input, output, cache write 5m, cache write 1h, cache read */

enum { SHL_P_INPUT, SHL_P_OUTPUT, SHL_P_CW5, SHL_P_CW1, SHL_P_READ };

/* Pool flags. */
#define SHL_PF_USED 0x1
#define SHL_PF_OTPM_RESERVE 0x2
#define SHL_PF_CACHE_READS 0x4
#define SHL_PF_BURST_SET 0x8 /* burst came from the config, not the default (<< dim) */
#define SHL_PF_NOFOLLOW 0x40 /* follow_server false: observed limits only lower */
#define SHL_PF_PROVISIONAL 0x80 /* limits are stand-ins until the server says */
#define SHL_PF_CLUSTER 0x100 /* multi-host mode: takes stay within the host's lease */
#define SHL_PF_ALL 0x1ff
/* Model flags. */
#define SHL_MF_PREFIX 0x1 /* match is a prefix (written with a trailing '*') */
#define SHL_MF_PRICES 0x2 /* prices are the model's own, not the pool's */
#define SHL_MF_CATCHALL 0x4 /* the unknown_model pool's entry (match "*") */
/* Unknown-model policies (slot header unknown_policy). */
#define SHL_UNKNOWN_PASS 0
#define SHL_UNKNOWN_REFUSE 1
#define SHL_UNKNOWN_POOL 2

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
	uint64_t pad[8];
	_Atomic uint64_t horizon; /* +504: latest future release (shl_reserve) */
};

struct shl_pool_cfg {
	char name[32];
	uint64_t limit[SHL_NBUCKETS];
	uint64_t burst[SHL_NBUCKETS];
	int64_t price[SHL_NPRICES];
	uint32_t flags;
	uint32_t margin_ppm; /* pools[].margin x 1e6 */
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
	uint32_t unknown_policy; /* SHL_UNKNOWN_* */
	uint32_t unknown_pool;   /* catch-all pool index (SHL_UNKNOWN_POOL) */
	uint8_t pad[16];
	struct shl_pool_cfg pools[SHL_MAX_POOLS];
	struct shl_model_cfg models[SHL_MAX_MODELS];
};

/* 512 process slots: 64 where layout 3 began with them, the rest at the
 * end, so that nothing else moved.  A process (thread) that finds none
 * free falls back to the shared counters (pslot.c). */
#define SHL_PSLOTS 512
#define SHL_PSLOTS_FIRST 64
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

struct shl_pslot_line {
	_Atomic uint32_t used; /* slots ever claimed: 0..used-1 (pslot.c) */
	uint32_t pad0;
	uint64_t pad[7];
};

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

/* Attach failures a worker could record (see the table above). */
struct shl_attach_log {
	_Atomic uint64_t failures;
	_Atomic int64_t last_unix_ns;
	_Atomic uint32_t last_uid;
	_Atomic uint32_t last_pid;
	_Atomic int32_t last_error;
	uint32_t reserved0;
	_Atomic uint64_t owner_refusals;
	uint64_t reserved[3];
};

/* Layout 3's areas.  Each feature owns its bytes; an area is replaced by a
 * typed struct of the same size when its feature lands. */

/* Model ids no entry matched (unknown.c).  Entries are claimed by CAS of
 * tag from 0 and never freed (a reset of the counters clears the table);
 * a reader uses an entry only once tag has bit 0 set (acquire, pairing
 * with the release store that sets it after id[] is written). */
#define SHL_UNKNOWN_SLOTS 12
struct shl_unknown_ent {
	_Atomic uint64_t tag;
	_Atomic uint64_t seen;
	char id[64];
};
struct shl_unknown_tab {
	_Atomic uint32_t n;
	_Atomic uint32_t dropped;
	uint8_t pad[56];
	struct shl_unknown_ent ent[SHL_UNKNOWN_SLOTS];
};

/* The limits the server's response headers report for a pool (observe.c). */
struct shl_observed {
	_Atomic uint64_t limit[SHL_NBUCKETS];
	_Atomic int64_t updated_unix_ns;
	_Atomic uint64_t changes;
	_Atomic uint32_t name_hash;
	uint32_t reserved;
	uint64_t pad[2];
};

/*
 * Multi-host mode (cluster.c), segment part: the cluster configuration
 * (written under the flock by create and apply, read by the agent) and the
 * agent's state (written by the agent only, read by workers and tools).
 */
#define SHL_CL_HOST_MAX 127
#define SHL_CL_PREFIX_MAX 63
struct shl_cluster_seg {
	/* +0: configuration */
	uint32_t enabled;            /* 1: the pools are governed by leases */
	uint32_t port;               /* Redis TCP port */
	uint32_t lease_ms;           /* global time one lease covers */
	uint32_t fallback_ppm;       /* static share without Redis; 0: 1 / hosts seen */
	char host[SHL_CL_HOST_MAX + 1];     /* Redis host (numeric or name) */
	char prefix[SHL_CL_PREFIX_MAX + 1]; /* the organisation's key prefix */
	/* +208: the agent's state */
	_Atomic int64_t agent_beat;  /* shl_now() of the agent's last loop, 0 never */
	_Atomic int64_t redis_ok_at; /* shl_now() of the last Redis reply, 0 never */
	_Atomic uint32_t redis_up;   /* 1: the last Redis call succeeded */
	_Atomic uint32_t hosts_seen; /* hosts heartbeating in the last 10 s (>= 1) */
	_Atomic uint64_t redis_ops;  /* commands sent to Redis, lifetime */
	_Atomic uint64_t refills;    /* leases taken from Redis, lifetime */
	_Atomic uint64_t spend_budget; /* (month mod 128) << 57 | spend units leased
					  from the organisation for that month */
	_Atomic uint32_t global_exhausted; /* month + 1 the organisation's cap is reached */
	_Atomic uint32_t fallback;   /* 1: leases are granted locally (no Redis) */
	_Atomic int64_t rtt_ns;      /* the last lease call's round trip */
	uint8_t pad[240];
};

/* One dimension of a pool's lease (cluster.c): leased units not yet taken,
 * counted in ns of the global bucket (units x interval). */
struct shl_cl_dim {
	_Atomic int64_t credit;      /* leased and not taken; < 0: owed (a charge) */
	_Atomic uint64_t fb_tat;     /* fallback: GCRA word of the static share */
	_Atomic uint64_t need_ns;    /* largest take refused for lack of credit */
	_Atomic uint64_t granted_ns; /* leased, lifetime (stats) */
	_Atomic uint64_t expired_ns; /* leased and expired unused, lifetime (stats) */
	uint64_t pad[3];
};

struct shl_cluster_pool {
	struct shl_cl_dim dim[SHL_NBUCKETS]; /* 192 */
	_Atomic uint64_t short_refusals;     /* admissions refused for lack of lease */
	_Atomic uint64_t refills;            /* leases taken for this pool */
	_Atomic uint64_t fallback_grants;    /* leases granted locally */
	_Atomic int64_t hold_pushed;         /* hold_until last pushed to Redis */
	_Atomic uint64_t charged_reported;   /* OTPM units already reported */
	uint64_t pad[3];
};

struct shl_seg_ext {
	struct shl_attach_log attach;
	struct shl_unknown_tab unknown;
	struct shl_cluster_seg cluster;
	uint8_t reserved[2496];
};

#define SHL_LEARN_RING 112
struct shl_learn {
	_Atomic uint64_t count;
	_Atomic uint32_t ratio;
	uint32_t reserved0;
	_Atomic uint64_t owner;
	uint8_t reserved[40];
	_Atomic uint32_t ring[SHL_LEARN_RING];
};

/* The takes of a pool's ITPM bucket by the span of time they were for
 * (bucket.c, "Slack"): what lets a settle give a surplus back under a
 * line, and after its own place has passed. */
#define SHL_SLACK_SLOTS 11
#define SHL_SLACK_SHIFT 32 /* a span is 2^32 ns (4.3 s) */
#define SHL_SLACK_GRAIN 20 /* a shallow instant's grain: 2^20 ns (1 ms) */
#define SHL_SLACK_DEEP 1  /* deep: start - instant > (tol - cost) >> 1 */
struct shl_slack_slot {
	_Atomic uint64_t low; /* min over the span's deep takes of start - instant + ledger */
	_Atomic uint64_t tag; /* (span + 1) << 32 | the latest shallow take (0: none) */
} __attribute__((aligned(16)));
struct shl_slack {
	_Atomic uint64_t far; /* every take no slot holds was for an instant <= far */
	uint64_t reserved;
	struct shl_slack_slot slot[SHL_SLACK_SLOTS];
};

struct shl_pool_ext {
	struct shl_learn learn;
	struct shl_observed observed;
	struct shl_cluster_pool cluster;
	struct shl_slack slack;
};
_Static_assert(sizeof(struct shl_unknown_ent) == 80, "unknown-model entry");
_Static_assert(sizeof(struct shl_unknown_tab) == 1024, "unknown-model table");
_Static_assert(sizeof(struct shl_observed) == 64, "observed limits");

_Static_assert(sizeof(struct shl_cluster_seg) == 512, "cluster segment area");
_Static_assert(sizeof(struct shl_cluster_pool) == 256, "cluster pool area");
_Static_assert(sizeof(struct shl_slack) == 192, "slack area");
_Static_assert(__builtin_offsetof(struct shl_pool_ext, slack) == 832, "slack area");
_Static_assert(__builtin_offsetof(struct shl_pool_ext, slack.slot) == 848, "slack slots");

struct shl_seg {
	struct shl_hdr hdr;
	struct shl_gen_line genl;
	struct shl_spend_line spendl;
	uint8_t reserved[64];
	struct shl_pool_rt pools[SHL_MAX_POOLS];
	struct shl_cfg_slot cfg[2];
	struct shl_pool_base bases[SHL_MAX_POOLS];
	struct shl_pslot_line pslotl;
	uint8_t reserved2[3648];
	struct shl_pslot pslots[SHL_PSLOTS_FIRST]; /* slots 0..63 */
	struct shl_seg_ext ext;
	struct shl_pool_ext pext[SHL_MAX_POOLS];
	struct shl_pslot pslots_more[SHL_PSLOTS - SHL_PSLOTS_FIRST]; /* slots 64..511 */
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
_Static_assert(__builtin_offsetof(struct shl_cfg_slot, unknown_policy) == 40, "unknown policy");
_Static_assert(__builtin_offsetof(struct shl_cfg_slot, pools) == 64, "slot header");
_Static_assert(__builtin_offsetof(struct shl_seg, genl) == 0x40, "gen line offset");
_Static_assert(__builtin_offsetof(struct shl_seg, spendl) == 0x80, "spend line offset");
_Static_assert(__builtin_offsetof(struct shl_seg, pools) == 0x100, "pools offset");
_Static_assert(__builtin_offsetof(struct shl_seg, cfg) == 0x8100, "cfg offset");
_Static_assert(__builtin_offsetof(struct shl_seg, bases) == 0x1C180, "bases offset");
_Static_assert(__builtin_offsetof(struct shl_seg, pslots) == 0x1F000, "process slots offset");
_Static_assert(sizeof(struct shl_pool_base) == 128, "stats base");
_Static_assert(sizeof(struct shl_pslot_pool) == 352, "slot pool");
_Static_assert(sizeof(struct shl_pslot) == 22592, "process slot");
_Static_assert(__builtin_offsetof(struct shl_seg, ext) == 0x180000, "segment extension");
_Static_assert(__builtin_offsetof(struct shl_seg, pext) == 0x181000, "pool extensions");
_Static_assert(sizeof(struct shl_seg_ext) == 4096, "segment extension size");
_Static_assert(sizeof(struct shl_attach_log) == 64, "attach log is its 64-byte area");
_Static_assert(__builtin_offsetof(struct shl_seg_ext, unknown) == 64, "ext: unknown area");
_Static_assert(sizeof(struct shl_pool_ext) == 1024, "pool extension size");
_Static_assert(sizeof(struct shl_learn) == 512, "learn area size");
_Static_assert(__builtin_offsetof(struct shl_learn, ring) == 64, "learn ring");
_Static_assert(__builtin_offsetof(struct shl_seg, pslotl) == 0x1E180, "process slot line");
_Static_assert(sizeof(struct shl_pslot_line) == 64, "process slot line size");
_Static_assert(__builtin_offsetof(struct shl_seg, pslots_more) == 0x191000, "more process slots");
_Static_assert(sizeof(struct shl_seg) == 0xB38000, "segment size");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, tokens_in) == 64, "settle line");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, win) == 128, "window lines");
_Static_assert(sizeof(struct shl_bkt) == 16, "bucket pair");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, bkt) == 0, "bucket pairs");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, hold_until) == 48, "hold");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, refused) == 56, "refused");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, admitted) == 416, "cold counters");
_Static_assert(__builtin_offsetof(struct shl_pool_rt, horizon) == 504, "reservation horizon");
_Static_assert(__builtin_offsetof(struct shl_pool_cfg, margin_ppm) == 124, "pool margin");
_Static_assert(__builtin_offsetof(struct shl_seg, pools) % 16 == 0, "pairs 16-byte aligned");

#endif /* SHL_LAYOUT_H */
