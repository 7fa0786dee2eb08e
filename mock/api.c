/*
 * api.c - the endpoints of the mock Claude API, and the order in which a
 * request is answered.
 *
 *   POST /v1/messages               a message, JSON or SSE (stream: true)
 *   POST /v1/messages/count_tokens  {"input_tokens": N}
 *   POST /v1/messages/batches       a message_batch object (accepted, never run)
 *   GET  /mock/stats                what the mock has seen, as JSON
 *   GET  /mock/admissions           the last admissions of each pool (limits.c)
 *   GET  /mock/health               {"ok":true}
 *   GET, POST /mock/limits          the pools' limits; change them mid-run
 *   POST /mock/shutdown             answer, then stop the server
 *
 * A message is validated (400, 404), then a scripted fault may answer it
 * (fault.c), then it is admitted into the mock's own buckets (limits.c) or
 * refused with a 429, and only then answered (reply.c) with the usage
 * estimate.c counted; stats.c records every request's outcome.  Request
 * headers script faults (x-mock-fail) and force exact usage (x-mock-usage);
 * see mock/README.md for the list.
 *
 * What this file does not do: tool execution or computing spend (the
 * spend-cap 429 is scripted only).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.h"

const struct mock_config *mock_cfg;
static atomic_uint_fast64_t next_request_id;
static atomic_uint_fast64_t api_requests;     /* toward --max-requests */
static atomic_uint_fast64_t message_requests; /* toward --fail-every */
static unsigned instance_tag;                 /* makes request ids unique */

static const char *dim_name(int d)
{
	return d == DIM_RPM ? "requests per minute" :
	       d == DIM_ITPM ? "input tokens per minute" : "output tokens per minute";
}

static int handle_messages(struct ctx *c, int count_tokens)
{
	struct http_req *r = c->r;
	int keep = 0;
	cJSON *req = NULL;
	if (strcmp(r->method, "POST") != 0) {
		keep = send_error(c, 405, "invalid_request_error",
				  "mock: use POST", NULL);
		goto out;
	}
	req = cJSON_ParseWithLength(r->body, r->body_len);
	if (req == NULL || !cJSON_IsObject(req)) {
		keep = send_error(c, 400, "invalid_request_error",
				  "mock: the body is not a JSON object", NULL);
		goto out;
	}
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(req, "model");
	const cJSON *maxt = cJSON_GetObjectItemCaseSensitive(req, "max_tokens");
	const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
	const cJSON *stream = cJSON_GetObjectItemCaseSensitive(req, "stream");
	if (!cJSON_IsString(model) || model->valuestring[0] == '\0') {
		keep = send_error(c, 400, "invalid_request_error",
				  "model: field required", NULL);
		goto out;
	}
	c->o.model = model->valuestring;
	if (!count_tokens && (!cJSON_IsNumber(maxt) || maxt->valuedouble < 1 ||
			      maxt->valuedouble > 1e9)) {
		keep = send_error(c, 400, "invalid_request_error",
				  "max_tokens: a positive integer is required", NULL);
		goto out;
	}
	if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
		keep = send_error(c, 400, "invalid_request_error",
				  "messages: a non-empty array is required", NULL);
		goto out;
	}
	int pool = -1;
	if (mock_cfg->limits != NULL) {
		pool = limits_find(mock_cfg->limits, model->valuestring);
		if (pool < 0) {
			char msg[300];
			snprintf(msg, sizeof(msg), "model: %.200s", model->valuestring);
			keep = send_error(c, 404, "not_found_error", msg, NULL);
			goto out;
		}
		c->o.pool = pool;
	}
	/* Server-side fallback: another model answers, and its pool pays. */
	const char *served = model->valuestring;
	const char *sm = http_header(r, "x-mock-serve-model");
	if (sm == NULL)
		sm = mock_cfg->serve_model;
	if (sm != NULL && !count_tokens) {
		int sp = mock_cfg->limits != NULL ? limits_find(mock_cfg->limits, sm) : 0;
		if (sm[0] == '\0' || strlen(sm) > 200 || sp < 0) {
			keep = send_error(c, 400, "invalid_request_error",
					  "mock: x-mock-serve-model must name a configured "
					  "model (1..200 characters)", NULL);
			goto out;
		}
		served = sm;
		c->o.model = served;
		if (mock_cfg->limits != NULL)
			pool = c->o.pool = sp;
	}

	/* The fault to play, if any: the header first, then --fail-every. */
	int fault = FAULT_NONE;
	const char *fh = http_header(r, "x-mock-fail");
	if (!count_tokens) {
		uint64_t n = atomic_fetch_add(&message_requests, 1) + 1;
		if (mock_cfg->fail_every > 0 && n % mock_cfg->fail_every == 0)
			fault = mock_cfg->fail_kind;
	}
	if (fh != NULL && (fault = fault_parse(fh)) < 0) {
		keep = send_error(c, 400, "invalid_request_error",
				  "mock: unknown x-mock-fail value", NULL);
		goto out;
	}
	if (count_tokens && fault == FAULT_529_MIDSTREAM)
		fault = FAULT_529;
	const char *bad = fault_parse_wire(c);
	if (bad != NULL) {
		sbuf_free(&c->pad);
		c->shape = (struct http_shape){0, 0, 0};
		keep = send_error(c, 400, "invalid_request_error", bad, NULL);
		goto out;
	}
	if (pool < 0) { /* no pool, no rate-limit headers: only those asked for */
		static const char *const hname[NDIM] = {"requests", "input-tokens",
							"output-tokens"};
		for (int d = 0; d < NDIM; d++)
			if (c->remaining[d] >= 0)
				sbuf_printf(&c->pad, "anthropic-ratelimit-%s-remaining: %.0f\r\n",
					    hname[d], c->remaining[d]);
	}

	/* Usage: forced by x-mock-usage, else estimated. */
	struct reply m = {.model = served, .pool = pool,
			  .fault = fault, .stop_reason = "end_turn"};
	struct estimate *e = calloc(1, sizeof(*e));
	if (e == NULL) {
		keep = send_json(c, 500, NULL, 0, 0);
		goto out;
	}
	const char *uh = http_header(r, "x-mock-usage");
	const char *oh = http_header(r, "x-mock-output-tokens");
	int forced = uh != NULL;
	if (forced && usage_parse_header(uh, &m.u) < 0) {
		free(e);
		keep = send_error(c, 400, "invalid_request_error",
				  "mock: x-mock-usage must be \"in,out,cw5m,cw1h,read\"",
				  NULL);
		goto out;
	}
	uint64_t want = 20;
	if (!forced && oh != NULL && parse_u64(oh, 1ULL << 40, &want) < 0) {
		free(e);
		keep = send_error(c, 400, "invalid_request_error",
				  "mock: bad x-mock-output-tokens", NULL);
		goto out;
	}
	estimate_request(req, e);
	if (!forced) {
		estimate_classify(e, &m.u);
		uint64_t max = count_tokens ? 0 : (uint64_t)maxt->valuedouble;
		m.u.out = want < max ? want : max;
		if (want > max)
			m.stop_reason = "max_tokens";
	}

	if (pool >= 0)
		pool_headers(&mock_cfg->limits->pools[pool], &c->h, c->remaining);
	keep = fault_scripted(c, fault);
	if (keep >= 0) {
		free(e);
		goto out;
	}
	if (c->raw_body != NULL) {
		/* x-mock-body: these bytes instead of a message; not admitted,
		 * not counted in the usage totals. */
		free(e);
		keep = send_body(c, 200, c->raw_type, c->raw_body, c->raw_len, r->keep_alive,
				 fault == FAULT_TRUNCATE);
		goto out;
	}

	if (count_tokens) {
		uint64_t total = forced ? m.u.in : estimate_scaled(e->tokens);
		free(e);
		stats_count_tokens();
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "input_tokens", (double)total);
		char *body = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
		keep = send_json(c, 200, body, r->keep_alive,
				 fault == FAULT_TRUNCATE);
		goto out;
	}

	if (pool >= 0) {
		struct pool *p = &mock_cfg->limits->pools[pool];
		struct need n = {.itpm = m.u.in + m.u.cw5m + m.u.cw1h};
		if (p->cache_reads_count)
			n.itpm += m.u.read;
		if (p->otpm_reserve)
			n.otpm_reserve = (uint64_t)maxt->valuedouble;
		uint64_t ra = 0;
		int dim = 0;
		if (pool_admit(p, &n, r->arrived_ns, &ra, &dim) < 0) {
			free(e);
			reset_headers(c);
			sbuf_printf(&c->h, "retry-after: %llu\r\n",
				    (unsigned long long)ra);
			pool_headers(p, &c->h, c->remaining);
			c->o.own_429 = 1;
			c->o.limited_dim = dim;
			char msg[200];
			snprintf(msg, sizeof(msg),
				 "This request would exceed the rate limit for pool %s "
				 "(%s). Please retry after %llu s.",
				 p->name, dim_name(dim), (unsigned long long)ra);
			keep = send_error(c, 429, "rate_limit_error", msg, NULL);
			goto out;
		}
		m.reserved = n.otpm_reserve;
		reset_headers(c);       /* show the state after admission */
		pool_headers(p, &c->h, c->remaining);
	}
	if (!forced)
		estimate_commit_cache(e);
	free(e);

	snprintf(m.id, sizeof(m.id), "msg_mock%016llx",
		 (unsigned long long)fnv(r->body, r->body_len));
	if (mock_cfg->latency_ms > 0)
		sleep_ms(mock_cfg->latency_ms);

	if (cJSON_IsTrue(stream) || fault == FAULT_529_MIDSTREAM) {
		keep = send_message_sse(c, &m);
	} else {
		keep = send_message_json(c, &m);
		/* OTPM is charged once the reply is out, never before: a client
		 * settles when it has read the reply, and the server must not
		 * be ahead of a client that keeps exactly to the limit. */
		if (pool >= 0)
			pool_settle(&mock_cfg->limits->pools[pool], m.reserved, m.u.out);
	}
	/* x-mock-usage-raw: the usage reported is not the usage counted */
	c->o.complete = fault == FAULT_NONE && c->o.status == 200 && c->usage_raw == NULL;
	c->o.in = m.u.in;
	c->o.out = m.u.out;
	c->o.cw = m.u.cw5m + m.u.cw1h;
	c->o.cr = m.u.read;
out:
	stats_record(&c->o);
	cJSON_Delete(req);
	return keep;
}

/* ------------------------------------------------------------------ */
/* /v1/messages/batches                                                 */
/* ------------------------------------------------------------------ */

/* RFC 3339 UTC time `secs` after `now`, with microseconds as the API has them. */
static void utc_time(const struct timespec *now, long secs, char *buf, size_t size)
{
	time_t t = now->tv_sec + secs;
	struct tm tm;
	gmtime_r(&t, &tm);
	char day[32];
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, size, "%.20s.%06dZ", day, (int)(now->tv_nsec / 1000 % 1000000));
}

/*
 * A Message Batches create: the request is validated (a non-empty
 * `requests` array of {custom_id, params} with a model in each params) and
 * answered 200 with a message_batch object "in_progress"; the batch is never
 * run, charges no rate limit and is not counted in the usage totals.
 * x-mock-fail 429 / spend-cap / 529 / 500 answer as for messages.
 */
static int handle_batch(struct ctx *c)
{
	struct http_req *r = c->r;
	int keep = 0;
	cJSON *req = NULL;
	if (strcmp(r->method, "POST") != 0) {
		keep = send_error(c, 405, "invalid_request_error", "mock: use POST", NULL);
		goto out;
	}
	req = cJSON_ParseWithLength(r->body, r->body_len);
	const cJSON *reqs = cJSON_IsObject(req) ?
			    cJSON_GetObjectItemCaseSensitive(req, "requests") : NULL;
	int n = cJSON_IsArray(reqs) ? cJSON_GetArraySize(reqs) : 0;
	if (n <= 0 || n > 100000) {
		keep = send_error(c, 400, "invalid_request_error",
				  "requests: an array of 1 to 100000 requests is required", NULL);
		goto out;
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, reqs) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "custom_id");
		const cJSON *params = cJSON_GetObjectItemCaseSensitive(it, "params");
		const cJSON *model = cJSON_GetObjectItemCaseSensitive(params, "model");
		if (!cJSON_IsString(id) || !cJSON_IsObject(params) || !cJSON_IsString(model)) {
			keep = send_error(c, 400, "invalid_request_error",
					  "requests: each needs a custom_id and params with a model",
					  NULL);
			goto out;
		}
	}
	int fault = FAULT_NONE;
	const char *fh = http_header(r, "x-mock-fail");
	if (fh != NULL && (fault = fault_parse(fh)) < 0) {
		keep = send_error(c, 400, "invalid_request_error",
				  "mock: unknown x-mock-fail value", NULL);
		goto out;
	}
	if ((keep = fault_scripted(c, fault)) >= 0)
		goto out;

	char id[48], created[64], expires[64];
	snprintf(id, sizeof(id), "msgbatch_mock%016llx",
		 (unsigned long long)fnv(r->body, r->body_len));
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	utc_time(&now, 0, created, sizeof(created));
	utc_time(&now, 24 * 3600, expires, sizeof(expires)); /* batches expire after 24 h */
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddStringToObject(o, "type", "message_batch");
	cJSON_AddStringToObject(o, "processing_status", "in_progress");
	cJSON *rc = cJSON_AddObjectToObject(o, "request_counts");
	cJSON_AddNumberToObject(rc, "processing", n);
	cJSON_AddNumberToObject(rc, "succeeded", 0);
	cJSON_AddNumberToObject(rc, "errored", 0);
	cJSON_AddNumberToObject(rc, "canceled", 0);
	cJSON_AddNumberToObject(rc, "expired", 0);
	cJSON_AddNullToObject(o, "ended_at");
	cJSON_AddStringToObject(o, "created_at", created);
	cJSON_AddStringToObject(o, "expires_at", expires);
	cJSON_AddNullToObject(o, "archived_at");
	cJSON_AddNullToObject(o, "cancel_initiated_at");
	cJSON_AddNullToObject(o, "results_url");
	char *body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	stats_batch((uint64_t)n);
	keep = send_json(c, 200, body, r->keep_alive, 0);
out:
	stats_record(&c->o);
	cJSON_Delete(req);
	return keep;
}

/* ------------------------------------------------------------------ */
/* /mock/limits                                                         */
/* ------------------------------------------------------------------ */

/*
 * GET: the pools' limits now.  POST: change them (limits_change), at once,
 * for every request admitted from then on; answers the new limits.  Like
 * every /mock/ endpoint it is a control endpoint for tests, reachable only
 * through the loopback socket the server listens on.
 */
static int handle_limits(struct ctx *c)
{
	struct http_req *r = c->r;
	struct limits *l = mock_cfg->limits;
	if (strcmp(r->method, "POST") == 0) {
		char err[256];
		int rc = l != NULL ? limits_change(l, r->body, r->body_len, err, sizeof(err)) :
				     (snprintf(err, sizeof(err), "no --config: no pools"), -ENOENT);
		if (rc < 0) {
			char msg[300];
			snprintf(msg, sizeof(msg), "mock: /mock/limits: %s", err);
			return send_error(c, rc == -ENOENT ? 404 : 400,
					  rc == -ENOENT ? "not_found_error" :
							  "invalid_request_error", msg, NULL);
		}
	} else if (strcmp(r->method, "GET") != 0) {
		return send_error(c, 405, "invalid_request_error", "mock: use GET or POST",
				  NULL);
	}
	return send_json(c, 200, limits_json(l), r->keep_alive, 0);
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                             */
/* ------------------------------------------------------------------ */

void api_init(const struct mock_config *config)
{
	mock_cfg = config;
	instance_tag = (unsigned)getpid() ^ (unsigned)(mono_ns() >> 10);
	stats_init(mock_cfg->limits != NULL ? mock_cfg->limits->npools : 0);
}

static void new_ctx(struct ctx *c, int fd, struct http_req *r)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->r = r;
	c->o.pool = -1;
	for (int d = 0; d < NDIM; d++)
		c->remaining[d] = -1;
	snprintf(c->request_id, sizeof(c->request_id), "req_mock%08x%012llx",
		 instance_tag,
		 (unsigned long long)atomic_fetch_add(&next_request_id, 1));
	sbuf_printf(&c->h, "request-id: %s\r\n", c->request_id);
}

static void ctx_free(struct ctx *c)
{
	sbuf_free(&c->h);
	sbuf_free(&c->pad);
	free(c->raw_body);
	c->raw_body = NULL;
}

void api_reject(int fd, int status)
{
	struct http_req r = {.keep_alive = 0};
	struct ctx c;
	new_ctx(&c, fd, &r);
	const char *msg = status == 413 ? "mock: request body too large" :
			  status == 431 ? "mock: request headers too large" :
					  "mock: malformed HTTP request";
	send_error(&c, status, status == 413 ? "request_too_large" :
			       "invalid_request_error", msg, NULL);
	stats_record(&c.o);
	ctx_free(&c);
}

int api_handle(int fd, struct http_req *r)
{
	struct ctx c;
	new_ctx(&c, fd, r);
	int keep;
	if (strcmp(r->path, "/mock/stats") == 0) {
		c.o.status = 200;
		keep = send_json(&c, 200, stats_json(), r->keep_alive, 0);
	} else if (strcmp(r->path, "/mock/admissions") == 0) {
		c.o.status = 200;
		keep = send_json(&c, 200, limits_admissions_json(mock_cfg->limits), r->keep_alive, 0);
	} else if (strcmp(r->path, "/mock/health") == 0) {
		char *ok = strdup("{\"ok\":true}");
		keep = send_json(&c, 200, ok, r->keep_alive, 0);
	} else if (strcmp(r->path, "/mock/limits") == 0) {
		keep = handle_limits(&c);
	} else if (strcmp(r->path, "/mock/rate-limits-fault") == 0) {
		keep = ratelimits_fault(&c);
	} else if (strcmp(r->path, "/mock/shutdown") == 0) {
		if (strcmp(r->method, "POST") != 0) {
			keep = send_json(&c, 405, error_body(&c, "invalid_request_error",
							     "mock: use POST", NULL),
					 r->keep_alive, 0);
		} else {
			send_json(&c, 200, strdup("{\"ok\":true}"), 0, 0);
			server_request_stop(STOP_SHUTDOWN);
			keep = 0;
		}
	} else {
		/* An API request: counts toward --max-requests. */
		uint64_t n = atomic_fetch_add(&api_requests, 1) + 1;
		if (mock_cfg->max_requests > 0 && n > mock_cfg->max_requests) {
			send_json(&c, 503, error_body(&c, "api_error",
						      "mock: --max-requests reached, "
						      "shutting down", NULL),
				  0, 0);
			ctx_free(&c);
			return 0;
		}
		if (strcmp(r->path, "/v1/messages") == 0) {
			keep = handle_messages(&c, 0);
		} else if (strcmp(r->path, "/v1/messages/count_tokens") == 0) {
			keep = handle_messages(&c, 1);
		} else if (strcmp(r->path, "/v1/messages/batches") == 0) {
			keep = handle_batch(&c);
		} else if (strcmp(r->path, "/v1/organizations/rate_limits") == 0) {
			keep = ratelimits_handle(&c);
		} else {
			keep = send_error(&c, 404, "not_found_error",
					  "mock: no such endpoint", NULL);
			stats_record(&c.o);
		}
		if (mock_cfg->max_requests > 0 && n == mock_cfg->max_requests) {
			server_request_stop(STOP_MAX_REQUESTS);
			keep = 0;
		}
	}
	ctx_free(&c);
	return keep;
}
