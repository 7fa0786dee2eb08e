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
 * Returns 1 governed (s->req, s->kind, s->model set), 0 pass through.
 */
int shim_prepare(struct hs *s);
/* Wait for admission of a prepared transfer.  Returns 1 admitted (ticket
 * open), 0 pass through (internal failure, one stderr line), -1 refused
 * (the refusal line printed). */
int shim_admit(struct hs *s);
/* The multi interface's CURLOPT_PREREQFUNCTION while a transfer is hooked. */
int shim_prereq_admit(void *ud, char *pip, char *lip, int pport, int lport);

/* Reading the response and settling (settle.c). */
/* Wrap the application's write and header callbacks.  0, or -1 (nothing installed). */
int shim_hook_callbacks(struct hs *s);
/* Put the application's callbacks back; free what the transfer used. */
void shim_unhook(struct hs *s);
/* The transfer is over (or abandoned): settle, then restore the handle. */
void shim_finish(struct hs *s);

#endif
