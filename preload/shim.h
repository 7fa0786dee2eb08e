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
 *   request.c   what a request body will cost
 *   response.c  what the server said it used
 *   route.c     opt-in routing across pools (SHMLIMIT_ROUTE)
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

/* What kind of Messages API request a URL path names. */
enum shim_kind {
	SHIM_KIND_NONE = 0,   /* not governed: passes through */
	SHIM_KIND_MESSAGES,   /* POST /v1/messages */
	SHIM_KIND_COUNT,      /* POST /v1/messages/count_tokens */
	SHIM_KIND_BATCH       /* POST /v1/messages/batches */
};

/* A request body, as far as admission needs it. */
struct shim_req {
	char model[SHL_PATTERN_MAX + 1];
	int stream;
	shl_cost cost; /* input estimate, cache-write candidates, max_tokens, batch */
};

/*
 * Parse a request body of `kind` (JSON, not necessarily NUL-terminated).
 * Returns 0 and fills `out`; -EINVAL when the body is not JSON or lacks a
 * model (or, for a batch, has no request with one).  The estimate is
 * documented in preload/README.md ("What a request is charged").
 */
int shim_req_parse(const char *body, size_t len, enum shim_kind kind,
		   struct shim_req *out);

/* Characters (UTF-8 code points) of a string; the unit of the estimate. */
uint64_t shim_chars(const char *s);

/*
 * Response state, fed by the header and write callbacks.  The reader only
 * reads: it never changes what the application receives.  Whatever the
 * chunks the body arrives in, the result is the same as for the body in
 * one chunk (fuzz/fuzz_sse.c checks it).
 */
struct shim_resp {
	long status;             /* last HTTP status line seen: 100..999, or 0 */
	int sse;                 /* content-type: text/event-stream, or sniffed */
	int64_t retry_after_ms;  /* -1 when absent; at most SHIM_RETRY_AFTER_MAX_MS */
	int64_t remaining[SHL_NBUCKETS]; /* anthropic-ratelimit-*-remaining, -1 absent */
	uint64_t body_bytes;     /* body bytes delivered to the application */

	/* JSON body (kept up to SHIM_BODY_MAX) or the SSE line being assembled */
	char *buf;
	size_t len, cap;
	int overflow;            /* body (or an SSE line or event) over SHIM_BODY_MAX */
	/* SSE: the data of the event being assembled */
	char *ev;
	size_t ev_len, ev_cap;
	int cr;                  /* SSE: the last line ended in CR (an LF may follow) */
	uint64_t lines;          /* SSE: lines read (a BOM is skipped on the first) */
	/* Without content-type, the first 6 body bytes say whether it is SSE. */
	int sniffed;
	size_t sniff_len;
	char sniff[6];
	/* retry-after-ms and retry-after, -1 absent (the last readable one) */
	int64_t ra_ms, ra_s;

	shl_usage usage;         /* all zero unless usage_seen */
	int usage_seen;          /* a usage object was read (and believed) */
	int usage_bad;           /* a usage value out of range or not a number, or a
				    complete SSE event not JSON: no usage is believed */
	int stream_error;        /* an SSE `error` event arrived */
	int spend_cap;           /* 429 error.details.error_code = enforced_spend_limit_reached */
	int parse_failed;        /* body was not what a Messages response looks like */
	int done;                /* shim_resp_finish has run */
	/* CURLOPT_HEADER: libcurl hands each header line to the write callback,
	 * then the same bytes to the header callback.  A body chunk is held
	 * back until the next call says whether it was that header line. */
	int header_in_body;
	int pending;
	char *pend;
	size_t pend_len, pend_cap;
};

#define SHIM_BODY_MAX (8u << 20)
/* A usage field above this many tokens (ten times the largest context
 * window) is not believed: the response's usage is then ignored. */
#define SHIM_USAGE_MAX 10000000u
/* A longer retry-after is read as this: one hour. */
#define SHIM_RETRY_AFTER_MAX_MS 3600000

void shim_resp_init(struct shim_resp *r);
void shim_resp_free(struct shim_resp *r);
/* One header line as libcurl delivers it (status line, header, or blank). */
void shim_resp_header(struct shim_resp *r, const char *line, size_t len);
/* A chunk of body bytes, exactly as the application accepted them. */
void shim_resp_body(struct shim_resp *r, const char *p, size_t len);
/* End of the transfer: parse a JSON body, end an SSE stream.  Afterwards
 * usage_seen says whether `usage` holds believable numbers. */
void shim_resp_finish(struct shim_resp *r);
/*
 * Read a usage object into `u`: fields present overwrite, absent or null
 * keep.  Returns 0, or -EINVAL (and `u` untouched) when `usage` is not an
 * object or a field is not a non-negative integer up to SHIM_USAGE_MAX.
 */
struct cJSON;
int shim_usage_from_json(const struct cJSON *usage, shl_usage *u);

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
	struct shim_req req;
	shl_ticket ticket;
	struct shim_resp resp;
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
