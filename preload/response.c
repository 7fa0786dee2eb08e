/*
 * response.c - what the server said a request used, read from the bytes the
 * application receives.
 *
 * The hooks hand this module every header line and every body chunk AFTER
 * the application has accepted it, so the application sees exactly the
 * bytes it would see without the shim; this module only reads.  It knows two
 * body shapes: a JSON message (its top-level `usage`, or an error object),
 * kept in memory up to SHIM_BODY_MAX; and a Server-Sent-Events stream, parsed
 * line by line as it arrives, where chunks may split lines and events
 * anywhere.  In a stream, message_start carries the input and cache usage
 * and every message_delta carries CUMULATIVE counts: the last one wins, they
 * are never summed.  ping events are ignored; an error event (a 529
 * overloaded mid-stream) is noted.
 *
 * It does not validate responses beyond that: anything it cannot read sets
 * parse_failed and the hooks settle conservatively.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "shim.h"

void shim_resp_init(struct shim_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->retry_after_ms = -1;
	for (int i = 0; i < SHL_NBUCKETS; i++)
		r->remaining[i] = -1;
}

void shim_resp_free(struct shim_resp *r)
{
	free(r->buf);
	free(r->ev);
	r->buf = r->ev = NULL;
	r->len = r->cap = r->ev_len = r->ev_cap = 0;
}

/* Append to a growable buffer bounded by SHIM_BODY_MAX; -1 when it would overflow. */
static int grow_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
	if (n > SHIM_BODY_MAX || *len > SHIM_BODY_MAX - n)
		return -1;
	if (*len + n + 1 > *cap) {
		size_t nc = *cap ? *cap : 4096;
		while (nc < *len + n + 1)
			nc *= 2;
		char *nb = realloc(*buf, nc);
		if (nb == NULL)
			return -1;
		*buf = nb;
		*cap = nc;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

/* A non-negative integer at the start of `s`, or -1. */
static int64_t parse_u(const char *s, size_t n)
{
	int64_t v = 0;
	size_t i = 0;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (i == n || s[i] < '0' || s[i] > '9')
		return -1;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* Milliseconds of a decimal "12.5" (retry-after-ms may be a float), or -1. */
static int64_t parse_ms(const char *s, size_t n)
{
	int64_t whole = parse_u(s, n);
	if (whole < 0 || whole > INT64_MAX / 1000)
		return -1;
	const char *dot = memchr(s, '.', n);
	/* Round any fraction up: waiting a hair longer is always safe. */
	if (dot != NULL && dot + 1 < s + n && dot[1] >= '0' && dot[1] <= '9')
		whole++;
	return whole;
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

void shim_resp_header(struct shim_resp *r, const char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* A new response (after a 100 Continue or a redirect): start over. */
		const char *sp = memchr(line, ' ', len);
		long st = sp ? (long)parse_u(sp, len - (size_t)(sp - line)) : -1;
		r->status = st > 0 ? st : 0;
		r->sse = 0;
		r->retry_after_ms = -1;
		for (int i = 0; i < SHL_NBUCKETS; i++)
			r->remaining[i] = -1;
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
		if ((x = parse_ms(v, vl)) >= 0)
			r->retry_after_ms = x;
	} else if (hdr_is(line, len, "retry-after", &v, &vl)) {
		/* Seconds; an HTTP date is not read (the hold default applies).
		 * retry-after-ms, when present, is the finer of the two. */
		if ((x = parse_u(v, vl)) >= 0 && x < INT64_MAX / 1000 && r->retry_after_ms < 0)
			r->retry_after_ms = x * 1000;
	} else if (hdr_is(line, len, "anthropic-ratelimit-requests-remaining", &v, &vl)) {
		r->remaining[SHL_DIM_RPM] = parse_u(v, vl);
	} else if (hdr_is(line, len, "anthropic-ratelimit-input-tokens-remaining", &v, &vl)) {
		r->remaining[SHL_DIM_ITPM] = parse_u(v, vl);
	} else if (hdr_is(line, len, "anthropic-ratelimit-output-tokens-remaining", &v, &vl)) {
		r->remaining[SHL_DIM_OTPM] = parse_u(v, vl);
	}
}

static void num(const cJSON *obj, const char *key, uint64_t *dst)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (cJSON_IsNumber(x) && x->valuedouble >= 0)
		*dst = x->valuedouble > 4294967295.0 ? 4294967295u : (uint64_t)x->valuedouble;
}

void shim_usage_from_json(const cJSON *usage, shl_usage *u)
{
	if (!cJSON_IsObject(usage))
		return;
	num(usage, "input_tokens", &u->input_tokens);
	num(usage, "output_tokens", &u->output_tokens);
	num(usage, "cache_read_input_tokens", &u->cache_read);
	const cJSON *cc = cJSON_GetObjectItemCaseSensitive(usage, "cache_creation");
	if (cJSON_IsObject(cc)) {
		num(cc, "ephemeral_5m_input_tokens", &u->cache_write_5m);
		num(cc, "ephemeral_1h_input_tokens", &u->cache_write_1h);
	} else if (cJSON_GetObjectItemCaseSensitive(usage, "cache_creation_input_tokens")) {
		/* Without the breakdown, a cache write is a 5 min write. */
		num(usage, "cache_creation_input_tokens", &u->cache_write_5m);
		u->cache_write_1h = 0;
	}
}

static void sse_dispatch(struct shim_resp *r)
{
	if (r->ev_len == 0)
		return;
	cJSON *j = cJSON_ParseWithLength(r->ev, r->ev_len);
	r->ev_len = 0;
	if (j == NULL) {
		r->parse_failed = 1;
		return;
	}
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
	const char *t = cJSON_IsString(type) ? type->valuestring : "";
	if (strcmp(t, "message_start") == 0) {
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
		const cJSON *u = cJSON_GetObjectItemCaseSensitive(msg, "usage");
		if (cJSON_IsObject(u)) {
			shim_usage_from_json(u, &r->usage);
			r->usage_seen = 1;
		}
	} else if (strcmp(t, "message_delta") == 0) {
		const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
		if (cJSON_IsObject(u)) {
			shim_usage_from_json(u, &r->usage); /* cumulative: overwrite */
			r->usage_seen = 1;
		}
	} else if (strcmp(t, "error") == 0) {
		r->stream_error = 1;
	}
	cJSON_Delete(j);
}

static void sse_line(struct shim_resp *r, const char *line, size_t n)
{
	if (n > 0 && line[n - 1] == '\r')
		n--;
	if (n == 0) {
		sse_dispatch(r);
		return;
	}
	if (n >= 5 && memcmp(line, "data:", 5) == 0) {
		const char *d = line + 5;
		size_t dn = n - 5;
		if (dn > 0 && *d == ' ')
			d++, dn--;
		if (r->ev_len > 0 && grow_append(&r->ev, &r->ev_len, &r->ev_cap, "\n", 1) != 0)
			r->overflow = 1;
		if (grow_append(&r->ev, &r->ev_len, &r->ev_cap, d, dn) != 0)
			r->overflow = 1;
	}
	/* "event:", "id:", "retry:" and ":" comments carry nothing we need:
	 * the event's type is repeated inside its JSON. */
}

void shim_resp_body(struct shim_resp *r, const char *p, size_t len)
{
	/* With CURLOPT_HEADER each response's header block comes first. */
	while (r->header_in_body && len > 0 && r->hstate != 2) {
		if (r->hstate == 0) {
			if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
				r->hstate = 1;
				r->hline = 0;
			} else {
				r->hstate = 2;
				break;
			}
		}
		char ch = *p++;
		len--;
		if (ch == '\n') {
			if (r->hline == 0)
				r->hstate = 0; /* end of a header block */
			r->hline = 0;
		} else if (ch != '\r') {
			r->hline++;
		}
	}
	if (len == 0)
		return;
	if (r->body_bytes == 0 && !r->sse && len >= 6 &&
	    (memcmp(p, "event:", 6) == 0 || memcmp(p, "data:", 5) == 0))
		r->sse = 1; /* no content-type header: sniff */
	r->body_bytes += len;
	if (r->overflow)
		return;
	if (!r->sse) {
		if (grow_append(&r->buf, &r->len, &r->cap, p, len) != 0)
			r->overflow = 1;
		return;
	}
	/* SSE: complete lines are handled at once; a partial line waits in buf. */
	while (len > 0) {
		const char *nl = memchr(p, '\n', len);
		size_t take = nl ? (size_t)(nl - p) : len;
		if (grow_append(&r->buf, &r->len, &r->cap, p, take) != 0) {
			r->overflow = 1;
			return;
		}
		if (nl == NULL)
			return;
		sse_line(r, r->buf, r->len);
		r->len = 0;
		p += take + 1;
		len -= take + 1;
	}
}

void shim_resp_finish(struct shim_resp *r)
{
	if (r->done)
		return;
	r->done = 1;
	if (r->overflow) {
		r->parse_failed = 1;
		return;
	}
	if (r->sse) {
		if (r->len > 0) {
			sse_line(r, r->buf, r->len);
			r->len = 0;
		}
		sse_dispatch(r);
		return;
	}
	if (r->len == 0)
		return;
	cJSON *j = cJSON_ParseWithLength(r->buf, r->len);
	if (j == NULL) {
		r->parse_failed = 1;
		return;
	}
	const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
	if (cJSON_IsObject(u)) {
		shim_usage_from_json(u, &r->usage);
		r->usage_seen = 1;
	}
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
	if (cJSON_IsObject(err)) {
		const cJSON *det = cJSON_GetObjectItemCaseSensitive(err, "details");
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(det, "error_code");
		if (!cJSON_IsString(code))
			code = cJSON_GetObjectItemCaseSensitive(err, "error_code");
		if (cJSON_IsString(code) &&
		    strcmp(code->valuestring, "enforced_spend_limit_reached") == 0)
			r->spend_cap = 1;
	}
	cJSON_Delete(j);
}
