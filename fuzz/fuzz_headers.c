/*
 * fuzz_headers.c - libFuzzer target: the request/response component's
 * response-header parser (shl__resp_header in libshmlimit/src/wire_resp.c,
 * behind shl_ex_header).
 *
 * Input: a header block; each line (up to and including its LF) is handed
 * over as libcurl hands header lines to a header callback.
 *
 * Properties: after every line the parser agrees with a reference model
 * written here independently (status 100..999 or 0; text/event-stream;
 * retry-after-ms over retry-after, strict numbers, the last readable value
 * of each, the wait bounded by SHL_WIRE_RETRY_AFTER_MAX_MS so that the hooks'
 * nanoseconds cannot overflow; anthropic-ratelimit-*-remaining, saturated,
 * never negative unless absent, and the -limit ones the same way;
 * everything reset by a new status line).
 */
#include <ctype.h>
#include <errno.h>

#include "shimfuzz.h"

struct ref {
	long status;
	int sse;
	int64_t ra_ms, ra_s;
	int64_t rem[SHL_NBUCKETS];
	int64_t lim[SHL_NBUCKETS];
};

static void ref_reset(struct ref *m)
{
	m->status = 0;
	m->sse = 0;
	m->ra_ms = m->ra_s = -1;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		m->rem[d] = m->lim[d] = -1;
}

/* Digits only (no sign, no space, no NUL inside): strtoull, saturated. */
static int64_t ref_digits(const char *s, size_t n)
{
	if (n == 0 || n != strlen(s) || strspn(s, "0123456789") != n)
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, NULL, 10);
	if (errno == ERANGE || v > (unsigned long long)INT64_MAX)
		return INT64_MAX;
	return (int64_t)v;
}

static int64_t ref_number(const char *val, size_t vlen, int frac)
{
	char *s = malloc(vlen + 1);
	if (s == NULL)
		abort();
	memcpy(s, val, vlen);
	s[vlen] = '\0';
	if (strlen(s) != vlen) { /* a NUL inside */
		free(s);
		return -1;
	}
	/* trim spaces and tabs */
	char *b = s;
	while (*b == ' ' || *b == '\t')
		b++;
	size_t n = strlen(b);
	while (n > 0 && (b[n - 1] == ' ' || b[n - 1] == '\t'))
		b[--n] = '\0';
	int64_t v;
	char *dot = frac ? strchr(b, '.') : NULL;
	if (dot != NULL) {
		*dot = '\0';
		const char *f = dot + 1;
		size_t fl = strlen(f);
		v = ref_digits(b, strlen(b));
		if (v >= 0 && (fl == 0 || strspn(f, "0123456789") != fl))
			v = -1;
		else if (v >= 0 && strspn(f, "0") != fl && v < INT64_MAX)
			v++;
	} else {
		v = ref_digits(b, n);
	}
	free(s);
	return v;
}

static int name_is(const char *line, size_t nlen, const char *want)
{
	if (nlen != strlen(want))
		return 0;
	for (size_t i = 0; i < nlen; i++)
		if (tolower((unsigned char)line[i]) != want[i])
			return 0;
	return 1;
}

static void ref_line(struct ref *m, const char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
		len--;
	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
		ref_reset(m);
		size_t sp = 0;
		while (sp < len && line[sp] != ' ')
			sp++;
		const char *c = line + sp + 1;
		size_t rest = sp < len ? len - sp - 1 : 0;
		if (rest >= 3 && (rest == 3 || c[3] == ' ') && isdigit((unsigned char)c[0]) &&
		    isdigit((unsigned char)c[1]) && isdigit((unsigned char)c[2])) {
			long st = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
			m->status = st >= 100 ? st : 0;
		}
		return;
	}
	const char *colon = memchr(line, ':', len);
	if (colon == NULL)
		return;
	size_t nlen = (size_t)(colon - line);
	const char *val = colon + 1;
	size_t vlen = len - nlen - 1;
	int64_t x;
	if (name_is(line, nlen, "content-type")) {
		char *low = fuzz_copy(val, vlen);
		for (size_t i = 0; i < vlen; i++)
			low[i] = (char)tolower((unsigned char)low[i]);
		if (memmem(low, vlen, "text/event-stream", 17) != NULL)
			m->sse = 1;
		free(low);
	} else if (name_is(line, nlen, "retry-after-ms")) {
		if ((x = ref_number(val, vlen, 1)) >= 0)
			m->ra_ms = x;
	} else if (name_is(line, nlen, "retry-after")) {
		if ((x = ref_number(val, vlen, 0)) >= 0)
			m->ra_s = x;
	} else if (name_is(line, nlen, "anthropic-ratelimit-requests-remaining")) {
		if ((x = ref_number(val, vlen, 0)) >= 0)
			m->rem[SHL_DIM_RPM] = x;
	} else if (name_is(line, nlen, "anthropic-ratelimit-input-tokens-remaining")) {
		if ((x = ref_number(val, vlen, 0)) >= 0)
			m->rem[SHL_DIM_ITPM] = x;
	} else if (name_is(line, nlen, "anthropic-ratelimit-output-tokens-remaining")) {
		if ((x = ref_number(val, vlen, 0)) >= 0)
			m->rem[SHL_DIM_OTPM] = x;
	} else if (name_is(line, nlen, "anthropic-ratelimit-requests-limit")) {
		if ((x = ref_number(val, vlen, 0)) >= 0)
			m->lim[SHL_DIM_RPM] = x;
	} else if (name_is(line, nlen, "anthropic-ratelimit-input-tokens-limit")) {
		if ((x = ref_number(val, vlen, 0)) >= 0)
			m->lim[SHL_DIM_ITPM] = x;
	} else if (name_is(line, nlen, "anthropic-ratelimit-output-tokens-limit")) {
		if ((x = ref_number(val, vlen, 0)) >= 0)
			m->lim[SHL_DIM_OTPM] = x;
	}
}

static int64_t ref_wait(const struct ref *m)
{
	const int64_t max = SHL_WIRE_RETRY_AFTER_MAX_MS;
	if (m->ra_ms >= 0)
		return m->ra_ms < max ? m->ra_ms : max;
	if (m->ra_s >= 0)
		return m->ra_s < max / 1000 ? m->ra_s * 1000 : max;
	return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct shl__resp r;
	struct ref m;
	shl__resp_init(&r);
	ref_reset(&m);
	const char *p = (const char *)data;
	size_t left = size;
	while (left > 0) {
		const char *nl = memchr(p, '\n', left);
		size_t n = nl ? (size_t)(nl - p) + 1 : left;
		fuzz_header(&r, p, n);
		ref_line(&m, p, n);
		CHECK(r.status == m.status);
		CHECK(r.sse == m.sse);
		CHECK(r.retry_after_ms == ref_wait(&m));
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			CHECK(r.remaining[d] == m.rem[d]);
			CHECK(r.limit[d] == m.lim[d]);
		}
		p += n;
		left -= n;
	}
	shl__resp_finish(&r);
	fuzz_check_result(&r);
	shl__resp_free(&r);
	return 0;
}
