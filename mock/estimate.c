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
 * The count is the preload shim's estimate (preload/request.c), made exact
 * here by definition, so that a test can compare what the shim charged at
 * admission with what the server reports:
 *
 *   characters  UTF-8 code points of every piece of text, in prompt order:
 *               each element of `tools` as compact JSON, then `system`,
 *               then each message's `content` (a string, or blocks);
 *   blocks      text: its text; thinking: its thinking; tool_use: its
 *               name and its input as compact JSON; tool_result: its
 *               content (string or blocks, recursively); image/document:
 *               source.data when source.type is "text", else a flat 1600
 *               tokens; any other block: its compact JSON;
 *   tokens      ceil(characters / 4).
 *
 * Caching works on prefixes, as the real API's does: a block (or tool) with
 * cache_control ends a cache prefix, identified by a hash of all the text up
 * to and including it.  The longest prefix already cached is read; the text
 * from there to the last breakpoint is written (to the 1 h cache up to the
 * last "1h" breakpoint, the rest to the 5 min cache); the text after the
 * last breakpoint is uncached input.  Token counts are differences of
 * ceil(cumulative characters / 4), so the parts always add up to the whole.
 */

#define CHARS_PER_TOKEN 4
#define MEDIA_TOKENS 1600

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
	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80) /* not a continuation */
			e->chars++;
	e->hash = fnv_add(e->hash, s, n);
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
	e->bp[e->nbp].chars = e->chars;
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
			e->chars += (uint64_t)MEDIA_TOKENS * CHARS_PER_TOKEN;
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
	if (cJSON_IsArray(tools)) {
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

uint64_t estimate_tokens(uint64_t chars)
{
	return (chars + CHARS_PER_TOKEN - 1) / CHARS_PER_TOKEN;
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
		last = max_u64(last, e->bp[i].chars);
		if (e->bp[i].ttl_1h)
			last_1h = max_u64(last_1h, e->bp[i].chars);
		if (cache_seen(e->bp[i].key, now))
			hit = max_u64(hit, e->bp[i].chars);
	}
	uint64_t upto_1h = max_u64(last_1h, hit);
	uint64_t upto_5m = max_u64(last, upto_1h);
	u->read = estimate_tokens(hit);
	u->cw1h = estimate_tokens(upto_1h) - u->read;
	u->cw5m = estimate_tokens(upto_5m) - estimate_tokens(upto_1h);
	u->in = estimate_tokens(max_u64(e->chars, upto_5m)) - estimate_tokens(upto_5m);
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
