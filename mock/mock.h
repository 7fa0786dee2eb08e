/*
 * mock.h - the pieces of shmlimit-mock, a stand-in for the Claude Messages
 * API that the shim's tests, the demo and the benchmark run against.
 *
 * The mock is deliberately independent of libshmlimit: it reads the same
 * configuration file but parses it itself and enforces the limits with its
 * own server-side token buckets, so a test that shows "the fleet caused no
 * 429" is checking the library against a second implementation, not against
 * itself.
 *
 * Modules (one per file):
 *   main.c    options, the listening socket, connection threads, shutdown
 *   http.c    reading HTTP/1.1 requests, writing responses, a string buffer
 *   limits.c  the configuration file, pools, model matching, token buckets
 *   api.c     the endpoints and the order of answering: /v1/messages,
 *             count_tokens, batches, /mock/...  (its helpers, declared in
 *             api.h: estimate.c the usage of a request, tokenize.c the
 *             server's token count of a text, reply.c the reply
 *             writers, fault.c fault scripting, stats.c the statistics)
 *
 * Everything returns 0 or a negative errno value unless its comment says
 * otherwise.  Nothing here is exported: the mock is a program, not a library.
 */
#ifndef SHMLIMIT_MOCK_H
#define SHMLIMIT_MOCK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* Bounds                                                               */
/* ------------------------------------------------------------------ */

#define MOCK_MAX_CONNS 64              /* concurrent connections (threads) */
#define MOCK_MAX_HEADER (64 * 1024)    /* request line + headers */
#define MOCK_MAX_HEADERS 100           /* header lines per request */
#define MOCK_MAX_BODY (8 * 1024 * 1024) /* larger bodies: 413 */
#define MOCK_IDLE_SECONDS 15           /* keep-alive idle / read timeout */

/* ------------------------------------------------------------------ */
/* Small helpers (http.c)                                               */
/* ------------------------------------------------------------------ */

/* A growable string.  On allocation failure `oom` is set and later appends
 * are ignored, so callers check once at the end. */
struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
};

void sbuf_add(struct sbuf *b, const void *data, size_t n);
void sbuf_puts(struct sbuf *b, const char *s);
void sbuf_printf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void sbuf_free(struct sbuf *b);

/* Parse a whole decimal string as a non-negative integer no larger than max.
 * Returns 0 and sets *out, or -EINVAL. */
int parse_u64(const char *s, uint64_t max, uint64_t *out);

int64_t mono_ns(void);   /* CLOCK_MONOTONIC, nanoseconds */
void sleep_ms(uint64_t ms);

/* ------------------------------------------------------------------ */
/* HTTP (http.c)                                                        */
/* ------------------------------------------------------------------ */

/* A client connection with its read buffer (requests may be pipelined). */
struct conn {
	int fd;
	char *buf;
	size_t cap, start, end;
	int64_t rx_ns;       /* mono_ns() scale: when the kernel received the last bytes read */
};

struct http_hdr {
	const char *name, *value;
};

struct http_req {
	char method[16];
	char path[512];      /* without the query string */
	char query[512];     /* after the '?', "" if none (longer ones are cut) */
	int minor;           /* HTTP/1.minor */
	int keep_alive;      /* the client allows another request after this */
	int nhdr;
	struct http_hdr hdr[MOCK_MAX_HEADERS];
	char *head;          /* owns the strings hdr[] point into */
	char *body;          /* NUL-terminated, body_len bytes before the NUL */
	size_t body_len;
	int64_t arrived_ns;  /* mono_ns() scale: the kernel's receipt of its last bytes */
};

/*
 * Read one request from `c`.  Returns 0 with `r` filled (release it with
 * http_req_free), or a negative errno: -ENODATA when the client closed the
 * connection before a new request (the normal end of keep-alive), -EAGAIN
 * on an idle timeout, -EMSGSIZE when the body is over MOCK_MAX_BODY (a 413
 * is owed), -E2BIG when the header block is too large (431), -EINVAL on a
 * malformed request (400), other values for socket errors.  After any error
 * the connection must be closed (after answering, where one is owed).
 */
int http_read_request(struct conn *c, struct http_req *r);
void http_req_free(struct http_req *r);

/* The value of a request header (case-insensitive name), or NULL. */
const char *http_header(const struct http_req *r, const char *name);

/* Write all of buf; returns 0 or a negative errno (never raises SIGPIPE). */
int http_send(int fd, const void *buf, size_t len);

/* How a body is put on the wire (mock/README.md, "Wire faults"). */
struct http_shape {
	int truncate;   /* only the first half of the body bytes as framed on the
			   wire is sent (the header announces the whole); the
			   caller then closes the connection */
	int gzip;       /* content-encoding: gzip */
	size_t chunk;   /* > 0: chunked transfer encoding, this many body bytes a
			   chunk; 0: content-length */
};

/*
 * Send a complete response.  `extra` holds additional header lines, each
 * ending in "\r\n" (may be NULL); `sh` may be NULL (content-length, as is).
 */
int http_respond(int fd, int status, const struct sbuf *extra,
		 const char *content_type, const char *body, size_t len,
		 int keep_alive, const struct http_shape *sh);

/* Append the gzip (RFC 1952) encoding of n bytes to out.  Check out->oom. */
void gzip_encode(const void *in, size_t n, struct sbuf *out);

const char *http_reason(int status);

/* ------------------------------------------------------------------ */
/* Limits (limits.c)                                                    */
/* ------------------------------------------------------------------ */

enum { DIM_RPM, DIM_ITPM, DIM_OTPM, NDIM };

/*
 * One pool's three buckets.  Concurrency: the fields above `mu` are written
 * once at load time (and by limits_strict), before any thread starts, and
 * only read afterwards; every field below `mu` is read and written only
 * with `mu` held (limit, burst and tol change under POST /mock/limits).
 */
struct pool {
	char name[64];
	int otpm_reserve;       /* 1: reserve max_tokens at start */
	int cache_reads_count;  /* 1: cache reads count toward ITPM */
	int strict;             /* --strict-interval */
	int burst_set[NDIM];    /* 1: the configuration file gave this burst */
	pthread_mutex_t mu;
	double limit[NDIM];     /* per minute; 0 = this dimension is unlimited */
	double burst[NDIM];     /* bucket capacity */
	double tol[NDIM];       /* clock-skew tolerance (see limits.c) */
	double level[NDIM];     /* tokens available now (< 0: in debt) */
	int64_t last_ns;        /* when level was last brought up to date */
	struct admission *adm;  /* the last MOCK_ADM_LOG admissions (a ring) */
	uint64_t nadm;          /* admissions ever: the next goes to adm[nadm % MOCK_ADM_LOG] */
};

/* One admission, for GET /mock/admissions: when (the request's arrival),
 * the RPM and ITPM levels just before it, and what it took of ITPM. */
#define MOCK_ADM_LOG 4096
struct admission {
	int64_t at_ns;
	double level_rpm, level_itpm, need_itpm;
};

struct model_rule {
	char *match;    /* the id, or the prefix without its '*' */
	size_t len;
	int prefix;     /* 1: "prefix*" */
	int pool;       /* index into limits.pools */
};

struct limits {
	int npools, nrules;
	struct pool *pools;
	struct model_rule *rules;
};

/* Load a configuration file.  On error returns a negative errno and writes
 * a one-line reason into err. */
int limits_load(const char *path, struct limits *out, char *err, size_t errlen);

/* --strict-interval: every bucket of every pool holds one interval's worth
 * (RPM: 1 request; ITPM / OTPM: one second's worth, rounded up) and has no
 * tolerance.  Call before any thread starts. */
void limits_strict(struct limits *l);

/*
 * POST /mock/limits: change pools' limits now, from a JSON body
 * {"pools":[{"name":"p","rpm":N,"itpm":N,"otpm":N,"burst":{...}}, ...]}
 * (absent fields keep their value).  All or nothing: returns 0 when every
 * entry was valid and applied, -ENOENT for an unknown pool, -EINVAL for
 * anything else malformed, with a one-line reason in err.
 */
int limits_change(struct limits *l, const char *body, size_t len, char *err,
		  size_t errlen);

/* The pools' current limits and bursts as JSON (malloc'd; NULL on OOM). */
char *limits_json(struct limits *l);

/* One pool's per-minute limits now (0: that dimension is unlimited). */
void limits_get(struct limits *l, int pool, double limit[NDIM]);

/* The pool a model id belongs to: an exact match first, else the longest
 * matching prefix.  Returns the pool index or -ENOENT. */
int limits_find(const struct limits *l, const char *model);

/* What a request needs from its pool at start. */
struct need {
	uint64_t itpm;          /* input + cache writes (+ cache reads if counted) */
	uint64_t otpm_reserve;  /* max_tokens in reserve mode, else 0 */
};

/*
 * Admit a request, all dimensions or none, as of `at` (mono_ns() scale:
 * the request's arrival; 0: now).  Returns 0 when admitted (the buckets are
 * charged), or -EAGAIN with *retry_after set to the whole
 * seconds (at least 1) until it could be admitted and *dim to the refusing
 * dimension.
 */
/* GET /mock/admissions (the JSON text, malloc'd; NULL: no memory). */
char *limits_admissions_json(const struct limits *l);
int pool_admit(struct pool *p, const struct need *n, int64_t at, uint64_t *retry_after,
	       int *dim);

/* Settle an admitted request's output: charge `out` tokens and give back a
 * reservation of `reserved` tokens. */
void pool_settle(struct pool *p, uint64_t reserved, uint64_t out);

/* Append the anthropic-ratelimit-* header lines for the pool's state now. */
/* The rate-limit headers of `p` into `h`; `over` (NULL: none): a remaining
 * value per dimension to send instead of the bucket's, -1 keeps it. */
void pool_headers(struct pool *p, struct sbuf *h, const double *over);

/* ------------------------------------------------------------------ */
/* The API (api.c) and the server (main.c)                              */
/* ------------------------------------------------------------------ */

enum fault {
	FAULT_NONE,
	FAULT_429,
	FAULT_SPEND_CAP,
	FAULT_529,
	FAULT_529_MIDSTREAM,
	FAULT_500,
	FAULT_TRUNCATE,
};

/* "429", "spend-cap", ... to a fault; -EINVAL for anything else. */
int fault_parse(const char *s);

struct mock_config {
	struct limits *limits;        /* NULL: no limits, any model */
	uint64_t latency_ms;          /* think time before each message reply */
	uint64_t chunk_delay_ms;      /* pause between streamed deltas */
	uint64_t fail_every;          /* 0: off */
	int fail_kind;                /* enum fault */
	uint64_t max_requests;
	uint64_t token_scale_milli;   /* --token-scale x 1000 (0: 1000) */
	int strict_interval;          /* --strict-interval */
	const char *serve_model;      /* --serve-model, or NULL */
};

void api_init(const struct mock_config *cfg);

/*
 * Answer one request on fd.  Returns 1 if the connection may carry another
 * request, 0 if it must be closed.
 */
int api_handle(int fd, struct http_req *r);

/* Answer a request that could not be read (status 400, 413 or 431). */
void api_reject(int fd, int status);

/* Ask the server to stop accepting and exit (async-signal-safe). */
enum stop_reason { STOP_SIGNAL = 1, STOP_SHUTDOWN, STOP_MAX_REQUESTS };
void server_request_stop(int reason);

#endif
