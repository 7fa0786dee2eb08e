/*
 * reply.c - the reply writers: API errors, a message as one JSON body, and
 * a message as a stream of server-sent events.
 *
 * Every response goes out through send_body, which applies the wire shape
 * the request asked for (gzip, chunk size, truncation; fault.c reads it);
 * a stream is written event by event unless the shape needs it whole.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* Drop the extra headers gathered so far, keeping the request id. */
void reset_headers(struct ctx *c)
{
	c->h.len = 0;
	if (c->h.p != NULL)
		c->h.p[0] = '\0';
	sbuf_printf(&c->h, "request-id: %s\r\n", c->request_id);
}

char *error_body(const struct ctx *c, const char *type,
			const char *msg, const char *error_code)
{
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "type", "error");
	cJSON *e = cJSON_AddObjectToObject(root, "error");
	cJSON_AddStringToObject(e, "type", type);
	cJSON_AddStringToObject(e, "message", msg);
	if (error_code != NULL) {
		cJSON *d = cJSON_AddObjectToObject(e, "details");
		cJSON_AddStringToObject(d, "error_code", error_code);
	}
	cJSON_AddStringToObject(root, "request_id", c->request_id);
	char *s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return s;
}

/* Send a body of `type`, shaped as the request asked (see fault_parse_wire);
 * returns keep-alive. */
int send_body(struct ctx *c, int status, const char *type, const char *body,
		     size_t len, int keep_alive, int truncate)
{
	struct http_shape sh = c->shape;
	sh.truncate = truncate;
	struct sbuf extra = {0};
	sbuf_add(&extra, c->h.p ? c->h.p : "", c->h.len);
	sbuf_add(&extra, c->pad.p ? c->pad.p : "", c->pad.len);
	if (extra.oom) {
		status = 500;
		keep_alive = 0;
		sh.truncate = 0;
	}
	c->o.status = status;
	int rc = http_respond(c->fd, status, extra.oom ? NULL : &extra, type, body, len,
			      keep_alive, &sh);
	sbuf_free(&extra);
	return rc == 0 && keep_alive && !sh.truncate;
}

/* Send a JSON body (or a stock error if it is NULL); returns keep-alive. */
int send_json(struct ctx *c, int status, char *body, int keep_alive,
		     int truncate)
{
	static const char oom[] =
		"{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
		"\"message\":\"mock: out of memory\"}}";
	if (body == NULL || c->h.oom) {
		status = 500;
		keep_alive = 0;
		truncate = 0;
	}
	const char *b = body ? body : oom;
	int keep = send_body(c, status, "application/json", b, strlen(b), keep_alive, truncate);
	free(body);
	return keep;
}

int send_error(struct ctx *c, int status, const char *type,
		      const char *msg, const char *error_code)
{
	return send_json(c, status, error_body(c, type, msg, error_code),
			 c->r->keep_alive, 0);
}

/* The reply's usage object, or the request's x-mock-usage-raw text as is. */
static cJSON *usage_json(const struct ctx *c, const struct usage *u, uint64_t out)
{
	if (c->usage_raw != NULL)
		return cJSON_CreateRaw(c->usage_raw);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "input_tokens", (double)u->in);
	cJSON_AddNumberToObject(o, "cache_creation_input_tokens",
				(double)(u->cw5m + u->cw1h));
	cJSON_AddNumberToObject(o, "cache_read_input_tokens", (double)u->read);
	cJSON *cc = cJSON_AddObjectToObject(o, "cache_creation");
	cJSON_AddNumberToObject(cc, "ephemeral_5m_input_tokens", (double)u->cw5m);
	cJSON_AddNumberToObject(cc, "ephemeral_1h_input_tokens", (double)u->cw1h);
	cJSON_AddNumberToObject(o, "output_tokens", (double)out);
	cJSON_AddStringToObject(o, "service_tier", "standard");
	return o;
}


/* "tok tok ..." : words [from, to) of the output, with the separating
 * spaces, so that the concatenation of all pieces is the whole text; with
 * `junk`, invalid UTF-8 after the first word. */
static char *words(uint64_t from, uint64_t to, int junk)
{
	struct sbuf b = {0};
	sbuf_puts(&b, "");
	for (uint64_t i = from; i < to; i++) {
		sbuf_puts(&b, i == 0 ? "tok" : " tok");
		if (i == from && junk)
			sbuf_puts(&b, BAD_UTF8);
	}
	if (b.oom) {
		sbuf_free(&b);
		return NULL;
	}
	return b.p;
}


int send_message_json(struct ctx *c, const struct reply *m)
{
	char *text = words(0, m->u.out, c->bad_utf8);
	if (text == NULL)
		return send_json(c, 500, NULL, 0, 0);
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "id", m->id);
	cJSON_AddStringToObject(root, "type", "message");
	cJSON_AddStringToObject(root, "role", "assistant");
	cJSON_AddStringToObject(root, "model", m->model);
	cJSON *content = cJSON_AddArrayToObject(root, "content");
	cJSON *blk = cJSON_CreateObject();
	cJSON_AddStringToObject(blk, "type", "text");
	cJSON_AddStringToObject(blk, "text", text);
	cJSON_AddItemToArray(content, blk);
	cJSON_AddStringToObject(root, "stop_reason", m->stop_reason);
	cJSON_AddNullToObject(root, "stop_sequence");
	cJSON_AddItemToObject(root, "usage", usage_json(c, &m->u, m->u.out));
	char *body = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	free(text);
	return send_json(c, 200, body, c->r->keep_alive,
			 m->fault == FAULT_TRUNCATE);
}

/* An SSE stream in chunked encoding.  With `hold` set, everything is kept
 * in `all` and only half of it is sent at the end (the truncate fault).
 * With `whole` set, the events are kept in `all` unframed and sent at the
 * end through send_body (gzip, x-mock-chunk-bytes). */
struct stream {
	int fd;
	int hold;
	int whole;
	int chunked;    /* 0 for HTTP/1.0 clients: close-delimited instead */
	int err;
	struct sbuf all;
};

static void stream_chunk(struct stream *s, const char *data, size_t n)
{
	if (s->whole) {
		sbuf_add(&s->all, data, n);
		return;
	}
	struct sbuf b = {0};
	if (s->chunked && n > 0)
		sbuf_printf(&b, "%zx\r\n", n);
	else if (s->chunked)
		sbuf_puts(&b, "0\r\n");
	sbuf_add(&b, data, n);
	if (s->chunked)
		sbuf_puts(&b, "\r\n");
	if (b.len == 0)
		return;
	if (b.oom)
		s->err = -ENOMEM;
	else if (s->hold)
		sbuf_add(&s->all, b.p, b.len);
	else if (s->err == 0)
		s->err = http_send(s->fd, b.p, b.len);
	sbuf_free(&b);
}

/* One event; takes ownership of data. */
static void stream_event(struct stream *s, const char *name, cJSON *data)
{
	char *json = cJSON_PrintUnformatted(data);
	cJSON_Delete(data);
	struct sbuf b = {0};
	sbuf_printf(&b, "event: %s\ndata: %s\n\n", name, json ? json : "{}");
	free(json);
	stream_chunk(s, b.p ? b.p : "", b.len);
	sbuf_free(&b);
}

static cJSON *typed(const char *type)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "type", type);
	return o;
}

int send_message_sse(struct ctx *c, const struct reply *m)
{
	c->o.status = 200;
	int chunked = c->r->minor >= 1;
	int keep_alive = chunked && c->r->keep_alive;
	struct stream s = {.fd = c->fd, .chunked = chunked,
			   .whole = c->shape.gzip || c->shape.chunk > 0};
	if (!s.whole) {
		s.hold = m->fault == FAULT_TRUNCATE;
		struct sbuf head = {0};
		sbuf_puts(&head, "HTTP/1.1 200 OK\r\nserver: shmlimit-mock\r\n");
		sbuf_add(&head, c->h.p ? c->h.p : "", c->h.len);
		sbuf_add(&head, c->pad.p ? c->pad.p : "", c->pad.len);
		sbuf_printf(&head, "content-type: text/event-stream\r\n"
			    "cache-control: no-cache\r\n%s"
			    "connection: %s\r\n\r\n",
			    chunked ? "transfer-encoding: chunked\r\n" : "",
			    keep_alive ? "keep-alive" : "close");
		if (head.oom)
			s.err = -ENOMEM;
		else if (s.hold)
			sbuf_add(&s.all, head.p, head.len);
		else
			s.err = http_send(c->fd, head.p, head.len);
		sbuf_free(&head);
	}

	cJSON *ev = typed("message_start");
	cJSON *msg = cJSON_AddObjectToObject(ev, "message");
	cJSON_AddStringToObject(msg, "id", m->id);
	cJSON_AddStringToObject(msg, "type", "message");
	cJSON_AddStringToObject(msg, "role", "assistant");
	cJSON_AddStringToObject(msg, "model", m->model);
	cJSON_AddArrayToObject(msg, "content");
	cJSON_AddNullToObject(msg, "stop_reason");
	cJSON_AddNullToObject(msg, "stop_sequence");
	cJSON_AddItemToObject(msg, "usage", usage_json(c, &m->u, 1));
	stream_event(&s, "message_start", ev);

	uint64_t sent = 0;
	if (m->fault == FAULT_529_MIDSTREAM) {
		ev = typed("error");
		cJSON *e = cJSON_AddObjectToObject(ev, "error");
		cJSON_AddStringToObject(e, "type", "overloaded_error");
		cJSON_AddStringToObject(e, "message", "Overloaded");
		stream_event(&s, "error", ev);
		goto end;
	}

	ev = typed("content_block_start");
	cJSON_AddNumberToObject(ev, "index", 0);
	cJSON *cb = cJSON_AddObjectToObject(ev, "content_block");
	cJSON_AddStringToObject(cb, "type", "text");
	cJSON_AddStringToObject(cb, "text", "");
	stream_event(&s, "content_block_start", ev);
	stream_event(&s, "ping", typed("ping"));

	uint64_t out = m->u.out;
	uint64_t ndelta = out < 5 ? out : 5;
	for (uint64_t k = 0; k < ndelta && s.err == 0; k++) {
		uint64_t from = out * k / ndelta, to = out * (k + 1) / ndelta;
		if (k > 0 && mock_cfg->chunk_delay_ms > 0 && !s.hold)
			sleep_ms(mock_cfg->chunk_delay_ms);
		char *text = words(from, to, c->bad_utf8 && k == 0);
		ev = typed("content_block_delta");
		cJSON_AddNumberToObject(ev, "index", 0);
		cJSON *d = cJSON_AddObjectToObject(ev, "delta");
		cJSON_AddStringToObject(d, "type", "text_delta");
		cJSON_AddStringToObject(d, "text", text ? text : "");
		free(text);
		stream_event(&s, "content_block_delta", ev);
		sent = to;
		/* Halfway: an intermediate, cumulative message_delta and a ping. */
		if (k + 1 == ndelta / 2 && sent < out) {
			ev = typed("message_delta");
			d = cJSON_AddObjectToObject(ev, "delta");
			cJSON_AddNullToObject(d, "stop_reason");
			cJSON_AddNullToObject(d, "stop_sequence");
			if (c->usage_raw != NULL) {
				cJSON_AddItemToObject(ev, "usage", cJSON_CreateRaw(c->usage_raw));
			} else {
				cJSON *u = cJSON_AddObjectToObject(ev, "usage");
				cJSON_AddNumberToObject(u, "output_tokens", (double)sent);
			}
			stream_event(&s, "message_delta", ev);
			stream_event(&s, "ping", typed("ping"));
		}
	}
	ev = typed("content_block_stop");
	cJSON_AddNumberToObject(ev, "index", 0);
	stream_event(&s, "content_block_stop", ev);

	ev = typed("message_delta");
	cJSON *d = cJSON_AddObjectToObject(ev, "delta");
	cJSON_AddStringToObject(d, "stop_reason", m->stop_reason);
	cJSON_AddNullToObject(d, "stop_sequence");
	if (c->usage_raw != NULL) {
		cJSON_AddItemToObject(ev, "usage", cJSON_CreateRaw(c->usage_raw));
	} else {
		cJSON *u = cJSON_AddObjectToObject(ev, "usage");
		cJSON_AddNumberToObject(u, "input_tokens", (double)m->u.in);
		cJSON_AddNumberToObject(u, "cache_creation_input_tokens",
					(double)(m->u.cw5m + m->u.cw1h));
		cJSON_AddNumberToObject(u, "cache_read_input_tokens", (double)m->u.read);
		cJSON_AddNumberToObject(u, "output_tokens", (double)out);
	}
	stream_event(&s, "message_delta", ev);
	stream_event(&s, "message_stop", typed("message_stop"));
	sent = out;
end:
	stream_chunk(&s, "", 0);
	if (m->pool >= 0)
		pool_settle(&mock_cfg->limits->pools[m->pool], m->reserved, sent);
	if (s.whole) {
		sbuf_puts(&c->h, "cache-control: no-cache\r\n");
		int keep = 0;
		if (s.all.oom)
			send_json(c, 500, NULL, 0, 0);
		else
			keep = send_body(c, 200, "text/event-stream", s.all.p, s.all.len,
					 keep_alive, m->fault == FAULT_TRUNCATE);
		sbuf_free(&s.all);
		return keep;
	}
	if (s.hold) {
		if (!s.all.oom)
			http_send(c->fd, s.all.p, s.all.len / 2);
		sbuf_free(&s.all);
		return 0;
	}
	return s.err == 0 && keep_alive;
}

