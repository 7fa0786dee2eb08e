/*
 * shim.h - declarations shared by the files of the LD_PRELOAD shim.
 *
 * The shim is hooks.c (the interposed libcurl entry points, per-handle
 * state, admission and settlement) and route.c (SHMLIMIT_ROUTE); what a
 * request body will cost and what the server said it used are read by
 * libshmlimit's request/response component (shl_ex_*).  Nothing
 * here is exported from libshmlimit-preload.so: the build hides every symbol
 * but the hooks (preload/preload.map).
 */
#ifndef SHM_PRELOAD_SHIM_H
#define SHM_PRELOAD_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "shmlimit.h"

/*
 * The request and response readers are libshmlimit's (libshmlimit/src/
 * wire_req.c, wire_resp.c, behind the shl_ex_* API).  Until hooks.c calls
 * shl_ex_* itself, these names map its calls onto the library's readers;
 * there is no second copy of them in preload/.
 */
#include "wire.h"

enum shim_kind {
	SHIM_KIND_NONE = SHL_EX_NONE,
	SHIM_KIND_MESSAGES = SHL_EX_MESSAGES,
	SHIM_KIND_COUNT = SHL_EX_COUNT,
	SHIM_KIND_BATCH = SHL_EX_BATCH
};
#define shim_req shl__req
#define shim_resp shl__resp
#define shim_req_parse shl__req_parse
#define shim_resp_init shl__resp_init
#define shim_resp_free shl__resp_free
#define shim_resp_header shl__resp_header
#define shim_resp_body shl__resp_body
#define shim_resp_finish shl__resp_finish

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
