/*
 * http.c - just enough HTTP/1.1 for the clients the mock serves.
 *
 * The clients are libcurl (the curl tool, the preload shim's hosts, the
 * bench) and the SDKs: they send a request line, headers, and a body framed
 * by Content-Length or chunked transfer encoding, may send
 * "Expect: 100-continue" for large bodies, and reuse connections.  That is
 * what this file reads.  It does not do pipelining beyond keeping bytes that
 * arrived early in the connection buffer, and no request trailers, ranges,
 * upgrades or request compression.  Responses can be shaped on request
 * (gzip, chunk sizes, truncation: struct http_shape) to test clients.
 *
 * Every read is bounded: the header block by MOCK_MAX_HEADER, the body by
 * MOCK_MAX_BODY, and the wait by the socket's receive timeout (set by
 * main.c), so a stuck or hostile client costs one thread for a while and
 * nothing more.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "mock.h"

/* ------------------------------------------------------------------ */
/* String buffer and small helpers                                      */
/* ------------------------------------------------------------------ */

static int sbuf_reserve(struct sbuf *b, size_t more)
{
	if (b->oom)
		return -ENOMEM;
	if (b->len + more + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + more + 1) {
		if (cap > SIZE_MAX / 2) {
			b->oom = 1;
			return -ENOMEM;
		}
		cap *= 2;
	}
	char *p = realloc(b->p, cap);
	if (p == NULL) {
		b->oom = 1;
		return -ENOMEM;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

void sbuf_add(struct sbuf *b, const void *data, size_t n)
{
	if (sbuf_reserve(b, n) < 0)
		return;
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void sbuf_puts(struct sbuf *b, const char *s)
{
	sbuf_add(b, s, strlen(s));
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || sbuf_reserve(b, (size_t)n) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void sbuf_free(struct sbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
}

int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	if (s == NULL)
		return -EINVAL;
	while (*s == ' ' || *s == '\t')
		s++;
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	if (errno != 0 || *end != '\0' || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void sleep_ms(uint64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */
/* ------------------------------------------------------------------ */

/* The receive time a recvmsg carried, on the mono_ns() scale (the kernel
 * stamps CLOCK_REALTIME); now when it carried none. */
static int64_t rx_time(struct msghdr *mh)
{
	int64_t mono = mono_ns();
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS)
			continue;
		struct timespec ts, real;
		memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
		clock_gettime(CLOCK_REALTIME, &real);
		int64_t ago = ((int64_t)real.tv_sec - ts.tv_sec) * 1000000000LL +
			      (real.tv_nsec - ts.tv_nsec);
		/* a wall clock step between the two: the reading of now */
		return ago >= 0 && ago < 60LL * 1000000000LL ? mono - ago : mono;
	}
	return mono;
}

/* Receive more bytes into the buffer.  Returns the count, -ENODATA on EOF. */
static int conn_fill(struct conn *c)
{
	if (c->start > 0 && c->start == c->end) {
		c->start = c->end = 0;
	} else if (c->start > 0 && c->end == c->cap) {
		memmove(c->buf, c->buf + c->start, c->end - c->start);
		c->end -= c->start;
		c->start = 0;
	}
	if (c->end == c->cap)
		return -E2BIG;
	for (;;) {
		/* The kernel's receive time of these bytes (SO_TIMESTAMPNS, set
		 * on every accepted socket): a request's arrival as the network
		 * saw it, whatever this process's threads were doing then. */
		struct iovec iov = {c->buf + c->end, c->cap - c->end};
		union {
			char b[CMSG_SPACE(sizeof(struct timespec))];
			struct cmsghdr align;
		} ctl;
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
		ssize_t n = recvmsg(c->fd, &mh, 0);
		if (n > 0) {
			c->end += (size_t)n;
			c->rx_ns = rx_time(&mh);
			return (int)n;
		}
		if (n == 0)
			return -ENODATA;
		if (errno == EINTR)
			continue;
		if (errno == EWOULDBLOCK)
			return -EAGAIN;
		return -errno;
	}
}

/* Find "\r\n" at or after the buffer start; returns its offset or -1. */
static long conn_find(const struct conn *c, const char *pat, size_t patlen)
{
	size_t avail = c->end - c->start;
	if (avail < patlen)
		return -1;
	const char *base = c->buf + c->start;
	for (size_t i = 0; i + patlen <= avail; i++)
		if (memcmp(base + i, pat, patlen) == 0)
			return (long)i;
	return -1;
}

/* Copy n bytes of body into dst: first what is buffered, then from the
 * socket. */
static int conn_read_n(struct conn *c, char *dst, size_t n)
{
	while (n > 0) {
		if (c->end == c->start) {
			int rc = conn_fill(c);
			if (rc < 0)
				return rc == -ENODATA ? -ECONNRESET : rc;
		}
		size_t take = c->end - c->start;
		if (take > n)
			take = n;
		memcpy(dst, c->buf + c->start, take);
		c->start += take;
		dst += take;
		n -= take;
	}
	return 0;
}

/* Read one CRLF-terminated line (at most 4 KiB) into line. */
static int conn_read_line(struct conn *c, char *line, size_t size)
{
	for (;;) {
		long at = conn_find(c, "\r\n", 2);
		if (at >= 0) {
			if ((size_t)at >= size)
				return -EINVAL;
			memcpy(line, c->buf + c->start, (size_t)at);
			line[at] = '\0';
			c->start += (size_t)at + 2;
			return 0;
		}
		if (c->end - c->start >= size)
			return -EINVAL;
		int rc = conn_fill(c);
		if (rc < 0)
			return rc == -ENODATA ? -ECONNRESET : rc;
	}
}

static int read_chunked(struct conn *c, struct http_req *r)
{
	size_t len = 0, cap = 0;
	char *body = NULL;
	char line[4096];
	int rc;
	for (;;) {
		rc = conn_read_line(c, line, sizeof(line));
		if (rc < 0)
			goto fail;
		char *end;
		errno = 0;
		unsigned long long sz = strtoull(line, &end, 16);
		if (end == line || errno != 0 || (*end != '\0' && *end != ';' &&
						  *end != ' ' && *end != '\t')) {
			rc = -EINVAL;
			goto fail;
		}
		if (sz == 0)
			break;
		if (sz > MOCK_MAX_BODY || len + sz > MOCK_MAX_BODY) {
			rc = -EMSGSIZE;
			goto fail;
		}
		if (len + sz + 1 > cap) {
			size_t ncap = cap ? cap : 4096;
			while (ncap < len + sz + 1)
				ncap *= 2;
			char *nb = realloc(body, ncap);
			if (nb == NULL) {
				rc = -ENOMEM;
				goto fail;
			}
			body = nb;
			cap = ncap;
		}
		rc = conn_read_n(c, body + len, (size_t)sz);
		if (rc < 0)
			goto fail;
		len += sz;
		rc = conn_read_line(c, line, sizeof(line));
		if (rc < 0)
			goto fail;
		if (line[0] != '\0') {
			rc = -EINVAL;
			goto fail;
		}
	}
	/* Trailers (ignored) up to the empty line. */
	do {
		rc = conn_read_line(c, line, sizeof(line));
		if (rc < 0)
			goto fail;
	} while (line[0] != '\0');
	if (body == NULL) {
		body = malloc(1);
		if (body == NULL)
			return -ENOMEM;
	}
	body[len] = '\0';
	r->body = body;
	r->body_len = len;
	return 0;
fail:
	free(body);
	return rc;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	return s;
}

/* Case-insensitive: does the comma-separated header value contain token? */
static int has_token(const char *value, const char *token)
{
	size_t tl = strlen(token);
	const char *p = value;
	while (p != NULL && *p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == tl && strncasecmp(p, token, tl) == 0)
			return 1;
		p = e;
	}
	return 0;
}

static int parse_head(char *head, struct http_req *r)
{
	char *save = NULL;
	char *line = strtok_r(head, "\r\n", &save);
	if (line == NULL)
		return -EINVAL;
	/* Request line: METHOD SP TARGET SP HTTP/1.x */
	char *sp1 = strchr(line, ' ');
	char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (sp1 == NULL || sp2 == NULL || (size_t)(sp1 - line) >= sizeof(r->method))
		return -EINVAL;
	memcpy(r->method, line, (size_t)(sp1 - line));
	r->method[sp1 - line] = '\0';
	size_t tlen = (size_t)(sp2 - sp1 - 1);
	char *q = memchr(sp1 + 1, '?', tlen);
	if (q != NULL) {
		size_t ql = (size_t)(sp2 - q - 1);
		if (ql >= sizeof(r->query))
			ql = sizeof(r->query) - 1;
		memcpy(r->query, q + 1, ql);
		r->query[ql] = '\0';
		tlen = (size_t)(q - sp1 - 1);
	}
	if (tlen == 0 || tlen >= sizeof(r->path))
		return -EINVAL;
	memcpy(r->path, sp1 + 1, tlen);
	r->path[tlen] = '\0';
	if (strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)sp2[8]) ||
	    sp2[9] != '\0')
		return -EINVAL;
	r->minor = sp2[8] - '0';

	while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
		char *colon = strchr(line, ':');
		if (colon == NULL || colon == line)
			return -EINVAL;
		if (r->nhdr == MOCK_MAX_HEADERS)
			return -E2BIG;
		*colon = '\0';
		r->hdr[r->nhdr].name = trim(line);
		r->hdr[r->nhdr].value = trim(colon + 1);
		r->nhdr++;
	}
	const char *conn = http_header(r, "connection");
	if (r->minor >= 1)
		r->keep_alive = !(conn && has_token(conn, "close"));
	else
		r->keep_alive = conn && has_token(conn, "keep-alive");
	return 0;
}

int http_read_request(struct conn *c, struct http_req *r)
{
	memset(r, 0, sizeof(*r));
	long at;
	int rc;
	int got_any = c->end > c->start;
	while ((at = conn_find(c, "\r\n\r\n", 4)) < 0) {
		if (c->end - c->start >= MOCK_MAX_HEADER)
			return -E2BIG;
		rc = conn_fill(c);
		if (rc == -E2BIG)
			return -E2BIG;
		if (rc < 0)
			return (rc == -ENODATA && got_any) ? -EINVAL : rc;
		got_any = 1;
	}
	if ((size_t)at >= MOCK_MAX_HEADER)
		return -E2BIG;
	r->head = malloc((size_t)at + 1);
	if (r->head == NULL)
		return -ENOMEM;
	memcpy(r->head, c->buf + c->start, (size_t)at);
	r->head[at] = '\0';
	c->start += (size_t)at + 4;
	rc = parse_head(r->head, r);
	if (rc < 0)
		return rc;

	const char *te = http_header(r, "transfer-encoding");
	const char *cl = http_header(r, "content-length");
	const char *expect = http_header(r, "expect");
	uint64_t len = 0;
	if (te != NULL && !has_token(te, "chunked"))
		return -EINVAL;
	if (te == NULL && cl != NULL && parse_u64(cl, UINT64_MAX, &len) < 0)
		return -EINVAL;
	if (te == NULL && len > MOCK_MAX_BODY)
		return -EMSGSIZE;
	if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
	    (te != NULL || len > 0)) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		rc = http_send(c->fd, cont, sizeof(cont) - 1);
		if (rc < 0)
			return rc;
	}
	if (te != NULL)
		return read_chunked(c, r);
	r->body = malloc((size_t)len + 1);
	if (r->body == NULL)
		return -ENOMEM;
	rc = conn_read_n(c, r->body, (size_t)len);
	if (rc < 0)
		return rc;
	r->body[len] = '\0';
	r->body_len = (size_t)len;
	r->arrived_ns = c->rx_ns;
	return 0;
}

void http_req_free(struct http_req *r)
{
	free(r->head);
	free(r->body);
	r->head = r->body = NULL;
}

const char *http_header(const struct http_req *r, const char *name)
{
	for (int i = 0; i < r->nhdr; i++)
		if (strcasecmp(r->hdr[i].name, name) == 0)
			return r->hdr[i].value;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Writing                                                              */
/* ------------------------------------------------------------------ */

int http_send(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

const char *http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 529: return "Overloaded";
	default: return "Unknown";
	}
}

int http_respond(int fd, int status, const struct sbuf *extra,
		 const char *content_type, const char *body, size_t len,
		 int keep_alive, const struct http_shape *sh)
{
	static const struct http_shape plain = {0, 0, 0};
	if (sh == NULL)
		sh = &plain;
	struct sbuf enc = {0};
	if (sh->gzip) {
		gzip_encode(body, len, &enc);
		if (enc.oom) {
			sbuf_free(&enc);
			return -ENOMEM;
		}
		body = enc.p;
		len = enc.len;
	}
	struct sbuf h = {0};
	sbuf_printf(&h, "HTTP/1.1 %d %s\r\n", status, http_reason(status));
	sbuf_puts(&h, "server: shmlimit-mock\r\n");
	if (extra != NULL && extra->len > 0)
		sbuf_add(&h, extra->p, extra->len);
	sbuf_printf(&h, "content-type: %s\r\n", content_type);
	if (sh->gzip)
		sbuf_puts(&h, "content-encoding: gzip\r\n");
	if (sh->chunk > 0)
		sbuf_puts(&h, "transfer-encoding: chunked\r\n");
	else
		sbuf_printf(&h, "content-length: %zu\r\n", len);
	sbuf_printf(&h, "connection: %s\r\n\r\n", keep_alive ? "keep-alive" : "close");
	size_t head = h.len;
	if (sh->chunk > 0) {
		for (size_t off = 0; off < len; off += sh->chunk) {
			size_t n = len - off < sh->chunk ? len - off : sh->chunk;
			sbuf_printf(&h, "%zx\r\n", n);
			sbuf_add(&h, body + off, n);
			sbuf_puts(&h, "\r\n");
		}
		sbuf_puts(&h, "0\r\n\r\n");
	} else {
		sbuf_add(&h, body, len);
	}
	/* truncate: half of the body as framed on the wire, then the caller
	 * closes the connection. */
	size_t n = sh->truncate ? head + (h.len - head) / 2 : h.len;
	int rc = h.oom ? -ENOMEM : http_send(fd, h.p, n);
	sbuf_free(&h);
	sbuf_free(&enc);
	return rc;
}

/* ------------------------------------------------------------------ */
/* gzip                                                                 */
/* ------------------------------------------------------------------ */

/*
 * A real compressor is not needed, only a stream that a client must
 * decode: one deflate block (RFC 1951) with the fixed Huffman code, every
 * byte a literal, no back-references.  So the encoded bytes do not contain
 * the text (as with real compression), and no zlib is linked.
 */
struct bits {
	struct sbuf *out;
	uint32_t acc;
	int n;
};

/* Data elements are packed least significant bit first. */
static void put_bits(struct bits *b, uint32_t v, int n)
{
	b->acc |= v << b->n;
	b->n += n;
	while (b->n >= 8) {
		unsigned char byte = (unsigned char)(b->acc & 0xff);
		sbuf_add(b->out, &byte, 1);
		b->acc >>= 8;
		b->n -= 8;
	}
}

/* Huffman codes are packed most significant bit first. */
static void put_code(struct bits *b, uint32_t code, int n)
{
	for (int i = n - 1; i >= 0; i--)
		put_bits(b, (code >> i) & 1, 1);
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return ~c;
}

static void put_le32(struct sbuf *out, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8),
			      (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
	sbuf_add(out, b, 4);
}

void gzip_encode(const void *in, size_t n, struct sbuf *out)
{
	/* magic, deflate, no flags, no mtime, no extra flags, OS unix */
	static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
	const unsigned char *p = in;
	sbuf_add(out, head, sizeof(head));
	struct bits b = {out, 0, 0};
	put_bits(&b, 1, 1); /* BFINAL: the only block */
	put_bits(&b, 1, 2); /* BTYPE 01: fixed Huffman codes */
	for (size_t i = 0; i < n; i++) {
		if (p[i] < 144)
			put_code(&b, 0x30u + p[i], 8);
		else
			put_code(&b, 0x190u + (p[i] - 144u), 9);
	}
	put_code(&b, 0, 7); /* end of block (256) */
	if (b.n > 0)
		put_bits(&b, 0, 8 - b.n);
	put_le32(out, crc32_of(p, n));
	put_le32(out, (uint32_t)n);
}
