/*
 * shim.h - declarations shared by the files of the LD_PRELOAD shim.
 *
 * The shim's modules:
 *   hooks.c     the interposed libcurl entry points, and nothing else
 *   init.c      process state: the real libcurl functions, the environment,
 *               the segment, one stderr line per cause
 *   handles.c   the table of per-handle state and the options it records
 *   admit.c     whether a transfer is governed, and its admission
 *   settle.c    reading the response as the application receives it, and
 *               settling the admission with what the server reported
 *   hold.c      multi transfers held back until their release, so that
 *               waiting never stops the loop that drives a multi handle
 *   route.c     opt-in routing across pools (SHMLIMIT_ROUTE)
 * What a request costs and what its response says are read, and the
 * settlement rules applied, by libshmlimit's request/response component
 * (shl_ex_*): no copy of them lives here.
 * Nothing here is exported from libshmlimit-preload.so: the build hides every
 * symbol but the hooks (preload/preload.map).
 */
#ifndef SHM_PRELOAD_SHIM_H
#define SHM_PRELOAD_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "shmlimit.h"

/*
 * What kind of Messages API request a URL names: libshmlimit's shl_ex_kind
 * of its path, once the host is a governed one.  Requests and responses are
 * read, and admissions settled, by libshmlimit's request/response component
 * (the shl_ex_* API, libshmlimit/src/wire_req.c, wire_resp.c, exchange.c),
 * the same code the Python and Node.js bindings call.
 */
enum shim_kind {
	SHIM_KIND_NONE = SHL_EX_NONE,
	SHIM_KIND_MESSAGES = SHL_EX_MESSAGES,
	SHIM_KIND_COUNT = SHL_EX_COUNT,
	SHIM_KIND_BATCH = SHL_EX_BATCH
};

/*
 * Routing across pools (route.c), opt-in with SHMLIMIT_ROUTE: a request
 * whose pool cannot take it is admitted on a later model of the preference
 * list and its body's "model" rewritten in a copy the shim owns.  Per
 * handle, used by the thread that uses the handle.
 */
struct shim_route {
	int active;         /* this transfer may be routed */
	int from;           /* the request's position in the list */
	const char *src;    /* the body as the application set it (not owned) */
	size_t src_len;
	size_t val_off;     /* the "model" value, quotes included, in src and body */
	size_t val_len;
	char *body;         /* the shim's copy, or NULL */
	size_t body_len;
	size_t slot_len;    /* bytes at val_off in body for the value and its padding */
	int padded;         /* body has room for any later model (multi interface) */
	int installed;      /* libcurl's CURLOPT_POSTFIELDS is body */
};

/* Read SHMLIMIT_ROUTE once; `setopt` is libcurl's real curl_easy_setopt.
 * Returns the number of models in the list (0: routing off). */
int shim_route_init(shl_t *h, void (*setopt)(void));
/* A governed request is about to start: may it be routed? */
void shim_route_plan(struct shim_route *rt, shl_t *h, int kind, int model,
		     const char *model_id, const char *body, size_t len);
/* Multi interface, before libcurl takes the body's length: install a copy
 * with room for any model the request may be routed to. */
int shim_route_reserve(struct shim_route *rt, void *curl);
/* shl_acquire, or, for a routable request, shl_route down the list and the
 * body rewritten when another model is chosen. */
int shim_route_admit(struct shim_route *rt, void *curl, shl_t *h, int model,
		     const shl_cost *cost, int64_t timeout_ns, shl_ticket *t,
		     shl_refusal *why);
/* The transfer is over: give libcurl the application's body back. */
void shim_route_restore(struct shim_route *rt, void *curl, const char *postfields,
			const char *postcopy, size_t postcopy_len, int64_t app_postsize);
void shim_route_free(struct shim_route *rt);


/* ------------------------------------------------------------------ */
/* The hook side: init.c, handles.c, admit.c, settle.c, hooks.c        */
/* ------------------------------------------------------------------ */

/* libcurl's own functions, resolved once in shim_init (init.c); a NULL
 * entry means this libcurl lacks it (the hook then fails as libcurl would). */
struct shim_real {
	CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
	CURLcode (*easy_perform)(CURL *);
	void (*easy_cleanup)(CURL *);
	void (*easy_reset)(CURL *);
	CURL *(*easy_duphandle)(CURL *);
	CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
	CURLMcode (*multi_add)(CURLM *, CURL *);
	CURLMcode (*multi_remove)(CURLM *, CURL *);
	CURLMsg *(*multi_info_read)(CURLM *, int *);
	CURLMcode (*multi_perform)(CURLM *, int *);
	CURLMcode (*multi_poll)(CURLM *, struct curl_waitfd *, unsigned int, int, int *);
	CURLMcode (*multi_wait)(CURLM *, struct curl_waitfd *, unsigned int, int, int *);
	CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
	CURLMcode (*multi_socket)(CURLM *, curl_socket_t, int *);
	CURLMcode (*multi_socket_all)(CURLM *, int *);
	CURLMcode (*multi_timeout)(CURLM *, long *);
	CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
	CURLMcode (*multi_cleanup)(CURLM *);
};

#define MAX_HOSTS 32

struct host {
	char name[256];
	long port;
};

/* Process state (init.c): written once under pthread_once, read-only after. */
extern struct shim_real real;
extern shl_t *g_shl;          /* NULL: pass everything through */
extern struct cds_lfht *g_ht; /* CURL * -> struct hs */
extern struct cds_lfht *g_mt; /* CURLM * -> struct shim_multi */
extern int64_t g_wait_ns;
extern struct host g_hosts[MAX_HOSTS];
extern int g_nhosts;

/* Resolve libcurl, read the environment, attach the segment: once. */
void shim_init(void);

/* One stderr line per cause and process. */
enum cause {
	C_NOSEG, C_ATTACH, C_ENV, C_BODY, C_READCB, C_MODEL, C_ADMIT, C_RESP,
	C_NOMEM, C_NOPREREQ, C_NCAUSES
};
__attribute__((format(printf, 2, 3)))
void shim_warn_once(enum cause c, const char *fmt, ...);

/* Per-handle state (handles.c). */
enum method { M_GET = 0, M_POST, M_MIME, M_PUT, M_HEAD };

/* Written and read only by the thread that currently uses the handle. */
struct hs {
	struct cds_lfht_node node;
	CURL *key;

	/* what the application set */
	char *url;
	char *customrequest;
	enum method method;
	const char *postfields;
	char *postcopy;       /* COPYPOSTFIELDS: our own copy */
	size_t postcopy_len;
	int64_t postsize;     /* -1: strlen */
	int64_t app_postsize; /* the last CURLOPT_POSTFIELDSIZE(_LARGE) set, -1 none */
	curl_read_callback app_read;
	void *app_rdata;
	int app_rdata_set;
	curl_write_callback app_write;
	void *app_wdata;
	int app_wdata_set;
	curl_write_callback app_header;
	void *app_hdata;
	curl_seek_callback app_seek;
	void *app_sdata;
	curl_prereq_callback app_prereq;
	void *app_prereq_data;
	char *errbuf;
	int header_in_body;   /* CURLOPT_HEADER */

	/* the transfer in progress */
	int hooked;           /* our write/header callbacks are installed */
	int replaying;        /* our read/seek callbacks are installed */
	int prereqd;          /* our pre-request callback is installed */
	int admit_failed;     /* refused: abort again if asked again */
	int ticket_open;
	enum shim_kind kind;
	int model, pool;
	shl_exchange *ex;     /* the request and its response (shl_ex_*), or NULL */
	shl_ticket ticket;
	char *rbuf;           /* read-ahead body */
	size_t rlen, rpos;
	int rdone;            /* read-ahead reached the end of the body */
	struct shim_route route; /* SHMLIMIT_ROUTE (route.c) */

	/* the multi interface (hold.c): a transfer held back until its release */
	int placed;           /* admitted at release, not in the pre-request callback */
	enum { HOLD_NONE = 0, HOLD_WAITING, HOLD_REFUSED, HOLD_REPORTED } hold;
	CURLM *held_by;       /* the multi the application added it to (hold != NONE) */
	struct hs *next_held; /* in held_by's list */
	int64_t release_at;   /* shl_now() scale: when it may be started */
	int64_t deadline;     /* SHMLIMIT_WAIT_MS after curl_multi_add_handle */
	CURLMsg msg;          /* HOLD_REFUSED: the CURLMSG_DONE curl_multi_info_read gives */
	int announced;        /* HOLD_REFUSED: a timeout of 0 was given for it once */
	int64_t release0;     /* the release its place in line gave (before any shift) */
	shl_place place;      /* shl_ex_place at its placing (hold.c) */
	struct shim_multi *limbo_in; /* given to libcurl, not yet sent (hold.c) */
	CURLM *carried_by;    /* its cost is in that multi's skew bound (hold.c) */
	struct hs *next_limbo;
	CURLM *line;          /* the multi it took its place in (hold.c, "Early release") */
	uint64_t seq;         /* its place's order in that multi */
};

/* The state of `c`, or NULL.  The pointer stays valid until the handle is
 * cleaned up, which only the thread using it may do. */
struct hs *hs_find(CURL *c);
/* The state of `c`, created empty if it has none; NULL without memory. */
struct hs *hs_get(CURL *c);
/* curl_easy_reset: forget every option (the entry stays in the table). */
void hs_forget_options(struct hs *s);
/* curl_easy_cleanup: remove from the table and free. */
void hs_delete(struct hs *s);
char *shim_strdup(const char *p);
/* Whether curl_easy_setopt should hs_record `opt`. */
int hs_tracked(CURLoption opt);
/*
 * Remember an option the shim cares about.  Returns 1 when the call must not
 * reach libcurl because our own callback is installed in its place (the new
 * value is used by our wrapper instead), else 0.
 */
int hs_record(struct hs *s, CURLoption opt, long lv, void *pv, void (*fv)(void),
	      curl_off_t ov);

/*
 * Deciding and admitting (admit.c).  shim_prepare: is the transfer governed
 * (a POST to a governed host and path, a readable body, a known model)?
 * Returns 1 governed (s->ex, s->kind, s->model set), 0 pass through.
 */
int shim_prepare(struct hs *s);
/* Wait for admission of a prepared transfer.  Returns 1 admitted (ticket
 * open), 0 pass through (internal failure, one stderr line), -1 refused
 * (the refusal line printed). */
int shim_admit(struct hs *s);
/* The multi interface's CURLOPT_PREREQFUNCTION while a transfer is hooked. */
int shim_prereq_admit(void *ud, char *pip, char *lip, int pport, int lport);

/*
 * The multi interface: take the transfer's place in line without waiting.
 * Returns 0 with the ticket open and s->release_at its release time (now or
 * later); 1 with no ticket, to try again at s->release_at; -1 refused (the
 * refusal line printed, s->admit_failed set); -2 an internal failure (one
 * stderr line; the transfer passes through ungoverned).
 */
int shim_place(struct hs *s, int64_t now);
/*
 * A held transfer's release time has come: check again what may have
 * changed while it waited (a server hold, the spend cap).  Returns 0 (ticket
 * open: start it now), 1 (held again until s->release_at), -1 refused,
 * -2 internal failure (pass through ungoverned), as shim_place.
 */
struct shim_multi;
int shim_start(struct hs *s, int64_t now, struct shim_multi *m);

/*
 * Holding multi transfers back (hold.c).  Per multi handle, used by the
 * thread that uses the multi handle.
 */
struct shim_multi;
/* curl_multi_add_handle of a prepared, hooked transfer: place it, then add
 * it to the real multi now or hold it back.  The application sees CURLM_OK
 * unless the real add fails. */
CURLMcode shim_multi_add(CURLM *multi, struct hs *s);
/* The multi's state, or NULL (nothing held, no timer wrapped). */
struct shim_multi *shim_multi_find(CURLM *multi);
/*
 * Start the held transfers whose release time has come; returns how many
 * were added to libcurl's multi handle.  Called after the calls that read
 * responses (perform, socket_action, info_read with nothing left), so that
 * what those responses said (a 429's hold) is known when a transfer starts.
 */
int shim_multi_release(struct shim_multi *m);
/* Transfers held back (not refused): added to libcurl's running count. */
int shim_multi_held(const struct shim_multi *m);
/* A poll or wait timeout (ms, -1: none) clamped to the next release. */
long shim_multi_clamp(struct shim_multi *m, long timeout_ms);
/* After a call that may have changed libcurl's timer: tell the
 * application's timer callback the shortest of it and the next release. */
void shim_multi_rearm(struct shim_multi *m);
/* curl_multi_info_read when libcurl has no message: a refused held
 * transfer's CURLMSG_DONE, or NULL.  *left: such messages still queued. */
CURLMsg *shim_multi_message(struct shim_multi *m, int *left);
int shim_multi_pending(const struct shim_multi *m);
/* A held transfer leaves its multi (remove_handle, easy cleanup or reset):
 * its ticket is cancelled, the application's callbacks put back. */
void shim_multi_drop(struct hs *s);
/* curl_multi_setopt of CURLMOPT_TIMERFUNCTION / TIMERDATA: 1 when the
 * shim took the call over (do not pass it on), 0 pass it on as is. */
int shim_multi_timer_setopt(CURLM *multi, CURLMoption opt, void (*fv)(void), void *pv,
			    CURLMcode *rc);
/* curl_multi_cleanup: drop every held transfer, forget the multi. */
void shim_multi_forget(CURLM *multi);
/* Whether `s` (due at s->release_at) must stay held in `m` now: a place
 * just taken (placed) takes the pool's skew; a late transfer of its pool
 * in limbo gates it.  0 with m NULL. */
int shim_multi_hold_back(struct shim_multi *m, struct hs *s, int64_t now, int placed);
/* The pre-request callback of a transfer hold.c gave to libcurl: it is
 * being sent now; what was placed after it moves by its lateness. */
void shim_multi_sent(struct hs *s, int64_t now);
/* A transfer left libcurl (done, removed, cleaned up) without being sent. */
void shim_multi_unsent(struct hs *s);
/* A transfer whose cost a skew bound carries has settled: `charged` input
 * units at admission, `counted` by the server. */
void shim_multi_settled(struct hs *s, uint64_t charged, uint64_t counted);
/* A transfer's settle or cancel gave back `given` ns (per bucket, as
 * shl_ex_given): the transfers of its pool placed after it in its multi,
 * still held, go that much sooner. */
void shim_multi_given(struct hs *s, const int64_t given[3]);

/* Reading the response and settling (settle.c). */
/* Wrap the application's write and header callbacks.  0, or -1 (nothing installed). */
int shim_hook_callbacks(struct hs *s);
/* Put the application's callbacks back; free what the transfer used. */
void shim_unhook(struct hs *s);
/* The transfer is over (or abandoned): settle, then restore the handle. */
void shim_finish(struct hs *s);
/* A transfer never given to libcurl (held back, then removed or refused):
 * its place cancelled, nothing charged; the handle restored. */
void shim_cancel(struct hs *s);

#endif
