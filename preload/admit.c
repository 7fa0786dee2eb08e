/*
 * admit.c - whether a transfer is governed, and its admission.
 *
 * When a transfer starts (curl_easy_perform, or curl_multi_add_handle),
 * shim_prepare decides whether it is a governed request: a POST to a
 * governed host (SHMLIMIT_HOSTS) and Messages API path, with a body the shim
 * can read (libshmlimit's shl_ex_open reads it; a body from a read callback
 * is read ahead and replayed to libcurl byte for byte) and a model the
 * segment knows.
 * curl_easy_perform then waits for admission (shim_admit, through route.c,
 * which is plain shl_acquire unless SHMLIMIT_ROUTE is set) before anything is
 * sent.  The multi interface never waits: shim_place takes the transfer's
 * place in line (shl_ex_reserve) and hold.c keeps it back until its release
 * time, when shim_start checks what may have changed meanwhile (a server
 * hold, the spend cap); libcurl's pre-request callback, just before the
 * request is written, checks once more.
 *
 * What it deliberately does not do
 *   - It does not retry a refused request.  A refused request fails with
 *     CURLE_ABORTED_BY_CALLBACK before a byte of it is sent, after one line
 *     on stderr (and in the application's CURLOPT_ERRORBUFFER) that says
 *     which pool and which limit refused it.
 *   - It never refuses for an internal reason: a body it cannot read, a
 *     model it does not know, an admission error other than a refusal, and
 *     the request passes through ungoverned (one stderr line per cause).
 */
#define CURL_DISABLE_TYPECHECK 1
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "shim.h"

#define READAHEAD_MAX (8u << 20) /* read-callback bodies kept for replay */

/* Replay of a body read ahead from the application's read callback. */
static size_t wrap_read(char *p, size_t size, size_t n, void *ud)
{
	struct hs *s = ud;
	size_t want = size * n;
	if (s->rpos < s->rlen) {
		size_t k = s->rlen - s->rpos < want ? s->rlen - s->rpos : want;
		memcpy(p, s->rbuf + s->rpos, k);
		s->rpos += k;
		return k;
	}
	if (s->rdone)
		return 0;
	void *rd = s->app_rdata_set ? s->app_rdata : stdin;
	return s->app_read ? s->app_read(p, size, n, rd) : fread(p, size, n, (FILE *)rd);
}

static int wrap_seek(void *ud, curl_off_t off, int origin)
{
	struct hs *s = ud;
	if (origin == SEEK_SET && off >= 0 && (size_t)off <= s->rlen && s->rdone) {
		s->rpos = (size_t)off;
		return CURL_SEEKFUNC_OK;
	}
	return CURL_SEEKFUNC_CANTSEEK;
}

static enum shim_kind url_kind(const char *url)
{
	if (url == NULL)
		return SHIM_KIND_NONE;
	const char *p = strstr(url, "://");
	long port;
	if (p == NULL) {
		p = url;
		port = 80; /* libcurl's guess for a URL without scheme */
	} else {
		size_t sl = (size_t)(p - url);
		if (sl == 5 && strncasecmp(url, "https", 5) == 0)
			port = 443;
		else if (sl == 4 && strncasecmp(url, "http", 4) == 0)
			port = 80;
		else
			return SHIM_KIND_NONE;
		p += 3;
	}
	size_t alen = strcspn(p, "/?#");
	const char *auth = p, *path = p + alen;
	const char *at = memchr(auth, '@', alen);
	if (at != NULL) {
		alen -= (size_t)(at + 1 - auth);
		auth = at + 1;
	}
	char host[256];
	size_t hlen = alen;
	const char *colon = NULL;
	for (size_t i = alen; i > 0; i--) {
		if (auth[i - 1] == ']')
			break;
		if (auth[i - 1] == ':') {
			colon = auth + i - 1;
			break;
		}
	}
	if (colon != NULL) {
		hlen = (size_t)(colon - auth);
		char pb[8];
		size_t pl = alen - hlen - 1;
		if (pl > 0) {
			if (pl >= sizeof(pb))
				return SHIM_KIND_NONE;
			memcpy(pb, colon + 1, pl);
			pb[pl] = '\0';
			char *end;
			port = strtol(pb, &end, 10);
			if (*end != '\0')
				return SHIM_KIND_NONE;
		}
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return SHIM_KIND_NONE;
	memcpy(host, auth, hlen);
	host[hlen] = '\0';
	if (hlen > 1 && host[hlen - 1] == '.')
		host[--hlen] = '\0';
	int ok = 0;
	for (int i = 0; i < g_nhosts && !ok; i++)
		ok = g_hosts[i].port == port && strcasecmp(g_hosts[i].name, host) == 0;
	if (!ok)
		return SHIM_KIND_NONE;
	return (enum shim_kind)shl_ex_kind("POST", path);
}

/* Install our read/seek callbacks over a body read ahead. */
static int read_ahead(struct hs *s)
{
	size_t cap = 65536;
	s->rbuf = malloc(cap);
	if (s->rbuf == NULL)
		return -1;
	s->rlen = s->rpos = 0;
	s->rdone = 0;
	void *rd = s->app_rdata_set ? s->app_rdata : stdin;
	for (;;) {
		if (s->rlen == cap) {
			if (cap >= READAHEAD_MAX)
				break;
			char *nb = realloc(s->rbuf, cap * 2);
			if (nb == NULL)
				break;
			s->rbuf = nb;
			cap *= 2;
		}
		size_t got = s->app_read ? s->app_read(s->rbuf + s->rlen, 1, cap - s->rlen, rd)
					 : fread(s->rbuf + s->rlen, 1, cap - s->rlen, (FILE *)rd);
		if (got == 0) {
			s->rdone = 1;
			break;
		}
		if (got > cap - s->rlen) /* CURL_READFUNC_ABORT / PAUSE: stop reading ahead */
			break;
		s->rlen += got;
	}
	if (real.easy_setopt(s->key, CURLOPT_READFUNCTION, wrap_read) != CURLE_OK ||
	    real.easy_setopt(s->key, CURLOPT_READDATA, s) != CURLE_OK)
		return -1; /* cannot happen with a libcurl that has the option */
	real.easy_setopt(s->key, CURLOPT_SEEKFUNCTION, wrap_seek);
	real.easy_setopt(s->key, CURLOPT_SEEKDATA, s);
	s->replaying = 1;
	return s->rdone ? 0 : -1;
}

static const char *kind_path(enum shim_kind k)
{
	return k == SHIM_KIND_COUNT ? "/v1/messages/count_tokens"
	       : k == SHIM_KIND_BATCH ? "/v1/messages/batches" : "/v1/messages";
}

/* A refusal's line: on stderr, and in the application's
 * CURLOPT_ERRORBUFFER (CURL_ERROR_SIZE bytes), cut to fit. */
static void refusal_out(struct hs *s, const char *line)
{
	fprintf(stderr, "%s\n", line);
	if (s->errbuf != NULL) {
		size_t n = strlen(line);
		if (n >= CURL_ERROR_SIZE)
			n = CURL_ERROR_SIZE - 1;
		memcpy(s->errbuf, line, n);
		s->errbuf[n] = '\0';
	}
}

/* The one line for a refused request; also into the app's error buffer. */
static void refuse_line(struct hs *s, int r, const shl_refusal *why)
{
	char pool[SHL_NAME_MAX + 1] = "?";
	char lim[96] = "";
	shl_stats *st = malloc(sizeof(*st));
	if (st != NULL && shl_stats_get(g_shl, st) == 0) {
		/* pools[] is compacted: find the refusing pool by its index. */
		const shl_pool_stats *ps = NULL;
		for (int k = 0; k < st->npools && ps == NULL; k++)
			if (st->pools[k].index == why->pool)
				ps = &st->pools[k];
		if (ps != NULL)
			snprintf(pool, sizeof(pool), "%s", ps->name);
		if (why->dim >= 0 && why->dim < SHL_NBUCKETS && ps != NULL)
			snprintf(lim, sizeof(lim), " (limit %" PRIu64 "/min, burst %" PRIu64 ")",
				 ps->limit[why->dim], ps->burst[why->dim]);
		else if (why->dim == SHL_DIM_SPEND)
			snprintf(lim, sizeof(lim), " (cap $%.2f, spent $%.2f this month)",
				 (double)st->spend_cap / SHL_UNITS_PER_USD,
				 (double)st->spend_month / SHL_UNITS_PER_USD);
	}
	free(st);
	char reason[160];
	if (r == -EBUSY)
		snprintf(reason, sizeof(reason), "the server's retry-after came in while it was "
			 "connecting (%.3f s left); not sent", (double)why->wait_ns / 1e9);
	else if (r == -ETIMEDOUT || r == -EAGAIN)
		snprintf(reason, sizeof(reason), "admission in %.3f s is past the deadline (SHMLIMIT_WAIT_MS)",
			 (double)why->wait_ns / 1e9);
	else if (r == -E2BIG && shl_ex_ratio(s->ex) != 1.0 && why->dim == SHL_DIM_ITPM)
		snprintf(reason, sizeof(reason), "needs %" PRIu64 " (the estimate times the pool's "
			 "learned ratio %.3f), more than the capacity %" PRIu64
			 "; it can never be admitted", why->need, shl_ex_ratio(s->ex), why->capacity);
	else if (r == -E2BIG)
		snprintf(reason, sizeof(reason), "needs %" PRIu64 ", more than the capacity %" PRIu64
			 "; it can never be admitted", why->need, why->capacity);
	else
		snprintf(reason, sizeof(reason), "%s", shl_strerror(r));
	char line[512];
	snprintf(line, sizeof(line), "shmlimit: refused POST %s model %s: pool %s: %s limit%s: %s",
		 kind_path(s->kind), shl_ex_model(s->ex), pool, shl_dim_name(why->dim), lim, reason);
	refusal_out(s, line);
}

/*
 * Decide whether the transfer is governed: a POST to a governed host and
 * path, with a body we can read and a model the configuration knows.
 * Returns 1 governed (s->ex, s->kind, s->model set), 0 pass through, -1
 * refused outright (a model the configuration's unknown_model policy
 * refuses: one line on stderr and in CURLOPT_ERRORBUFFER).
 */
int shim_prepare(struct hs *s)
{
	s->kind = url_kind(s->url);
	if (s->kind == SHIM_KIND_NONE || s->method != M_POST)
		return 0;
	if (s->customrequest != NULL && strcmp(s->customrequest, "POST") != 0)
		return 0;
	const char *body = s->postfields;
	size_t blen = 0;
	if (body != NULL) {
		blen = s->postsize >= 0 ? (size_t)s->postsize : strlen(body);
	} else if (s->postsize != 0) {
		/* The body comes from the read callback: read it ahead, replay it. */
		if (read_ahead(s) != 0) {
			shim_warn_once(C_READCB, "a request body from a read callback could not be read "
					    "ahead; such requests pass through ungoverned");
			return 0;
		}
		body = s->rbuf;
		blen = s->rlen;
	}
	shl_ex_free(s->ex);
	s->ex = NULL;
	shl_err err = {{0}};
	int r = body == NULL ? -EINVAL : shl_ex_open(g_shl, s->kind, body, blen, &s->ex, &err);
	if (r == -EINVAL) {
		shim_warn_once(C_BODY, "a request body to %s is not a JSON request with a model; "
				  "such requests pass through ungoverned", kind_path(s->kind));
		return 0;
	}
	if (r == -ESRCH) {
		/* count_tokens and batches without a model entry pass silently */
		if (s->kind == SHIM_KIND_MESSAGES)
			shim_warn_once(C_MODEL, "%s; its requests pass through ungoverned", err.msg);
		return 0;
	}
	if (r == -ENOMSG) {
		/* The configuration's unknown_model policy is "refuse": a
		 * decision of the operator, not an internal failure. */
		char line[CURL_ERROR_SIZE + 64];
		snprintf(line, sizeof(line), "shmlimit: refused POST %s: %s", kind_path(s->kind),
			 err.msg[0] ? err.msg : shl_strerror(r));
		refusal_out(s, line);
		s->admit_failed = 1;
		return -1;
	}
	if (r < 0) {
		shim_warn_once(C_NOMEM, "reading a request: %s; it passes through ungoverned",
			       shl_strerror(r));
		return 0;
	}
	s->model = shl_ex_model_entry(s->ex);
	/* A model no entry names, governed by the unknown_model policy's
	 * catch-all pool: named once per process and id. */
	if (shl_unknown_note(g_shl, shl_ex_model(s->ex)) == 1)
		fprintf(stderr, "shmlimit-preload: model %s is in no model entry; the "
				"configuration's unknown_model pool governs it\n", shl_ex_model(s->ex));
	s->admit_failed = 0;
	s->placed = 0;
	shim_route_plan(&s->route, g_shl, s->kind, s->model, shl_ex_model(s->ex),
			s->postfields ? body : NULL, blen);
	shl_ex_header_in_body(s->ex, s->header_in_body);
	return 1;
}

/*
 * Wait for admission of a prepared transfer.  Returns 1 admitted (ticket
 * open), 0 pass through (internal failure, one stderr line), -1 refused
 * (the refusal line printed).
 */
int shim_admit(struct hs *s)
{
	shl_refusal why;
	memset(&why, 0, sizeof(why));
	why.dim = SHL_DIM_NONE;
	shl_cost cost;
	shl_ex_cost(s->ex, &cost);
	int r = shim_route_admit(&s->route, s->key, g_shl, s->model, &cost, g_wait_ns,
				 &s->ticket, &why);
	if (r == -ETIMEDOUT || r == -EAGAIN || r == -E2BIG || r == -EDQUOT) {
		refuse_line(s, r, &why);
		return -1;
	}
	if (r < 0) {
		shim_warn_once(C_ADMIT, "admission failed: %s; the request passes through ungoverned",
			  shl_strerror(r));
		return 0;
	}
	s->pool = s->ticket.pool;
	s->ticket_open = 1;
	shl_ex_adopt(s->ex, &s->ticket); /* the exchange settles it */
	return 1;
}

/* ------------------------------------------------------------------ */
/* The multi interface: a place in line, then a start (hold.c)         */
/* ------------------------------------------------------------------ */

/*
 * Fair waiting (shl_ex_reserve, then shl_ex_start at the release) or,
 * without it, shl_try again at each computed wait.  The switch: this line.
 */
#define SHIM_RESERVE 1

static int refused(struct hs *s, int r, const shl_refusal *why)
{
	refuse_line(s, r, why);
	s->admit_failed = 1;
	return -1;
}

int shim_place(struct hs *s, int64_t now)
{
	shl_refusal why;
	memset(&why, 0, sizeof(why));
	why.dim = SHL_DIM_NONE;
	s->placed = 1;
	int64_t left = s->deadline == INT64_MAX ? -1 : s->deadline > now ? s->deadline - now : 0;
	int64_t release = now;
	shl_cost cost;
	shl_ex_cost(s->ex, &cost);
	int r, adopt = 1;
	if (s->route.active) {
		/* shl_route never reserves: try the list now, again after the
		 * shortest wait (routed requests wait in no line). */
		r = shim_route_admit(&s->route, s->key, g_shl, s->model, &cost, 0, &s->ticket, &why);
	} else {
#if SHIM_RESERVE
		r = shl_ex_reserve(g_shl, s->ex, left, &release, &why);
		adopt = 0; /* the exchange holds the reservation */
#else
		r = shl_try(g_shl, s->model, &cost, &s->ticket, &why);
#endif
	}
	if (r == 0) {
		if (adopt)
			shl_ex_adopt(s->ex, &s->ticket); /* the exchange settles it */
		const shl_ticket *t = shl_ex_ticket(s->ex);
		s->pool = t != NULL ? t->pool : s->ticket.pool;
		s->ticket_open = 1;
		s->release_at = release > now ? release : now;
		s->release0 = s->release_at;
		if (shl_ex_place(g_shl, s->ex, &s->place) != 0)
			memset(&s->place, 0, sizeof(s->place)); /* the most cautious place */
		return 0;
	}
	if ((r == -EAGAIN || (r == -ETIMEDOUT && s->route.active)) && why.wait_ns >= 0) {
		/* Not taken: try again after the wait, if the deadline allows. */
		if (left >= 0 && why.wait_ns > left)
			return refused(s, -ETIMEDOUT, &why);
		s->release_at = why.wait_ns > INT64_MAX - now ? INT64_MAX : now + why.wait_ns;
		s->release0 = s->release_at;
		memset(&s->place, 0, sizeof(s->place));
		return 1;
	}
	if (r == -ETIMEDOUT || r == -EAGAIN || r == -E2BIG || r == -EDQUOT)
		return refused(s, r, &why);
	shim_warn_once(C_ADMIT, "admission failed: %s; the request passes through ungoverned",
		       shl_strerror(r));
	return -2;
}

int shim_start(struct hs *s, int64_t now, struct shim_multi *m)
{
	for (int round = 0; round < 4; round++) {
		int placed = 0;
		if (!s->ticket_open) {
			int r = shim_place(s, now);
			if (r != 0)
				return r;
			placed = 1;
		}
		/* (the line's skew first: it may move the release) */
		if (shim_multi_hold_back(m, s, now, placed) || s->release_at > now)
			return 1;
#if SHIM_RESERVE
		shl_refusal why;
		memset(&why, 0, sizeof(why));
		why.dim = SHL_DIM_NONE;
		int r = shl_ex_start(g_shl, s->ex, &why);
		if (r == 0)
			return 0;
		if (r == -EAGAIN || r == -EDQUOT)
			s->ticket_open = 0; /* shl_ex_start has cancelled the reservation */
		if (r == -EDQUOT)
			return refused(s, r, &why);
		if (r != -EAGAIN) {
			shim_warn_once(C_ADMIT, "admission failed: %s; the request passes through "
				       "ungoverned", shl_strerror(r));
			return -2;
		}
		/* Held by a server retry-after since it was placed: a new place,
		 * behind the hold. */
#else
		/* shl_try at the release time has checked the hold and the spend. */
		return 0;
#endif
	}
	return 1; /* the pool keeps moving under it: held until the next look */
}

/*
 * libcurl's pre-request callback, right before the request is written to
 * its connection.  A transfer placed and released by hold.c is checked one
 * last time: a server hold or the spend cap that arrived while it was
 * connecting stops it (not sent).  A transfer the shim could not hold back
 * (no memory for the multi's state) is admitted here, as before the hold
 * existed, blocking the thread that runs the multi handle while it waits.
 */
int shim_prereq_admit(void *ud, char *pip, char *lip, int pport, int lport)
{
	struct hs *s = ud;
	if (s->admit_failed)
		return CURL_PREREQFUNC_ABORT;
	if (s->placed) {
#if SHIM_RESERVE
		shl_refusal why;
		memset(&why, 0, sizeof(why));
		why.dim = SHL_DIM_NONE;
		int r = s->ticket_open ? shl_ex_start(g_shl, s->ex, &why) : 0;
		if (r == -EAGAIN || r == -EDQUOT) {
			shim_multi_unsent(s);
			s->ticket_open = 0; /* shl_ex_start has cancelled it */
			refused(s, r == -EAGAIN ? -EBUSY : r, &why);
			return CURL_PREREQFUNC_ABORT;
		}
#endif
		shim_multi_sent(s, shl_now()); /* what was placed after it moves by its lateness */
	} else if (!s->ticket_open && shim_admit(s) < 0) {
		s->admit_failed = 1;
		return CURL_PREREQFUNC_ABORT;
	}
	if (s->app_prereq != NULL)
		return s->app_prereq(s->app_prereq_data, pip, lip, pport, lport);
	return CURL_PREREQFUNC_OK;
}
