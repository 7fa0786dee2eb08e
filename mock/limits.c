/*
 * limits.c - the server side of the rate limits: pools, model matching and
 * token buckets, the way the Claude API describes its own enforcement.
 *
 * This is a second, independent implementation of the rules libshmlimit
 * mirrors, kept simple on purpose (a mutex per pool, doubles, one clock) so
 * that it is easy to believe.  It reads the libshmlimit configuration format
 * with cJSON:
 *
 *   pools[]: name, rpm, itpm, otpm (per minute; 0 or absent: unlimited),
 *            burst{rpm,itpm,otpm} (capacities; default rpm: one second's
 *            worth rounded up, at least 1; itpm/otpm: one minute's worth),
 *            otpm_mode "actual" (default) | "reserve", cache_reads_count.
 *   models[]: match "exact-id" | "prefix*", pool.  An exact match wins,
 *            else the longest prefix.
 *   spend_cap_usd and prices are accepted and ignored: the mock's spend cap
 *   is scripted (x-mock-fail: spend-cap), not computed.
 *
 * Buckets refill continuously at limit/60 per second up to their capacity.
 * RPM is charged 1 per request and ITPM with the request's input at start;
 * OTPM in "actual" mode is charged after generation with the real output,
 * and a request is refused only while that bucket is in debt; in "reserve"
 * mode max_tokens is taken at start and the unused part given back.
 *
 * Tolerance: a client that keeps exactly to the limits can still look a
 * little early to the server (requests reach it with varying delay).  So a
 * bucket admits a request if it is short by at most one request (RPM) or by
 * at most 1% of its capacity, rounded up (ITPM/OTPM).
 *
 * --strict-interval is the opposite reading, "60 RPM may be enforced as one
 * request per second" taken literally: each bucket holds one interval's
 * worth (RPM one request, ITPM/OTPM one second's worth) and has no
 * tolerance, so a client whose requests arrive a little closer together
 * than it sent them is refused.
 *
 * A request is admitted as of its arrival: the instant the kernel received
 * its last bytes (http.c), not when a thread of this process got round to
 * it, so that the judge's own scheduling on a busy machine does not move
 * arrivals closer together than the network delivered them.
 *
 * The limits can change while the server runs (POST /mock/limits, so that
 * tests can show a fleet following the server): a pool's limit, burst and
 * tolerance are therefore guarded by its mutex like its levels.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "mock.h"

/* ------------------------------------------------------------------ */
/* Configuration                                                        */
/* ------------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	struct sbuf b = {0};
	char tmp[8192];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0 && b.len < (1u << 24))
		sbuf_add(&b, tmp, n);
	int bad = ferror(f) || b.oom || b.p == NULL;
	fclose(f);
	if (bad) {
		sbuf_free(&b);
		return NULL;
	}
	*len = b.len;
	return b.p;
}

/* A non-negative number member; absent or null gives dflt.  -EINVAL if it
 * is there but not a non-negative number. */
static int get_num(const cJSON *obj, const char *key, double dflt, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (v == NULL || cJSON_IsNull(v)) {
		*out = dflt;
		return 0;
	}
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || isinf(v->valuedouble))
		return -EINVAL;
	*out = v->valuedouble;
	return 0;
}

static const char *const dims[NDIM] = {"rpm", "itpm", "otpm"};

/* The bucket capacity when the configuration gives none: RPM one second's
 * worth rounded up, at least 1; ITPM / OTPM one minute's worth. */
static double default_burst(int d, double limit)
{
	if (d != DIM_RPM)
		return limit;
	double b = ceil(limit / 60.0);
	return b < 1 ? 1 : b;
}

/* The tolerance (see the top of the file) of a bucket of capacity `burst`. */
static double tolerance(int d, double burst)
{
	return d == DIM_RPM ? 1.0 : ceil(burst / 100.0);
}

/* --strict-interval: one interval's worth, no tolerance.  Called with the
 * pool's mutex held (or before any thread starts). */
static void make_strict(struct pool *p, int d)
{
	if (d == DIM_RPM) {
		p->burst[d] = 1;
	} else {
		p->burst[d] = ceil(p->limit[d] / 60.0);
		if (p->burst[d] < 1)
			p->burst[d] = 1;
	}
	p->tol[d] = 0;
	if (p->level[d] > p->burst[d])
		p->level[d] = p->burst[d];
}

static int load_pool(const cJSON *jp, struct pool *p, char *err, size_t errlen)
{
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(jp, "name");
	if (!cJSON_IsString(name) || name->valuestring[0] == '\0' ||
	    strlen(name->valuestring) >= sizeof(p->name)) {
		snprintf(err, errlen, "a pool needs a \"name\" of 1..%zu characters",
			 sizeof(p->name) - 1);
		return -EINVAL;
	}
	snprintf(p->name, sizeof(p->name), "%s", name->valuestring);
	const cJSON *burst = cJSON_GetObjectItemCaseSensitive(jp, "burst");
	if (burst != NULL && !cJSON_IsNull(burst) && !cJSON_IsObject(burst)) {
		snprintf(err, errlen, "pool %s: \"burst\" must be an object", p->name);
		return -EINVAL;
	}
	for (int d = 0; d < NDIM; d++) {
		if (get_num(jp, dims[d], 0, &p->limit[d]) < 0) {
			snprintf(err, errlen, "pool %s: \"%s\" must be a number >= 0",
				 p->name, dims[d]);
			return -EINVAL;
		}
		double dflt = default_burst(d, p->limit[d]);
		if (cJSON_IsObject(burst) &&
		    get_num(burst, dims[d], dflt, &p->burst[d]) < 0) {
			snprintf(err, errlen, "pool %s: \"burst.%s\" must be a number >= 0",
				 p->name, dims[d]);
			return -EINVAL;
		} else if (!cJSON_IsObject(burst)) {
			p->burst[d] = dflt;
		}
		p->burst_set[d] = cJSON_IsObject(burst) &&
			cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(burst, dims[d]));
		if (p->limit[d] > 0 && p->burst[d] < 1) {
			snprintf(err, errlen, "pool %s: burst.%s must be at least 1",
				 p->name, dims[d]);
			return -EINVAL;
		}
		p->tol[d] = tolerance(d, p->burst[d]);
		p->level[d] = p->burst[d];
	}
	const cJSON *mode = cJSON_GetObjectItemCaseSensitive(jp, "otpm_mode");
	if (mode != NULL && !cJSON_IsNull(mode)) {
		if (cJSON_IsString(mode) && strcmp(mode->valuestring, "actual") == 0) {
			p->otpm_reserve = 0;
		} else if (cJSON_IsString(mode) &&
			   strcmp(mode->valuestring, "reserve") == 0) {
			p->otpm_reserve = 1;
		} else {
			snprintf(err, errlen,
				 "pool %s: \"otpm_mode\" must be \"actual\" or \"reserve\"",
				 p->name);
			return -EINVAL;
		}
	}
	const cJSON *crc = cJSON_GetObjectItemCaseSensitive(jp, "cache_reads_count");
	if (crc != NULL && !cJSON_IsNull(crc)) {
		if (!cJSON_IsBool(crc)) {
			snprintf(err, errlen,
				 "pool %s: \"cache_reads_count\" must be true or false",
				 p->name);
			return -EINVAL;
		}
		p->cache_reads_count = cJSON_IsTrue(crc);
	}
	pthread_mutex_init(&p->mu, NULL);
	p->last_ns = mono_ns();
	p->adm = calloc(MOCK_ADM_LOG, sizeof(*p->adm)); /* NULL: no log, nothing else lost */
	return 0;
}

static int load_rule(const cJSON *jm, const struct limits *l,
		     struct model_rule *r, char *err, size_t errlen)
{
	const cJSON *match = cJSON_GetObjectItemCaseSensitive(jm, "match");
	const cJSON *pool = cJSON_GetObjectItemCaseSensitive(jm, "pool");
	if (!cJSON_IsString(match) || match->valuestring[0] == '\0' ||
	    !cJSON_IsString(pool)) {
		snprintf(err, errlen, "a model entry needs \"match\" and \"pool\" strings");
		return -EINVAL;
	}
	r->pool = -1;
	for (int i = 0; i < l->npools; i++)
		if (strcmp(l->pools[i].name, pool->valuestring) == 0)
			r->pool = i;
	if (r->pool < 0) {
		snprintf(err, errlen, "model %s: no pool named \"%s\"",
			 match->valuestring, pool->valuestring);
		return -EINVAL;
	}
	size_t n = strlen(match->valuestring);
	r->prefix = match->valuestring[n - 1] == '*';
	if (r->prefix)
		n--;
	if (memchr(match->valuestring, '*', n) != NULL) {
		snprintf(err, errlen, "model %s: '*' is allowed only at the end",
			 match->valuestring);
		return -EINVAL;
	}
	r->match = strndup(match->valuestring, n);
	if (r->match == NULL)
		return -ENOMEM;
	r->len = n;
	return 0;
}

int limits_load(const char *path, struct limits *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	size_t len = 0;
	char *text = read_file(path, &len);
	if (text == NULL) {
		int e = errno ? errno : EIO;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	cJSON *root = cJSON_ParseWithLength(text, len);
	free(text);
	if (root == NULL) {
		snprintf(err, errlen, "%s: not valid JSON", path);
		return -EINVAL;
	}
	int rc = -EINVAL;
	const cJSON *pools = cJSON_GetObjectItemCaseSensitive(root, "pools");
	const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
	if (!cJSON_IsArray(pools) || cJSON_GetArraySize(pools) == 0) {
		snprintf(err, errlen, "%s: \"pools\" must be a non-empty array", path);
		goto out;
	}
	if (models != NULL && !cJSON_IsArray(models)) {
		snprintf(err, errlen, "%s: \"models\" must be an array", path);
		goto out;
	}
	int np = cJSON_GetArraySize(pools);
	int nm = models ? cJSON_GetArraySize(models) : 0;
	out->pools = calloc((size_t)np, sizeof(*out->pools));
	out->rules = calloc((size_t)nm + 1, sizeof(*out->rules));
	if (out->pools == NULL || out->rules == NULL) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, pools) {
		rc = load_pool(it, &out->pools[out->npools], err, errlen);
		if (rc < 0)
			goto out;
		for (int i = 0; i < out->npools; i++) {
			if (strcmp(out->pools[i].name, out->pools[out->npools].name) == 0) {
				snprintf(err, errlen, "pool %s defined twice",
					 out->pools[i].name);
				rc = -EINVAL;
				goto out;
			}
		}
		out->npools++;
	}
	if (models != NULL) {
		cJSON_ArrayForEach(it, models) {
			rc = load_rule(it, out, &out->rules[out->nrules], err, errlen);
			if (rc < 0)
				goto out;
			out->nrules++;
		}
	}
	rc = 0;
out:
	cJSON_Delete(root);
	return rc;
}

int limits_find(const struct limits *l, const char *model)
{
	int best = -1;
	size_t best_len = 0;
	size_t mlen = strlen(model);
	for (int i = 0; i < l->nrules; i++) {
		const struct model_rule *r = &l->rules[i];
		if (!r->prefix) {
			if (r->len == mlen && memcmp(r->match, model, mlen) == 0)
				return r->pool;
			continue;
		}
		if (r->len <= mlen && memcmp(r->match, model, r->len) == 0 &&
		    (best < 0 || r->len > best_len)) {
			best = r->pool;
			best_len = r->len;
		}
	}
	return best >= 0 ? best : -ENOENT;
}

/* ------------------------------------------------------------------ */
/* Buckets                                                              */
/* ------------------------------------------------------------------ */

/* Bring the levels up to now.  Called with p->mu held. */
static void refill(struct pool *p, int64_t now)
{
	double dt = (double)(now - p->last_ns) / 1e9;
	if (dt <= 0)
		return;
	p->last_ns = now;
	for (int d = 0; d < NDIM; d++) {
		if (p->limit[d] <= 0)
			continue;
		p->level[d] += dt * p->limit[d] / 60.0;
		if (p->level[d] > p->burst[d])
			p->level[d] = p->burst[d];
	}
}

int pool_admit(struct pool *p, const struct need *n, int64_t at, uint64_t *retry_after,
	       int *dim)
{
	double need[NDIM] = {1, (double)n->itpm, (double)n->otpm_reserve};
	double worst = 0;
	int worst_dim = -1;
	pthread_mutex_lock(&p->mu);
	/* As of the request's arrival (0: now); a bucket already brought
	 * past it (another thread, its headers) stays where it is. */
	refill(p, at > 0 ? at : mono_ns());
	for (int d = 0; d < NDIM; d++) {
		if (p->limit[d] <= 0)
			continue;
		double short_by = need[d] - p->tol[d] - p->level[d];
		if (short_by > 0) {
			double wait = short_by * 60.0 / p->limit[d];
			if (worst_dim < 0 || wait > worst) {
				worst = wait;
				worst_dim = d;
			}
		}
	}
	if (worst_dim < 0) {
		if (p->adm != NULL) {
			struct admission *a = &p->adm[p->nadm % MOCK_ADM_LOG];
			a->at_ns = at > p->last_ns ? at : p->last_ns; /* as of the levels' time */
			a->level_rpm = p->level[DIM_RPM];
			a->level_itpm = p->level[DIM_ITPM];
			a->need_itpm = need[DIM_ITPM];
		}
		p->nadm++;
		for (int d = 0; d < NDIM; d++)
			if (p->limit[d] > 0)
				p->level[d] -= need[d];
	}
	pthread_mutex_unlock(&p->mu);
	if (worst_dim < 0)
		return 0;
	double secs = ceil(worst);
	*retry_after = secs < 1 ? 1 : (uint64_t)secs;
	*dim = worst_dim;
	return -EAGAIN;
}

void pool_settle(struct pool *p, uint64_t reserved, uint64_t out)
{
	pthread_mutex_lock(&p->mu);
	if (p->limit[DIM_OTPM] <= 0) {
		pthread_mutex_unlock(&p->mu);
		return;
	}
	refill(p, mono_ns());
	p->level[DIM_OTPM] += (double)reserved - (double)out;
	if (p->level[DIM_OTPM] > p->burst[DIM_OTPM])
		p->level[DIM_OTPM] = p->burst[DIM_OTPM];
	pthread_mutex_unlock(&p->mu);
}

/* RFC 3339 UTC time `secs` seconds from now (rounded up to a second). */
static void reset_time(double secs, char *buf, size_t size)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (secs < 0)
		secs = 0;
	time_t t = ts.tv_sec + (time_t)ceil(secs + ts.tv_nsec / 1e9);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void pool_headers(struct pool *p, struct sbuf *h, const double *over)
{
	static const char *const hname[NDIM] = {"requests", "input-tokens",
						"output-tokens"};
	double level[NDIM], limit[NDIM], burst[NDIM];
	pthread_mutex_lock(&p->mu);
	refill(p, mono_ns());
	memcpy(level, p->level, sizeof(level));
	memcpy(limit, p->limit, sizeof(limit));  /* POST /mock/limits changes them */
	memcpy(burst, p->burst, sizeof(burst));
	pthread_mutex_unlock(&p->mu);

	double remaining[NDIM] = {0}, until_full[NDIM] = {0};
	for (int d = 0; d < NDIM; d++) {
		if (limit[d] <= 0)
			continue;
		double r = level[d] < 0 ? 0 : floor(level[d]);
		if (d != DIM_RPM)  /* tokens: nearest thousand, like the real API */
			r = floor(r / 1000.0 + 0.5) * 1000.0;
		if (over != NULL && over[d] >= 0) /* x-mock-remaining */
			r = over[d];
		remaining[d] = r;
		until_full[d] = (burst[d] - level[d]) * 60.0 / limit[d];
		char when[40];
		reset_time(until_full[d], when, sizeof(when));
		sbuf_printf(h, "anthropic-ratelimit-%s-limit: %.0f\r\n"
			    "anthropic-ratelimit-%s-remaining: %.0f\r\n"
			    "anthropic-ratelimit-%s-reset: %s\r\n",
			    hname[d], limit[d], hname[d], r, hname[d], when);
	}
	/* tokens-*: whichever of input / output is the more restrictive now. */
	int t = -1;
	if (limit[DIM_ITPM] > 0)
		t = DIM_ITPM;
	if (limit[DIM_OTPM] > 0 &&
	    (t < 0 || remaining[DIM_OTPM] < remaining[DIM_ITPM]))
		t = DIM_OTPM;
	if (t >= 0) {
		char when[40];
		reset_time(until_full[t], when, sizeof(when));
		sbuf_printf(h, "anthropic-ratelimit-tokens-limit: %.0f\r\n"
			    "anthropic-ratelimit-tokens-remaining: %.0f\r\n"
			    "anthropic-ratelimit-tokens-reset: %s\r\n",
			    limit[t], remaining[t], when);
	}
}

/* ------------------------------------------------------------------ */
/* Changing the limits while running                                    */
/* ------------------------------------------------------------------ */

void limits_strict(struct limits *l)
{
	for (int i = 0; i < l->npools; i++) {
		l->pools[i].strict = 1;
		for (int d = 0; d < NDIM; d++)
			make_strict(&l->pools[i], d);
	}
}

/* One pool's new numbers, checked before any is applied. */
struct change {
	struct pool *p;
	double limit[NDIM];   /* -1: unchanged */
	double burst[NDIM];   /* -1: not given */
};

/* Apply a checked change.  The buckets are brought up to now at the old
 * rate first; a bucket keeps its level (debt included), cut to its new
 * capacity, and a dimension that was unlimited starts full. */
static void apply_change(const struct change *c)
{
	struct pool *p = c->p;
	pthread_mutex_lock(&p->mu);
	refill(p, mono_ns());
	for (int d = 0; d < NDIM; d++) {
		if (c->limit[d] < 0 && c->burst[d] < 0)
			continue;
		double old = p->limit[d];
		double lim = c->limit[d] >= 0 ? c->limit[d] : old;
		double b;
		if (c->burst[d] >= 0)
			b = c->burst[d];
		else if (p->burst_set[d] && old > 0)
			b = ceil(p->burst[d] * lim / old);
		else
			b = default_burst(d, lim);
		if (b < 1)
			b = 1;
		p->limit[d] = lim;
		p->burst[d] = b;
		p->tol[d] = tolerance(d, b);
		if (p->strict)
			make_strict(p, d);
		if (old <= 0 || p->level[d] > p->burst[d])
			p->level[d] = p->burst[d];
	}
	pthread_mutex_unlock(&p->mu);
}

int limits_change(struct limits *l, const char *body, size_t len, char *err,
		  size_t errlen)
{
	cJSON *root = cJSON_ParseWithLength(body, len);
	const cJSON *pools = cJSON_IsObject(root) ?
			     cJSON_GetObjectItemCaseSensitive(root, "pools") : NULL;
	int rc = -EINVAL;
	struct change *ch = NULL;
	if (!cJSON_IsArray(pools) || cJSON_GetArraySize(pools) == 0) {
		snprintf(err, errlen, "the body must be {\"pools\":[{\"name\":...}, ...]}");
		goto out;
	}
	int n = cJSON_GetArraySize(pools);
	ch = calloc((size_t)n, sizeof(*ch));
	if (ch == NULL) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	int k = 0;
	const cJSON *jp;
	cJSON_ArrayForEach(jp, pools) {
		struct change *c = &ch[k++];
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(jp, "name");
		if (!cJSON_IsString(name)) {
			snprintf(err, errlen, "pools[%d]: a \"name\" string is required", k - 1);
			goto out;
		}
		for (int i = 0; i < l->npools; i++)
			if (strcmp(l->pools[i].name, name->valuestring) == 0)
				c->p = &l->pools[i];
		if (c->p == NULL) {
			snprintf(err, errlen, "no pool named \"%.64s\"", name->valuestring);
			rc = -ENOENT;
			goto out;
		}
		const cJSON *burst = cJSON_GetObjectItemCaseSensitive(jp, "burst");
		if (burst != NULL && !cJSON_IsNull(burst) && !cJSON_IsObject(burst)) {
			snprintf(err, errlen, "pool %s: \"burst\" must be an object",
				 c->p->name);
			goto out;
		}
		for (int d = 0; d < NDIM; d++) {
			if (get_num(jp, dims[d], -1, &c->limit[d]) < 0 ||
			    c->limit[d] > 1e12) {
				snprintf(err, errlen, "pool %s: \"%s\" must be a number "
					 "0..1e12", c->p->name, dims[d]);
				goto out;
			}
			c->burst[d] = -1;
			if (cJSON_IsObject(burst) &&
			    (get_num(burst, dims[d], -1, &c->burst[d]) < 0 ||
			     c->burst[d] > 1e12 ||
			     (c->burst[d] >= 0 && c->burst[d] < 1))) {
				snprintf(err, errlen, "pool %s: \"burst.%s\" must be a "
					 "number 1..1e12", c->p->name, dims[d]);
				goto out;
			}
		}
	}
	for (int i = 0; i < n; i++)
		apply_change(&ch[i]);
	rc = 0;
out:
	free(ch);
	cJSON_Delete(root);
	return rc;
}

void limits_get(struct limits *l, int pool, double limit[NDIM])
{
	struct pool *p = &l->pools[pool];
	pthread_mutex_lock(&p->mu);
	memcpy(limit, p->limit, sizeof(p->limit));
	pthread_mutex_unlock(&p->mu);
}

char *limits_json(struct limits *l)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *arr = cJSON_AddArrayToObject(root, "pools");
	for (int i = 0; l != NULL && i < l->npools; i++) {
		struct pool *p = &l->pools[i];
		double limit[NDIM], burst[NDIM], level[NDIM];
		pthread_mutex_lock(&p->mu);
		refill(p, mono_ns());
		memcpy(limit, p->limit, sizeof(limit));
		memcpy(burst, p->burst, sizeof(burst));
		memcpy(level, p->level, sizeof(level));
		pthread_mutex_unlock(&p->mu);
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", p->name);
		cJSON *b = cJSON_CreateObject(), *a = cJSON_CreateObject();
		for (int d = 0; d < NDIM; d++) {
			cJSON_AddNumberToObject(o, dims[d], limit[d]);
			cJSON_AddNumberToObject(b, dims[d], burst[d]);
			/* whole units, rounded down (a debt is negative) */
			cJSON_AddNumberToObject(a, dims[d], limit[d] > 0 ? floor(level[d]) : 0);
		}
		cJSON_AddItemToObject(o, "burst", b);
		cJSON_AddItemToObject(o, "available", a);
		cJSON_AddItemToArray(arr, o);
	}
	cJSON_AddBoolToObject(root, "strict_interval",
			      l != NULL && l->npools > 0 && l->pools[0].strict);
	char *s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return s;
}

/*
 * GET /mock/admissions: per pool, its limits now and the last MOCK_ADM_LOG
 * admissions, oldest first, as [at_ns, level_rpm, level_itpm, need_itpm]
 * (at_ns on the server's monotonic clock; levels before the admission).
 * From these a test reads how much of a limit a client used over a window
 * of its choosing: what was admitted from the k-th admission to the last,
 * against the level at the k-th plus the refill until the last.
 */
char *limits_admissions_json(const struct limits *l)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *pools = cJSON_AddObjectToObject(root, "pools");
	for (int i = 0; l != NULL && i < l->npools; i++) {
		struct pool *p = &l->pools[i];
		cJSON *jp = cJSON_AddObjectToObject(pools, p->name);
		cJSON *log = cJSON_CreateArray();
		pthread_mutex_lock(&p->mu);
		cJSON_AddNumberToObject(jp, "rpm", p->limit[DIM_RPM]);
		cJSON_AddNumberToObject(jp, "itpm", p->limit[DIM_ITPM]);
		cJSON_AddNumberToObject(jp, "admitted", (double)p->nadm);
		uint64_t first = p->nadm > MOCK_ADM_LOG ? p->nadm - MOCK_ADM_LOG : 0;
		for (uint64_t k = first; p->adm != NULL && k < p->nadm; k++) {
			const struct admission *a = &p->adm[k % MOCK_ADM_LOG];
			const double v[4] = {(double)a->at_ns, a->level_rpm, a->level_itpm,
					     a->need_itpm};
			cJSON_AddItemToArray(log, cJSON_CreateDoubleArray(v, 4));
		}
		pthread_mutex_unlock(&p->mu);
		cJSON_AddItemToObject(jp, "log", log);
	}
	char *text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return text;
}
