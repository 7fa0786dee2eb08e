/*
 * agent.c - the per-host agent of multi-host mode: leases from Redis.
 *
 * One agent per host (`shmlimit-agent SEGMENT`) keeps that host's segment
 * supplied with leases of the organisation's global buckets (cluster.c
 * explains what a lease is and how admissions use it).  Every period
 * (lease_ms / 4) it makes one EVALSHA per pool and one for the host:
 *
 *   pool:  for each dimension the host has demand in (its bucket was used
 *          within the last lease, or an admission was refused for lack of
 *          lease), take `want` of the global time line: start = max(tat,
 *          TIME), tat = start + want, all in one Lua step on Redis' own
 *          clock, so host clocks do not matter; report the output tokens
 *          settled since the last call (OTPM in "actual" mode is charged
 *          at settle) and read the global OTPM debt back; push this host's
 *          429 hold and read every other host's;
 *   host:  heartbeat (the hosts seen in the last 10 s divide the limits in
 *          fallback), lease spend budget from the month's counter against
 *          the organisation's cap, push and read the spend-cap mark.
 *
 * So Redis sees a number of operations per second that depends on the
 * number of pools and hosts, not on the number of requests.  All of an
 * organisation's keys are under one hash tag, {prefix}, so that Redis
 * Cluster keeps them in one slot.
 *
 * When Redis does not answer (down, restarted, slower than the timeout),
 * the agent marks the segment `fallback` and grants leases at the static
 * share (cluster.c); workers do the same when the agent itself is gone.  It
 * retries Redis every period and recovers by itself.
 *
 * hiredis is loaded with dlopen() at run time: single-host users of the
 * library need nothing of Redis, not even the shared object.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "internal.h"

/* ------------------------------------------------------------------ */
/* hiredis, resolved at run time                                        */
/* ------------------------------------------------------------------ */

static struct {
	void *so;
	redisContext *(*connect)(const char *, int, const struct timeval);
	int (*set_timeout)(redisContext *, const struct timeval);
	void *(*command_argv)(redisContext *, int, const char **, const size_t *);
	void (*free_reply)(void *);
	void (*free_ctx)(redisContext *);
} rd;

static int hiredis_load(shl_err *e)
{
	if (rd.so != NULL)
		return 0;
	const char *names[] = {"libhiredis.so.0.14", "libhiredis.so.1.1.0", "libhiredis.so", NULL};
	for (int i = 0; names[i] && rd.so == NULL; i++)
		rd.so = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (rd.so == NULL) {
		shl__err(e, "multi-host mode needs hiredis (Debian: libhiredis0.14): %s", dlerror());
		return -ENOENT;
	}
	*(void **)&rd.connect = dlsym(rd.so, "redisConnectWithTimeout");
	*(void **)&rd.set_timeout = dlsym(rd.so, "redisSetTimeout");
	*(void **)&rd.command_argv = dlsym(rd.so, "redisCommandArgv");
	*(void **)&rd.free_reply = dlsym(rd.so, "freeReplyObject");
	*(void **)&rd.free_ctx = dlsym(rd.so, "redisFree");
	if (!rd.connect || !rd.set_timeout || !rd.command_argv || !rd.free_reply || !rd.free_ctx) {
		shl__err(e, "hiredis: a function is missing from the library");
		dlclose(rd.so);
		rd.so = NULL;
		return -ENOENT;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* The scripts                                                          */
/* ------------------------------------------------------------------ */

/*
 * Pool step.  KEYS: bucket hash, hold key.  ARGV: k (requests wanted), then
 * per dimension d (0..2) tolg_us (the global bucket's tolerance left for
 * leases, README "Many hosts") and step_us (one typical request's cost in
 * that dimension, 0: not leased); then charge_us (OTPM "actual" units
 * settled since the last call, as global time), hold_ms (this host's hold
 * to push, 0 none), ttl_ms.  Grants are whole requests, the same number in
 * every leased dimension (credit in one dimension without the others would
 * expire unused), as many as keep each bucket within TIME + tolg.
 * Returns {now_us, granted requests, tat2, hold_pttl}.  Times are
 * microseconds of Redis' clock (exact in Lua's doubles).
 */
static const char pool_lua[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
	"local k = tonumber(ARGV[1])\n"
	"local tat = {}\n"
	"for d = 0, 2 do\n"
	"  tat[d] = tonumber(redis.call('HGET', KEYS[1], 't' .. d) or '0')\n"
	"end\n"
	"local c = tonumber(ARGV[8])\n"
	"if c > 0 then tat[2] = math.max(tat[2], now) + c end\n"
	"for d = 0, 2 do\n"
	"  local step = tonumber(ARGV[2 * d + 3])\n"
	"  if step > 0 then\n"
	"    local room = now + tonumber(ARGV[2 * d + 2]) - math.max(tat[d], now)\n"
	"    local n = math.floor(room / step)\n"
	"    if n < k then k = n end\n"
	"  end\n"
	"end\n"
	"if k < 0 then k = 0 end\n"
	"for d = 0, 2 do\n"
	"  local step = tonumber(ARGV[2 * d + 3])\n"
	"  if k > 0 and step > 0 then tat[d] = math.max(tat[d], now) + k * step end\n"
	"  redis.call('HSET', KEYS[1], 't' .. d, string.format('%.0f', tat[d]))\n"
	"end\n"
	"redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[10]))\n"
	"local hp = tonumber(ARGV[9])\n"
	"if hp > 0 and redis.call('PTTL', KEYS[2]) < hp then\n"
	"  redis.call('SET', KEYS[2], '1', 'PX', hp)\n"
	"end\n"
	"return {now, k, tat[2], redis.call('PTTL', KEYS[2])}\n";

/*
 * Host step.  KEYS: hosts zset, spend counter (this month), cap mark (this
 * month).  ARGV: host id, want_budget (micro-USD, 0 none), cap (micro-USD,
 * -1 none), exhausted (1: this host's server said the cap is reached),
 * ttl_ms for the month's keys.
 * Returns {hosts_seen, granted, spent, exhausted}.
 */
static const char host_lua[] =
	"local t = redis.call('TIME')\n"
	"local s = tonumber(t[1])\n"
	"redis.call('ZADD', KEYS[1], s, ARGV[1])\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', s - 10)\n"
	"redis.call('EXPIRE', KEYS[1], 60)\n"
	"local n = redis.call('ZCARD', KEYS[1])\n"
	"local want = tonumber(ARGV[2])\n"
	"local cap = tonumber(ARGV[3])\n"
	"local spent = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
	"local got = 0\n"
	"if want > 0 then\n"
	"  if cap >= 0 and spent + want > cap then want = cap - spent end\n"
	"  if want > 0 then\n"
	"    spent = redis.call('INCRBY', KEYS[2], want)\n"
	"    got = want\n"
	"    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))\n"
	"  end\n"
	"end\n"
	"if ARGV[4] == '1' then redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[5])) end\n"
	"local ex = redis.call('EXISTS', KEYS[3])\n"
	"if cap >= 0 and spent >= cap then ex = ex + 2 end\n"
	"return {n, got, spent, ex}\n";

/* ------------------------------------------------------------------ */
/* The agent                                                            */
/* ------------------------------------------------------------------ */

/* Leases a dimension may hold at once (the oldest is withdrawn first). */
#define SHL_AGENT_QUEUE 64

struct agent {
	shl_t *h;
	struct shl_cluster_cfg cfg;
	redisContext *c;
	char pool_sha[48], host_sha[48];
	char id[160];
	uint64_t out_seen[SHL_MAX_POOLS]; /* tokens_out already reported */
	int out_init[SHL_MAX_POOLS];
	uint64_t refused_seen[SHL_MAX_POOLS];
	int init[SHL_MAX_POOLS];
	uint64_t adm_last[SHL_MAX_POOLS];
	uint64_t avg_out[SHL_MAX_POOLS], set_seen[SHL_MAX_POOLS], outavg_seen[SHL_MAX_POOLS];
	struct grant {
		int64_t expires; /* shl_now() by which what is left must be withdrawn */
		uint64_t ns;
	} q[SHL_MAX_POOLS][SHL_NBUCKETS][SHL_AGENT_QUEUE];
	int qh[SHL_MAX_POOLS][SHL_NBUCKETS], qn[SHL_MAX_POOLS][SHL_NBUCKETS];
	uint64_t qsum[SHL_MAX_POOLS][SHL_NBUCKETS];
	uint64_t adm_seen[SHL_MAX_POOLS], in_seen[SHL_MAX_POOLS];
	uint64_t avg_in[SHL_MAX_POOLS]; /* recent input units per request (ITPM cost) */
	int verbose;
};



static void note_op(struct agent *a)
{
	/* relaxed: statistics. */
	atomic_fetch_add_explicit(&a->h->seg->ext.cluster.redis_ops, 1, memory_order_relaxed);
}

static void disconnect(struct agent *a)
{
	if (a->c != NULL)
		rd.free_ctx(a->c);
	a->c = NULL;
}

static redisReply *cmd(struct agent *a, int argc, const char **argv)
{
	if (a->c == NULL)
		return NULL;
	note_op(a);
	redisReply *r = rd.command_argv(a->c, argc, argv, NULL);
	if (r == NULL || a->c->err) {
		if (r)
			rd.free_reply(r);
		disconnect(a);
		return NULL;
	}
	return r;
}

static int load_script(struct agent *a, const char *src, char *sha)
{
	const char *argv[] = {"SCRIPT", "LOAD", src};
	redisReply *r = cmd(a, 3, argv);
	if (r == NULL || r->type != REDIS_REPLY_STRING || r->len >= 48) {
		if (r)
			rd.free_reply(r);
		return -EIO;
	}
	memcpy(sha, r->str, r->len);
	sha[r->len] = '\0';
	rd.free_reply(r);
	return 0;
}

static int connect_redis(struct agent *a)
{
	if (a->c != NULL)
		return 0;
	struct timeval tv = {0, 200000};
	a->c = rd.connect(a->cfg.host, (int)a->cfg.port, tv);
	if (a->c == NULL || a->c->err) {
		disconnect(a);
		return -EIO;
	}
	rd.set_timeout(a->c, tv);
	if (load_script(a, pool_lua, a->pool_sha) || load_script(a, host_lua, a->host_sha)) {
		disconnect(a);
		return -EIO;
	}
	return 0;
}

/* EVALSHA, reloading the scripts once if Redis lost them (a restart). */
static redisReply *evalsha(struct agent *a, const char *sha, int nkeys, const char **keys,
			   int nargs, const char **args)
{
	const char *argv[24];
	char nk[8];
	snprintf(nk, sizeof(nk), "%d", nkeys);
	for (int attempt = 0; attempt < 2; attempt++) {
		int n = 0;
		argv[n++] = "EVALSHA";
		argv[n++] = sha;
		argv[n++] = nk;
		for (int i = 0; i < nkeys; i++)
			argv[n++] = keys[i];
		for (int i = 0; i < nargs; i++)
			argv[n++] = args[i];
		redisReply *r = cmd(a, n, argv);
		if (r == NULL)
			return NULL;
		if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && attempt == 0) {
			rd.free_reply(r);
			if (load_script(a, pool_lua, a->pool_sha) || load_script(a, host_lua, a->host_sha))
				return NULL;
			continue;
		}
		if (r->type != REDIS_REPLY_ARRAY) {
			rd.free_reply(r);
			return NULL;
		}
		return r;
	}
	return NULL;
}

static long long elem(const redisReply *r, size_t i)
{
	if (i >= r->elements || r->element[i]->type != REDIS_REPLY_INTEGER)
		return 0;
	return r->element[i]->integer;
}

static uint64_t lease_ns_of(const struct agent *a)
{
	return (uint64_t)a->cfg.lease_ms * 1000000u;
}

/* One typical request's cost in dimension d (ns; 0: not leased): one
 * request for RPM, the recent input per request for ITPM (at least the
 * largest take refused), max_tokens' worth for OTPM in "reserve" mode as
 * recently refused; never more than V. */
static uint64_t step_of(struct agent *a, const struct shl_local *l, int p, int d)
{
	const struct shl_pool_local *pl = &l->pools[p];
	if (d == SHL_DIM_OTPM && !(pl->flags & SHL_PF_OTPM_RESERVE))
		return 0; /* charged at settle, reported instead */
	uint64_t need = atomic_load_explicit(&a->h->seg->pext[p].cluster.dim[d].need_ns,
					     memory_order_relaxed);
	uint64_t t = d == SHL_DIM_RPM ? pl->interval[d]
		   : d == SHL_DIM_ITPM ? (a->avg_in[p] ? a->avg_in[p] : 1) * pl->interval[d]
				       : (a->avg_out[p] ? a->avg_out[p] : 1) * pl->interval[d];
	if (t < need)
		t = need;
	uint64_t v = shl__cluster_validity(pl, d);
	return t < v ? t : v;
}

/* How many requests' worth of credit pool p asks for now: none while it
 * admitted nothing in the last period and none was refused for lack of
 * credit; else twice what it admitted in the last period (at least one);
 * all it may hold when refused; never more than brings the credit of any
 * leased dimension to V. */
static uint64_t want_of(struct agent *a, const struct shl_local *l, int p, const uint64_t step[],
			uint64_t admitted, int refused)
{
	struct shl_seg *seg = a->h->seg;
	const struct shl_pool_local *pl = &l->pools[p];
	uint64_t room_k = UINT64_MAX;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		if (step[d] == 0)
			continue;
		uint64_t v = shl__cluster_validity(pl, d);
		/* relaxed: a counter; see cluster.c. */
		int64_t c = atomic_load_explicit(&seg->pext[p].cluster.dim[d].credit,
						  memory_order_relaxed);
		uint64_t have = c > 0 ? (uint64_t)c : 0;
		uint64_t k = v > have ? (v - have) / step[d] : 0;
		if (k < room_k)
			room_k = k;
	}
	if (room_k == 0 || room_k == UINT64_MAX)
		return 0;
	if (refused)
		return room_k;
	if (admitted == 0)
		return 0;
	uint64_t k = 2 * admitted;
	return k < room_k ? k : room_k;
}

/*
 * Withdraw what is left of every lease of pool p, dimension d, that would
 * pass its time (issued at `send`, usable until send + V) before the next
 * period.  Credit is taken oldest first, so what is left of the oldest
 * lease is the credit less every younger lease.
 */
static void expire(struct agent *a, int p, int d, int64_t now, int64_t period)
{
	struct shl_cl_dim *cd = &a->h->seg->pext[p].cluster.dim[d];
	while (a->qn[p][d] > 0) {
		struct grant *g = &a->q[p][d][a->qh[p][d]];
		if (g->expires > now + period)
			break;
		/* relaxed: a counter; see cluster.c. */
		int64_t c = atomic_load_explicit(&cd->credit, memory_order_relaxed);
		int64_t younger = (int64_t)(a->qsum[p][d] - g->ns);
		int64_t left = c - younger;
		if (left > (int64_t)g->ns)
			left = (int64_t)g->ns;
		if (left > 0) {
			atomic_fetch_sub_explicit(&cd->credit, left, memory_order_relaxed);
			atomic_fetch_add_explicit(&cd->expired_ns, (uint64_t)left, memory_order_relaxed);
		}
		a->qsum[p][d] -= g->ns;
		a->qh[p][d] = (a->qh[p][d] + 1) % SHL_AGENT_QUEUE;
		a->qn[p][d]--;
	}
}

static void pool_step(struct agent *a, const struct shl_local *l, int p, int64_t now)
{
	struct shl_seg *seg = a->h->seg;
	struct shl_cluster_seg *cs = &seg->ext.cluster;
	struct shl_cluster_pool *cp = &seg->pext[p].cluster;
	const struct shl_pool_local *pl = &l->pools[p];
	/* relaxed: the demand counter is a hint. */
	uint64_t refusals = atomic_load_explicit(&cp->short_refusals, memory_order_relaxed);
	int refused = a->init[p] && refusals != a->refused_seen[p];
	a->refused_seen[p] = refusals;
	int64_t rtt = atomic_load_explicit(&cs->rtt_ns, memory_order_relaxed);
	if (rtt < 0 || rtt > 1000000000)
		rtt = 1000000000;
	uint64_t cnt[SHL_PSTATS], win[SHL_NBUCKETS], charge_us = 0;
	shl__pool_totals(seg, p, now, cnt, win);
#define SUM(f, k) (cnt[k] + atomic_load_explicit(&seg->pools[p].f, memory_order_relaxed))
	uint64_t adm = SUM(admitted, SHL_PS_ADMITTED), tin = SUM(tokens_in, SHL_PS_TOKENS_IN);
	uint64_t out = SUM(tokens_out, SHL_PS_TOKENS_OUT), settled = SUM(settled, SHL_PS_SETTLED);
#undef SUM
	uint64_t admitted = a->init[p] && adm > a->adm_last[p] ? adm - a->adm_last[p] : 0;
	a->adm_last[p] = adm;
	/* Recent input and output per request, for a typical request's cost. */
	if (adm > a->adm_seen[p] + 8 && tin >= a->in_seen[p]) {
		a->avg_in[p] = (tin - a->in_seen[p]) / (adm - a->adm_seen[p]);
		a->adm_seen[p] = adm;
		a->in_seen[p] = tin;
	}
	if (settled > a->set_seen[p] + 8 && out >= a->outavg_seen[p]) {
		a->avg_out[p] = (out - a->outavg_seen[p]) / (settled - a->set_seen[p]);
		a->set_seen[p] = settled;
		a->outavg_seen[p] = out;
	}
	int64_t period = (int64_t)lease_ns_of(a) / 4;
	uint64_t step[SHL_NBUCKETS];
	char ka[24], ga[SHL_NBUCKETS][24], sa[SHL_NBUCKETS][24], ca[24], ha[24], ta[24];
	int full = 0;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		expire(a, p, d, now, period + rtt);
		full |= a->qn[p][d] >= SHL_AGENT_QUEUE;
		step[d] = step_of(a, l, p, d);
		uint64_t tolg = pl->tol[d] - shl__cluster_validity(pl, d);
		snprintf(ga[d], sizeof(ga[d]), "%llu", (unsigned long long)(tolg / 1000));
		snprintf(sa[d], sizeof(sa[d]), "%llu", (unsigned long long)((step[d] + 999) / 1000));
	}
	uint64_t k = full ? 0 : want_of(a, l, p, step, admitted, refused);
	a->init[p] = 1;
	snprintf(ka, sizeof(ka), "%llu", (unsigned long long)k);
	/* OTPM in "actual" mode: report the output settled since last time. */
	if (!(pl->flags & SHL_PF_OTPM_RESERVE) && a->out_init[p] && out > a->out_seen[p])
		charge_us = (out - a->out_seen[p]) * pl->interval[SHL_DIM_OTPM] / 1000;
	snprintf(ca, sizeof(ca), "%llu", (unsigned long long)charge_us);
	/* This host's hold, if longer than what was pushed. */
	int64_t hold = atomic_load_explicit(&seg->pools[p].hold_until, memory_order_relaxed);
	int64_t pushed = atomic_load_explicit(&cp->hold_pushed, memory_order_relaxed);
	long long hold_ms = hold > now && hold > pushed ? (hold - now + 999999) / 1000000 : 0;
	snprintf(ha, sizeof(ha), "%lld", hold_ms);
	uint64_t ttl = 60000;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		uint64_t t = pl->tol[d] / 1000000 + 60000; /* a bucket state outlives its tolerance */
		if (t > ttl)
			ttl = t;
	}
	snprintf(ta, sizeof(ta), "%llu", (unsigned long long)ttl);
	char kb[SHL_CL_PREFIX_MAX + 64], kh[SHL_CL_PREFIX_MAX + 64];
	snprintf(kb, sizeof(kb), "{%s}:bucket:%s", a->cfg.prefix, l->slot.pools[p].name);
	snprintf(kh, sizeof(kh), "{%s}:hold:%s", a->cfg.prefix, l->slot.pools[p].name);
	const char *keys[] = {kb, kh};
	const char *args[] = {ka, ga[0], sa[0], ga[1], sa[1], ga[2], sa[2], ca, ha, ta};
	int64_t send = shl__now();
	redisReply *r = evalsha(a, a->pool_sha, 2, keys, 10, args);
	int64_t recv = shl__now();
	if (r == NULL)
		return;
	if (r->elements < 4) {
		rd.free_reply(r);
		return;
	}
	/* relaxed: statistics and hints. */
	atomic_store_explicit(&cs->rtt_ns, recv - send, memory_order_relaxed);
	atomic_store_explicit(&cs->redis_ok_at, recv, memory_order_relaxed);
	a->out_seen[p] = out;
	a->out_init[p] = 1;
	if (hold_ms > 0)
		atomic_store_explicit(&cp->hold_pushed, hold, memory_order_relaxed);
	long long R = elem(r, 0), got = elem(r, 1);
	for (int d = 0; got > 0 && d < SHL_NBUCKETS; d++) {
		if (step[d] == 0)
			continue;
		/* Redis issued the units somewhere in [send, recv]: they may be
		 * taken until send + V; expire() withdraws what is left then.
		 * The grant is what Redis counted: got x step rounded up to us. */
		struct shl_cl_dim *cd = &cp->dim[d];
		uint64_t ns = (uint64_t)got * ((step[d] + 999) / 1000) * 1000;
		int qi = (a->qh[p][d] + a->qn[p][d]) % SHL_AGENT_QUEUE;
		a->q[p][d][qi].expires = send + (int64_t)shl__cluster_validity(pl, d);
		a->q[p][d][qi].ns = ns;
		a->qn[p][d]++;
		a->qsum[p][d] += ns;
		/* relaxed: a counter; see cluster.c. */
		atomic_fetch_add_explicit(&cd->credit, (int64_t)ns, memory_order_relaxed);
		atomic_store_explicit(&cd->need_ns, 0, memory_order_relaxed);
		atomic_fetch_add_explicit(&cd->granted_ns, ns, memory_order_relaxed);
	}
	if (got > 0) {
		atomic_fetch_add_explicit(&cp->refills, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&cs->refills, 1, memory_order_relaxed);
	}
	/* The organisation's OTPM debt, as the global bucket holds it. */
	if (!(pl->flags & SHL_PF_OTPM_RESERVE)) {
		long long tat2 = elem(r, 2);
		if (tat2 > R)
			shl__bucket_raise(&seg->pools[p].bkt[SHL_DIM_OTPM].tat,
					  (uint64_t)((int64_t)(tat2 - R) * 1000 + recv));
	}
	long long pttl = elem(r, 3);
	if (pttl > 0)
		shl_hold(a->h, p, pttl * 1000000LL);
	rd.free_reply(r);
}

static void host_step(struct agent *a, const struct shl_local *l, int64_t now)
{
	struct shl_seg *seg = a->h->seg;
	struct shl_cluster_seg *cs = &seg->ext.cluster;
	uint32_t month = shl__month(a->h, now);
	char kz[SHL_CL_PREFIX_MAX + 32], ks[SHL_CL_PREFIX_MAX + 48], ke[SHL_CL_PREFIX_MAX + 48];
	snprintf(kz, sizeof(kz), "{%s}:hosts", a->cfg.prefix);
	snprintf(ks, sizeof(ks), "{%s}:spend:%u", a->cfg.prefix, month);
	snprintf(ke, sizeof(ke), "{%s}:capped:%u", a->cfg.prefix, month);
	/* Spend budget: lease more when less than a quarter of a chunk is
	 * left (chunk: 1/64 of the cap, at least 0.01 USD). */
	long long want_u = 0, cap_u = -1;
	if (l->spend_cap != INT64_MAX && l->spend_cap >= 0) {
		cap_u = l->spend_cap / 1000; /* micro-USD */
		uint64_t b = atomic_load_explicit(&cs->spend_budget, memory_order_acquire);
		int64_t budget = (uint32_t)(b >> SHL_SPEND_BITS) == (month & 127u)
					 ? (int64_t)(b & SHL_SPEND_MASK)
					 : 0;
		int64_t used = shl__spend_read(&seg->spendl, month);
		int64_t chunk = l->spend_cap / 64;
		if (chunk < SHL_UNITS_PER_USD / 100)
			chunk = SHL_UNITS_PER_USD / 100;
		if (budget - used < chunk / 4 + 1)
			want_u = chunk / 1000;
	}
	int local_exh = atomic_load_explicit(&seg->spendl.exhausted, memory_order_relaxed) == month + 1;
	char wa[24], ca[24], ta[24];
	snprintf(wa, sizeof(wa), "%lld", want_u);
	snprintf(ca, sizeof(ca), "%lld", cap_u);
	snprintf(ta, sizeof(ta), "%lld", 40LL * 24 * 3600 * 1000);
	const char *keys[] = {kz, ks, ke};
	const char *args[] = {a->id, wa, ca, local_exh ? "1" : "0", ta};
	redisReply *r = evalsha(a, a->host_sha, 3, keys, 5, args);
	if (r == NULL)
		return;
	if (r->elements >= 4) {
		long long n = elem(r, 0), got = elem(r, 1), ex = elem(r, 3);
		atomic_store_explicit(&cs->hosts_seen, (uint32_t)(n > 0 ? n : 1), memory_order_relaxed);
		if (got > 0) {
			uint64_t b = atomic_load_explicit(&cs->spend_budget, memory_order_relaxed);
			uint64_t units = (uint32_t)(b >> SHL_SPEND_BITS) == (month & 127u)
						 ? (b & SHL_SPEND_MASK)
						 : 0;
			units += (uint64_t)got * 1000;
			/* release: pairs with shl__cluster_cap's acquire. */
			atomic_store_explicit(&cs->spend_budget,
					      (uint64_t)(month & 127u) << SHL_SPEND_BITS |
						      (units & SHL_SPEND_MASK),
					      memory_order_release);
		}
		if (ex & 1)
			shl_spend_exhaust(a->h); /* a server told some host: stop */
		atomic_store_explicit(&cs->global_exhausted, (ex & 2) ? month + 1 : 0,
				      memory_order_relaxed);
	}
	rd.free_reply(r);
}

/* Redis is away: grant credit at the static share where there is demand. */
static void fallback_step(struct agent *a, const struct shl_local *l, int64_t now)
{
	for (unsigned p = 0; p < l->slot.npools; p++) {
		if (!(l->pools[p].flags & SHL_PF_CLUSTER))
			continue;
		struct shl_cluster_pool *cp = &a->h->seg->pext[p].cluster;
		uint64_t refusals = atomic_load_explicit(&cp->short_refusals, memory_order_relaxed);
		int refused = refusals != a->refused_seen[p];
		a->refused_seen[p] = refusals;
		if (!refused)
			continue;
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			uint64_t step = step_of(a, l, (int)p, d);
			if (step == 0)
				continue;
			uint64_t v = shl__cluster_validity(&l->pools[p], d);
			int64_t c = atomic_load_explicit(&cp->dim[d].credit, memory_order_relaxed);
			uint64_t have = c > 0 ? (uint64_t)c : 0;
			if (v > have)
				shl__cluster_fallback(a->h->seg, (int)p, d, now, v - have);
		}
	}
}

int shl_agent_run(const char *segment, const shl_agent_opts *o, shl_err *err)
{
	int r = hiredis_load(err);
	if (r)
		return r;
	struct agent *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	r = shl_attach(segment, SHL_ATTACH_ANY_OWNER, &a->h, err);
	if (r) {
		free(a);
		return r;
	}
	shl__cluster_load(a->h->seg, &a->cfg);
	if (!a->cfg.enabled) {
		shl__err(err, "segment '%s': its configuration has no \"cluster\" object", segment);
		shl_detach(a->h);
		free(a);
		return -EINVAL;
	}
	char hn[64] = "host";
	gethostname(hn, sizeof(hn) - 1);
	if (o && o->host_id)
		snprintf(a->id, sizeof(a->id), "%s", o->host_id);
	else
		snprintf(a->id, sizeof(a->id), "%s:%s", hn, shl_name(a->h));
	struct shl_cluster_seg *cs = &a->h->seg->ext.cluster;
	int64_t start = shl__now(), next_host = 0;
	for (;;) {
		int64_t now = shl__now();
		if (o && o->stop && *o->stop)
			break;
		if (o && o->run_ns > 0 && now - start >= o->run_ns)
			break;
		struct shl_local *l = shl__local(a->h);
		shl__cluster_load(a->h->seg, &a->cfg); /* an apply may change it */
		uint64_t period = lease_ns_of(a) / 4;
		if (period < 5000000)
			period = 5000000;
		int up = l != NULL && connect_redis(a) == 0;
		if (up && now >= next_host) {
			host_step(a, l, now);
			next_host = now + (int64_t)(period > 100000000 ? period : 100000000);
		}
		if (up)
			for (unsigned p = 0; p < l->slot.npools && a->c != NULL; p++)
				if (l->pools[p].flags & SHL_PF_CLUSTER)
					pool_step(a, l, (int)p, now);
		up = up && a->c != NULL;
		/* relaxed: hints for the workers and the tools. */
		atomic_store_explicit(&cs->redis_up, (uint32_t)up, memory_order_relaxed);
		atomic_store_explicit(&cs->fallback, (uint32_t)!up, memory_order_relaxed);
		if (!up && l != NULL)
			fallback_step(a, l, now);
		atomic_store_explicit(&cs->agent_beat, shl__now(), memory_order_relaxed);
		if (o && o->verbose && !up)
			fprintf(stderr, "shmlimit-agent: Redis %s:%u unreachable; fallback share in force\n",
				a->cfg.host, a->cfg.port);
		int64_t wake = now + (int64_t)period, t = shl__now();
		if (wake > t) {
			struct timespec ts = {(wake - t) / 1000000000, (wake - t) % 1000000000};
			nanosleep(&ts, NULL);
		}
	}
	atomic_store_explicit(&cs->agent_beat, 0, memory_order_relaxed);
	disconnect(a);
	shl_detach(a->h);
	free(a);
	return 0;
}
