/*
 * test-follower.c - a worker of a fleet for tools/test-follow.sh: it sends
 * real Messages requests to the mock through libcurl, admitted and settled
 * by the library, and feeds back what each response says, the way the
 * request/response component does (shl_ex_finish): the rate-limit headers'
 * limits (shl_observe_limits), a 429's retry-after (shl_hold), and a
 * response served by another model than the one asked for (shl_settle_as).
 *
 * It prints one line per request:
 *   <n> <status> limit=<requests-limit header> served=<model> eff=<RPM in force>
 * and a last line "done ok=N s429=N errors=N".  It stops after MAX requests
 * or MAX_SECONDS.
 *
 * usage: test-follower NAME URL MODEL MAX MAX_SECONDS [SERVE_MODEL]
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "shmlimit.h"

struct resp {
	char body[65536];
	size_t n;
	uint64_t limit[3];
	double retry_after;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
	struct resp *r = ud;
	size_t n = size * nmemb;
	size_t k = n < sizeof(r->body) - 1 - r->n ? n : sizeof(r->body) - 1 - r->n;
	memcpy(r->body + r->n, p, k);
	r->n += k;
	r->body[r->n] = '\0';
	return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
	struct resp *r = ud;
	size_t n = size * nmemb;
	static const char *const names[3] = {"anthropic-ratelimit-requests-limit:",
					     "anthropic-ratelimit-input-tokens-limit:",
					     "anthropic-ratelimit-output-tokens-limit:"};
	char line[256];
	size_t k = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
	memcpy(line, p, k);
	line[k] = '\0';
	for (int d = 0; d < 3; d++)
		if (strncasecmp(line, names[d], strlen(names[d])) == 0)
			r->limit[d] = strtoull(line + strlen(names[d]), NULL, 10);
	if (strncasecmp(line, "retry-after:", 12) == 0)
		r->retry_after = strtod(line + 12, NULL);
	return n;
}

int main(int argc, char **argv)
{
	uint64_t max, secs;
	if ((argc != 6 && argc != 7) || tool_parse_u64(argv[4], 100000, &max) != 0 ||
	    tool_parse_u64(argv[5], 600, &secs) != 0) {
		fprintf(stderr, "usage: test-follower NAME URL MODEL MAX MAX_SECONDS [SERVE_MODEL]\n");
		return 2;
	}
	const char *model_id = argv[3], *serve = argc == 7 ? argv[6] : NULL;
	shl_t *h = NULL;
	shl_err e;
	memset(&e, 0, sizeof(e));
	if (shl_attach(argv[1], 0, &h, &e) < 0) {
		fprintf(stderr, "test-follower: %s\n", e.msg);
		return 1;
	}
	char url[512], sm[256] = "";
	snprintf(url, sizeof(url), "%s/v1/messages", argv[2]);
	if (serve)
		snprintf(sm, sizeof(sm), "x-mock-serve-model: %s", serve);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURL *c = curl_easy_init();
	struct curl_slist *hd = curl_slist_append(NULL, "content-type: application/json");
	hd = curl_slist_append(hd, "x-mock-usage: 10,5,0,0,0");
	if (serve)
		hd = curl_slist_append(hd, sm);
	char body[256];
	snprintf(body, sizeof(body),
		 "{\"model\":\"%s\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
		 "\"content\":\"hi\"}]}",
		 model_id);
	static struct resp r;
	shl_stats *st = malloc(sizeof(*st));
	int64_t end = shl_now() + (int64_t)secs * 1000000000LL;
	uint64_t n = 0, ok = 0, s429 = 0, errors = 0;
	while (n < max && shl_now() < end && st != NULL) {
		int m = shl_lookup(h, model_id);
		if (m < 0) {
			fprintf(stderr, "test-follower: %s: %s\n", model_id, shl_strerror(m));
			errors++;
			break;
		}
		shl_cost cost = {.input_tokens = 10, .max_tokens = 10};
		shl_ticket t;
		int rc = shl_acquire(h, m, &cost, 10000000000LL, &t, NULL);
		if (rc == -ETIMEDOUT || rc == -EAGAIN)
			continue;
		if (rc < 0) {
			fprintf(stderr, "test-follower: acquire: %s\n", shl_strerror(rc));
			errors++;
			break;
		}
		memset(&r, 0, sizeof(r));
		curl_easy_reset(c);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
		curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
		if (curl_easy_perform(c) != CURLE_OK) {
			shl_cancel(h, &t);
			errors++;
			break;
		}
		n++;
		long status = 0;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		/* The model that served, and its pool: the headers are its pool's. */
		cJSON *j = cJSON_Parse(r.body);
		const cJSON *jm = cJSON_GetObjectItemCaseSensitive(j, "model");
		char served[128];
		snprintf(served, sizeof(served), "%s", cJSON_IsString(jm) ? jm->valuestring : model_id);
		int sm_idx = strcmp(served, model_id) == 0 ? m : shl_lookup(h, served);
		int pool = sm_idx >= 0 ? shl_model_pool(h, sm_idx) : t.pool;
		if (r.limit[0] || r.limit[1] || r.limit[2])
			shl_observe_limits(h, pool, r.limit);
		if (status == 200) {
			const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
			shl_usage us = {
				.input_tokens = (uint64_t)cJSON_GetNumberValue(
					cJSON_GetObjectItemCaseSensitive(u, "input_tokens")),
				.output_tokens = (uint64_t)cJSON_GetNumberValue(
					cJSON_GetObjectItemCaseSensitive(u, "output_tokens")),
			};
			if ((rc = shl_settle_as(h, &t, sm_idx, &us)) < 0) {
				fprintf(stderr, "test-follower: settle: %s\n", shl_strerror(rc));
				errors++;
			}
			ok++;
		} else {
			if (status == 429) {
				s429++;
				if (r.retry_after > 0)
					shl_hold(h, pool, (int64_t)(r.retry_after * 1e9));
			}
			shl_cancel(h, &t); /* not served: nothing was used */
		}
		cJSON_Delete(j);
		uint64_t eff = 0;
		if (shl_stats_get(h, st) == 0)
			for (int i = 0; i < st->npools; i++)
				if (st->pools[i].index == pool)
					eff = st->pools[i].effective[SHL_DIM_RPM];
		printf("%llu %ld limit=%llu served=%s eff=%llu\n", (unsigned long long)n, status,
		       (unsigned long long)r.limit[0], served, (unsigned long long)eff);
		fflush(stdout);
	}
	printf("done ok=%llu s429=%llu errors=%llu\n", (unsigned long long)ok,
	       (unsigned long long)s429, (unsigned long long)errors);
	free(st);
	curl_slist_free_all(hd);
	curl_easy_cleanup(c);
	curl_global_cleanup();
	shl_detach(h);
	return errors ? 1 : 0;
}
