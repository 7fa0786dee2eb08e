/*
 * shmlimit.h - the one public header of libshmlimit.
 *
 * libshmlimit lets many unrelated processes on one Linux host share the
 * Claude API's limits without a server: per model-class pools of token
 * buckets (requests, input tokens, output tokens per minute) and one monthly
 * spend counter live in a POSIX shared-memory segment, and each process
 * admits its requests against them with a handful of atomic operations.
 *
 * Conventions
 *   - Every function that can fail returns a negative errno value (-EINVAL,
 *     -ENOENT, ...) and 0 or a non-negative result on success.  The meaning
 *     of each code in this library is listed once, in SHL_ERRNO_MAP below;
 *     shl_strerror() gives the message.
 *   - Functions that can fail for a reason worth a sentence (a config key,
 *     a segment field) take an optional `shl_err *` and write that sentence
 *     into it.  Pass NULL when you only want the code.
 *   - Times are nanoseconds.  "now" is CLOCK_BOOTTIME (see shl_now()).
 *   - A handle (shl_t) may be used by many threads at once.  A ticket is
 *     owned by the thread that holds it.
 *   - Waiting: shl_acquire, shl_route and shl_reserve take a timeout
 *     (< 0: none; 0: do not wait).  When the request cannot be admitted
 *     within it (for 0: at once) all three return -ETIMEDOUT, with
 *     why->wait_ns the wait it would have needed; -EAGAIN is shl_try's
 *     "not now" (and shl_start's), never a timeout.
 *
 * Concurrency contract
 *   operation                          may run concurrently with
 *   shl_try / shl_acquire              everything, in any process
 *   shl_reserve / shl_start / shl_route  everything, in any process
 *   shl_settle / shl_cancel            everything (each ticket once)
 *   shl_hold / shl_clamp / shl_spend_exhaust   everything
 *   shl_stats                          everything (read-only snapshot)
 *   shl_apply / shl_reset              everything; appliers serialise among
 *                                      themselves with flock() on the segment
 *   shl_detach                         nothing on the same handle
 */
#ifndef SHMLIMIT_H
#define SHMLIMIT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SHL_API __attribute__((visibility("default")))
#else
#define SHL_API
#endif

#define SHL_VERSION_MAJOR 1
#define SHL_VERSION_MINOR 0
#define SHL_VERSION_STRING "1.0.0"

/* Capacity of a segment (fixed by the layout version). */
#define SHL_MAX_POOLS 64
#define SHL_MAX_MODELS 256
#define SHL_NAME_MAX 31    /* pool name, bytes, without the NUL */
#define SHL_PATTERN_MAX 63 /* model id or prefix pattern, bytes, without the NUL */

/*
 * Error codes: the errno value each one uses, and its message.  One list;
 * shl_strerror() and the docs are generated from it.
 */
#define SHL_ERRNO_MAP(X)                                                       \
	X(ENOENT, "no such segment")                                           \
	X(EEXIST, "segment already exists")                                    \
	X(EACCES, "permission denied")                                         \
	X(EPERM, "segment is owned by another user")                           \
	X(EPROTO, "not a libshmlimit segment (bad magic)")                     \
	X(EPROTONOSUPPORT, "incompatible segment layout version")              \
	X(EBADMSG, "segment size does not match its layout")                   \
	X(EUCLEAN, "segment is corrupt")                                       \
	X(EINVAL, "invalid argument or configuration")                        \
	X(ENOMEM, "out of memory")                                             \
	X(ESRCH, "no pool is configured for this model")                       \
	X(ENOMSG, "model unknown to the configuration, whose unknown_model policy refuses it") \
	X(EAGAIN, "not admitted now; retry after the returned wait")           \
	X(E2BIG, "request is larger than a bucket's capacity; it can never be admitted") \
	X(EDQUOT, "monthly spend cap reached")                                 \
	X(ETIMEDOUT, "deadline passed before the request could be admitted")   \
	X(EALREADY, "ticket already settled or cancelled")                     \
	X(ENAMETOOLONG, "segment name is too long or malformed")               \
	X(EOVERFLOW, "value out of range")

/* Message for a code returned by this library (negative or positive). */
SHL_API const char *shl_strerror(int err);

/* A sentence naming what was wrong, filled by functions that take it. */
typedef struct shl_err {
	char msg[256];
} shl_err;

/* ------------------------------------------------------------------ */
/* Dimensions                                                          */
/* ------------------------------------------------------------------ */

enum shl_dim {
	SHL_DIM_RPM = 0,  /* requests per minute */
	SHL_DIM_ITPM = 1, /* input tokens per minute */
	SHL_DIM_OTPM = 2, /* output tokens per minute */
	SHL_DIM_SPEND = 3, /* the monthly spend cap (segment-wide) */
	SHL_DIM_HOLD = 4, /* a server retry-after hold on the pool */
	SHL_DIM_NONE = -1
};
#define SHL_NBUCKETS 3 /* RPM, ITPM, OTPM */

/* "rpm", "itpm", "otpm", "spend", "hold" or "none". */
SHL_API const char *shl_dim_name(int dim);

/* ------------------------------------------------------------------ */
/* Money                                                               */
/* ------------------------------------------------------------------ */

/*
 * Spend is counted in integer units of 1e-9 USD (nano-dollars).  A price of
 * P USD per million tokens is P * 1000 units per token, so any price with at
 * most three decimals is exact (the cheapest, 0.03 USD/MTok, is 30 units per
 * token, 15 for Batch), and the month counter holds 144 million USD.
 */
#define SHL_UNITS_PER_USD 1000000000LL
#define SHL_UNITS_PER_TOKEN_PER_USD_PER_MTOK 1000LL

/* ------------------------------------------------------------------ */
/* Configuration                                                        */
/* ------------------------------------------------------------------ */

/* An opaque, validated configuration (pools, models, spend cap). */
typedef struct shl_config shl_config;

/*
 * Parse a JSON configuration.  On error returns -EINVAL and, with `err`,
 * a message naming the key path, e.g. "pools[2].itpm: expected a positive
 * integer".  The format is documented in README.md ("Configuration").
 * `len` covers one JSON document: only white space may follow it (or a
 * NUL, which ends the text).
 */
SHL_API int shl_config_parse(const char *json, size_t len, shl_config **out,
			     shl_err *err);

/* A built-in numbered tier preset, tier 1..4 (-EINVAL otherwise): the
 * older scheme, aliases of the presets named "tier1" .. "tier4". */
SHL_API int shl_config_preset(int tier, shl_config **out);

/* The JSON text of a numbered tier preset (static storage), or NULL. */
SHL_API const char *shl_preset_json(int tier);

/*
 * Presets by name: "start", "build", "scale" (the tiers as the API names
 * them today), "tier1" .. "tier4" (the older numbered scheme; "1" .. "4"
 * are accepted too), case-insensitive.  -EINVAL / NULL for a name no
 * preset has.  shl_preset_names() lists them, comma-separated.
 */
SHL_API int shl_config_preset_named(const char *name, shl_config **out);
SHL_API const char *shl_preset_json_named(const char *name);
SHL_API const char *shl_preset_names(void);

/*
 * Serialise a configuration as JSON that shl_config_parse accepts back
 * unchanged.  Returns a malloc'd string (free() it) or NULL.
 */
SHL_API char *shl_config_to_json(const shl_config *cfg);

SHL_API void shl_config_free(shl_config *cfg);

/* A pool of a configuration with every default resolved: the numbers a
 * segment created from it enforces (e.g. the RPM burst max(1, rpm / 60)). */
typedef struct shl_pool_info {
	char name[SHL_NAME_MAX + 1];
	uint64_t limit[SHL_NBUCKETS]; /* per minute */
	uint64_t burst[SHL_NBUCKETS]; /* bucket capacities */
	int otpm_reserve;             /* 1: otpm_mode "reserve" */
	int cache_reads_count;        /* 1: cache reads count toward ITPM */
} shl_pool_info;

/* Pool `i` (0.., in the configuration's order) of `cfg`: 0, or -ESRCH past
 * the last pool, -EINVAL for a NULL argument. */
SHL_API int shl_config_pool(const shl_config *cfg, int i, shl_pool_info *out);

/* ------------------------------------------------------------------ */
/* Segments                                                             */
/* ------------------------------------------------------------------ */

typedef struct shl shl_t;

/*
 * Segment names follow shm_open(3): an optional leading '/', then 1..200
 * bytes of [A-Za-z0-9._-].  "myfleet" and "/myfleet" name the same segment.
 */

/* Flags for shl_create. */
#define SHL_CREATE_GROUP 0x1   /* mode 0660 instead of 0600 */
#define SHL_CREATE_REPLACE 0x2 /* unlink an existing segment of that name first */

/* Flags for shl_attach. */
#define SHL_ATTACH_RDONLY 0x1    /* map read-only (stats); admissions fail with -EACCES */
#define SHL_ATTACH_ANY_OWNER 0x2 /* accept a segment owned by another uid (a segment
				    created with SHL_CREATE_GROUP needs it only from
				    outside the file's group) */

/*
 * Create a segment from `cfg` (O_EXCL; -EEXIST if it exists unless
 * SHL_CREATE_REPLACE) and attach to it.  `out` may be NULL to create only.
 */
SHL_API int shl_create(const char *name, const shl_config *cfg, unsigned flags,
		       shl_t **out, shl_err *err);

/*
 * Attach to an existing segment.  Validates magic, layout version, size,
 * owner and the live configuration; each failure has its own code
 * (-ENOENT, -EACCES, -EPERM, -EPROTO, -EPROTONOSUPPORT, -EBADMSG, -EUCLEAN).
 */
SHL_API int shl_attach(const char *name, unsigned flags, shl_t **out,
		       shl_err *err);

/* Unmap and free the handle.  Outstanding tickets stay valid data but must
 * not be settled through this handle afterwards. */
SHL_API void shl_detach(shl_t *h);

/* Remove the segment name; attached processes keep their mapping. */
SHL_API int shl_unlink(const char *name);

/* The segment's name as given to shl_create / shl_attach. */
SHL_API const char *shl_name(const shl_t *h);

/*
 * Replace the live configuration (a tier upgrade) without stopping anyone.
 * Pools are matched by name: a pool that keeps its name keeps its bucket
 * state (each bucket keeps its deficit in units: a bucket 300 tokens short
 * stays 300 tokens short under the new limits, and refills at the new rate)
 * and its counters; a new pool starts full; a removed pool's runtime state
 * is cleared and its admissions settle spend only.  Tickets admitted before
 * the apply still settle and cancel, but give nothing back to the buckets
 * (their "full again" times are on the old scale); charges and spend
 * refunds apply as usual.  Workers see the new limits at their next call.
 *
 * Model entries are matched by `match`: an entry that stays keeps its index,
 * so an index cached from shl_lookup keeps naming the same model across
 * applies that reorder, add or change entries.  New entries take the
 * indices of removed ones first.  Indices are dense, so an apply that
 * removes more entries than it adds moves the kept entries numbered at or
 * above the new count down into the gaps (their old index answers -ESRCH);
 * and a removed entry's index may name a new entry.  A program that caches
 * indices across such applies looks its ids up again when shl_generation()
 * changes.
 */
SHL_API int shl_apply(shl_t *h, const shl_config *cfg, shl_err *err);

/* A copy of the live configuration (free with shl_config_free). */
SHL_API int shl_config_get(shl_t *h, shl_config **out);

/* The live configuration generation (changes on every apply and reset);
 * 0 for a NULL handle (a segment's generations start at 2). */
SHL_API uint64_t shl_generation(shl_t *h);

/*
 * What shl_reset does; combine.
 *
 * Tickets open across a reset must not give back what the reset already
 * gave: a reset of the buckets or the spend republishes the live
 * configuration, unchanged, as a new generation (shl_generation() moves on,
 * like an apply; appliers and resetters serialise on the segment's flock).
 * A ticket admitted before it then refunds nothing to the buckets when
 * settled or cancelled (as after an apply), and, after a spend reset, no
 * spend either: the new generation is recorded as the spend epoch, and a
 * refund of a ticket older than the epoch is dropped, because the reset
 * already erased its reservation.  Charges above a ticket's estimate still
 * count.  A worker racing the reset may lose a refund; it never gains one.
 * Returns -EUCLEAN (nothing reset) when a bucket or spend reset finds the
 * live configuration unreadable.
 */
#define SHL_RESET_BUCKETS 0x1 /* refill every bucket, clear holds */
#define SHL_RESET_SPEND 0x2   /* zero this month's spend, clear exhaustion */
#define SHL_RESET_COUNTERS 0x4 /* zero the stats counters */
SHL_API int shl_reset(shl_t *h, unsigned what);

/*
 * Validate the whole segment (header, both configuration slots' active
 * one, runtime words).  Returns 0 when sound, else -EUCLEAN (or the attach
 * codes) with every problem found written to `report` one per line.
 */
SHL_API int shl_check(shl_t *h, char *report, size_t report_len);

/* ------------------------------------------------------------------ */
/* Admission                                                            */
/* ------------------------------------------------------------------ */

/*
 * Map a model id ("claude-sonnet-4-5-20250929") to its model entry: the
 * exact id if configured, else the longest matching prefix pattern
 * ("claude-sonnet-4-5*").  An id no entry matches gets the configuration's
 * unknown_model policy: the catch-all pool's entry ({"pool": NAME}),
 * -ESRCH ("pass": not governed) or -ENOMSG ("refuse": do not send it); and
 * it is noted in the segment's table of unknown ids (shl_unknown_list).
 * The ids "count_tokens" and "message_batches" (the request/response
 * component's names for those endpoints) never go to the catch-all.
 * Returns the entry index (>= 0), -ESRCH or -ENOMSG.
 * Uses a process-local lock-free hash table; no scan of shared memory.
 * The index may be cached: it stays valid across applies while its entry
 * stays configured (see shl_apply for the one exception).
 */
SHL_API int shl_lookup(shl_t *h, const char *model_id);

/* The pool index (0..SHL_MAX_POOLS-1) of a model entry, or a negative code. */
SHL_API int shl_model_pool(shl_t *h, int model);

/* The cost of a request, as known before it is sent. */
typedef struct shl_cost {
	uint64_t input_tokens;   /* estimated uncached input tokens */
	uint64_t cache_write_5m; /* tokens expected to be written to the 5 min cache */
	uint64_t cache_write_1h; /* tokens expected to be written to the 1 h cache */
	uint64_t cache_read;     /* tokens expected to be read from cache */
	uint64_t max_tokens;     /* the request's max_tokens */
	int batch;               /* non-zero: Message Batches API pricing (x0.5) */
} shl_cost;

/* What the server reported it used (the response's usage object). */
typedef struct shl_usage {
	uint64_t input_tokens;
	uint64_t output_tokens;
	uint64_t cache_write_5m;
	uint64_t cache_write_1h;
	uint64_t cache_read;
} shl_usage;

/*
 * An admission, to be settled or cancelled exactly once.  Plain data
 * owned by the caller; fields are informative, do not modify them.
 */
typedef struct shl_ticket {
	int32_t model;         /* model entry index */
	int32_t pool;          /* pool index */
	uint32_t state;        /* 1 = open, 2 = settled/cancelled */
	uint32_t batch;
	uint64_t rpm;          /* units held in each bucket */
	uint64_t itpm;
	uint64_t otpm;
	int64_t spend;         /* spend units reserved (worst case) */
	uint32_t month;        /* month index the spend was counted in */
	uint32_t pad;          /* the pool-name check hash: settle and cancel touch
				  the pool's buckets only if the pool at t->pool
				  still has this name (an apply may have removed
				  or replaced it) */
	uint64_t generation;   /* configuration generation at admission */
	int64_t admitted_at;   /* the release time: shl_now() at admission, or for
				  a reservation the instant it may be sent */
	uint64_t full_at[3];   /* each bucket's refund mark: its "full again" time
				  right after the take plus the bucket's refund
				  ledger as read at the take (mod 2^64), so that
				  mark - ledger now is the take's end moved down by
				  every refund since; a refund never gives back more
				  than is left of the take by that end, and nothing
				  once the generation has changed */
} shl_ticket;

/* Why a request was not admitted, and when it could be. */
typedef struct shl_refusal {
	int dim;          /* enum shl_dim that refused */
	int pool;         /* pool index */
	int64_t wait_ns;  /* time until it could be admitted (0 if never) */
	uint64_t need;    /* units the request needs in that dimension */
	uint64_t capacity;/* that dimension's capacity (burst or cap) */
} shl_refusal;

/*
 * Try to admit, never blocking: all of RPM, ITPM, OTPM and spend, or
 * nothing.  Returns 0 and fills `t`; or -EAGAIN with `why` saying which
 * dimension refused and the exact wait; or -E2BIG (larger than a bucket),
 * -EDQUOT (spend cap reached for the month), -ESRCH, -EACCES (read-only).
 * `why` may be NULL.
 */
SHL_API int shl_try(shl_t *h, int model, const shl_cost *cost, shl_ticket *t,
		    shl_refusal *why);

/*
 * Admit, waiting in line: shl_reserve, then a sleep (clock_nanosleep, not
 * spinning) until the release, then shl_start's checks; a hold that
 * arrived while it slept and covers the release (a 429 elsewhere) cancels
 * the place and reserves again behind the hold.  At most `timeout_ns` (0:
 * do not wait; negative, or too large for the clock to reach, e.g.
 * INT64_MAX: no deadline).  Returns 0 (t->admitted_at: the release);
 * -ETIMEDOUT at once, taking nothing, when the release is past the
 * deadline (why->wait_ns says when it would have been); -E2BIG, -EDQUOT
 * (also when the server said the cap is reached while it slept), -ESRCH,
 * -EACCES as shl_try.
 */
SHL_API int shl_acquire(shl_t *h, int model, const shl_cost *cost,
			int64_t timeout_ns, shl_ticket *t, shl_refusal *why);

/*
 * Fair waiting: take a place in line.  Like shl_acquire, but it never
 * sleeps: a request that cannot be admitted now reserves its share of the
 * future in every bucket of its pool (GCRA expresses a reservation as a
 * take whose start lies ahead) and is admitted at its release time,
 * t->admitted_at (shl_now() scale; <= now when it may go at once).  Later
 * requests queue behind it, so a large request is never starved by small
 * ones, and its wait is bounded by the work ahead of it.  The caller waits
 * until t->admitted_at in whatever way suits it (a sleep, a timer of an
 * event loop, holding a transfer back) and then calls shl_start.
 * Returns 0 (ticket open); -ETIMEDOUT when the release would come later
 * than `max_wait_ns` from now (nothing is taken; why->wait_ns says when it
 * could have been; max_wait_ns < 0: no deadline, 0: only now); -E2BIG,
 * -EDQUOT, -ESRCH, -EACCES as shl_try; -EAGAIN only when the pool's words
 * kept moving under it beyond reason (a hostile writer).  The guarantee
 * of shl_try holds for release times: over any interval T a pool admits
 * at most burst + rate x T with each admission counted at its admitted_at.
 * The worst-case spend is reserved at once, and the pool counts the
 * request admitted (and `waited` when its release lies ahead).  A
 * release is never later than (the work reserved ahead of it in that
 * bucket + its own cost - the burst) / the rate from now, in each bucket,
 * or the end of a hold.  Give a place up with shl_cancel: it gives back
 * what lies after the last release queued in the pool (all of it when
 * nothing is queued behind it).
 */
SHL_API int shl_reserve(shl_t *h, int model, const shl_cost *cost, int64_t max_wait_ns,
			shl_ticket *t, shl_refusal *why);

/*
 * The moment a reserved request is really sent: check again what may have
 * changed while it waited.  Returns 0 (send it); -EAGAIN when the pool is
 * now held back by a server retry-after (why->dim SHL_DIM_HOLD,
 * why->wait_ns: until the hold ends) or the release time has not come
 * (why->dim SHL_DIM_NONE, why->wait_ns: until t->admitted_at); -EDQUOT
 * when the server has said the spend cap is reached (why->dim
 * SHL_DIM_SPEND); -EALREADY for a closed ticket.  On a negative return the
 * ticket is still open: before its release, call shl_start again at
 * t->admitted_at; for a hold, cancel it (shl_cancel) and reserve again
 * (after why->wait_ns); for -EDQUOT, cancel it.
 */
SHL_API int shl_start(shl_t *h, const shl_ticket *t, shl_refusal *why);

/* The index of the pool named `name` in the live configuration, or -ESRCH. */
SHL_API int shl_pool_find(shl_t *h, const char *name);

/*
 * Routing across pools.  `models` is an ordered preference list of model
 * entries (from shl_lookup).  The request is admitted on the first model
 * whose pool can take it now while keeping at least `min_free` (0..1) of
 * each of that pool's buckets free (min_free x burst, rounded up); if none
 * can, it reserves (shl_reserve, keeping min_free) on the model released
 * earliest (ties: the earlier preference), if that is within `timeout_ns`
 * (as in shl_acquire), sleeps until the release and checks as shl_start
 * does (a hold or the spend cap that arrived meanwhile: cancel, and try
 * the list again).
 * Models whose pool the request can never fit (-E2BIG) are skipped, and so
 * are entries that name no model entry (-ESRCH, e.g. a failed shl_lookup
 * passed through), and models whose worst-case price does not fit the
 * spend cap that is left (-EDQUOT: prices differ by model, so a cheaper
 * model later in the list may still fit).  Each attempt is a full
 * all-or-nothing admission, so routing never over-admits.  Ties go to the
 * earlier preference; a caller that waits takes its place in that pool's
 * line, as shl_acquire does.
 *
 * Returns the index in `models` of the chosen model (>= 0; the ticket names
 * its model and pool).  Otherwise, in this order of precedence:
 *   -ETIMEDOUT            some model could be admitted by waiting, but not
 *                         within the timeout (for 0: not at once) (`why`
 *                         from the preference whose wait was shortest);
 *   -EDQUOT               no model can wait its way in, and at least one
 *                         fits its pool but not the spend cap left (`why`
 *                         from the first of these: dim SHL_DIM_SPEND, need
 *                         = month's spend + its price, capacity = the cap);
 *                         also at once, whatever the other models, when the
 *                         month is marked exhausted (shl_spend_exhaust);
 *   -E2BIG                the request fits none of the models named (`why`
 *                         from one of them);
 *   -ESRCH                no entry names a model (`why` untouched);
 * or an error that is not a refusal (-EINVAL, -EACCES, -EUCLEAN,
 * -EOVERFLOW) at once.
 */
typedef struct shl_route_policy {
	double min_free;    /* fraction of each bucket to leave free, 0..1 */
	int64_t timeout_ns; /* 0: do not wait (-ETIMEDOUT); < 0: no deadline */
} shl_route_policy;

SHL_API int shl_route(shl_t *h, const int *models, int n, const shl_cost *cost,
		      const shl_route_policy *policy, shl_ticket *t, shl_refusal *why);

/*
 * Settle an admission with what the server reported: charge or refund the
 * difference in each bucket and in spend, and count the usage.
 */
SHL_API int shl_settle(shl_t *h, shl_ticket *t, const shl_usage *u);

/*
 * Settle an admission whose response was served by another model than the
 * one admitted (a server-side fallback: the response's `model` differs
 * from the request's).  `served` is the serving model's entry (from
 * shl_lookup of the response's model).  The usage is charged to the pool
 * and prices of the serving model: when that is the admitted pool, as
 * shl_settle with the serving model's prices; otherwise the admission is
 * given back to its pool (as shl_cancel) and the serving pool is charged
 * one request and the usage, as debt (its buckets may go below zero;
 * later admissions there wait for it), with the spend at the serving
 * model's prices.  `served` < 0 (no entry for that model) or equal to
 * t->model: exactly shl_settle.
 */
SHL_API int shl_settle_as(shl_t *h, shl_ticket *t, int served, const shl_usage *u);

/* Refund everything of an admission whose request was never sent. */
SHL_API int shl_cancel(shl_t *h, shl_ticket *t);

/* The worst-case spend (units) a cost would reserve on a model entry. */
SHL_API int shl_price(shl_t *h, int model, const shl_cost *cost,
		      int64_t *units);

/* The spend (units) of a usage on a model entry. */
SHL_API int shl_price_usage(shl_t *h, int model, const shl_usage *u, int batch,
			    int64_t *units);

/* ------------------------------------------------------------------ */
/* Feedback from the server                                             */
/* ------------------------------------------------------------------ */

/* Refuse the whole pool, host-wide, for `duration_ns` from now
 * (a 429's retry-after).  Extends, never shortens, an existing hold. */
SHL_API int shl_hold(shl_t *h, int pool, int64_t duration_ns);

/* The server says `remaining` units of `dim` remain: lower the bucket to
 * at most that (never raises it). */
SHL_API int shl_clamp(shl_t *h, int pool, int dim, uint64_t remaining);

/* The server refused for the spend cap: mark this month's spend exhausted
 * until the month rolls over. */
SHL_API int shl_spend_exhaust(shl_t *h);

/*
 * The server's limits for `pool`, per minute, as its response headers
 * report them: anthropic-ratelimit-{requests,input-tokens,output-tokens}-
 * limit, in the order RPM, ITPM, OTPM (0: that header was absent; that
 * dimension keeps what was observed before).  Call it with every response
 * that carries them, for the pool of the model that served it.  Costs two
 * loads when nothing changed.  When a limit differs from what the segment
 * recorded, it is recorded (shmlimit-stat shows configured vs observed),
 * and the pool's bucket runs at
 *   follow_server true (default): the observed limit, up or down;
 *   follow_server false:          the lower of configured and observed;
 * with bursts scaled to it.  A change of the rate publishes a new
 * configuration generation (as shl_apply does, without a restart): every
 * process adopts it at its next call; a bucket never has more available
 * after the change than before (down: it keeps its deficit in units; up:
 * it keeps the units it has and fills to the larger burst at the new
 * rate); tickets admitted before give nothing back to the buckets when
 * settled or cancelled (their spend still settles), so the change never
 * lets more through than either rate would.  An apply that changes a
 * pool's configured limits forgets what was observed for it.  The
 * unknown_model catch-all pool keeps the lowest limits any of its models
 * reported (they may belong to different server pools): it only goes down.
 * Returns 1 when the rate changed, 0 when not, or -EINVAL, -EACCES,
 * -EOVERFLOW (a limit over 10^12), -EUCLEAN.
 */
SHL_API int shl_observe_limits(shl_t *h, int pool, const uint64_t limit_per_min[3]);

/*
 * Unknown model ids.  shl_unknown_note: 1 when `model_id` matches no
 * configured entry (it goes to the unknown_model policy) and this process
 * has not been told so before through this call (print one line on
 * stderr then), 2 when unknown and already noted, 0 when a configured
 * entry matches.  (shl_lookup records the id in the segment's table.)
 * shl_unknown_list: the ids in the table (at most 12;
 * `seen` counts lookups that met one, about one per process and
 * configuration), returns how many were written (<= max).
 */
typedef struct shl_unknown_model {
	char id[64];
	uint64_t seen;
} shl_unknown_model;
SHL_API int shl_unknown_note(shl_t *h, const char *model_id);
SHL_API int shl_unknown_list(shl_t *h, shl_unknown_model *out, int max);

/* ------------------------------------------------------------------ */
/* Reading Messages API requests and responses                          */
/* ------------------------------------------------------------------ */

/*
 * One component reads what a request will cost and what its response
 * says, for every way a worker comes in: the preload shim (libcurl), the
 * Python transports (httpx) and the Node.js fetch wrapper all call these,
 * so a request is estimated, admitted and settled the same way whichever
 * client sent it.  An exchange is one request and its response; it is
 * owned by one thread at a time.
 *
 *   kind = shl_ex_kind("POST", path)              governed?  (SHL_EX_NONE: pass)
 *   shl_ex_open(h, kind, body, len, &x, &err)     read the body: model, estimate
 *   shl_ex_reserve(h, x, max_wait, &release, &why)   a place in line
 *   ... wait until release without blocking the caller's loop ...
 *   shl_ex_start(h, x, &why)                      holds / spend again; then send
 *   shl_ex_status / shl_ex_header / shl_ex_body   the response as it arrives
 *   shl_ex_finish(h, x, sent)                     settle (or cancel), feedback
 *   shl_ex_free(x)
 */
typedef struct shl_exchange shl_exchange;

enum shl_ex_kind {
	SHL_EX_NONE = 0,     /* not a governed request: pass it through */
	SHL_EX_MESSAGES = 1, /* POST /v1/messages */
	SHL_EX_COUNT = 2,    /* POST /v1/messages/count_tokens */
	SHL_EX_BATCH = 3     /* POST /v1/messages/batches */
};

/* The kind of request a method and URL path (query allowed) name. */
SHL_API int shl_ex_kind(const char *method, const char *path);

/*
 * Read a request body (JSON, not necessarily NUL-terminated) of `kind`.
 * Returns 0 and a new exchange; -EINVAL (with `err`) when the body is not
 * a request this library can read (or `kind` is SHL_EX_NONE); -ESRCH (with
 * `err`) when no model entry governs it (a Messages model without a pool;
 * count_tokens or batches without a `count_tokens` / `message_batches`
 * entry): pass it through; -ENOMSG (with `err`) when the model matches no
 * entry and the configuration's unknown_model policy refuses it: do not
 * send it; -ENOMEM.  (A model no entry matches under a catch-all pool
 * opens on that pool; shl_unknown_note says whether to name it.)  The input estimate (documented in
 * preload/README.md, "What a request is charged") is scaled by the pool's
 * learned ratio (shl_pool_stats.est_ratio; before the pool's first
 * settlement a prior of 1.25, lowered for a body it would lift above the
 * ITPM bucket) for Messages requests.  The
 * handle must outlive the exchange.
 */
SHL_API int shl_ex_open(shl_t *h, int kind, const char *body, size_t len, shl_exchange **out,
			shl_err *err);
SHL_API const char *shl_ex_model(const shl_exchange *x); /* the request's model id */
SHL_API int shl_ex_stream(const shl_exchange *x);       /* 1: "stream": true */
SHL_API int shl_ex_cost(const shl_exchange *x, shl_cost *out); /* the cost admitted on */
SHL_API const shl_ticket *shl_ex_ticket(const shl_exchange *x); /* NULL until admitted */
/* The model entry the exchange is admitted on (shl_lookup's index; the
 * ticket's once admitted), and the ratio its estimate was scaled by (1.0
 * for count_tokens and batches). */
SHL_API int shl_ex_model_entry(const shl_exchange *x);
SHL_API double shl_ex_ratio(const shl_exchange *x);

/*
 * shl_reserve for the exchange's request: a place in line, *release_ns
 * (t->admitted_at) the instant it may be sent; -ETIMEDOUT at once when that
 * is further than `max_wait_ns` (< 0: no limit).
 */
SHL_API int shl_ex_reserve(shl_t *h, shl_exchange *x, int64_t max_wait_ns, int64_t *release_ns,
			   shl_refusal *why);
/* shl_start for the exchange; on -EAGAIN / -EDQUOT the reservation has
 * been cancelled (reserve again after why->wait_ns, or give up). */
SHL_API int shl_ex_start(shl_t *h, shl_exchange *x, shl_refusal *why);
/*
 * Where the exchange's place lies in each bucket of its pool (index: enum
 * shl_dim), in ns from its release, read right after the reservation
 * (refunds since only make debt and full smaller, the safe way):
 *   debt  how long the bucket stays in debt after the release without this
 *         request (0: full at the release).  Sent later than that, the
 *         request reaches a server whose bucket sat full meanwhile and
 *         dropped refill that the line laid after it counted on;
 *   edge  how much later than the release the bucket alone would have let
 *         it go (<= 0; 0 in the bucket that set the release);
 *   full  how long after the release the bucket is full again, with it;
 * INT64_MIN in all three for a bucket it does not take.  What the preload
 * shim moves its held multi transfers by when one is sent late
 * (preload/hold.c).  0, or -EINVAL with no open ticket.
 */
typedef struct shl_place {
	int64_t debt[3], edge[3], full[3];
} shl_place;
SHL_API int shl_ex_place(shl_t *h, const shl_exchange *x, shl_place *out);
/*
 * The caller admitted the request itself (shl_acquire, or shl_route, which
 * may have chosen another model): the exchange settles that ticket (a
 * copy; the caller's is no longer to be settled).  -EALREADY when the
 * exchange already holds one, -EINVAL when `t` is not open.
 */
SHL_API int shl_ex_adopt(shl_exchange *x, const shl_ticket *t);

/* The response, as it arrives: its status, each header (name and value, or
 * a raw header line, status lines included, with value NULL), and body
 * bytes in any chunking. */
SHL_API void shl_ex_status(shl_exchange *x, int status);
SHL_API void shl_ex_header(shl_exchange *x, const char *name, size_t name_len,
			   const char *value, size_t value_len);
SHL_API void shl_ex_body(shl_exchange *x, const void *p, size_t len);
/* libcurl's CURLOPT_HEADER: every raw header line also arrives through
 * shl_ex_body, just before shl_ex_header; set before the response. */
SHL_API void shl_ex_header_in_body(shl_exchange *x, int on);

/*
 * The transfer is over (completed, failed, or closed early by the reader):
 * settle with the usage read (JSON or SSE, cumulative deltas), or, when
 * `sent` is 0 (no byte reached the server) and no status came, cancel.
 * The rules, in order (preload/README.md, "What is charged at settlement"):
 *   - a 429: the spend-cap one (error_code enforced_spend_limit_reached)
 *     stops the month's spend; any other holds the pool for retry-after-ms
 *     or retry-after (1 s when absent, 1 h at most; with a retry-after the
 *     hold starts as soon as the headers are over); both count in
 *     server_429.  A 529 holds the pool for its retry-after (1 s when
 *     absent), not counted as a 429;
 *   - count_tokens: zero usage; a batch accepted (2xx): its estimate;
 *   - usage read: that usage (a stream cut by an error event before its
 *     final message_delta: at least the output its text deltas showed; cache writes without a
 *     5 min / 1 h breakdown split by the request's own breakpoints);
 *   - a 2xx without believable usage: the estimate and max_tokens;
 *   - no status but sent: the input estimate; an error status: nothing but
 *     the request;
 *   - then the anthropic-ratelimit-*-remaining headers clamp the buckets,
 *     as of when they arrived, plus the output generated since, but only
 *     when the count does not fit the segment's own account as of the
 *     request's release (the server counted at some instant in between;
 *     token counts are rounded to the thousand): each token
 *     is charged once, whichever of settle and clamp came first (the
 *     requests and output-tokens counts already clamp when the headers are
 *     over: the blank line of raw headers, or the first body bytes; the
 *     input count, of a stream, at its message_start);
 *   - a usage read on a 2xx teaches the pool's estimate ratio;
 *   - a response whose `model` (JSON, or the stream's message_start) is not
 *     the request's (a server-side fallback) is settled on the serving
 *     model's pool and prices (shl_settle_as), and the feedback above goes
 *     to that pool;
 *   - last, the anthropic-ratelimit-*-limit headers are recorded for that
 *     pool and followed (shl_observe_limits).
 * Returns SHL_EX_SETTLED, SHL_EX_ESTIMATED (usage unreadable: charged the
 * estimate), SHL_EX_CANCELLED, SHL_EX_UNADMITTED (no ticket: nothing to
 * do), or a negative code; idempotent (later calls return the same).
 */
#define SHL_EX_SETTLED 0
#define SHL_EX_ESTIMATED 1
#define SHL_EX_CANCELLED 2
#define SHL_EX_UNADMITTED 3
SHL_API int shl_ex_finish(shl_t *h, shl_exchange *x, int sent);
/*
 * What finishing the exchange gave back to each bucket of its pool (index:
 * enum shl_dim), in ns of that bucket's line: a settle below the estimate,
 * a cancel (the refund rules: README.md, "Refunds never over-credit").
 * Every place taken in that pool after this exchange's, and still waiting,
 * now lies that much sooner in the bucket: a caller holding such places
 * may release them that much earlier, in the buckets each one takes
 * (shl_ex_place's edge moves down by it).  Gives by places taken after a
 * waiting one do not move it: count only the exchanges placed before it.
 * What the preload shim does for its held multi transfers (preload/hold.c,
 * "Early release").  0 and the three amounts (0 when nothing was given),
 * or -EINVAL before shl_ex_finish.
 */
SHL_API int shl_ex_given(const shl_exchange *x, int64_t given_ns[3]);
/*
 * Move a waiting reservation's release sooner, to *release_ns (the caller
 * counted the gives of the places before it: shl_ex_given), so that
 * shl_ex_start accepts it from then on.  Never later than it was, never
 * before now, and never before the latest over its buckets of its end less
 * every refund since its take less the bucket's tolerance (what the word
 * allows even counting every give, its own line's or not).  *release_ns
 * is set to the release it now has.  0; -EINVAL with no open reservation;
 * -ESTALE when its place cannot be read (an apply since, a cluster pool):
 * unchanged.
 */
SHL_API int shl_ex_advance(shl_t *h, shl_exchange *x, int64_t *release_ns);
/*
 * The early release in one call, for a caller holding waiting exchanges
 * (the preload shim, the Python transports, Node's governedFetch): `x`
 * waits with *place (shl_ex_place's right after its reservation, then as
 * this call leaves it); `given_ns` is what an exchange placed before it in
 * its line (the same segment and pool, its place taken earlier) gave back
 * at its finish (shl_ex_given).  Its edges move down by the gives; when a
 * bucket set its release (an edge of 0: not a hold, not the clock at its
 * placing), the release moves to the latest edge, as far as
 * shl_ex_advance allows, and the place is restated from the new release
 * (debt and full at least 0).  *release_ns is set to the release it now
 * has.  1 when it moved, 0 when not; -EINVAL (no open reservation, NULL
 * arguments), -ESTALE (shl_ex_advance's): unchanged.
 */
SHL_API int shl_ex_follow(shl_t *h, shl_exchange *x, const int64_t given_ns[3], shl_place *place,
			  int64_t *release_ns);
/*
 * The same for tickets (shl_reserve's, waiting for t->admitted_at), for
 * bindings whose explicit API waits (Python's Limiter.acquire): settle or
 * cancel saying what each bucket got back (shl_ex_given's meaning; 0 when
 * nothing, also on an error); where an open ticket lies in its buckets
 * (shl_ex_place's); and a waiting ticket moved by the gives of a ticket
 * placed before it in its line (shl_ex_follow's rule; 1 when it moved,
 * t->admitted_at is then its new release, which shl_start accepts).
 */
SHL_API int shl_settle_given(shl_t *h, shl_ticket *t, const shl_usage *u, int64_t given_ns[3]);
SHL_API int shl_cancel_given(shl_t *h, shl_ticket *t, int64_t given_ns[3]);
SHL_API int shl_ticket_place(shl_t *h, const shl_ticket *t, shl_place *out);
SHL_API int shl_follow(shl_t *h, shl_ticket *t, const int64_t given_ns[3], shl_place *place,
		       int64_t *release_ns);
/* The usage the response reported (what settlement charged when it was
 * read): 0, or -ENODATA when none was read and believed. */
SHL_API int shl_ex_usage(const shl_exchange *x, shl_usage *out);
/* Free the exchange.  One still admitted and not finished is finished
 * first as sent (through the handle it was opened on). */
SHL_API void shl_ex_free(shl_exchange *x);

/*
 * Statistics as a JSON document (malloc'd, free() it): the same fields as
 * `shmlimit-stat --json`.  For bindings that want plain data.
 */
SHL_API char *shl_stats_json(shl_t *h);

/* The same document for a snapshot taken with shl_stats_get, `name` as the
 * segment's name (what `shmlimit-stat --json` prints). */
struct shl_stats;
SHL_API char *shl_stats_to_json(const struct shl_stats *s, const char *name);

/* ------------------------------------------------------------------ */
/* Statistics                                                           */
/* ------------------------------------------------------------------ */

typedef struct shl_pool_stats {
	int index;                        /* the pool's index (shl_ticket.pool) */
	char name[SHL_NAME_MAX + 1];
	uint64_t limit[SHL_NBUCKETS];     /* per minute, configured */
	uint64_t burst[SHL_NBUCKETS];     /* capacity (at the effective rate) */
	double available[SHL_NBUCKETS];   /* units available now (< 0: in debt) */
	uint64_t used_last_minute[SHL_NBUCKETS]; /* settled use, last 60 s */
	int64_t prices[5];                /* units/token: input, output, cw5m, cw1h, read */
	int otpm_reserve;                 /* 1: reserve max_tokens, 0: actual only */
	int cache_reads_count;            /* 1: cache reads count toward ITPM */
	int64_t hold_ns;                  /* > 0: held back for this long */
	uint64_t admitted, refused, waited, settled, cancelled;
	uint64_t server_429;              /* 429s from the server, spend-cap ones included */
	uint64_t tokens_in, tokens_out, cache_read, cache_write;
	int64_t spend;                    /* units settled on this pool, lifetime */
	double est_ratio;                 /* the estimate ratio (1.25, the prior: none learned yet) */
	uint64_t est_samples;             /* settlements it was learned from */
	/* Multi-host mode only (zero otherwise): */
	int64_t lease_ns[SHL_NBUCKETS];   /* this host's leased credit not yet taken,
					     ns of the bucket (units x 60e9 / limit);
					     < 0: owed */
	uint64_t lease_refills;           /* leases taken from Redis */
	uint64_t lease_short;             /* admissions refused for lack of lease */
	uint64_t lease_fallback;          /* leases granted at the fallback share */
	uint64_t observed[SHL_NBUCKETS];  /* per minute, as the server reported (0: not yet) */
	uint64_t effective[SHL_NBUCKETS]; /* per minute, what the bucket runs at */
	int follow_server;                /* 1: the bucket follows the observed limits */
	int provisional;                  /* 1: configured limits are a preset's stand-ins */
	int64_t observed_unix_ns;         /* when the observed limits last changed, 0 never */
} shl_pool_stats;

typedef struct shl_stats {
	uint64_t generation;
	int64_t created_unix_ns;     /* segment creation, wall clock */
	int64_t now_ns;              /* shl_now() of the snapshot */
	int npools;
	int nmodels;
	int64_t spend_month;         /* units spent this month */
	int64_t spend_cap;           /* units; < 0 when there is no cap */
	int spend_exhausted;         /* server said the cap is reached */
	int month_year, month;       /* the month counted (UTC), month 1..12 */
	int64_t month_resets_unix;   /* next 00:00 UTC on the 1st, seconds */
	int unknown_model;           /* 0 pass, 1 refuse, 2 catch-all pool */
	int unknown_pool;            /* index in pools[] of the catch-all, else -1 */
	shl_pool_stats pools[SHL_MAX_POOLS];
	/* Workers refused at attach after opening the segment read-write
	 * (another user's segment not created for a group: -EPERM; a corrupt
	 * configuration: -EUCLEAN), and the last of them.  Failures before
	 * the file could be written (no segment, permission denied by its
	 * mode, not a libshmlimit segment) cannot be recorded here. */
	uint64_t attach_failures;
	uint64_t attach_owner_refusals; /* of which -EPERM */
	int64_t attach_last_unix_ns;
	uint32_t attach_last_uid, attach_last_pid;
	int attach_last_error;          /* negative errno */
	/* Multi-host mode (a "cluster" configuration; all zero otherwise): */
	int cluster;                 /* 1: the pools are governed by Redis leases */
	int cluster_redis_up;        /* the agent's last Redis call succeeded */
	int cluster_fallback;        /* leases granted at the static share */
	int cluster_hosts;           /* hosts seen in the last 10 s */
	uint64_t cluster_redis_ops;  /* Redis commands this host's agent sent */
	uint64_t cluster_refills;    /* leases taken from Redis */
	int64_t cluster_agent_age_ns;/* since the agent's last loop; -1: no agent */
	int64_t cluster_rtt_ns;      /* the last lease call's round trip */
	int64_t cluster_spend_budget;/* spend units leased for this month */
} shl_stats;

/* A snapshot: no value is torn between two updates (the month's spend
 * never shows a lease moved half-way); counts of different pools and
 * fields may come from instants a few microseconds apart.  pools[0 ..
 * npools-1] are the pools in use, in index order, without gaps: after an
 * apply removed a pool, pools[k].index (the index tickets, refusals,
 * shl_hold and shl_clamp use) is not k.  Find a pool by its index there,
 * or by name with shl_pool_find. */
SHL_API int shl_stats_get(shl_t *h, shl_stats *out);

/* ------------------------------------------------------------------ */
/* Many hosts                                                           */
/* ------------------------------------------------------------------ */

/*
 * The per-host agent of multi-host mode (README "Many hosts"): keeps the
 * segment supplied with leases of the organisation's buckets and spend in
 * Redis, and carries 429 holds and the spend-cap mark between hosts.  Runs
 * until `*stop` becomes non-zero or `run_ns` has passed (0: no limit).
 * hiredis is loaded at run time (-ENOENT with a message when absent).
 * `shmlimit-agent SEGMENT` is this call.
 */
typedef struct shl_agent_opts {
	int64_t run_ns;          /* stop after this long; <= 0: until *stop */
	volatile int *stop;      /* non-zero: stop (e.g. set by a signal handler) */
	const char *host_id;     /* this host's name in Redis; NULL: hostname:segment */
	int verbose;             /* 1: a stderr line when Redis is unreachable */
} shl_agent_opts;

SHL_API int shl_agent_run(const char *segment, const shl_agent_opts *opts, shl_err *err);

/* ------------------------------------------------------------------ */
/* Clock                                                                */
/* ------------------------------------------------------------------ */

/* CLOCK_BOOTTIME in ns: system-wide, never goes backwards, counts suspend. */
SHL_API int64_t shl_now(void);

#ifdef __cplusplus
}
#endif
#endif /* SHMLIMIT_H */
