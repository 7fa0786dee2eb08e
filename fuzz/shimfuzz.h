/*
 * shimfuzz.h - what the fuzz targets of the preload shim's parsers share.
 *
 * The parsers (preload/request.c, preload/response.c) depend on cJSON only,
 * not on libcurl nor on libshmlimit's code: fuzz.mk compiles them from
 * source into each target, instrumented.  The shipped
 * libshmlimit-preload.so is built from the same files with hidden
 * visibility.
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

#include "shim.h"

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
static inline void fuzz_body(struct shim_resp *r, const void *p, size_t n)
{
	char *c = fuzz_copy(p, n);
	shim_resp_body(r, c, n);
	free(c);
}

/* Feed one header line (as libcurl hands it over, "\r\n" included). */
static inline void fuzz_header(struct shim_resp *r, const void *p, size_t n)
{
	char *c = fuzz_copy(p, n);
	shim_resp_header(r, c, n);
	free(c);
}

/* What the hooks read from a finished response. */
static inline void fuzz_check_result(const struct shim_resp *r)
{
	CHECK(r->status == 0 || (r->status >= 100 && r->status <= 999));
	CHECK(r->retry_after_ms >= -1 && r->retry_after_ms <= SHIM_RETRY_AFTER_MAX_MS);
	/* settle.c holds the pool for retry_after_ms * 10^6 ns */
	CHECK(r->retry_after_ms <= INT64_MAX / 1000000);
	for (int d = 0; d < SHL_NBUCKETS; d++)
		CHECK(r->remaining[d] >= -1);
	CHECK(r->usage.input_tokens <= SHIM_USAGE_MAX);
	CHECK(r->usage.output_tokens <= SHIM_USAGE_MAX);
	CHECK(r->usage.cache_write_5m <= SHIM_USAGE_MAX);
	CHECK(r->usage.cache_write_1h <= SHIM_USAGE_MAX);
	CHECK(r->usage.cache_read <= SHIM_USAGE_MAX);
	if (!r->usage_seen) /* nothing read: nothing to settle with */
		CHECK(r->usage.input_tokens == 0 && r->usage.output_tokens == 0 &&
		      r->usage.cache_write_5m == 0 && r->usage.cache_write_1h == 0 &&
		      r->usage.cache_read == 0);
}

/* Two readings of the same response agree on everything the hooks use. */
static inline void fuzz_check_same(const struct shim_resp *a, const struct shim_resp *b)
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
}

#endif
