/*
 * wire_req.c - what a Messages API request body will cost, before it is sent.
 *
 * Admission needs four numbers the server only reports afterwards: input
 * tokens, cache-write tokens, max_tokens, and whether it is a Batch.  This
 * module reads them out of the JSON body with cJSON, for every client that
 * comes through the shl_ex_* API (the preload shim, the Python and Node
 * bindings), so a request is estimated the same way whichever way it came.
 *
 * The input is an ESTIMATE over every piece of text the model reads (tools,
 * system, messages, in that order, which is also the order of the prompt
 * cache's prefix), counted in quarter tokens by script:
 *   - 1 (a quarter token) per character of ASCII, and of any code point not
 *     listed below (and per byte of a malformed UTF-8 sequence);
 *   - 2 per accented Latin, Greek, Cyrillic, Armenian, Hebrew, Arabic and
 *     Indic or Thai letter (U+00C0-U+024F, U+0370-U+0E7F, U+1E00-U+1EFF):
 *     tokenizers split words of these scripts into far more pieces;
 *   - 4 (one token) per CJK ideograph, kana, Hangul syllable or full-width
 *     form (U+2E80-U+A4CF, U+AC00-U+D7AF, U+F900-U+FAFF, U+FF00-U+FFEF,
 *     U+20000-U+3FFFF);
 *   - 8 (two tokens) per emoji and pictograph (U+2600-U+27BF,
 *     U+1F000-U+1FAFF);
 * then tokens = ceil(quarters / 4), plus a flat 1,600 tokens per base64
 * image or document.  A block carrying cache_control ends a cache prefix:
 * everything up to it is a cache-write candidate (1 h when its ttl is "1h",
 * else 5 min), charged as a write because a hit cannot be known in advance.
 * The pool's learned ratio (learn.c) is applied on top by exchange.c, and
 * settlement replaces all of it with the server's usage, so the estimate
 * only has to be close, and on the high side more often than not.
 *
 * It deliberately does not tokenize: no tokenizer for Claude is public, and
 * the estimate is corrected on every response.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "wire.h"

#define UNITS_PER_TOKEN 4
#define MEDIA_TOKENS 1600
#define TOKENS_MAX 4294967295u

struct walk {
	uint64_t chars;    /* quarter tokens so far, in prompt order */
	uint64_t mark_5m;  /* quarter tokens up to the last 5 min breakpoint */
	uint64_t mark_1h;  /* quarter tokens up to the last 1 h breakpoint */
	int has_1h, has_5m;
};

/* The weight of one code point, in quarter tokens (see the top). */
static unsigned weight(uint32_t c)
{
	if (c < 0xc0)
		return 1;
	if (c <= 0x24f || (c >= 0x370 && c <= 0xe7f) || (c >= 0x1e00 && c <= 0x1eff))
		return 2;
	if ((c >= 0x2600 && c <= 0x27bf) || (c >= 0x1f000 && c <= 0x1faff))
		return 8;
	if ((c >= 0x2e80 && c <= 0xa4cf) || (c >= 0xac00 && c <= 0xd7af) ||
	    (c >= 0xf900 && c <= 0xfaff) || (c >= 0xff00 && c <= 0xffef) ||
	    (c >= 0x20000 && c <= 0x3ffff))
		return 4;
	return 1;
}

uint64_t shl__text_units(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	uint64_t n = 0;
	if (s == NULL)
		return 0;
	while (*s) {
		unsigned b = *s;
		int k = b >= 0xf0 && b < 0xf8 ? 3 : b >= 0xe0 && b < 0xf0 ? 2 : b >= 0xc0 && b < 0xe0 ? 1 : 0;
		if ((b & 0xc0) == 0x80) { /* a stray continuation byte counts nothing */
			s++;
			continue;
		}
		uint32_t c = k == 0 ? b : b & (0x3fu >> k);
		int i = 1;
		for (; i <= k && (s[i] & 0xc0) == 0x80; i++)
			c = c << 6 | (s[i] & 0x3fu);
		if (i <= k) {
			/* A sequence cut short: its lead byte is one character, the
			 * continuation bytes it had count nothing. */
			n += 1;
			s += i;
			continue;
		}
		n += k == 0 && b >= 0x80 ? 1 : weight(c);
		s += k + 1;
	}
	return n;
}

static void add_json(struct walk *w, const cJSON *j)
{
	char *p = cJSON_PrintUnformatted(j);
	if (p != NULL) {
		w->chars += shl__text_units(p);
		cJSON_free(p);
	}
}

static void mark(struct walk *w, const cJSON *obj)
{
	const cJSON *cc = cJSON_GetObjectItemCaseSensitive(obj, "cache_control");
	if (!cJSON_IsObject(cc))
		return;
	const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(cc, "ttl");
	if (cJSON_IsString(ttl) && strcmp(ttl->valuestring, "1h") == 0) {
		w->mark_1h = w->chars;
		w->has_1h = 1;
	} else {
		w->mark_5m = w->chars;
		w->has_5m = 1;
	}
}

static void add_content(struct walk *w, const cJSON *content);

static void add_block(struct walk *w, const cJSON *b)
{
	if (cJSON_IsString(b)) {
		w->chars += shl__text_units(b->valuestring);
		return;
	}
	if (!cJSON_IsObject(b))
		return;
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(b, "type");
	const char *t = cJSON_IsString(type) ? type->valuestring : "";
	const cJSON *x;
	if (strcmp(t, "text") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, "text");
		if (cJSON_IsString(x))
			w->chars += shl__text_units(x->valuestring);
	} else if (strcmp(t, "thinking") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, "thinking");
		if (cJSON_IsString(x))
			w->chars += shl__text_units(x->valuestring);
	} else if (strcmp(t, "image") == 0 || strcmp(t, "document") == 0) {
		const cJSON *src = cJSON_GetObjectItemCaseSensitive(b, "source");
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(src, "type");
		const cJSON *data = cJSON_GetObjectItemCaseSensitive(src, "data");
		if (cJSON_IsString(st) && strcmp(st->valuestring, "text") == 0 &&
		    cJSON_IsString(data))
			w->chars += shl__text_units(data->valuestring);
		else
			w->chars += (uint64_t)MEDIA_TOKENS * UNITS_PER_TOKEN;
	} else if (strcmp(t, "tool_use") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, "name");
		if (cJSON_IsString(x))
			w->chars += shl__text_units(x->valuestring);
		x = cJSON_GetObjectItemCaseSensitive(b, "input");
		if (x != NULL)
			add_json(w, x);
	} else if (strcmp(t, "tool_result") == 0) {
		add_content(w, cJSON_GetObjectItemCaseSensitive(b, "content"));
	} else {
		add_json(w, b); /* unknown block: its JSON text, a safe over-count */
	}
	mark(w, b);
}

static void add_content(struct walk *w, const cJSON *content)
{
	if (cJSON_IsString(content)) {
		w->chars += shl__text_units(content->valuestring);
	} else if (cJSON_IsArray(content)) {
		const cJSON *b;
		cJSON_ArrayForEach(b, content)
			add_block(w, b);
	}
}

static uint64_t tokens(uint64_t units)
{
	return units / UNITS_PER_TOKEN + (units % UNITS_PER_TOKEN != 0);
}

/* Cost of one Messages request object (the body, or a batch's params). */
static int params_cost(const cJSON *root, struct shl__req *out)
{
	if (!cJSON_IsObject(root))
		return -EINVAL;
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	if (!cJSON_IsString(model) || model->valuestring[0] == '\0' ||
	    strlen(model->valuestring) > SHL_PATTERN_MAX)
		return -EINVAL;
	struct walk w = {0, 0, 0, 0, 0};
	const cJSON *x;
	const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
	if (cJSON_IsArray(tools)) {
		cJSON_ArrayForEach(x, tools) {
			add_json(&w, x);
			mark(&w, x);
		}
	}
	add_content(&w, cJSON_GetObjectItemCaseSensitive(root, "system"));
	const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
	if (cJSON_IsArray(msgs)) {
		cJSON_ArrayForEach(x, msgs)
			add_content(&w, cJSON_GetObjectItemCaseSensitive(x, "content"));
	}
	uint64_t total = tokens(w.chars);
	uint64_t cw1h = tokens(w.mark_1h);
	uint64_t cw5m = w.mark_5m > w.mark_1h ? tokens(w.mark_5m) - cw1h : 0;
	if (cw1h + cw5m > total)
		total = cw1h + cw5m;

	memset(out, 0, sizeof(*out));
	memcpy(out->model, model->valuestring, strlen(model->valuestring) + 1);
	out->cost.cache_write_1h = cw1h;
	out->cost.cache_write_5m = cw5m;
	out->cost.input_tokens = total - cw1h - cw5m;
	out->has_1h = w.has_1h;
	out->has_5m = w.mark_5m > w.mark_1h;
	x = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
	if (cJSON_IsNumber(x) && x->valuedouble > 0)
		out->cost.max_tokens = x->valuedouble > (double)TOKENS_MAX ? TOKENS_MAX
									  : (uint64_t)x->valuedouble;
	x = cJSON_GetObjectItemCaseSensitive(root, "stream");
	out->stream = cJSON_IsTrue(x);
	return 0;
}

int shl__req_parse(const char *body, size_t len, int kind, struct shl__req *out)
{
	if (body == NULL || (kind != SHL_EX_MESSAGES && kind != SHL_EX_COUNT && kind != SHL_EX_BATCH))
		return -EINVAL;
	cJSON *root = cJSON_ParseWithLength(body, len);
	if (root == NULL)
		return -EINVAL;
	int r;
	if (kind != SHL_EX_BATCH) {
		r = params_cost(root, out);
		if (kind == SHL_EX_COUNT && r == 0) {
			/* count_tokens generates nothing and is not billed: RPM only. */
			memset(&out->cost, 0, sizeof(out->cost));
			out->stream = 0;
		}
	} else {
		/* A batch: the sum of its requests, at Batch prices. */
		const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(root, "requests");
		const cJSON *it;
		struct shl__req one;
		int n = 0;
		memset(out, 0, sizeof(*out));
		r = -EINVAL;
		cJSON_ArrayForEach(it, reqs) {
			if (params_cost(cJSON_GetObjectItemCaseSensitive(it, "params"), &one) != 0)
				continue;
			if (n++ == 0)
				memcpy(out->model, one.model, sizeof(out->model));
			out->cost.input_tokens += one.cost.input_tokens;
			out->cost.cache_write_5m += one.cost.cache_write_5m;
			out->cost.cache_write_1h += one.cost.cache_write_1h;
			out->has_1h |= one.has_1h;
			out->has_5m |= one.has_5m;
			/* Saturated like one request's: a batch of many large
			 * max_tokens passes any bucket either way. */
			out->cost.max_tokens += one.cost.max_tokens;
			if (out->cost.max_tokens > TOKENS_MAX)
				out->cost.max_tokens = TOKENS_MAX;
			r = 0;
		}
		out->cost.batch = 1;
	}
	cJSON_Delete(root);
	return r;
}
