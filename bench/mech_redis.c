/*
 * mech_redis.c - the central-server baseline: GCRA in a Redis Lua script.
 *
 * What most teams reach for when many processes must share a limit: one
 * Redis, one atomic script per admission.  The script below applies exactly
 * rule.c's steps to the same four dimensions: the pool's hold, its three
 * bucket words (one hash per pool), then the segment-wide spend key, all or
 * nothing; settle corrects ITPM, charges OTPM and adjusts spend in a second
 * script.  The client sends its own CLOCK_BOOTTIME reading (relative to the
 * bench's epoch, so Lua's doubles stay exact), as every other mechanism
 * decides on the caller's clock; Redis's TIME would add a syscall per call.
 *
 * Each worker holds its own TCP connection (opened in attach), with one
 * request in flight: the round trip is the real cost of a central limiter.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

int bench_redis_port = -1;

static const char admit_lua[] =
	"local now = tonumber(ARGV[1])\n"
	"local h = redis.call('HMGET', KEYS[1], 'r', 'i', 'o', 'hold')\n"
	"if now < tonumber(h[4] or 0) then return {0, 4} end\n"
	"local nx = {}\n"
	"for d = 1, 3 do\n"
	"  local tat = tonumber(h[d] or 0)\n"
	"  local n = math.max(tat, now) + tonumber(ARGV[1 + d])\n"
	"  if n - now > tonumber(ARGV[4 + d]) then return {0, d} end\n"
	"  nx[d] = n\n"
	"end\n"
	"local units = tonumber(ARGV[8])\n"
	"local cap = tonumber(ARGV[9])\n"
	"local spend = tonumber(redis.call('GET', KEYS[2]) or 0)\n"
	"if cap >= 0 and spend + units > cap then return {0, 5} end\n"
	"redis.call('HSET', KEYS[1], 'r', string.format('%.0f', nx[1]),\n"
	"  'i', string.format('%.0f', nx[2]), 'o', string.format('%.0f', nx[3]))\n"
	"redis.call('HINCRBY', KEYS[1], 'admitted', 1)\n"
	"redis.call('INCRBY', KEYS[2], units)\n"
	"return {1}\n";

static const char settle_lua[] =
	"local now = tonumber(ARGV[1])\n"
	"local h = redis.call('HMGET', KEYS[1], 'i', 'o')\n"
	"local ti = tonumber(h[1] or 0)\n"
	"local to = tonumber(h[2] or 0)\n"
	"local di = tonumber(ARGV[2])\n"
	"if di > 0 then ti = math.max(ti, now) + di\n"
	"elseif di < 0 then ti = math.max(ti + di, 0) end\n"
	"local dout = tonumber(ARGV[3])\n"
	"if dout > 0 then to = math.max(to, now) + dout end\n"
	"redis.call('HSET', KEYS[1], 'i', string.format('%.0f', ti), 'o', string.format('%.0f', to))\n"
	"redis.call('HINCRBY', KEYS[1], 'tokens_in', ARGV[5])\n"
	"redis.call('HINCRBY', KEYS[1], 'tokens_out', ARGV[6])\n"
	"redis.call('HINCRBY', KEYS[1], 'spend', ARGV[7])\n"
	"redis.call('HINCRBY', KEYS[1], 'settled', 1)\n"
	"if redis.call('INCRBY', KEYS[2], ARGV[4]) < 0 then redis.call('SET', KEYS[2], 0) end\n"
	"return 1\n";

struct redis_state {
	char sha_admit[64], sha_settle[64];
};

struct redis_local {
	struct resp_conn conn;
	char pool_key[BENCH_MAX_POOLS][16];
	/* constant arguments, formatted once */
	char cost[BENCH_NDIM][32], tol[BENCH_NDIM][32], units[32], cap[32];
	char di[32], dout[32], dspend[32], uin[32], uout[32], actual[32];
};

static int load_script(struct resp_conn *c, const char *body, char *sha, size_t cap,
		       char *msg, size_t msglen)
{
	const char *argv[] = {"SCRIPT", "LOAD", body};
	struct resp_reply r;
	int rc = resp_command(c, 3, argv, &r);
	if (rc != 0 || r.type != '$') {
		snprintf(msg, msglen, "SCRIPT LOAD: %s", rc ? strerror(-rc) : r.str);
		return rc ? rc : -EPROTO;
	}
	snprintf(sha, cap, "%.60s", r.str);
	return 0;
}

static int redis_setup(struct bench_mech *m)
{
	if (bench_redis_port <= 0) {
		snprintf(m->errmsg, sizeof(m->errmsg), "redis-server is not running");
		return -ENOENT;
	}
	struct redis_state *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	struct resp_conn c;
	int rc = resp_connect(&c, bench_redis_port);
	if (rc != 0) {
		snprintf(m->errmsg, sizeof(m->errmsg), "connect: %s", strerror(-rc));
		free(st);
		return rc;
	}
	const char *flush[] = {"FLUSHALL"};
	struct resp_reply r;
	rc = resp_command(&c, 1, flush, &r);
	if (rc == 0 && r.type != '+')
		rc = -EPROTO;
	if (rc == 0)
		rc = load_script(&c, admit_lua, st->sha_admit, sizeof(st->sha_admit), m->errmsg,
				 sizeof(m->errmsg));
	if (rc == 0)
		rc = load_script(&c, settle_lua, st->sha_settle, sizeof(st->sha_settle), m->errmsg,
				 sizeof(m->errmsg));
	resp_close(&c);
	if (rc != 0) {
		free(st);
		return rc;
	}
	m->state = st;
	return 0;
}

#define FMT(buf, v) snprintf((buf), sizeof(buf), "%lld", (long long)(v))

static int redis_attach(struct bench_mech *m, int id)
{
	const struct bench_scenario *sc = m->sc;
	struct redis_local *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -ENOMEM;
	int rc = resp_connect(&l->conn, bench_redis_port);
	if (rc != 0) {
		free(l);
		return rc;
	}
	for (int p = 0; p < BENCH_MAX_POOLS; p++)
		snprintf(l->pool_key[p], sizeof(l->pool_key[p]), "pool:%d", p);
	uint64_t cost[BENCH_NDIM] = {1, sc->req_in, 0};
	for (int d = 0; d < BENCH_NDIM; d++) {
		FMT(l->cost[d], bench_mul_sat(cost[d], sc->interval[d]));
		FMT(l->tol[d], sc->tol[d]);
	}
	int64_t units = (int64_t)sc->req_in * sc->price_in + (int64_t)sc->req_max_out * sc->price_out;
	int64_t actual = (int64_t)sc->used_in * sc->price_in + (int64_t)sc->used_out * sc->price_out;
	FMT(l->units, units);
	FMT(l->cap, sc->spend_cap);
	FMT(l->di, ((int64_t)sc->used_in - (int64_t)sc->req_in) * (int64_t)sc->interval[1]);
	FMT(l->dout, sc->used_out * sc->interval[2]);
	FMT(l->dspend, actual - units);
	FMT(l->uin, sc->used_in);
	FMT(l->uout, sc->used_out);
	FMT(l->actual, actual);
	m->local = l;
	return 0;
}

static int redis_admit(struct bench_mech *m, int pool, struct bench_adm *a)
{
	struct redis_state *st = m->state;
	struct redis_local *l = m->local;
	int64_t now = bench_boot_ns();
	char nowstr[32];
	FMT(nowstr, now - m->epoch);
	const char *argv[] = {"EVALSHA", st->sha_admit, "2", l->pool_key[pool], "spend", nowstr,
			      l->cost[0], l->cost[1], l->cost[2], l->tol[0], l->tol[1], l->tol[2],
			      l->units, l->cap};
	struct resp_reply r;
	int rc = resp_command(&l->conn, (int)(sizeof(argv) / sizeof(argv[0])), argv, &r);
	if (rc != 0)
		return rc;
	if (r.type != '*' || r.nints < 1)
		return -EPROTO;
	if (r.ints[0] != 1)
		return 1;
	a->pool = pool;
	a->now = now;
	a->reserved = 0;
	return 0;
}

static int redis_settle(struct bench_mech *m, struct bench_adm *a)
{
	struct redis_state *st = m->state;
	struct redis_local *l = m->local;
	char nowstr[32];
	FMT(nowstr, bench_boot_ns() - m->epoch);
	const char *argv[] = {"EVALSHA", st->sha_settle, "2", l->pool_key[a->pool], "spend",
			      nowstr, l->di, l->dout, l->dspend, l->uin, l->uout, l->actual};
	struct resp_reply r;
	int rc = resp_command(&l->conn, (int)(sizeof(argv) / sizeof(argv[0])), argv, &r);
	if (rc != 0)
		return rc;
	return r.type == ':' ? 0 : -EPROTO;
}

static void redis_detach(struct bench_mech *m)
{
	struct redis_local *l = m->local;
	if (l == NULL)
		return;
	resp_close(&l->conn);
	free(l);
	m->local = NULL;
}

static void redis_teardown(struct bench_mech *m)
{
	free(m->state);
	m->state = NULL;
}

const struct bench_mech_ops bench_mech_redis = {
	.name = "redis",
	.what = "redis-server on 127.0.0.1, EVALSHA of a Lua GCRA script, one connection per worker",
	.setup = redis_setup,
	.attach = redis_attach,
	.admit = redis_admit,
	.settle = redis_settle,
	.detach = redis_detach,
	.teardown = redis_teardown,
};
