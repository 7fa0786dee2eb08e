/*
 * shimfuzz.h - what the fuzz targets of the request/response component
 * share (the readers behind shl_ex_*: libshmlimit/src/wire_req.c and
 * wire_resp.c, which the preload shim and the bindings all call).
 *
 * The targets link the instrumented libshmlimit.a of the fuzz build
 * (fuzz.mk), so they run exactly the code the library ships.
 *
 * Property failures print what failed and abort(), which libFuzzer reports
 * as a crash with the input saved.
 */
#ifndef SHM_FUZZ_SHIMFUZZ_H
#define SHM_FUZZ_SHIMFUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                   \
	do {                                                                       \
		if (!(c)) {                                                        \
			fprintf(stderr, "property failed: %s (%s:%d)\n", #c, __FILE__, \
				__LINE__);                                         \
			abort();                                                   \
		}                                                                  \
	} while (0)

/* A heap copy of exactly n bytes, so AddressSanitizer sees a read past
 * the end of one chunk even when more input follows it. */
static inline char *fuzz_copy(const void *p, size_t n)
{
	char *c = malloc(n ? n : 1);
	if (c == NULL)
		abort();
	memcpy(c, p, n);
	return c;
}

/* Feed n bytes to the body reader, as one chunk in its own allocation. */
static inline void fuzz_body(struct shl__resp *r, const void *p, size_t n)
{
	char *c = fuzz_copy(p, n);
	shl__resp_body(r, c, n);
	free(c);
}

/* Feed one header line (as libcurl hands it over, "\r\n" included). */
static inline void fuzz_header(struct shl__resp *r, const void *p, size_t n)
{
	char *c = fuzz_copy(p, n);
	shl__resp_header(r, c, n);
	free(c);
}

/* What the hooks read from a finished response. */
static inline void fuzz_check_result(const struct shl__resp *r)
{
	CHECK(r->status == 0 || (r->status >= 100 && r->status <= 999));
	CHECK(r->retry_after_ms >= -1 && r->retry_after_ms <= SHL_WIRE_RETRY_AFTER_MAX_MS);
	/* shl_ex_finish holds the pool for retry_after_ms * 10^6 ns */
	CHECK(r->retry_after_ms <= INT64_MAX / 1000000);
	for (int d = 0; d < SHL_NBUCKETS; d++)
		CHECK(r->remaining[d] >= -1 && r->limit[d] >= -1);
	CHECK(r->usage.input_tokens <= SHL_WIRE_USAGE_MAX);
	CHECK(r->usage.output_tokens <= SHL_WIRE_USAGE_MAX);
	CHECK(r->usage.cache_write_5m <= SHL_WIRE_USAGE_MAX);
	CHECK(r->usage.cache_write_1h <= SHL_WIRE_USAGE_MAX);
	CHECK(r->usage.cache_read <= SHL_WIRE_USAGE_MAX);
	if (!r->usage_seen) /* nothing read: nothing to settle with */
		CHECK(r->cw_split == 1);
	if (!r->usage_seen)
		CHECK(r->usage.input_tokens == 0 && r->usage.output_tokens == 0 &&
		      r->usage.cache_write_5m == 0 && r->usage.cache_write_1h == 0 &&
		      r->usage.cache_read == 0);
}

/* Two readings of the same response agree on everything the hooks use. */
static inline void fuzz_check_same(const struct shl__resp *a, const struct shl__resp *b)
{
	CHECK(a->status == b->status);
	CHECK(a->sse == b->sse);
	CHECK(a->retry_after_ms == b->retry_after_ms);
	for (int d = 0; d < SHL_NBUCKETS; d++)
		CHECK(a->remaining[d] == b->remaining[d]);
	CHECK(a->body_bytes == b->body_bytes);
	CHECK(a->usage_seen == b->usage_seen);
	CHECK(a->usage.input_tokens == b->usage.input_tokens);
	CHECK(a->usage.output_tokens == b->usage.output_tokens);
	CHECK(a->usage.cache_write_5m == b->usage.cache_write_5m);
	CHECK(a->usage.cache_write_1h == b->usage.cache_write_1h);
	CHECK(a->usage.cache_read == b->usage.cache_read);
	CHECK(a->stream_error == b->stream_error);
	CHECK(a->spend_cap == b->spend_cap);
	CHECK(a->parse_failed == b->parse_failed);
	CHECK(a->overflow == b->overflow);
	for (int d = 0; d < SHL_NBUCKETS; d++)
		CHECK(a->limit[d] == b->limit[d]);
	CHECK(a->cw_split == b->cw_split);
	CHECK(a->final_seen == b->final_seen);
	CHECK(a->out_units == b->out_units);
	CHECK(a->overloaded == b->overloaded);
}

#endif
