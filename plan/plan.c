/*
 * plan.c - what a workload mix costs per month and how much of it a tier
 * can carry.
 *
 * Users ask two questions before they deploy: "which limit will we hit
 * first, and at how many requests per minute?" and "what will this cost a
 * month, with prompt caching and the Batch API, and against our spend
 * cap?".  This module answers both from a workload mix (task classes with
 * their request rate, token counts, cache hit rate and Batch share) and a
 * libshmlimit configuration (a tier preset or a file).  It reads the
 * configuration through the library (shl_config_parse / shl_config_preset,
 * then shl_config_to_json), so it accepts exactly what a segment would,
 * and resolves model ids with the library's rule: exact id, else the
 * longest "prefix*" pattern.
 *
 * What it assumes, and deliberately does not do:
 *   - Steady state.  Loads are expected values per minute (hit rates and
 *     Batch shares are averages), compared with the per-minute limits.
 *     Bursts matter only for single requests that can never fit a bucket
 *     (a warning), not for the sustained rate.
 *   - ITPM counts uncached input plus cache writes, plus cache reads only
 *     in a pool with cache_reads_count (the API's rule).  OTPM counts
 *     output tokens; in "reserve" mode a request holds max_tokens while it
 *     runs, but what stays taken is the actual output, so the sustained
 *     load is the same.
 *   - Batch requests do not count against the Messages pools: the Message
 *     Batches API has its own limits (one RPM for all models and a queue
 *     cap), which the presets do not carry.  The planner reports the Batch
 *     request rate and leaves that check to the reader.
 *   - Every miss writes the whole cacheable prefix at the write price of
 *     its TTL; every hit reads it at the read price.  Batch halves every
 *     token price, cache prices included (the discounts stack).
 *   - Long-context pricing (over 200K input tokens) is not modelled; such
 *     a task gets a warning.
 *
 * Arithmetic is exact: fixed-point integers in 128 bits (see plan.h for
 * the scales).  The one rounding is to the nano-dollar, per task, when a
 * monthly cost is formed (and again when the Batch discount is applied to
 * it); displayed ratios are rounded half up at their last printed digit.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static const char *const price_keys[PLAN_NPRICES] = {"input", "output", "cache_write_5m",
						     "cache_write_1h", "cache_read"};
static const char *const dim_keys[SHL_NBUCKETS] = {"rpm", "itpm", "otpm"};
static const char *const scen_keys[PLAN_NSCEN] = {"no_cache", "cache", "cache_batch"};
static const char *const scen_names[PLAN_NSCEN] = {"no caching, no Batch", "caching",
						   "caching + Batch"};

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen,
						       const char *fmt, ...)
{
	if (err != NULL && errlen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* ------------------------------------------------------------------ */
/* Numbers as text                                                     */
/* ------------------------------------------------------------------ */

static void u128_str(char *buf, size_t n, plan_u128 v)
{
	char tmp[48];
	size_t i = sizeof(tmp);
	tmp[--i] = '\0';
	do {
		tmp[--i] = (char)('0' + (int)(v % 10));
		v /= 10;
	} while (v != 0 && i > 0);
	snprintf(buf, n, "%s", &tmp[i]);
}

void plan_fmt_q(char *buf, size_t n, plan_u128 num, plan_u128 den, int dec)
{
	if (den == 0) {
		snprintf(buf, n, "nan");
		return;
	}
	/* q = floor(num * 10^dec / den) by long division: r < den, and den is
	 * at most ~1e27 here, so r * 10 never overflows. */
	plan_u128 q = num / den, r = num % den;
	for (int i = 0; i < dec; i++) {
		q = q * 10 + (r * 10) / den;
		r = (r * 10) % den;
	}
	if (r >= den - r) /* r / den >= 1/2: round half up */
		q++;
	char digits[48];
	u128_str(digits, sizeof(digits), q);
	size_t len = strlen(digits);
	if (dec == 0) {
		snprintf(buf, n, "%s", digits);
		return;
	}
	char padded[96];
	if (len <= (size_t)dec) { /* 0.00x */
		size_t z = (size_t)dec + 1 - len;
		memset(padded, '0', z);
		snprintf(padded + z, sizeof(padded) - z, "%s", digits);
		len += z;
	} else {
		snprintf(padded, sizeof(padded), "%s", digits);
	}
	snprintf(buf, n, "%.*s.%s", (int)(len - (size_t)dec), padded, padded + len - dec);
}

/* a - b (both scaled by den) as signed text; "-" only when it shows. */
static void fmt_signed(char *buf, size_t n, plan_u128 a, plan_u128 b, plan_u128 den, int dec)
{
	if (a >= b) {
		plan_fmt_q(buf, n, a - b, den, dec);
		return;
	}
	char mag[64];
	plan_fmt_q(mag, sizeof(mag), b - a, den, dec);
	if (strspn(mag, "0.") == strlen(mag))
		snprintf(buf, n, "%s", mag);
	else
		snprintf(buf, n, "-%s", mag);
}

/* Compare a/b with c/d exactly (b, d > 0), by continued fractions. */
static int cmp_frac(plan_u128 a, plan_u128 b, plan_u128 c, plan_u128 d)
{
	for (;;) {
		plan_u128 qa = a / b, qc = c / d;
		if (qa != qc)
			return qa < qc ? -1 : 1;
		a %= b;
		c %= d;
		if (a == 0 || c == 0)
			return (a == 0 && c == 0) ? 0 : (a == 0 ? -1 : 1);
		/* 0 < a/b, c/d < 1:  a/b < c/d  <=>  d/c < b/a, the same question. */
		plan_u128 na = d, nb = c, nc = b, nd = a;
		a = na, b = nb, c = nc, d = nd;
	}
}

/* round(num / den), half up. */
static plan_u128 div_round(plan_u128 num, plan_u128 den)
{
	return num / den + ((num % den) >= den - num % den ? 1 : 0);
}

/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

static int read_prices(const cJSON *o, int64_t price[PLAN_NPRICES])
{
	for (int k = 0; k < PLAN_NPRICES; k++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, price_keys[k]);
		if (!cJSON_IsNumber(v))
			return -EINVAL;
		price[k] = (int64_t)nearbyint(v->valuedouble *
					      (double)SHL_UNITS_PER_TOKEN_PER_USD_PER_MTOK);
	}
	return 0;
}

/* Read what shl_config_to_json wrote (already validated by the library);
 * limits and bursts come from shl_config_pool, with the library's
 * defaults resolved, never from a copy of its rules. */
static int cfg_from_lib(const shl_config *c, struct plan_cfg *out, char *err, size_t errlen)
{
	char *txt = shl_config_to_json(c);
	if (txt == NULL)
		return fail(err, errlen, "out of memory");
	cJSON *root = cJSON_Parse(txt);
	free(txt);
	if (root == NULL)
		return fail(err, errlen, "out of memory");
	int r = -EINVAL;
	const cJSON *cap = cJSON_GetObjectItemCaseSensitive(root, "spend_cap_usd");
	out->spend_cap = -1;
	if (cJSON_IsNumber(cap)) /* cents, as the library rounds them */
		out->spend_cap = (int64_t)nearbyint(cap->valuedouble * 100) *
				 (SHL_UNITS_PER_USD / 100);
	const cJSON *pools = cJSON_GetObjectItemCaseSensitive(root, "pools");
	const cJSON *p;
	out->npools = 0;
	cJSON_ArrayForEach(p, pools)
	{
		if (out->npools >= SHL_MAX_POOLS)
			goto bad;
		struct plan_pool *pp = &out->pools[out->npools];
		memset(pp, 0, sizeof(*pp));
		shl_pool_info pi;
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(p, "name");
		if (!cJSON_IsString(name) || shl_config_pool(c, out->npools, &pi) != 0 ||
		    strcmp(pi.name, name->valuestring) != 0)
			goto bad;
		snprintf(pp->name, sizeof(pp->name), "%s", pi.name);
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			pp->limit[d] = pi.limit[d];
			pp->burst[d] = pi.burst[d];
		}
		pp->cache_reads_count = pi.cache_reads_count;
		pp->otpm_reserve = pi.otpm_reserve;
		out->npools++;
	}
	/* Model entries carry their prices: the pool's unless overridden. */
	int64_t pool_price[SHL_MAX_POOLS][PLAN_NPRICES];
	int i = 0;
	cJSON_ArrayForEach(p, pools)
	{
		if (read_prices(cJSON_GetObjectItemCaseSensitive(p, "prices"), pool_price[i]))
			goto bad;
		i++;
	}
	const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
	out->nmodels = 0;
	cJSON_ArrayForEach(p, models)
	{
		if (out->nmodels >= SHL_MAX_MODELS)
			goto bad;
		struct plan_model *m = &out->models[out->nmodels];
		memset(m, 0, sizeof(*m));
		const cJSON *mt = cJSON_GetObjectItemCaseSensitive(p, "match");
		const cJSON *pn = cJSON_GetObjectItemCaseSensitive(p, "pool");
		if (!cJSON_IsString(mt) || !cJSON_IsString(pn) || mt->valuestring[0] == '\0')
			goto bad;
		snprintf(m->match, sizeof(m->match), "%s", mt->valuestring);
		m->prefix = m->match[strlen(m->match) - 1] == '*';
		m->pool = -1;
		for (int j = 0; j < out->npools; j++)
			if (strcmp(out->pools[j].name, pn->valuestring) == 0)
				m->pool = j;
		if (m->pool < 0)
			goto bad;
		memcpy(m->price, pool_price[m->pool], sizeof(m->price));
		const cJSON *pr = cJSON_GetObjectItemCaseSensitive(p, "prices");
		if (pr != NULL && read_prices(pr, m->price))
			goto bad;
		out->nmodels++;
	}
	r = 0;
bad:
	cJSON_Delete(root);
	if (r)
		return fail(err, errlen, "internal: the library's configuration JSON was not "
					 "understood");
	return 0;
}

int plan_cfg_preset(int tier, struct plan_cfg *out, char *err, size_t errlen)
{
	shl_config *c = NULL;
	int r = shl_config_preset(tier, &c);
	if (r < 0)
		return fail(err, errlen, "--tier %d: no such preset (tiers 1 to 4)", tier);
	r = cfg_from_lib(c, out, err, errlen);
	shl_config_free(c);
	snprintf(out->source, sizeof(out->source), "tier %d preset", tier);
	return r;
}

/* The same presets shmlimit-ctl takes: start, build, scale; 1..4. */
int plan_cfg_preset_named(const char *name, struct plan_cfg *out, char *err, size_t errlen)
{
	if (name[0] >= '1' && name[0] <= '9' && name[1] == '\0')
		return plan_cfg_preset(name[0] - '0', out, err, errlen);
	shl_config *c = NULL;
	int r = shl_config_preset_named(name, &c);
	if (r < 0)
		return fail(err, errlen, "--tier %s: no such preset (%s; 1 to 4 for tier1..tier4)",
			    name, shl_preset_names());
	r = cfg_from_lib(c, out, err, errlen);
	shl_config_free(c);
	snprintf(out->source, sizeof(out->source), "%.40s preset", name);
	return r;
}

int plan_cfg_parse(const char *json, size_t len, const char *source, struct plan_cfg *out,
		   char *err, size_t errlen)
{
	shl_config *c = NULL;
	shl_err e = {{0}};
	int r = shl_config_parse(json, len, &c, &e);
	if (r < 0)
		return fail(err, errlen, "%s", e.msg[0] ? e.msg : shl_strerror(r));
	r = cfg_from_lib(c, out, err, errlen);
	shl_config_free(c);
	snprintf(out->source, sizeof(out->source), "%s", source ? source : "config");
	return r;
}

int plan_model_match(const struct plan_cfg *cfg, const char *id)
{
	size_t n = strlen(id);
	int best = -ESRCH;
	size_t best_len = 0;
	for (int i = 0; i < cfg->nmodels; i++) {
		const struct plan_model *m = &cfg->models[i];
		size_t ml = strlen(m->match);
		if (!m->prefix) {
			if (ml == n && memcmp(m->match, id, n) == 0)
				return i;
			continue;
		}
		size_t pl = ml - 1; /* without the '*' */
		if (pl <= n && memcmp(m->match, id, pl) == 0 && (best < 0 || pl > best_len)) {
			best = i;
			best_len = pl;
		}
	}
	return best;
}

/* ------------------------------------------------------------------ */
/* The workload mix                                                    */
/* ------------------------------------------------------------------ */

static int check_keys(const cJSON *obj, const char *path, const char *const *keys, char *err,
		      size_t errlen)
{
	for (const cJSON *c = obj->child; c != NULL; c = c->next) {
		int ok = 0;
		for (const char *const *k = keys; *k != NULL; k++)
			if (c->string != NULL && strcmp(c->string, *k) == 0)
				ok = 1;
		if (!ok)
			return fail(err, errlen, "%s%s%s: unknown key", path, path[0] ? "." : "",
				    c->string ? c->string : "?");
		/* cJSON keeps duplicates and finds the first: refuse them. */
		for (const cJSON *p = obj->child; p != c; p = p->next)
			if (strcmp(p->string, c->string) == 0)
				return fail(err, errlen, "%s%s%s: duplicate key", path,
					    path[0] ? "." : "", c->string);
	}
	return 0;
}

static int get_count(const cJSON *o, const char *path, uint64_t min, uint64_t max,
		     uint64_t *out, char *err, size_t errlen)
{
	if (!cJSON_IsNumber(o) || !isfinite(o->valuedouble) || o->valuedouble < (double)min ||
	    o->valuedouble > (double)max || o->valuedouble != floor(o->valuedouble))
		return fail(err, errlen, "%s: expected an integer from %llu to %llu", path,
			    (unsigned long long)min, (unsigned long long)max);
	*out = (uint64_t)o->valuedouble;
	return 0;
}

/* A fraction 0..1, to parts per million (rounded). */
static int get_share(const cJSON *o, const char *path, uint32_t *out, char *err, size_t errlen)
{
	if (!cJSON_IsNumber(o) || !(o->valuedouble >= 0 && o->valuedouble <= 1))
		return fail(err, errlen, "%s: expected a number from 0 to 1", path);
	*out = (uint32_t)nearbyint(o->valuedouble * (double)PLAN_PPM);
	return 0;
}

static int parse_task(const cJSON *o, int i, struct plan_task *t, char *err, size_t errlen)
{
	static const char *const keys[] = {"name", "model", "rpm", "input_tokens",
					   "output_tokens", "cacheable_tokens", "cache_hit_rate",
					   "cache_ttl", "batch_share", "comment", NULL};
	char path[32], kp[64];
	int r;
	snprintf(path, sizeof(path), "tasks[%d]", i);
	memset(t, 0, sizeof(*t));
	if (!cJSON_IsObject(o))
		return fail(err, errlen, "%s: expected an object {name, model, rpm, input_tokens, "
					 "output_tokens, ...}", path);
	if ((r = check_keys(o, path, keys, err, errlen)))
		return r;

	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "name");
	snprintf(t->name, sizeof(t->name), "%s", path);
	if (v != NULL) {
		if (!cJSON_IsString(v) || v->valuestring[0] == '\0' ||
		    strlen(v->valuestring) > PLAN_NAME_MAX)
			return fail(err, errlen, "%s.name: expected a string of 1 to %d bytes", path,
				    PLAN_NAME_MAX);
		snprintf(t->name, sizeof(t->name), "%s", v->valuestring);
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "model");
	if (v == NULL)
		return fail(err, errlen, "%s.model: missing (a model id, e.g. "
					 "\"claude-sonnet-4-5\")", path);
	if (!cJSON_IsString(v) || v->valuestring[0] == '\0' ||
	    strlen(v->valuestring) > PLAN_MODEL_MAX)
		return fail(err, errlen, "%s.model: expected a model id of 1 to %d bytes", path,
			    PLAN_MODEL_MAX);
	snprintf(t->model, sizeof(t->model), "%s", v->valuestring);

	v = cJSON_GetObjectItemCaseSensitive(o, "rpm");
	snprintf(kp, sizeof(kp), "%s.rpm", path);
	if (v == NULL)
		return fail(err, errlen, "%s: missing (requests per minute)", kp);
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0))
		return fail(err, errlen, "%s: expected a non-negative number", kp);
	if (v->valuedouble > PLAN_MAX_RPM)
		return fail(err, errlen, "%s: expected at most %d requests per minute", kp,
			    PLAN_MAX_RPM);
	t->rpm_milli = (uint64_t)nearbyint(v->valuedouble * 1000);

	static const char *const tok_keys[] = {"input_tokens", "output_tokens"};
	uint64_t *tok_out[] = {&t->input, &t->output};
	for (int k = 0; k < 2; k++) {
		v = cJSON_GetObjectItemCaseSensitive(o, tok_keys[k]);
		snprintf(kp, sizeof(kp), "%s.%s", path, tok_keys[k]);
		if (v == NULL)
			return fail(err, errlen, "%s: missing (tokens per request)", kp);
		if ((r = get_count(v, kp, 0, PLAN_MAX_TOKENS, tok_out[k], err, errlen)))
			return r;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "cacheable_tokens");
	if (v != NULL) {
		snprintf(kp, sizeof(kp), "%s.cacheable_tokens", path);
		if ((r = get_count(v, kp, 0, t->input, &t->cacheable, err, errlen))) {
			fail(err, errlen, "%s: expected an integer from 0 to input_tokens (%llu)", kp,
			     (unsigned long long)t->input);
			return r;
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "cache_hit_rate");
	if (v != NULL) {
		snprintf(kp, sizeof(kp), "%s.cache_hit_rate", path);
		if ((r = get_share(v, kp, &t->hit_ppm, err, errlen)))
			return r;
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "cache_ttl");
	if (v != NULL) {
		if (cJSON_IsString(v) && strcmp(v->valuestring, "1h") == 0)
			t->ttl_1h = 1;
		else if (!(cJSON_IsString(v) && strcmp(v->valuestring, "5m") == 0))
			return fail(err, errlen, "%s.cache_ttl: expected \"5m\" or \"1h\"", path);
	}
	v = cJSON_GetObjectItemCaseSensitive(o, "batch_share");
	if (v != NULL) {
		snprintf(kp, sizeof(kp), "%s.batch_share", path);
		if ((r = get_share(v, kp, &t->batch_ppm, err, errlen)))
			return r;
	}
	return 0;
}

int plan_mix_parse(const char *json, size_t len, struct plan_mix *out, char *err, size_t errlen)
{
	static const char *const keys[] = {"tasks", "days_per_month", "hours_per_day", "comment",
					   NULL};
	memset(out, 0, sizeof(*out));
	out->days_per_month = 30;
	out->hours_per_day = 24;
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
	if (root == NULL) {
		size_t at = end != NULL && end >= json ? (size_t)(end - json) : 0, line = 1;
		for (size_t i = 0; i < at && i < len; i++)
			line += json[i] == '\n';
		return fail(err, errlen, "(root): not valid JSON (near byte %zu, line %zu)", at,
			    line);
	}
	int r = 0;
	uint64_t u;
	const cJSON *v;
	if (!cJSON_IsObject(root)) {
		r = fail(err, errlen, "(root): expected an object {tasks, days_per_month, "
				      "hours_per_day}");
		goto out;
	}
	if ((r = check_keys(root, "", keys, err, errlen)))
		goto out;
	if ((v = cJSON_GetObjectItemCaseSensitive(root, "days_per_month")) != NULL) {
		if ((r = get_count(v, "days_per_month", 1, 31, &u, err, errlen)))
			goto out;
		out->days_per_month = (int)u;
	}
	if ((v = cJSON_GetObjectItemCaseSensitive(root, "hours_per_day")) != NULL) {
		if ((r = get_count(v, "hours_per_day", 1, 24, &u, err, errlen)))
			goto out;
		out->hours_per_day = (int)u;
	}
	const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(root, "tasks");
	int n = cJSON_IsArray(tasks) ? cJSON_GetArraySize(tasks) : -1;
	if (n < 1 || n > PLAN_MAX_TASKS) {
		r = fail(err, errlen, "tasks: expected an array of 1 to %d tasks", PLAN_MAX_TASKS);
		goto out;
	}
	int i = 0;
	cJSON_ArrayForEach(v, tasks)
	{
		if ((r = parse_task(v, i, &out->tasks[i], err, errlen)))
			goto out;
		i++;
	}
	out->ntasks = n;
out:
	cJSON_Delete(root);
	return r;
}

/* ------------------------------------------------------------------ */
/* The computation                                                     */
/* ------------------------------------------------------------------ */

__attribute__((format(printf, 2, 3))) static void warn(struct plan_result *r, const char *fmt,
							...)
{
	if (r->nwarnings >= PLAN_MAX_WARNINGS)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->warnings[r->nwarnings++], sizeof(r->warnings[0]), fmt, ap);
	va_end(ap);
}

/* The dimension whose load / limit is largest; earlier wins ties. */
static int binding_dim(const plan_u128 load[SHL_NBUCKETS], const uint64_t limit[SHL_NBUCKETS])
{
	int best = SHL_DIM_NONE;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		if (load[d] == 0)
			continue;
		if (best == SHL_DIM_NONE || cmp_frac(load[d], limit[d], load[best], limit[best]) > 0)
			best = d;
	}
	return best;
}

/*
 * Worst cases, from the input bounds (rpm <= 1e6, tokens <= 1e8, 256 tasks,
 * prices <= 1e8 units, limits <= 1e12):
 *   load per task  R(1e9) x share(1e6) x T(1e14)        = 1e29; x256 < 2^128
 *   cost_req_ppm   3 x 1e8 tokens x 1e8 units x 1e6      = 3e22
 *   x requests_month_milli (1e9 x 60 x 24 x 31 = 4.5e13) = 1.4e36 < 2^128
 */
int plan_compute(const struct plan_cfg *cfg, const struct plan_mix *mix, struct plan_result *out,
		 char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	out->cfg = cfg;
	out->mix = mix;
	const plan_u128 P = PLAN_PPM;
	for (int i = 0; i < mix->ntasks; i++) {
		const struct plan_task *t = &mix->tasks[i];
		struct plan_task_result *tr = &out->tasks[i];
		int m = plan_model_match(cfg, t->model);
		if (m < 0) {
			fail(err, errlen, "tasks[%d].model: no model entry of %s matches \"%s\"", i,
			     cfg->source, t->model);
			return -ESRCH;
		}
		const struct plan_model *me = &cfg->models[m];
		const struct plan_pool *pool = &cfg->pools[me->pool];
		struct plan_pool_result *pr = &out->pools[me->pool];
		tr->model = m;
		tr->pool = me->pool;

		plan_u128 R = t->rpm_milli, b = t->batch_ppm, h = t->hit_ppm;
		plan_u128 share = P - b; /* of requests through the Messages API */
		plan_u128 in = t->input, c = t->cacheable, o = t->output;
		plan_u128 fresh = in - c;

		/* Expected ITPM of one Messages request, x 1e6. */
		tr->itpm_req_ppm = fresh * P + c * (P - h) + (pool->cache_reads_count ? c * h : 0);

		pr->ntasks++;
		pr->rpm_all_milli += R;
		pr->rpm_batch_e9 += R * b;
		out->rpm_batch_e9 += R * b;
		pr->load[0][SHL_DIM_RPM] += R * share * P;
		pr->load[0][SHL_DIM_ITPM] += R * share * tr->itpm_req_ppm;
		pr->load[0][SHL_DIM_OTPM] += R * share * o * P;
		pr->load[1][SHL_DIM_RPM] += R * P * P;
		pr->load[1][SHL_DIM_ITPM] += R * P * in * P;
		pr->load[1][SHL_DIM_OTPM] += R * P * o * P;

		const int64_t *pz = me->price;
		plan_u128 pin = (plan_u128)pz[PLAN_P_INPUT], pout = (plan_u128)pz[PLAN_P_OUTPUT];
		plan_u128 pw = (plan_u128)pz[t->ttl_1h ? PLAN_P_CW1H : PLAN_P_CW5M];
		plan_u128 pread = (plan_u128)pz[PLAN_P_READ];
		tr->cost_req_ppm[0] = (in * pin + o * pout) * P;
		tr->cost_req_ppm[1] = fresh * pin * P + c * (P - h) * pw + c * h * pread + o * pout * P;

		tr->requests_month_milli =
			R * 60 * (plan_u128)mix->hours_per_day * (plan_u128)mix->days_per_month;
		/* units x 1e6 x 1e3 -> units */
		const plan_u128 E9 = (plan_u128)1000000000ULL;
		tr->cost[PLAN_S_BASE] = div_round(tr->cost_req_ppm[0] * tr->requests_month_milli, E9);
		tr->cost[PLAN_S_CACHE] = div_round(tr->cost_req_ppm[1] * tr->requests_month_milli, E9);
		/* Batch requests at half price: cost x (1 - b/2). */
		tr->cost[PLAN_S_CACHE_BATCH] = div_round(tr->cost[PLAN_S_CACHE] * (2 * P - b), 2 * P);
		for (int s = 0; s < PLAN_NSCEN; s++) {
			pr->cost[s] += tr->cost[s];
			out->cost[s] += tr->cost[s];
		}

		if (t->input > PLAN_LONG_CONTEXT)
			warn(out, "tasks[%d] (%s): %llu input tokens is over 200K: long-context "
				  "prices and limits apply and are not modelled",
			     i, t->name, (unsigned long long)t->input);
		if (share > 0 && R > 0) {
			uint64_t need = t->input;
			if (!pool->cache_reads_count && t->hit_ppm == PLAN_PPM)
				need = t->input - t->cacheable;
			if (need > pool->burst[SHL_DIM_ITPM])
				warn(out, "tasks[%d] (%s): a request needs up to %llu ITPM but pool %s "
					  "holds at most %llu (burst): it can never be admitted "
					  "(E2BIG)",
				     i, t->name, (unsigned long long)need, pool->name,
				     (unsigned long long)pool->burst[SHL_DIM_ITPM]);
			if (pool->otpm_reserve && t->output > pool->burst[SHL_DIM_OTPM])
				warn(out, "tasks[%d] (%s): pool %s reserves max_tokens (>= %llu) but "
					  "holds at most %llu OTPM (burst): it can never be admitted "
					  "(E2BIG)",
				     i, t->name, pool->name, (unsigned long long)t->output,
				     (unsigned long long)pool->burst[SHL_DIM_OTPM]);
		}
	}
	for (int p = 0; p < cfg->npools; p++)
		for (int k = 0; k < 2; k++)
			out->pools[p].binds[k] =
				binding_dim(out->pools[p].load[k], cfg->pools[p].limit);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

static const plan_u128 E9 = (plan_u128)1000000000ULL;

static void add_q(cJSON *o, const char *key, plan_u128 num, plan_u128 den, int dec)
{
	char b[96];
	plan_fmt_q(b, sizeof(b), num, den, dec);
	cJSON_AddRawToObject(o, key, b);
}

static void add_usd(cJSON *o, const char *key, plan_u128 units)
{
	add_q(o, key, units, E9, 9);
}

static void add_int(cJSON *o, const char *key, plan_u128 v)
{
	char b[48];
	u128_str(b, sizeof(b), v);
	cJSON_AddRawToObject(o, key, b);
}

/* Max requests per minute of the pool's mix, all and through Messages. */
static void max_rates(const struct plan_cfg *cfg, const struct plan_pool_result *pr, int p, int k,
		      plan_u128 *num_all, plan_u128 *num_msg, plan_u128 *den)
{
	int d = pr->binds[k];
	plan_u128 lim = cfg->pools[p].limit[d];
	/* scale s = limit x 1e15 / load; all = s x rpm_all_milli / 1e3 */
	*den = pr->load[k][d];
	*num_all = pr->rpm_all_milli * lim * (plan_u128)1000000000000ULL;
	plan_u128 msg_e9 = k == 0 ? pr->rpm_all_milli * PLAN_PPM - pr->rpm_batch_e9
				  : pr->rpm_all_milli * PLAN_PPM;
	*num_msg = msg_e9 * lim * (plan_u128)PLAN_PPM;
}

static cJSON *loads_json(const struct plan_cfg *cfg, const struct plan_pool_result *pr, int p,
			 int k)
{
	cJSON *o = cJSON_CreateObject();
	const uint64_t *lim = cfg->pools[p].limit;
	cJSON *load = cJSON_AddObjectToObject(o, "load");
	cJSON *use = cJSON_AddObjectToObject(o, "utilisation_pct");
	cJSON *head = cJSON_AddObjectToObject(o, "headroom");
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		char b[96];
		add_q(load, dim_keys[d], pr->load[k][d], PLAN_LOAD_SCALE, 3);
		add_q(use, dim_keys[d], pr->load[k][d] * 100, lim[d] * PLAN_LOAD_SCALE, 2);
		fmt_signed(b, sizeof(b), lim[d] * PLAN_LOAD_SCALE, pr->load[k][d], PLAN_LOAD_SCALE, 3);
		cJSON_AddRawToObject(head, dim_keys[d], b);
	}
	if (pr->binds[k] == SHL_DIM_NONE) {
		cJSON_AddNullToObject(o, "binds_first");
		cJSON_AddNullToObject(o, "max_requests_per_min");
		cJSON_AddNullToObject(o, "max_messages_requests_per_min");
	} else {
		plan_u128 na, nm, den;
		max_rates(cfg, pr, p, k, &na, &nm, &den);
		cJSON_AddStringToObject(o, "binds_first", dim_keys[pr->binds[k]]);
		add_q(o, "max_requests_per_min", na, den, 3);
		add_q(o, "max_messages_requests_per_min", nm, den, 3);
	}
	return o;
}

static cJSON *costs_json(const plan_u128 cost[PLAN_NSCEN], int usd)
{
	cJSON *o = cJSON_CreateObject();
	for (int s = 0; s < PLAN_NSCEN; s++) {
		if (usd)
			add_usd(o, scen_keys[s], cost[s]);
		else
			add_int(o, scen_keys[s], cost[s]);
	}
	return o;
}

cJSON *plan_to_json(const struct plan_result *r)
{
	const struct plan_cfg *cfg = r->cfg;
	const struct plan_mix *mix = r->mix;
	cJSON *root = cJSON_CreateObject();
	if (root == NULL)
		return NULL;
	cJSON_AddStringToObject(root, "config", cfg->source);
	cJSON_AddNumberToObject(root, "days_per_month", mix->days_per_month);
	cJSON_AddNumberToObject(root, "hours_per_day", mix->hours_per_day);

	cJSON *pools = cJSON_AddArrayToObject(root, "pools");
	for (int p = 0; p < cfg->npools; p++) {
		const struct plan_pool *pc = &cfg->pools[p];
		const struct plan_pool_result *pr = &r->pools[p];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddItemToArray(pools, o);
		cJSON_AddStringToObject(o, "name", pc->name);
		cJSON_AddNumberToObject(o, "tasks", pr->ntasks);
		cJSON *lim = cJSON_AddObjectToObject(o, "limits");
		cJSON *bu = cJSON_AddObjectToObject(o, "burst");
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			add_int(lim, dim_keys[d], pc->limit[d]);
			add_int(bu, dim_keys[d], pc->burst[d]);
		}
		cJSON_AddBoolToObject(o, "cache_reads_count", pc->cache_reads_count);
		cJSON_AddStringToObject(o, "otpm_mode", pc->otpm_reserve ? "reserve" : "actual");
		add_q(o, "requests_per_min", pr->rpm_all_milli, 1000, 3);
		add_q(o, "batch_requests_per_min", pr->rpm_batch_e9, E9, 3);
		cJSON *plan = loads_json(cfg, pr, p, 0);
		for (cJSON *c = plan->child; c != NULL;) {
			cJSON *next = c->next;
			cJSON_AddItemToObject(o, c->string, cJSON_DetachItemViaPointer(plan, c));
			c = next;
		}
		cJSON_Delete(plan);
		cJSON_AddItemToObject(o, "no_cache_no_batch", loads_json(cfg, pr, p, 1));
		cJSON_AddItemToObject(o, "cost_usd", costs_json(pr->cost, 1));
		cJSON_AddItemToObject(o, "cost_units", costs_json(pr->cost, 0));
	}

	cJSON *tasks = cJSON_AddArrayToObject(root, "tasks");
	for (int i = 0; i < mix->ntasks; i++) {
		const struct plan_task *t = &mix->tasks[i];
		const struct plan_task_result *tr = &r->tasks[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddItemToArray(tasks, o);
		cJSON_AddStringToObject(o, "name", t->name);
		cJSON_AddStringToObject(o, "model", t->model);
		cJSON_AddStringToObject(o, "match", cfg->models[tr->model].match);
		cJSON_AddStringToObject(o, "pool", cfg->pools[tr->pool].name);
		add_q(o, "requests_per_min", t->rpm_milli, 1000, 3);
		add_q(o, "batch_share", t->batch_ppm, PLAN_PPM, 6);
		add_q(o, "itpm_per_request", tr->itpm_req_ppm, PLAN_PPM, 3);
		add_q(o, "requests_per_month", tr->requests_month_milli, 1000, 3);
		cJSON *pq = cJSON_AddObjectToObject(o, "cost_per_request_usd");
		const plan_u128 E15 = E9 * PLAN_PPM;
		add_q(pq, scen_keys[0], tr->cost_req_ppm[0], E15, 12);
		add_q(pq, scen_keys[1], tr->cost_req_ppm[1], E15, 12);
		add_q(pq, scen_keys[2], tr->cost_req_ppm[1] * (2 * PLAN_PPM - t->batch_ppm),
		      E15 * 2 * PLAN_PPM, 12);
		cJSON_AddItemToObject(o, "cost_usd", costs_json(tr->cost, 1));
		cJSON_AddItemToObject(o, "cost_units", costs_json(tr->cost, 0));
	}

	add_q(root, "batch_requests_per_min", r->rpm_batch_e9, E9, 3);
	cJSON_AddItemToObject(root, "cost_usd", costs_json(r->cost, 1));
	cJSON_AddItemToObject(root, "cost_units", costs_json(r->cost, 0));

	if (cfg->spend_cap < 0) {
		cJSON_AddNullToObject(root, "spend_cap");
	} else {
		plan_u128 cap = (plan_u128)cfg->spend_cap;
		cJSON *sc = cJSON_AddObjectToObject(root, "spend_cap");
		add_usd(sc, "usd", cap);
		add_int(sc, "units", cap);
		for (int s = 0; s < PLAN_NSCEN; s++) {
			plan_u128 u = r->cost[s];
			cJSON *o = cJSON_AddObjectToObject(sc, scen_keys[s]);
			if (cap > 0)
				add_q(o, "cap_share_pct", u * 100, cap, 2);
			else
				cJSON_AddNullToObject(o, "cap_share_pct");
			if (u > 0) {
				add_q(o, "months_of_budget", cap, u, 3);
				add_q(o, "days_to_cap", cap * (plan_u128)mix->days_per_month, u, 2);
			} else {
				cJSON_AddNullToObject(o, "months_of_budget");
				cJSON_AddNullToObject(o, "days_to_cap");
			}
			cJSON_AddBoolToObject(o, "within_cap", u <= cap);
		}
	}
	cJSON *w = cJSON_AddArrayToObject(root, "warnings");
	for (int i = 0; i < r->nwarnings; i++)
		cJSON_AddItemToArray(w, cJSON_CreateString(r->warnings[i]));
	return root;
}

void plan_print_table(FILE *f, const struct plan_result *r)
{
	const struct plan_cfg *cfg = r->cfg;
	const struct plan_mix *mix = r->mix;
	char a[96], b[96], c[96], d4[96];
	fprintf(f, "shmlimit-plan: %s; a month is %d days of %d h; %d task%s\n\n", cfg->source,
		mix->days_per_month, mix->hours_per_day, mix->ntasks, mix->ntasks == 1 ? "" : "s");

	fprintf(f, "Messages API load per pool, per minute (Batch requests are not counted here)\n");
	fprintf(f, "%-16s %-5s %16s %14s %9s %16s\n", "pool", "limit", "load", "limit", "use %",
		"headroom");
	for (int p = 0; p < cfg->npools; p++) {
		const struct plan_pool *pc = &cfg->pools[p];
		const struct plan_pool_result *pr = &r->pools[p];
		if (pr->ntasks == 0) {
			fprintf(f, "%-16s idle (no task uses it)\n", pc->name);
			continue;
		}
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			plan_u128 limq = pc->limit[d] * PLAN_LOAD_SCALE;
			plan_fmt_q(a, sizeof(a), pr->load[0][d], PLAN_LOAD_SCALE, 3);
			plan_fmt_q(b, sizeof(b), pr->load[0][d] * 100, limq, 2);
			fmt_signed(c, sizeof(c), limq, pr->load[0][d], PLAN_LOAD_SCALE, 3);
			fprintf(f, "%-16s %-5s %16s %14llu %9s %16s%s\n", d == 0 ? pc->name : "",
				dim_keys[d], a, (unsigned long long)pc->limit[d], b, c,
				pr->load[0][d] > limq ? "  OVER" : "");
		}
		for (int k = 0; k < 2; k++) {
			if (pr->binds[k] == SHL_DIM_NONE) {
				fprintf(f, "  %s: no Messages API load\n",
					k == 0 ? "planned" : "without caching and Batch");
				continue;
			}
			plan_u128 na, nm, den;
			max_rates(cfg, pr, p, k, &na, &nm, &den);
			plan_fmt_q(a, sizeof(a), na, den, 3);
			plan_fmt_q(b, sizeof(b), nm, den, 3);
			if (k == 0)
				fprintf(f, "  binds first: %s; this mix fits up to %s requests/min "
					   "(%s through the Messages API)\n",
					dim_keys[pr->binds[k]], a, b);
			else
				fprintf(f, "  without caching and Batch: binds first: %s; up to %s "
					   "requests/min\n",
					dim_keys[pr->binds[k]], a);
		}
	}
	plan_fmt_q(a, sizeof(a), r->rpm_batch_e9, E9, 3);
	fprintf(f, "Batch API: %s requests/min in all (its own limits are not checked)\n\n", a);

	fprintf(f, "Monthly cost, USD %22s %14s %16s\n", scen_names[0], scen_names[1],
		scen_names[2]);
	for (int p = 0; p <= cfg->npools; p++) {
		const plan_u128 *cost = p < cfg->npools ? r->pools[p].cost : r->cost;
		if (p < cfg->npools && r->pools[p].ntasks == 0)
			continue;
		plan_fmt_q(a, sizeof(a), cost[0], E9, 2);
		plan_fmt_q(b, sizeof(b), cost[1], E9, 2);
		plan_fmt_q(c, sizeof(c), cost[2], E9, 2);
		fprintf(f, "%-17s %22s %14s %16s\n", p < cfg->npools ? cfg->pools[p].name : "total",
			a, b, c);
	}
	if (cfg->spend_cap < 0) {
		fprintf(f, "\nSpend cap: none configured\n");
	} else {
		plan_u128 cap = (plan_u128)cfg->spend_cap;
		plan_fmt_q(a, sizeof(a), cap, E9, 2);
		fprintf(f, "\nSpend cap: %s USD per month\n", a);
		for (int s = 0; s < PLAN_NSCEN; s++) {
			plan_u128 u = r->cost[s];
			if (cap > 0)
				plan_fmt_q(b, sizeof(b), u * 100, cap, 2);
			else
				snprintf(b, sizeof(b), "-");
			if (u == 0) {
				fprintf(f, "  %-21s no spend\n", scen_names[s]);
			} else if (u <= cap) {
				plan_fmt_q(c, sizeof(c), cap, u, 3);
				fprintf(f, "  %-21s %s %% of the cap: within it (%s months of budget)\n",
					scen_names[s], b, c);
			} else {
				plan_fmt_q(d4, sizeof(d4), cap * (plan_u128)mix->days_per_month, u, 2);
				fprintf(f, "  %-21s %s %% of the cap: reached after %s days\n",
					scen_names[s], b, d4);
			}
		}
	}
	if (r->nwarnings > 0) {
		fprintf(f, "\nWarnings:\n");
		for (int i = 0; i < r->nwarnings; i++)
			fprintf(f, "  %s\n", r->warnings[i]);
	}
}

char *plan_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	const size_t max = 16u << 20;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (f == NULL) {
		fail(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap + 1);
	while (buf != NULL) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (n < cap) {
			if (ferror(f)) {
				fail(err, errlen, "%s: read error", path);
				free(buf);
				buf = NULL;
			}
			break;
		}
		if (cap >= max) {
			fail(err, errlen, "%s: larger than 16 MiB", path);
			free(buf);
			buf = NULL;
			break;
		}
		cap *= 2;
		char *nb = realloc(buf, cap + 1);
		if (nb == NULL)
			free(buf);
		buf = nb;
	}
	if (f != stdin)
		fclose(f);
	if (buf == NULL) {
		if (err != NULL && errlen > 0 && err[0] == '\0')
			fail(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}
