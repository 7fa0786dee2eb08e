/*
 * fuzz_sse.c - libFuzzer target: the request/response component's reader of
 * a response body (libshmlimit/src/wire_resp.c, behind shl_ex_body), above
 * all a Server-Sent-Events stream, fed in
 * arbitrary chunks.
 *
 * Input: one byte of flags, one byte N, N two-byte split offsets, then the
 * body.  Flags:
 *   bit 0  the response says content-type: text/event-stream (else the
 *          reader must sniff the body);
 *   bit 1  CURLOPT_HEADER: every header line also arrives in the body, just
 *          before the header callback sees it (libcurl's order);
 *   bit 2  a "100 Continue" header block comes first.
 *
 * Properties: the body read in one chunk, in the chunks the offsets cut
 * (with the header lines in the body or not), and one byte at a time, gives
 * the same result: status, usage, errors, counts; usage values are within
 * SHL_WIRE_USAGE_MAX, and absent when not read.  AddressSanitizer watches every
 * chunk in its own allocation.
 */
#include "shimfuzz.h"

#define MAX_CUTS 64

static const char *const head_continue[] = {"HTTP/1.1 100 Continue\r\n", "\r\n", NULL};
static const char *const head_sse[] = {
	"HTTP/1.1 200 OK\r\n", "content-type: text/event-stream; charset=utf-8\r\n",
	"anthropic-ratelimit-requests-remaining: 7\r\n", "transfer-encoding: chunked\r\n",
	"\r\n", NULL};
static const char *const head_plain[] = {
	"HTTP/1.1 200 OK\r\n", "request-id: req_1\r\n", "anthropic-ratelimit-requests-remaining: 7\r\n",
	"\r\n", NULL};

static void headers(struct shl__resp *r, const char *const *h, int in_body)
{
	for (; *h != NULL; h++) {
		if (in_body)
			fuzz_body(r, *h, strlen(*h));
		fuzz_header(r, *h, strlen(*h));
	}
}

/* Read the response: headers, then the body cut at cuts[] (sorted). */
static void run(struct shl__resp *r, int flags, int in_body, const uint8_t *body, size_t n,
		const size_t *cuts, size_t ncuts)
{
	shl__resp_init(r);
	r->header_in_body = in_body;
	if (flags & 4)
		headers(r, head_continue, in_body);
	headers(r, (flags & 1) ? head_sse : head_plain, in_body);
	size_t at = 0;
	for (size_t i = 0; i < ncuts; i++) {
		if (cuts[i] > at) {
			fuzz_body(r, body + at, cuts[i] - at);
			at = cuts[i];
		}
	}
	if (n > at)
		fuzz_body(r, body + at, n - at);
	shl__resp_finish(r);
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	int flags = data[0];
	size_t ncuts = data[1] % (MAX_CUTS + 1);
	data += 2;
	size -= 2;
	if (size < 2 * ncuts)
		return 0;
	const uint8_t *body = data + 2 * ncuts;
	size_t n = size - 2 * ncuts;
	size_t cuts[MAX_CUTS];
	for (size_t i = 0; i < ncuts; i++)
		cuts[i] = ((size_t)data[2 * i] | (size_t)data[2 * i + 1] << 8) % (n + 1);
	qsort(cuts, ncuts, sizeof(cuts[0]), cmp_size);

	struct shl__resp one, cut, bytes;
	run(&one, flags, 0, body, n, NULL, 0);
	fuzz_check_result(&one);
	CHECK(one.body_bytes == n);

	run(&cut, flags, (flags & 2) != 0, body, n, cuts, ncuts);
	fuzz_check_same(&one, &cut);

	if (n <= 4096) {
		size_t *every = malloc((n ? n : 1) * sizeof(*every));
		if (every == NULL)
			abort();
		for (size_t i = 0; i < n; i++)
			every[i] = i;
		run(&bytes, flags, (flags & 2) != 0, body, n, every, n);
		free(every);
		fuzz_check_same(&one, &bytes);
		shl__resp_free(&bytes);
	}
	shl__resp_free(&one);
	shl__resp_free(&cut);
	return 0;
}
