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
 *                           [--fork K] [--socket [--abandon] | --wait]
 *
 * --fork K: while the threads run, fork K children that each send --requests
 * requests from their single thread (fork safety of the shim).
 *
 * --socket: each thread runs its --requests transfers at once on its own
 * multi handle, driven by curl_multi_socket_action from a poll() loop with
 * CURLMOPT_SOCKETFUNCTION and CURLMOPT_TIMERFUNCTION, as event-loop
 * programs do.  A loop left with transfers running but no socket to watch
 * and no timer set would wait forever: it is counted as a failure
 * ("stalled") instead.  --abandon: each thread also adds one more transfer
 * and removes it again at once, before its first socket_action.
 *
 * --wait: each thread runs its --requests transfers at once on its own multi
 * handle with curl_multi_perform and curl_multi_wait (no callbacks); a
 * running count of 0 with transfers not yet done is counted as a failure.
 *
 * Prints "worker: N ok, M failed" and exits 0 when every request got a 200
 * whose body has a usage object (JSON) or a message_stop event (SSE).
 */
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
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
static int g_socket, g_abandon, g_wait;

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

/* One transfer: its handle and everything its options point at. */
struct xfer {
	CURL *c;
	struct buf b;
	char body[512];
	struct rd r;
	struct curl_slist *h;
	int stream;
	long id, i;
};

/* A handle for request i of thread id, cycling the ways to give a body. */
static struct xfer *xfer_new(CURL *c, long id, long i)
{
	struct xfer *x = calloc(1, sizeof(*x));
	x->c = c;
	x->id = id;
	x->i = i;
	x->stream = (int)((id + i) % 2);
	snprintf(x->body, sizeof(x->body),
		 "{\"model\":\"%s\",\"max_tokens\":64,\"stream\":%s,\"messages\":"
		 "[{\"role\":\"user\",\"content\":\"thread %ld request %ld says hello\"}]}",
		 g_model, x->stream ? "true" : "false", id, i);
	x->r = (struct rd){x->body, strlen(x->body), 0};
	x->h = curl_slist_append(NULL, "content-type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, g_url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &x->b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_PRIVATE, x);
	switch ((id + i) % 3) {
	case 0:
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, x->body);
		break;
	case 1:
		curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, x->body);
		memset(x->body, 'x', 16); /* the copy must not care */
		break;
	default:
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, &x->r);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)x->r.len);
		break;
	}
	return x;
}

/* Count a finished transfer; free it (not its handle). */
static void xfer_done(struct xfer *x, CURLcode rc)
{
	long status = 0;
	curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &status);
	int good = rc == CURLE_OK && status == 200 &&
		   (x->stream ? strstr(x->b.data, "message_stop") != NULL
			      : strstr(x->b.data, "\"usage\"") != NULL);
	if (!good)
		fprintf(stderr, "worker: thread %ld request %ld: curl %d, HTTP %ld: %.200s\n", x->id,
			x->i, (int)rc, status, x->b.data);
	pthread_mutex_lock(&mu);
	if (good)
		n_ok++;
	else
		n_fail++;
	pthread_mutex_unlock(&mu);
	curl_slist_free_all(x->h);
	free(x);
}

/* ---- --socket: curl_multi_socket_action from a poll() loop ---- */

#define LOOP_FDS 64

struct loop {
	struct pollfd fds[LOOP_FDS];
	int nfds;
	int64_t timer_at; /* CLOCK_MONOTONIC ms; -1: no timer */
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct loop *l = userp;
	int k = 0;
	while (k < l->nfds && l->fds[k].fd != s)
		k++;
	if (what == CURL_POLL_REMOVE) {
		if (k < l->nfds)
			l->fds[k] = l->fds[--l->nfds];
		return 0;
	}
	if (k == l->nfds) {
		if (l->nfds == LOOP_FDS)
			return -1;
		l->nfds++;
	}
	l->fds[k].fd = s;
	l->fds[k].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
				   ((what & CURL_POLL_OUT) ? POLLOUT : 0));
	return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
	struct loop *l = userp;
	l->timer_at = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	return 0;
}

static void run_socket(long id)
{
	struct loop l = {.nfds = 0, .timer_at = -1};
	CURLM *multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, &l);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(multi, CURLMOPT_TIMERDATA, &l);
	for (long i = 0; i < g_requests; i++)
		curl_multi_add_handle(multi, xfer_new(curl_easy_init(), id, i)->c);
	if (g_abandon) {
		/* Added and removed before anything runs: never sent. */
		struct xfer *x = xfer_new(curl_easy_init(), id, g_requests);
		curl_multi_add_handle(multi, x->c);
		curl_multi_remove_handle(multi, x->c);
		curl_easy_cleanup(x->c);
		curl_slist_free_all(x->h);
		free(x);
	}
	long left = g_requests;
	int running = 1;
	while (left > 0) {
		if (l.nfds == 0 && l.timer_at < 0) {
			fprintf(stderr, "worker: thread %ld stalled: %ld transfers left (running %d), "
					"no socket and no timer\n", id, left, running);
			pthread_mutex_lock(&mu);
			n_fail += left;
			pthread_mutex_unlock(&mu);
			break;
		}
		int wait = -1;
		if (l.timer_at >= 0) {
			int64_t d = l.timer_at - now_ms();
			wait = d < 0 ? 0 : d > 60000 ? 60000 : (int)d;
		}
		struct pollfd fds[LOOP_FDS];
		int n = l.nfds;
		memcpy(fds, l.fds, sizeof(fds[0]) * (size_t)n);
		int got = poll(fds, (nfds_t)n, wait);
		if (got < 0)
			continue;
		for (int k = 0; k < n; k++) {
			if (fds[k].revents == 0)
				continue;
			int ev = ((fds[k].revents & POLLIN) ? CURL_CSELECT_IN : 0) |
				 ((fds[k].revents & POLLOUT) ? CURL_CSELECT_OUT : 0) |
				 ((fds[k].revents & (POLLERR | POLLHUP)) ? CURL_CSELECT_ERR : 0);
			curl_multi_socket_action(multi, fds[k].fd, ev, &running);
		}
		if (l.timer_at >= 0 && now_ms() >= l.timer_at) {
			l.timer_at = -1; /* one-shot: the callback sets the next */
			curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
		CURLMsg *msg;
		int q;
		while ((msg = curl_multi_info_read(multi, &q)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			CURL *c = msg->easy_handle;
			CURLcode rc = msg->data.result;
			struct xfer *x = NULL;
			curl_easy_getinfo(c, CURLINFO_PRIVATE, (char **)&x);
			curl_multi_remove_handle(multi, c);
			xfer_done(x, rc);
			curl_easy_cleanup(c);
			left--;
		}
	}
	curl_multi_cleanup(multi);
}

/* ---- --wait: curl_multi_perform and curl_multi_wait, no callbacks ---- */

static void run_wait(long id)
{
	CURLM *multi = curl_multi_init();
	for (long i = 0; i < g_requests; i++)
		curl_multi_add_handle(multi, xfer_new(curl_easy_init(), id, i)->c);
	long left = g_requests;
	while (left > 0) {
		int running = 0, n = 0;
		curl_multi_perform(multi, &running);
		CURLMsg *msg;
		int q;
		while ((msg = curl_multi_info_read(multi, &q)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			CURL *c = msg->easy_handle;
			CURLcode rc = msg->data.result;
			struct xfer *x = NULL;
			curl_easy_getinfo(c, CURLINFO_PRIVATE, (char **)&x);
			curl_multi_remove_handle(multi, c);
			xfer_done(x, rc);
			curl_easy_cleanup(c);
			left--;
		}
		if (left > 0 && running == 0) {
			/* a program would think it is done and stop here */
			fprintf(stderr, "worker: thread %ld: running 0 with %ld transfers left\n", id,
				left);
			pthread_mutex_lock(&mu);
			n_fail += left;
			pthread_mutex_unlock(&mu);
			break;
		}
		if (left > 0)
			curl_multi_wait(multi, NULL, 0, 1000, &n);
	}
	curl_multi_cleanup(multi);
}

static void *run(void *arg)
{
	long id = (long)(intptr_t)arg;
	if (g_socket) {
		run_socket(id);
		return NULL;
	}
	if (g_wait) {
		run_wait(id);
		return NULL;
	}
	CURL *tmpl = curl_easy_init();
	curl_easy_setopt(tmpl, CURLOPT_URL, g_url);
	for (long i = 0; i < g_requests; i++) {
		CURL *c = (id % 3 == 2) ? curl_easy_duphandle(tmpl) : curl_easy_init();
		struct xfer *x = xfer_new(c, id, i);
		xfer_done(x, curl_easy_perform(c));
		if (id % 3 == 2)
			curl_easy_reset(c);
		curl_easy_cleanup(c);
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
		else if (strcmp(argv[i], "--socket") == 0)
			g_socket = 1;
		else if (strcmp(argv[i], "--abandon") == 0)
			g_abandon = 1;
		else if (strcmp(argv[i], "--wait") == 0)
			g_wait = 1;
		else {
			fprintf(stderr, "usage: %s --url URL [--threads N] [--requests M] [--model ID] "
				"[--fork K] [--socket [--abandon] | --wait]\n",
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
