/*
 * test_exchange.c - the request/response component (shl_ex_*): the
 * estimate's rule per script, the settlement rules of shl_ex_finish, each
 * token charged once between settle and the remaining headers, the learned
 * ratio and its refusal of a body larger than a bucket; on a fake clock, so
 * every figure is exact.
 */
#include <math.h>
#include <pthread.h>

#include "testutil.h"
#include "wire.h"

#define S 1000000000LL
#define MS 1000000LL

static char name[64];
static shl_t *h;

static void open_seg(shl_config *c)
{
	tu_boot = 5000 * S;
	tu_unix = 1790000000LL * S; /* 2026-09-21, UTC */
	tu_fake_clock(1);
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_err e = {{0}};
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, &h, &e), 0);
	shl_config_free(c);
}

static void close_seg(void)
{
	shl_detach(h);
	shl_unlink(name);
	h = NULL;
	tu_fake_clock(0);
}

/* A pool "p" of large buckets refilling one unit a second (so the fake
 * clock standing still makes every figure exact); models "m*". */
static shl_config *big_pool(const char *extra)
{
	return tu_pool_cfg(60, 60, 60, 1000, 1000000, 1000000, extra, NULL);
}

static const shl_pool_stats *pool0(shl_stats *st)
{
	CU_ASSERT_EQUAL_FATAL(shl_stats_get(h, st), 0);
	return &st->pools[0];
}

/* A Messages body for model m1 whose user text is `n` copies of `unit`. */
static char *body_of(const char *unit, int n, const char *extra)
{
	size_t ul = strlen(unit);
	char *b = malloc(256 + ul * (size_t)n + (extra ? strlen(extra) : 0));
	char *p = b + sprintf(b, "{\"model\":\"m1\",\"max_tokens\":500,%s\"messages\":[{\"role\":"
				 "\"user\",\"content\":\"", extra ? extra : "");
	for (int i = 0; i < n; i++, p += ul)
		memcpy(p, unit, ul);
	strcpy(p, "\"}]}");
	return b;
}

static shl_exchange *open_ex(const char *body)
{
	shl_exchange *x = NULL;
	shl_err e = {{0}};
	int r = shl_ex_open(h, SHL_EX_MESSAGES, body, strlen(body), &x, &e);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	return x;
}

static void admit(shl_exchange *x)
{
	int64_t rel = -1;
	shl_refusal why;
	CU_ASSERT_EQUAL_FATAL(shl_ex_reserve(h, x, 0, &rel, &why), 0);
	CU_ASSERT_EQUAL(rel, tu_boot);
	CU_ASSERT_EQUAL(shl_ex_start(h, x, &why), 0);
}

static void hdr(shl_exchange *x, const char *n, const char *v)
{
	shl_ex_header(x, n, strlen(n), v, strlen(v));
}

/* A raw header line, as libcurl hands it over. */
static void rawhdr(shl_exchange *x, const char *line)
{
	shl_ex_header(x, line, strlen(line), NULL, 0);
}

static void body(shl_exchange *x, const char *s)
{
	shl_ex_body(x, s, strlen(s));
}

/* ------------------------------------------------------------------ */

static void test_kind(void)
{
	CU_ASSERT_EQUAL(shl_ex_kind("POST", "/v1/messages"), SHL_EX_MESSAGES);
	CU_ASSERT_EQUAL(shl_ex_kind("post", "/v1/messages/?beta=true"), SHL_EX_MESSAGES);
	CU_ASSERT_EQUAL(shl_ex_kind("POST", "/v1/messages/count_tokens"), SHL_EX_COUNT);
	CU_ASSERT_EQUAL(shl_ex_kind("POST", "/v1/messages/batches"), SHL_EX_BATCH);
	CU_ASSERT_EQUAL(shl_ex_kind("GET", "/v1/messages"), SHL_EX_NONE);
	CU_ASSERT_EQUAL(shl_ex_kind("POST", "/v1/complete"), SHL_EX_NONE);
	CU_ASSERT_EQUAL(shl_ex_kind("POST", "/v1/messages/batches/b1/cancel"), SHL_EX_NONE);
}

/* The estimate counts quarter tokens by script (wire_req.c). */
static void test_script_rule(void)
{
	CU_ASSERT_EQUAL(shl__text_units("abcd"), 4);                 /* 1 token */
	CU_ASSERT_EQUAL(shl__text_units("\xc3\xa9t\xc3\xa9"), 5);    /* été: 2 + 1 + 2 */
	CU_ASSERT_EQUAL(shl__text_units("\xd0\x96"), 2);              /* Cyrillic */
	CU_ASSERT_EQUAL(shl__text_units("\xe6\x97\xa5\xe6\x9c\xac"), 8); /* 日本: 1 token each */
	CU_ASSERT_EQUAL(shl__text_units("\xea\xb0\x80"), 4);          /* Hangul */
	CU_ASSERT_EQUAL(shl__text_units("\xf0\x9f\x98\x80"), 8);      /* an emoji: 2 tokens */
	CU_ASSERT_EQUAL(shl__text_units("\xc2\xa0"), 1);              /* NBSP: like ASCII */
	/* Malformed UTF-8 counts as before: each byte that is not a
	 * continuation byte is one character (what the mock counts). */
	CU_ASSERT_EQUAL(shl__text_units("\xff\xfe \xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80 abc"),
			13);
	CU_ASSERT_EQUAL(shl__text_units("\x80\x80"), 0);

	open_seg(big_pool(NULL));
	char *b = body_of("\xe4\xb8\xad", 300, NULL); /* 300 CJK characters */
	shl_exchange *x = open_ex(b);
	shl_cost c;
	CU_ASSERT_EQUAL(shl_ex_cost(x, &c), 0);
	/* 300, not 75 (the ASCII rule's), times the prior of a fresh pool */
	CU_ASSERT_EQUAL(c.input_tokens, shl__learn_apply(300, SHL_LEARN_PRIOR));
	CU_ASSERT_EQUAL(c.input_tokens, 375);
	CU_ASSERT_EQUAL(c.max_tokens, 500);
	CU_ASSERT_STRING_EQUAL(shl_ex_model(x), "m1");
	CU_ASSERT_PTR_NULL(shl_ex_ticket(x));
	shl_ex_free(x);
	free(b);
	close_seg();
}

static void test_open_refusals(void)
{
	open_seg(big_pool(NULL));
	shl_exchange *x = (shl_exchange *)1;
	shl_err e = {{0}};
	CU_ASSERT_EQUAL(shl_ex_open(h, SHL_EX_MESSAGES, "{\"max_tokens\":1}", 16, &x, &e), -EINVAL);
	CU_ASSERT_PTR_NULL(x);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "not a JSON request with a model"));
	const char *other = "{\"model\":\"other\",\"max_tokens\":1}";
	CU_ASSERT_EQUAL(shl_ex_open(h, SHL_EX_MESSAGES, other, strlen(other), &x, &e), -ESRCH);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "other"));
	/* count_tokens without a count_tokens entry: not governed */
	const char *m1 = "{\"model\":\"m1\",\"max_tokens\":1}";
	CU_ASSERT_EQUAL(shl_ex_open(h, SHL_EX_COUNT, m1, strlen(m1), &x, &e), -ESRCH);
	CU_ASSERT_EQUAL(shl_ex_open(h, SHL_EX_NONE, m1, strlen(m1), &x, &e), -EINVAL);
	close_seg();
}

/* A JSON response's usage is settled; the status and headers may come as
 * name/value pairs. */
static void test_json_usage(void)
{
	open_seg(big_pool(NULL));
	char *b = body_of("abcd", 100, NULL);
	shl_exchange *x = open_ex(b);
	admit(x);
	CU_ASSERT_PTR_NOT_NULL(shl_ex_ticket(x));
	shl_ex_status(x, 200);
	hdr(x, "content-type", "application/json");
	body(x, "{\"type\":\"message\",\"usage\":{\"input_tokens\":");
	body(x, "123,\"output_tokens\":45}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED); /* idempotent */
	shl_stats st;
	const shl_pool_stats *p = pool0(&st);
	CU_ASSERT_EQUAL(p->settled, 1);
	CU_ASSERT_EQUAL(p->tokens_in, 123);
	CU_ASSERT_EQUAL(p->tokens_out, 45);
	CU_ASSERT_EQUAL(p->server_429, 0);
	shl_ex_free(x);
	free(b);
	close_seg();
}

/*
 * Issue 12 cause 5: the remaining header already counts the request's real
 * input; settling the estimate's error on top of the clamp charged it
 * twice.  Estimate 100, the server counts 150 and says burst - 150 remain:
 * the bucket must end at burst - 150, not burst - 200 (the shim's old
 * order, clamp at the headers then settle, gave burst - 200).
 */
static void test_charged_once(void)
{
	open_seg(big_pool(NULL));
	char *b = body_of("abcd", 100, NULL); /* estimate 100 */
	shl_exchange *x = open_ex(b);
	admit(x);
	shl_ex_status(x, 200);
	hdr(x, "anthropic-ratelimit-input-tokens-remaining", "999850");
	hdr(x, "anthropic-ratelimit-output-tokens-remaining", "999000"); /* others used 1000 */
	body(x, "{\"usage\":{\"input_tokens\":150,\"output_tokens\":300}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	shl_stats st;
	const shl_pool_stats *p = pool0(&st);
	CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_ITPM], 1000000 - 150, 1e-6);
	/* OTPM: the header came before the 300 output tokens were generated:
	 * the server's 999000 less those 300. */
	CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_OTPM], 999000 - 300, 1e-6);
	shl_usage u;
	CU_ASSERT_EQUAL(shl_ex_usage(x, &u), 0); /* what the response said */
	CU_ASSERT_EQUAL(u.input_tokens, 150);
	CU_ASSERT_EQUAL(u.output_tokens, 300);
	CU_ASSERT_EQUAL(shl_ex_usage(x, NULL), -EINVAL);
	shl_ex_free(x);
	x = open_ex(b);
	CU_ASSERT_EQUAL(shl_ex_usage(x, &u), -ENODATA); /* none read */
	shl_ex_free(x);

	/* The same when the headers arrived 10 s before the end: what refilled
	 * since (10 tokens at 1/s) counts. */
	x = open_ex(b);
	admit(x);
	shl_ex_status(x, 200);
	hdr(x, "anthropic-ratelimit-input-tokens-remaining", "999000");
	tu_boot += 10 * S;
	body(x, "{\"usage\":{\"input_tokens\":150,\"output_tokens\":0}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	p = pool0(&st);
	CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_ITPM], 999000 + 10, 1e-6);
	shl_ex_free(x);
	free(b);
	close_seg();
}

/* The requests and output remaining counts clamp as soon as the headers are
 * over (settlement never changes what the request holds there), so a long
 * stream does not keep them from the segment; the input count waits for
 * the settlement.  Name/value headers are over at the first body bytes. */
static void test_early_clamps(void)
{
	char *b = body_of("abcd", 100, NULL);
	for (int raw = 0; raw < 2; raw++) {
		open_seg(big_pool(NULL));
		shl_exchange *x = open_ex(b);
		admit(x);
		if (raw) {
			rawhdr(x, "HTTP/1.1 200 OK\r\n");
			rawhdr(x, "anthropic-ratelimit-requests-remaining: 500\r\n");
			rawhdr(x, "anthropic-ratelimit-output-tokens-remaining: 990000\r\n");
			rawhdr(x, "anthropic-ratelimit-input-tokens-remaining: 990000\r\n");
			rawhdr(x, "\r\n");
		} else {
			shl_ex_status(x, 200);
			hdr(x, "anthropic-ratelimit-requests-remaining", "500");
			hdr(x, "anthropic-ratelimit-output-tokens-remaining", "990000");
			hdr(x, "anthropic-ratelimit-input-tokens-remaining", "990000");
			body(x, "event: message_start\n");
		}
		shl_stats st;
		const shl_pool_stats *p = pool0(&st);
		CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_RPM], 500, 1e-6);
		CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_OTPM], 990000, 1e-6);
		if (!raw)
			/* input: still the estimate's 125 taken (100 times the
			 * fresh pool's prior), not yet clamped */
			CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_ITPM], 1000000 - 125, 1e-6);
		/* message_start: the server counted 150 (the estimate said 125),
		 * and R = 990000 counts them: the input clamps now, to end at R
		 * once the settlement charges the other 25 */
		body(x, "data: {\"type\":\"message_start\",\"message\":{\"usage\":"
			"{\"input_tokens\":150,\"output_tokens\":1}}}\n\n");
		p = pool0(&st);
		CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_ITPM], 990000 + 25, 1e-6);
		body(x, "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":50}}\n\n");
		CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
		p = pool0(&st);
		CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_RPM], 500, 1e-6);
		CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_OTPM], 990000 - 50, 1e-6);
		CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_ITPM], 990000, 1e-6);
		shl_ex_free(x);
		close_seg();
	}
	free(b);
}

/*
 * Where a place lies (shl_ex_place, what preload/hold.c moves late sends
 * by): the second of two takes at one instant starts where the first ends
 * (its debt is the first's full), both cost the same, neither set its
 * release (edge < 0) in these large buckets, and OTPM in "actual" mode is
 * not taken.  In a bucket of one request the reservation behind sets its
 * release: edge 0, no debt past it.
 */
static void test_place(void)
{
	open_seg(big_pool(NULL));
	char *b = body_of("abcd", 100, NULL);
	shl_exchange *x1 = open_ex(b), *x2 = open_ex(b);
	shl_place p1, p2;
	CU_ASSERT_EQUAL(shl_ex_place(h, x1, &p1), -EINVAL); /* no ticket yet */
	admit(x1);
	admit(x2);
	CU_ASSERT_EQUAL_FATAL(shl_ex_place(h, x1, &p1), 0);
	CU_ASSERT_EQUAL_FATAL(shl_ex_place(h, x2, &p2), 0);
	for (int d = SHL_DIM_RPM; d <= SHL_DIM_ITPM; d++) {
		CU_ASSERT_EQUAL(p1.debt[d], 0);
		CU_ASSERT(p1.full[d] > 0);
		CU_ASSERT_EQUAL(p2.debt[d], p1.full[d]);
		CU_ASSERT_EQUAL(p2.full[d] - p2.debt[d], p1.full[d]);
		CU_ASSERT(p1.edge[d] < 0 && p2.edge[d] < 0 && p2.edge[d] > p1.edge[d]);
	}
	CU_ASSERT(p2.full[SHL_DIM_ITPM] > 100 * p2.full[SHL_DIM_RPM] / 2 - 1);
	CU_ASSERT_EQUAL(p1.debt[SHL_DIM_OTPM], INT64_MIN);
	CU_ASSERT_EQUAL(p1.edge[SHL_DIM_OTPM], INT64_MIN);
	CU_ASSERT_EQUAL(p1.full[SHL_DIM_OTPM], INT64_MIN);
	CU_ASSERT_EQUAL(shl_ex_place(NULL, x1, &p1), -EINVAL);
	CU_ASSERT_EQUAL(shl_ex_place(h, x1, NULL), -EINVAL);
	shl_ex_free(x1);
	shl_ex_free(x2);
	close_seg();

	/* RPM burst 1: the second is reserved one interval ahead */
	open_seg(tu_pool_cfg(60, 60, 60, 1, 1000000, 1000000, NULL, NULL));
	x1 = open_ex(b);
	x2 = open_ex(b);
	admit(x1);
	int64_t rel = -1;
	shl_refusal why;
	CU_ASSERT_EQUAL_FATAL(shl_ex_reserve(h, x2, -1, &rel, &why), 0);
	CU_ASSERT_EQUAL_FATAL(shl_ex_place(h, x2, &p2), 0);
	CU_ASSERT(rel > tu_boot);
	CU_ASSERT_EQUAL(p2.edge[SHL_DIM_RPM], 0);
	CU_ASSERT_EQUAL(p2.debt[SHL_DIM_RPM], 0);
	CU_ASSERT_EQUAL(p2.full[SHL_DIM_RPM], rel - tu_boot); /* one interval */
	shl_ex_free(x1);
	shl_ex_free(x2);
	free(b);
	close_seg();
}

/* test_given's and test_follow's line (see test_given): x0 goes, 5 s later
 * x1 goes and x2 is reserved behind it; its release. */
static int64_t line_of_three(shl_exchange *x[3])
{
	open_seg(tu_pool_cfg(60000, 600, 60000000, 10000, 250, 1000000, NULL, NULL));
	char *b = body_of("abcd", 100, NULL);
	for (int i = 0; i < 3; i++)
		x[i] = open_ex(b);
	free(b);
	int64_t rel = -1;
	shl_refusal why;
	admit(x[0]);
	tu_boot += 5 * S;
	admit(x[1]);
	CU_ASSERT_EQUAL_FATAL(shl_ex_reserve(h, x[2], -1, &rel, &why), 0);
	return rel;
}

/* 1 s later, x1's answer: the server counted 100 of its 125. */
static void x1_answers(shl_exchange *x1)
{
	tu_boot += 1 * S;
	shl_ex_status(x1, 200);
	body(x1, "{\"type\":\"message\",\"model\":\"m1\",\"usage\":"
		 "{\"input_tokens\":100,\"output_tokens\":20}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x1, 1), SHL_EX_SETTLED);
}

static void line_close(shl_exchange *x[3])
{
	for (int i = 0; i < 3; i++)
		shl_ex_free(x[i]);
	close_seg();
}

/*
 * What finishing gave back (shl_ex_given, what preload/hold.c moves held
 * transfers sooner by).  ITPM binds: 10 tokens a second (100 ms a token),
 * burst 250 (RPM's burst of 10,000 puts its own floor for shl_ex_advance
 * 10 s before the release: not the one that binds); each body is estimated
 * at 125 (100 times the fresh pool's prior).  x0 goes first; 5 s later x1 goes and x2 waits behind it (ITPM
 * sets its release, at 12.5 s).  The server counts 100 of x1's 125: its
 * settle gives 25 tokens back, in ns of the word, and nothing in the other
 * buckets; x2's place in the ITPM bucket is then exactly that much sooner
 * (its edge, read again, moved down by it), and shl_ex_advance moves its
 * release exactly that much.  x2, last in line and cancelled, gives back
 * all of its 125 tokens and its request.
 */
static void test_given(void)
{
	shl_exchange *x[3];
	int64_t g[3], rel = line_of_three(x);
	shl_exchange *x1 = x[1], *x2 = x[2];
	shl_refusal why;
	CU_ASSERT_EQUAL(rel, tu_boot + 7500 * MS); /* x2 waits */
	shl_place p2, q2;
	CU_ASSERT_EQUAL_FATAL(shl_ex_place(h, x2, &p2), 0);
	CU_ASSERT_EQUAL(p2.edge[SHL_DIM_ITPM], 0); /* ITPM set its release */
	CU_ASSERT_EQUAL(shl_ex_given(x1, g), -EINVAL); /* not finished */
	CU_ASSERT_EQUAL(shl_ex_given(NULL, g), -EINVAL);

	x1_answers(x1); /* 1 s later: x2 still waits */
	CU_ASSERT_EQUAL_FATAL(shl_ex_given(x1, g), 0);
	CU_ASSERT_EQUAL(g[SHL_DIM_ITPM], 2500 * MS); /* 25 tokens of 100 ms */
	CU_ASSERT_EQUAL(g[SHL_DIM_RPM], 0);
	CU_ASSERT_EQUAL(g[SHL_DIM_OTPM], 0);
	CU_ASSERT_EQUAL(shl_ex_given(x1, NULL), -EINVAL);
	CU_ASSERT_EQUAL_FATAL(shl_ex_place(h, x2, &q2), 0);
	CU_ASSERT_EQUAL(q2.edge[SHL_DIM_ITPM], p2.edge[SHL_DIM_ITPM] - g[SHL_DIM_ITPM]);
	CU_ASSERT_EQUAL(q2.edge[SHL_DIM_RPM], p2.edge[SHL_DIM_RPM]);

	/* shl_ex_advance: x2 may go 2.5 s sooner, no sooner than that (asked
	 * for now: the floor), never later, and shl_ex_start takes it then */
	int64_t want = tu_boot, later = rel + S;
	CU_ASSERT_EQUAL(shl_ex_advance(h, x2, NULL), -EINVAL);
	CU_ASSERT_EQUAL(shl_ex_advance(h, x2, &want), 0);
	CU_ASSERT_EQUAL(want, rel - g[SHL_DIM_ITPM]);
	CU_ASSERT_EQUAL(shl_ex_advance(h, x2, &later), 0);
	CU_ASSERT_EQUAL(later, want);
	tu_boot = want;
	CU_ASSERT_EQUAL(shl_ex_start(h, x2, &why), 0);

	/* x2, never sent: cancelled, it gives back everything it took */
	CU_ASSERT_EQUAL(shl_ex_finish(h, x2, 0), SHL_EX_CANCELLED);
	CU_ASSERT_EQUAL_FATAL(shl_ex_given(x2, g), 0);
	CU_ASSERT_EQUAL(g[SHL_DIM_ITPM], 12500 * MS);
	CU_ASSERT_EQUAL(g[SHL_DIM_RPM], MS);
	line_close(x);
}

/* shl_ex_follow, test_given's line: x1's give (2.5 s of ITPM) moves x2,
 * which ITPM released, by exactly that, and restates its place from the
 * new release; the same give counted again moves nothing (the word's
 * floor); a place no bucket released (edges all below 0: a hold, the
 * clock) does not move. */
static void test_follow(void)
{
	shl_exchange *x[3];
	int64_t g[3], rel = line_of_three(x), r2 = -1;
	shl_exchange *x2 = x[2];
	shl_refusal why;
	shl_place p2, was;
	CU_ASSERT_EQUAL_FATAL(shl_ex_place(h, x2, &p2), 0);
	was = p2;
	x1_answers(x[1]);
	CU_ASSERT_EQUAL_FATAL(shl_ex_given(x[1], g), 0);
	CU_ASSERT_EQUAL(shl_ex_follow(h, x2, NULL, &p2, &r2), -EINVAL);
	CU_ASSERT_EQUAL(shl_ex_follow(h, x2, g, NULL, &r2), -EINVAL);
	CU_ASSERT_EQUAL(shl_ex_follow(h, x2, g, &p2, &r2), 1);
	CU_ASSERT_EQUAL(r2, rel - 2500 * MS);
	CU_ASSERT_EQUAL(p2.edge[SHL_DIM_ITPM], 0);
	CU_ASSERT_EQUAL(p2.edge[SHL_DIM_RPM],
			was.edge[SHL_DIM_RPM] + 2500 * MS > 0 ? 0 : was.edge[SHL_DIM_RPM] + 2500 * MS);
	CU_ASSERT_EQUAL(p2.full[SHL_DIM_ITPM], was.full[SHL_DIM_ITPM]); /* moved with it */
	/* the same give again: the word allows no more */
	CU_ASSERT_EQUAL(shl_ex_follow(h, x2, g, &p2, &r2), 0);
	CU_ASSERT_EQUAL(r2, rel - 2500 * MS);
	/* a place no bucket released stays */
	shl_place held = p2;
	held.edge[SHL_DIM_ITPM] = held.edge[SHL_DIM_RPM] = -MS;
	CU_ASSERT_EQUAL(shl_ex_follow(h, x2, g, &held, &r2), 0);
	tu_boot = r2;
	CU_ASSERT_EQUAL(shl_ex_start(h, x2, &why), 0);
	CU_ASSERT_EQUAL(shl_ex_follow(h, x2, g, &p2, &r2), 0); /* started: never before now */
	CU_ASSERT_EQUAL(r2, tu_boot);
	line_close(x);
}

/* The same for tickets (shl_settle_given, shl_cancel_given,
 * shl_ticket_place, shl_follow): t1's settle 25 tokens under its 150 gives
 * 2.5 s of ITPM, which moves t2, reserved behind it, by exactly that; the
 * same give again moves nothing; a settle or cancel says 0 on an error;
 * shl_start takes t2 at its new release; a closed ticket has no place. */
static void test_follow_tickets(void)
{
	open_seg(tu_pool_cfg(60000, 600, 60000000, 10000, 250, 1000000, NULL, NULL));
	int m = shl_lookup(h, "m1");
	shl_cost c = {.input_tokens = 150, .max_tokens = 20};
	shl_ticket t0, t1, t2;
	shl_refusal why;
	int64_t g[3], g1[3], r2 = -1;
	shl_place p;
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &t0, &why), 0); /* ITPM full at +15 s */
	tu_boot += 5 * S;
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &c, &t1, &why), 0); /* +30 s */
	CU_ASSERT_EQUAL_FATAL(shl_reserve(h, m, &c, -1, &t2, &why), 0);
	const int64_t rel = t2.admitted_at;
	CU_ASSERT_EQUAL(rel, tu_boot + 15 * S);
	CU_ASSERT_EQUAL(shl_ticket_place(h, NULL, &p), -EINVAL);
	CU_ASSERT_EQUAL_FATAL(shl_ticket_place(h, &t2, &p), 0);
	CU_ASSERT_EQUAL(p.edge[SHL_DIM_ITPM], 0);
	tu_boot += 1 * S;
	shl_usage u = {.input_tokens = 125, .output_tokens = 20};
	CU_ASSERT_EQUAL(shl_settle_given(h, &t1, &u, NULL), -EINVAL);
	CU_ASSERT_EQUAL(t1.state, 1); /* not settled by that */
	CU_ASSERT_EQUAL(shl_settle_given(h, &t1, &u, g1), 0);
	CU_ASSERT_EQUAL(g1[SHL_DIM_ITPM], 2500 * MS);
	CU_ASSERT_EQUAL(g1[SHL_DIM_RPM], 0);
	CU_ASSERT_EQUAL(shl_settle_given(h, &t1, &u, g), -EALREADY);
	CU_ASSERT_EQUAL(g[SHL_DIM_ITPM], 0);
	CU_ASSERT_EQUAL(shl_follow(h, &t2, NULL, &p, &r2), -EINVAL);
	CU_ASSERT_EQUAL(shl_follow(h, &t2, g1, &p, &r2), 1);
	CU_ASSERT_EQUAL(r2, rel - 2500 * MS);
	CU_ASSERT_EQUAL(t2.admitted_at, r2);
	CU_ASSERT_EQUAL(p.edge[SHL_DIM_ITPM], 0);
	CU_ASSERT_EQUAL(shl_follow(h, &t2, g1, &p, &r2), 0); /* counted twice: the floor */
	CU_ASSERT_EQUAL(r2, rel - 2500 * MS);
	tu_boot = r2;
	CU_ASSERT_EQUAL(shl_start(h, &t2, &why), 0);
	/* never sent: all of it back, 150 tokens and the request */
	CU_ASSERT_EQUAL(shl_cancel_given(h, &t2, g), 0);
	CU_ASSERT_EQUAL(g[SHL_DIM_ITPM], 15000 * MS);
	CU_ASSERT_EQUAL(g[SHL_DIM_RPM], MS);
	CU_ASSERT_EQUAL(shl_ticket_place(h, &t2, &p), -EINVAL);
	CU_ASSERT_EQUAL(shl_follow(h, &t2, g1, &p, &r2), -EINVAL);
	CU_ASSERT_EQUAL(shl_settle(h, &t0, &u), 0);
	close_seg();
}

/*
 * The server counted `remaining` at some instant between the request's
 * release and its answer.  3 s of latency, and a count that fits the
 * segment's own account at the release (nobody else used the pool): no
 * clamp, so the 3 s of refill are not taken from the line.  A count that
 * does not fit (someone else used 5000): clamped as of the answer.
 */
static void test_clamp_latency(void)
{
	char *b = body_of("abcd", 100, NULL); /* estimate 100 */
	for (int other = 0; other < 2; other++) {
		open_seg(big_pool(NULL));
		shl_exchange *x = open_ex(b);
		admit(x);
		tu_boot += 3 * S; /* the answer, 3 s after the release */
		shl_ex_status(x, 200);
		hdr(x, "anthropic-ratelimit-requests-remaining", other ? "990" : "999");
		hdr(x, "anthropic-ratelimit-input-tokens-remaining", other ? "994900" : "999900");
		body(x, "{\"usage\":{\"input_tokens\":100,\"output_tokens\":0}}");
		CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
		shl_stats st;
		const shl_pool_stats *p = pool0(&st);
		if (!other) {
			/* the segment's own: 100 taken, 3 s (about 3 tokens) refilled */
			CU_ASSERT(p->available[SHL_DIM_ITPM] > 999900 + 2);
			CU_ASSERT(p->available[SHL_DIM_RPM] > 999.5); /* full again, not 999 */
		} else {
			/* the server's count as of the answer */
			CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_ITPM], 994900, 1e-6);
			CU_ASSERT_DOUBLE_EQUAL(p->available[SHL_DIM_RPM], 990, 1e-6);
		}
		shl_ex_free(x);
		close_seg();
	}
	free(b);
}

/* The old order, for the record: clamp first, then settle, charges the
 * estimate's error twice (what test_charged_once guards against). */
static void test_clamp_then_settle_double_counts(void)
{
	open_seg(big_pool(NULL));
	shl_cost c = {.input_tokens = 100, .max_tokens = 10};
	shl_ticket t;
	CU_ASSERT_EQUAL_FATAL(shl_try(h, 0, &c, &t, NULL), 0);
	CU_ASSERT_EQUAL(shl_clamp(h, 0, SHL_DIM_ITPM, 1000000 - 150), 0);
	shl_usage u = {.input_tokens = 150};
	CU_ASSERT_EQUAL(shl_settle(h, &t, &u), 0);
	shl_stats st;
	CU_ASSERT_DOUBLE_EQUAL(pool0(&st)->available[SHL_DIM_ITPM], 1000000 - 200, 1e-6);
	close_seg();
}

static void test_429_kinds(void)
{
	open_seg(big_pool(NULL));
	char *b = body_of("abcd", 10, NULL);
	/* a rate-limit 429: retry-after-ms wins over retry-after */
	shl_exchange *x = open_ex(b);
	admit(x);
	rawhdr(x, "HTTP/1.1 429 Too Many Requests\r\n");
	rawhdr(x, "retry-after: 2\r\n");
	rawhdr(x, "retry-after-ms: 3500.5\r\n");
	rawhdr(x, "\r\n");
	body(x, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	shl_stats st;
	const shl_pool_stats *p = pool0(&st);
	CU_ASSERT_EQUAL(p->hold_ns, 3501 * 1000000LL);
	CU_ASSERT_EQUAL(p->server_429, 1);
	CU_ASSERT_EQUAL(p->tokens_in, 0); /* an error without usage: the request only */
	CU_ASSERT_EQUAL(st.spend_exhausted, 0);
	shl_ex_free(x);

	/* the spend-cap 429: the month stops, and it counts as a server 429 */
	tu_boot += 10 * S;
	x = open_ex(b);
	admit(x);
	shl_ex_status(x, 429);
	body(x, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"details\":"
		"{\"error_code\":\"enforced_spend_limit_reached\"}}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	p = pool0(&st);
	CU_ASSERT_EQUAL(st.spend_exhausted, 1);
	CU_ASSERT_EQUAL(p->server_429, 2);
	CU_ASSERT_EQUAL(p->hold_ns, 0);
	shl_ex_free(x);
	close_seg();

	/* a 529 holds the pool 1 s without a retry-after, not counted as a 429 */
	open_seg(big_pool(NULL));
	x = open_ex(b);
	admit(x);
	shl_ex_status(x, 529);
	body(x, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	p = pool0(&st);
	CU_ASSERT_EQUAL(p->hold_ns, S);
	CU_ASSERT_EQUAL(p->server_429, 0);
	shl_ex_free(x);
	free(b);
	close_seg();
}

/*
 * A 429's retry-after holds the pool as soon as its headers are over, before
 * the exchange is finished (the preload shim starts held multi transfers
 * between reading a response and finishing it); finishing counts the 429
 * once and does not hold again.  A spend-cap 429 with a retry-after: held
 * at the headers, the month stopped at the end, one 429 counted.
 */
static void test_429_holds_at_headers(void)
{
	open_seg(big_pool(NULL));
	char *b = body_of("abcd", 10, NULL);
	shl_exchange *x = open_ex(b);
	admit(x);
	rawhdr(x, "HTTP/1.1 429 Too Many Requests\r\n");
	rawhdr(x, "retry-after: 3\r\n");
	shl_stats st;
	CU_ASSERT_EQUAL(pool0(&st)->hold_ns, 0); /* not before the headers are over */
	rawhdr(x, "\r\n");
	const shl_pool_stats *p = pool0(&st);
	CU_ASSERT_EQUAL(p->hold_ns, 3 * S);
	CU_ASSERT_EQUAL(p->server_429, 0);
	tu_boot += S; /* finishing later does not move the hold's end */
	body(x, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	p = pool0(&st);
	CU_ASSERT_EQUAL(p->hold_ns, 2 * S);
	CU_ASSERT_EQUAL(p->server_429, 1);
	shl_ex_free(x);

	tu_boot += 10 * S;
	x = open_ex(b);
	admit(x);
	shl_ex_header(x, "HTTP/1.1 429 Too Many Requests", 30, NULL, 0);
	shl_ex_header(x, "retry-after", 11, "1", 1);
	body(x, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"details\":"
		"{\"error_code\":\"enforced_spend_limit_reached\"}}}");
	p = pool0(&st);
	CU_ASSERT_EQUAL(p->hold_ns, S); /* headers over at the first body bytes */
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	p = pool0(&st);
	CU_ASSERT_EQUAL(st.spend_exhausted, 1);
	CU_ASSERT_EQUAL(p->server_429, 2);
	shl_ex_free(x);
	free(b);
	close_seg();
}

static void test_fallbacks(void)
{
	open_seg(big_pool(NULL));
	char *b = body_of("abcd", 100, NULL);
	/* a 2xx whose usage cannot be believed: the estimate and max_tokens */
	shl_exchange *x = open_ex(b);
	admit(x);
	shl_ex_status(x, 200);
	body(x, "{\"usage\":{\"input_tokens\":-5,\"output_tokens\":1}}");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_ESTIMATED);
	shl_ex_free(x);
	shl_stats st;
	const shl_pool_stats *p = pool0(&st);
	CU_ASSERT_EQUAL(p->tokens_in, 125); /* 100 times a fresh pool's prior */
	CU_ASSERT_EQUAL(p->tokens_out, 500);
	/* no status, nothing sent: cancelled */
	x = open_ex(b);
	admit(x);
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 0), SHL_EX_CANCELLED);
	shl_ex_free(x);
	/* no status but sent: the input estimate, no output */
	x = open_ex(b);
	admit(x);
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	shl_ex_free(x);
	/* never admitted: nothing to do */
	x = open_ex(b);
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_UNADMITTED);
	shl_ex_free(x);
	p = pool0(&st);
	CU_ASSERT_EQUAL(p->cancelled, 1);
	CU_ASSERT_EQUAL(p->settled, 2);
	CU_ASSERT_EQUAL(p->tokens_in, 250);
	CU_ASSERT_EQUAL(p->tokens_out, 500);
	free(b);
	close_seg();
}

/* Issue 12 cause 6: a stream whose usage gives the cache writes only as a
 * total is priced by the request's own breakpoints (1 h here), and a stream
 * cut by an overloaded error is charged the output its deltas showed. */
static void test_stream_rules(void)
{
	open_seg(big_pool(NULL));
	const char *req = "{\"model\":\"m1\",\"max_tokens\":500,\"stream\":true,\"system\":[{\"type\":"
			  "\"text\",\"text\":\"0123456789012345678901234567890123456789\","
			  "\"cache_control\":{\"type\":\"ephemeral\",\"ttl\":\"1h\"}}],"
			  "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
	shl_exchange *x = open_ex(req);
	CU_ASSERT_EQUAL(shl_ex_stream(x), 1);
	shl_cost c;
	shl_ex_cost(x, &c);
	CU_ASSERT_EQUAL(c.cache_write_1h, 13); /* 10, times a fresh pool's prior */
	admit(x);
	shl_ex_status(x, 200);
	hdr(x, "content-type", "text/event-stream");
	body(x, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":"
		"{\"input_tokens\":3,\"cache_creation_input_tokens\":12,\"output_tokens\":1}}}\n\n");
	body(x, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":"
		"{\"type\":\"text_delta\",\"text\":\"");
	for (int i = 0; i < 100; i++)
		body(x, "abcd"); /* 100 tokens of text, split across chunks */
	body(x, "\"}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
		"\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	shl_ex_free(x);
	shl_stats st;
	const shl_pool_stats *p = pool0(&st);
	CU_ASSERT_EQUAL(p->tokens_in, 3);
	CU_ASSERT_EQUAL(p->cache_write, 12);
	CU_ASSERT_EQUAL(p->tokens_out, 100); /* not the 1 of message_start */
	CU_ASSERT_EQUAL(p->hold_ns, 0);      /* a mid-stream overload holds nothing */
	int64_t want;
	shl_usage u = {.input_tokens = 3, .output_tokens = 100, .cache_write_1h = 12};
	CU_ASSERT_EQUAL(shl_price_usage(h, 0, &u, 0, &want), 0);
	CU_ASSERT_EQUAL(p->spend, want); /* 1 h prices, not 5 min ones */
	close_seg();
}

/* Issue 12 cause 4: the pool learns the server's ratio (an upper quantile,
 * robust to an outlier), every new estimate is scaled by it, the stats show
 * it, and a body the learned estimate puts above the ITPM bucket is refused
 * locally (-E2BIG), never sent. */
static void settle_ratio(const char *b, uint64_t server_in)
{
	shl_exchange *x = open_ex(b);
	admit(x);
	shl_ex_status(x, 200);
	char u[128];
	snprintf(u, sizeof(u), "{\"usage\":{\"input_tokens\":%llu,\"output_tokens\":1}}",
		 (unsigned long long)server_in);
	body(x, u);
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	shl_ex_free(x);
}

static void test_learning(void)
{
	/* ITPM burst 1000, refilling 100,000/s, so admission never waits here */
	open_seg(tu_pool_cfg(600000, 6000000, 60000, 10000, 1000, 1000000, NULL, NULL));
	char *b = body_of("abcd", 600, NULL); /* raw estimate 600 */
	shl_stats st;
	/* nothing learned yet: the prior, erring high */
	CU_ASSERT_DOUBLE_EQUAL(pool0(&st)->est_ratio, 1.25, 1e-9);
	CU_ASSERT_EQUAL(st.pools[0].est_samples, 0);
	/* ... but never above the ITPM bucket for a body that fits it at 1.0:
	 * raw 900 of 1000 is charged at most 1000, and admitted */
	char *near = body_of("abcd", 900, NULL);
	shl_exchange *x = open_ex(near);
	shl_cost c;
	shl_ex_cost(x, &c);
	CU_ASSERT(c.input_tokens >= 900 && c.input_tokens <= 1000);
	CU_ASSERT(shl_ex_ratio(x) > 1.0 && shl_ex_ratio(x) < 1.25);
	admit(x); /* asserts it is admitted, not -E2BIG */
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 0), SHL_EX_CANCELLED);
	shl_ex_free(x);
	free(near);
	/* 50 requests counted exactly, one outlier at 5x: the ratio stays 1 */
	for (int i = 0; i < 50; i++) {
		settle_ratio(b, 600);
		tu_boot += S;
	}
	settle_ratio(b, 3000);
	tu_boot += S;
	CU_ASSERT_DOUBLE_EQUAL(pool0(&st)->est_ratio, 1.0, 1e-9);
	CU_ASSERT_EQUAL(st.pools[0].est_samples, 51);
	/* a tiny body teaches nothing */
	char *tiny = body_of("abcd", 10, NULL);
	settle_ratio(tiny, 400);
	CU_ASSERT_EQUAL(pool0(&st)->est_samples, 51);
	/* the server starts counting 1.5x: once that is more than 5% of the
	 * ring, the estimate follows, erring high */
	for (int i = 0; i < 60; i++) {
		settle_ratio(b, 900);
		tu_boot += S;
	}
	CU_ASSERT_DOUBLE_EQUAL(pool0(&st)->est_ratio, 1.5, 0.001);
	x = open_ex(b);
	shl_ex_cost(x, &c);
	CU_ASSERT_EQUAL(c.input_tokens, 900);
	CU_ASSERT_DOUBLE_EQUAL(shl_ex_ratio(x), 1.5, 0.001);
	shl_ex_free(x);
	/* 700 raw tokens fit the 1000 bucket, but 1050 learned ones do not */
	char *big = body_of("abcd", 700, NULL);
	x = open_ex(big);
	shl_refusal why;
	CU_ASSERT_EQUAL(shl_ex_reserve(h, x, -1, NULL, &why), -E2BIG);
	CU_ASSERT_EQUAL(why.dim, SHL_DIM_ITPM);
	CU_ASSERT_EQUAL(why.need, 1050);
	CU_ASSERT_EQUAL(why.capacity, 1000);
	CU_ASSERT_PTR_NULL(shl_ex_ticket(x));
	shl_ex_free(x);
	free(b);
	free(tiny);
	free(big);
	close_seg();
}

/* Four threads settle at once: every sample lands in the ring (one
 * fetch_add each), and the quantile is that of what they all taught. */
static _Atomic int learn_errors;

/* No CUnit assertion in a thread (CUnit is not thread-safe): errors are
 * counted and asserted on by the main thread. */
static void *learn_worker(void *arg)
{
	const char *b = arg;
	static const char resp[] = "{\"usage\":{\"input_tokens\":900,\"output_tokens\":1}}";
	for (int i = 0; i < 50; i++) {
		shl_exchange *x = NULL;
		int64_t rel;
		if (shl_ex_open(h, SHL_EX_MESSAGES, b, strlen(b), &x, NULL) != 0 ||
		    shl_ex_reserve(h, x, 0, &rel, NULL) != 0 || shl_ex_start(h, x, NULL) != 0) {
			atomic_fetch_add(&learn_errors, 1);
			shl_ex_free(x);
			continue;
		}
		shl_ex_status(x, 200);
		shl_ex_body(x, resp, strlen(resp));
		if (shl_ex_finish(h, x, 1) != SHL_EX_SETTLED)
			atomic_fetch_add(&learn_errors, 1);
		shl_ex_free(x);
	}
	return NULL;
}

static void test_learning_threads(void)
{
	open_seg(tu_pool_cfg(600000, 6000000, 60000, 1000, 1000000, 1000000, NULL, NULL));
	char *b = body_of("abcd", 600, NULL);
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, learn_worker, b), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	CU_ASSERT_EQUAL(atomic_load(&learn_errors), 0);
	shl_stats st;
	const shl_pool_stats *p = pool0(&st);
	CU_ASSERT_EQUAL(p->est_samples, 200);
	CU_ASSERT_DOUBLE_EQUAL(p->est_ratio, 1.5, 1e-9);
	CU_ASSERT_EQUAL(p->settled, 200);
	free(b);
	close_seg();
}

/* An exchange adopts a ticket its caller admitted (the shim's routing). */
static void test_adopt(void)
{
	open_seg(big_pool(NULL));
	char *b = body_of("abcd", 100, NULL);
	shl_exchange *x = open_ex(b);
	shl_cost c;
	shl_ex_cost(x, &c);
	shl_ticket t;
	CU_ASSERT_EQUAL_FATAL(shl_try(h, shl_ex_model_entry(x), &c, &t, NULL), 0);
	CU_ASSERT_EQUAL(shl_ex_adopt(x, &t), 0);
	CU_ASSERT_EQUAL(shl_ex_adopt(x, &t), -EALREADY);
	shl_ex_status(x, 200);
	body(x, "{\"usage\":{\"input_tokens\":90,\"output_tokens\":7}}");
	shl_ex_free(x); /* finishes it, as sent */
	shl_stats st;
	const shl_pool_stats *p = pool0(&st);
	CU_ASSERT_EQUAL(p->settled, 1);
	CU_ASSERT_EQUAL(p->tokens_in, 90);
	CU_ASSERT_EQUAL(p->tokens_out, 7);
	free(b);
	close_seg();
}

/* A place in line: the second request of a one-request bucket is reserved
 * for later; started early it is refused and its place given back; started
 * at its release it goes. */
static void test_reserve_start(void)
{
	open_seg(tu_pool_cfg(60, 6000000, 6000000, 1, 1000000, 1000000, NULL, NULL));
	char *b = body_of("abcd", 10, NULL);
	shl_exchange *x1 = open_ex(b), *x2 = open_ex(b);
	admit(x1);
	int64_t rel = 0;
	shl_refusal why;
	CU_ASSERT_EQUAL(shl_ex_reserve(h, x2, 0, &rel, &why), -ETIMEDOUT); /* 0: only now */
	CU_ASSERT_EQUAL(shl_ex_reserve(h, x2, -1, &rel, &why), 0);
	CU_ASSERT(rel > tu_boot);
	CU_ASSERT_EQUAL(shl_ex_reserve(h, x2, -1, &rel, &why), -EALREADY);
	CU_ASSERT_EQUAL(shl_ex_start(h, x2, &why), -EAGAIN);
	CU_ASSERT_PTR_NULL(shl_ex_ticket(x2)); /* given back */
	CU_ASSERT_EQUAL(shl_ex_reserve(h, x2, -1, &rel, &why), 0);
	tu_boot = rel;
	CU_ASSERT_EQUAL(shl_ex_start(h, x2, &why), 0);
	CU_ASSERT_PTR_NOT_NULL(shl_ex_ticket(x2));
	CU_ASSERT_EQUAL(shl_ex_finish(h, x2, 0), SHL_EX_CANCELLED);
	CU_ASSERT_EQUAL(shl_ex_finish(h, x1, 0), SHL_EX_CANCELLED);
	shl_ex_free(x1);
	shl_ex_free(x2);
	free(b);
	close_seg();
}

TU_SUITE(suite_exchange)
{
	CU_pSuite s = CU_add_suite("exchange", NULL, NULL);
	TU_ADD(s, test_kind);
	TU_ADD(s, test_script_rule);
	TU_ADD(s, test_open_refusals);
	TU_ADD(s, test_json_usage);
	TU_ADD(s, test_charged_once);
	TU_ADD(s, test_clamp_then_settle_double_counts);
	TU_ADD(s, test_early_clamps);
	TU_ADD(s, test_place);
	TU_ADD(s, test_given);
	TU_ADD(s, test_follow);
	TU_ADD(s, test_follow_tickets);
	TU_ADD(s, test_clamp_latency);
	TU_ADD(s, test_429_kinds);
	TU_ADD(s, test_429_holds_at_headers);
	TU_ADD(s, test_fallbacks);
	TU_ADD(s, test_stream_rules);
	TU_ADD(s, test_learning);
	TU_ADD(s, test_learning_threads);
	TU_ADD(s, test_adopt);
	TU_ADD(s, test_reserve_start);
}
