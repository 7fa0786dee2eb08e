/*
 * fuzz_request.c - libFuzzer target: the request/response component's
 * request-body reader (shl__req_parse in libshmlimit/src/wire_req.c, behind
 * shl_ex_open), which decides what a Messages,
 * count_tokens or Message Batches request costs before it is sent.
 *
 * Input: a request body (not NUL-terminated: AddressSanitizer watches the
 * end of the buffer).
 *
 * Properties: a body is read or refused the same way every time; what is
 * read has a model id of 1..SHL_PATTERN_MAX bytes and a max_tokens within
 * 2^32 - 1; count_tokens reads the same model at zero cost; and a Messages
 * body that is one JSON value, put twice into a batch, costs exactly twice
 * as much at Batch prices (max_tokens saturating at 2^32 - 1).
 */
#include <errno.h>

#include <cjson/cJSON.h>

#include "shimfuzz.h"

static void sane(const struct shl__req *q)
{
	size_t n = strnlen(q->model, sizeof(q->model));
	CHECK(n >= 1 && n <= SHL_PATTERN_MAX);
	CHECK(q->cost.max_tokens <= 4294967295u);
	CHECK(q->cost.cache_read == 0);
	/* sums the library takes as they are: far from wrapping */
	CHECK(q->cost.input_tokens < (1ull << 62) && q->cost.cache_write_5m < (1ull << 62) &&
	      q->cost.cache_write_1h < (1ull << 62));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = fuzz_copy(data, size);
	struct shl__req a, b, c;
	memset(&a, 0x5a, sizeof(a));
	memset(&b, 0xa5, sizeof(b));
	int ra = shl__req_parse(body, size, SHL_EX_MESSAGES, &a);
	int rb = shl__req_parse(body, size, SHL_EX_MESSAGES, &b);
	CHECK(ra == 0 || ra == -EINVAL);
	CHECK(ra == rb);
	if (ra == 0) {
		sane(&a);
		CHECK(a.cost.batch == 0);
		CHECK(strcmp(a.model, b.model) == 0 && a.stream == b.stream &&
		      memcmp(&a.cost, &b.cost, sizeof(a.cost)) == 0);
	}

	int rc = shl__req_parse(body, size, SHL_EX_COUNT, &c);
	CHECK(rc == ra);
	if (rc == 0) {
		sane(&c);
		CHECK(strcmp(c.model, a.model) == 0);
		CHECK(c.stream == 0 && c.cost.input_tokens == 0 && c.cost.max_tokens == 0 &&
		      c.cost.cache_write_5m == 0 && c.cost.cache_write_1h == 0 && c.cost.batch == 0);
	}

	struct shl__req d;
	if (shl__req_parse(body, size, SHL_EX_BATCH, &d) == 0) {
		sane(&d);
		CHECK(d.cost.batch == 1);
	}

	/* The body twice in a batch, if it is exactly one JSON value. */
	const char *end = NULL;
	cJSON *one = ra == 0 ? cJSON_ParseWithLengthOpts(body, size, &end, 0) : NULL;
	int alone = one != NULL && end != NULL && memchr(body, 0, size) == NULL;
	for (const char *q = end; alone && q < body + size; q++)
		alone = *q == ' ' || *q == '\t' || *q == '\r' || *q == '\n';
	if (alone) {
		static const char pre[] = "{\"requests\":[{\"custom_id\":\"a\",\"params\":";
		static const char mid[] = "},{\"custom_id\":\"b\",\"params\":";
		static const char post[] = "}]}";
		size_t n = strlen(pre) + 2 * size + strlen(mid) + strlen(post);
		char *w = malloc(n);
		if (w == NULL)
			abort();
		char *p = w;
		memcpy(p, pre, strlen(pre)), p += strlen(pre);
		memcpy(p, body, size), p += size;
		memcpy(p, mid, strlen(mid)), p += strlen(mid);
		memcpy(p, body, size), p += size;
		memcpy(p, post, strlen(post));
		struct shl__req e;
		CHECK(shl__req_parse(w, n, SHL_EX_BATCH, &e) == 0);
		CHECK(strcmp(e.model, a.model) == 0);
		CHECK(e.cost.batch == 1);
		CHECK(e.cost.input_tokens == 2 * a.cost.input_tokens);
		CHECK(e.cost.cache_write_5m == 2 * a.cost.cache_write_5m);
		CHECK(e.cost.cache_write_1h == 2 * a.cost.cache_write_1h);
		/* max_tokens sums saturate at 2^32 - 1, as one request's does */
		CHECK(e.cost.max_tokens == (2 * a.cost.max_tokens > 4294967295u
						    ? 4294967295u
						    : 2 * a.cost.max_tokens));
		free(w);
	}
	cJSON_Delete(one);
	free(body);
	return 0;
}
