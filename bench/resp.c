/*
 * resp.c - just enough of a Redis client, and the redis-server's life.
 *
 * The Redis baseline needs a handful of commands (PING, FLUSHALL, SCRIPT
 * LOAD, EVALSHA) whose replies are statuses, errors, integers, one bulk
 * string (a script's SHA1) or a flat array of integers.  RESP2 for that is
 * some 150 lines, so the bench writes it itself instead of depending on
 * hiredis: one blocking TCP socket per worker with TCP_NODELAY, one request
 * in flight at a time (what a worker admitting before each API call does).
 *
 * The server is started by the bench on 127.0.0.1 at a port the kernel
 * reported free, with persistence off, and stopped (SIGTERM, then SIGKILL
 * after 5 s) when the bench ends.  Every wait here is bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

int resp_connect(struct resp_conn *c, int port)
{
	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = -errno;
		close(c->fd);
		c->fd = -1;
		return e;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Bounded: a server that stops answering fails the call, not the bench. */
	struct timeval tv = {.tv_sec = 10};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return 0;
}

void resp_close(struct resp_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One line of the reply, without its CRLF, into `line`. */
static int read_line(struct resp_conn *c, char *line, size_t cap)
{
	size_t n = 0;
	for (;;) {
		if (c->off == c->len) {
			ssize_t r = read(c->fd, c->buf, sizeof(c->buf));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return r == 0 ? -ECONNRESET : -errno;
			c->off = 0;
			c->len = (size_t)r;
		}
		char ch = c->buf[c->off++];
		if (ch == '\n') {
			if (n > 0 && line[n - 1] == '\r')
				n--;
			line[n] = '\0';
			return 0;
		}
		if (n + 1 >= cap)
			return -EPROTO;
		line[n++] = ch;
	}
}

static int parse_int(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return -EPROTO;
	*out = v;
	return 0;
}

/* Read one reply element; arrays are flattened into r->ints. */
static int read_reply(struct resp_conn *c, struct resp_reply *r, int depth)
{
	char line[256];
	int rc = read_line(c, line, sizeof(line));
	if (rc != 0)
		return rc;
	int64_t v = 0;
	if (depth == 0)
		r->type = line[0];
	switch (line[0]) {
	case '+':
	case '-':
		snprintf(r->str, sizeof(r->str), "%.120s", line + 1);
		return 0;
	case ':':
		if (parse_int(line + 1, &v) != 0)
			return -EPROTO;
		if (r->nints < (int)(sizeof(r->ints) / sizeof(r->ints[0])))
			r->ints[r->nints++] = v;
		return 0;
	case '$': {
		if (parse_int(line + 1, &v) != 0)
			return -EPROTO;
		if (v < 0)
			return 0; /* nil */
		if ((size_t)v + 2 > sizeof(line))
			return -EPROTO;
		char data[256];
		rc = read_line(c, data, sizeof(data));
		if (rc != 0)
			return rc;
		snprintf(r->str, sizeof(r->str), "%.120s", data);
		return 0;
	}
	case '*':
		if (parse_int(line + 1, &v) != 0 || v > 64)
			return -EPROTO;
		if (depth > 2)
			return -EPROTO;
		for (int64_t i = 0; i < v; i++)
			if ((rc = read_reply(c, r, depth + 1)) != 0)
				return rc;
		return 0;
	default:
		return -EPROTO;
	}
}

int resp_command(struct resp_conn *c, int argc, const char *const *argv, struct resp_reply *r)
{
	char out[8192];
	size_t n = 0;
	int w = snprintf(out, sizeof(out), "*%d\r\n", argc);
	if (w < 0 || (size_t)w >= sizeof(out))
		return -E2BIG;
	n = (size_t)w;
	for (int i = 0; i < argc; i++) {
		size_t len = strlen(argv[i]);
		w = snprintf(out + n, sizeof(out) - n, "$%zu\r\n", len);
		if (w < 0 || (size_t)w >= sizeof(out) - n || n + (size_t)w + len + 2 > sizeof(out))
			return -E2BIG;
		n += (size_t)w;
		memcpy(out + n, argv[i], len);
		n += len;
		out[n++] = '\r';
		out[n++] = '\n';
	}
	int rc = write_all(c->fd, out, n);
	if (rc != 0)
		return rc;
	memset(r, 0, sizeof(*r));
	return read_reply(c, r, 0);
}

/* ------------------------------------------------------------------ */
/* The server                                                          */
/* ------------------------------------------------------------------ */

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(sa);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	close(fd);
	return ntohs(sa.sin_port);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Wait for a child to exit for at most `ms`; 1 if it did. */
static int reap(int pid, int ms)
{
	for (int i = 0; i <= ms; i += 10) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid || (r < 0 && errno == ECHILD))
			return 1;
		sleep_ms(10);
	}
	return 0;
}

int redis_start(const char *binary, int *port_out, char *msg, size_t msglen)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		int port = free_port();
		if (port < 0) {
			snprintf(msg, msglen, "no free port: %s", strerror(-port));
			return port;
		}
		char portstr[16];
		snprintf(portstr, sizeof(portstr), "%d", port);
		pid_t pid = fork();
		if (pid < 0) {
			snprintf(msg, msglen, "fork: %s", strerror(errno));
			return -errno;
		}
		if (pid == 0) {
			int devnull = open("/dev/null", O_RDWR);
			if (devnull >= 0) {
				dup2(devnull, 0);
				dup2(devnull, 1);
				dup2(devnull, 2);
			}
			execlp(binary, binary, "--bind", "127.0.0.1", "--port", portstr,
			       "--save", "", "--appendonly", "no", "--protected-mode", "yes",
			       "--daemonize", "no", "--dir", "/tmp", (char *)NULL);
			_exit(127);
		}
		/* Up to 5 s for it to answer PING. */
		for (int i = 0; i < 500; i++) {
			struct resp_conn c;
			if (resp_connect(&c, port) == 0) {
				const char *ping[] = {"PING"};
				struct resp_reply r;
				int rc = resp_command(&c, 1, ping, &r);
				resp_close(&c);
				if (rc == 0 && r.type == '+') {
					*port_out = port;
					return pid;
				}
			}
			int st;
			if (waitpid(pid, &st, WNOHANG) == pid) {
				if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
					snprintf(msg, msglen, "cannot run %s", binary);
					return -ENOENT;
				}
				break; /* port taken meanwhile: try another */
			}
			sleep_ms(10);
		}
		kill(pid, SIGKILL);
		reap(pid, 2000);
	}
	snprintf(msg, msglen, "%s did not start on 127.0.0.1", binary);
	return -ETIMEDOUT;
}

void redis_stop(int pid, int port)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	if (!reap(pid, 5000)) {
		kill(pid, SIGKILL);
		reap(pid, 2000);
	}
}
