/*
 * estimate.c - the usage of a request: its text, its token count, and the
 * prompt cache that decides which part is read, written or uncached input.
 *
 * Usage is deterministic so that tests can predict it; see the comment
 * below and mock/README.md ("Usage: how tokens are counted").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* ------------------------------------------------------------------ */
/* The prompt cache: a bounded set of prefixes seen                    */
/* ------------------------------------------------------------------ */

#define CACHE_SLOTS 65536                     /* power of two */
#define CACHE_MAX (CACHE_SLOTS / 4 * 3)       /* then forget everything */
#define TTL_5M_NS (300LL * 1000000000LL)
#define TTL_1H_NS (3600LL * 1000000000LL)

/* Open addressing on a 64-bit hash of a prefix (0 = empty slot).
 * Guarded by cache_mu.  An entry is live until its expiry; a hit extends
 * it, like the real cache's refresh on use. */
static struct cache_slot {
	uint64_t key;
	int64_t expires_ns;
} cache[CACHE_SLOTS];
static int cache_count;
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;

static struct cache_slot *cache_slot(uint64_t key)
{
	size_t i = (size_t)(key * 0x9E3779B97F4A7C15ULL >> 48) & (CACHE_SLOTS - 1);
	while (cache[i].key != 0 && cache[i].key != key)
		i = (i + 1) & (CACHE_SLOTS - 1);
	return &cache[i];
}

static int cache_seen(uint64_t key, int64_t now)
{
	pthread_mutex_lock(&cache_mu);
	struct cache_slot *s = cache_slot(key);
	int hit = s->key == key && s->expires_ns > now;
	pthread_mutex_unlock(&cache_mu);
	return hit;
}

static void cache_put(uint64_t key, int64_t expires)
{
	pthread_mutex_lock(&cache_mu);
	if (cache_count >= CACHE_MAX) {
		memset(cache, 0, sizeof(cache));
		cache_count = 0;
	}
	struct cache_slot *s = cache_slot(key);
	if (s->key == 0) {
		s->key = key;
		cache_count++;
	}
	if (expires > s->expires_ns)
		s->expires_ns = expires;
	pthread_mutex_unlock(&cache_mu);
}

/* ------------------------------------------------------------------ */
/* Usage of a request                                                   */
/* ------------------------------------------------------------------ */

/*
 * The count is the server's own (tokenize.c), not the preload shim's
 * estimate: the point of the mock is to be a judge that can disagree.
 *
 *   text         every piece, in prompt order: each element of `tools` as
 *                compact JSON, then `system`, then each message's `content`
 *                (a string, or blocks), counted by tokenize();
 *   tools        a non-empty `tools` array also costs TOOL_PROMPT_TOKENS,
 *                counted before the first tool (the tool-use system prompt
 *                the real API adds);
 *   blocks       text: its text; thinking: its thinking; tool_use: its
 *                name and its input as compact JSON; tool_result: its
 *                content (string or blocks, recursively); image or document
 *                with source.type "text": source.data; a base64 PNG, GIF or
 *                JPEG image whose size can be read: ceil(width x height /
 *                750), at least 1 and at most MEDIA_TOKENS; any other image
 *                or document: MEDIA_TOKENS; any other block: its compact
 *                JSON;
 *   scale        --token-scale F multiplies the count: every reported
 *                figure is a difference of ceil(F x cumulative tokens).
 *
 * Caching works on prefixes, as the real API's does: a block (or tool) with
 * cache_control ends a cache prefix, identified by a hash of all the text up
 * to and including it.  The longest prefix already cached is read; the text
 * from there to the last breakpoint is written (to the 1 h cache up to the
 * last "1h" breakpoint, the rest to the 5 min cache); the text after the
 * last breakpoint is uncached input.  Token counts are differences of the
 * scaled cumulative count, so the parts always add up to the whole.
 */

#define MEDIA_TOKENS 1600
#define TOOL_PROMPT_TOKENS 346
#define PIXELS_PER_TOKEN 750

static uint64_t fnv_add(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

uint64_t fnv(const char *s, size_t n)
{
	return fnv_add(FNV_INIT, s, n);
}

static void add_text(struct estimate *e, const char *s)
{
	size_t n = strlen(s);
	e->tokens += tokenize(s, n);
	e->hash = fnv_add(e->hash, s, n);
}

/* Standard base64 of the first `max` decoded bytes of `in` into out;
 * returns how many were decoded (stops at the first non-alphabet byte). */
static size_t b64_prefix(const char *in, unsigned char *out, size_t max)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t len = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (; *in != '\0' && len < max; in++) {
		const char *q = strchr(alpha, *in);
		if (q == NULL)
			break;
		acc = acc << 6 | (uint32_t)(q - alpha);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[len++] = (unsigned char)(acc >> bits & 0xff);
		}
	}
	return len;
}

/*
 * The width and height of a PNG, GIF or (baseline or progressive) JPEG
 * image given as base64; 0 if they cannot be read.  JPEG: the first SOFn
 * marker within the first 64 KiB.
 */
static int image_size(const char *b64, uint32_t *w, uint32_t *h)
{
	enum { MAX = 65536 };
	unsigned char *d = malloc(MAX);
	if (d == NULL)
		return 0;
	size_t n = b64_prefix(b64, d, MAX);
	int ok = 0;
	if (n >= 24 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0 &&
	    memcmp(d + 12, "IHDR", 4) == 0) {
		*w = (uint32_t)d[16] << 24 | (uint32_t)d[17] << 16 | (uint32_t)d[18] << 8 | d[19];
		*h = (uint32_t)d[20] << 24 | (uint32_t)d[21] << 16 | (uint32_t)d[22] << 8 | d[23];
		ok = 1;
	} else if (n >= 10 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) {
		*w = (uint32_t)d[6] | (uint32_t)d[7] << 8;
		*h = (uint32_t)d[8] | (uint32_t)d[9] << 8;
		ok = 1;
	} else if (n >= 4 && d[0] == 0xff && d[1] == 0xd8) {
		size_t i = 2;
		while (i + 9 <= n && d[i] == 0xff) {
			unsigned char m = d[i + 1];
			size_t seg = (size_t)d[i + 2] << 8 | d[i + 3];
			if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
				*h = (uint32_t)d[i + 5] << 8 | d[i + 6];
				*w = (uint32_t)d[i + 7] << 8 | d[i + 8];
				ok = 1;
				break;
			}
			i += 2 + seg;
		}
	}
	free(d);
	return ok && *w > 0 && *h > 0;
}

/* The tokens of a media block that is not text. */
static uint64_t media_tokens(const char *type, const cJSON *src)
{
	const cJSON *stype = cJSON_GetObjectItemCaseSensitive(src, "type");
	const cJSON *data = cJSON_GetObjectItemCaseSensitive(src, "data");
	uint32_t w, h;
	if (strcmp(type, "image") == 0 && cJSON_IsString(stype) &&
	    strcmp(stype->valuestring, "base64") == 0 && cJSON_IsString(data) &&
	    image_size(data->valuestring, &w, &h)) {
		uint64_t t = ((uint64_t)w * h + PIXELS_PER_TOKEN - 1) / PIXELS_PER_TOKEN;
		return t > MEDIA_TOKENS ? MEDIA_TOKENS : t;
	}
	return MEDIA_TOKENS;
}

static void add_json(struct estimate *e, const cJSON *v)
{
	char *s = cJSON_PrintUnformatted(v);
	if (s != NULL) {
		add_text(e, s);
		cJSON_free(s);
	}
}

/* If obj carries cache_control, the prefix so far is a breakpoint. */
static void mark(struct estimate *e, const cJSON *obj)
{
	const cJSON *cc = cJSON_GetObjectItemCaseSensitive(obj, "cache_control");
	if (!cJSON_IsObject(cc) || e->nbp == MAX_BREAKPOINTS)
		return;
	const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(cc, "ttl");
	e->bp[e->nbp].key = e->hash ? e->hash : 1;
	e->bp[e->nbp].tokens = e->tokens;
	e->bp[e->nbp].ttl_1h = cJSON_IsString(ttl) && strcmp(ttl->valuestring, "1h") == 0;
	e->nbp++;
}

static void add_content(struct estimate *e, const cJSON *content);

static void add_block(struct estimate *e, const cJSON *b)
{
	if (cJSON_IsString(b)) {
		add_text(e, b->valuestring);
		return;
	}
	if (!cJSON_IsObject(b))
		return;
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(b, "type");
	const char *t = cJSON_IsString(type) ? type->valuestring : "";
	const cJSON *x;
	if (strcmp(t, "text") == 0 || strcmp(t, "thinking") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, t);
		if (cJSON_IsString(x))
			add_text(e, x->valuestring);
	} else if (strcmp(t, "image") == 0 || strcmp(t, "document") == 0) {
		const cJSON *src = cJSON_GetObjectItemCaseSensitive(b, "source");
		const cJSON *stype = cJSON_GetObjectItemCaseSensitive(src, "type");
		const cJSON *data = cJSON_GetObjectItemCaseSensitive(src, "data");
		if (cJSON_IsString(stype) && strcmp(stype->valuestring, "text") == 0 &&
		    cJSON_IsString(data)) {
			add_text(e, data->valuestring);
		} else {
			e->tokens += media_tokens(t, src);
			if (cJSON_IsString(data))
				e->hash = fnv_add(e->hash, data->valuestring,
						  strlen(data->valuestring));
		}
	} else if (strcmp(t, "tool_use") == 0) {
		x = cJSON_GetObjectItemCaseSensitive(b, "name");
		if (cJSON_IsString(x))
			add_text(e, x->valuestring);
		x = cJSON_GetObjectItemCaseSensitive(b, "input");
		if (x != NULL)
			add_json(e, x);
	} else if (strcmp(t, "tool_result") == 0) {
		add_content(e, cJSON_GetObjectItemCaseSensitive(b, "content"));
	} else {
		add_json(e, b);
	}
	mark(e, b);
}

static void add_content(struct estimate *e, const cJSON *content)
{
	if (cJSON_IsString(content)) {
		add_text(e, content->valuestring);
	} else if (cJSON_IsArray(content)) {
		const cJSON *b;
		cJSON_ArrayForEach(b, content)
			add_block(e, b);
	}
}

void estimate_request(const cJSON *req, struct estimate *e)
{
	memset(e, 0, sizeof(*e));
	e->hash = FNV_INIT;
	const cJSON *x;
	const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
	if (cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0) {
		e->tokens += TOOL_PROMPT_TOKENS;
		cJSON_ArrayForEach(x, tools) {
			add_json(e, x);
			mark(e, x);
		}
	}
	add_content(e, cJSON_GetObjectItemCaseSensitive(req, "system"));
	const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
	cJSON_ArrayForEach(x, msgs)
		add_content(e, cJSON_GetObjectItemCaseSensitive(x, "content"));
}

uint64_t estimate_scaled(uint64_t tokens)
{
	uint64_t milli = mock_cfg->token_scale_milli ? mock_cfg->token_scale_milli : 1000;
	return (tokens * milli + 999) / 1000;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* Split the estimate into cache reads, 1 h and 5 min writes, and input. */
void estimate_classify(const struct estimate *e, struct usage *u)
{
	int64_t now = mono_ns();
	uint64_t hit = 0, last = 0, last_1h = 0;
	for (int i = 0; i < e->nbp; i++) {
		last = max_u64(last, e->bp[i].tokens);
		if (e->bp[i].ttl_1h)
			last_1h = max_u64(last_1h, e->bp[i].tokens);
		if (cache_seen(e->bp[i].key, now))
			hit = max_u64(hit, e->bp[i].tokens);
	}
	uint64_t upto_1h = max_u64(last_1h, hit);
	uint64_t upto_5m = max_u64(last, upto_1h);
	u->read = estimate_scaled(hit);
	u->cw1h = estimate_scaled(upto_1h) - u->read;
	u->cw5m = estimate_scaled(upto_5m) - estimate_scaled(upto_1h);
	u->in = estimate_scaled(max_u64(e->tokens, upto_5m)) - estimate_scaled(upto_5m);
}

/* The request was admitted: its prefixes are now cached (or refreshed). */
void estimate_commit_cache(const struct estimate *e)
{
	int64_t now = mono_ns();
	for (int i = 0; i < e->nbp; i++)
		cache_put(e->bp[i].key, now + (e->bp[i].ttl_1h ? TTL_1H_NS : TTL_5M_NS));
}

/* "in,out,cw5m,cw1h,read" */
int usage_parse_header(const char *s, struct usage *u)
{
	uint64_t v[5];
	char part[32];
	for (int i = 0; i < 5; i++) {
		const char *end = strchr(s, ',');
		size_t n = end ? (size_t)(end - s) : strlen(s);
		if ((end == NULL) != (i == 4) || n >= sizeof(part))
			return -EINVAL;
		memcpy(part, s, n);
		part[n] = '\0';
		if (parse_u64(part, 1ULL << 40, &v[i]) < 0)
			return -EINVAL;
		s = end ? end + 1 : s + n;
	}
	u->in = v[0];
	u->out = v[1];
	u->cw5m = v[2];
	u->cw1h = v[3];
	u->read = v[4];
	return 0;
}
