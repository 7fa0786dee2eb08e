/*
 * routeapp.c - a libcurl application for the routing tests (route.sh).
 *
 * It sends --count Messages API requests for --model on ONE easy handle,
 * set up once, the body in a buffer of its own, and checks after every
 * transfer that the buffer is byte for byte what it was (the shim's
 * SHMLIMIT_ROUTE rewrite must work on a copy).  It knows nothing of
 * libshmlimit: the tests run it under LD_PRELOAD.
 *
 *   shmlimit-preload-routeapp --url URL --model ID --mode MODE [--count N]
 *                             [--size] [--between CMD]
 *
 * MODE: postfields (CURLOPT_POSTFIELDS), copy (CURLOPT_COPYPOSTFIELDS),
 * read (a read callback), multi (CURLOPT_POSTFIELDS through the multi
 * interface, the handle added again for each request).  --size also sets
 * CURLOPT_POSTFIELDSIZE.  --between CMD runs CMD (system(3)) before every
 * request but the first.
 *
 * One line per request:
 *   request I: curl=RC status=S model=M buffer=unchanged|CHANGED
 * where M is the "model" of the response (the mock echoes the model it was
 * asked for).  Exits 1 if a buffer changed, 2 on a usage error, else 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

struct buf {
	char data[65536];
	size_t len;
};

struct rd {
	const char *p;
	size_t len, pos;
};

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
	struct buf *b = ud;
	size_t k = size * n;
	size_t room = sizeof(b->data) - 1 - b->len;
	memcpy(b->data + b->len, p, k < room ? k : room);
	b->len += k < room ? k : room;
	b->data[b->len] = '\0';
	return k;
}

static size_t on_read(char *p, size_t size, size_t n, void *ud)
{
	struct rd *r = ud;
	size_t k = size * n;
	if (k > r->len - r->pos)
		k = r->len - r->pos;
	memcpy(p, r->p + r->pos, k);
	r->pos += k;
	return k;
}

/* The value of the first "model":"..." in a response. */
static void response_model(const char *body, char *out, size_t len)
{
	snprintf(out, len, "-");
	const char *p = strstr(body, "\"model\":\"");
	if (p == NULL)
		return;
	p += 9;
	size_t n = strcspn(p, "\"");
	if (n >= len)
		n = len - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

static CURLcode run_multi(CURLM *m, CURL *c)
{
	CURLcode rc = CURLE_FAILED_INIT;
	if (curl_multi_add_handle(m, c) != CURLM_OK)
		return rc;
	int running = 1;
	while (running) {
		if (curl_multi_perform(m, &running) != CURLM_OK)
			break;
		if (running && curl_multi_poll(m, NULL, 0, 1000, NULL) != CURLM_OK)
			break;
	}
	int left;
	CURLMsg *msg;
	while ((msg = curl_multi_info_read(m, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == c)
			rc = msg->data.result;
	curl_multi_remove_handle(m, c);
	return rc;
}

int main(int argc, char **argv)
{
	const char *url = NULL, *model = NULL, *mode = NULL, *between = NULL;
	long count = 1;
	int size = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
			url = argv[++i];
		else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
			model = argv[++i];
		else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
			mode = argv[++i];
		else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
			count = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--between") == 0 && i + 1 < argc)
			between = argv[++i];
		else if (strcmp(argv[i], "--size") == 0)
			size = 1;
		else {
			fprintf(stderr, "routeapp: bad argument '%s'\n", argv[i]);
			return 2;
		}
	}
	if (url == NULL || model == NULL || mode == NULL || count < 1 ||
	    (strcmp(mode, "postfields") != 0 && strcmp(mode, "copy") != 0 &&
	     strcmp(mode, "read") != 0 && strcmp(mode, "multi") != 0)) {
		fprintf(stderr, "usage: routeapp --url URL --model ID --mode "
				"postfields|copy|read|multi [--count N] [--size] [--between CMD]\n");
		return 2;
	}
	/* The application's body, and a copy to compare it with. */
	static char body[4096], saved[4096];
	snprintf(body, sizeof(body),
		 "{\"model\": \"%s\", \"max_tokens\": 64,\n \"messages\": [{\"role\": \"user\", "
		 "\"content\": \"a routed request, with a \\\"model\\\" in its text\"}]}",
		 model);
	memcpy(saved, body, sizeof(body));
	size_t blen = strlen(body);

	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURL *c = curl_easy_init();
	CURLM *m = strcmp(mode, "multi") == 0 ? curl_multi_init() : NULL;
	struct buf *out = calloc(1, sizeof(*out));
	struct rd r = {body, blen, 0};
	struct curl_slist *h = curl_slist_append(NULL, "content-type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	if (size)
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
	if (strcmp(mode, "copy") == 0) {
		curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
	} else if (strcmp(mode, "read") == 0) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, &r);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
	} else {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	}
	int changed = 0;
	for (long i = 1; i <= count; i++) {
		if (i > 1 && between != NULL && system(between) != 0)
			fprintf(stderr, "routeapp: '%s' failed\n", between);
		out->len = 0;
		out->data[0] = '\0';
		r.pos = 0;
		CURLcode rc = m ? run_multi(m, c) : curl_easy_perform(c);
		long status = 0;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		char got[128];
		response_model(out->data, got, sizeof(got));
		int same = memcmp(body, saved, sizeof(body)) == 0;
		changed |= !same;
		printf("request %ld: curl=%d status=%ld model=%s buffer=%s\n", i, (int)rc, status, got,
		       same ? "unchanged" : "CHANGED");
		fflush(stdout);
	}
	curl_easy_cleanup(c);
	if (m)
		curl_multi_cleanup(m);
	curl_slist_free_all(h);
	free(out);
	curl_global_cleanup();
	return changed ? 1 : 0;
}
