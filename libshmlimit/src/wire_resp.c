/*
 * wire_resp.c - what the server said a request used, read from the bytes the
 * application receives.
 *
 * Every client of the shl_ex_* API (the preload shim's callbacks, the
 * Python transport, the Node fetch wrapper) hands this module every header
 * line and every body chunk AFTER the application has accepted it, so the
 * application sees exactly the bytes it would see without us; this module
 * only reads.  It knows two
 * body shapes: a JSON message (its top-level `usage`, or an error object),
 * kept in memory up to SHL_WIRE_BODY_MAX; and a Server-Sent-Events stream, parsed
 * line by line as it arrives, where chunks may split lines and events
 * anywhere.  In a stream, message_start carries the input and cache usage
 * and every message_delta carries CUMULATIVE counts: the last one wins, they
 * are never summed.  ping events are ignored; an error event (a 529
 * overloaded mid-stream) is noted, and so is the generated text of every
 * content_block_delta (in quarter tokens, wire_req.c's rule), so that a
 * stream cut before its final message_delta is charged the output it
 * showed.
 *
 * What it assumes of the server, and what it does when that is not so:
 *   - Chunk boundaries mean nothing: a body read in any chunks gives the
 *     same result as in one (the SSE sniff, CR / LF / CRLF line ends and the
 *     CURLOPT_HEADER header blocks are all tracked across chunks).
 *   - A usage value is a non-negative integer of at most SHL_WIRE_USAGE_MAX
 *     tokens, or null.  Anything else (a string, a negative or fractional
 *     number, 1e30), or a complete SSE event whose data is not JSON, or a
 *     stream line over SHL_WIRE_BODY_MAX, and no usage of that response is
 *     believed: usage_seen is 0 and the hooks settle as for a response
 *     without usage (for a 2xx: the estimate and max_tokens, the worst case
 *     the request was admitted for).  An absurd number never reaches the
 *     segment.
 *   - A stream cut short keeps what it reported so far; its unfinished last
 *     event is read if its data is complete JSON, else dropped.
 *   - Header values are read strictly (digits, optional whitespace); a
 *     retry-after beyond SHL_WIRE_RETRY_AFTER_MAX_MS is read as that much.
 *
 * It does not validate responses beyond that.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "wire.h"

static void reset_body(struct shl__resp *r);

void shl__resp_init(struct shl__resp *r)
{
	memset(r, 0, sizeof(*r));
	r->retry_after_ms = -1;
	r->ra_ms = r->ra_s = -1;
	for (int i = 0; i < SHL_NBUCKETS; i++)
		r->remaining[i] = r->limit[i] = -1;
	r->cw_split = 1;
}

void shl__resp_free(struct shl__resp *r)
{
	free(r->buf);
	free(r->ev);
	free(r->pend);
	r->buf = r->ev = r->pend = NULL;
	r->len = r->cap = r->ev_len = r->ev_cap = r->pend_len = r->pend_cap = 0;
	r->pending = 0;
}

/* Make room for n more bytes (and a NUL) in a buffer bounded by
 * SHL_WIRE_BODY_MAX; -1 when it would overflow or memory is short. */
static int reserve(char **buf, size_t len, size_t *cap, size_t n)
{
	if (n > SHL_WIRE_BODY_MAX || len > SHL_WIRE_BODY_MAX - n)
		return -1;
	if (len + n + 1 <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 4096;
	while (nc < len + n + 1)
		nc *= 2;
	char *nb = realloc(*buf, nc);
	if (nb == NULL)
		return -1;
	*buf = nb;
	*cap = nc;
	return 0;
}

static int grow_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
	if (reserve(buf, *len, cap, n) != 0)
		return -1;
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

/* ------------------------------------------------------------------ */
/* Headers                                                             */
/* ------------------------------------------------------------------ */

/*
 * A header value that is one decimal integer, optionally with a fraction
 * (`frac`), between optional spaces and tabs.  Returns the integer part,
 * saturated at INT64_MAX, plus 1 when the fraction is not zero (a wait
 * rounded up is always safe); -1 when the value is anything else.
 */
static int64_t header_num(const char *s, size_t n, int frac)
{
	size_t i = 0;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	while (n > i && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (i == n || s[i] < '0' || s[i] > '9')
		return -1;
	int64_t v = 0;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		v = v > (INT64_MAX - 9) / 10 ? INT64_MAX : v * 10 + (s[i] - '0');
	int up = 0;
	if (frac && i < n && s[i] == '.') {
		if (++i == n)
			return -1;
		for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			up |= s[i] != '0';
	}
	if (i != n)
		return -1;
	return up && v < INT64_MAX ? v + 1 : v;
}

static int hdr_is(const char *line, size_t len, const char *name, const char **val,
		  size_t *vlen)
{
	size_t n = strlen(name);
	if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
		return 0;
	*val = line + n + 1;
	*vlen = len - n - 1;
	return 1;
}

/* retry-after-ms wins over retry-after (it is the finer); both bounded. */
static void set_retry_after(struct shl__resp *r)
{
	int64_t ms = r->ra_ms;
	if (ms < 0 && r->ra_s >= 0)
		ms = r->ra_s > SHL_WIRE_RETRY_AFTER_MAX_MS / 1000 ? SHL_WIRE_RETRY_AFTER_MAX_MS
							       : r->ra_s * 1000;
	r->retry_after_ms = ms > SHL_WIRE_RETRY_AFTER_MAX_MS ? SHL_WIRE_RETRY_AFTER_MAX_MS : ms;
}

/* The status code of "HTTP/x SSS reason": three digits, 100..999, or 0. */
static long status_code(const char *line, size_t len)
{
	const char *sp = memchr(line, ' ', len);
	if (sp == NULL)
		return 0;
	size_t i = (size_t)(sp - line) + 1;
	if (len - i < 3 || (len - i > 3 && line[i + 3] != ' '))
		return 0;
	long st = 0;
	for (size_t k = i; k < i + 3; k++) {
		if (line[k] < '0' || line[k] > '9')
			return 0;
		st = st * 10 + (line[k] - '0');
	}
	return st >= 100 ? st : 0;
}

static void body_in(struct shl__resp *r, const char *p, size_t len);

void shl__resp_header(struct shl__resp *r, const char *line, size_t len)
{
	if (r->pending) {
		/* CURLOPT_HEADER: the chunk held back was this very line, or body. */
		r->pending = 0;
		if (r->pend_len != len || memcmp(r->pend, line, len) != 0)
			body_in(r, r->pend, r->pend_len);
	}
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* A new response (after a 100 Continue, a redirect, an
		 * authentication round): start over. */
		r->status = status_code(line, len);
		r->sse = 0;
		r->ra_ms = r->ra_s = r->retry_after_ms = -1;
		for (int i = 0; i < SHL_NBUCKETS; i++)
			r->remaining[i] = r->limit[i] = -1;
		reset_body(r);
		return;
	}
	const char *v;
	size_t vl;
	int64_t x;
	if (hdr_is(line, len, "content-type", &v, &vl)) {
		for (size_t i = 0; i + 17 <= vl; i++)
			if (strncasecmp(v + i, "text/event-stream", 17) == 0)
				r->sse = 1;
	} else if (hdr_is(line, len, "retry-after-ms", &v, &vl)) {
		/* A float of milliseconds; an unreadable value is ignored. */
		if ((x = header_num(v, vl, 1)) >= 0)
			r->ra_ms = x;
		set_retry_after(r);
	} else if (hdr_is(line, len, "retry-after", &v, &vl)) {
		/* Seconds; an HTTP date is not read (the hold default applies). */
		if ((x = header_num(v, vl, 0)) >= 0)
			r->ra_s = x;
		set_retry_after(r);
	} else if (hdr_is(line, len, "anthropic-ratelimit-requests-remaining", &v, &vl)) {
		if ((x = header_num(v, vl, 0)) >= 0)
			r->remaining[SHL_DIM_RPM] = x;
	} else if (hdr_is(line, len, "anthropic-ratelimit-input-tokens-remaining", &v, &vl)) {
		if ((x = header_num(v, vl, 0)) >= 0)
			r->remaining[SHL_DIM_ITPM] = x;
	} else if (hdr_is(line, len, "anthropic-ratelimit-output-tokens-remaining", &v, &vl)) {
		if ((x = header_num(v, vl, 0)) >= 0)
			r->remaining[SHL_DIM_OTPM] = x;
	} else if (hdr_is(line, len, "anthropic-ratelimit-requests-limit", &v, &vl)) {
		if ((x = header_num(v, vl, 0)) >= 0)
			r->limit[SHL_DIM_RPM] = x;
	} else if (hdr_is(line, len, "anthropic-ratelimit-input-tokens-limit", &v, &vl)) {
		if ((x = header_num(v, vl, 0)) >= 0)
			r->limit[SHL_DIM_ITPM] = x;
	} else if (hdr_is(line, len, "anthropic-ratelimit-output-tokens-limit", &v, &vl)) {
		if ((x = header_num(v, vl, 0)) >= 0)
			r->limit[SHL_DIM_OTPM] = x;
	}
}

/* ------------------------------------------------------------------ */
/* Usage                                                               */
/* ------------------------------------------------------------------ */

/* One usage field: absent or null keeps *dst (0); a non-negative integer
 * up to SHL_WIRE_USAGE_MAX is stored (0); anything else is -1. */
static int field(const cJSON *obj, const char *key, uint64_t *dst)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (x == NULL || cJSON_IsNull(x))
		return 0;
	if (!cJSON_IsNumber(x))
		return -1;
	double v = x->valuedouble;
	if (!(v >= 0 && v <= (double)SHL_WIRE_USAGE_MAX)) /* NaN fails too */
		return -1;
	if ((double)(uint64_t)v != v)
		return -1; /* a fraction of a token */
	*dst = (uint64_t)v;
	return 0;
}

int shl__usage_from_json(const cJSON *usage, shl_usage *u, int *split)
{
	if (!cJSON_IsObject(usage))
		return -EINVAL;
	shl_usage n = *u;
	int bad = 0, known = split == NULL || *split;
	bad |= field(usage, "input_tokens", &n.input_tokens);
	bad |= field(usage, "output_tokens", &n.output_tokens);
	bad |= field(usage, "cache_read_input_tokens", &n.cache_read);
	const cJSON *cc = cJSON_GetObjectItemCaseSensitive(usage, "cache_creation");
	if (cJSON_IsObject(cc)) {
		uint64_t total = 0; /* the sum of the breakdown: only checked */
		bad |= field(cc, "ephemeral_5m_input_tokens", &n.cache_write_5m);
		bad |= field(cc, "ephemeral_1h_input_tokens", &n.cache_write_1h);
		bad |= field(usage, "cache_creation_input_tokens", &total);
		known = 1;
	} else if (cc != NULL && !cJSON_IsNull(cc)) {
		bad = -1;
	} else {
		/* Without the breakdown (a stream's message_delta): the total.  The
		 * same total as the breakdown already read keeps the breakdown;
		 * another is taken as 5 min writes. */
		uint64_t total = UINT64_MAX;
		bad |= field(usage, "cache_creation_input_tokens", &total);
		if (total != UINT64_MAX && total != n.cache_write_5m + n.cache_write_1h) {
			n.cache_write_5m = total;
			n.cache_write_1h = 0;
			known = total == 0; /* the caller may know the split better */
		}
	}
	if (bad)
		return -EINVAL;
	*u = n;
	if (split != NULL)
		*split = known;
	return 0;
}

/* The model a message says answered it (a server-side fallback may answer
 * with another model than the request's). */
static void take_model(struct shl__resp *r, const cJSON *msg)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(msg, "model");
	size_t n = cJSON_IsString(m) ? strlen(m->valuestring) : 0;
	if (n > 0 && n <= SHL_PATTERN_MAX)
		memcpy(r->model, m->valuestring, n + 1);
}

/* A usage member of `obj`: read it, or remember it was not believable. */
static void take_usage(struct shl__resp *r, const cJSON *obj)
{
	const cJSON *u = cJSON_GetObjectItemCaseSensitive(obj, "usage");
	if (u == NULL || cJSON_IsNull(u))
		return;
	if (shl__usage_from_json(u, &r->usage, &r->cw_split) == 0)
		r->usage_seen = 1;
	else
		r->usage_bad = 1;
}

/* The generated text of a content_block_delta, in quarter tokens. */
static void take_delta(struct shl__resp *r, const cJSON *ev)
{
	static const char *const keys[] = {"text", "thinking", "partial_json"};
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "delta");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const cJSON *x = cJSON_GetObjectItemCaseSensitive(d, keys[i]);
		if (cJSON_IsString(x)) {
			uint64_t n = shl__text_units(x->valuestring);
			r->out_units = r->out_units > UINT64_MAX - n ? UINT64_MAX : r->out_units + n;
		}
	}
}

/* An error object (a JSON body's, or a stream's error event's). */
static void take_error(struct shl__resp *r, const cJSON *err)
{
	if (!cJSON_IsObject(err))
		return;
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
	if (cJSON_IsString(type) && strcmp(type->valuestring, "overloaded_error") == 0)
		r->overloaded = 1;
	const cJSON *det = cJSON_GetObjectItemCaseSensitive(err, "details");
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(det, "error_code");
	if (!cJSON_IsString(code))
		code = cJSON_GetObjectItemCaseSensitive(err, "error_code");
	if (cJSON_IsString(code) && strcmp(code->valuestring, "enforced_spend_limit_reached") == 0)
		r->spend_cap = 1;
}

/* ------------------------------------------------------------------ */
/* Body                                                                */
/* ------------------------------------------------------------------ */

/* Forget what was read of a body (a new response starts). */
static void reset_body(struct shl__resp *r)
{
	r->len = r->ev_len = 0;
	r->cr = 0;
	r->lines = 0;
	r->sniffed = 0;
	r->sniff_len = 0;
	r->overflow = 0;
	memset(&r->usage, 0, sizeof(r->usage));
	r->usage_seen = r->usage_bad = 0;
	r->cw_split = 1;
	r->final_seen = 0;
	r->out_units = 0;
	r->stream_error = r->overloaded = r->spend_cap = r->parse_failed = 0;
}

/* An SSE event is complete (`whole`: ended by its blank line). */
static void sse_dispatch(struct shl__resp *r, int whole)
{
	if (r->ev_len == 0)
		return;
	cJSON *j = cJSON_ParseWithLength(r->ev, r->ev_len);
	r->ev_len = 0;
	if (j == NULL) {
		r->parse_failed = 1;
		/* An event that was not cut short, yet is not JSON: the stream
		 * cannot be trusted to have told us its usage. */
		if (whole)
			r->usage_bad = 1;
		return;
	}
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
	const char *t = cJSON_IsString(type) ? type->valuestring : "";
	if (strcmp(t, "message_start") == 0) {
		take_usage(r, cJSON_GetObjectItemCaseSensitive(j, "message"));
		take_model(r, cJSON_GetObjectItemCaseSensitive(j, "message"));
	}
	else if (strcmp(t, "message_delta") == 0) {
		take_usage(r, j); /* cumulative: overwrite */
		if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "usage")))
			r->final_seen = 1;
	} else if (strcmp(t, "content_block_delta") == 0) {
		take_delta(r, j);
	} else if (strcmp(t, "error") == 0) {
		r->stream_error = 1;
		take_error(r, cJSON_GetObjectItemCaseSensitive(j, "error"));
	}
	cJSON_Delete(j);
}

static void sse_line(struct shl__resp *r, const char *line, size_t n)
{
	if (r->lines++ == 0 && n >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
		line += 3; /* a byte order mark opens the stream */
		n -= 3;
	}
	if (n == 0) {
		sse_dispatch(r, 1);
		return;
	}
	if (n >= 5 && memcmp(line, "data:", 5) == 0) {
		const char *d = line + 5;
		size_t dn = n - 5;
		if (dn > 0 && *d == ' ')
			d++, dn--;
		if ((r->ev_len > 0 && grow_append(&r->ev, &r->ev_len, &r->ev_cap, "\n", 1) != 0) ||
		    grow_append(&r->ev, &r->ev_len, &r->ev_cap, d, dn) != 0)
			r->overflow = 1;
	}
	/* "event:", "id:", "retry:" and ":" comments carry nothing we need:
	 * the event's type is repeated inside its JSON. */
}

/* SSE bytes: lines end in LF, CRLF or CR; a partial line waits in buf. */
static void sse_bytes(struct shl__resp *r, const char *p, size_t len)
{
	while (len > 0 && !r->overflow) {
		if (r->cr) {
			r->cr = 0;
			if (*p == '\n') {
				p++;
				len--;
				continue;
			}
		}
		size_t take = 0;
		while (take < len && p[take] != '\n' && p[take] != '\r')
			take++;
		if (grow_append(&r->buf, &r->len, &r->cap, p, take) != 0) {
			r->overflow = 1;
			return;
		}
		if (take == len)
			return;
		r->cr = p[take] == '\r';
		sse_line(r, r->buf, r->len);
		r->len = 0;
		p += take + 1;
		len -= take + 1;
	}
}

/* Body bytes, once it is known whether they are SSE. */
static void body_data(struct shl__resp *r, const char *p, size_t len)
{
	if (r->overflow || len == 0)
		return;
	if (r->sse)
		sse_bytes(r, p, len);
	else if (grow_append(&r->buf, &r->len, &r->cap, p, len) != 0)
		r->overflow = 1;
}

static void sniff_decide(struct shl__resp *r)
{
	r->sniffed = 1;
	if ((r->sniff_len >= 6 && memcmp(r->sniff, "event:", 6) == 0) ||
	    (r->sniff_len >= 5 && memcmp(r->sniff, "data:", 5) == 0))
		r->sse = 1; /* no content-type header said so: sniffed */
	body_data(r, r->sniff, r->sniff_len);
}

/* Body bytes as the application received them (header lines taken out). */
static void body_in(struct shl__resp *r, const char *p, size_t len)
{
	r->body_bytes += len;
	if (!r->sse && !r->sniffed) {
		size_t k = sizeof(r->sniff) - r->sniff_len;
		if (k > len)
			k = len;
		memcpy(r->sniff + r->sniff_len, p, k);
		r->sniff_len += k;
		p += k;
		len -= k;
		if (r->sniff_len < sizeof(r->sniff))
			return;
		sniff_decide(r);
	}
	body_data(r, p, len);
}

void shl__resp_body(struct shl__resp *r, const char *p, size_t len)
{
	if (len == 0)
		return;
	if (!r->header_in_body) {
		body_in(r, p, len);
		return;
	}
	/* CURLOPT_HEADER: libcurl writes each header line (one call, ending in
	 * LF) to the write callback and then to the header callback.  Hold
	 * such a chunk back until the next call says which it was. */
	if (r->pending) {
		r->pending = 0;
		body_in(r, r->pend, r->pend_len);
	}
	if (p[len - 1] == '\n' && reserve(&r->pend, 0, &r->pend_cap, len) == 0) {
		memcpy(r->pend, p, len);
		r->pend_len = len;
		r->pending = 1;
		return;
	}
	body_in(r, p, len);
}

void shl__resp_finish(struct shl__resp *r)
{
	if (r->done)
		return;
	r->done = 1;
	if (r->pending) {
		r->pending = 0;
		body_in(r, r->pend, r->pend_len);
	}
	if (!r->sse && !r->sniffed && r->sniff_len > 0)
		sniff_decide(r);
	if (r->overflow) {
		r->parse_failed = 1;
		if (r->sse)
			r->usage_bad = 1; /* the rest of the stream was not read */
	} else if (r->sse) {
		if (r->len > 0) {
			sse_line(r, r->buf, r->len); /* a last line without its end */
			r->len = 0;
		}
		sse_dispatch(r, 0);
	} else if (r->len > 0) {
		cJSON *j = cJSON_ParseWithLength(r->buf, r->len);
		if (j == NULL) {
			r->parse_failed = 1;
		} else {
			take_usage(r, j);
			take_model(r, j);
			take_error(r, cJSON_GetObjectItemCaseSensitive(j, "error"));
			cJSON_Delete(j);
		}
	}
	if (r->usage_bad || !r->usage_seen) {
		r->usage_seen = 0;
		r->cw_split = 1;
		memset(&r->usage, 0, sizeof(r->usage));
	}
}
