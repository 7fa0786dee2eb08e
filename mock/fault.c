/*
 * fault.c - fault scripting: the errors and odd wire shapes a client must
 * survive, asked for by request headers (x-mock-fail, --fail-every, the
 * x-mock-* wire headers; mock/README.md, "Faults" and "Wire faults").
 *
 * This module only decides and parses; the replies themselves are written
 * by reply.c and the order of events (validation, faults, admission) is
 * api.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

int fault_parse(const char *s)
{
	static const char *const names[] = {
		[FAULT_429] = "429",           [FAULT_SPEND_CAP] = "spend-cap",
		[FAULT_529] = "529",           [FAULT_529_MIDSTREAM] = "529-midstream",
		[FAULT_500] = "500",           [FAULT_TRUNCATE] = "truncate",
	};
	for (int i = FAULT_429; i <= FAULT_TRUNCATE; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -EINVAL;
}

/* Answer a scripted fault that happens before any generation.  Returns -1
 * if `fault` is not one of those. */
int fault_scripted(struct ctx *c, int fault)
{
	uint64_t ra = 2;
	switch (fault) {
	case FAULT_429: {
		const char *v = http_header(c->r, "x-mock-retry-after");
		if (v != NULL && parse_u64(v, 86400, &ra) < 0)
			return send_error(c, 400, "invalid_request_error",
					  "mock: bad x-mock-retry-after", NULL);
		uint64_t ra_ms = 0;
		const char *vm = http_header(c->r, "x-mock-retry-after-ms");
		if (vm != NULL && parse_u64(vm, 86400000, &ra_ms) < 0)
			return send_error(c, 400, "invalid_request_error",
					  "mock: bad x-mock-retry-after-ms", NULL);
		sbuf_printf(&c->h, "retry-after: %llu\r\n", (unsigned long long)ra);
		if (vm != NULL)
			sbuf_printf(&c->h, "retry-after-ms: %llu\r\n", (unsigned long long)ra_ms);
		c->o.scripted_429 = 1;
		return send_error(c, 429, "rate_limit_error",
				  "mock: scripted rate limit", NULL);
	}
	case FAULT_SPEND_CAP:
		c->o.scripted_429 = 1;
		return send_error(c, 429, "rate_limit_error",
				  "You have reached your specified API usage limits. "
				  "You will regain access on the first day of next month.",
				  "enforced_spend_limit_reached");
	case FAULT_529:
		return send_error(c, 529, "overloaded_error", "Overloaded", NULL);
	case FAULT_500:
		return send_error(c, 500, "api_error", "Internal server error", NULL);
	default:
		return -1;
	}
}

/* Standard base64 (padding optional); returns the byte count or -1. */
static long base64_decode(const char *in, char *out)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(in);
	while (n > 0 && in[n - 1] == '=')
		n--;
	long len = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		const char *q = in[i] ? strchr(alpha, in[i]) : NULL;
		if (q == NULL)
			return -1;
		acc = acc << 6 | (uint32_t)(q - alpha);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[len++] = (char)(acc >> bits & 0xff);
		}
	}
	return n % 4 == 1 ? -1 : len;
}

/*
 * The wire faults a request asks for (mock/README.md, "Wire faults"):
 * x-mock-encoding, x-mock-chunk-bytes, x-mock-pad-bytes, x-mock-pad-headers,
 * x-mock-bad-utf8, x-mock-usage-raw, x-mock-body, x-mock-content-type.
 * Returns NULL, or the message of a 400 for a malformed value.
 */
const char *fault_parse_wire(struct ctx *c)
{
	const struct http_req *r = c->r;
	const char *v;
	uint64_t n;
	if ((v = http_header(r, "x-mock-encoding")) != NULL) {
		if (strcmp(v, "gzip") == 0)
			c->shape.gzip = 1;
		else if (strcmp(v, "identity") != 0)
			return "mock: x-mock-encoding must be gzip or identity";
	}
	if ((v = http_header(r, "x-mock-chunk-bytes")) != NULL) {
		if (parse_u64(v, 1 << 20, &n) < 0 || n == 0)
			return "mock: x-mock-chunk-bytes must be 1..1048576";
		if (r->minor >= 1) /* HTTP/1.0 has no chunked encoding */
			c->shape.chunk = (size_t)n;
	}
	if ((v = http_header(r, "x-mock-pad-bytes")) != NULL) {
		if (parse_u64(v, 1 << 20, &n) < 0)
			return "mock: x-mock-pad-bytes must be 0..1048576";
		static const char fill[] = "abcdefghijklmnopqrstuvwxyz0123456789";
		sbuf_puts(&c->pad, "x-mock-pad: ");
		for (uint64_t i = 0; i < n; i++)
			sbuf_add(&c->pad, &fill[i % (sizeof(fill) - 1)], 1);
		sbuf_puts(&c->pad, "\r\n");
	}
	if ((v = http_header(r, "x-mock-pad-headers")) != NULL) {
		if (parse_u64(v, 100000, &n) < 0)
			return "mock: x-mock-pad-headers must be 0..100000";
		for (uint64_t i = 0; i < n; i++)
			sbuf_printf(&c->pad, "x-mock-pad-%llu: %llu\r\n",
				    (unsigned long long)i, (unsigned long long)i);
	}
	if ((v = http_header(r, "x-mock-bad-utf8")) != NULL) {
		if (strcmp(v, "1") != 0)
			return "mock: x-mock-bad-utf8 must be 1";
		c->bad_utf8 = 1;
		sbuf_puts(&c->pad, "x-mock-bad-utf8: " BAD_UTF8 "\r\n"
			  "x-mock-\xe9t\xe9-\xff: \xc0\xaf\r\n");
	}
	if ((v = http_header(r, "x-mock-remaining")) != NULL) {
		/* "R,I,O": requests, input tokens, output tokens; an empty
		 * field keeps the mock's own value. */
		const char *q = v;
		for (int d = 0; d < NDIM; d++) {
			const char *e = strchr(q, ',');
			size_t k = e != NULL ? (size_t)(e - q) : strlen(q);
			if ((e == NULL) != (d == NDIM - 1) || k > 20)
				return "mock: x-mock-remaining must be \"R,I,O\" (numbers or empty)";
			char f[24];
			memcpy(f, q, k);
			f[k] = '\0';
			uint64_t x;
			if (k > 0 && parse_u64(f, 1000000000000ULL, &x) < 0)
				return "mock: x-mock-remaining must be \"R,I,O\" (numbers or empty)";
			if (k > 0)
				c->remaining[d] = (double)x;
			q = e != NULL ? e + 1 : q + k;
		}
	}
	c->usage_raw = http_header(r, "x-mock-usage-raw");
	c->raw_type = http_header(r, "x-mock-content-type");
	if (c->raw_type == NULL)
		c->raw_type = "application/json";
	if ((v = http_header(r, "x-mock-body")) != NULL) {
		c->raw_body = malloc(strlen(v) + 1);
		if (c->raw_body == NULL)
			return "mock: out of memory";
		long len = base64_decode(v, c->raw_body);
		if (len < 0)
			return "mock: x-mock-body must be base64";
		c->raw_len = (size_t)len;
	}
	return NULL;
}
