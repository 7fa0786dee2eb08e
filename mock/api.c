/*
 * api.c - the endpoints of the mock Claude API.
 *
 *   POST /v1/messages               a message, JSON or SSE (stream: true)
 *   POST /v1/messages/count_tokens  {"input_tokens": N}
 *   POST /v1/messages/batches       a message_batch object (accepted, never run)
 *   GET  /mock/stats                what the mock has seen, as JSON
 *   GET  /mock/health               {"ok":true}
 *   POST /mock/shutdown             answer, then stop the server
 *
 * Usage is deterministic so that tests can predict it and compare it with
 * what a client recorded: input is counted as ceil(characters / 4) of the
 * request's text (the same estimate the preload shim makes), a prefix ending
 * in a cache_control block is a cache write the first time it is seen and a
 * cache read afterwards, and the output is 20 tokens (capped by max_tokens)
 * unless a request header asks for another number.  Request headers also
 * script faults (x-mock-fail) and force exact usage (x-mock-usage); see
 * mock/README.md for the list.
 *
 * What this file does not do: real tokenisation, tool execution, images,
 * or computing spend (the spend-cap 429 is scripted only).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mock.h"

static const struct mock_config *cfg;
static atomic_uint_fast64_t next_request_id;
static atomic_uint_fast64_t api_requests;     /* toward --max-requests */
static atomic_uint_fast64_t message_requests; /* toward --fail-every */
static unsigned instance_tag;                 /* makes request ids unique */

/* ------------------------------------------------------------------ */
/* Statistics                                                           */
/* ------------------------------------------------------------------ */

/* Per model / per pool / overall counters. */
struct tally {
	uint64_t requests, ok, rate_limited;
	uint64_t in, out, cache_write, cache_read;
};

#define MAX_MODELS 256 /* distinct model names tracked; more go to "(other)" */

/* All fields are guarded by st.mu. */
static struct {
	pthread_mutex_t mu;
	uint64_t requests;
	uint64_t by_status[600];
	uint64_t rate_limited, scripted_429, count_tokens, batches, batch_requests;
	struct tally total;
	int nmodels;
	char *model_name[MAX_MODELS];
	struct tally model[MAX_MODELS];
	struct tally other_models;
	struct tally *pool;  /* cfg->limits->npools entries */
} st = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* One finished request, as the statistics see it. */
struct outcome {
	int status;
	const char *model;    /* NULL if the body had none */
	int pool;             /* -1: none */
	int own_429;          /* refused by the mock's buckets */
	int scripted_429;     /* x-mock-fail 429 or spend-cap */
	int complete;         /* a whole successful message: count its usage */
	uint64_t in, out, cw, cr;
};

static struct tally *model_tally(const char *model)
{
	for (int i = 0; i < st.nmodels; i++)
		if (strcmp(st.model_name[i], model) == 0)
			return &st.model[i];
	if (st.nmodels < MAX_MODELS) {
		char *name = strdup(model);
		if (name != NULL) {
			st.model_name[st.nmodels] = name;
			return &st.model[st.nmodels++];
		}
	}
	return &st.other_models;
}

static void tally_add(struct tally *t, const struct outcome *o)
{
	t->requests++;
	if (o->own_429)
		t->rate_limited++;
	if (o->complete) {
		t->ok++;
		t->in += o->in;
		t->out += o->out;
		t->cache_write += o->cw;
		t->cache_read += o->cr;
	}
}

static void record(const struct outcome *o)
{
	pthread_mutex_lock(&st.mu);
	st.requests++;
	if (o->status >= 100 && o->status < 600)
		st.by_status[o->status]++;
	st.rate_limited += (uint64_t)o->own_429;
	st.scripted_429 += (uint64_t)o->scripted_429;
	tally_add(&st.total, o);
	if (o->model != NULL)
		tally_add(model_tally(o->model), o);
	if (o->pool >= 0 && st.pool != NULL)
		tally_add(&st.pool[o->pool], o);
	pthread_mutex_unlock(&st.mu);
}

static cJSON *tally_json(const struct tally *t)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "requests", (double)t->requests);
	cJSON_AddNumberToObject(o, "ok", (double)t->ok);
	cJSON_AddNumberToObject(o, "rate_limited", (double)t->rate_limited);
	cJSON_AddNumberToObject(o, "input_tokens", (double)t->in);
	cJSON_AddNumberToObject(o, "output_tokens", (double)t->out);
	cJSON_AddNumberToObject(o, "cache_creation_input_tokens",
				(double)t->cache_write);
	cJSON_AddNumberToObject(o, "cache_read_input_tokens", (double)t->cache_read);
	return o;
}

static char *stats_json(void)
{
	cJSON *root = cJSON_CreateObject();
	pthread_mutex_lock(&st.mu);
	cJSON_AddNumberToObject(root, "requests", (double)st.requests);
	cJSON *bs = cJSON_AddObjectToObject(root, "by_status");
	for (int s = 100; s < 600; s++) {
		if (st.by_status[s] == 0)
			continue;
		char key[16];
		snprintf(key, sizeof(key), "%d", s);
		cJSON_AddNumberToObject(bs, key, (double)st.by_status[s]);
	}
	cJSON_AddNumberToObject(root, "rate_limited", (double)st.rate_limited);
	cJSON_AddNumberToObject(root, "scripted_429", (double)st.scripted_429);
	cJSON_AddNumberToObject(root, "count_tokens", (double)st.count_tokens);
	cJSON_AddNumberToObject(root, "batches", (double)st.batches);
	cJSON_AddNumberToObject(root, "batch_requests", (double)st.batch_requests);
	cJSON *u = cJSON_AddObjectToObject(root, "usage");
	cJSON_AddNumberToObject(u, "input_tokens", (double)st.total.in);
	cJSON_AddNumberToObject(u, "output_tokens", (double)st.total.out);
	cJSON_AddNumberToObject(u, "cache_creation_input_tokens",
				(double)st.total.cache_write);
	cJSON_AddNumberToObject(u, "cache_read_input_tokens",
				(double)st.total.cache_read);
	cJSON *bm = cJSON_AddObjectToObject(root, "by_model");
	for (int i = 0; i < st.nmodels; i++)
		cJSON_AddItemToObject(bm, st.model_name[i], tally_json(&st.model[i]));
	if (st.other_models.requests > 0)
		cJSON_AddItemToObject(bm, "(other)", tally_json(&st.other_models));
	cJSON *bp = cJSON_AddObjectToObject(root, "by_pool");
	if (cfg->limits != NULL)
		for (int i = 0; i < cfg->limits->npools; i++)
			cJSON_AddItemToObject(bp, cfg->limits->pools[i].name,
					      tally_json(&st.pool[i]));
	pthread_mutex_unlock(&st.mu);
	char *s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return s;
}

/* ------------------------------------------------------------------ */
/* The prompt cache: a bounded set of prefixes seen                    */
/* ------------------------------------------------------------------ */

#define CACHE_SLOTS 65536                     /* power of two */
#define CACHE_MAX (CACHE_SLOTS / 4 * 3)       /* then forget everything */
#define TTL_5M_NS (300LL * 1000000000LL)
#define TTL_1H_NS (3600LL * 1000000000LL)

/* Open addressing on a 64-bit hash of a prefix (0 = empty slot).
 * Guarded by cache_mu.  An entry is live until its expiry; a hit extends
 * it, like the real cache's refresh on use. */
static struct cache_slot {
	uint64_t key;
	int64_t expires_ns;
} cache[CACHE_SLOTS];
static int cache_count;
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;

static struct cache_slot *cache_slot(uint64_t key)
{
	size_t i = (size_t)(key * 0x9E3779B97F4A7C15ULL >> 48) & (CACHE_SLOTS - 1);
	while (cache[i].key != 0 && cache[i].key != key)
		i = (i + 1) & (CACHE_SLOTS - 1);
	return &cache[i];
}

static int cache_seen(uint64_t key, int64_t now)
{
	pthread_mutex_lock(&cache_mu);
	struct cache_slot *s = cache_slot(key);
	int hit = s->key == key && s->expires_ns > now;
	pthread_mutex_unlock(&cache_mu);
	return hit;
}

static void cache_put(uint64_t key, int64_t expires)
{
	pthread_mutex_lock(&cache_mu);
	if (cache_count >= CACHE_MAX) {
		memset(cache, 0, sizeof(cache));
		cache_count = 0;
	}
	struct cache_slot *s = cache_slot(key);
	if (s->key == 0) {
		s->key = key;
		cache_count++;
	}
	if (expires > s->expires_ns)
		s->expires_ns = expires;
	pthread_mutex_unlock(&cache_mu);
}

/* ------------------------------------------------------------------ */
/* Usage of a request                                                   */
/* ------------------------------------------------------------------ */

/*
 * The count is the preload shim's estimate (preload/request.c), made exact
 * here by definition, so that a test can compare what the shim charged at
 * admission with what the server reports:
 *
 *   characters  UTF-8 code points of every piece of text, in prompt order:
 *               each element of `tools` as compact JSON, then `system`,
 *               then each message's `content` (a string, or blocks);
 *   blocks      text: its text; thinking: its thinking; tool_use: its
 *               name and its input as compact JSON; tool_result: its
 *               content (string or blocks, recursively); image/document:
 *               source.data when source.type is "text", else a flat 1600
 *               tokens; any other block: its compact JSON;
 *   tokens      ceil(characters / 4).
 *
 * Caching works on prefixes, as the real API's does: a block (or tool) with
 * cache_control ends a cache prefix, identified by a hash of all the text up
 * to and including it.  The longest prefix already cached is read; the text
 * from there to the last breakpoint is written (to the 1 h cache up to the
 * last "1h" breakpoint, the rest to the 5 min cache); the text after the
 * last breakpoint is uncached input.  Token counts are differences of
 * ceil(cumulative characters / 4), so the parts always add up to the whole.
 */

#define CHARS_PER_TOKEN 4
#define MEDIA_TOKENS 1600
#define MAX_BREAKPOINTS 64 /* further cache_control marks are ignored */

struct estimate {
	uint64_t chars;   /* characters so far, in prompt order */
	uint64_t hash;    /* FNV-1a of the text so far */
	int nbp;
	struct {
		uint64_t key;     /* hash of the prefix */
		uint64_t chars;   /* its length */
		int ttl_1h;
	} bp[MAX_BREAKPOINTS];
};

static uint64_t fnv_add(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static void add_text(struct estimate *e, const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80) /* not a continuation */
			e->chars++;
	e->hash = fnv_add(e->hash, s, n);
}

static void add_json(struct estimate *e, const cJSON *v)
{
	char *s = cJSON_PrintUnformatted(v);
	if (s != NULL) {
		add_text(e, s);
		cJSON_free(s);
	}
}

/* If obj carries cache_control, the prefix so far is a breakpoint. */
static void mark(struct estimate *e, const cJSON *obj)
{
	const cJSON *cc = cJSON_GetObjectItemCaseSensitive(obj, "cache_control");
	if (!cJSON_IsObject(cc) || e->nbp == MAX_BREAKPOINTS)
		return;
	const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(cc, "ttl");
	e->bp[e->nbp].key = e->hash ? e->hash : 1;
	e->bp[e->nbp].chars = e->chars;
	e->bp[e->nbp].ttl_1h = cJSON_IsString(ttl) && strcmp(ttl->valuestring, "1h") == 0;
	e->nbp++;
}

static void add_content(struct estimate *e, const cJSON *content);

static void add_block(struct estimate *e, const cJSON *b)
{
	if (cJSON_IsString(b)) {
		add_text(e, b->valuestring);
		return;
	}
	if (!cJSON_IsObject(b))
		return;
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(b, "type");
	const char *t = cJSON_IsString(type) ? type->valuestring : "";
	const cJSON *x;
	if (strcmp(t, "text") == 0 || strcmp(t, "thinking") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, t);
		if (cJSON_IsString(x))
			add_text(e, x->valuestring);
	} else if (strcmp(t, "image") == 0 || strcmp(t, "document") == 0) {
		const cJSON *src = cJSON_GetObjectItemCaseSensitive(b, "source");
		const cJSON *stype = cJSON_GetObjectItemCaseSensitive(src, "type");
		const cJSON *data = cJSON_GetObjectItemCaseSensitive(src, "data");
		if (cJSON_IsString(stype) && strcmp(stype->valuestring, "text") == 0 &&
		    cJSON_IsString(data)) {
			add_text(e, data->valuestring);
		} else {
			e->chars += (uint64_t)MEDIA_TOKENS * CHARS_PER_TOKEN;
			if (cJSON_IsString(data))
				e->hash = fnv_add(e->hash, data->valuestring,
						  strlen(data->valuestring));
		}
	} else if (strcmp(t, "tool_use") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, "name");
		if (cJSON_IsString(x))
			add_text(e, x->valuestring);
		x = cJSON_GetObjectItemCaseSensitive(b, "input");
		if (x != NULL)
			add_json(e, x);
	} else if (strcmp(t, "tool_result") == 0) {
		add_content(e, cJSON_GetObjectItemCaseSensitive(b, "content"));
	} else {
		add_json(e, b);
	}
	mark(e, b);
}

static void add_content(struct estimate *e, const cJSON *content)
{
	if (cJSON_IsString(content)) {
		add_text(e, content->valuestring);
	} else if (cJSON_IsArray(content)) {
		const cJSON *b;
		cJSON_ArrayForEach(b, content)
			add_block(e, b);
	}
}

static void estimate_request(const cJSON *req, struct estimate *e)
{
	memset(e, 0, sizeof(*e));
	e->hash = FNV_INIT;
	const cJSON *x;
	const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
	if (cJSON_IsArray(tools)) {
		cJSON_ArrayForEach(x, tools) {
			add_json(e, x);
			mark(e, x);
		}
	}
	add_content(e, cJSON_GetObjectItemCaseSensitive(req, "system"));
	const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
	cJSON_ArrayForEach(x, msgs)
		add_content(e, cJSON_GetObjectItemCaseSensitive(x, "content"));
}

struct usage {
	uint64_t in, out, cw5m, cw1h, read;
};

static uint64_t tokens(uint64_t chars)
{
	return (chars + CHARS_PER_TOKEN - 1) / CHARS_PER_TOKEN;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* Split the estimate into cache reads, 1 h and 5 min writes, and input. */
static void classify(const struct estimate *e, struct usage *u)
{
	int64_t now = mono_ns();
	uint64_t hit = 0, last = 0, last_1h = 0;
	for (int i = 0; i < e->nbp; i++) {
		last = max_u64(last, e->bp[i].chars);
		if (e->bp[i].ttl_1h)
			last_1h = max_u64(last_1h, e->bp[i].chars);
		if (cache_seen(e->bp[i].key, now))
			hit = max_u64(hit, e->bp[i].chars);
	}
	uint64_t upto_1h = max_u64(last_1h, hit);
	uint64_t upto_5m = max_u64(last, upto_1h);
	u->read = tokens(hit);
	u->cw1h = tokens(upto_1h) - u->read;
	u->cw5m = tokens(upto_5m) - tokens(upto_1h);
	u->in = tokens(max_u64(e->chars, upto_5m)) - tokens(upto_5m);
}

/* The request was admitted: its prefixes are now cached (or refreshed). */
static void commit_cache(const struct estimate *e)
{
	int64_t now = mono_ns();
	for (int i = 0; i < e->nbp; i++)
		cache_put(e->bp[i].key, now + (e->bp[i].ttl_1h ? TTL_1H_NS : TTL_5M_NS));
}

/* "in,out,cw5m,cw1h,read" */
static int parse_usage_header(const char *s, struct usage *u)
{
	uint64_t v[5];
	char part[32];
	for (int i = 0; i < 5; i++) {
		const char *end = strchr(s, ',');
		size_t n = end ? (size_t)(end - s) : strlen(s);
		if ((end == NULL) != (i == 4) || n >= sizeof(part))
			return -EINVAL;
		memcpy(part, s, n);
		part[n] = '\0';
		if (parse_u64(part, 1ULL << 40, &v[i]) < 0)
			return -EINVAL;
		s = end ? end + 1 : s + n;
	}
	u->in = v[0];
	u->out = v[1];
	u->cw5m = v[2];
	u->cw1h = v[3];
	u->read = v[4];
	return 0;
}

/* ------------------------------------------------------------------ */
/* Responses                                                            */
/* ------------------------------------------------------------------ */

int fault_parse(const char *s)
{
	static const char *const names[] = {
		[FAULT_429] = "429",           [FAULT_SPEND_CAP] = "spend-cap",
		[FAULT_529] = "529",           [FAULT_529_MIDSTREAM] = "529-midstream",
		[FAULT_500] = "500",           [FAULT_TRUNCATE] = "truncate",
	};
	for (int i = FAULT_429; i <= FAULT_TRUNCATE; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -EINVAL;
}

/* Per-request context while answering. */
struct ctx {
	int fd;
	struct http_req *r;
	char request_id[48];
	struct sbuf h;          /* extra response headers */
	struct outcome o;
	/* Wire faults asked for by request headers (see parse_wire) */
	struct http_shape shape;  /* x-mock-encoding, x-mock-chunk-bytes */
	struct sbuf pad;          /* x-mock-pad-*, x-mock-bad-utf8 header lines */
	int bad_utf8;             /* x-mock-bad-utf8: the reply text too */
	const char *usage_raw;    /* x-mock-usage-raw */
	char *raw_body;           /* x-mock-body, decoded */
	size_t raw_len;
	const char *raw_type;     /* x-mock-content-type */
	double remaining[NDIM];   /* x-mock-remaining, -1: the mock's own value */
};

/* Drop the extra headers gathered so far, keeping the request id. */
static void reset_headers(struct ctx *c)
{
	c->h.len = 0;
	if (c->h.p != NULL)
		c->h.p[0] = '\0';
	sbuf_printf(&c->h, "request-id: %s\r\n", c->request_id);
}

static char *error_body(const struct ctx *c, const char *type,
			const char *msg, const char *error_code)
{
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "type", "error");
	cJSON *e = cJSON_AddObjectToObject(root, "error");
	cJSON_AddStringToObject(e, "type", type);
	cJSON_AddStringToObject(e, "message", msg);
	if (error_code != NULL) {
		cJSON *d = cJSON_AddObjectToObject(e, "details");
		cJSON_AddStringToObject(d, "error_code", error_code);
	}
	cJSON_AddStringToObject(root, "request_id", c->request_id);
	char *s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return s;
}

/* Send a body of `type`, shaped as the request asked (see parse_wire);
 * returns keep-alive. */
static int send_body(struct ctx *c, int status, const char *type, const char *body,
		     size_t len, int keep_alive, int truncate)
{
	struct http_shape sh = c->shape;
	sh.truncate = truncate;
	struct sbuf extra = {0};
	sbuf_add(&extra, c->h.p ? c->h.p : "", c->h.len);
	sbuf_add(&extra, c->pad.p ? c->pad.p : "", c->pad.len);
	if (extra.oom) {
		status = 500;
		keep_alive = 0;
		sh.truncate = 0;
	}
	c->o.status = status;
	int rc = http_respond(c->fd, status, extra.oom ? NULL : &extra, type, body, len,
			      keep_alive, &sh);
	sbuf_free(&extra);
	return rc == 0 && keep_alive && !sh.truncate;
}

/* Send a JSON body (or a stock error if it is NULL); returns keep-alive. */
static int send_json(struct ctx *c, int status, char *body, int keep_alive,
		     int truncate)
{
	static const char oom[] =
		"{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
		"\"message\":\"mock: out of memory\"}}";
	if (body == NULL || c->h.oom) {
		status = 500;
		keep_alive = 0;
		truncate = 0;
	}
	const char *b = body ? body : oom;
	int keep = send_body(c, status, "application/json", b, strlen(b), keep_alive, truncate);
	free(body);
	return keep;
}

static int send_error(struct ctx *c, int status, const char *type,
		      const char *msg, const char *error_code)
{
	return send_json(c, status, error_body(c, type, msg, error_code),
			 c->r->keep_alive, 0);
}

/* The reply's usage object, or the request's x-mock-usage-raw text as is. */
static cJSON *usage_json(const struct ctx *c, const struct usage *u, uint64_t out)
{
	if (c->usage_raw != NULL)
		return cJSON_CreateRaw(c->usage_raw);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "input_tokens", (double)u->in);
	cJSON_AddNumberToObject(o, "cache_creation_input_tokens",
				(double)(u->cw5m + u->cw1h));
	cJSON_AddNumberToObject(o, "cache_read_input_tokens", (double)u->read);
	cJSON *cc = cJSON_AddObjectToObject(o, "cache_creation");
	cJSON_AddNumberToObject(cc, "ephemeral_5m_input_tokens", (double)u->cw5m);
	cJSON_AddNumberToObject(cc, "ephemeral_1h_input_tokens", (double)u->cw1h);
	cJSON_AddNumberToObject(o, "output_tokens", (double)out);
	cJSON_AddStringToObject(o, "service_tier", "standard");
	return o;
}

/* Not UTF-8: a lone 0xff and 0xfe, a lead byte without its continuation,
 * an encoded surrogate, an over-long 5-byte form (x-mock-bad-utf8). */
#define BAD_UTF8 "\xff\xfe \xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80 \x80"

/* "tok tok ..." : words [from, to) of the output, with the separating
 * spaces, so that the concatenation of all pieces is the whole text; with
 * `junk`, invalid UTF-8 after the first word. */
static char *words(uint64_t from, uint64_t to, int junk)
{
	struct sbuf b = {0};
	sbuf_puts(&b, "");
	for (uint64_t i = from; i < to; i++) {
		sbuf_puts(&b, i == 0 ? "tok" : " tok");
		if (i == from && junk)
			sbuf_puts(&b, BAD_UTF8);
	}
	if (b.oom) {
		sbuf_free(&b);
		return NULL;
	}
	return b.p;
}

/* The parts of a message reply that do not depend on the framing. */
struct reply {
	const char *model;
	char id[48];
	struct usage u;
	const char *stop_reason;
	int pool;               /* -1: no limits */
	uint64_t reserved;      /* OTPM reserved at admission */
	int fault;
};

static int send_message_json(struct ctx *c, const struct reply *m)
{
	char *text = words(0, m->u.out, c->bad_utf8);
	if (text == NULL)
		return send_json(c, 500, NULL, 0, 0);
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "id", m->id);
	cJSON_AddStringToObject(root, "type", "message");
	cJSON_AddStringToObject(root, "role", "assistant");
	cJSON_AddStringToObject(root, "model", m->model);
	cJSON *content = cJSON_AddArrayToObject(root, "content");
	cJSON *blk = cJSON_CreateObject();
	cJSON_AddStringToObject(blk, "type", "text");
	cJSON_AddStringToObject(blk, "text", text);
	cJSON_AddItemToArray(content, blk);
	cJSON_AddStringToObject(root, "stop_reason", m->stop_reason);
	cJSON_AddNullToObject(root, "stop_sequence");
	cJSON_AddItemToObject(root, "usage", usage_json(c, &m->u, m->u.out));
	char *body = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	free(text);
	return send_json(c, 200, body, c->r->keep_alive,
			 m->fault == FAULT_TRUNCATE);
}

/* An SSE stream in chunked encoding.  With `hold` set, everything is kept
 * in `all` and only half of it is sent at the end (the truncate fault).
 * With `whole` set, the events are kept in `all` unframed and sent at the
 * end through send_body (gzip, x-mock-chunk-bytes). */
struct stream {
	int fd;
	int hold;
	int whole;
	int chunked;    /* 0 for HTTP/1.0 clients: close-delimited instead */
	int err;
	struct sbuf all;
};

static void stream_chunk(struct stream *s, const char *data, size_t n)
{
	if (s->whole) {
		sbuf_add(&s->all, data, n);
		return;
	}
	struct sbuf b = {0};
	if (s->chunked && n > 0)
		sbuf_printf(&b, "%zx\r\n", n);
	else if (s->chunked)
		sbuf_puts(&b, "0\r\n");
	sbuf_add(&b, data, n);
	if (s->chunked)
		sbuf_puts(&b, "\r\n");
	if (b.len == 0)
		return;
	if (b.oom)
		s->err = -ENOMEM;
	else if (s->hold)
		sbuf_add(&s->all, b.p, b.len);
	else if (s->err == 0)
		s->err = http_send(s->fd, b.p, b.len);
	sbuf_free(&b);
}

/* One event; takes ownership of data. */
static void stream_event(struct stream *s, const char *name, cJSON *data)
{
	char *json = cJSON_PrintUnformatted(data);
	cJSON_Delete(data);
	struct sbuf b = {0};
	sbuf_printf(&b, "event: %s\ndata: %s\n\n", name, json ? json : "{}");
	free(json);
	stream_chunk(s, b.p ? b.p : "", b.len);
	sbuf_free(&b);
}

static cJSON *typed(const char *type)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "type", type);
	return o;
}

static int send_message_sse(struct ctx *c, const struct reply *m)
{
	c->o.status = 200;
	int chunked = c->r->minor >= 1;
	int keep_alive = chunked && c->r->keep_alive;
	struct stream s = {.fd = c->fd, .chunked = chunked,
			   .whole = c->shape.gzip || c->shape.chunk > 0};
	if (!s.whole) {
		s.hold = m->fault == FAULT_TRUNCATE;
		struct sbuf head = {0};
		sbuf_puts(&head, "HTTP/1.1 200 OK\r\nserver: shmlimit-mock\r\n");
		sbuf_add(&head, c->h.p ? c->h.p : "", c->h.len);
		sbuf_add(&head, c->pad.p ? c->pad.p : "", c->pad.len);
		sbuf_printf(&head, "content-type: text/event-stream\r\n"
			    "cache-control: no-cache\r\n%s"
			    "connection: %s\r\n\r\n",
			    chunked ? "transfer-encoding: chunked\r\n" : "",
			    keep_alive ? "keep-alive" : "close");
		if (head.oom)
			s.err = -ENOMEM;
		else if (s.hold)
			sbuf_add(&s.all, head.p, head.len);
		else
			s.err = http_send(c->fd, head.p, head.len);
		sbuf_free(&head);
	}

	cJSON *ev = typed("message_start");
	cJSON *msg = cJSON_AddObjectToObject(ev, "message");
	cJSON_AddStringToObject(msg, "id", m->id);
	cJSON_AddStringToObject(msg, "type", "message");
	cJSON_AddStringToObject(msg, "role", "assistant");
	cJSON_AddStringToObject(msg, "model", m->model);
	cJSON_AddArrayToObject(msg, "content");
	cJSON_AddNullToObject(msg, "stop_reason");
	cJSON_AddNullToObject(msg, "stop_sequence");
	cJSON_AddItemToObject(msg, "usage", usage_json(c, &m->u, 1));
	stream_event(&s, "message_start", ev);

	uint64_t sent = 0;
	if (m->fault == FAULT_529_MIDSTREAM) {
		ev = typed("error");
		cJSON *e = cJSON_AddObjectToObject(ev, "error");
		cJSON_AddStringToObject(e, "type", "overloaded_error");
		cJSON_AddStringToObject(e, "message", "Overloaded");
		stream_event(&s, "error", ev);
		goto end;
	}

	ev = typed("content_block_start");
	cJSON_AddNumberToObject(ev, "index", 0);
	cJSON *cb = cJSON_AddObjectToObject(ev, "content_block");
	cJSON_AddStringToObject(cb, "type", "text");
	cJSON_AddStringToObject(cb, "text", "");
	stream_event(&s, "content_block_start", ev);
	stream_event(&s, "ping", typed("ping"));

	uint64_t out = m->u.out;
	uint64_t ndelta = out < 5 ? out : 5;
	for (uint64_t k = 0; k < ndelta && s.err == 0; k++) {
		uint64_t from = out * k / ndelta, to = out * (k + 1) / ndelta;
		if (k > 0 && cfg->chunk_delay_ms > 0 && !s.hold)
			sleep_ms(cfg->chunk_delay_ms);
		char *text = words(from, to, c->bad_utf8 && k == 0);
		ev = typed("content_block_delta");
		cJSON_AddNumberToObject(ev, "index", 0);
		cJSON *d = cJSON_AddObjectToObject(ev, "delta");
		cJSON_AddStringToObject(d, "type", "text_delta");
		cJSON_AddStringToObject(d, "text", text ? text : "");
		free(text);
		stream_event(&s, "content_block_delta", ev);
		sent = to;
		/* Halfway: an intermediate, cumulative message_delta and a ping. */
		if (k + 1 == ndelta / 2 && sent < out) {
			ev = typed("message_delta");
			d = cJSON_AddObjectToObject(ev, "delta");
			cJSON_AddNullToObject(d, "stop_reason");
			cJSON_AddNullToObject(d, "stop_sequence");
			if (c->usage_raw != NULL) {
				cJSON_AddItemToObject(ev, "usage", cJSON_CreateRaw(c->usage_raw));
			} else {
				cJSON *u = cJSON_AddObjectToObject(ev, "usage");
				cJSON_AddNumberToObject(u, "output_tokens", (double)sent);
			}
			stream_event(&s, "message_delta", ev);
			stream_event(&s, "ping", typed("ping"));
		}
	}
	ev = typed("content_block_stop");
	cJSON_AddNumberToObject(ev, "index", 0);
	stream_event(&s, "content_block_stop", ev);

	ev = typed("message_delta");
	cJSON *d = cJSON_AddObjectToObject(ev, "delta");
	cJSON_AddStringToObject(d, "stop_reason", m->stop_reason);
	cJSON_AddNullToObject(d, "stop_sequence");
	if (c->usage_raw != NULL) {
		cJSON_AddItemToObject(ev, "usage", cJSON_CreateRaw(c->usage_raw));
	} else {
		cJSON *u = cJSON_AddObjectToObject(ev, "usage");
		cJSON_AddNumberToObject(u, "input_tokens", (double)m->u.in);
		cJSON_AddNumberToObject(u, "cache_creation_input_tokens",
					(double)(m->u.cw5m + m->u.cw1h));
		cJSON_AddNumberToObject(u, "cache_read_input_tokens", (double)m->u.read);
		cJSON_AddNumberToObject(u, "output_tokens", (double)out);
	}
	stream_event(&s, "message_delta", ev);
	stream_event(&s, "message_stop", typed("message_stop"));
	sent = out;
end:
	stream_chunk(&s, "", 0);
	if (m->pool >= 0)
		pool_settle(&cfg->limits->pools[m->pool], m->reserved, sent);
	if (s.whole) {
		sbuf_puts(&c->h, "cache-control: no-cache\r\n");
		int keep = 0;
		if (s.all.oom)
			send_json(c, 500, NULL, 0, 0);
		else
			keep = send_body(c, 200, "text/event-stream", s.all.p, s.all.len,
					 keep_alive, m->fault == FAULT_TRUNCATE);
		sbuf_free(&s.all);
		return keep;
	}
	if (s.hold) {
		if (!s.all.oom)
			http_send(c->fd, s.all.p, s.all.len / 2);
		sbuf_free(&s.all);
		return 0;
	}
	return s.err == 0 && keep_alive;
}

/* ------------------------------------------------------------------ */
/* /v1/messages and count_tokens                                        */
/* ------------------------------------------------------------------ */

static uint64_t fnv(const char *s, size_t n)
{
	return fnv_add(FNV_INIT, s, n);
}

/* Answer a scripted fault that happens before any generation.  Returns -1
 * if `fault` is not one of those. */
static int scripted(struct ctx *c, int fault)
{
	uint64_t ra = 2;
	switch (fault) {
	case FAULT_429: {
		const char *v = http_header(c->r, "x-mock-retry-after");
		if (v != NULL && parse_u64(v, 86400, &ra) < 0)
			return send_error(c, 400, "invalid_request_error",
					  "mock: bad x-mock-retry-after", NULL);
		uint64_t ra_ms = 0;
		const char *vm = http_header(c->r, "x-mock-retry-after-ms");
		if (vm != NULL && parse_u64(vm, 86400000, &ra_ms) < 0)
			return send_error(c, 400, "invalid_request_error",
					  "mock: bad x-mock-retry-after-ms", NULL);
		sbuf_printf(&c->h, "retry-after: %llu\r\n", (unsigned long long)ra);
		if (vm != NULL)
			sbuf_printf(&c->h, "retry-after-ms: %llu\r\n", (unsigned long long)ra_ms);
		c->o.scripted_429 = 1;
		return send_error(c, 429, "rate_limit_error",
				  "mock: scripted rate limit", NULL);
	}
	case FAULT_SPEND_CAP:
		c->o.scripted_429 = 1;
		return send_error(c, 429, "rate_limit_error",
				  "You have reached your specified API usage limits. "
				  "You will regain access on the first day of next month.",
				  "enforced_spend_limit_reached");
	case FAULT_529:
		return send_error(c, 529, "overloaded_error", "Overloaded", NULL);
	case FAULT_500:
		return send_error(c, 500, "api_error", "Internal server error", NULL);
	default:
		return -1;
	}
}

/* Standard base64 (padding optional); returns the byte count or -1. */
static long base64_decode(const char *in, char *out)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(in);
	while (n > 0 && in[n - 1] == '=')
		n--;
	long len = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		const char *q = in[i] ? strchr(alpha, in[i]) : NULL;
		if (q == NULL)
			return -1;
		acc = acc << 6 | (uint32_t)(q - alpha);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[len++] = (char)(acc >> bits & 0xff);
		}
	}
	return n % 4 == 1 ? -1 : len;
}

/*
 * The wire faults a request asks for (mock/README.md, "Wire faults"):
 * x-mock-encoding, x-mock-chunk-bytes, x-mock-pad-bytes, x-mock-pad-headers,
 * x-mock-bad-utf8, x-mock-usage-raw, x-mock-body, x-mock-content-type.
 * Returns NULL, or the message of a 400 for a malformed value.
 */
static const char *parse_wire(struct ctx *c)
{
	const struct http_req *r = c->r;
	const char *v;
	uint64_t n;
	if ((v = http_header(r, "x-mock-encoding")) != NULL) {
		if (strcmp(v, "gzip") == 0)
			c->shape.gzip = 1;
		else if (strcmp(v, "identity") != 0)
			return "mock: x-mock-encoding must be gzip or identity";
	}
	if ((v = http_header(r, "x-mock-chunk-bytes")) != NULL) {
		if (parse_u64(v, 1 << 20, &n) < 0 || n == 0)
			return "mock: x-mock-chunk-bytes must be 1..1048576";
		if (r->minor >= 1) /* HTTP/1.0 has no chunked encoding */
			c->shape.chunk = (size_t)n;
	}
	if ((v = http_header(r, "x-mock-pad-bytes")) != NULL) {
		if (parse_u64(v, 1 << 20, &n) < 0)
			return "mock: x-mock-pad-bytes must be 0..1048576";
		static const char fill[] = "abcdefghijklmnopqrstuvwxyz0123456789";
		sbuf_puts(&c->pad, "x-mock-pad: ");
		for (uint64_t i = 0; i < n; i++)
			sbuf_add(&c->pad, &fill[i % (sizeof(fill) - 1)], 1);
		sbuf_puts(&c->pad, "\r\n");
	}
	if ((v = http_header(r, "x-mock-pad-headers")) != NULL) {
		if (parse_u64(v, 100000, &n) < 0)
			return "mock: x-mock-pad-headers must be 0..100000";
		for (uint64_t i = 0; i < n; i++)
			sbuf_printf(&c->pad, "x-mock-pad-%llu: %llu\r\n",
				    (unsigned long long)i, (unsigned long long)i);
	}
	if ((v = http_header(r, "x-mock-bad-utf8")) != NULL) {
		if (strcmp(v, "1") != 0)
			return "mock: x-mock-bad-utf8 must be 1";
		c->bad_utf8 = 1;
		sbuf_puts(&c->pad, "x-mock-bad-utf8: " BAD_UTF8 "\r\n"
			  "x-mock-\xe9t\xe9-\xff: \xc0\xaf\r\n");
	}
	if ((v = http_header(r, "x-mock-remaining")) != NULL) {
		/* "R,I,O": requests, input tokens, output tokens; an empty
		 * field keeps the mock's own value. */
		const char *q = v;
		for (int d = 0; d < NDIM; d++) {
			const char *e = strchr(q, ',');
			size_t k = e != NULL ? (size_t)(e - q) : strlen(q);
			if ((e == NULL) != (d == NDIM - 1) || k > 20)
				return "mock: x-mock-remaining must be \"R,I,O\" (numbers or empty)";
			char f[24];
			memcpy(f, q, k);
			f[k] = '\0';
			uint64_t x;
			if (k > 0 && parse_u64(f, 1000000000000ULL, &x) < 0)
				return "mock: x-mock-remaining must be \"R,I,O\" (numbers or empty)";
			if (k > 0)
				c->remaining[d] = (double)x;
			q = e != NULL ? e + 1 : q + k;
		}
	}
	c->usage_raw = http_header(r, "x-mock-usage-raw");
	c->raw_type = http_header(r, "x-mock-content-type");
	if (c->raw_type == NULL)
		c->raw_type = "application/json";
	if ((v = http_header(r, "x-mock-body")) != NULL) {
		c->raw_body = malloc(strlen(v) + 1);
		if (c->raw_body == NULL)
			return "mock: out of memory";
		long len = base64_decode(v, c->raw_body);
		if (len < 0)
			return "mock: x-mock-body must be base64";
		c->raw_len = (size_t)len;
	}
	return NULL;
}

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
	if (cfg->limits != NULL) {
		pool = limits_find(cfg->limits, model->valuestring);
		if (pool < 0) {
			char msg[300];
			snprintf(msg, sizeof(msg), "model: %.200s", model->valuestring);
			keep = send_error(c, 404, "not_found_error", msg, NULL);
			goto out;
		}
		c->o.pool = pool;
	}

	/* The fault to play, if any: the header first, then --fail-every. */
	int fault = FAULT_NONE;
	const char *fh = http_header(r, "x-mock-fail");
	if (!count_tokens) {
		uint64_t n = atomic_fetch_add(&message_requests, 1) + 1;
		if (cfg->fail_every > 0 && n % cfg->fail_every == 0)
			fault = cfg->fail_kind;
	}
	if (fh != NULL && (fault = fault_parse(fh)) < 0) {
		keep = send_error(c, 400, "invalid_request_error",
				  "mock: unknown x-mock-fail value", NULL);
		goto out;
	}
	if (count_tokens && fault == FAULT_529_MIDSTREAM)
		fault = FAULT_529;
	const char *bad = parse_wire(c);
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
	struct reply m = {.model = model->valuestring, .pool = pool,
			  .fault = fault, .stop_reason = "end_turn"};
	struct estimate *e = calloc(1, sizeof(*e));
	if (e == NULL) {
		keep = send_json(c, 500, NULL, 0, 0);
		goto out;
	}
	const char *uh = http_header(r, "x-mock-usage");
	const char *oh = http_header(r, "x-mock-output-tokens");
	int forced = uh != NULL;
	if (forced && parse_usage_header(uh, &m.u) < 0) {
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
		classify(e, &m.u);
		uint64_t max = count_tokens ? 0 : (uint64_t)maxt->valuedouble;
		m.u.out = want < max ? want : max;
		if (want > max)
			m.stop_reason = "max_tokens";
	}

	if (pool >= 0)
		pool_headers(&cfg->limits->pools[pool], &c->h, c->remaining);
	keep = scripted(c, fault);
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
		uint64_t total = forced ? m.u.in : tokens(e->chars);
		free(e);
		pthread_mutex_lock(&st.mu);
		st.count_tokens++;
		pthread_mutex_unlock(&st.mu);
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "input_tokens", (double)total);
		char *body = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
		keep = send_json(c, 200, body, r->keep_alive,
				 fault == FAULT_TRUNCATE);
		goto out;
	}

	if (pool >= 0) {
		struct pool *p = &cfg->limits->pools[pool];
		struct need n = {.itpm = m.u.in + m.u.cw5m + m.u.cw1h};
		if (p->cache_reads_count)
			n.itpm += m.u.read;
		if (p->otpm_reserve)
			n.otpm_reserve = (uint64_t)maxt->valuedouble;
		uint64_t ra = 0;
		int dim = 0;
		if (pool_admit(p, &n, &ra, &dim) < 0) {
			free(e);
			reset_headers(c);
			sbuf_printf(&c->h, "retry-after: %llu\r\n",
				    (unsigned long long)ra);
			pool_headers(p, &c->h, c->remaining);
			c->o.own_429 = 1;
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
		commit_cache(e);
	free(e);

	snprintf(m.id, sizeof(m.id), "msg_mock%016llx",
		 (unsigned long long)fnv(r->body, r->body_len));
	if (cfg->latency_ms > 0)
		sleep_ms(cfg->latency_ms);

	if (cJSON_IsTrue(stream) || fault == FAULT_529_MIDSTREAM) {
		keep = send_message_sse(c, &m);
	} else {
		keep = send_message_json(c, &m);
		/* OTPM is charged once the reply is out, never before: a client
		 * settles when it has read the reply, and the server must not
		 * be ahead of a client that keeps exactly to the limit. */
		if (pool >= 0)
			pool_settle(&cfg->limits->pools[pool], m.reserved, m.u.out);
	}
	/* x-mock-usage-raw: the usage reported is not the usage counted */
	c->o.complete = fault == FAULT_NONE && c->o.status == 200 && c->usage_raw == NULL;
	c->o.in = m.u.in;
	c->o.out = m.u.out;
	c->o.cw = m.u.cw5m + m.u.cw1h;
	c->o.cr = m.u.read;
out:
	record(&c->o);
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
	if ((keep = scripted(c, fault)) >= 0)
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
	pthread_mutex_lock(&st.mu);
	st.batches++;
	st.batch_requests += (uint64_t)n;
	pthread_mutex_unlock(&st.mu);
	keep = send_json(c, 200, body, r->keep_alive, 0);
out:
	record(&c->o);
	cJSON_Delete(req);
	return keep;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                             */
/* ------------------------------------------------------------------ */

void api_init(const struct mock_config *config)
{
	cfg = config;
	instance_tag = (unsigned)getpid() ^ (unsigned)(mono_ns() >> 10);
	if (cfg->limits != NULL)
		st.pool = calloc((size_t)cfg->limits->npools, sizeof(*st.pool));
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
	record(&c.o);
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
	} else if (strcmp(r->path, "/mock/health") == 0) {
		char *ok = strdup("{\"ok\":true}");
		keep = send_json(&c, 200, ok, r->keep_alive, 0);
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
		if (cfg->max_requests > 0 && n > cfg->max_requests) {
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
		} else {
			keep = send_error(&c, 404, "not_found_error",
					  "mock: no such endpoint", NULL);
			record(&c.o);
		}
		if (cfg->max_requests > 0 && n == cfg->max_requests) {
			server_request_stop(STOP_MAX_REQUESTS);
			keep = 0;
		}
	}
	ctx_free(&c);
	return keep;
}
