/*
 * request.c - what a Messages API request body will cost, before it is sent.
 *
 * Admission needs four numbers the server only reports afterwards: input
 * tokens, cache-write tokens, max_tokens, and whether it is a Batch.  This
 * module reads them out of the JSON body with cJSON.  The input is an
 * ESTIMATE: ceil(characters / 4) over every piece of text the model reads
 * (tools, system, messages, in that order, which is also the order of the
 * prompt cache's prefix), plus a flat 1,600 tokens per base64 image or
 * document.  A block carrying cache_control ends a cache prefix: everything
 * up to it is a cache-write candidate (1 h when its ttl is "1h", else 5 min),
 * charged as a write because a hit cannot be known in advance.  Settlement
 * replaces all of it with the server's usage, so the estimate only has to be
 * close, and on the high side more often than not.
 *
 * It deliberately does not tokenize: no tokenizer for Claude is public, and
 * the estimate is corrected on every response.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "shim.h"

#define CHARS_PER_TOKEN 4
#define MEDIA_TOKENS 1600

struct walk {
	uint64_t chars;    /* characters so far, in prompt order */
	uint64_t mark_5m;  /* characters up to the last 5 min breakpoint */
	uint64_t mark_1h;  /* characters up to the last 1 h breakpoint */
};

uint64_t shim_chars(const char *s)
{
	uint64_t n = 0;
	if (s == NULL)
		return 0;
	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80) /* not a continuation byte */
			n++;
	return n;
}

static void add_json(struct walk *w, const cJSON *j)
{
	char *p = cJSON_PrintUnformatted(j);
	if (p != NULL) {
		w->chars += shim_chars(p);
		cJSON_free(p);
	}
}

static void mark(struct walk *w, const cJSON *obj)
{
	const cJSON *cc = cJSON_GetObjectItemCaseSensitive(obj, "cache_control");
	if (!cJSON_IsObject(cc))
		return;
	const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(cc, "ttl");
	if (cJSON_IsString(ttl) && strcmp(ttl->valuestring, "1h") == 0)
		w->mark_1h = w->chars;
	else
		w->mark_5m = w->chars;
}

static void add_content(struct walk *w, const cJSON *content);

static void add_block(struct walk *w, const cJSON *b)
{
	if (cJSON_IsString(b)) {
		w->chars += shim_chars(b->valuestring);
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
			w->chars += shim_chars(x->valuestring);
	} else if (strcmp(t, "thinking") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, "thinking");
		if (cJSON_IsString(x))
			w->chars += shim_chars(x->valuestring);
	} else if (strcmp(t, "image") == 0 || strcmp(t, "document") == 0) {
		const cJSON *src = cJSON_GetObjectItemCaseSensitive(b, "source");
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(src, "type");
		const cJSON *data = cJSON_GetObjectItemCaseSensitive(src, "data");
		if (cJSON_IsString(st) && strcmp(st->valuestring, "text") == 0 &&
		    cJSON_IsString(data))
			w->chars += shim_chars(data->valuestring);
		else
			w->chars += (uint64_t)MEDIA_TOKENS * CHARS_PER_TOKEN;
	} else if (strcmp(t, "tool_use") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, "name");
		if (cJSON_IsString(x))
			w->chars += shim_chars(x->valuestring);
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
		w->chars += shim_chars(content->valuestring);
	} else if (cJSON_IsArray(content)) {
		const cJSON *b;
		cJSON_ArrayForEach(b, content)
			add_block(w, b);
	}
}

static uint64_t tokens(uint64_t chars)
{
	return (chars + CHARS_PER_TOKEN - 1) / CHARS_PER_TOKEN;
}

/* Cost of one Messages request object (the body, or a batch's params). */
static int params_cost(const cJSON *root, struct shim_req *out)
{
	if (!cJSON_IsObject(root))
		return -EINVAL;
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	if (!cJSON_IsString(model) || model->valuestring[0] == '\0' ||
	    strlen(model->valuestring) > SHL_PATTERN_MAX)
		return -EINVAL;
	struct walk w = {0, 0, 0};
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
	x = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
	if (cJSON_IsNumber(x) && x->valuedouble > 0)
		out->cost.max_tokens = x->valuedouble > 4294967295.0 ? 4294967295u
								      : (uint64_t)x->valuedouble;
	x = cJSON_GetObjectItemCaseSensitive(root, "stream");
	out->stream = cJSON_IsTrue(x);
	return 0;
}

int shim_req_parse(const char *body, size_t len, enum shim_kind kind, struct shim_req *out)
{
	if (body == NULL)
		return -EINVAL;
	cJSON *root = cJSON_ParseWithLength(body, len);
	if (root == NULL)
		return -EINVAL;
	int r;
	if (kind != SHIM_KIND_BATCH) {
		r = params_cost(root, out);
		if (kind == SHIM_KIND_COUNT && r == 0) {
			/* count_tokens generates nothing and is not billed: RPM only. */
			memset(&out->cost, 0, sizeof(out->cost));
			out->stream = 0;
		}
	} else {
		/* A batch: the sum of its requests, at Batch prices. */
		const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(root, "requests");
		const cJSON *it;
		struct shim_req one;
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
			/* Saturated like one request's: a batch of many large
			 * max_tokens passes any bucket either way. */
			out->cost.max_tokens += one.cost.max_tokens;
			if (out->cost.max_tokens > 4294967295u)
				out->cost.max_tokens = 4294967295u;
			r = 0;
		}
		out->cost.batch = 1;
	}
	cJSON_Delete(root);
	return r;
}
