/*
 * shim.h - declarations shared by the files of the LD_PRELOAD shim.
 *
 * The shim is three modules: hooks.c (the interposed libcurl entry points,
 * per-handle state, admission and settlement), request.c (what a request
 * body will cost) and response.c (what the server said it used).  Nothing
 * here is exported from libshmlimit-preload.so: the build hides every symbol
 * but the hooks (preload/preload.map).
 */
#ifndef SHM_PRELOAD_SHIM_H
#define SHM_PRELOAD_SHIM_H

#include <stddef.h>
#include <stdint.h>

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

#endif
