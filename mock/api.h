/*
 * api.h - what the modules that answer API requests share.
 *
 * The request path is cut along what each part is about, so that each can be
 * read (and replaced) on its own:
 *
 *   api.c       routing: the endpoints, validation, admission into the
 *               mock's buckets, the order in which the others are called
 *   estimate.c  the usage of a request: its text in prompt order, the token
 *               count, the prompt cache (what is read, written, uncached)
 *   tokenize.c  the server's own token count of a piece of text
 *   reply.c     reply writers: errors, a message as JSON or as SSE events
 *   fault.c     fault scripting: x-mock-fail faults and the wire faults
 *   stats.c     statistics: what the mock has seen, for GET /mock/stats
 *
 * Concurrency: requests are answered by many connection threads at once.
 * A struct ctx, struct reply and struct estimate belong to one request's
 * thread; the statistics and the prompt cache are shared and each guarded
 * by its own mutex inside its module; mock_cfg is written once by api_init
 * before any thread starts.
 */
#ifndef SHMLIMIT_MOCK_API_H
#define SHMLIMIT_MOCK_API_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "mock.h"

/* The server's options (api_init); read-only afterwards. */
extern const struct mock_config *mock_cfg;

/* ------------------------------------------------------------------ */
/* Statistics (stats.c)                                                 */
/* ------------------------------------------------------------------ */

/* One finished request, as the statistics see it. */
struct outcome {
	int status;
	const char *model;    /* NULL if the body had none */
	int pool;             /* -1: none */
	int own_429;          /* refused by the mock's buckets */
	int limited_dim;      /* with own_429: the DIM_* that refused it */
	int scripted_429;     /* x-mock-fail 429 or spend-cap */
	int complete;         /* a whole successful message: count its usage */
	uint64_t in, out, cw, cr;
};

/* Allocate the per-pool tallies (npools may be 0).  Called once, before any
 * request. */
void stats_init(int npools);
/* Add one finished request to the statistics. */
void stats_record(const struct outcome *o);
/* One count_tokens answered; one batch of n requests accepted. */
void stats_count_tokens(void);
void stats_batch(uint64_t n);
/* The statistics as JSON (malloc'd), or NULL when out of memory. */
char *stats_json(void);

/* ------------------------------------------------------------------ */
/* The usage of a request (estimate.c)                                  */
/* ------------------------------------------------------------------ */

#define MAX_BREAKPOINTS 64 /* further cache_control marks are ignored */

struct estimate {
	uint64_t tokens;  /* tokens so far, in prompt order, before scaling */
	uint64_t hash;    /* FNV-1a of the text so far */
	int nbp;
	struct {
		uint64_t key;     /* hash of the prefix */
		uint64_t tokens;  /* its length in tokens, before scaling */
		int ttl_1h;
	} bp[MAX_BREAKPOINTS];
};

struct usage {
	uint64_t in, out, cw5m, cw1h, read;
};

/* Walk the request's text in prompt order into e (which it resets). */
void estimate_request(const cJSON *req, struct estimate *e);
/* A count of tokens multiplied by --token-scale, rounded up. */
uint64_t estimate_scaled(uint64_t tokens);
/* The server's own token count of n bytes of UTF-8 text (tokenize.c). */
uint64_t tokenize(const char *s, size_t n);
/* Split the estimate into cache reads, 1 h and 5 min writes, and input. */
void estimate_classify(const struct estimate *e, struct usage *u);
/* The request was admitted: its prefixes are now cached (or refreshed). */
void estimate_commit_cache(const struct estimate *e);
/* Parse an x-mock-usage value "in,out,cw5m,cw1h,read"; 0 or -EINVAL. */
int usage_parse_header(const char *s, struct usage *u);
/* FNV-1a of n bytes (message and batch ids). */
uint64_t fnv(const char *s, size_t n);

/* ------------------------------------------------------------------ */
/* Reply writers (reply.c)                                              */
/* ------------------------------------------------------------------ */

/* Per-request context while answering. */
struct ctx {
	int fd;
	struct http_req *r;
	char request_id[48];
	struct sbuf h;          /* extra response headers */
	struct outcome o;
	/* Wire faults asked for by request headers (see parse_wire) */
	struct http_shape shape;  /* x-mock-encoding, x-mock-chunk-bytes */
	struct sbuf pad;          /* x-mock-pad-*, x-mock-bad-utf8 header lines */
	int bad_utf8;             /* x-mock-bad-utf8: the reply text too */
	const char *usage_raw;    /* x-mock-usage-raw */
	char *raw_body;           /* x-mock-body, decoded */
	size_t raw_len;
	const char *raw_type;     /* x-mock-content-type */
	double remaining[NDIM];   /* x-mock-remaining, -1: the mock's own value */
};

/* The parts of a message reply that do not depend on the framing. */
struct reply {
	const char *model;
	char id[48];
	struct usage u;
	const char *stop_reason;
	int pool;               /* -1: no limits */
	uint64_t reserved;      /* OTPM reserved at admission */
	int fault;
};

/* Not UTF-8: a lone 0xff and 0xfe, a lead byte without its continuation,
 * an encoded surrogate, an over-long 5-byte form (x-mock-bad-utf8). */
#define BAD_UTF8 "\xff\xfe \xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80 \x80"

/* Drop the extra headers gathered so far, keeping the request id. */
void reset_headers(struct ctx *c);
/* An error body of the API's shape (malloc'd; NULL when out of memory). */
char *error_body(const struct ctx *c, const char *type, const char *msg,
		 const char *error_code);
/* Send a body of `type`, shaped as the request asked (see fault_parse_wire);
 * returns keep-alive. */
int send_body(struct ctx *c, int status, const char *type, const char *body,
	      size_t len, int keep_alive, int truncate);
/* Send a JSON body (or a stock error if it is NULL; takes ownership);
 * returns keep-alive. */
int send_json(struct ctx *c, int status, char *body, int keep_alive, int truncate);
int send_error(struct ctx *c, int status, const char *type, const char *msg,
	       const char *error_code);
/* A message reply, as one JSON body or as an SSE stream (which also settles
 * the pool's OTPM once its last event is out); return keep-alive. */
int send_message_json(struct ctx *c, const struct reply *m);
int send_message_sse(struct ctx *c, const struct reply *m);

/* ------------------------------------------------------------------ */
/* Fault scripting (fault.c)                                            */
/* ------------------------------------------------------------------ */

/* Answer a scripted fault that happens before any generation (429,
 * spend-cap, 529, 500).  Returns keep-alive, or -1 if `fault` is not one of
 * those. */
int fault_scripted(struct ctx *c, int fault);
/* Read the wire-fault request headers into c.  Returns NULL, or the message
 * of a 400 for a malformed value. */
const char *fault_parse_wire(struct ctx *c);

/* ------------------------------------------------------------------ */
/* The Rate Limits API (ratelimits.c)                                   */
/* ------------------------------------------------------------------ */

/* GET /v1/organizations/rate_limits; returns keep-alive. */
int ratelimits_handle(struct ctx *c);
/* POST /mock/rate-limits-fault: how that endpoint misbehaves from now on. */
int ratelimits_fault(struct ctx *c);

#endif
