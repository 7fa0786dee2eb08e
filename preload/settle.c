/*
 * settle.c - reading the response as the application receives it, and
 * settling the admission with what the server reported.
 *
 * While a governed transfer runs, the shim's write and header callbacks sit
 * in front of the application's: each passes libcurl's bytes on unchanged
 * and feeds the transfer's exchange (libshmlimit's shl_ex_header and
 * shl_ex_body) only what the application accepted.  When the transfer ends
 * (perform returns, curl_multi_info_read reports it done, or the handle is
 * removed, reset or cleaned up), shim_finish hands it to shl_ex_finish,
 * which settles the ticket with the usage the server reported (or the
 * documented estimate when it reported none), cancels it when the request
 * was never sent, holds the pool after a 429 (its retry-after, or 1 s) or
 * marks the spend cap reached, and clamps the buckets to the remaining
 * headers (each token charged once); then the application's callbacks and
 * body are put back.  (A 429's retry-after already holds the pool when its
 * headers are over, so that held multi transfers started before the
 * application reads this one's completion see it: hold.c.)
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
		shl_ex_body(s->ex, p, size * n);
	return ret;
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
	if (ret == total)
		shl_ex_header(s->ex, p, total, NULL, 0);
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
	shl_ex_free(s->ex);
	s->ex = NULL;
	s->line = NULL;
}

static int request_was_sent(struct hs *s)
{
	long n = 0;
	if (real.easy_getinfo == NULL ||
	    real.easy_getinfo(s->key, CURLINFO_REQUEST_SIZE, &n) != CURLE_OK)
		return 1; /* unknown: assume the worst */
	return n > 0;
}

/* What finishing gave back moves the transfers placed after it (hold.c). */
static void gave(struct hs *s)
{
	int64_t g[3];
	if (s->line != NULL && shl_ex_given(s->ex, g) == 0)
		shim_multi_given(s, g);
}

/*
 * The transfer is over (or abandoned): settle (or cancel) by the rules of
 * shl_ex_finish, which also applies the server's feedback (a 429's hold,
 * the spend cap, the remaining headers), then restore the handle.
 */
void shim_finish(struct hs *s)
{
	shim_multi_unsent(s); /* done or removed before it was sent */
	if (!s->ticket_open) {
		shim_unhook(s);
		return;
	}
	s->ticket_open = 0;
	const shl_ticket *t = shl_ex_ticket(s->ex);
	uint64_t charged = t != NULL ? t->itpm : 0;
	if (shl_ex_finish(g_shl, s->ex, request_was_sent(s)) == SHL_EX_ESTIMATED)
		shim_warn_once(C_RESP, "a response's usage could not be read; such requests are charged "
				       "their estimate and max_tokens");
	shl_usage u;
	if (s->carried_by != NULL && shl_ex_usage(s->ex, &u) == 0)
		/* each count <= SHL_WIRE_USAGE_MAX: no overflow */
		shim_multi_settled(s, charged, u.input_tokens + u.cache_write_5m +
						       u.cache_write_1h + u.cache_read);
	s->carried_by = NULL;
	gave(s);
	shim_unhook(s);
}

/* A transfer that was never given to libcurl (held back, then removed or
 * refused): its place is cancelled, nothing charged. */
void shim_cancel(struct hs *s)
{
	if (s->ticket_open) {
		s->ticket_open = 0;
		shl_ex_finish(g_shl, s->ex, 0);
		gave(s);
	}
	shim_unhook(s);
}
