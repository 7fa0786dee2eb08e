/*
 * exchange.c - one Messages API request and its response, from the body
 * that is about to be sent to the settlement: the shl_ex_* API.
 *
 * Every way a worker comes in (the preload shim's libcurl hooks, the Python
 * httpx transport, the Node fetch wrapper) calls these functions, so a
 * request is estimated, admitted and settled by one set of rules: the
 * readers are wire_req.c and wire_resp.c, the learned ratio is learn.c, and
 * the settlement rules (what is charged when, and what the server's
 * feedback does to the pool) are here, in exchange_settle() and
 * feedback(), documented at shl_ex_finish in shmlimit.h.
 *
 * Concurrency contract: an exchange is owned by one thread at a time (like
 * a ticket); the segment operations it makes are the library's own, which
 * may run concurrently with anything.
 *
 * What it deliberately does not do: transport.  It never sees a socket; it
 * is told what was sent and what arrived, after the application accepted
 * it, and never changes a byte of either.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "wire.h"

#define HOLD_DEFAULT_NS 1000000000LL /* a 429 or 529 without retry-after holds 1 s */

struct shl_exchange {
	struct shl *h;        /* the handle it was opened on */
	int kind;
	int model, pool;      /* the entry admitted on (the ticket's once admitted) */
	struct shl__req req;  /* the body as read: the raw estimate */
	shl_cost cost;        /* what admission takes: the estimate scaled by ratio */
	uint32_t ratio;       /* SHL_LEARN_ONE fixed point */
	shl_ticket ticket;
	int ticket_open;
	struct shl__resp resp;
	int64_t headers_at;   /* shl_now() when the last header of a final response arrived */
	int early_done;       /* the headers' RPM and OTPM clamps are applied */
	int held;             /* a 429's retry-after has held the pool, at its headers */
	int itpm_done;        /* a stream's message_start gave the input count early */
	int finished;
	int outcome;          /* shl_ex_finish's result, once finished */
	uint64_t given[SHL_NBUCKETS]; /* what finishing gave back (shl_ex_given) */
};

int shl_ex_kind(const char *method, const char *path)
{
	if (method == NULL || path == NULL || strcasecmp(method, "POST") != 0)
		return SHL_EX_NONE;
	size_t n = strcspn(path, "?#");
	while (n > 1 && path[n - 1] == '/')
		n--;
	if (n == 12 && memcmp(path, "/v1/messages", 12) == 0)
		return SHL_EX_MESSAGES;
	if (n == 25 && memcmp(path, "/v1/messages/count_tokens", 25) == 0)
		return SHL_EX_COUNT;
	if (n == 20 && memcmp(path, "/v1/messages/batches", 20) == 0)
		return SHL_EX_BATCH;
	return SHL_EX_NONE;
}

static const char *kind_path(int kind)
{
	return kind == SHL_EX_COUNT ? "/v1/messages/count_tokens"
	       : kind == SHL_EX_BATCH ? "/v1/messages/batches" : "/v1/messages";
}

/* The estimate times the pool's ratio (learn.c).  Before the first sample
 * the ratio is the prior, a guess: it never lifts a request that fits the
 * pool's ITPM bucket at 1.0 above it (that would refuse locally what the
 * server might accept), so there it is lowered to what fits. */
static void scale(shl_t *h, shl_exchange *x)
{
	const shl_cost *raw = &x->req.cost;
	uint64_t samples;
	uint32_t r = shl__learn_ratio(h, x->pool, &samples);
	if (samples == 0 && r > SHL_LEARN_ONE) {
		struct shl_local *l = shl__local(h);
		const struct shl_pool_local *pl = l != NULL ? &l->pools[x->pool] : NULL;
		uint64_t cap = pl != NULL ? pl->burst[SHL_DIM_ITPM] : 0;
		if (pl != NULL && (pl->flags & SHL_PF_CACHE_READS))  /* counted, not scaled */
			cap = cap > raw->cache_read ? cap - raw->cache_read : 0;
		uint64_t sum = raw->input_tokens + raw->cache_write_5m + raw->cache_write_1h;
		/* The three parts round up apart: up to 3 tokens over sum * r. */
		if (sum > 0 && sum + 3 <= cap && shl__learn_apply(sum, r) + 3 > cap)
			r = (uint32_t)((cap - 3) * SHL_LEARN_ONE / sum);
		if (r < SHL_LEARN_ONE)
			r = SHL_LEARN_ONE;
	}
	x->ratio = r;
	x->cost.input_tokens = shl__learn_apply(raw->input_tokens, r);
	x->cost.cache_write_5m = shl__learn_apply(raw->cache_write_5m, r);
	x->cost.cache_write_1h = shl__learn_apply(raw->cache_write_1h, r);
}

int shl_ex_open(shl_t *h, int kind, const char *body, size_t len, shl_exchange **out,
		shl_err *err)
{
	if (out != NULL)
		*out = NULL;
	if (h == NULL || out == NULL || (kind != SHL_EX_MESSAGES && kind != SHL_EX_COUNT &&
					 kind != SHL_EX_BATCH)) {
		shl__err(err, "shl_ex_open: no handle, no result pointer, or not a governed kind");
		return -EINVAL;
	}
	shl_exchange *x = calloc(1, sizeof(*x));
	if (x == NULL)
		return -ENOMEM;
	if (shl__req_parse(body, len, kind, &x->req) != 0) {
		shl__err(err, "a request body to %s is not a JSON request with a model",
			 kind_path(kind));
		free(x);
		return -EINVAL;
	}
	const char *id = kind == SHL_EX_MESSAGES ? x->req.model
			 : kind == SHL_EX_COUNT ? "count_tokens" : "message_batches";
	int m = shl_lookup(h, id);
	int p = m >= 0 ? shl_model_pool(h, m) : m;
	if (p < 0) {
		shl__err(err, "model \"%s\": %s", id, shl_strerror(p));
		free(x);
		return p == -ESRCH ? -ESRCH : p;
	}
	x->h = h;
	x->kind = kind;
	x->model = m;
	x->pool = p;
	x->cost = x->req.cost;
	x->ratio = SHL_LEARN_ONE;
	if (kind == SHL_EX_MESSAGES)
		scale(h, x);
	shl__resp_init(&x->resp);
	*out = x;
	return 0;
}

const char *shl_ex_model(const shl_exchange *x)
{
	return x != NULL ? x->req.model : NULL;
}

int shl_ex_stream(const shl_exchange *x)
{
	return x != NULL && x->req.stream;
}

int shl_ex_cost(const shl_exchange *x, shl_cost *out)
{
	if (x == NULL || out == NULL)
		return -EINVAL;
	*out = x->cost;
	return 0;
}

const shl_ticket *shl_ex_ticket(const shl_exchange *x)
{
	return x != NULL && x->ticket.state != 0 ? &x->ticket : NULL;
}

int shl_ex_model_entry(const shl_exchange *x)
{
	return x != NULL ? x->model : -EINVAL;
}

double shl_ex_ratio(const shl_exchange *x)
{
	return x != NULL ? (double)x->ratio / SHL_LEARN_ONE : 1.0;
}

/* ------------------------------------------------------------------ */
/* Admission                                                           */
/* ------------------------------------------------------------------ */

int shl_ex_reserve(shl_t *h, shl_exchange *x, int64_t max_wait_ns, int64_t *release_ns,
		   shl_refusal *why)
{
	if (h == NULL || x == NULL)
		return -EINVAL;
	if (x->ticket_open || x->finished)
		return -EALREADY;
	int r = shl_reserve(h, x->model, &x->cost, max_wait_ns, &x->ticket, why);
	if (r != 0)
		return r;
	x->ticket_open = 1;
	x->pool = x->ticket.pool;
	if (release_ns != NULL)
		*release_ns = x->ticket.admitted_at;
	return 0;
}

int shl_ex_start(shl_t *h, shl_exchange *x, shl_refusal *why)
{
	if (h == NULL || x == NULL || !x->ticket_open)
		return -EINVAL;
	int r = shl_start(h, &x->ticket, why);
	if (r == -EAGAIN || r == -EDQUOT) {
		/* Not to be sent now: give the place back (reserve again later). */
		shl_cancel(h, &x->ticket);
		x->ticket_open = 0;
		memset(&x->ticket, 0, sizeof(x->ticket));
	}
	return r;
}

int shl_ex_place(shl_t *h, const shl_exchange *x, shl_place *out)
{
	if (h == NULL || x == NULL || !x->ticket_open || out == NULL)
		return -EINVAL;
	shl__ticket_place(h, &x->ticket, out);
	return 0;
}

int shl_ex_advance(shl_t *h, shl_exchange *x, int64_t *release_ns)
{
	if (h == NULL || x == NULL || release_ns == NULL || !x->ticket_open)
		return -EINVAL;
	return shl__ticket_advance(h, &x->ticket, release_ns);
}

int shl_ex_follow(shl_t *h, shl_exchange *x, const int64_t given_ns[3], shl_place *place,
		  int64_t *release_ns)
{
	if (x == NULL || !x->ticket_open)
		return -EINVAL;
	return shl_follow(h, &x->ticket, given_ns, place, release_ns);
}

int shl_ex_given(const shl_exchange *x, int64_t given_ns[3])
{
	if (x == NULL || given_ns == NULL || !x->finished)
		return -EINVAL;
	shl__given_out(x->given, given_ns);
	return 0;
}

int shl_ex_usage(const shl_exchange *x, shl_usage *out)
{
	if (x == NULL || out == NULL)
		return -EINVAL;
	if (!x->resp.usage_seen || x->resp.usage_bad)
		return -ENODATA;
	*out = x->resp.usage;
	return 0;
}

int shl_ex_adopt(shl_exchange *x, const shl_ticket *t)
{
	if (x == NULL || t == NULL || t->state != 1)
		return -EINVAL;
	if (x->ticket_open || x->finished)
		return -EALREADY;
	x->ticket = *t;
	x->ticket_open = 1;
	x->model = t->model;
	x->pool = t->pool;
	return 0;
}

/* ------------------------------------------------------------------ */
/* The response                                                        */
/* ------------------------------------------------------------------ */

static void early_feedback(shl_exchange *x);
static void early_input(shl_exchange *x);

static void header_line(shl_exchange *x, const char *line, size_t len)
{
	shl__resp_header(&x->resp, line, len);
	if (x->resp.status >= 200) {
		x->headers_at = shl__now();
		x->early_done = 0;
		if (len <= 2 && (len == 0 || line[0] == '\r' || line[0] == '\n'))
			early_feedback(x); /* the blank line ends a final header block */
	}
}

void shl_ex_status(shl_exchange *x, int status)
{
	if (x == NULL)
		return;
	char line[32];
	int n = snprintf(line, sizeof(line), "HTTP/1.1 %03d", status >= 0 && status <= 999 ? status : 0);
	header_line(x, line, (size_t)n);
}

void shl_ex_header(shl_exchange *x, const char *name, size_t name_len, const char *value,
		   size_t value_len)
{
	if (x == NULL || name == NULL)
		return;
	if (value == NULL) {
		header_line(x, name, name_len);
		return;
	}
	/* Only the headers the reader looks at are short; a longer name is
	 * none of them. */
	char line[512];
	if (name_len > 64 || memchr(name, ':', name_len) != NULL)
		return;
	size_t v = value_len < sizeof(line) - name_len - 2 ? value_len : sizeof(line) - name_len - 2;
	memcpy(line, name, name_len);
	line[name_len] = ':';
	memcpy(line + name_len + 1, value, v);
	header_line(x, line, name_len + 1 + v);
}

void shl_ex_body(shl_exchange *x, const void *p, size_t len)
{
	if (x == NULL || p == NULL)
		return;
	if (!x->early_done && x->headers_at != 0)
		early_feedback(x); /* headers given as name/value pairs: they are over */
	shl__resp_body(&x->resp, p, len);
	if (!x->itpm_done && x->resp.sse && x->resp.usage_seen && !x->resp.usage_bad)
		early_input(x);
}

void shl_ex_header_in_body(shl_exchange *x, int on)
{
	if (x != NULL)
		x->resp.header_in_body = on != 0;
}

/* ------------------------------------------------------------------ */
/* Settlement                                                          */
/* ------------------------------------------------------------------ */

static uint64_t tokens_of(uint64_t units)
{
	return units / 4 + (units % 4 != 0);
}

/* The estimate as a usage: input and cache writes, and max_tokens of
 * output when `out`. */
static void estimate_usage(const shl_exchange *x, shl_usage *u, int out)
{
	u->input_tokens = x->cost.input_tokens;
	u->cache_write_5m = x->cost.cache_write_5m;
	u->cache_write_1h = x->cost.cache_write_1h;
	u->output_tokens = out ? x->cost.max_tokens : 0;
}

/* Cache writes without a 5 min / 1 h breakdown (a stream's message_delta
 * gives only the total): the request's own breakpoints say which.  Only
 * 1 h breakpoints: all 1 h; both: in the proportion of the estimate's. */
static void split_writes(const shl_exchange *x, shl_usage *u)
{
	uint64_t total = u->cache_write_5m + u->cache_write_1h;
	if (total == 0 || !x->req.has_1h)
		return;
	uint64_t e1 = x->req.cost.cache_write_1h, e5 = x->req.cost.cache_write_5m;
	if (!x->req.has_5m || e5 == 0) {
		u->cache_write_1h = total;
	} else {
		/* total <= 10^7, e1 < 2^40 in any body that fits in memory: the
		 * product stays below 2^64. */
		long double share = (long double)total * e1 / (long double)(e1 + e5);
		u->cache_write_1h = (uint64_t)share;
	}
	u->cache_write_5m = total - u->cache_write_1h;
}

/*
 * The headers are complete: the requests and output-tokens remaining counts
 * clamp the buckets at once, since settlement never changes what this
 * request holds in them (one request; its output is charged when it is
 * generated, and the server counts it then too).  The input count waits
 * for the settlement (feedback()), which alone knows the server's count of
 * this request; clamping to it now and settling the estimate's error later
 * would charge that error twice.  Doing the first two again at the end is
 * harmless: the same floor, moved by exactly what settlement charged.
 */
static void early_feedback(shl_exchange *x)
{
	x->early_done = 1;
	if (!x->ticket_open || x->h == NULL || x->resp.status < 200)
		return;
	if (x->resp.remaining[SHL_DIM_RPM] >= 0)
		shl__clamp_at(x->h, x->pool, SHL_DIM_RPM, (uint64_t)x->resp.remaining[SHL_DIM_RPM], 0,
			      x->headers_at, x->ticket.admitted_at);
	if (x->resp.remaining[SHL_DIM_OTPM] >= 0)
		shl__clamp_at(x->h, x->pool, SHL_DIM_OTPM, (uint64_t)x->resp.remaining[SHL_DIM_OTPM],
			      0, x->headers_at, x->ticket.admitted_at);
	/* A 429's retry-after holds the pool as soon as the headers are over,
	 * not only when the caller gets round to finishing the exchange: what
	 * it starts meanwhile (the preload shim's multi transfers held back
	 * and released between two reads of their loop) sees the hold.
	 * feedback() then counts the 429 and does not hold again. */
	if (x->resp.status == 429 && x->resp.retry_after_ms >= 0 && !x->held) {
		shl__hold(x->h, x->pool, x->resp.retry_after_ms * 1000000, 0);
		x->held = 1;
	}
}

/*
 * A stream's message_start says what the server counted for the input (S):
 * the input remaining count R, which includes S, can clamp now instead of
 * when the stream ends.  The bucket holds the estimate E and settlement
 * will charge S - E (or give E - S back), so it is clamped to R + S - E now,
 * to end at R.  The clamp at the end (feedback()) is the exact one in any
 * case (a usage found unbelievable later is settled otherwise).
 */
static void early_input(shl_exchange *x)
{
	x->itpm_done = 1;
	const struct shl__resp *r = &x->resp;
	if (!x->ticket_open || x->h == NULL || r->status < 200 || x->headers_at == 0 ||
	    r->remaining[SHL_DIM_ITPM] < 0)
		return;
	struct shl_local *l = shl__local(x->h);
	if (l == NULL || x->pool < 0 || (unsigned)x->pool >= l->slot.npools)
		return;
	/* each count <= SHL_WIRE_USAGE_MAX: no overflow */
	uint64_t srv = r->usage.input_tokens + r->usage.cache_write_5m + r->usage.cache_write_1h;
	if (l->slot.pools[x->pool].flags & SHL_PF_CACHE_READS)
		srv += r->usage.cache_read;
	uint64_t rem = (uint64_t)r->remaining[SHL_DIM_ITPM], est = x->ticket.itpm;
	rem = srv >= est ? shl__add_sat(rem, srv - est) : rem > est - srv ? rem - (est - srv) : 0;
	shl__clamp_at(x->h, x->pool, SHL_DIM_ITPM, rem, 0, x->headers_at, x->ticket.admitted_at);
}

/* What the server says about the pool, after the settlement: holds, the
 * spend cap, and the remaining headers (each token charged once: the
 * remaining count was the server's at `headers_at`, and the output
 * generated since it has not counted yet). */
static void feedback(shl_t *h, shl_exchange *x, const shl_usage *u, int settled)
{
	const struct shl__resp *r = &x->resp;
	long st = r->status;
	if (st == 429) {
		if (r->spend_cap) {
			shl_spend_exhaust(h);
			if (x->pool >= 0 && x->pool < SHL_MAX_POOLS && !h->rdonly)
				/* relaxed: a statistic. */
				atomic_fetch_add_explicit(&h->seg->pools[x->pool].server_429, 1,
							  memory_order_relaxed);
		} else if (x->held) {
			/* held at the headers (early_feedback): counted here, once */
			if (x->pool >= 0 && x->pool < SHL_MAX_POOLS && !h->rdonly)
				/* relaxed: a statistic. */
				atomic_fetch_add_explicit(&h->seg->pools[x->pool].server_429, 1,
							  memory_order_relaxed);
		} else {
			shl__hold(h, x->pool,
				  r->retry_after_ms >= 0 ? r->retry_after_ms * 1000000 : HOLD_DEFAULT_NS,
				  1);
		}
	} else if (st == 529) {
		shl__hold(h, x->pool,
			  r->retry_after_ms >= 0 ? r->retry_after_ms * 1000000 : HOLD_DEFAULT_NS, 0);
	}
	if (x->headers_at == 0 || st < 200)
		return;
	struct shl_local *l = shl__local(h);
	if (l == NULL || x->pool < 0 || (unsigned)x->pool >= l->slot.npools)
		return;
	int reserve = (l->slot.pools[x->pool].flags & SHL_PF_OTPM_RESERVE) != 0;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		if (r->remaining[d] < 0)
			continue;
		uint64_t rem = (uint64_t)r->remaining[d], after = 0;
		if (d == SHL_DIM_OTPM && settled) {
			if (!reserve)
				after = u->output_tokens; /* generated after the headers */
			else if (x->cost.max_tokens > u->output_tokens)
				/* the server reserved max_tokens and gave the rest back */
				rem += x->cost.max_tokens - u->output_tokens;
		}
		shl__clamp_at(h, x->pool, d, rem, after, x->headers_at, x->ticket.admitted_at);
	}
	/* The pool's real limits (anthropic-ratelimit-*-limit): recorded, and
	 * followed (shl_observe_limits); last, so that a change of the rate,
	 * which is a new generation, takes nothing from this settlement. */
	uint64_t lim[SHL_NBUCKETS];
	int any = 0;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		lim[d] = r->limit[d] > 0 ? (uint64_t)r->limit[d] : 0;
		any |= lim[d] != 0;
	}
	if (any && !h->rdonly)
		(void)shl_observe_limits(h, x->pool, lim);
}

int shl_ex_finish(shl_t *h, shl_exchange *x, int sent)
{
	if (h == NULL || x == NULL)
		return -EINVAL;
	if (x->finished)
		return x->outcome;
	x->finished = 1;
	struct shl__resp *r = &x->resp;
	shl__resp_finish(r);
	if (!x->ticket_open)
		return x->outcome = SHL_EX_UNADMITTED;
	x->ticket_open = 0;
	long st = r->status;
	int ok = st >= 200 && st < 300;
	shl_usage u;
	memset(&u, 0, sizeof(u));
	int cancel = 0, outcome = SHL_EX_SETTLED;
	if (x->kind == SHL_EX_COUNT) {
		cancel = st == 0 && !sent;
	} else if (x->kind == SHL_EX_BATCH) {
		if (ok)
			estimate_usage(x, &u, 1); /* the batch runs later: its estimate */
		else
			cancel = st == 0 && !sent;
	} else if (r->usage_seen) {
		u = r->usage;
		if (!r->cw_split)
			split_writes(x, &u);
		if (r->sse && r->stream_error && !r->final_seen) {
			/* Cut by an error event (529 overloaded) before the final
			 * count: the output its text showed.  (A stream cut by the
			 * transport keeps what it reported, as documented.) */
			uint64_t seen = tokens_of(r->out_units);
			if (seen > u.output_tokens)
				u.output_tokens = seen > SHL_WIRE_USAGE_MAX ? SHL_WIRE_USAGE_MAX : seen;
		}
	} else if (ok) {
		estimate_usage(x, &u, 1);
		outcome = SHL_EX_ESTIMATED;
	} else if (st == 0) {
		if (!sent)
			cancel = 1;
		else
			estimate_usage(x, &u, 0);
	}
	/* else: an error status without usage: nothing billed, the request
	 * still counts for RPM (settle with zero usage). */
	/* A server-side fallback: the response names another model than the
	 * request's.  Its usage is charged to the serving model's pool and
	 * prices (shl_settle_as), and the feedback below is that pool's: its
	 * rate-limit headers describe it. */
	int served = -1;
	if (!cancel && x->kind == SHL_EX_MESSAGES && r->model[0] != '\0' &&
	    strcmp(r->model, x->req.model) != 0) {
		served = shl_lookup(h, r->model);
		int sp = served >= 0 ? shl_model_pool(h, served) : -1;
		if (sp >= 0)
			x->pool = sp;
		else
			served = -1;
	}
	int rc;
	if (cancel) {
		rc = shl__cancel_given(h, &x->ticket, x->given);
		outcome = SHL_EX_CANCELLED;
	} else {
		/* served < 0: shl_settle */
		rc = shl__settle_as_given(h, &x->ticket, served, &u, x->given);
	}
	feedback(h, x, &u, !cancel);
	if (!cancel && ok && x->kind == SHL_EX_MESSAGES && r->usage_seen) {
		uint64_t raw = x->req.cost.input_tokens + x->req.cost.cache_write_5m +
			       x->req.cost.cache_write_1h;
		shl__learn_add(h, x->ticket.pool, raw,
			       u.input_tokens + u.cache_write_5m + u.cache_write_1h + u.cache_read);
	}
	return x->outcome = rc < 0 ? rc : outcome;
}

void shl_ex_free(shl_exchange *x)
{
	if (x == NULL)
		return;
	if (x->ticket_open && !x->finished && x->h != NULL)
		shl_ex_finish(x->h, x, 1);
	shl__resp_free(&x->resp);
	free(x);
}
