/*
 * route.c - opt-in routing across pools for the shim (SHMLIMIT_ROUTE).
 *
 * SHMLIMIT_ROUTE holds a preference list of model ids, e.g.
 * "claude-opus-4-5,claude-sonnet-4-5,claude-haiku-4-5".  A Messages request
 * whose model is in that list (by id, or else by pool: a dated id of the
 * same class) is admitted with shl_route over its own model followed by the
 * list's entries after its position, so it is sent as asked while its pool
 * can take it and otherwise goes down the list (never up: a Haiku request is
 * not upgraded to Opus).  When another model is chosen, the body libcurl
 * sends has its "model" value replaced by that model's id; the rest of the
 * body is untouched, byte for byte.
 *
 * The application's own buffer is never written.  The shim makes its own
 * copy of the body (per handle), points libcurl at it with
 * CURLOPT_POSTFIELDS and the matching CURLOPT_POSTFIELDSIZE_LARGE, and when
 * the transfer ends puts back what the application had set (its
 * POSTFIELDS pointer, or a fresh COPYPOSTFIELDS copy, and its size).
 *
 * When the copy is made depends on where the shim admits:
 *   - curl_easy_perform admits before libcurl starts, so the rewritten body
 *     is installed only when another model was chosen, at its exact length;
 *   - the multi interface admits in the pre-request callback, after libcurl
 *     has taken the body's length (Curl_pretransfer, at the start of the
 *     transfer).  So at curl_multi_add_handle the copy is installed already,
 *     with room for the longest model id that can be chosen: spaces after
 *     the "model" value (JSON whitespace, meaningless to the server), and
 *     the pre-request callback rewrites the value in place, padding with
 *     spaces, without changing the length.
 *
 * Routing fails open to no routing (the request is admitted on its own
 * model, as without SHMLIMIT_ROUTE): a body from a read callback, a body
 * whose "model" member cannot be located as a plain string, no memory.
 * Each such cause prints one stderr line per process.
 */
#define CURL_DISABLE_TYPECHECK 1
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "shim.h"

#define PREFIX "shmlimit-preload: "
#define ROUTE_MAX 32 /* models in SHMLIMIT_ROUTE */

typedef CURLcode (*setopt_fn)(CURL *, CURLoption, ...);

/* Written once in shim_route_init (under the shim's pthread_once), read-only after. */
static char g_ids[ROUTE_MAX][SHL_PATTERN_MAX + 1];
static size_t g_len[ROUTE_MAX];
static int g_n;
static setopt_fn g_setopt;

enum { W_ENV, W_UNKNOWN, W_READCB, W_LOCATE, W_REWRITE, W_N };
static atomic_int warned[W_N];

__attribute__((format(printf, 2, 3)))
static void warn_once(int which, const char *fmt, ...)
{
	int expect = 0;
	/* relaxed: the flag only deduplicates messages. */
	if (!atomic_compare_exchange_strong_explicit(&warned[which], &expect, 1,
						     memory_order_relaxed, memory_order_relaxed))
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, PREFIX "%s\n", line);
}

/* A model id we can put between JSON quotes as it is. */
static int id_ok(const char *s, size_t n)
{
	if (n == 0 || n > SHL_PATTERN_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\')
			return 0;
	}
	return 1;
}

int shim_route_init(shl_t *h, void (*setopt)(void))
{
	g_n = 0;
	const char *env = getenv("SHMLIMIT_ROUTE");
	if (env == NULL || env[0] == '\0' || setopt == NULL)
		return 0;
	g_setopt = (setopt_fn)setopt;
	const char *p = env;
	while (*p != '\0') {
		size_t n = strcspn(p, ",");
		const char *s = p;
		size_t k = n;
		while (k > 0 && (*s == ' ' || *s == '\t')) {
			s++;
			k--;
		}
		while (k > 0 && (s[k - 1] == ' ' || s[k - 1] == '\t'))
			k--;
		if (!id_ok(s, k)) {
			warn_once(W_ENV, "SHMLIMIT_ROUTE: \"%.*s\" is not a model id; entry ignored",
				  (int)(n > 80 ? 80 : n), p);
		} else if (g_n == ROUTE_MAX) {
			warn_once(W_ENV, "SHMLIMIT_ROUTE: more than %d models; the rest is ignored",
				  ROUTE_MAX);
			break;
		} else {
			memcpy(g_ids[g_n], s, k);
			g_ids[g_n][k] = '\0';
			g_len[g_n] = k;
			if (shl_lookup(h, g_ids[g_n]) < 0)
				warn_once(W_UNKNOWN, "SHMLIMIT_ROUTE: model \"%s\" has no pool in the "
						     "configuration; it is skipped while it has none",
					  g_ids[g_n]);
			g_n++;
		}
		p += n + (p[n] == ',');
	}
	if (g_n < 2) {
		warn_once(W_ENV, "SHMLIMIT_ROUTE needs at least two models; requests are not routed");
		g_n = 0;
	}
	return g_n;
}

/* ------------------------------------------------------------------ */
/* Locating the top-level "model" member in the raw body               */
/* ------------------------------------------------------------------ */

static size_t skip_ws(const char *b, size_t n, size_t i)
{
	while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
		i++;
	return i;
}

/* One past the closing quote of the string that opens at b[i], or 0. */
static size_t str_end(const char *b, size_t n, size_t i, int *escaped)
{
	for (i++; i < n; i++) {
		if (b[i] == '\\') {
			if (escaped)
				*escaped = 1;
			i++;
			continue;
		}
		if (b[i] == '"')
			return i + 1;
	}
	return 0;
}

/* One past the end of the value that starts at b[i], or 0. */
static size_t value_end(const char *b, size_t n, size_t i)
{
	if (i >= n)
		return 0;
	if (b[i] == '"')
		return str_end(b, n, i, NULL);
	if (b[i] == '{' || b[i] == '[') {
		int depth = 0;
		while (i < n) {
			char c = b[i];
			if (c == '"') {
				size_t e = str_end(b, n, i, NULL);
				if (e == 0)
					return 0;
				i = e;
				continue;
			}
			if (c == '{' || c == '[') {
				depth++;
			} else if (c == '}' || c == ']') {
				if (--depth == 0)
					return i + 1;
			}
			i++;
		}
		return 0;
	}
	size_t s = i;
	while (i < n && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' &&
	       b[i] != '\t' && b[i] != '\r' && b[i] != '\n' && b[i] != '\0')
		i++;
	return i > s ? i : 0;
}

/*
 * The span of the top-level "model" member's value, quotes included.
 * Refuses (-1) anything where another reader could disagree about which
 * member that is: an escaped key, a second "model" member, a value that is
 * not a plain string, a malformed object.
 */
static int find_model(const char *b, size_t n, size_t *off, size_t *len)
{
	int found = 0;
	size_t i = skip_ws(b, n, 0);
	if (i >= n || b[i] != '{')
		return -1;
	i = skip_ws(b, n, i + 1);
	if (i < n && b[i] == '}')
		return -1;
	for (;;) {
		if (i >= n || b[i] != '"')
			return -1;
		int esc = 0;
		size_t ke = str_end(b, n, i, &esc);
		if (ke == 0 || esc)
			return -1;
		int is_model = ke - i == 7 && memcmp(b + i, "\"model\"", 7) == 0;
		i = skip_ws(b, n, ke);
		if (i >= n || b[i] != ':')
			return -1;
		i = skip_ws(b, n, i + 1);
		size_t ve = value_end(b, n, i);
		if (ve == 0)
			return -1;
		if (is_model) {
			if (found || b[i] != '"')
				return -1;
			found = 1;
			*off = i;
			*len = ve - i;
		}
		i = skip_ws(b, n, ve);
		if (i < n && b[i] == ',') {
			i = skip_ws(b, n, i + 1);
			continue;
		}
		if (i < n && b[i] == '}')
			return found ? 0 : -1;
		return -1;
	}
}

/* ------------------------------------------------------------------ */
/* Per transfer                                                         */
/* ------------------------------------------------------------------ */

void shim_route_plan(struct shim_route *rt, shl_t *h, int kind, int model, const char *model_id,
		     const char *body, size_t len)
{
	shim_route_free(rt);
	if (g_n == 0 || kind != SHIM_KIND_MESSAGES)
		return;
	/* The request's place in the list: its own id, else the first entry of its pool. */
	int from = -1;
	for (int i = 0; i < g_n && from < 0; i++)
		if (strcmp(g_ids[i], model_id) == 0)
			from = i;
	int pool = shl_model_pool(h, model);
	for (int i = 0; i < g_n && from < 0 && pool >= 0; i++) {
		int m = shl_lookup(h, g_ids[i]);
		if (m >= 0 && shl_model_pool(h, m) == pool)
			from = i;
	}
	if (from < 0 || from == g_n - 1)
		return; /* not in the list, or nothing after it */
	if (body == NULL) {
		warn_once(W_READCB, "SHMLIMIT_ROUTE: a request body from a read callback cannot be "
				    "rewritten; such requests are not routed");
		return;
	}
	size_t off = 0, vlen = 0, idlen = strlen(model_id);
	if (find_model(body, len, &off, &vlen) != 0 || vlen != idlen + 2 ||
	    memcmp(body + off + 1, model_id, idlen) != 0) {
		warn_once(W_LOCATE, "SHMLIMIT_ROUTE: a request body's \"model\" is not a plain "
				    "top-level string member; such requests are not routed");
		return;
	}
	rt->active = 1;
	rt->from = from;
	rt->src = body;
	rt->src_len = len;
	rt->val_off = off;
	rt->val_len = vlen;
}

/* Point libcurl at our copy. */
static int install(struct shim_route *rt, void *curl)
{
	if (g_setopt(curl, CURLOPT_POSTFIELDS, rt->body) != CURLE_OK)
		return -1;
	rt->installed = 1; /* from here on, restore puts the application's body back */
	if (g_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rt->body_len) != CURLE_OK)
		return -1;
	return 0;
}

/*
 * A copy of the source body with the value span replaced by "id" followed
 * by `pad` spaces.
 */
static int build(struct shim_route *rt, const char *id, size_t idlen, size_t pad)
{
	size_t tail = rt->src_len - rt->val_off - rt->val_len;
	size_t n = rt->val_off + idlen + 2 + pad + tail;
	char *b = malloc(n + 1);
	if (b == NULL)
		return -1;
	memcpy(b, rt->src, rt->val_off);
	char *p = b + rt->val_off;
	*p++ = '"';
	memcpy(p, id, idlen);
	p += idlen;
	*p++ = '"';
	memset(p, ' ', pad);
	p += pad;
	memcpy(p, rt->src + rt->val_off + rt->val_len, tail);
	b[n] = '\0';
	free(rt->body);
	rt->body = b;
	rt->body_len = n;
	rt->slot_len = idlen + 2 + pad;
	return 0;
}

int shim_route_reserve(struct shim_route *rt, void *curl)
{
	if (!rt->active)
		return 0;
	size_t own = rt->val_len - 2, longest = own;
	for (int i = rt->from + 1; i < g_n; i++)
		if (g_len[i] > longest)
			longest = g_len[i];
	if (build(rt, rt->src + rt->val_off + 1, own, longest - own) != 0 ||
	    install(rt, curl) != 0) {
		warn_once(W_REWRITE, "SHMLIMIT_ROUTE: cannot give libcurl a rewritable copy of a "
				     "request body; such requests are not routed");
		rt->active = 0;
		return -1;
	}
	rt->padded = 1;
	return 0;
}

/* Send `id` instead of the request's model. */
static int rewrite(struct shim_route *rt, void *curl, const char *id)
{
	size_t idlen = strlen(id);
	if (rt->padded && rt->installed) {
		/* libcurl has the body's length already: rewrite in place. */
		if (idlen + 2 > rt->slot_len)
			return -1;
		char *p = rt->body + rt->val_off;
		*p++ = '"';
		memcpy(p, id, idlen);
		p += idlen;
		*p++ = '"';
		memset(p, ' ', rt->slot_len - idlen - 2);
		return 0;
	}
	if (build(rt, id, idlen, 0) != 0)
		return -1;
	return install(rt, curl);
}

int shim_route_admit(struct shim_route *rt, void *curl, shl_t *h, int model, const shl_cost *cost,
		     int64_t timeout_ns, shl_ticket *t, shl_refusal *why)
{
	if (!rt->active)
		return shl_acquire(h, model, cost, timeout_ns, t, why);
	/* The request's own model first, then each later entry of another pool. */
	int models[ROUTE_MAX + 1], pools[ROUTE_MAX + 1];
	const char *ids[ROUTE_MAX + 1];
	int n = 0;
	models[n] = model;
	pools[n] = shl_model_pool(h, model);
	ids[n++] = NULL;
	for (int i = rt->from + 1; i < g_n; i++) {
		int m = shl_lookup(h, g_ids[i]);
		int p = m >= 0 ? shl_model_pool(h, m) : -1;
		int dup = p < 0;
		for (int k = 0; k < n && !dup; k++)
			dup = pools[k] == p;
		if (dup)
			continue;
		models[n] = m;
		pools[n] = p;
		ids[n++] = g_ids[i];
	}
	if (n == 1)
		return shl_acquire(h, model, cost, timeout_ns, t, why);
	shl_route_policy pol = {.min_free = 0.0, .timeout_ns = timeout_ns};
	int r = shl_route(h, models, n, cost, &pol, t, why);
	if (r <= 0)
		return r; /* admitted as asked, or refused by every pool */
	if (rewrite(rt, curl, ids[r]) != 0) {
		/* Never send the old model on another pool's ticket. */
		shl_cancel(h, t);
		warn_once(W_REWRITE, "SHMLIMIT_ROUTE: cannot rewrite a request body; such requests "
				     "are not routed");
		return shl_acquire(h, model, cost, timeout_ns, t, why);
	}
	return 0;
}

void shim_route_restore(struct shim_route *rt, void *curl, const char *postfields,
			const char *postcopy, size_t postcopy_len, int64_t app_postsize)
{
	if (rt->installed && g_setopt != NULL) {
		if (postcopy != NULL) {
			/* COPYPOSTFIELDS: a fresh copy for libcurl, of the length it had. */
			g_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)postcopy_len);
			g_setopt(curl, CURLOPT_COPYPOSTFIELDS, postcopy);
		} else {
			g_setopt(curl, CURLOPT_POSTFIELDS, postfields);
		}
		g_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)app_postsize);
	}
	shim_route_free(rt);
}

void shim_route_free(struct shim_route *rt)
{
	free(rt->body);
	memset(rt, 0, sizeof(*rt));
}
