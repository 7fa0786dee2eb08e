/*
 * config.c - the configuration: JSON in and out, presets, validation.
 *
 * A configuration is the same struct that lives in a segment's
 * configuration slot, so what is parsed is exactly what is published and
 * validated again when any process reads it back from shared memory (where
 * another process could have scribbled on it).  Every error names the key
 * path that is wrong and what was expected, e.g.
 * "pools[2].itpm: expected a positive integer".
 *
 * The format, every key once:
 *   spend_cap_usd      number >= 0 in whole cents, or null / absent for no cap
 *   pools[]            1..64 objects:
 *     name             1..31 of [A-Za-z0-9._-], unique
 *     rpm, itpm, otpm  positive integers, per minute
 *     burst            optional object {rpm, itpm, otpm}: bucket capacities;
 *                      default rpm: one second's worth rounded down (at
 *                      least 1), itpm/otpm: one minute's worth
 *     otpm_mode        "actual" (default) or "reserve"
 *     cache_reads_count  boolean, default false
 *     margin           0..0.5, default 0.002: every bucket's interval is
 *                      lengthened by 1 + margin (room for network jitter)
 *     prices           {input, output, cache_write_5m, cache_write_1h,
 *                      cache_read}: USD per million tokens, >= 0, at most
 *                      3 decimals
 *     follow_server    boolean, default true: adopt the limits the server's
 *                      headers report (false: they only ever lower the pool)
 *     provisional      boolean, default false: the limits are stand-ins
 *                      (the lowest published numbers for the model class)
 *   unknown_model      "pass" (default), "refuse", or {"pool": NAME}: what a
 *                      model id no entry matches gets (a catch-all pool is
 *                      kept as a hidden model entry "*", SHL_MF_CATCHALL)
 *   models[]           0..256 objects (255 with a catch-all pool):
 *     match            a model id, or a prefix ending in '*'; unique
 *     pool             the name of a pool
 *     prices           optional, overrides the pool's prices for this model
 * Nothing but white space may follow the document.
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "internal.h"

#define LIMIT_MAX 1000000000000ULL /* per minute, any dimension */
#define PRICE_MAX_USD 100000.0     /* per million tokens */
#define TOL_MAX (1ULL << 62)       /* burst * interval, ns */
#define MARGIN_MAX_PPM 500000u     /* pools[].margin <= 0.5 */

static const char *const price_keys[SHL_NPRICES] = {"input", "output", "cache_write_5m",
						    "cache_write_1h", "cache_read"};
static const char *const dim_keys[SHL_NBUCKETS] = {"rpm", "itpm", "otpm"};

#define FNV_PRIME 0x100000001b3ULL
/* FNV-1a over eight zero bytes multiplies by the prime eight times. */
#define FNV_PRIME8 (FNV_PRIME * FNV_PRIME * FNV_PRIME * FNV_PRIME * FNV_PRIME * FNV_PRIME * \
		    FNV_PRIME * FNV_PRIME)

uint64_t shl__slot_checksum(const struct shl_cfg_slot *s)
{
	/* FNV-1a over the slot with the checksum field taken as zero.  Most
	 * of the 41 KiB are zero (unused pools and models, name padding):
	 * a zero word is one multiplication, not eight, with the same result.
	 * Every attach and every new generation checksums the slot, so this
	 * is most of a short-lived process's attach (a curl under the shim). */
	const unsigned char *p = (const unsigned char *)s;
	const size_t off = __builtin_offsetof(struct shl_cfg_slot, checksum);
	_Static_assert(__builtin_offsetof(struct shl_cfg_slot, checksum) % 8 == 0 &&
			       sizeof(struct shl_cfg_slot) % 8 == 0,
		       "the checksum runs in whole words");
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < sizeof(*s); i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w == 0 || i == off) {
			h *= FNV_PRIME8;
			continue;
		}
		for (size_t k = 0; k < 8; k++)
			h = (h ^ p[i + k]) * FNV_PRIME;
	}
	return h;
}

/*
 * ns per unit: 60 s / limit, lengthened by the pool's margin (parts per
 * million), rounded up: rounding can only under-admit.  limit <= 1e12 and
 * ppm <= 5e5, so the product fits 128 bits with room to spare.
 */
static uint64_t interval_of(uint64_t limit, uint32_t margin_ppm)
{
	unsigned __int128 num = (unsigned __int128)60000000000ULL * (1000000u + margin_ppm);
	unsigned __int128 den = (unsigned __int128)limit * 1000000u;
	return (uint64_t)((num + den - 1) / den);
}

uint64_t shl__interval(uint64_t limit, uint32_t margin_ppm)
{
	return interval_of(limit, margin_ppm);
}

/* RPM: one second's worth, rounded down, at least 1.  Down, not up: the
 * server enforces RPM over short windows too (60 RPM as one request per
 * second), so 119 RPM must not start with a burst of 2 in one second. */
static uint64_t default_burst(int d, uint64_t limit)
{
	if (d == SHL_DIM_RPM)
		return limit < 60 ? 1 : limit / 60;
	return limit;
}

static int name_ok(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

static int match_ok(const char *s)
{
	size_t n = strnlen(s, SHL_PATTERN_MAX + 1);
	if (n == 0 || n > SHL_PATTERN_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\')
			return 0;
		if (c == '*' && i != n - 1)
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* Validation of a slot (parsed, or read back from shared memory).      */
/* ------------------------------------------------------------------ */

int shl__slot_validate(const struct shl_cfg_slot *s, shl_err *e)
{
	if (s->npools == 0 || s->npools > SHL_MAX_POOLS) {
		shl__err(e, "config.npools: %u, expected 1..%d", s->npools, SHL_MAX_POOLS);
		return -EUCLEAN;
	}
	if (s->nmodels > SHL_MAX_MODELS) {
		shl__err(e, "config.nmodels: %u, expected 0..%d", s->nmodels, SHL_MAX_MODELS);
		return -EUCLEAN;
	}
	if (s->spend_cap < -1 || s->spend_cap > (int64_t)SHL_SPEND_MASK) {
		shl__err(e, "config.spend_cap: %lld out of range", (long long)s->spend_cap);
		return -EUCLEAN;
	}
	int used = 0, catchall = 0;
	for (unsigned i = 0; i < s->npools; i++) {
		const struct shl_pool_cfg *p = &s->pools[i];
		if (!(p->flags & SHL_PF_USED))
			continue;
		used++;
		if (p->flags & ~(uint32_t)SHL_PF_ALL) {
			shl__err(e, "config.pools[%u].flags: unknown bits 0x%x", i, p->flags);
			return -EUCLEAN;
		}
		if (memchr(p->name, 0, sizeof(p->name)) == NULL || !name_ok(p->name, SHL_NAME_MAX)) {
			shl__err(e, "config.pools[%u].name: not a valid pool name", i);
			return -EUCLEAN;
		}
		if (p->margin_ppm > MARGIN_MAX_PPM) {
			shl__err(e, "config.pools[%u].margin: %u parts per million, expected 0..%u", i,
				 p->margin_ppm, MARGIN_MAX_PPM);
			return -EUCLEAN;
		}
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			if (p->limit[d] == 0 || p->limit[d] > LIMIT_MAX) {
				shl__err(e, "config.pools[%u].%s: %llu out of range", i, dim_keys[d],
					 (unsigned long long)p->limit[d]);
				return -EUCLEAN;
			}
			if (p->burst[d] == 0 ||
			    shl__mul_sat(p->burst[d], interval_of(p->limit[d], p->margin_ppm)) >
				    TOL_MAX) {
				shl__err(e, "config.pools[%u].burst.%s: %llu out of range", i,
					 dim_keys[d], (unsigned long long)p->burst[d]);
				return -EUCLEAN;
			}
		}
		for (int k = 0; k < SHL_NPRICES; k++)
			if (p->price[k] < 0 || p->price[k] > (int64_t)(PRICE_MAX_USD * 1000)) {
				shl__err(e, "config.pools[%u].prices.%s: out of range", i,
					 price_keys[k]);
				return -EUCLEAN;
			}
	}
	if (used == 0) {
		shl__err(e, "config.pools: no pool in use");
		return -EUCLEAN;
	}
	for (unsigned i = 0; i < s->nmodels; i++) {
		const struct shl_model_cfg *m = &s->models[i];
		if (memchr(m->match, 0, sizeof(m->match)) == NULL || !match_ok(m->match)) {
			shl__err(e, "config.models[%u].match: not a valid model pattern", i);
			return -EUCLEAN;
		}
		if (m->flags & ~(uint32_t)(SHL_MF_PREFIX | SHL_MF_PRICES | SHL_MF_CATCHALL)) {
			shl__err(e, "config.models[%u].flags: unknown bits 0x%x", i, m->flags);
			return -EUCLEAN;
		}
		if (m->pool >= s->npools || !(s->pools[m->pool].flags & SHL_PF_USED)) {
			shl__err(e, "config.models[%u].pool: %u is not a pool in use", i, m->pool);
			return -EUCLEAN;
		}
		for (int k = 0; k < SHL_NPRICES; k++)
			if (m->price[k] < 0 || m->price[k] > (int64_t)(PRICE_MAX_USD * 1000)) {
				shl__err(e, "config.models[%u].prices.%s: out of range", i,
					 price_keys[k]);
				return -EUCLEAN;
			}
		if ((m->flags & SHL_MF_CATCHALL) &&
		    (s->unknown_policy != SHL_UNKNOWN_POOL || m->pool != s->unknown_pool ||
		     strcmp(m->match, "*") != 0 || catchall++)) {
			shl__err(e, "config.models[%u]: a catch-all entry that unknown_model does "
				    "not name", i);
			return -EUCLEAN;
		}
	}
	if (s->unknown_policy > SHL_UNKNOWN_POOL) {
		shl__err(e, "config.unknown_policy: %u, expected 0..2", s->unknown_policy);
		return -EUCLEAN;
	}
	if (s->unknown_policy == SHL_UNKNOWN_POOL && catchall != 1) {
		shl__err(e, "config.unknown_pool: no catch-all entry for pool %u", s->unknown_pool);
		return -EUCLEAN;
	}
	return 0;
}

uint32_t shl__name_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h | 1u; /* never 0 */
}

void shl__local_build(struct shl_local *l, const struct shl_cfg_slot *s)
{
	memcpy(&l->slot, s, sizeof(*s));
	l->gen = s->gen;
	l->spend_cap = s->spend_cap;
	l->cluster = 0;
	memset(l->pools, 0, sizeof(l->pools));
	for (unsigned i = 0; i < s->npools; i++) {
		const struct shl_pool_cfg *p = &s->pools[i];
		struct shl_pool_local *pl = &l->pools[i];
		pl->flags = p->flags;
		if (!(p->flags & SHL_PF_USED))
			continue;
		pl->name_hash = shl__name_hash(p->name);
		l->cluster |= (p->flags & SHL_PF_CLUSTER) != 0;
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			pl->interval[d] = interval_of(p->limit[d], p->margin_ppm);
			pl->burst[d] = p->burst[d];
			pl->tol[d] = p->burst[d] * pl->interval[d];
		}
	}
}

/*
 * The limits a pool's bucket runs at: the configured ones, or what the
 * server reported (observe.c) when those are for this pool: followed up
 * and down, or only downwards with follow_server false.  Bursts scale
 * with the rate: a default burst is recomputed for it, a configured one
 * scaled in proportion (rounded down, at least 1).
 */
void shl__effective(const struct shl_pool_cfg *p, const struct shl_observed *o,
		    uint64_t limit[SHL_NBUCKETS], uint64_t burst[SHL_NBUCKETS])
{
	/* relaxed: the observed words are written under the flock before the
	 * generation deriving from them is published (segment.c). */
	int mine = o != NULL && atomic_load_explicit(&((struct shl_observed *)o)->name_hash,
						     memory_order_relaxed) == shl__name_hash(p->name);
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		uint64_t c = p->limit[d], v = c;
		uint64_t ob = mine ? atomic_load_explicit(&((struct shl_observed *)o)->limit[d],
							  memory_order_relaxed)
				   : 0;
		if (ob > LIMIT_MAX)
			ob = LIMIT_MAX;
		if (ob != 0)
			v = (p->flags & SHL_PF_NOFOLLOW) && ob > c ? c : ob;
		limit[d] = v;
		if (v == c)
			burst[d] = p->burst[d];
		else if (p->flags & (SHL_PF_BURST_SET << d)) {
			unsigned __int128 b = (unsigned __int128)p->burst[d] * v / c;
			burst[d] = b < 1 ? 1 : (uint64_t)b;
		} else
			burst[d] = default_burst(d, v);
	}
}

/* The derived numbers of every pool at its effective limits. */
void shl__local_observe(struct shl_local *l, const struct shl_seg *seg)
{
	for (unsigned i = 0; i < l->slot.npools && i < SHL_MAX_POOLS; i++) {
		const struct shl_pool_cfg *p = &l->slot.pools[i];
		struct shl_pool_local *pl = &l->pools[i];
		if (!(p->flags & SHL_PF_USED))
			continue;
		uint64_t lim[SHL_NBUCKETS], bur[SHL_NBUCKETS];
		shl__effective(p, &seg->pext[i].observed, lim, bur);
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			pl->interval[d] = interval_of(lim[d], p->margin_ppm);
			pl->burst[d] = bur[d];
			pl->tol[d] = shl__mul_sat(bur[d], pl->interval[d]);
			if (pl->tol[d] > TOL_MAX) { /* a scribbled word: stay at the configured */
				pl->interval[d] = interval_of(p->limit[d], p->margin_ppm);
				pl->burst[d] = p->burst[d];
				pl->tol[d] = p->burst[d] * pl->interval[d];
			}
		}
	}
}

/* The ids the request/response component looks up for the endpoints that
 * have pools of their own (preload/README.md): configured explicitly or
 * not governed, never sent to the catch-all pool. */
static int endpoint_id(const char *id)
{
	return strcmp(id, "count_tokens") == 0 || strcmp(id, "message_batches") == 0;
}

/*
 * Exact id first, then the longest matching prefix pattern; then the
 * unknown_model policy: the catch-all entry, -ESRCH (pass) or -ENOMSG
 * (refuse).  *unknown (may be NULL) is set to 1 when no configured entry
 * matched the id.
 */
int shl__model_match_ex(const struct shl_cfg_slot *s, const char *id, int *unknown)
{
	size_t n = strlen(id);
	int best = -ESRCH, catchall = -1;
	size_t best_len = 0;
	unsigned nm = s->nmodels > SHL_MAX_MODELS ? SHL_MAX_MODELS : s->nmodels;
	if (unknown)
		*unknown = 0;
	for (unsigned i = 0; i < nm; i++) {
		const struct shl_model_cfg *m = &s->models[i];
		if (m->flags & SHL_MF_CATCHALL) {
			catchall = (int)i;
			continue;
		}
		size_t ml = strnlen(m->match, sizeof(m->match));
		if (!(m->flags & SHL_MF_PREFIX)) {
			if (ml == n && memcmp(m->match, id, n) == 0)
				return (int)i;
			continue;
		}
		size_t pl = ml ? ml - 1 : 0; /* without the '*' */
		if (pl <= n && memcmp(m->match, id, pl) == 0 && (best < 0 || pl > best_len)) {
			best = (int)i;
			best_len = pl;
		}
	}
	if (best >= 0 || endpoint_id(id))
		return best;
	if (unknown)
		*unknown = 1;
	if (s->unknown_policy == SHL_UNKNOWN_REFUSE)
		return -ENOMSG;
	if (s->unknown_policy == SHL_UNKNOWN_POOL && catchall >= 0)
		return catchall;
	return -ESRCH;
}

int shl__model_match(const struct shl_cfg_slot *s, const char *id)
{
	return shl__model_match_ex(s, id, NULL);
}

/* ------------------------------------------------------------------ */
/* JSON parsing.                                                        */
/* ------------------------------------------------------------------ */

static int bad(shl_err *e, const char *path, const char *what)
{
	shl__err(e, "%s: %s", path, what);
	return -EINVAL;
}

static int get_uint(const cJSON *o, const char *path, uint64_t max, uint64_t *out, shl_err *e)
{
	if (!cJSON_IsNumber(o))
		return bad(e, path, "expected a positive integer");
	double v = o->valuedouble;
	if (!(v >= 1) || v != floor(v) || v > (double)max) {
		char w[96];
		snprintf(w, sizeof(w), "expected a positive integer up to %llu",
			 (unsigned long long)max);
		return bad(e, path, w);
	}
	*out = (uint64_t)v;
	return 0;
}

/*
 * Is `u` (an amount already scaled to its smallest step) a whole number of
 * steps, up to the error of the decimal-to-double conversion?  The
 * tolerance is absolute (1e-6 of a step; relative only where a double's
 * own spacing is coarser), so that a digit past the allowed decimals is
 * refused at any magnitude: 1000.0004 USD/MTok is 1000000.4 units, not
 * 1000000.
 */
static int whole_steps(double u, double *r)
{
	*r = nearbyint(u);
	double tol = 8 * DBL_EPSILON * fabs(*r);
	return fabs(u - *r) <= (tol > 1e-6 ? tol : 1e-6);
}

/* USD amount to units, at most 3 decimals per million tokens. */
static int get_price(const cJSON *o, const char *path, int64_t *out, shl_err *e)
{
	if (!cJSON_IsNumber(o))
		return bad(e, path, "expected a number of USD per million tokens");
	double v = o->valuedouble;
	if (!(v >= 0) || v > PRICE_MAX_USD)
		return bad(e, path, "expected a price from 0 to 100000 USD per million tokens");
	double r;
	if (!whole_steps(v * (double)SHL_UNITS_PER_TOKEN_PER_USD_PER_MTOK, &r))
		return bad(e, path, "expected at most 3 decimals (0.001 USD per million tokens)");
	*out = (int64_t)r;
	return 0;
}

/* Unknown keys and repeated keys are errors: cJSON keeps both copies of a
 * repeated key and returns the first, which would silently ignore the
 * second ({"rpm": 50, "rpm": 0}). */
static int check_keys(const cJSON *obj, const char *path, const char *const *keys, shl_err *e)
{
	for (const cJSON *c = obj->child; c != NULL; c = c->next) {
		for (const cJSON *d = obj->child; d != c; d = d->next)
			if (c->string && d->string && strcmp(c->string, d->string) == 0) {
				shl__err(e, "%s.%s: key given twice", path, c->string);
				return -EINVAL;
			}
		int ok = 0;
		for (const char *const *k = keys; *k != NULL; k++)
			if (c->string != NULL && strcmp(c->string, *k) == 0)
				ok = 1;
		if (!ok) {
			shl__err(e, "%s.%s: unknown key", path, c->string ? c->string : "?");
			return -EINVAL;
		}
	}
	return 0;
}

static int get_prices(const cJSON *o, const char *path, int64_t price[SHL_NPRICES], shl_err *e)
{
	static const char *const keys[] = {"input", "output", "cache_write_5m", "cache_write_1h",
					   "cache_read", NULL};
	char p[96];
	if (!cJSON_IsObject(o))
		return bad(e, path, "expected an object {input, output, cache_write_5m, "
				    "cache_write_1h, cache_read}");
	int r = check_keys(o, path, keys, e);
	if (r)
		return r;
	for (int k = 0; k < SHL_NPRICES; k++) {
		snprintf(p, sizeof(p), "%s.%s", path, price_keys[k]);
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, price_keys[k]);
		if (v == NULL)
			return bad(e, p, "missing (USD per million tokens)");
		if ((r = get_price(v, p, &price[k], e)))
			return r;
	}
	return 0;
}

/* An optional boolean key: 0 absent (*v untouched), 1 read, or an error. */
static int get_bool(const cJSON *o, const char *key, const char *path, int *v, shl_err *e)
{
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, key);
	if (b == NULL)
		return 0;
	if (!cJSON_IsBool(b)) {
		shl__err(e, "%s.%s: expected true or false", path, key);
		return -EINVAL;
	}
	*v = cJSON_IsTrue(b) ? 1 : 0;
	return 1;
}

static int parse_pool(const cJSON *o, int i, struct shl_cfg_slot *s, shl_err *e)
{
	static const char *const keys[] = {"name",	       "rpm",	      "itpm",
					   "otpm",	       "burst",	      "otpm_mode",
					   "cache_reads_count", "margin",	      "prices",
					   "follow_server",     "provisional", NULL};
	struct shl_pool_cfg *p = &s->pools[i];
	char path[64], kp[96];
	int r;
	snprintf(path, sizeof(path), "pools[%d]", i);
	if (!cJSON_IsObject(o))
		return bad(e, path, "expected an object");
	if ((r = check_keys(o, path, keys, e)))
		return r;
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
	snprintf(kp, sizeof(kp), "%s.name", path);
	if (!cJSON_IsString(name) || !name_ok(name->valuestring, SHL_NAME_MAX))
		return bad(e, kp, "expected 1 to 31 characters of A-Z a-z 0-9 . _ -");
	for (int j = 0; j < i; j++)
		if (strcmp(s->pools[j].name, name->valuestring) == 0)
			return bad(e, kp, "duplicate pool name");
	snprintf(p->name, sizeof(p->name), "%s", name->valuestring);
	p->flags = SHL_PF_USED;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		snprintf(kp, sizeof(kp), "%s.%s", path, dim_keys[d]);
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, dim_keys[d]);
		if (v == NULL)
			return bad(e, kp, "missing (a positive integer per minute)");
		if ((r = get_uint(v, kp, LIMIT_MAX, &p->limit[d], e)))
			return r;
		p->burst[d] = default_burst(d, p->limit[d]);
	}
	/* Before the burst: its range check uses the lengthened interval. */
	p->margin_ppm = SHL_MARGIN_DEFAULT_PPM;
	const cJSON *mg = cJSON_GetObjectItemCaseSensitive(o, "margin");
	if (mg != NULL) {
		snprintf(kp, sizeof(kp), "%s.margin", path);
		double mr;
		if (!cJSON_IsNumber(mg) || !(mg->valuedouble >= 0) || mg->valuedouble > 0.5)
			return bad(e, kp, "expected a fraction from 0 to 0.5 (0.002: 0.2%)");
		if (!whole_steps(mg->valuedouble * 1e6, &mr))
			return bad(e, kp, "expected at most 6 decimals (parts per million)");
		p->margin_ppm = (uint32_t)mr;
	}
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "burst");
	if (b != NULL) {
		snprintf(kp, sizeof(kp), "%s.burst", path);
		if (!cJSON_IsObject(b))
			return bad(e, kp, "expected an object {rpm, itpm, otpm}");
		static const char *const bkeys[] = {"rpm", "itpm", "otpm", NULL};
		if ((r = check_keys(b, kp, bkeys, e)))
			return r;
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(b, dim_keys[d]);
			if (v == NULL)
				continue;
			snprintf(kp, sizeof(kp), "%s.burst.%s", path, dim_keys[d]);
			if ((r = get_uint(v, kp, LIMIT_MAX, &p->burst[d], e)))
				return r;
			if (shl__mul_sat(p->burst[d], interval_of(p->limit[d], p->margin_ppm)) >
			    TOL_MAX)
				return bad(e, kp, "too large for its limit (over 146 years of refill)");
			p->flags |= SHL_PF_BURST_SET << d;
		}
	}
	const cJSON *mode = cJSON_GetObjectItemCaseSensitive(o, "otpm_mode");
	if (mode != NULL) {
		snprintf(kp, sizeof(kp), "%s.otpm_mode", path);
		if (cJSON_IsString(mode) && strcmp(mode->valuestring, "reserve") == 0)
			p->flags |= SHL_PF_OTPM_RESERVE;
		else if (!(cJSON_IsString(mode) && strcmp(mode->valuestring, "actual") == 0))
			return bad(e, kp, "expected \"actual\" or \"reserve\"");
	}
	const cJSON *cr = cJSON_GetObjectItemCaseSensitive(o, "cache_reads_count");
	if (cr != NULL) {
		snprintf(kp, sizeof(kp), "%s.cache_reads_count", path);
		if (!cJSON_IsBool(cr))
			return bad(e, kp, "expected true or false");
		if (cJSON_IsTrue(cr))
			p->flags |= SHL_PF_CACHE_READS;
	}
	int follow = 1, prov = 0;
	if ((r = get_bool(o, "follow_server", path, &follow, e)) < 0 ||
	    (r = get_bool(o, "provisional", path, &prov, e)) < 0)
		return r;
	if (!follow)
		p->flags |= SHL_PF_NOFOLLOW;
	if (prov)
		p->flags |= SHL_PF_PROVISIONAL;
	snprintf(kp, sizeof(kp), "%s.prices", path);
	const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prices");
	if (pr == NULL)
		return bad(e, kp, "missing (an object of USD per million tokens)");
	return get_prices(pr, kp, p->price, e);
}

static int parse_model(const cJSON *o, int i, struct shl_cfg_slot *s, shl_err *e)
{
	static const char *const keys[] = {"match", "pool", "prices", NULL};
	struct shl_model_cfg *m = &s->models[i];
	char path[64], kp[96];
	int r;
	snprintf(path, sizeof(path), "models[%d]", i);
	if (!cJSON_IsObject(o))
		return bad(e, path, "expected an object {match, pool}");
	if ((r = check_keys(o, path, keys, e)))
		return r;
	const cJSON *mt = cJSON_GetObjectItemCaseSensitive(o, "match");
	snprintf(kp, sizeof(kp), "%s.match", path);
	if (!cJSON_IsString(mt) || !match_ok(mt->valuestring))
		return bad(e, kp, "expected a model id or a prefix ending in '*' (1 to 63 "
				  "printable characters, '*' only at the end)");
	for (int j = 0; j < i; j++)
		if (strcmp(s->models[j].match, mt->valuestring) == 0)
			return bad(e, kp, "duplicate model pattern");
	snprintf(m->match, sizeof(m->match), "%s", mt->valuestring);
	size_t n = strlen(m->match);
	if (m->match[n - 1] == '*')
		m->flags |= SHL_MF_PREFIX;
	const cJSON *pn = cJSON_GetObjectItemCaseSensitive(o, "pool");
	snprintf(kp, sizeof(kp), "%s.pool", path);
	if (!cJSON_IsString(pn))
		return bad(e, kp, "expected the name of a pool");
	int found = -1;
	for (unsigned j = 0; j < s->npools; j++)
		if (strcmp(s->pools[j].name, pn->valuestring) == 0)
			found = (int)j;
	if (found < 0)
		return bad(e, kp, "no pool of that name");
	m->pool = (uint32_t)found;
	memcpy(m->price, s->pools[found].price, sizeof(m->price));
	const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prices");
	if (pr != NULL) {
		snprintf(kp, sizeof(kp), "%s.prices", path);
		if ((r = get_prices(pr, kp, m->price, e)))
			return r;
		m->flags |= SHL_MF_PRICES;
	}
	return 0;
}

/* unknown_model: "pass", "refuse" or {"pool": NAME}; after pools and models. */
static int parse_unknown(const cJSON *u, struct shl_cfg_slot *s, shl_err *e)
{
	static const char *const what =
		"expected \"pass\", \"refuse\" or {\"pool\": NAME} (what a model id no "
		"models[] entry matches gets)";
	s->unknown_policy = SHL_UNKNOWN_PASS;
	if (u == NULL)
		return 0;
	if (cJSON_IsString(u)) {
		if (strcmp(u->valuestring, "pass") == 0)
			return 0;
		if (strcmp(u->valuestring, "refuse") == 0) {
			s->unknown_policy = SHL_UNKNOWN_REFUSE;
			return 0;
		}
		return bad(e, "unknown_model", what);
	}
	if (!cJSON_IsObject(u))
		return bad(e, "unknown_model", what);
	static const char *const keys[] = {"pool", NULL};
	int r = check_keys(u, "unknown_model", keys, e);
	if (r)
		return r;
	const cJSON *pn = cJSON_GetObjectItemCaseSensitive(u, "pool");
	if (!cJSON_IsString(pn))
		return bad(e, "unknown_model.pool", "expected the name of a pool");
	int found = -1;
	for (unsigned j = 0; j < s->npools; j++)
		if (strcmp(s->pools[j].name, pn->valuestring) == 0)
			found = (int)j;
	if (found < 0)
		return bad(e, "unknown_model.pool", "no pool of that name");
	for (unsigned i = 0; i < s->nmodels; i++)
		if (strcmp(s->models[i].match, "*") == 0) {
			shl__err(e, "unknown_model.pool: models[%u] ('*') already matches every model; "
				    "keep one of the two", i);
			return -EINVAL;
		}
	if (s->nmodels >= SHL_MAX_MODELS)
		return bad(e, "unknown_model.pool",
			   "the catch-all pool takes one of the 256 model entries, and all are used");
	struct shl_model_cfg *m = &s->models[s->nmodels++];
	memset(m, 0, sizeof(*m));
	snprintf(m->match, sizeof(m->match), "*");
	m->flags = SHL_MF_PREFIX | SHL_MF_CATCHALL;
	m->pool = (uint32_t)found;
	memcpy(m->price, s->pools[found].price, sizeof(m->price));
	s->unknown_policy = SHL_UNKNOWN_POOL;
	s->unknown_pool = (uint32_t)found;
	return 0;
}

static int parse_root(const cJSON *root, struct shl_cfg_slot *s, struct shl_cluster_cfg *cl,
		      shl_err *e)
{
	static const char *const keys[] = {"spend_cap_usd", "pools", "models", "cluster",
					   "unknown_model", NULL};
	int r;
	if (!cJSON_IsObject(root))
		return bad(e, "(root)", "expected an object {spend_cap_usd, pools, models}");
	if ((r = check_keys(root, "(root)", keys, e)))
		return r;
	const cJSON *cap = cJSON_GetObjectItemCaseSensitive(root, "spend_cap_usd");
	s->spend_cap = -1;
	if (cap != NULL && !cJSON_IsNull(cap)) {
		double max_usd = (double)SHL_SPEND_MASK / (double)SHL_UNITS_PER_USD;
		if (!cJSON_IsNumber(cap) || !(cap->valuedouble >= 0) ||
		    cap->valuedouble > max_usd - 1)
			return bad(e, "spend_cap_usd",
				   "expected a number of USD from 0 to 144000000, or null for no cap");
		/* Cents are exact in a double up to 2^53 / 100.  A finer amount
		 * is refused rather than rounded: rounding up would raise the
		 * cap past what was written, rounding down silently lower it. */
		double cents;
		if (!whole_steps(cap->valuedouble * 100, &cents))
			return bad(e, "spend_cap_usd", "expected whole cents (at most 2 decimals)");
		s->spend_cap = (int64_t)cents * (SHL_UNITS_PER_USD / 100);
	}
	const cJSON *pools = cJSON_GetObjectItemCaseSensitive(root, "pools");
	if (!cJSON_IsArray(pools))
		return bad(e, "pools", "expected an array of 1 to 64 pools");
	int np = cJSON_GetArraySize(pools);
	if (np < 1 || np > SHL_MAX_POOLS)
		return bad(e, "pools", "expected an array of 1 to 64 pools");
	s->npools = (uint32_t)np;
	int i = 0;
	for (const cJSON *p = pools->child; p != NULL; p = p->next, i++)
		if ((r = parse_pool(p, i, s, e)))
			return r;
	if ((r = shl__cluster_parse(cJSON_GetObjectItemCaseSensitive(root, "cluster"), cl, e)))
		return r;
	if (cl->enabled)
		for (unsigned k = 0; k < s->npools; k++)
			s->pools[k].flags |= SHL_PF_CLUSTER;
	const cJSON *unk = cJSON_GetObjectItemCaseSensitive(root, "unknown_model");
	const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
	if (models == NULL)
		return parse_unknown(unk, s, e);
	if (!cJSON_IsArray(models))
		return bad(e, "models", "expected an array of 0 to 256 models");
	int nm = cJSON_GetArraySize(models);
	if (nm > SHL_MAX_MODELS)
		return bad(e, "models", "expected an array of 0 to 256 models");
	s->nmodels = (uint32_t)nm;
	i = 0;
	for (const cJSON *m = models->child; m != NULL; m = m->next, i++)
		if ((r = parse_model(m, i, s, e)))
			return r;
	return parse_unknown(unk, s, e);
}

/*
 * What cJSON reads silently wrong, found in the raw text: it decodes
 * "\u0000" into a NUL byte inside its C string, which then reads as a
 * shorter string ("claude-opus\u0000-evil*" as the exact id "claude-opus"),
 * and a number too small for a double (1e-400) as 0.  Refuse both, naming
 * the key path.  This walks the raw text, already known to be valid JSON
 * up to `len`, keeping the path of the value being read.
 */
#define SCAN_DEPTH 16 /* deeper paths are cut short in the message */
struct scan_frame {
	char obj;      /* 1: object, 0: array */
	int index;     /* array: element index */
	char key[40];  /* object: the current key (cut short) */
};

static void scan_path(const struct scan_frame *f, int depth, char *out, size_t len)
{
	size_t at = 0;
	out[0] = 0;
	for (int i = 0; i < depth && i < SCAN_DEPTH && at < len; i++) {
		int n = f[i].obj ? snprintf(out + at, len - at, "%s%s", at ? "." : "", f[i].key)
				 : snprintf(out + at, len - at, "[%d]", f[i].index);
		if (n < 0)
			break;
		at += (size_t)n;
	}
	if (at == 0)
		snprintf(out, len, "(root)");
}

static int raw_scan(const char *j, size_t len, shl_err *e)
{
	struct scan_frame f[SCAN_DEPTH];
	int depth = 0, want_key = 0;
	for (size_t i = 0; i < len && j[i] != '\0'; i++) {
		char c = j[i];
		struct scan_frame *top = depth > 0 && depth <= SCAN_DEPTH ? &f[depth - 1] : NULL;
		if (c == '{' || c == '[') {
			if (depth < SCAN_DEPTH) {
				f[depth].obj = c == '{';
				f[depth].index = 0;
				f[depth].key[0] = 0;
			}
			depth++;
			want_key = c == '{';
		} else if (c == '}' || c == ']') {
			depth--;
			want_key = 0;
		} else if (c == ',') {
			if (top && !top->obj)
				top->index++;
			want_key = top && top->obj;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			/* A number too small for a double reads as 0 (1e-400):
			 * refuse it rather than let a finer amount become 0. */
			size_t s0 = i;
			int nonzero = 0;
			while (i + 1 < len && j[i + 1] != '\0' && strchr("+-.eE0123456789", j[i + 1]))
				i++;
			for (size_t k = s0; k <= i && j[k] != 'e' && j[k] != 'E'; k++)
				nonzero |= j[k] >= '1' && j[k] <= '9';
			char num[64];
			int n = (int)(i - s0 + 1);
			snprintf(num, sizeof(num), "%.*s", n, j + s0);
			if (nonzero && strtod(num, NULL) == 0.0) {
				char path[160];
				scan_path(f, depth, path, sizeof(path));
				shl__err(e, "%s: %s is not zero but too small to represent (it would "
					 "read as 0)", path, num);
				return -EINVAL;
			}
		} else if (c == '"') {
			char key[sizeof(f[0].key)];
			size_t k = 0;
			int nul = 0;
			for (i++; i < len && j[i] != '"'; i++) {
				char ch = j[i];
				if (ch == '\\' && i + 1 < len) {
					i++;
					ch = j[i];
					if (ch == 'u' && i + 4 < len && memcmp(j + i + 1, "0000", 4) == 0)
						nul = 1;
				}
				if (k + 1 < sizeof(key))
					key[k++] = ch;
			}
			key[k] = 0;
			char path[160];
			if (want_key) {
				if (top)
					snprintf(top->key, sizeof(top->key), "%s", key);
				if (nul) {
					scan_path(f, depth - 1, path, sizeof(path));
					shl__err(e, "%s: a key contains a NUL character (\\u0000)", path);
					return -EINVAL;
				}
				want_key = 0;
			} else if (nul) {
				scan_path(f, depth, path, sizeof(path));
				shl__err(e, "%s: the string contains a NUL character (\\u0000)", path);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* How deep the brackets of `j` nest (outside strings), up to `len`. */
static int json_depth(const char *j, size_t len)
{
	int depth = 0, max = 0, in_str = 0;
	for (size_t i = 0; i < len && j[i] != '\0'; i++) {
		char c = j[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
		} else if (c == '"') {
			in_str = 1;
		} else if (c == '{' || c == '[') {
			if (++depth > max)
				max = depth;
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return max;
}

int shl_config_parse(const char *json, size_t len, shl_config **out, shl_err *err)
{
	if (json == NULL || out == NULL)
		return -EINVAL;
	*out = NULL;
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
	if (root == NULL) {
		size_t at = end != NULL && end >= json ? (size_t)(end - json) : 0;
		size_t line = 1;
		for (size_t i = 0; i < at && i < len; i++)
			line += json[i] == '\n';
		if (json_depth(json, len) > CJSON_NESTING_LIMIT)
			shl__err(err, "(root): nested more than %d levels deep (near byte %zu, line %zu); "
				 "a configuration needs 4", CJSON_NESTING_LIMIT, at, line);
		else
			shl__err(err, "(root): not valid JSON (near byte %zu, line %zu)", at, line);
		return -EINVAL;
	}
	/* One document: only white space may follow it (cJSON stops after the
	 * first value and would silently ignore a second one), up to the end
	 * or to a NUL that ends a C string counted into `len`. */
	size_t at = end != NULL && end >= json && (size_t)(end - json) <= len ? (size_t)(end - json)
									       : len;
	while (at < len && (json[at] == ' ' || json[at] == '\t' || json[at] == '\n' ||
			    json[at] == '\r'))
		at++;
	if (at < len && json[at] != '\0') {
		size_t line = 1;
		for (size_t i = 0; i < at; i++)
			line += json[i] == '\n';
		cJSON_Delete(root);
		shl__err(err, "(root): unexpected text after the JSON document (at byte %zu, line %zu)",
			 at, line);
		return -EINVAL;
	}
	if (raw_scan(json, at, err) != 0) {
		cJSON_Delete(root);
		return -EINVAL;
	}
	shl_config *c = shl__calloc(1, sizeof(*c));
	if (c == NULL) {
		cJSON_Delete(root);
		shl__err(err, "out of memory");
		return -ENOMEM;
	}
	int r = parse_root(root, &c->slot, &c->cluster, err);
	cJSON_Delete(root);
	if (r == 0)
		r = shl__slot_validate(&c->slot, err);
	if (r) {
		free(c);
		return r < 0 && r != -ENOMEM ? -EINVAL : r;
	}
	*out = c;
	return 0;
}

/*
 * Presets by name.  The names are the files' (libshmlimit/presets/NAME.json,
 * embedded by scripts/embed.sh); "1".."4" are the numbered tiers' aliases
 * (tier1 .. tier4), and any name may be written in capitals ("Start").
 */
const char *shl_preset_json_named(const char *name)
{
	if (name == NULL || *name == '\0' || strlen(name) > 32)
		return NULL;
	char key[40];
	size_t n = strlen(name);
	int digit = n == 1 && name[0] >= '1' && name[0] <= '9';
	snprintf(key, sizeof(key), "%s%s", digit ? "tier" : "", name);
	for (char *c = key; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	for (int i = 0; i < shl__npresets; i++)
		if (strcmp(shl__preset_names[i], key) == 0)
			return shl__presets[i];
	return NULL;
}

int shl_config_preset_named(const char *name, shl_config **out)
{
	const char *j = shl_preset_json_named(name);
	if (j == NULL || out == NULL)
		return -EINVAL;
	return shl_config_parse(j, strlen(j), out, NULL);
}

const char *shl_preset_names(void)
{
	return shl__preset_list;
}

int shl_config_pool(const shl_config *cfg, int i, shl_pool_info *out)
{
	if (cfg == NULL || out == NULL)
		return -EINVAL;
	const struct shl_cfg_slot *s = &cfg->slot;
	/* A parsed configuration's pools are dense; a copy of a live one
	 * (shl_config_get) may have gaps where an apply removed a pool: the
	 * i-th pool in use is meant either way. */
	int k = 0;
	for (unsigned p = 0; p < s->npools && p < SHL_MAX_POOLS; p++) {
		const struct shl_pool_cfg *pc = &s->pools[p];
		if (!(pc->flags & SHL_PF_USED) || k++ != i)
			continue;
		memset(out, 0, sizeof(*out));
		memcpy(out->name, pc->name, SHL_NAME_MAX);
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			out->limit[d] = pc->limit[d];
			out->burst[d] = pc->burst[d];
		}
		out->otpm_reserve = (pc->flags & SHL_PF_OTPM_RESERVE) != 0;
		out->cache_reads_count = (pc->flags & SHL_PF_CACHE_READS) != 0;
		return 0;
	}
	return -ESRCH;
}

const char *shl_preset_json(int tier)
{
	char name[16];
	if (tier < 1 || tier > 9)
		return NULL;
	snprintf(name, sizeof(name), "tier%d", tier);
	return shl_preset_json_named(name);
}

int shl_config_preset(int tier, shl_config **out)
{
	const char *j = shl_preset_json(tier);
	if (j == NULL || out == NULL)
		return -EINVAL;
	return shl_config_parse(j, strlen(j), out, NULL);
}

void shl_config_free(shl_config *cfg)
{
	free(cfg);
}

/* ------------------------------------------------------------------ */
/* JSON output: what shl_config_parse accepts back unchanged.           */
/* ------------------------------------------------------------------ */

static cJSON *prices_json(const int64_t price[SHL_NPRICES])
{
	cJSON *o = cJSON_CreateObject();
	for (int k = 0; o && k < SHL_NPRICES; k++)
		cJSON_AddNumberToObject(o, price_keys[k],
					(double)price[k] / (double)SHL_UNITS_PER_TOKEN_PER_USD_PER_MTOK);
	return o;
}

char *shl_config_to_json(const shl_config *cfg)
{
	if (cfg == NULL)
		return NULL;
	const struct shl_cfg_slot *s = &cfg->slot;
	cJSON *root = cJSON_CreateObject();
	if (root == NULL)
		return NULL;
	if (s->spend_cap < 0)
		cJSON_AddNullToObject(root, "spend_cap_usd");
	else
		cJSON_AddNumberToObject(root, "spend_cap_usd",
					(double)s->spend_cap / (double)SHL_UNITS_PER_USD);
	cJSON *pools = cJSON_AddArrayToObject(root, "pools");
	for (unsigned i = 0; pools && i < s->npools && i < SHL_MAX_POOLS; i++) {
		const struct shl_pool_cfg *p = &s->pools[i];
		if (!(p->flags & SHL_PF_USED))
			continue;
		cJSON *o = cJSON_CreateObject();
		cJSON_AddItemToArray(pools, o);
		cJSON_AddStringToObject(o, "name", p->name);
		for (int d = 0; d < SHL_NBUCKETS; d++)
			cJSON_AddNumberToObject(o, dim_keys[d], (double)p->limit[d]);
		if (p->flags & (SHL_PF_BURST_SET * 7)) {
			cJSON *b = cJSON_AddObjectToObject(o, "burst");
			for (int d = 0; d < SHL_NBUCKETS; d++)
				if (p->flags & (SHL_PF_BURST_SET << d))
					cJSON_AddNumberToObject(b, dim_keys[d], (double)p->burst[d]);
		}
		cJSON_AddStringToObject(o, "otpm_mode",
					(p->flags & SHL_PF_OTPM_RESERVE) ? "reserve" : "actual");
		cJSON_AddBoolToObject(o, "cache_reads_count", (p->flags & SHL_PF_CACHE_READS) != 0);
		if (p->margin_ppm != SHL_MARGIN_DEFAULT_PPM) /* the default round-trips unwritten */
			cJSON_AddNumberToObject(o, "margin", (double)p->margin_ppm / 1e6);
		cJSON_AddItemToObject(o, "prices", prices_json(p->price));
		cJSON_AddBoolToObject(o, "follow_server", !(p->flags & SHL_PF_NOFOLLOW));
		if (p->flags & SHL_PF_PROVISIONAL)
			cJSON_AddTrueToObject(o, "provisional");
	}
	if (s->unknown_policy == SHL_UNKNOWN_REFUSE)
		cJSON_AddStringToObject(root, "unknown_model", "refuse");
	else if (s->unknown_policy == SHL_UNKNOWN_POOL && s->unknown_pool < SHL_MAX_POOLS) {
		cJSON *u = cJSON_AddObjectToObject(root, "unknown_model");
		cJSON_AddStringToObject(u, "pool", s->pools[s->unknown_pool].name);
	} else
		cJSON_AddStringToObject(root, "unknown_model", "pass");
	cJSON *models = cJSON_AddArrayToObject(root, "models");
	for (unsigned i = 0; models && i < s->nmodels && i < SHL_MAX_MODELS; i++) {
		const struct shl_model_cfg *m = &s->models[i];
		if (m->flags & SHL_MF_CATCHALL)
			continue; /* written as unknown_model */
		cJSON *o = cJSON_CreateObject();
		cJSON_AddItemToArray(models, o);
		cJSON_AddStringToObject(o, "match", m->match);
		cJSON_AddStringToObject(o, "pool",
					m->pool < SHL_MAX_POOLS ? s->pools[m->pool].name : "");
		if (m->flags & SHL_MF_PRICES)
			cJSON_AddItemToObject(o, "prices", prices_json(m->price));
	}
	shl__cluster_to_json(&cfg->cluster, root);
	char *txt = cJSON_Print(root);
	cJSON_Delete(root);
	return txt;
}
