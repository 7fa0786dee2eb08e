/*
 * wire.h - the request and response readers behind the shl_ex_* API
 * (wire_req.c, wire_resp.c) and the learned estimate (learn.c).
 *
 * These are the library's internal entry points; exchange.c puts them
 * behind the public shl_ex_* functions, and the fuzz targets (fuzz/) call
 * them directly.  Nothing here touches the segment except learn.c's
 * functions, which take the handle.
 */
#ifndef SHL_WIRE_H
#define SHL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "shmlimit.h"

#define SHL_HIDDEN_W __attribute__((visibility("hidden")))

/* ------------------------------------------------------------------ */
/* Requests (wire_req.c)                                               */
/* ------------------------------------------------------------------ */

/* A request body, as far as admission needs it. */
struct shl__req {
	char model[SHL_PATTERN_MAX + 1];
	int stream;
	int has_1h;    /* a cache_control breakpoint with "ttl": "1h" */
	int has_5m;    /* a cache_control breakpoint with another ttl, after the last 1 h one */
	shl_cost cost; /* raw estimate (no learned ratio), cache-write candidates, max_tokens, batch */
};

/*
 * Parse a request body of `kind` (enum shl_ex_kind; JSON, not necessarily
 * NUL-terminated).  Returns 0 and fills `out`; -EINVAL when the body is not
 * JSON or lacks a model (or, for a batch, has no request with one); -EINVAL
 * for SHL_EX_NONE.  The estimate is documented in preload/README.md ("What
 * a request is charged") and at the top of wire_req.c.
 */
SHL_HIDDEN_W int shl__req_parse(const char *body, size_t len, int kind, struct shl__req *out);

/* Weight of a NUL-terminated UTF-8 string in quarter tokens (the unit of
 * the estimate: an ASCII character is 1, see wire_req.c). */
SHL_HIDDEN_W uint64_t shl__text_units(const char *s);

/* ------------------------------------------------------------------ */
/* Responses (wire_resp.c)                                             */
/* ------------------------------------------------------------------ */

#define SHL_WIRE_BODY_MAX (8u << 20)
/* A usage field above this many tokens (ten times the largest context
 * window) is not believed: the response's usage is then ignored. */
#define SHL_WIRE_USAGE_MAX 10000000u
/* A longer retry-after is read as this: one hour. */
#define SHL_WIRE_RETRY_AFTER_MAX_MS 3600000

/*
 * Response state, fed header line by header line and chunk by chunk.  The
 * reader only reads.  Whatever the chunks the body arrives in, the result
 * is the same as for the body in one chunk (fuzz/fuzz_sse.c checks it).
 */
struct shl__resp {
	long status;             /* last HTTP status line seen: 100..999, or 0 */
	int sse;                 /* content-type: text/event-stream, or sniffed */
	int64_t retry_after_ms;  /* -1 when absent; at most SHL_WIRE_RETRY_AFTER_MAX_MS */
	int64_t remaining[SHL_NBUCKETS]; /* anthropic-ratelimit-*-remaining, -1 absent */
	int64_t limit[SHL_NBUCKETS];     /* anthropic-ratelimit-*-limit, -1 absent */
	char model[SHL_PATTERN_MAX + 1]; /* the model that answered (a JSON message's
					    `model`, a stream's message_start), "" if
					    none or longer than a model id can be */
	uint64_t body_bytes;     /* body bytes delivered to the application */

	/* JSON body (kept up to SHL_WIRE_BODY_MAX) or the SSE line being assembled */
	char *buf;
	size_t len, cap;
	int overflow;            /* body (or an SSE line or event) over SHL_WIRE_BODY_MAX */
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
	int cw_split;            /* the cache writes' 5 min / 1 h split was given
				    (a cache_creation breakdown), or there were none */
	int final_seen;          /* SSE: a message_delta usage (the final count) arrived */
	uint64_t out_units;      /* SSE: quarter tokens of generated text seen in deltas */
	int stream_error;        /* an SSE `error` event arrived */
	int overloaded;          /* that error, or the body's, is overloaded_error */
	int spend_cap;           /* 429 error.details.error_code = enforced_spend_limit_reached */
	int parse_failed;        /* body was not what a Messages response looks like */
	int done;                /* shl__resp_finish has run */
	/* CURLOPT_HEADER: libcurl hands each header line to the write callback,
	 * then the same bytes to the header callback.  A body chunk is held
	 * back until the next call says whether it was that header line. */
	int header_in_body;
	int pending;
	char *pend;
	size_t pend_len, pend_cap;
};

SHL_HIDDEN_W void shl__resp_init(struct shl__resp *r);
SHL_HIDDEN_W void shl__resp_free(struct shl__resp *r);
/* One header line as an HTTP client delivers it (status line, header, or blank). */
SHL_HIDDEN_W void shl__resp_header(struct shl__resp *r, const char *line, size_t len);
/* A chunk of body bytes, exactly as the application accepted them. */
SHL_HIDDEN_W void shl__resp_body(struct shl__resp *r, const char *p, size_t len);
/* End of the transfer: parse a JSON body, end an SSE stream.  Afterwards
 * usage_seen says whether `usage` holds believable numbers. */
SHL_HIDDEN_W void shl__resp_finish(struct shl__resp *r);
/*
 * Read a usage object into `u`: fields present overwrite, absent or null
 * keep.  Returns 0, or -EINVAL (and `u` untouched) when `usage` is not an
 * object or a field is not a non-negative integer up to SHL_WIRE_USAGE_MAX.
 * `split` (may be NULL) is set to whether the 5 min / 1 h split of the
 * cache writes is known after this object.
 */
struct cJSON;
SHL_HIDDEN_W int shl__usage_from_json(const struct cJSON *usage, shl_usage *u, int *split);

/* ------------------------------------------------------------------ */
/* The learned estimate (learn.c)                                      */
/* ------------------------------------------------------------------ */

/* Ratios are fixed point: SHL_LEARN_ONE is 1.0. */
#define SHL_LEARN_ONE 4096u
#define SHL_LEARN_MIN (SHL_LEARN_ONE / 4)  /* a sample is clamped to 0.25 .. 8 */
#define SHL_LEARN_MAX (SHL_LEARN_ONE * 8)
/* The ratio a pool applies before its first sample: 1.25, erring high.  A
 * request reserved before anything was learned is released after the first
 * settlements and sent as estimated then: at 1.0, an English body would go
 * out about 12% under the server's count (the mock's tokenizer, issue 12),
 * into a bucket that holds only what the segment thinks.  The overshoot is
 * given back at settlement; it never makes a request inadmissible
 * (exchange.c caps it at the bucket). */
#define SHL_LEARN_PRIOR (SHL_LEARN_ONE + SHL_LEARN_ONE / 4)
/* Requests estimated below this many tokens teach nothing (fixed per-request
 * overheads would dominate their ratio). */
#define SHL_LEARN_MIN_TOKENS 64

struct shl;
/* The pool's learned ratio (SHL_LEARN_PRIOR when none yet) and its samples. */
SHL_HIDDEN_W uint32_t shl__learn_ratio(struct shl *h, int pool, uint64_t *samples);
/* One settlement: the server counted `server` input tokens (all of input,
 * cache writes and reads) for a request estimated at `raw` before the ratio. */
SHL_HIDDEN_W void shl__learn_add(struct shl *h, int pool, uint64_t raw, uint64_t server);
/* A raw count scaled by a ratio, rounded up, saturated at 2^62. */
SHL_HIDDEN_W uint64_t shl__learn_apply(uint64_t raw, uint32_t ratio);

#endif /* SHL_WIRE_H */
