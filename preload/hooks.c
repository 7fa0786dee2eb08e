/*
 * hooks.c - the interposed libcurl entry points of libshmlimit-preload.so.
 *
 * Loaded with LD_PRELOAD, the shim puts every Claude Messages API request a
 * libcurl program makes through the shared limiter, without the program
 * knowing.  This file holds the exported hooks and nothing else; each calls
 * shim_init() (init.c) and then:
 *   - curl_easy_setopt records the options that say what a transfer will be
 *     (handles.c) and passes the call on;
 *   - curl_easy_perform and curl_multi_add_handle decide whether the
 *     transfer is governed and wrap the application's callbacks (admit.c,
 *     settle.c); curl_easy_perform waits for admission before anything is
 *     sent; curl_multi_add_handle takes a place in line and holds the
 *     transfer back until its release (hold.c), never waiting;
 *   - curl_multi_perform, poll, wait, timeout, socket_action (socket,
 *     socket_all), info_read, setopt (the timer callback) and cleanup
 *     start held transfers when their time comes and keep the
 *     application's loop going meanwhile (hold.c);
 *   - curl_easy_perform's return, curl_multi_info_read reporting a transfer
 *     done, curl_multi_remove_handle, curl_easy_reset and curl_easy_cleanup
 *     settle it (settle.c);
 *   - curl_easy_duphandle copies the recorded options, not our callbacks.
 *
 * What it assumes
 *   - libcurl calls its own exported functions through the PLT: inside
 *     curl_easy_perform it calls curl_multi_add_handle, curl_multi_info_read
 *     and curl_multi_remove_handle on a private multi handle, and those
 *     calls land here too.  A thread-local marker lets them pass straight
 *     through.
 *
 * What it deliberately does not do
 *   - It never changes a byte the application sends or receives (unless
 *     SHMLIMIT_ROUTE asks for routing: route.c), and never
 *     makes a request fail for an internal reason: without a segment, with
 *     an incompatible one, with a body or response it cannot read, the
 *     request runs exactly as without the shim (one stderr line per cause).
 *
 * Symbols: only the hooks are exported (preload/preload.map); libshmlimit
 * is linked in statically and hidden.
 */
#define CURL_DISABLE_TYPECHECK 1
#define CURL_DISABLE_DEPRECATION 1  /* curl_multi_socket, curl_multi_socket_all */
#define CURL_ALLOW_OLD_MULTI_SOCKET 1 /* curl_multi_socket is a function, not a macro */
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "shim.h"

#define HOOK __attribute__((visibility("default")))

/* Inside our curl_easy_perform: the handle, and libcurl's private multi. */
static __thread CURL *tl_easy;
static __thread CURLM *tl_easy_multi;

/* ------------------------------------------------------------------ */
/* The hooks                                                           */
/* ------------------------------------------------------------------ */

HOOK CURLcode curl_easy_setopt(CURL *curl, CURLoption opt, ...)
{
	long lv = 0;
	void *pv = NULL;
	void (*fv)(void) = NULL;
	curl_off_t ov = 0;
	int type;
	va_list ap;
	/* Decode the argument by option-number range, as libcurl does. */
	va_start(ap, opt);
	if (opt < CURLOPTTYPE_OBJECTPOINT) {
		lv = va_arg(ap, long);
		type = 0;
	} else if (opt < CURLOPTTYPE_FUNCTIONPOINT) {
		pv = va_arg(ap, void *);
		type = 1;
	} else if (opt < CURLOPTTYPE_OFF_T) {
		fv = va_arg(ap, void (*)(void));
		type = 2;
	} else if (opt < CURLOPTTYPE_BLOB) {
		ov = va_arg(ap, curl_off_t);
		type = 3;
	} else {
		pv = va_arg(ap, void *); /* struct curl_blob * */
		type = 1;
	}
	va_end(ap);

	shim_init();
	if (real.easy_setopt == NULL)
		return CURLE_FAILED_INIT;
	if (g_shl != NULL && curl != NULL && hs_tracked(opt)) {
		struct hs *s = hs_get(curl);
		if (s != NULL && hs_record(s, opt, lv, pv, fv, ov))
			return CURLE_OK; /* our wrapper stays; it uses the new value */
	}
	switch (type) {
	case 0: return real.easy_setopt(curl, opt, lv);
	case 1: return real.easy_setopt(curl, opt, pv);
	case 2: return real.easy_setopt(curl, opt, fv);
	default: return real.easy_setopt(curl, opt, ov);
	}
}

HOOK CURLcode curl_easy_perform(CURL *curl)
{
	shim_init();
	if (real.easy_perform == NULL)
		return CURLE_FAILED_INIT;
	if (g_shl == NULL || curl == NULL || curl == tl_easy)
		return real.easy_perform(curl);
	struct hs *s = hs_find(curl);
	int pr = s != NULL ? shim_prepare(s) : 0;
	if (pr < 0 || (pr > 0 && shim_hook_callbacks(s) == 0 && shim_admit(s) < 0)) {
		shim_unhook(s);
		return CURLE_ABORTED_BY_CALLBACK;
	}
	CURL *prev = tl_easy;
	CURLM *prevm = tl_easy_multi;
	tl_easy = curl;
	tl_easy_multi = NULL;
	CURLcode rc = real.easy_perform(curl);
	tl_easy = prev;
	tl_easy_multi = prevm;
	if (s != NULL)
		shim_finish(s);
	return rc;
}

HOOK CURLMcode curl_multi_add_handle(CURLM *multi, CURL *curl)
{
	shim_init();
	if (real.multi_add == NULL)
		return CURLM_INTERNAL_ERROR;
	if (g_shl == NULL || curl == NULL)
		return real.multi_add(multi, curl);
	if (curl == tl_easy) {
		tl_easy_multi = multi; /* libcurl's private multi of curl_easy_perform */
		return real.multi_add(multi, curl);
	}
	struct hs *s = hs_find(curl);
	if (s != NULL && s->held_by != NULL)
		return CURLM_ADDED_ALREADY; /* held back, so in a multi already */
	if (s == NULL || s->hooked || s->prereqd)
		return real.multi_add(multi, curl);
	int pr = shim_prepare(s);
	if (pr < 0 && real.easy_setopt(curl, CURLOPT_PREREQFUNCTION, shim_prereq_admit) == CURLE_OK &&
	    real.easy_setopt(curl, CURLOPT_PREREQDATA, s) == CURLE_OK) {
		/* Refused by policy: it fails before a byte is sent. */
		s->prereqd = 1;
		return real.multi_add(multi, curl);
	}
	if (pr > 0 && shim_hook_callbacks(s) == 0) {
		if (real.easy_setopt(curl, CURLOPT_PREREQFUNCTION, shim_prereq_admit) == CURLE_OK &&
		    real.easy_setopt(curl, CURLOPT_PREREQDATA, s) == CURLE_OK) {
			s->prereqd = 1;
			shim_route_reserve(&s->route, curl);
			/* A place in line now; started now, or held back (hold.c). */
			return shim_multi_add(multi, s);
		}
		shim_warn_once(C_NOPREREQ, "this libcurl has no CURLOPT_PREREQFUNCTION (7.80.0); "
					   "multi transfers pass through ungoverned");
		shim_unhook(s);
	}
	CURLMcode mc = real.multi_add(multi, curl);
	if (mc != CURLM_OK)
		shim_unhook(s);
	return mc;
}

/* Is `multi` libcurl's private multi handle of our curl_easy_perform? */
static int private_multi(CURLM *multi)
{
	return tl_easy != NULL && multi == tl_easy_multi;
}

/* The shim's state of a multi the application drives, or NULL. */
static struct shim_multi *app_multi(CURLM *multi)
{
	return g_shl == NULL || private_multi(multi) ? NULL : shim_multi_find(multi);
}

HOOK CURLMsg *curl_multi_info_read(CURLM *multi, int *msgs_in_queue)
{
	shim_init();
	if (real.multi_info_read == NULL)
		return NULL;
	int q = 0;
	CURLMsg *msg = real.multi_info_read(multi, &q);
	if (msgs_in_queue != NULL)
		*msgs_in_queue = q;
	if (g_shl == NULL || private_multi(multi))
		return msg;
	struct shim_multi *m = shim_multi_find(multi);
	if (msg == NULL && m != NULL) {
		/* libcurl has nothing more: a transfer refused while held back */
		msg = shim_multi_message(m, &q);
		if (msg == NULL)
			shim_multi_release(m);
		if (msgs_in_queue != NULL)
			*msgs_in_queue = q;
		return msg;
	}
	if (msgs_in_queue != NULL && m != NULL)
		*msgs_in_queue = q + shim_multi_pending(m);
	if (msg == NULL || msg->msg != CURLMSG_DONE)
		return msg;
	struct hs *s = hs_find(msg->easy_handle);
	if (s != NULL && (s->ticket_open || s->hooked || s->replaying || s->prereqd))
		shim_finish(s);
	return msg;
}

HOOK CURLMcode curl_multi_remove_handle(CURLM *multi, CURL *curl)
{
	shim_init();
	if (real.multi_remove == NULL)
		return CURLM_INTERNAL_ERROR;
	struct hs *s = NULL;
	if (g_shl != NULL && curl != NULL && curl != tl_easy) {
		s = hs_find(curl);
		if (s != NULL && s->held_by != NULL && s->held_by == multi) {
			/* held back: never in libcurl's multi; cancelled here */
			shim_multi_drop(s);
			shim_multi_rearm(shim_multi_find(multi));
			return CURLM_OK;
		}
	}
	CURLMcode mc = real.multi_remove(multi, curl);
	if (s != NULL && (s->ticket_open || s->hooked || s->replaying || s->prereqd))
		shim_finish(s); /* removed before (or without) reading its completion */
	return mc;
}

/*
 * The calls that drive a multi handle.  perform and socket_action start the
 * held transfers whose time has come once libcurl has read what arrived
 * (they run from the next call on) and count them, and those still held, as
 * running; poll, wait and curl_multi_timeout wait no longer than until the
 * next release.
 */
HOOK CURLMcode curl_multi_perform(CURLM *multi, int *running_handles)
{
	shim_init();
	if (real.multi_perform == NULL)
		return CURLM_INTERNAL_ERROR;
	CURLMcode mc = real.multi_perform(multi, running_handles);
	struct shim_multi *m = app_multi(multi);
	int started = shim_multi_release(m); /* after the responses were read */
	if (m != NULL && running_handles != NULL)
		*running_handles += started + shim_multi_held(m);
	return mc;
}

HOOK CURLMcode curl_multi_poll(CURLM *multi, struct curl_waitfd extra_fds[],
			       unsigned int extra_nfds, int timeout_ms, int *numfds)
{
	shim_init();
	if (real.multi_poll == NULL)
		return CURLM_INTERNAL_ERROR;
	struct shim_multi *m = app_multi(multi);
	if (m != NULL) /* no longer than until the next release */
		timeout_ms = (int)shim_multi_clamp(m, timeout_ms);
	return real.multi_poll(multi, extra_fds, extra_nfds, timeout_ms, numfds);
}

HOOK CURLMcode curl_multi_wait(CURLM *multi, struct curl_waitfd extra_fds[],
			       unsigned int extra_nfds, int timeout_ms, int *numfds)
{
	shim_init();
	if (real.multi_wait == NULL)
		return CURLM_INTERNAL_ERROR;
	struct shim_multi *m = app_multi(multi);
	if (m == NULL)
		return real.multi_wait(multi, extra_fds, extra_nfds, timeout_ms, numfds);
	timeout_ms = (int)shim_multi_clamp(m, timeout_ms); /* no longer than until the next release */
	int n = 0;
	CURLMcode mc = real.multi_wait(multi, extra_fds, extra_nfds, timeout_ms, &n);
	if (numfds != NULL)
		*numfds = n;
	/* libcurl's curl_multi_wait returns at once when it has nothing to wait
	 * on, as when everything is held back here: then wait for the release
	 * (as curl_multi_poll would), unless libcurl has a timer of its own. */
	long lib = 0;
	if (mc == CURLM_OK && n == 0 && extra_nfds == 0 && timeout_ms > 0 &&
	    shim_multi_held(m) > 0 && real.multi_timeout != NULL &&
	    real.multi_timeout(multi, &lib) == CURLM_OK && lib < 0)
		poll(NULL, 0, (int)shim_multi_clamp(m, timeout_ms));
	return mc;
}

HOOK CURLMcode curl_multi_timeout(CURLM *multi, long *timeout_ms)
{
	shim_init();
	if (real.multi_timeout == NULL)
		return CURLM_INTERNAL_ERROR;
	CURLMcode mc = real.multi_timeout(multi, timeout_ms);
	struct shim_multi *m = app_multi(multi);
	if (mc == CURLM_OK && m != NULL && timeout_ms != NULL)
		*timeout_ms = shim_multi_clamp(m, *timeout_ms);
	return mc;
}

HOOK CURLMcode curl_multi_socket_action(CURLM *multi, curl_socket_t sockfd, int ev_bitmask,
					int *running_handles)
{
	shim_init();
	if (real.multi_socket_action == NULL)
		return CURLM_INTERNAL_ERROR;
	CURLMcode mc = real.multi_socket_action(multi, sockfd, ev_bitmask, running_handles);
	struct shim_multi *m = app_multi(multi);
	int started = shim_multi_release(m); /* after the responses were read */
	if (m != NULL && running_handles != NULL)
		*running_handles += started + shim_multi_held(m);
	shim_multi_rearm(m);
	return mc;
}

/* The deprecated forms of curl_multi_socket_action, hooked the same way. */
HOOK CURLMcode curl_multi_socket(CURLM *multi, curl_socket_t sockfd, int *running_handles)
{
	shim_init();
	if (real.multi_socket == NULL)
		return CURLM_INTERNAL_ERROR;
	CURLMcode mc = real.multi_socket(multi, sockfd, running_handles);
	struct shim_multi *m = app_multi(multi);
	int started = shim_multi_release(m); /* after the responses were read */
	if (m != NULL && running_handles != NULL)
		*running_handles += started + shim_multi_held(m);
	shim_multi_rearm(m);
	return mc;
}

HOOK CURLMcode curl_multi_socket_all(CURLM *multi, int *running_handles)
{
	shim_init();
	if (real.multi_socket_all == NULL)
		return CURLM_INTERNAL_ERROR;
	CURLMcode mc = real.multi_socket_all(multi, running_handles);
	struct shim_multi *m = app_multi(multi);
	int started = shim_multi_release(m); /* after the responses were read */
	if (m != NULL && running_handles != NULL)
		*running_handles += started + shim_multi_held(m);
	shim_multi_rearm(m);
	return mc;
}

HOOK CURLMcode curl_multi_setopt(CURLM *multi, CURLMoption opt, ...)
{
	long lv = 0;
	void *pv = NULL;
	void (*fv)(void) = NULL;
	curl_off_t ov = 0;
	int type;
	va_list ap;
	/* Decode the argument by option-number range, as libcurl does. */
	va_start(ap, opt);
	if (opt < CURLOPTTYPE_OBJECTPOINT) {
		lv = va_arg(ap, long);
		type = 0;
	} else if (opt < CURLOPTTYPE_FUNCTIONPOINT) {
		pv = va_arg(ap, void *);
		type = 1;
	} else if (opt < CURLOPTTYPE_OFF_T) {
		fv = va_arg(ap, void (*)(void));
		type = 2;
	} else {
		ov = va_arg(ap, curl_off_t);
		type = 3;
	}
	va_end(ap);

	shim_init();
	if (real.multi_setopt == NULL)
		return CURLM_INTERNAL_ERROR;
	CURLMcode rc;
	if (g_shl != NULL && multi != NULL && !private_multi(multi) &&
	    (opt == CURLMOPT_TIMERFUNCTION || opt == CURLMOPT_TIMERDATA) &&
	    shim_multi_timer_setopt(multi, opt, fv, pv, &rc))
		return rc;
	switch (type) {
	case 0: return real.multi_setopt(multi, opt, lv);
	case 1: return real.multi_setopt(multi, opt, pv);
	case 2: return real.multi_setopt(multi, opt, fv);
	default: return real.multi_setopt(multi, opt, ov);
	}
}

HOOK CURLMcode curl_multi_cleanup(CURLM *multi)
{
	shim_init();
	if (g_shl != NULL && multi != NULL && !private_multi(multi))
		shim_multi_forget(multi); /* held transfers are cancelled */
	if (real.multi_cleanup == NULL)
		return CURLM_INTERNAL_ERROR;
	return real.multi_cleanup(multi);
}

HOOK void curl_easy_cleanup(CURL *curl)
{
	shim_init();
	struct hs *s = (g_shl != NULL && curl != NULL) ? hs_find(curl) : NULL;
	if (s != NULL && s->held_by != NULL)
		shim_multi_drop(s); /* cleaned up while held back: cancelled */
	if (s != NULL)
		shim_finish(s);
	if (real.easy_cleanup != NULL)
		real.easy_cleanup(curl);
	if (s != NULL)
		hs_delete(s);
}

HOOK void curl_easy_reset(CURL *curl)
{
	shim_init();
	struct hs *s = (g_shl != NULL && curl != NULL) ? hs_find(curl) : NULL;
	if (s != NULL && s->held_by != NULL)
		shim_multi_drop(s);
	if (s != NULL)
		shim_finish(s);
	if (real.easy_reset != NULL)
		real.easy_reset(curl);
	if (s != NULL)
		hs_forget_options(s);
}

HOOK CURL *curl_easy_duphandle(CURL *curl)
{
	shim_init();
	if (real.easy_duphandle == NULL)
		return NULL;
	CURL *n = real.easy_duphandle(curl);
	if (n == NULL || g_shl == NULL)
		return n;
	struct hs *s = hs_find(curl);
	if (s == NULL)
		return n;
	struct hs *d = hs_get(n);
	if (d == NULL)
		return n;
	d->url = shim_strdup(s->url);
	d->customrequest = shim_strdup(s->customrequest);
	d->method = s->method;
	d->postsize = s->postsize;
	d->app_postsize = s->app_postsize;
	if (s->postcopy != NULL) {
		/* libcurl copied its COPYPOSTFIELDS buffer; so do we. */
		d->postcopy = malloc(s->postcopy_len + 1);
		if (d->postcopy != NULL) {
			memcpy(d->postcopy, s->postcopy, s->postcopy_len + 1);
			d->postcopy_len = s->postcopy_len;
			d->postfields = d->postcopy;
		}
	} else {
		d->postfields = s->postfields;
	}
	d->app_read = s->app_read;
	d->app_rdata = s->app_rdata;
	d->app_rdata_set = s->app_rdata_set;
	d->app_seek = s->app_seek;
	d->app_sdata = s->app_sdata;
	d->app_write = s->app_write;
	d->app_wdata = s->app_wdata;
	d->app_wdata_set = s->app_wdata_set;
	d->app_header = s->app_header;
	d->app_hdata = s->app_hdata;
	d->app_prereq = s->app_prereq;
	d->app_prereq_data = s->app_prereq_data;
	d->errbuf = s->errbuf;
	d->header_in_body = s->header_in_body;
	/* If the original is mid-transfer, the copy got our callbacks: undo. */
	d->hooked = s->hooked;
	d->replaying = s->replaying;
	d->prereqd = s->prereqd;
	d->route.installed = s->route.installed; /* the copy points at our body: undo */
	shim_unhook(d);
	return n;
}
