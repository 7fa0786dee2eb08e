/*
 * main.c - shmlimit-mock: the command line, the listening socket, one
 * thread per connection, and a bounded life.
 *
 * The server exists to be started and stopped by tests, the demo and the
 * bench, so it must never outlive them: it listens on 127.0.0.1 only, ends
 * after --max-requests API requests or --max-seconds, on SIGTERM / SIGINT or
 * on POST /mock/shutdown, and always exits 0 when it ends that way.  The
 * chosen port is published through --port-file, written atomically (a
 * temporary file renamed into place) once the socket is listening, so a
 * reader that sees the file can connect at once.
 *
 * Concurrency: at most MOCK_MAX_CONNS connection threads; further clients
 * wait in the kernel's accept backlog.  Threads share only the pools
 * (limits.c, a mutex each), the statistics (stats.c) and the prompt cache
 * (estimate.c), a mutex each, and the atomics below.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mock.h"

static int wake_pipe[2] = {-1, -1};
static atomic_int stopping; /* 0, or the first enum stop_reason */
static atomic_int conns;   /* connection threads alive */
static atomic_int busy;    /* requests being answered */
static atomic_int pressure; /* 1: at MOCK_MAX_CONNS with clients waiting */

void server_request_stop(int reason)
{
	int none = 0;
	atomic_compare_exchange_strong(&stopping, &none, reason);
	char c = 1;
	ssize_t n = write(wake_pipe[1], &c, 1);
	(void)n; /* full pipe: a wake-up is already pending */
}

static void on_signal(int sig)
{
	(void)sig;
	int saved = errno;
	server_request_stop(STOP_SIGNAL);
	errno = saved;
}

/* ------------------------------------------------------------------ */
/* Connections                                                          */
/* ------------------------------------------------------------------ */

/*
 * Between requests on a kept-alive connection: wait for the next one.
 * Returns 0 when bytes arrived, -1 when the connection should be closed:
 * idle for MOCK_IDLE_SECONDS, the server stopping, or the server at its
 * connection bound while new clients wait (an idle connection then gives
 * way, as HTTP/1.1 allows; clients such as curl simply reconnect).
 */
static int wait_next(int fd)
{
	for (int waited_ms = 0; waited_ms < MOCK_IDLE_SECONDS * 1000; waited_ms += 50) {
		struct pollfd p = {fd, POLLIN, 0};
		int n = poll(&p, 1, 50);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -1;
		if (atomic_load(&stopping) || atomic_load(&pressure))
			return -1;
	}
	return -1;
}

static void *conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct conn c = {.fd = fd, .cap = MOCK_MAX_HEADER + 16384};
	c.buf = malloc(c.cap);
	int first = 1;
	while (c.buf != NULL && !atomic_load(&stopping)) {
		if (!first && c.start == c.end && wait_next(fd) < 0)
			break;
		first = 0;
		struct http_req r;
		int rc = http_read_request(&c, &r);
		if (rc == 0) {
			atomic_fetch_add(&busy, 1);
			int keep = api_handle(fd, &r);
			atomic_fetch_sub(&busy, 1);
			http_req_free(&r);
			if (!keep)
				break;
			continue;
		}
		http_req_free(&r);
		if (rc == -EMSGSIZE)
			api_reject(fd, 413);
		else if (rc == -E2BIG)
			api_reject(fd, 431);
		else if (rc == -EINVAL)
			api_reject(fd, 400);
		break; /* closed, idle timeout or socket error */
	}
	free(c.buf);
	close(fd);
	atomic_fetch_sub(&conns, 1);
	return NULL;
}

static void start_conn(int fd)
{
	struct timeval tv = {MOCK_IDLE_SECONDS, 0};
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* (inherited from the listening socket; again in case it was not) */
	setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 512 * 1024);
	pthread_t t;
	atomic_fetch_add(&conns, 1);
	if (pthread_create(&t, &attr, conn_main, (void *)(intptr_t)fd) != 0) {
		atomic_fetch_sub(&conns, 1);
		close(fd);
	}
	pthread_attr_destroy(&attr);
}

/* ------------------------------------------------------------------ */
/* Start-up                                                             */
/* ------------------------------------------------------------------ */

static int listen_on(uint64_t port, int *out_port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Arrival times from the kernel (http.c, conn_fill): set here, so
	 * that an accepted connection has it (it inherits the flag) for the
	 * bytes that came before accept returned. */
	setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 512) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	*out_port = ntohs(a.sin_port);
	return fd;
}

/* Write "PORT\n" to path through a temporary file and rename(). */
static int write_port_file(const char *path, int port)
{
	char tmp[4096];
	int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return -errno;
	int bad = fprintf(f, "%d\n", port) < 0;
	bad |= fclose(f) != 0;
	if (bad || rename(tmp, path) < 0) {
		int e = errno ? errno : EIO;
		unlink(tmp);
		return -e;
	}
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: shmlimit-mock [--port N] [--port-file FILE] [--config CFG.json]\n"
	      "                     [--max-requests N] [--max-seconds S] [--latency-ms N]\n"
	      "                     [--stream-chunk-delay-ms N] [--fail-every N:KIND]\n"
	      "                     [--token-scale F] [--strict-interval] [--serve-model MODEL]\n"
	      "A mock Claude Messages API on 127.0.0.1; see mock/README.md.\n"
	      "KIND: 429 spend-cap 529 529-midstream 500 truncate\n",
	      f);
}

static int num_opt(const char *name, const char *val, uint64_t max, uint64_t *out)
{
	if (parse_u64(val, max, out) == 0)
		return 0;
	fprintf(stderr, "shmlimit-mock: --%s: expected an integer 0..%llu, got '%s'\n",
		name, (unsigned long long)max, val);
	return -EINVAL;
}

/* A decimal 0.001..1000 with at most three decimals, as thousandths. */
static int scale_opt(const char *val, uint64_t *milli)
{
	char ip[16] = "", fp[4] = "000";
	const char *dot = strchr(val, '.');
	size_t il = dot ? (size_t)(dot - val) : strlen(val);
	size_t fl = dot ? strlen(dot + 1) : 0;
	uint64_t i = 0, f = 0;
	if (il == 0 || il >= sizeof(ip) || (dot && (fl == 0 || fl > 3)))
		goto bad;
	memcpy(ip, val, il);
	if (dot)
		memcpy(fp, dot + 1, fl);
	if (parse_u64(ip, 1000, &i) < 0 || parse_u64(fp, 999, &f) < 0)
		goto bad;
	*milli = i * 1000 + f;
	if (*milli >= 1 && *milli <= 1000000)
		return 0;
bad:
	fprintf(stderr, "shmlimit-mock: --token-scale: expected a number 0.001..1000 "
		"with at most three decimals, got '%s'\n", val);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	enum { O_PORT = 1, O_PORT_FILE, O_CONFIG, O_MAX_REQ, O_MAX_SEC, O_LAT,
	       O_CHUNK, O_FAIL, O_SCALE, O_STRICT, O_SERVE, O_HELP };
	static const struct option opts[] = {
		{"port", required_argument, NULL, O_PORT},
		{"port-file", required_argument, NULL, O_PORT_FILE},
		{"config", required_argument, NULL, O_CONFIG},
		{"max-requests", required_argument, NULL, O_MAX_REQ},
		{"max-seconds", required_argument, NULL, O_MAX_SEC},
		{"latency-ms", required_argument, NULL, O_LAT},
		{"stream-chunk-delay-ms", required_argument, NULL, O_CHUNK},
		{"fail-every", required_argument, NULL, O_FAIL},
		{"token-scale", required_argument, NULL, O_SCALE},
		{"strict-interval", no_argument, NULL, O_STRICT},
		{"serve-model", required_argument, NULL, O_SERVE},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	uint64_t port = 0, max_seconds = 600;
	const char *port_file = NULL, *config = NULL;
	static struct mock_config mc = {.max_requests = 100000,
					.token_scale_milli = 1000};
	static struct limits limits;
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int rc = 0;
		switch (o) {
		case O_PORT: rc = num_opt("port", optarg, 65535, &port); break;
		case O_PORT_FILE: port_file = optarg; break;
		case O_CONFIG: config = optarg; break;
		case O_MAX_REQ:
			rc = num_opt("max-requests", optarg, UINT64_MAX, &mc.max_requests);
			break;
		case O_MAX_SEC:
			rc = num_opt("max-seconds", optarg, 100000000, &max_seconds);
			break;
		case O_LAT: rc = num_opt("latency-ms", optarg, 3600000, &mc.latency_ms); break;
		case O_CHUNK:
			rc = num_opt("stream-chunk-delay-ms", optarg, 60000,
				     &mc.chunk_delay_ms);
			break;
		case O_FAIL: {
			char num[32];
			const char *colon = strchr(optarg, ':');
			size_t n = colon ? (size_t)(colon - optarg) : 0;
			if (colon == NULL || n == 0 || n >= sizeof(num)) {
				rc = -EINVAL;
			} else {
				memcpy(num, optarg, n);
				num[n] = '\0';
				mc.fail_kind = fault_parse(colon + 1);
				rc = parse_u64(num, UINT64_MAX, &mc.fail_every);
				if (rc == 0 && (mc.fail_kind < 0 || mc.fail_every == 0))
					rc = -EINVAL;
			}
			if (rc < 0)
				fprintf(stderr, "shmlimit-mock: --fail-every: expected N:KIND "
					"(N >= 1; KIND one of 429 spend-cap 529 "
					"529-midstream 500 truncate), got '%s'\n", optarg);
			break;
		}
		case O_SCALE: rc = scale_opt(optarg, &mc.token_scale_milli); break;
		case O_STRICT: mc.strict_interval = 1; break;
		case O_SERVE:
			if (optarg[0] == '\0' || strlen(optarg) > 200) {
				fprintf(stderr, "shmlimit-mock: --serve-model: a model id "
					"of 1..200 characters\n");
				rc = -EINVAL;
			}
			mc.serve_model = optarg;
			break;
		case 'h':
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (rc < 0)
			return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "shmlimit-mock: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (config != NULL) {
		char err[512];
		if (limits_load(config, &limits, err, sizeof(err)) < 0) {
			fprintf(stderr, "shmlimit-mock: --config: %s\n", err);
			return 2;
		}
		if (mc.strict_interval)
			limits_strict(&limits);
		if (mc.serve_model != NULL && limits_find(&limits, mc.serve_model) < 0) {
			fprintf(stderr, "shmlimit-mock: --serve-model %s: no model "
				"entry of --config matches it\n", mc.serve_model);
			return 2;
		}
		mc.limits = &limits;
	}
	api_init(&mc);

	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		perror("shmlimit-mock: pipe");
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	int bound = 0;
	int lfd = listen_on(port, &bound);
	if (lfd < 0) {
		fprintf(stderr, "shmlimit-mock: cannot listen on 127.0.0.1:%llu: %s\n",
			(unsigned long long)port, strerror(-lfd));
		return 1;
	}
	if (port_file != NULL) {
		int rc = write_port_file(port_file, bound);
		if (rc < 0) {
			fprintf(stderr, "shmlimit-mock: --port-file %s: %s\n", port_file,
				strerror(-rc));
			return 1;
		}
	}
	fprintf(stderr, "shmlimit-mock: listening on 127.0.0.1:%d%s\n", bound,
		config ? " (limits from --config)" : " (no limits)");

	int64_t deadline = max_seconds > 0 ?
		mono_ns() + (int64_t)max_seconds * 1000000000LL : INT64_MAX;
	const char *why = NULL;
	while (!atomic_load(&stopping)) {
		int64_t now = mono_ns();
		if (now >= deadline) {
			why = "--max-seconds";
			break;
		}
		int64_t left_ms = (deadline - now + 999999) / 1000000;
		int timeout = left_ms > 1000 ? 1000 : (int)left_ms;
		struct pollfd p[2] = {{wake_pipe[0], POLLIN, 0}, {lfd, POLLIN, 0}};
		int full = atomic_load(&conns) >= MOCK_MAX_CONNS;
		if (full) {
			/* At the bound: new clients wait in the backlog, and
			 * while they do, idle keep-alive connections give way
			 * (see wait_next).  Look again in 10 ms. */
			struct pollfd l = {lfd, POLLIN, 0};
			atomic_store(&pressure, poll(&l, 1, 0) > 0);
			poll(p, 1, 10);
			continue;
		}
		atomic_store(&pressure, 0);
		int n = poll(p, 2, timeout);
		if (n <= 0)
			continue;
		if (p[1].revents & POLLIN) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				start_conn(fd);
		}
	}
	close(lfd);
	if (why == NULL) {
		int r = atomic_load(&stopping);
		why = r == STOP_SIGNAL ? "signal" :
		      r == STOP_SHUTDOWN ? "POST /mock/shutdown" : "--max-requests";
	}
	/* Let requests being answered finish (bounded). */
	for (int i = 0; i < 1000 && atomic_load(&busy) > 0; i++)
		sleep_ms(10);
	fprintf(stderr, "shmlimit-mock: exiting: %s\n", why);
	fflush(NULL);
	_exit(0);
}
