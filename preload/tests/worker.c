/*
 * worker.c - a small multi-threaded libcurl client, for the preload tests.
 *
 * Each of --threads threads sends --requests Messages API requests to --url
 * with its own easy handle, cycling the ways libcurl takes a body:
 * CURLOPT_POSTFIELDS, CURLOPT_COPYPOSTFIELDS, and a read callback; every
 * other request streams; every third handle is a curl_easy_duphandle of a
 * template and is curl_easy_reset between requests.  It knows nothing of
 * libshmlimit: the tests run it under LD_PRELOAD.
 *
 *   shmlimit-preload-worker --url URL [--threads N] [--requests M] [--model ID]
 *                           [--fork K]
 *
 * --fork K: while the threads run, fork K children that each send --requests
 * requests from their single thread (fork safety of the shim).
 *
 * Prints "worker: N ok, M failed" and exits 0 when every request got a 200
 * whose body has a usage object (JSON) or a message_stop event (SSE).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

struct buf {
	char data[65536];
	size_t len;
};

struct rd {
	const char *p;
	size_t len, pos;
};

static const char *g_url;
static const char *g_model = "claude-haiku-4-5";
static long g_requests = 5;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long n_ok, n_fail;

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
	/* Hand out at most 7 bytes at a time: the body arrives in pieces. */
	if (k > 7)
		k = 7;
	if (k > r->len - r->pos)
		k = r->len - r->pos;
	memcpy(p, r->p + r->pos, k);
	r->pos += k;
	return k;
}

static long parse_long(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*end != '\0' || v <= 0) {
		fprintf(stderr, "worker: bad number \"%s\"\n", s);
		exit(2);
	}
	return v;
}

static void *run(void *arg)
{
	long id = (long)(intptr_t)arg;
	CURL *tmpl = curl_easy_init();
	curl_easy_setopt(tmpl, CURLOPT_URL, g_url);
	for (long i = 0; i < g_requests; i++) {
		CURL *c = (id % 3 == 2) ? curl_easy_duphandle(tmpl) : curl_easy_init();
		struct buf *b = calloc(1, sizeof(*b));
		char body[512];
		int stream = (int)((id + i) % 2);
		snprintf(body, sizeof(body),
			 "{\"model\":\"%s\",\"max_tokens\":64,\"stream\":%s,\"messages\":"
			 "[{\"role\":\"user\",\"content\":\"thread %ld request %ld says hello\"}]}",
			 g_model, stream ? "true" : "false", id, i);
		struct rd r = {body, strlen(body), 0};
		struct curl_slist *h = curl_slist_append(NULL, "content-type: application/json");
		curl_easy_setopt(c, CURLOPT_URL, g_url);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
		curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
		switch ((id + i) % 3) {
		case 0:
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
			break;
		case 1:
			curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
			memset(body, 'x', 16); /* the copy must not care */
			break;
		default:
			curl_easy_setopt(c, CURLOPT_POST, 1L);
			curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(c, CURLOPT_READDATA, &r);
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)r.len);
			break;
		}
		CURLcode rc = curl_easy_perform(c);
		long status = 0;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		int good = rc == CURLE_OK && status == 200 &&
			   (stream ? strstr(b->data, "message_stop") != NULL
				   : strstr(b->data, "\"usage\"") != NULL);
		if (!good)
			fprintf(stderr, "worker: thread %ld request %ld: curl %d, HTTP %ld: %.200s\n",
				id, i, (int)rc, status, b->data);
		pthread_mutex_lock(&mu);
		if (good)
			n_ok++;
		else
			n_fail++;
		pthread_mutex_unlock(&mu);
		if (id % 3 == 2)
			curl_easy_reset(c);
		curl_easy_cleanup(c);
		curl_slist_free_all(h);
		free(b);
	}
	curl_easy_cleanup(tmpl);
	return NULL;
}

int main(int argc, char **argv)
{
	long threads = 4, forks = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
			g_url = argv[++i];
		else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			threads = parse_long(argv[++i]);
		else if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc)
			g_requests = parse_long(argv[++i]);
		else if (strcmp(argv[i], "--fork") == 0 && i + 1 < argc)
			forks = parse_long(argv[++i]);
		else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
			g_model = argv[++i];
		else {
			fprintf(stderr, "usage: %s --url URL [--threads N] [--requests M] [--model ID]\n",
				argv[0]);
			return 2;
		}
	}
	if (g_url == NULL || threads > 256) {
		fprintf(stderr, "worker: --url is required (and at most 256 threads)\n");
		return 2;
	}
	curl_global_init(CURL_GLOBAL_ALL);
	pthread_t *t = calloc((size_t)threads, sizeof(*t));
	for (long i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, run, (void *)(intptr_t)i);
	int child_failed = 0;
	for (long k = 0; k < forks; k++) {
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0) {
			n_ok = n_fail = 0;
			run((void *)(intptr_t)(1000 + k));
			_exit(n_fail == 0 && n_ok == g_requests ? 0 : 1);
		}
		if (pid < 0)
			child_failed = 1;
	}
	for (long k = 0; k < forks; k++) {
		int st;
		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			child_failed = 1;
	}
	for (long i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	free(t);
	curl_global_cleanup();
	printf("worker: %ld ok, %ld failed%s\n", n_ok, n_fail,
	       child_failed ? ", a forked child failed" : "");
	return n_fail == 0 && !child_failed ? 0 : 1;
}
