/*
 * sync.c - `shmlimit-ctl sync NAME`: make a live segment's configuration
 * match the organisation's real limits, as the Rate Limits API reports
 * them (GET /v1/organizations/rate_limits, Admin API key).
 *
 * What it does, in order, and why in that order:
 *   1. Fetch every page (`next_page` cursors) before anything else: an
 *      error on page 3 must not leave a segment configured from pages 1-2.
 *   2. Check every item it will use (group type, models, limits): an
 *      answer it cannot read changes nothing, and the message names the
 *      item and the field.
 *   3. Build the new configuration from the live one: one pool per
 *      `model_group` (a pool that already governs one of the group's ids
 *      keeps its name, so it keeps its bucket state, its prices and its
 *      options), every id and alias listed as an exact model entry; the
 *      `batch` group becomes the `message_batches` entry's pool and the
 *      `token_count` group the `count_tokens` entry's (the ids the
 *      request/response component looks up for those endpoints; see
 *      preload/README.md).  The API has no prices: an id keeps the price
 *      the live configuration gives it, else the built-in presets', else
 *      the live catch-all pool's (unknown_model), else it is an error.
 *      Pools and entries the API does not mention stay as they are, and
 *      so do the spend cap and the unknown_model policy.  Limits the API
 *      gives replace provisional ones (the flag is dropped).
 *   4. Compare by name (pools) and by match (models): no difference, no
 *      apply -- a second sync is a no-op and the generation stays.
 *      --dry-run prints the difference; otherwise shl_apply.
 *
 * It deliberately does not remove anything: a pool the API stopped
 * listing may still have traffic in flight, and an operator removes it
 * with apply.  Group types other than the three above (files, skills,
 * web_search) are named on stderr and skipped: no request of those kinds
 * is governed.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "shmlimit.h"
#include "sync.h"

#define PROG "shmlimit-ctl sync"
/* tools/check-flag-docs.sh reads this line and the table below. */
#define SYNC_SHORTOPTS "nu:T:P:h"

static const struct option sync_opts[] = {
	{"dry-run", no_argument, NULL, 'n'},
	{"base-url", required_argument, NULL, 'u'},
	{"timeout", required_argument, NULL, 'T'},
	{"page-size", required_argument, NULL, 'P'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

#define KEY_ENV "ANTHROPIC_ADMIN_KEY"
#define URL_ENV "SHMLIMIT_ADMIN_URL"
#define DEFAULT_URL "https://api.anthropic.com"
#define API_VERSION "2023-06-01"
#define MAX_PAGES 1000
#define MAX_BODY (16u << 20)
#define LIMIT_NONE 1000000000000.0 /* the largest limit a configuration takes: no limit */

/* ------------------------------------------------------------------ */
/* HTTP                                                                 */
/* ------------------------------------------------------------------ */

struct body {
	char *p;
	size_t n;
	int too_big;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct body *b = ud;
	size_t n = size * nmemb;
	if (b->n + n > MAX_BODY) {
		b->too_big = 1;
		return 0;
	}
	char *q = realloc(b->p, b->n + n + 1);
	if (q == NULL)
		return 0;
	memcpy(q + b->n, ptr, n);
	b->n += n;
	q[b->n] = '\0';
	b->p = q;
	return n;
}

/* The API's own error message from an error body, if it has one. */
static const char *api_message(const char *body, char *out, size_t len)
{
	out[0] = '\0';
	cJSON *j = body ? cJSON_Parse(body) : NULL;
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
	if (cJSON_IsString(m))
		snprintf(out, len, ": %s", m->valuestring);
	cJSON_Delete(j);
	return out;
}

/* GET one page; returns 0 (200, body filled) or an exit code, said. */
static int get_page(CURL *c, const char *url, struct curl_slist *hdrs, long timeout_ms,
		    struct body *b)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	b->n = 0;
	b->too_big = 0;
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "shmlimit-ctl/" SHL_VERSION_STRING);
	CURLcode rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		if (b->too_big)
			fprintf(stderr, PROG ": %s: the answer is larger than %u bytes\n", url,
				MAX_BODY);
		else
			fprintf(stderr, PROG ": cannot reach the Rate Limits API at %s: %s\n", url,
				errbuf[0] ? errbuf : curl_easy_strerror(rc));
		return b->too_big ? TX_API_BAD : TX_API_NET;
	}
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	char msg[300];
	if (status == 401 || status == 403) {
		fprintf(stderr,
			PROG ": the Admin API refused the key in $" KEY_ENV " (HTTP %ld%s); "
			     "the Rate Limits API needs an Admin API key (sk-ant-admin...)%s\n",
			status, api_message(b->p, msg, sizeof(msg)),
			status == 403 ? " with access to the organisation's rate limits" : "");
		return TX_API_AUTH;
	}
	if (status != 200) {
		fprintf(stderr, PROG ": the Rate Limits API answered HTTP %ld%s (%s)\n", status,
			api_message(b->p, msg, sizeof(msg)), url);
		return TX_API_NET;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Reading the answer                                                   */
/* ------------------------------------------------------------------ */

enum gkind { G_MODELS, G_BATCH, G_COUNT, G_OTHER };

struct group {
	enum gkind kind;
	char type[32];
	char name[SHL_NAME_MAX + 1]; /* a name derived from the group, if it has one */
	double limit[3];	     /* rpm, itpm, otpm; 0: not given */
	const cJSON *models;	     /* array of strings (in the fetched items) */
};

static const char *const limit_types[3] = {"requests_per_minute", "input_tokens_per_minute",
					   "output_tokens_per_minute"};

static int bad_answer(const char *where, const char *what)
{
	fprintf(stderr, PROG ": the Rate Limits API's answer cannot be read: %s: %s; nothing "
			"was changed\n", where, what);
	return TX_API_BAD;
}

/* A pool name from free text: [A-Za-z0-9._-], at most 31, else "". */
static void pool_name_of(const char *s, char *out, size_t len)
{
	size_t j = 0;
	for (; s && *s && j + 1 < len && j < SHL_NAME_MAX; s++) {
		char c = *s;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			 c == '.' || c == '_' || c == '-';
		out[j++] = ok ? c : '-';
	}
	out[j] = '\0';
}

static int read_item(const cJSON *it, int i, struct group *g)
{
	char where[64];
	snprintf(where, sizeof(where), "data[%d]", i);
	memset(g, 0, sizeof(*g));
	if (!cJSON_IsObject(it))
		return bad_answer(where, "expected an object");
	const cJSON *grp = cJSON_GetObjectItemCaseSensitive(it, "group");
	const cJSON *gt = cJSON_GetObjectItemCaseSensitive(grp, "type");
	if (!cJSON_IsString(gt))
		return bad_answer(where, "group.type: expected a string");
	snprintf(g->type, sizeof(g->type), "%s", gt->valuestring);
	g->kind = strcmp(gt->valuestring, "model_group") == 0   ? G_MODELS
		  : strcmp(gt->valuestring, "batch") == 0	 ? G_BATCH
		  : strcmp(gt->valuestring, "token_count") == 0 ? G_COUNT
								 : G_OTHER;
	if (g->kind == G_OTHER)
		return 0;
	const cJSON *gn = cJSON_GetObjectItemCaseSensitive(grp, "name");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
	pool_name_of(cJSON_IsString(gn) ? gn->valuestring : cJSON_IsString(id) ? id->valuestring : NULL,
		     g->name, sizeof(g->name));
	const cJSON *models = cJSON_GetObjectItemCaseSensitive(it, "models");
	if (models != NULL && !cJSON_IsNull(models)) {
		if (!cJSON_IsArray(models))
			return bad_answer(where, "models: expected an array of model ids");
		int k = 0;
		for (const cJSON *m = models->child; m; m = m->next, k++) {
			size_t n = cJSON_IsString(m) ? strlen(m->valuestring) : 0;
			int ok = n > 0 && n <= SHL_PATTERN_MAX;
			for (size_t c = 0; ok && c < n; c++)
				ok = m->valuestring[c] > ' ' && m->valuestring[c] < 0x7f &&
				     m->valuestring[c] != '"' && m->valuestring[c] != '\\' &&
				     m->valuestring[c] != '*';
			if (!ok) {
				snprintf(where, sizeof(where), "data[%d].models[%d]", i, k);
				return bad_answer(where, "expected a model id (1 to 63 printable "
							 "characters)");
			}
		}
		g->models = models;
	}
	if (g->kind == G_MODELS && cJSON_GetArraySize(g->models) == 0)
		return bad_answer(where, "a model_group with no models");
	const cJSON *limits = cJSON_GetObjectItemCaseSensitive(it, "limits");
	if (!cJSON_IsArray(limits))
		return bad_answer(where, "limits: expected an array");
	int k = 0;
	for (const cJSON *l = limits->child; l; l = l->next, k++) {
		const cJSON *lt = cJSON_GetObjectItemCaseSensitive(l, "type");
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(l, "value");
		snprintf(where, sizeof(where), "data[%d].limits[%d]", i, k);
		if (!cJSON_IsString(lt))
			return bad_answer(where, "type: expected a string");
		for (int d = 0; d < 3; d++) {
			if (strcmp(lt->valuestring, limit_types[d]) != 0)
				continue;
			if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1) ||
			    v->valuedouble > LIMIT_NONE || v->valuedouble != (double)(int64_t)v->valuedouble)
				return bad_answer(where, "value: expected a positive integer up to "
							 "10^12");
			g->limit[d] = v->valuedouble;
		}
	}
	if (g->limit[0] == 0) {
		snprintf(where, sizeof(where), "data[%d]", i);
		return bad_answer(where, "no requests_per_minute limit");
	}
	if (g->kind == G_MODELS && (g->limit[1] == 0 || g->limit[2] == 0)) {
		snprintf(where, sizeof(where), "data[%d]", i);
		return bad_answer(where, "a model_group without input_tokens_per_minute and "
					 "output_tokens_per_minute limits");
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* The configuration as JSON objects                                    */
/* ------------------------------------------------------------------ */

static cJSON *by_key(const cJSON *arr, const char *key, const char *val)
{
	for (cJSON *o = arr ? arr->child : NULL; o; o = o->next) {
		const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, key);
		if (cJSON_IsString(k) && strcmp(k->valuestring, val) == 0)
			return o;
	}
	return NULL;
}

/* The entry of `models` an id resolves to: exact, else the longest prefix. */
static const cJSON *match_entry(const cJSON *models, const char *id)
{
	const cJSON *best = NULL;
	size_t best_len = 0;
	for (const cJSON *o = models ? models->child : NULL; o; o = o->next) {
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "match");
		if (!cJSON_IsString(m))
			continue;
		size_t n = strlen(m->valuestring);
		if (n && m->valuestring[n - 1] == '*') {
			if (strncmp(m->valuestring, id, n - 1) == 0 && (best == NULL || n - 1 > best_len)) {
				best = o;
				best_len = n - 1;
			}
		} else if (strcmp(m->valuestring, id) == 0)
			return o;
	}
	return best;
}

/* The prices an entry of configuration `cfg` gives: its own or its pool's. */
static const cJSON *entry_prices(const cJSON *cfg, const cJSON *entry)
{
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(entry, "prices");
	if (p)
		return p;
	const cJSON *pn = cJSON_GetObjectItemCaseSensitive(entry, "pool");
	const cJSON *pool = cJSON_IsString(pn)
				    ? by_key(cJSON_GetObjectItemCaseSensitive(cfg, "pools"), "name",
					     pn->valuestring)
				    : NULL;
	return cJSON_GetObjectItemCaseSensitive(pool, "prices");
}

/* Parsed built-in presets, for the prices of ids the live config lacks. */
static cJSON *presets[16];
static int npresets;

static void load_presets(void)
{
	char names[512];
	snprintf(names, sizeof(names), "%s", shl_preset_names());
	char *save = NULL;
	for (char *n = strtok_r(names, ",", &save); n && npresets < 16;
	     n = strtok_r(NULL, ",", &save)) {
		const char *j = shl_preset_json_named(n);
		cJSON *c = j ? cJSON_Parse(j) : NULL;
		if (c)
			presets[npresets++] = c;
	}
}

/* The prices of a model id, as the text says where they came from. */
static const cJSON *price_of(const cJSON *live, const char *id, const char **from)
{
	const cJSON *e = match_entry(cJSON_GetObjectItemCaseSensitive(live, "models"), id);
	if (e) {
		*from = "live configuration";
		return entry_prices(live, e);
	}
	for (int i = 0; i < npresets; i++) {
		e = match_entry(cJSON_GetObjectItemCaseSensitive(presets[i], "models"), id);
		if (e) {
			*from = "built-in presets";
			return entry_prices(presets[i], e);
		}
	}
	const cJSON *u = cJSON_GetObjectItemCaseSensitive(live, "unknown_model");
	const cJSON *up = cJSON_GetObjectItemCaseSensitive(u, "pool");
	if (cJSON_IsString(up)) {
		const cJSON *pool =
			by_key(cJSON_GetObjectItemCaseSensitive(live, "pools"), "name", up->valuestring);
		*from = "the catch-all pool";
		return cJSON_GetObjectItemCaseSensitive(pool, "prices");
	}
	return NULL;
}

/* The pool a live entry sends `id` to, by name, if any (not the catch-all). */
static const char *live_pool_of(const cJSON *live, const char *id)
{
	const cJSON *e = match_entry(cJSON_GetObjectItemCaseSensitive(live, "models"), id);
	const cJSON *pn = cJSON_GetObjectItemCaseSensitive(e, "pool");
	return cJSON_IsString(pn) ? pn->valuestring : NULL;
}

static int name_taken(char taken[][SHL_NAME_MAX + 1], int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(taken[i], name) == 0)
			return 1;
	return 0;
}

static void set_num(cJSON *o, const char *k, double v)
{
	cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
	if (x)
		cJSON_SetNumberValue(x, v);
	else
		cJSON_AddNumberToObject(o, k, v);
}

/*
 * The new configuration: the live one (`live`, as shl_config_to_json
 * writes it) with the groups' pools and ids.  Returns a new object, or
 * NULL with the exit code in *rc (said).
 */
static cJSON *build(const cJSON *live, const struct group *g, int ng, int *rc)
{
	cJSON *out = cJSON_Duplicate(live, 1);
	cJSON *pools = cJSON_GetObjectItemCaseSensitive(out, "pools");
	cJSON *models = cJSON_GetObjectItemCaseSensitive(out, "models");
	if (models == NULL)
		models = cJSON_AddArrayToObject(out, "models");
	char taken[SHL_MAX_POOLS][SHL_NAME_MAX + 1];
	int ntaken = 0;
	*rc = TX_FAIL;
	for (int i = 0; i < ng; i++) {
		if (g[i].kind == G_OTHER)
			continue;
		const char *special = g[i].kind == G_BATCH ? "message_batches"
				      : g[i].kind == G_COUNT ? "count_tokens"
							     : NULL;
		if (ntaken == SHL_MAX_POOLS) {
			fprintf(stderr, PROG ": the API lists more than %d groups, the most pools a "
					"segment has; nothing was changed\n", SHL_MAX_POOLS);
			cJSON_Delete(out);
			*rc = TX_CONFIG;
			return NULL;
		}
		/* The pool's name: one that already governs the group's ids. */
		char name[SHL_NAME_MAX + 1] = "";
		const char *lp = special ? live_pool_of(live, special) : NULL;
		for (const cJSON *m = g[i].models ? g[i].models->child : NULL; !special && m && !lp;
		     m = m->next) {
			const char *p = live_pool_of(live, m->valuestring);
			if (p && !name_taken(taken, ntaken, p))
				lp = p;
		}
		if (lp && !name_taken(taken, ntaken, lp))
			snprintf(name, sizeof(name), "%s", lp);
		else {
			/* A new pool: a name no group took and no live pool has
			 * (a live pool of that name governs other ids). */
			char base[SHL_NAME_MAX + 1];
			snprintf(base, sizeof(base), "%s",
				 g[i].kind == G_BATCH ? "batch"
				 : g[i].kind == G_COUNT ? "count_tokens"
				 : g[i].name[0]	 ? g[i].name
							 : "group");
			snprintf(name, sizeof(name), "%s", base);
			for (int k = 2; name_taken(taken, ntaken, name) || by_key(pools, "name", name);
			     k++)
				snprintf(name, sizeof(name), "%.24s-%d", base, k & 0xffff);
		}
		snprintf(taken[ntaken++], SHL_NAME_MAX + 1, "%s", name);
		cJSON *pool = by_key(pools, "name", name);
		/* a model group has at least one model id (parse checked it) */
		const char *first_id = g[i].kind == G_MODELS && g[i].models != NULL &&
				       g[i].models->child != NULL &&
				       cJSON_IsString(g[i].models->child) ?
				       g[i].models->child->valuestring : "";
		if (pool == NULL) {
			pool = cJSON_CreateObject();
			cJSON_AddStringToObject(pool, "name", name);
			cJSON_AddItemToArray(pools, pool);
			/* Prices: the first id's, the endpoints' as the README says:
			 * count_tokens is free, a batch is priced like the most
			 * expensive model the configuration has (the catch-all). */
			const char *from = NULL;
			const cJSON *pr = NULL;
			if (g[i].kind == G_MODELS)
				pr = price_of(live, first_id, &from);
			else if (g[i].kind == G_BATCH)
				pr = price_of(live, "message_batches", &from);
			if (g[i].kind == G_COUNT) {
				cJSON *z = cJSON_AddObjectToObject(pool, "prices");
				const char *k[] = {"input", "output", "cache_write_5m", "cache_write_1h",
						   "cache_read"};
				for (int j = 0; j < 5; j++)
					cJSON_AddNumberToObject(z, k[j], 0);
			} else if (pr == NULL) {
				fprintf(stderr,
					PROG ": no price is known for %s '%s' (the API has no prices): "
					     "add a models[] entry for it, or an unknown_model pool, "
					     "and sync again; nothing was changed\n",
					g[i].kind == G_BATCH ? "the batch group's entry" : "model",
					g[i].kind == G_BATCH ? "message_batches" : first_id);
				cJSON_Delete(out);
				*rc = TX_CONFIG;
				return NULL;
			} else
				cJSON_AddItemToObject(pool, "prices", cJSON_Duplicate(pr, 1));
		}
		/* The API's numbers; a dimension it does not limit, none. */
		for (int d = 0; d < 3; d++)
			set_num(pool, d == 0 ? "rpm" : d == 1 ? "itpm" : "otpm",
				g[i].limit[d] ? g[i].limit[d] : LIMIT_NONE);
		cJSON_DeleteItemFromObjectCaseSensitive(pool, "provisional");
		/* A configured burst larger than the new limit would be refused. */
		cJSON *burst = cJSON_GetObjectItemCaseSensitive(pool, "burst");
		for (int d = 0; burst && d < 3; d++) {
			const char *k = d == 0 ? "rpm" : d == 1 ? "itpm" : "otpm";
			cJSON *b = cJSON_GetObjectItemCaseSensitive(burst, k);
			double lim = g[i].limit[d] ? g[i].limit[d] : LIMIT_NONE;
			if (b && b->valuedouble > lim)
				cJSON_SetNumberValue(b, lim);
		}
		const cJSON *pool_prices = cJSON_GetObjectItemCaseSensitive(pool, "prices");
		/* The entries: every id and alias exactly; the endpoint's id. */
		const cJSON *ids = g[i].models;
		cJSON *one = NULL;
		if (special) {
			one = cJSON_CreateArray();
			cJSON_AddItemToArray(one, cJSON_CreateString(special));
			ids = one;
		}
		for (const cJSON *m = ids ? ids->child : NULL; m; m = m->next) {
			const char *from = NULL;
			const cJSON *pr = special ? NULL : price_of(live, m->valuestring, &from);
			cJSON *e = by_key(models, "match", m->valuestring);
			if (e == NULL) {
				e = cJSON_CreateObject();
				cJSON_AddStringToObject(e, "match", m->valuestring);
				cJSON_AddStringToObject(e, "pool", name);
				cJSON_AddItemToArray(models, e);
			} else
				cJSON_ReplaceItemInObjectCaseSensitive(e, "pool", cJSON_CreateString(name));
			if (pr) {
				/* Its own prices only where they differ from the pool's. */
				cJSON_DeleteItemFromObjectCaseSensitive(e, "prices");
				if (!cJSON_Compare(pr, pool_prices, 1))
					cJSON_AddItemToObject(e, "prices", cJSON_Duplicate(pr, 1));
			}
		}
		cJSON_Delete(one);
	}
	*rc = 0;
	return out;
}

/* ------------------------------------------------------------------ */
/* The difference                                                       */
/* ------------------------------------------------------------------ */

static int diff_keys(const char *what, const char *name, const cJSON *a, const cJSON *b)
{
	int n = 0;
	for (const cJSON *kb = b->child; kb; kb = kb->next) {
		const cJSON *ka = cJSON_GetObjectItemCaseSensitive(a, kb->string);
		if (ka && cJSON_Compare(ka, kb, 1))
			continue;
		if (!n++)
			printf("~ %s %s:", what, name);
		char *va = ka ? cJSON_PrintUnformatted(ka) : NULL;
		char *vb = cJSON_PrintUnformatted(kb);
		printf(" %s %s -> %s", kb->string, va ? va : "(none)", vb ? vb : "?");
		free(va);
		free(vb);
	}
	for (const cJSON *ka = a->child; ka; ka = ka->next)
		if (!cJSON_GetObjectItemCaseSensitive(b, ka->string)) {
			if (!n++)
				printf("~ %s %s:", what, name);
			printf(" %s removed", ka->string);
		}
	if (n)
		printf("\n");
	return n != 0;
}

/* Print what changes from `a` to `b` (both as shl_config_to_json writes);
 * returns the number of lines. */
static int diff(const cJSON *a, const cJSON *b)
{
	int n = 0;
	static const char *const arrays[2][2] = {{"pools", "name"}, {"models", "match"}};
	for (int k = 0; k < 2; k++) {
		const cJSON *aa = cJSON_GetObjectItemCaseSensitive(a, arrays[k][0]);
		const cJSON *bb = cJSON_GetObjectItemCaseSensitive(b, arrays[k][0]);
		const char *what = k == 0 ? "pool" : "model";
		for (const cJSON *o = bb ? bb->child : NULL; o; o = o->next) {
			const cJSON *key = cJSON_GetObjectItemCaseSensitive(o, arrays[k][1]);
			const cJSON *old = by_key(aa, arrays[k][1], key->valuestring);
			if (old) {
				n += diff_keys(what, key->valuestring, old, o);
				continue;
			}
			char *v = cJSON_PrintUnformatted(o);
			printf("+ %s %s\n", what, v ? v : key->valuestring);
			free(v);
			n++;
		}
		for (const cJSON *o = aa ? aa->child : NULL; o; o = o->next) {
			const cJSON *key = cJSON_GetObjectItemCaseSensitive(o, arrays[k][1]);
			if (!by_key(bb, arrays[k][1], key->valuestring)) {
				printf("- %s %s\n", what, key->valuestring);
				n++;
			}
		}
	}
	static const char *const top[] = {"spend_cap_usd", "unknown_model"};
	for (int k = 0; k < 2; k++) {
		const cJSON *x = cJSON_GetObjectItemCaseSensitive(a, top[k]);
		const cJSON *y = cJSON_GetObjectItemCaseSensitive(b, top[k]);
		if ((x == NULL) != (y == NULL) || (x && !cJSON_Compare(x, y, 1))) {
			printf("~ %s\n", top[k]);
			n++;
		}
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* The command                                                          */
/* ------------------------------------------------------------------ */

static int sync_usage_error(const char *what, const char *arg)
{
	fprintf(stderr, PROG ": %s%s%s%s\n", what, arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
	fprintf(stderr, "Try 'shmlimit-ctl sync --help'.\n");
	return TX_USAGE;
}

/* The live configuration as JSON objects (normalised by the library). */
static cJSON *config_json(const shl_config *c)
{
	char *t = shl_config_to_json(c);
	cJSON *j = t ? cJSON_Parse(t) : NULL;
	free(t);
	return j;
}

/* Fetch every page into `items` (an array); 0 or an exit code (said). */
static int fetch_all(const char *base, const char *key, long timeout_ms, unsigned page_size,
		     cJSON *items)
{
	CURL *c = curl_easy_init();
	if (c == NULL) {
		fprintf(stderr, PROG ": cannot start libcurl\n");
		return TX_FAIL;
	}
	char hk[512];
	snprintf(hk, sizeof(hk), "x-api-key: %s", key);
	struct curl_slist *hdrs = curl_slist_append(NULL, hk);
	hdrs = curl_slist_append(hdrs, "anthropic-version: " API_VERSION);
	hdrs = curl_slist_append(hdrs, "accept: application/json");
	struct body b = {0};
	char *cursor = NULL;
	int rc = 0, page = 0;
	size_t blen = strlen(base);
	while (blen && base[blen - 1] == '/')
		blen--;
	for (;; page++) {
		if (page == MAX_PAGES) {
			rc = bad_answer("next_page", "more than 1000 pages");
			break;
		}
		char *esc = cursor ? curl_easy_escape(c, cursor, 0) : NULL;
		size_t ulen = blen + 128 + (esc ? strlen(esc) : 0);
		char *url = malloc(ulen);
		if (url == NULL) {
			curl_free(esc);
			rc = TX_FAIL;
			break;
		}
		snprintf(url, ulen, "%.*s/v1/organizations/rate_limits?limit=%u%s%s", (int)blen, base,
			 page_size, esc ? "&page=" : "", esc ? esc : "");
		curl_free(esc);
		rc = get_page(c, url, hdrs, timeout_ms, &b);
		free(url);
		if (rc)
			break;
		cJSON *doc = cJSON_ParseWithLength(b.p ? b.p : "", b.n);
		cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
		cJSON *next = cJSON_GetObjectItemCaseSensitive(doc, "next_page");
		char where[48];
		snprintf(where, sizeof(where), "page %d", page + 1);
		if (doc == NULL)
			rc = bad_answer(where, "not JSON");
		else if (!cJSON_IsArray(data))
			rc = bad_answer(where, "no \"data\" array");
		else if (next != NULL && !cJSON_IsNull(next) &&
			 !(cJSON_IsString(next) && next->valuestring[0]))
			rc = bad_answer(where, "next_page: expected null or a cursor string");
		else if (cJSON_IsString(next) && cursor && strcmp(next->valuestring, cursor) == 0)
			rc = bad_answer(where, "next_page repeats the page just read");
		if (rc) {
			cJSON_Delete(doc);
			break;
		}
		while (data->child)
			cJSON_AddItemToArray(items, cJSON_DetachItemViaPointer(data, data->child));
		free(cursor);
		cursor = cJSON_IsString(next) && next != NULL ? strdup(next->valuestring) : NULL;
		cJSON_Delete(doc);
		if (cursor == NULL)
			break;
	}
	free(cursor);
	free(b.p);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	return rc;
}

int cmd_sync(int argc, char **argv)
{
	int dry = 0, c;
	const char *base = getenv(URL_ENV);
	int64_t timeout_ns = 30LL * 1000000000LL;
	uint64_t page_size = 100;
	while ((c = getopt_long(argc, argv, SYNC_SHORTOPTS, sync_opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			dry = 1;
			break;
		case 'u':
			base = optarg;
			break;
		case 'T':
			if (tool_parse_seconds(optarg, &timeout_ns) != 0 || timeout_ns < 1000000LL)
				return sync_usage_error("--timeout: expected a number of seconds, got",
							optarg);
			break;
		case 'P':
			if (tool_parse_u64(optarg, 1000, &page_size) != 0 || page_size < 1)
				return sync_usage_error("--page-size: expected 1 to 1000, got", optarg);
			break;
		case 'h':
			printf("Usage: shmlimit-ctl " SYNC_SYNOPSIS "\n%s", SYNC_HELP);
			return TX_OK;
		default:
			fprintf(stderr, "Try 'shmlimit-ctl sync --help'.\n");
			return TX_USAGE;
		}
	}
	if (argc - optind != 1)
		return sync_usage_error(argc - optind < 1 ? "missing segment NAME"
							  : "unexpected argument",
					argc - optind < 1 ? NULL : argv[optind + 1]);
	const char *name = argv[optind];
	if (base == NULL || *base == '\0')
		base = DEFAULT_URL;
	if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
		return sync_usage_error("--base-url: expected an http:// or https:// URL, got", base);
	const char *key = getenv(KEY_ENV);
	if (key == NULL || *key == '\0') {
		fprintf(stderr, PROG ": $" KEY_ENV " is not set: the Rate Limits API needs an Admin "
				"API key (sk-ant-admin...)\n");
		return TX_USAGE;
	}
	if (strlen(key) > 400 || strpbrk(key, "\r\n") != NULL)
		return sync_usage_error("$" KEY_ENV " is not a key (too long, or has a line break)",
					NULL);

	/* The segment first: no point asking the API for a segment that is not there. */
	shl_t *h = NULL;
	shl_err e;
	memset(&e, 0, sizeof(e));
	int r = shl_attach(name, dry ? SHL_ATTACH_RDONLY | SHL_ATTACH_ANY_OWNER : 0, &h, &e);
	if (r < 0) {
		fprintf(stderr, PROG ": %s\n", e.msg[0] ? e.msg : shl_strerror(r));
		return tool_exit_code(r);
	}
	int rc = TX_OK;
	cJSON *items = cJSON_CreateArray(), *live = NULL, *next = NULL, *norm = NULL;
	struct group *g = NULL;
	shl_config *cur = NULL, *cfg = NULL;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if ((rc = fetch_all(base, key, (long)(timeout_ns / 1000000LL), (unsigned)page_size, items)))
		goto out;
	int ng = cJSON_GetArraySize(items);
	g = calloc((size_t)(ng ? ng : 1), sizeof(*g));
	if (g == NULL) {
		rc = TX_FAIL;
		goto out;
	}
	int i = 0, useful = 0;
	for (const cJSON *it = items->child; it; it = it->next, i++) {
		if ((rc = read_item(it, i, &g[i])))
			goto out;
		if (g[i].kind == G_OTHER)
			fprintf(stderr, PROG ": note: group type '%s' skipped (no request of that kind "
					"is governed)\n", g[i].type);
		else
			useful++;
	}
	if (useful == 0) {
		rc = bad_answer("data", "no model_group, batch or token_count limits");
		goto out;
	}
	if ((r = shl_config_get(h, &cur)) < 0 || (live = config_json(cur)) == NULL) {
		fprintf(stderr, PROG ": %s: cannot read the live configuration: %s\n", name,
			shl_strerror(r < 0 ? r : -ENOMEM));
		rc = r < 0 ? tool_exit_code(r) : TX_FAIL;
		goto out;
	}
	load_presets();
	if ((next = build(live, g, ng, &rc)) == NULL)
		goto out;
	char *text = cJSON_PrintUnformatted(next);
	memset(&e, 0, sizeof(e));
	r = text ? shl_config_parse(text, strlen(text), &cfg, &e) : -ENOMEM;
	free(text);
	if (r < 0) {
		fprintf(stderr, PROG ": the configuration made from the API's limits is not valid: "
				"%s; nothing was changed\n", e.msg[0] ? e.msg : shl_strerror(r));
		rc = tool_exit_code(r);
		goto out;
	}
	norm = config_json(cfg);
	int changes = norm ? diff(live, norm) : -1;
	if (changes < 0) {
		rc = TX_FAIL;
		goto out;
	}
	uint64_t gen = shl_generation(h);
	if (changes == 0) {
		printf("%s: in sync with the Rate Limits API (generation %" PRIu64 ", %d groups)\n",
		       name, gen, useful);
		goto out;
	}
	if (dry) {
		printf("%s: %d difference%s (dry run: nothing changed)\n", name, changes,
		       changes == 1 ? "" : "s");
		goto out;
	}
	memset(&e, 0, sizeof(e));
	if ((r = shl_apply(h, cfg, &e)) < 0) {
		fprintf(stderr, PROG ": %s: %s\n", name, e.msg[0] ? e.msg : shl_strerror(r));
		rc = tool_exit_code(r);
		goto out;
	}
	printf("%s: synced, %d change%s: generation %" PRIu64 "\n", name, changes,
	       changes == 1 ? "" : "s", shl_generation(h));
out:
	for (int k = 0; k < npresets; k++)
		cJSON_Delete(presets[k]);
	npresets = 0;
	free(g);
	cJSON_Delete(items);
	cJSON_Delete(live);
	cJSON_Delete(next);
	cJSON_Delete(norm);
	shl_config_free(cur);
	shl_config_free(cfg);
	shl_detach(h);
	curl_global_cleanup();
	return rc;
}
