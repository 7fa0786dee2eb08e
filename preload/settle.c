/*
 * settle.c - reading the response as the application receives it, and
 * settling the admission with what the server reported.
 *
 * While a governed transfer runs, the shim's write and header callbacks sit
 * in front of the application's: each passes libcurl's bytes on unchanged
 * and feeds response.c only what the application accepted.  When the
 * response headers are complete, the anthropic-ratelimit-*-remaining values
 * clamp the pool's buckets (shl_clamp).  When the transfer ends (perform
 * returns, curl_multi_info_read reports it done, or the handle is removed,
 * reset or cleaned up), shim_finish settles the ticket with the usage the
 * server reported (or the documented estimate when it reported none),
 * cancels it when the request was never sent, holds the pool after a 429
 * (its retry-after, or 1 s) or marks the spend cap reached, and puts the
 * application's callbacks and body back.
 *
 * What it deliberately does not do
 *   - It never changes what the application receives: a chunk the
 *     application pauses or refuses is not read, and comes again.
 *   - It does not take a success without readable usage as free: such a
 *     request is charged its estimate and max_tokens (one stderr line).
 */
#define CURL_DISABLE_TYPECHECK 1
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "shim.h"

#define HOLD_DEFAULT_NS 1000000000LL /* a 429 without retry-after holds 1 s */

static size_t app_write_call(struct hs *s, char *p, size_t size, size_t n, void *ud)
{
	if (s->app_write != NULL)
		return s->app_write(p, size, n, ud);
	/* libcurl's default: fwrite to the WRITEDATA FILE*, stdout unless set */
	return fwrite(p, size, n, (FILE *)ud);
}

static size_t wrap_write(char *p, size_t size, size_t n, void *ud)
{
	struct hs *s = ud;
	size_t ret = app_write_call(s, p, size, n, s->app_wdata_set ? s->app_wdata : stdout);
	/* Only what the application accepted: a paused chunk comes again. */
	if (ret == size * n)
		shim_resp_body(&s->resp, p, size * n);
	return ret;
}

/* Response headers are complete: what the server says about the pool. */
static void feedback_headers(struct hs *s)
{
	if (!s->ticket_open)
		return;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		if (s->resp.remaining[d] >= 0)
			shl_clamp(g_shl, s->pool, d, (uint64_t)s->resp.remaining[d]);
}

static size_t wrap_header(char *p, size_t size, size_t n, void *ud)
{
	struct hs *s = ud;
	size_t total = size * n, ret;
	if (s->app_header != NULL)
		ret = s->app_header(p, size, n, s->app_hdata);
	else if (s->app_hdata != NULL)
		/* libcurl's rule: no header function but HEADERDATA set means
		 * headers go to the write function with HEADERDATA. */
		ret = app_write_call(s, p, size, n, s->app_hdata);
	else
		ret = total; /* libcurl would not deliver headers anywhere */
	if (ret == total) {
		shim_resp_header(&s->resp, p, total);
		if (total <= 2 && (p[0] == '\r' || p[0] == '\n') && s->resp.status >= 200)
			feedback_headers(s);
	}
	return ret;
}

/* Wrap the application's write and header callbacks.  0, or -1 (nothing installed). */
int shim_hook_callbacks(struct hs *s)
{
	if (real.easy_setopt(s->key, CURLOPT_WRITEFUNCTION, wrap_write) != CURLE_OK ||
	    real.easy_setopt(s->key, CURLOPT_WRITEDATA, s) != CURLE_OK ||
	    real.easy_setopt(s->key, CURLOPT_HEADERFUNCTION, wrap_header) != CURLE_OK ||
	    real.easy_setopt(s->key, CURLOPT_HEADERDATA, s) != CURLE_OK) {
		s->hooked = 1;
		shim_unhook(s);
		shim_warn_once(C_ADMIT, "cannot install response callbacks; requests pass through ungoverned");
		return -1;
	}
	s->hooked = 1;
	return 0;
}

/* Put the application's callbacks back; free what the transfer used. */
void shim_unhook(struct hs *s)
{
	if (s->hooked) {
		s->hooked = 0;
		real.easy_setopt(s->key, CURLOPT_WRITEFUNCTION, s->app_write);
		real.easy_setopt(s->key, CURLOPT_WRITEDATA,
				 s->app_wdata_set ? s->app_wdata : (void *)stdout);
		real.easy_setopt(s->key, CURLOPT_HEADERFUNCTION, s->app_header);
		real.easy_setopt(s->key, CURLOPT_HEADERDATA, s->app_hdata);
	}
	if (s->replaying) {
		s->replaying = 0;
		real.easy_setopt(s->key, CURLOPT_READFUNCTION, s->app_read);
		real.easy_setopt(s->key, CURLOPT_READDATA,
				 s->app_rdata_set ? s->app_rdata : (void *)stdin);
		real.easy_setopt(s->key, CURLOPT_SEEKFUNCTION, s->app_seek);
		real.easy_setopt(s->key, CURLOPT_SEEKDATA, s->app_sdata);
		free(s->rbuf);
		s->rbuf = NULL;
		s->rlen = s->rpos = 0;
	}
	if (s->prereqd) {
		s->prereqd = 0;
		real.easy_setopt(s->key, CURLOPT_PREREQFUNCTION, s->app_prereq);
		real.easy_setopt(s->key, CURLOPT_PREREQDATA, s->app_prereq_data);
	}
	shim_route_restore(&s->route, s->key, s->postfields, s->postcopy, s->postcopy_len,
			   s->app_postsize);
	shim_resp_free(&s->resp);
}

static int request_was_sent(struct hs *s)
{
	long n = 0;
	if (real.easy_getinfo == NULL ||
	    real.easy_getinfo(s->key, CURLINFO_REQUEST_SIZE, &n) != CURLE_OK)
		return 1; /* unknown: assume the worst */
	return n > 0;
}

/* The transfer is over (or abandoned): settle, then restore the handle. */
void shim_finish(struct hs *s)
{
	if (!s->ticket_open) {
		shim_unhook(s);
		return;
	}
	s->ticket_open = 0;
	struct shim_resp *r = &s->resp;
	shim_resp_finish(r);
	long st = r->status;
	if (st == 429) {
		if (r->spend_cap)
			shl_spend_exhaust(g_shl);
		else
			shl_hold(g_shl, s->pool,
				 r->retry_after_ms >= 0 ? r->retry_after_ms * 1000000 : HOLD_DEFAULT_NS);
	}
	shl_usage u;
	memset(&u, 0, sizeof(u));
	const shl_cost *c = &s->req.cost;
	int cancel = 0;
	if (s->kind == SHIM_KIND_COUNT) {
		cancel = st == 0 && !request_was_sent(s);
	} else if (s->kind == SHIM_KIND_BATCH) {
		if (st >= 200 && st < 300) {
			/* The batch runs later; charge its estimate (documented). */
			u.input_tokens = c->input_tokens;
			u.cache_write_5m = c->cache_write_5m;
			u.cache_write_1h = c->cache_write_1h;
			u.output_tokens = c->max_tokens;
		} else {
			cancel = st == 0 && !request_was_sent(s);
		}
	} else if (r->usage_seen) {
		u = r->usage;
	} else if (st >= 200 && st < 300) {
		shim_warn_once(C_RESP, "a response's usage could not be read; such requests are charged "
				  "their estimate and max_tokens");
		u.input_tokens = c->input_tokens;
		u.cache_write_5m = c->cache_write_5m;
		u.cache_write_1h = c->cache_write_1h;
		u.output_tokens = c->max_tokens;
	} else if (st == 0) {
		if (!request_was_sent(s)) {
			cancel = 1;
		} else {
			u.input_tokens = c->input_tokens;
			u.cache_write_5m = c->cache_write_5m;
			u.cache_write_1h = c->cache_write_1h;
		}
	}
	/* else: an error status without usage: nothing billed, the request
	 * still counts for RPM (settle with zero usage). */
	if (cancel)
		shl_cancel(g_shl, &s->ticket);
	else
		shl_settle(g_shl, &s->ticket, &u);
	shim_unhook(s);
}
