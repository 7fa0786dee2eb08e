/*
 * addon.c - the N-API addon behind the Node.js package (node/index.js).
 *
 * A thin layer: each exported function is one libshmlimit call, and none of
 * them blocks.  Waiting for admission is done by the JavaScript side with a
 * timer (shl_reserve gives the release time, shl_start checks again at that
 * time), so the event loop never sits in a C call that sleeps.
 *
 * What it assumes
 *   - Every call comes from the JavaScript thread of one environment (the
 *     main thread or one worker_threads worker).  Per-environment state (the
 *     ticket table, the result array) lives in the instance data, so
 *     workers that load the addon do not share it; libshmlimit itself is
 *     safe across threads.
 *   - The hot path allocates nothing (once the table has grown): a ticket
 *     lives in a slot of a table owned by the environment and is named by
 *     its index, and what a call
 *     has to say besides its return code (a release time, a refusal) is
 *     written into a Float64Array that JavaScript handed over once
 *     (`setOut`).  So admit + settle is two N-API calls with numbers only.
 *
 * Early release (governedFetch's exchanges; preload/hold.c, "Early
 * release", the same rule without the shim's late-send replanning)
 *   A waiting exchange's release was laid by the estimates of the places
 *   before it, which the server counts less (the estimate errs high).  So
 *   every exReserve numbers its place (seq, per environment: one
 *   JavaScript thread, so the numbers are in the order the places were
 *   taken) and, when it must wait, keeps its place (shl_ex_place) in the
 *   environment's list of waiting exchanges.  When an exchange finishes,
 *   what it gave back (shl_ex_given) moves each waiting one of its line
 *   (the same handle and pool) placed after it (shl_ex_follow: every edge
 *   moves down by its bucket's give, and when a bucket set the release
 *   the release moves to the latest edge, as far as the word allows).
 *   exFinish says how many moved, and
 *   exMoved which, so that JavaScript sets their timers again.  Gives by
 *   places taken after a waiting one never move it: they make no room
 *   before it, though the word's ledger, which every refund raises, would
 *   say so.  Other environments' and processes' gives are not seen here:
 *   they leave the word more room than this line uses, never less.  A
 *   response collected unread finishes in its finalizer, where no
 *   JavaScript can set a timer: its give moves nobody.
 *
 * What it deliberately does not do
 *   - Read requests or responses: the shl_ex_* component of the library
 *     does that for every client (the preload shim, Python, this addon).
 *   - Cancel a ticket that JavaScript dropped without settling it: the
 *     request may have been sent, so its worst case stays charged (the
 *     same as a worker killed between admission and settle), and its slot
 *     stays taken; past 100,000 open tickets one stderr line says so.
 *
 * Handles are reference counted: tickets and exchanges hold their handle,
 * so `close` detaches only once the last of them is gone.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include "shmlimit.h"

/* The result array, as JavaScript reads it (node/index.js: OUT_*). */
enum {
	OUT_DELAY_NS = 0, /* release time - now (<= 0: go now) */
	OUT_DIM = 1,      /* a refusal: enum shl_dim */
	OUT_POOL = 2,
	OUT_WAIT_NS = 3,
	OUT_NEED = 4,
	OUT_CAPACITY = 5,
	OUT_MODEL = 6,    /* the ticket's model entry and pool */
	OUT_TPOOL = 7,
	/* What JavaScript writes before reserve / settle: numbers passed
	 * through memory rather than as arguments, which N-API would convert
	 * one call each. */
	IN_0 = 8,         /* reserve: input, cw5m, cw1h, cache_read, max_tokens,
			     batch, max_wait_ns; settle: input, output, cw5m,
			     cw1h, cache_read */
	OUT_SEQ = 16,     /* exReserve: the place's number (early release) */
	OUT_MOVED = 17,   /* exFinish: waiting exchanges its give moved (exMoved) */
	OUT_LEN = 18
};

struct handle {
	shl_t *h;      /* NULL once detached */
	int refs;      /* the JavaScript external, and every open ticket and exchange */
	int ext_alive; /* the external has not been finalized */
	int closed;    /* `close` was called: detach once only the external is left */
};

struct slot {
	struct handle *hd; /* NULL: free */
	shl_ticket t;
	int next_free;
};

struct exch {
	struct handle *hd;
	shl_exchange *x;
	int finished;
	/* Its place in line (the top of the file, "Early release"): */
	uint64_t seq;         /* 0: none taken */
	int pool;             /* its line is (hd, pool) */
	/* while waiting, in the environment's list: */
	struct exch **pprev;  /* NULL: not in the list */
	struct exch *next;
	int64_t release;      /* shl_now() scale */
	shl_place place;      /* shl_ex_place's, restated by shl_ex_follow */
	int64_t shifted;      /* how much sooner since the last exMoved */
};

struct state {
	double *out;
	double dummy[OUT_LEN]; /* until setOut */
	napi_ref out_ref;
	struct slot *slots;
	int nslots, free_head;
	int warned; /* the open-tickets line was written */
	uint64_t seq;        /* places taken by exReserve */
	struct exch *waiting; /* exchanges waiting for their release */
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static void handle_detach(struct handle *hd)
{
	if (hd->h != NULL)
		shl_detach(hd->h);
	hd->h = NULL;
}

static void handle_unref(struct handle *hd)
{
	hd->refs--;
	if (hd->refs == 0) {
		handle_detach(hd);
		free(hd);
	} else if (hd->closed && hd->refs == 1 && hd->ext_alive) {
		handle_detach(hd);
	}
}

/* The symbolic name of a negative errno returned by the library. */
static const char *err_name(int r)
{
	switch (-r) {
#define X(e, msg) case e: return #e;
		SHL_ERRNO_MAP(X)
#undef X
	default: return "EIO";
	}
}

/* Throw an Error with .code (ENOENT, ...) and .errno (the negative value). */
static void throw_code(napi_env env, int r, const char *what, const shl_err *err)
{
	char msg[512];
	if (err != NULL && err->msg[0] != '\0')
		snprintf(msg, sizeof(msg), "%s: %s: %s", what, shl_strerror(r), err->msg);
	else
		snprintf(msg, sizeof(msg), "%s: %s", what, shl_strerror(r));
	napi_value m, c, e, n;
	napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
	napi_create_string_utf8(env, err_name(r), NAPI_AUTO_LENGTH, &c);
	napi_create_error(env, c, m, &e);
	napi_create_int32(env, r, &n);
	napi_set_named_property(env, e, "errno", n);
	napi_throw(env, e);
}

#define ARGS(n)                                                               \
	size_t argc = (n);                                                    \
	napi_value argv[(n) > 0 ? (n) : 1];                                   \
	struct state *st;                                                     \
	if (napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&st) != napi_ok) \
		return NULL;                                                  \
	(void)st

static napi_value int32v(napi_env env, int v)
{
	napi_value r;
	napi_create_int32(env, v, &r);
	return r;
}

static int64_t arg_i64(napi_env env, napi_value v)
{
	int64_t n = 0;
	napi_get_value_int64(env, v, &n); /* NaN and non-numbers: 0 */
	return n;
}

/* A string argument into buf, or a malloc'd copy when it does not fit.
 * Returns the string (free it when != buf) or NULL. */
static char *arg_str(napi_env env, napi_value v, char *buf, size_t cap, size_t *len)
{
	size_t n;
	if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok)
		return NULL;
	char *p = n < cap ? buf : malloc(n + 1);
	if (p == NULL)
		return NULL;
	napi_get_value_string_utf8(env, v, p, n + 1, &n);
	if (len != NULL)
		*len = n;
	return p;
}

static struct handle *arg_handle(napi_env env, napi_value v)
{
	struct handle *hd = NULL;
	if (napi_get_value_external(env, v, (void **)&hd) != napi_ok || hd == NULL ||
	    hd->h == NULL || hd->closed)
		return NULL;
	return hd;
}

static void fill_refusal(struct state *st, const shl_refusal *why)
{
	st->out[OUT_DIM] = why->dim;
	st->out[OUT_POOL] = why->pool;
	st->out[OUT_WAIT_NS] = (double)why->wait_ns;
	st->out[OUT_NEED] = (double)why->need;
	st->out[OUT_CAPACITY] = (double)why->capacity;
}

/* ------------------------------------------------------------------ */
/* Segments                                                            */
/* ------------------------------------------------------------------ */

static void handle_finalize(napi_env env, void *data, void *hint)
{
	struct handle *hd = data;
	hd->ext_alive = 0;
	handle_unref(hd);
}

/* attach(name, readOnly) -> external handle; throws. */
static napi_value js_attach(napi_env env, napi_callback_info info)
{
	ARGS(2);
	char buf[256];
	char *name = arg_str(env, argv[0], buf, sizeof(buf), NULL);
	if (name == NULL) {
		napi_throw_type_error(env, "EINVAL", "segment name must be a string");
		return NULL;
	}
	bool ro = false;
	napi_get_value_bool(env, argv[1], &ro);
	shl_err err = {{0}};
	shl_t *h = NULL;
	int r = shl_attach(name, ro ? SHL_ATTACH_RDONLY : 0, &h, &err);
	if (name != buf)
		free(name);
	if (r < 0) {
		throw_code(env, r, "shl_attach", &err);
		return NULL;
	}
	struct handle *hd = calloc(1, sizeof(*hd));
	napi_value ext;
	if (hd == NULL) {
		shl_detach(h);
		throw_code(env, -ENOMEM, "shl_attach", NULL);
		return NULL;
	}
	hd->h = h;
	hd->refs = 1;
	hd->ext_alive = 1;
	if (napi_create_external(env, hd, handle_finalize, NULL, &ext) != napi_ok) {
		shl_detach(h);
		free(hd);
		return NULL;
	}
	return ext;
}

/* close(handle): detach once no ticket or exchange holds it. */
static napi_value js_close(napi_env env, napi_callback_info info)
{
	ARGS(1);
	struct handle *hd = arg_handle(env, argv[0]);
	if (hd != NULL) {
		hd->closed = 1;
		if (hd->refs == 1) /* no open ticket or exchange */
			handle_detach(hd);
	}
	return NULL;
}

/* create(name, configJson, replace): a new segment; throws. */
static napi_value js_create(napi_env env, napi_callback_info info)
{
	ARGS(3);
	char nbuf[256];
	size_t clen = 0;
	char *name = arg_str(env, argv[0], nbuf, sizeof(nbuf), NULL);
	char *json = arg_str(env, argv[1], NULL, 0, &clen);
	bool replace = false;
	napi_get_value_bool(env, argv[2], &replace);
	shl_err err = {{0}};
	shl_config *cfg = NULL;
	int r = name == NULL || json == NULL ? -EINVAL : shl_config_parse(json, clen, &cfg, &err);
	if (r == 0)
		r = shl_create(name, cfg, replace ? SHL_CREATE_REPLACE : 0, NULL, &err);
	shl_config_free(cfg);
	free(json);
	if (name != nbuf)
		free(name);
	if (r < 0)
		throw_code(env, r, "shl_create", &err);
	return NULL;
}

/* unlink(name) -> 0 or a negative code. */
static napi_value js_unlink(napi_env env, napi_callback_info info)
{
	ARGS(1);
	char buf[256];
	char *name = arg_str(env, argv[0], buf, sizeof(buf), NULL);
	int r = name == NULL ? -EINVAL : shl_unlink(name);
	if (name != NULL && name != buf)
		free(name);
	return int32v(env, r);
}

/* lookup(handle, model) -> entry index or a negative code. */
static napi_value js_lookup(napi_env env, napi_callback_info info)
{
	ARGS(2);
	struct handle *hd = arg_handle(env, argv[0]);
	char buf[128];
	char *id = arg_str(env, argv[1], buf, sizeof(buf), NULL);
	int r = hd == NULL || id == NULL ? -EINVAL : shl_lookup(hd->h, id);
	if (id != NULL && id != buf)
		free(id);
	return int32v(env, r);
}

/* setOut(Float64Array): where calls write what they have to say. */
static napi_value js_set_out(napi_env env, napi_callback_info info)
{
	ARGS(1);
	napi_typedarray_type type;
	size_t len;
	void *data;
	if (napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok ||
	    type != napi_float64_array || len < OUT_LEN) {
		napi_throw_type_error(env, "EINVAL", "setOut needs a Float64Array of 18");
		return NULL;
	}
	if (st->out_ref != NULL)
		napi_delete_reference(env, st->out_ref);
	/* The reference keeps the array alive, and so its memory where it is. */
	napi_create_reference(env, argv[0], 1, &st->out_ref);
	st->out = data;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Tickets                                                             */
/* ------------------------------------------------------------------ */

static int slot_take(struct state *st)
{
	if (st->free_head < 0) {
		if (st->nslots >= 100000 && !st->warned) {
			st->warned = 1;
			fprintf(stderr, "shmlimit: %d tickets open in this process: are tickets "
					"settled or cancelled?\n", st->nslots);
		}
		if (st->nslots > INT32_MAX / 2)
			return -ENOMEM;
		int n = st->nslots ? st->nslots * 2 : 64;
		struct slot *s = realloc(st->slots, (size_t)n * sizeof(*s));
		if (s == NULL)
			return -ENOMEM;
		for (int i = st->nslots; i < n; i++) {
			s[i].hd = NULL;
			s[i].next_free = i + 1 < n ? i + 1 : -1;
		}
		st->free_head = st->nslots;
		st->slots = s;
		st->nslots = n;
	}
	int i = st->free_head;
	st->free_head = st->slots[i].next_free;
	return i;
}

static void slot_put(struct state *st, int i)
{
	struct slot *s = &st->slots[i];
	if (s->hd != NULL)
		handle_unref(s->hd);
	s->hd = NULL;
	s->next_free = st->free_head;
	st->free_head = i;
}

static struct slot *arg_slot(napi_env env, struct state *st, napi_value v)
{
	int32_t i = -1;
	napi_get_value_int32(env, v, &i);
	if (i < 0 || i >= st->nslots || st->slots[i].hd == NULL)
		return NULL;
	return &st->slots[i];
}

/* A number JavaScript wrote into the array, as a token count (not a
 * number, or negative: 0). */
static uint64_t in_u64(double d)
{
	if (!(d > 0))
		return 0;
	return d >= 18446744073709549568.0 ? UINT64_MAX : (uint64_t)d;
}

/*
 * reserve(handle, model) -> ticket slot (>= 0) or a negative code, with
 * out[IN_0..] = input, cw5m, cw1h, cacheRead, maxTokens, batch, maxWaitNs
 * (maxWaitNs < 0: no deadline).
 * out[DELAY_NS]: how long until the release (<= 0: it may be sent now, and
 * no start is needed: shl_reserve has just checked holds and spend);
 * a refusal in out[DIM..CAPACITY].
 */
static napi_value js_reserve(napi_env env, napi_callback_info info)
{
	ARGS(2);
	struct handle *hd = arg_handle(env, argv[0]);
	if (hd == NULL)
		return int32v(env, -EINVAL);
	int32_t model = -1;
	napi_get_value_int32(env, argv[1], &model);
	const double *in = st->out + IN_0;
	shl_cost c = {
		.input_tokens = in_u64(in[0]),
		.cache_write_5m = in_u64(in[1]),
		.cache_write_1h = in_u64(in[2]),
		.cache_read = in_u64(in[3]),
		.max_tokens = in_u64(in[4]),
		.batch = in[5] != 0,
	};
	int64_t max_wait = in[6] < 0 ? -1 : in[6] > 9.2e18 ? INT64_MAX : (int64_t)in[6];
	int i = slot_take(st);
	if (i < 0)
		return int32v(env, i);
	struct slot *s = &st->slots[i];
	shl_refusal why = {.dim = SHL_DIM_NONE};
	int r = shl_reserve(hd->h, model, &c, max_wait, &s->t, &why);
	if (r < 0) {
		fill_refusal(st, &why);
		s->hd = NULL;
		slot_put(st, i);
		return int32v(env, r);
	}
	s->hd = hd;
	hd->refs++;
	int64_t now = shl_now();
	st->out[OUT_DELAY_NS] = (double)(s->t.admitted_at - now);
	st->out[OUT_MODEL] = s->t.model;
	st->out[OUT_TPOOL] = s->t.pool;
	return int32v(env, i);
}

/* start(slot) -> 0 or a negative code (the ticket stays open; refusal in out). */
static napi_value js_start(napi_env env, napi_callback_info info)
{
	ARGS(1);
	struct slot *s = arg_slot(env, st, argv[0]);
	if (s == NULL)
		return int32v(env, -EALREADY);
	shl_refusal why = {.dim = SHL_DIM_NONE};
	int r = shl_start(s->hd->h, &s->t, &why);
	if (r < 0)
		fill_refusal(st, &why);
	return int32v(env, r);
}

/* settle(slot) -> 0 or a negative code, with out[IN_0..] = input, output,
 * cw5m, cw1h, cacheRead; the slot is freed. */
static napi_value js_settle(napi_env env, napi_callback_info info)
{
	ARGS(1);
	struct slot *s = arg_slot(env, st, argv[0]);
	if (s == NULL)
		return int32v(env, -EALREADY);
	const double *in = st->out + IN_0;
	shl_usage u = {
		.input_tokens = in_u64(in[0]),
		.output_tokens = in_u64(in[1]),
		.cache_write_5m = in_u64(in[2]),
		.cache_write_1h = in_u64(in[3]),
		.cache_read = in_u64(in[4]),
	};
	int r = shl_settle(s->hd->h, &s->t, &u);
	slot_put(st, (int)(s - st->slots));
	return int32v(env, r);
}

/* cancel(slot) -> 0 or a negative code; the slot is freed. */
static napi_value js_cancel(napi_env env, napi_callback_info info)
{
	ARGS(1);
	struct slot *s = arg_slot(env, st, argv[0]);
	if (s == NULL)
		return int32v(env, -EALREADY);
	int r = shl_cancel(s->hd->h, &s->t);
	slot_put(st, (int)(s - st->slots));
	return int32v(env, r);
}

/* cLoop(handle, model, n) -> ns per shl_reserve + shl_settle pair, looped
 * in C: the benchmark's reference for the library's own share. */
static napi_value js_c_loop(napi_env env, napi_callback_info info)
{
	ARGS(3);
	struct handle *hd = arg_handle(env, argv[0]);
	int32_t model = -1, n = 0;
	napi_get_value_int32(env, argv[1], &model);
	napi_get_value_int32(env, argv[2], &n);
	if (hd == NULL || n <= 0)
		return int32v(env, -EINVAL);
	shl_cost c = {.input_tokens = 100, .max_tokens = 64};
	shl_usage u = {.input_tokens = 100, .output_tokens = 20};
	int64_t t0 = shl_now();
	for (int i = 0; i < n; i++) {
		shl_ticket t;
		if (shl_reserve(hd->h, model, &c, 0, &t, NULL) == 0)
			shl_settle(hd->h, &t, &u);
	}
	napi_value v;
	napi_create_double(env, (double)(shl_now() - t0) / n, &v);
	return v;
}

/* noop(a, b): nothing, for the benchmark's bare call pair (bench/node-cost.js). */
static napi_value js_noop(napi_env env, napi_callback_info info)
{
	ARGS(2);
	return int32v(env, 0);
}

/* ------------------------------------------------------------------ */
/* Statistics and names                                                */
/* ------------------------------------------------------------------ */

/* stats(handle) -> the JSON text of shl_stats_json, or throws. */
static napi_value js_stats(napi_env env, napi_callback_info info)
{
	ARGS(1);
	struct handle *hd = arg_handle(env, argv[0]);
	if (hd == NULL) {
		throw_code(env, -EINVAL, "stats", NULL);
		return NULL;
	}
	char *j = shl_stats_json(hd->h);
	if (j == NULL) {
		throw_code(env, -ENOMEM, "shl_stats_json", NULL);
		return NULL;
	}
	napi_value v;
	napi_create_string_utf8(env, j, NAPI_AUTO_LENGTH, &v);
	free(j);
	return v;
}

/* strerror(code), dimName(dim), errName(code) */
static napi_value js_strerror(napi_env env, napi_callback_info info)
{
	ARGS(1);
	int32_t r = 0;
	napi_get_value_int32(env, argv[0], &r);
	napi_value v;
	napi_create_string_utf8(env, shl_strerror(r), NAPI_AUTO_LENGTH, &v);
	return v;
}

static napi_value js_dim_name(napi_env env, napi_callback_info info)
{
	ARGS(1);
	int32_t d = SHL_DIM_NONE;
	napi_get_value_int32(env, argv[0], &d);
	napi_value v;
	napi_create_string_utf8(env, shl_dim_name(d), NAPI_AUTO_LENGTH, &v);
	return v;
}

static napi_value js_err_name(napi_env env, napi_callback_info info)
{
	ARGS(1);
	int32_t r = 0;
	napi_get_value_int32(env, argv[0], &r);
	napi_value v;
	napi_create_string_utf8(env, err_name(r), NAPI_AUTO_LENGTH, &v);
	return v;
}

/* ------------------------------------------------------------------ */
/* Exchanges: one Messages API request and its response (shl_ex_*)     */
/* ------------------------------------------------------------------ */

static void wait_add(struct state *st, struct exch *e)
{
	e->next = st->waiting;
	if (e->next != NULL)
		e->next->pprev = &e->next;
	e->pprev = &st->waiting;
	st->waiting = e;
	e->shifted = 0;
}

/* Out of the list of waiting exchanges (started, finished, collected). */
static void wait_del(struct exch *e)
{
	if (e->pprev == NULL)
		return;
	*e->pprev = e->next;
	if (e->next != NULL)
		e->next->pprev = e->pprev;
	e->pprev = NULL;
	e->next = NULL;
}

/* Move waiting `w` sooner by the gives g[] (ns per bucket) of an exchange
 * placed before it in its line (shl_ex_follow: the library's one rule,
 * also the shim's); 1 when it moved. */
static int advance(struct exch *w, const int64_t g[3])
{
	int64_t rel;
	if (shl_ex_follow(w->hd->h, w->x, g, &w->place, &rel) != 1)
		return 0;
	w->shifted += w->release - rel;
	w->release = rel;
	return 1;
}

/* What finished `e` gave back moves the waiting exchanges of its line
 * placed after it; how many moved. */
static int gave(struct state *st, const struct exch *e)
{
	int64_t g[3];
	if (e->seq == 0 || shl_ex_given(e->x, g) != 0 || (g[0] <= 0 && g[1] <= 0 && g[2] <= 0))
		return 0;
	int n = 0;
	for (struct exch *w = st->waiting; w != NULL; w = w->next)
		if (w->hd == e->hd && w->pool == e->pool && w->seq > e->seq)
			n += advance(w, g);
	return n;
}

static void exch_finalize(napi_env env, void *data, void *hint)
{
	struct exch *e = data;
	wait_del(e);
	/* A response JavaScript dropped without reading to the end: the
	 * request was sent, so it is settled with what was read. */
	if (!e->finished)
		shl_ex_finish(e->hd->h, e->x, 1);
	shl_ex_free(e->x);
	handle_unref(e->hd);
	free(e);
}

static struct exch *arg_exch(napi_env env, napi_value v)
{
	struct exch *e = NULL;
	if (napi_get_value_external(env, v, (void **)&e) != napi_ok)
		return NULL;
	return e;
}

/* exKind(method, path) -> enum shl_ex_kind */
static napi_value js_ex_kind(napi_env env, napi_callback_info info)
{
	ARGS(2);
	char mb[16], pb[1024];
	char *m = arg_str(env, argv[0], mb, sizeof(mb), NULL);
	char *p = arg_str(env, argv[1], pb, sizeof(pb), NULL);
	int k = m == NULL || p == NULL ? SHL_EX_NONE : shl_ex_kind(m, p);
	if (m != NULL && m != mb)
		free(m);
	if (p != NULL && p != pb)
		free(p);
	return int32v(env, k);
}

/*
 * exOpen(handle, kind, body Uint8Array) -> [exchange, model, stream] or
 * [negative code, message].
 */
static napi_value js_ex_open(napi_env env, napi_callback_info info)
{
	ARGS(3);
	struct handle *hd = arg_handle(env, argv[0]);
	int32_t kind = 0;
	napi_get_value_int32(env, argv[1], &kind);
	napi_typedarray_type type;
	size_t len = 0;
	void *data = NULL;
	napi_value res;
	napi_create_array_with_length(env, 3, &res);
	int r = -EINVAL;
	shl_err err = {{0}};
	shl_exchange *x = NULL;
	if (hd != NULL &&
	    napi_get_typedarray_info(env, argv[2], &type, &len, &data, NULL, NULL) == napi_ok &&
	    type == napi_uint8_array)
		r = shl_ex_open(hd->h, kind, len ? data : "", len, &x, &err);
	else
		snprintf(err.msg, sizeof(err.msg), "not a body");
	if (r < 0) {
		napi_value m;
		napi_set_element(env, res, 0, int32v(env, r));
		napi_create_string_utf8(env, err.msg, NAPI_AUTO_LENGTH, &m);
		napi_set_element(env, res, 1, m);
		return res;
	}
	struct exch *e = calloc(1, sizeof(*e));
	napi_value ext, model, stream;
	if (e == NULL) {
		shl_ex_free(x);
		napi_set_element(env, res, 0, int32v(env, -ENOMEM));
		return res;
	}
	e->hd = hd;
	e->x = x;
	hd->refs++;
	if (napi_create_external(env, e, exch_finalize, NULL, &ext) != napi_ok) {
		shl_ex_free(x);
		handle_unref(hd);
		free(e);
		return NULL;
	}
	napi_create_string_utf8(env, shl_ex_model(x), NAPI_AUTO_LENGTH, &model);
	napi_get_boolean(env, shl_ex_stream(x) != 0, &stream);
	napi_set_element(env, res, 0, ext);
	napi_set_element(env, res, 1, model);
	napi_set_element(env, res, 2, stream);
	return res;
}

/*
 * exReserve(exchange, maxWaitNs) -> 0 or a negative code; out[DELAY_NS],
 * out[SEQ] (the place's number: exMoved names it so).  An exchange that
 * must wait is in the list of waiting ones until exStart or exFinish.
 */
static napi_value js_ex_reserve(napi_env env, napi_callback_info info)
{
	ARGS(2);
	struct exch *e = arg_exch(env, argv[0]);
	if (e == NULL || e->finished)
		return int32v(env, -EINVAL);
	int64_t release = 0;
	shl_refusal why = {.dim = SHL_DIM_NONE};
	int r = shl_ex_reserve(e->hd->h, e->x, arg_i64(env, argv[1]), &release, &why);
	if (r < 0) {
		fill_refusal(st, &why);
		return int32v(env, r);
	}
	/* Numbered even when it may go at once: its finish can give. */
	e->seq = ++st->seq;
	const shl_ticket *t = shl_ex_ticket(e->x);
	e->pool = t != NULL ? t->pool : -1;
	int64_t now = shl_now();
	if (release > now && shl_ex_place(e->hd->h, e->x, &e->place) == 0) {
		e->release = release;
		wait_add(st, e);
	}
	st->out[OUT_DELAY_NS] = (double)(release - now);
	st->out[OUT_TPOOL] = e->pool;
	st->out[OUT_SEQ] = (double)e->seq;
	return int32v(env, r);
}

/* exStart(exchange) -> 0 or a negative code (the reservation is then
 * cancelled: reserve again, or give up).  No longer waiting either way. */
static napi_value js_ex_start(napi_env env, napi_callback_info info)
{
	ARGS(1);
	struct exch *e = arg_exch(env, argv[0]);
	if (e == NULL || e->finished)
		return int32v(env, -EINVAL);
	wait_del(e);
	shl_refusal why = {.dim = SHL_DIM_NONE};
	int r = shl_ex_start(e->hd->h, e->x, &why);
	if (r < 0)
		fill_refusal(st, &why);
	return int32v(env, r);
}

/* exResponse(exchange, status, "name: value\r\n..." ): the status and headers. */
static napi_value js_ex_response(napi_env env, napi_callback_info info)
{
	ARGS(3);
	struct exch *e = arg_exch(env, argv[0]);
	if (e == NULL || e->finished)
		return NULL;
	int32_t status = 0;
	napi_get_value_int32(env, argv[1], &status);
	shl_ex_status(e->x, status);
	char buf[8192];
	size_t len = 0;
	char *h = arg_str(env, argv[2], buf, sizeof(buf), &len);
	if (h == NULL)
		return NULL;
	for (size_t i = 0; i < len;) {
		size_t n = 0;
		while (i + n < len && h[i + n] != '\n')
			n++;
		if (n > 0) {
			const char *line = h + i;
			const char *colon = memchr(line, ':', n);
			size_t ln = n - (line[n - 1] == '\r');
			if (colon != NULL) {
				const char *v = colon + 1;
				while (v < line + ln && *v == ' ')
					v++;
				shl_ex_header(e->x, line, (size_t)(colon - line), v,
					      (size_t)(line + ln - v));
			}
		}
		i += n + 1;
	}
	if (h != buf)
		free(h);
	return NULL;
}

/* exBody(exchange, Uint8Array): body bytes as the application reads them. */
static napi_value js_ex_body(napi_env env, napi_callback_info info)
{
	ARGS(2);
	struct exch *e = arg_exch(env, argv[0]);
	napi_typedarray_type type;
	size_t len = 0;
	void *data = NULL;
	if (e == NULL || e->finished ||
	    napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok)
		return NULL;
	/* bytes only (fetch's chunks are Uint8Arrays): len counts elements */
	if (len > 0 && data != NULL && (type == napi_uint8_array || type == napi_int8_array ||
					type == napi_uint8_clamped_array))
		shl_ex_body(e->x, data, len);
	return NULL;
}

/*
 * exFinish(exchange, sent) -> 0 or a negative code; once.  out[MOVED]:
 * how many waiting exchanges its give moved sooner (exMoved says which).
 */
static napi_value js_ex_finish(napi_env env, napi_callback_info info)
{
	ARGS(2);
	st->out[OUT_MOVED] = 0;
	struct exch *e = arg_exch(env, argv[0]);
	if (e == NULL || e->finished)
		return int32v(env, 0);
	bool sent = true;
	napi_get_value_bool(env, argv[1], &sent);
	wait_del(e); /* an aborted wait: it gives, and is not moved */
	e->finished = 1;
	int r = shl_ex_finish(e->hd->h, e->x, sent);
	st->out[OUT_MOVED] = gave(st, e);
	return int32v(env, r);
}

/*
 * exMoved() -> [seq, delayNs, shiftNs, ...]: the waiting exchanges moved
 * since the last call, each with its new delay (release - now; <= 0: due)
 * and how much sooner it now goes.
 */
static napi_value js_ex_moved(napi_env env, napi_callback_info info)
{
	ARGS(0);
	napi_value res, v;
	napi_create_array(env, &res);
	int64_t now = shl_now();
	uint32_t i = 0;
	for (struct exch *w = st->waiting; w != NULL; w = w->next) {
		if (w->shifted == 0)
			continue;
		const double three[3] = {(double)w->seq, (double)(w->release - now),
					 (double)w->shifted};
		w->shifted = 0;
		for (int k = 0; k < 3; k++) {
			napi_create_double(env, three[k], &v);
			napi_set_element(env, res, i++, v);
		}
	}
	return res;
}

/* ------------------------------------------------------------------ */
/* Module                                                              */
/* ------------------------------------------------------------------ */

static void state_finalize(napi_env env, void *data, void *hint)
{
	struct state *st = data;
	/* Exchanges collected after this do not reach into st. */
	while (st->waiting != NULL)
		wait_del(st->waiting);
	for (int i = 0; i < st->nslots; i++)
		if (st->slots[i].hd != NULL)
			handle_unref(st->slots[i].hd);
	free(st->slots);
	free(st);
}

/* node_api.h's macro defines the entry points without prototypes. */
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
NAPI_MODULE_INIT(/* napi_env env, napi_value exports */)
{
	struct state *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return NULL;
	st->out = st->dummy;
	st->free_head = -1;
	if (napi_set_instance_data(env, st, state_finalize, NULL) != napi_ok) {
		free(st);
		return NULL;
	}
	static const struct {
		const char *name;
		napi_callback fn;
	} fns[] = {
		{"attach", js_attach},     {"close", js_close},       {"create", js_create},
		{"unlink", js_unlink},     {"lookup", js_lookup},     {"setOut", js_set_out},
		{"reserve", js_reserve},   {"start", js_start},       {"settle", js_settle},
		{"cancel", js_cancel},     {"noop", js_noop},
		{"stats", js_stats},       {"strerror", js_strerror}, {"dimName", js_dim_name},
		{"errName", js_err_name},  {"exKind", js_ex_kind},    {"exOpen", js_ex_open},
		{"exReserve", js_ex_reserve}, {"exStart", js_ex_start},
		{"exResponse", js_ex_response}, {"exBody", js_ex_body},
		{"exFinish", js_ex_finish}, {"exMoved", js_ex_moved}, {"cLoop", js_c_loop},
	};
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		napi_value f;
		if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, st, &f) !=
			    napi_ok ||
		    napi_set_named_property(env, exports, fns[i].name, f) != napi_ok)
			return NULL;
	}
	napi_value v;
	napi_create_string_utf8(env, SHL_VERSION_STRING, NAPI_AUTO_LENGTH, &v);
	napi_set_named_property(env, exports, "version", v);
	return exports;
}
