/*
 * ratelimits.c - the Rate Limits API: GET /v1/organizations/rate_limits.
 *
 * The organisation's real limits, as the Admin API reports them, from the
 * mock's own configuration: one item per pool, with the pool's limits as
 * they are now (so a POST /mock/limits mid-run shows here too) and every
 * model id and alias the configuration maps to it.  The shapes follow the
 * API's documentation:
 *
 *   {"data": [{"type": "rate_limit", "id": "rl_<pool>",
 *              "group": {"type": "model_group", "name": "<pool>"},
 *              "models": ["claude-...", ...],
 *              "limits": [{"type": "requests_per_minute", "value": N},
 *                         {"type": "input_tokens_per_minute", "value": N},
 *                         {"type": "output_tokens_per_minute", "value": N}]}],
 *    "next_page": null | "<cursor>"}
 *
 * A pool whose entries are only `message_batches` is a `batch` group and
 * one whose entries are only `count_tokens` a `token_count` group (the
 * names libshmlimit's configurations use for those endpoints), both with
 * no models and only their RPM.  A prefix entry ("claude-opus-4*") is
 * listed as its prefix ("claude-opus-4"), standing for the family's alias.
 * A dimension the mock does not limit is left out.
 *
 * Query: `limit` (1..1000, default 20) items a page; `page`, the cursor a
 * previous page's `next_page` gave (here the offset, opaque to clients).
 * The key: `x-api-key` missing or not an Admin key (prefix sk-ant-admin):
 * 401 authentication_error; a key ending in "-noaccess": 403
 * permission_error.
 *
 * Faults, for the sync tool's tests (POST /mock/rate-limits-fault with
 * {"fault": KIND}, until changed): "none", "garbage" (200 with a body that
 * is not JSON), "shape" (200, JSON without "data"), "loop" (next_page names
 * the page just served), "500" (api_error), "401", "403".
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

enum rl_fault { RLF_NONE, RLF_GARBAGE, RLF_SHAPE, RLF_LOOP, RLF_500, RLF_401, RLF_403 };
static const char *const rl_fault_names[] = {"none", "garbage", "shape", "loop",
					     "500",  "401",     "403"};
static _Atomic int rl_fault;

#define PAGE_DEFAULT 20
#define PAGE_MAX 1000

/* The value of `key` in a query string "a=1&b=2" (no decoding: the mock's
 * cursors and numbers need none), copied into out; 1 if present. */
static int query_get(const char *q, const char *key, char *out, size_t len)
{
	size_t kl = strlen(key);
	for (const char *p = q; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t n = amp ? (size_t)(amp - p) : strlen(p);
		if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t vl = n - kl - 1;
			if (vl >= len)
				vl = len - 1;
			memcpy(out, p + kl + 1, vl);
			out[vl] = '\0';
			return 1;
		}
		p = amp ? amp + 1 : NULL;
	}
	return 0;
}

/* What kind of group pool i is: 0 model_group, 1 batch, 2 token_count. */
static int group_kind(const struct limits *l, int i)
{
	int batch = 0, count = 0, other = 0;
	for (int k = 0; k < l->nrules; k++) {
		const struct model_rule *r = &l->rules[k];
		if (r->pool != i)
			continue;
		if (!r->prefix && strcmp(r->match, "message_batches") == 0)
			batch++;
		else if (!r->prefix && strcmp(r->match, "count_tokens") == 0)
			count++;
		else
			other++;
	}
	return other ? 0 : batch ? 1 : count ? 2 : 0;
}

static cJSON *item_json(struct limits *l, int i)
{
	static const char *const gtype[] = {"model_group", "batch", "token_count"};
	static const char *const ltype[NDIM] = {"requests_per_minute", "input_tokens_per_minute",
						"output_tokens_per_minute"};
	int kind = group_kind(l, i);
	char id[96];
	snprintf(id, sizeof(id), "rl_%s", l->pools[i].name);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "type", "rate_limit");
	cJSON_AddStringToObject(o, "id", id);
	cJSON *g = cJSON_AddObjectToObject(o, "group");
	cJSON_AddStringToObject(g, "type", gtype[kind]);
	cJSON_AddStringToObject(g, "name", l->pools[i].name);
	cJSON *models = cJSON_AddArrayToObject(o, "models");
	for (int k = 0; kind == 0 && k < l->nrules; k++) {
		const struct model_rule *r = &l->rules[k];
		if (r->pool == i)
			cJSON_AddItemToArray(models, cJSON_CreateString(r->match));
	}
	double lim[NDIM];
	limits_get(l, i, lim);
	cJSON *arr = cJSON_AddArrayToObject(o, "limits");
	for (int d = 0; d < NDIM; d++) {
		if (lim[d] <= 0 || (kind != 0 && d != DIM_RPM))
			continue;
		cJSON *x = cJSON_CreateObject();
		cJSON_AddStringToObject(x, "type", ltype[d]);
		cJSON_AddNumberToObject(x, "value", lim[d]);
		cJSON_AddItemToArray(arr, x);
	}
	return o;
}

int ratelimits_handle(struct ctx *c)
{
	struct http_req *r = c->r;
	int keep;
	if (strcmp(r->method, "GET") != 0) {
		keep = send_error(c, 405, "invalid_request_error", "mock: use GET", NULL);
		goto out;
	}
	const char *key = http_header(r, "x-api-key");
	int fault = atomic_load(&rl_fault);
	if (key == NULL || strncmp(key, "sk-ant-admin", 12) != 0 || fault == RLF_401) {
		keep = send_error(c, 401, "authentication_error",
				  key == NULL ? "x-api-key header is required"
					      : "invalid x-api-key: this endpoint needs an Admin API key",
				  NULL);
		goto out;
	}
	size_t kl = strlen(key);
	if ((kl >= 9 && strcmp(key + kl - 9, "-noaccess") == 0) || fault == RLF_403) {
		keep = send_error(c, 403, "permission_error",
				  "this key may not read the organization's rate limits", NULL);
		goto out;
	}
	if (fault == RLF_500) {
		keep = send_error(c, 500, "api_error", "mock: scripted internal error", NULL);
		goto out;
	}
	if (fault == RLF_GARBAGE) {
		static const char junk[] = "<html>not the API</html>\n";
		keep = send_body(c, 200, "application/json", junk, sizeof(junk) - 1, r->keep_alive, 0);
		c->o.status = 200;
		goto out;
	}
	char v[64];
	uint64_t limit = PAGE_DEFAULT, offset = 0;
	if (query_get(r->query, "limit", v, sizeof(v)) &&
	    (parse_u64(v, PAGE_MAX, &limit) != 0 || limit < 1)) {
		keep = send_error(c, 400, "invalid_request_error",
				  "limit: expected an integer from 1 to 1000", NULL);
		goto out;
	}
	if (query_get(r->query, "page", v, sizeof(v)) &&
	    (v[0] != 'p' || parse_u64(v + 1, 1000000, &offset) != 0)) {
		keep = send_error(c, 400, "invalid_request_error", "page: not a cursor", NULL);
		goto out;
	}
	struct limits *l = mock_cfg->limits;
	int n = l != NULL ? l->npools : 0;
	cJSON *root = cJSON_CreateObject();
	cJSON *data = fault == RLF_SHAPE ? cJSON_AddArrayToObject(root, "items")
					 : cJSON_AddArrayToObject(root, "data");
	uint64_t i = offset;
	for (; i < (uint64_t)n && i < offset + limit; i++)
		cJSON_AddItemToArray(data, item_json(l, (int)i));
	if (i < (uint64_t)n || fault == RLF_LOOP) {
		snprintf(v, sizeof(v), "p%llu", (unsigned long long)(fault == RLF_LOOP ? offset : i));
		cJSON_AddStringToObject(root, "next_page", v);
	} else
		cJSON_AddNullToObject(root, "next_page");
	char *body = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	c->o.status = 200;
	keep = send_json(c, 200, body, r->keep_alive, 0);
out:
	stats_record(&c->o);
	return keep;
}

int ratelimits_fault(struct ctx *c)
{
	struct http_req *r = c->r;
	if (strcmp(r->method, "POST") != 0)
		return send_error(c, 405, "invalid_request_error", "mock: use POST", NULL);
	cJSON *j = cJSON_ParseWithLength(r->body ? r->body : "", r->body_len);
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "fault");
	int k = -1;
	for (int i = 0; cJSON_IsString(f) && i < (int)(sizeof(rl_fault_names) / sizeof(rl_fault_names[0]));
	     i++)
		if (strcmp(f->valuestring, rl_fault_names[i]) == 0)
			k = i;
	cJSON_Delete(j);
	if (k < 0)
		return send_error(c, 400, "invalid_request_error",
				  "mock: /mock/rate-limits-fault: expected {\"fault\": \"none\" | "
				  "\"garbage\" | \"shape\" | \"loop\" | \"500\" | \"401\" | \"403\"}",
				  NULL);
	atomic_store(&rl_fault, k);
	return send_json(c, 200, strdup("{\"ok\":true}"), r->keep_alive, 0);
}
