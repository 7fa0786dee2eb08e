/*
 * fuzz_usage.c - libFuzzer target: the request/response component's JSON
 * usage reader (shl__usage_from_json, and a JSON response body read to its
 * end by shl__resp_finish, in libshmlimit/src/wire_resp.c).
 *
 * Input: a JSON response body.
 *
 * Properties: the body read as a response gives the usage that
 * shl__usage_from_json gives for its "usage" member, or none when that is
 * absent, null or refused; a refusal leaves the caller's usage untouched;
 * every value read is a whole number of tokens within SHL_WIRE_USAGE_MAX (so a
 * negative, fractional, string or absurd number never reaches the segment);
 * what is read survives a round trip through JSON; and the same usage
 * object in a stream's message_delta event reads the same.
 */
#include <cjson/cJSON.h>

#include "shimfuzz.h"

static void same_usage(const shl_usage *a, const shl_usage *b)
{
	CHECK(a->input_tokens == b->input_tokens);
	CHECK(a->output_tokens == b->output_tokens);
	CHECK(a->cache_write_5m == b->cache_write_5m);
	CHECK(a->cache_write_1h == b->cache_write_1h);
	CHECK(a->cache_read == b->cache_read);
}

static void read_body(struct shl__resp *r, const char *ctype, const void *body, size_t n)
{
	static const char status[] = "HTTP/1.1 200 OK\r\n";
	char ct[128];
	snprintf(ct, sizeof(ct), "content-type: %s\r\n", ctype);
	shl__resp_init(r);
	fuzz_header(r, status, strlen(status));
	fuzz_header(r, ct, strlen(ct));
	fuzz_header(r, "\r\n", 2);
	fuzz_body(r, body, n);
	shl__resp_finish(r);
	fuzz_check_result(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct shl__resp r;
	read_body(&r, "application/json", data, size);
	if (r.sse) { /* the body sniffed as a stream: fuzz_sse's business */
		shl__resp_free(&r);
		return 0;
	}

	cJSON *root = cJSON_ParseWithLength((const char *)data, size);
	const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
	const shl_usage sentinel = {11, 22, 33, 44, 55};
	shl_usage direct = sentinel;
	int rc = -1;
	if (usage != NULL && !cJSON_IsNull(usage)) {
		rc = shl__usage_from_json(usage, &direct, NULL);
		if (rc != 0)
			same_usage(&direct, &sentinel); /* refused: untouched */
		shl_usage zero = {0, 0, 0, 0, 0};
		rc = shl__usage_from_json(usage, &zero, NULL);
		direct = zero;
	}
	CHECK(r.usage_seen == (rc == 0));
	if (rc == 0) {
		same_usage(&r.usage, &direct);

		/* Round trip: the numbers read, written back as a usage object. */
		char js[512];
		snprintf(js, sizeof(js),
			 "{\"input_tokens\":%llu,\"output_tokens\":%llu,"
			 "\"cache_read_input_tokens\":%llu,\"cache_creation\":"
			 "{\"ephemeral_5m_input_tokens\":%llu,\"ephemeral_1h_input_tokens\":%llu}}",
			 (unsigned long long)direct.input_tokens,
			 (unsigned long long)direct.output_tokens,
			 (unsigned long long)direct.cache_read,
			 (unsigned long long)direct.cache_write_5m,
			 (unsigned long long)direct.cache_write_1h);
		cJSON *again = cJSON_Parse(js);
		shl_usage back = {0, 0, 0, 0, 0};
		CHECK(shl__usage_from_json(again, &back, NULL) == 0);
		same_usage(&back, &direct);
		cJSON_Delete(again);
	}

	/* The same usage object as a stream's message_delta. */
	if (usage != NULL) {
		char *u = cJSON_PrintUnformatted(usage);
		if (u != NULL) {
			size_t cap = strlen(u) + 128;
			char *ev = malloc(cap);
			if (ev == NULL)
				abort();
			int n = snprintf(ev, cap, "event: message_delta\ndata: {\"type\":"
				       "\"message_delta\",\"usage\":%s}\n\n", u);
			struct shl__resp s;
			read_body(&s, "text/event-stream", ev, (size_t)n);
			/* Printing may turn a huge number into another huge one,
			 * but never a refused value into a readable one. */
			if (rc == 0) {
				CHECK(s.usage_seen);
				same_usage(&s.usage, &r.usage);
			}
			shl__resp_free(&s);
			free(ev);
			cJSON_free(u);
		}
	}
	cJSON_Delete(root);
	shl__resp_free(&r);
	return 0;
}
