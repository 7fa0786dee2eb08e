/*
 * cluster.c - many hosts sharing one organisation's limits: the host side.
 *
 * The Claude API's limits belong to the organisation, not to a host.  In
 * multi-host mode (a `cluster` object in the configuration) every pool's
 * bucket is also one global GCRA bucket kept in Redis, and each host's
 * segment holds LEASES of it: units the host's agent (agent.c) took from
 * the global bucket in one atomic Lua step on Redis' own clock.  The
 * admission path stays local and takes no network round trip: besides the
 * usual local GCRA take, it takes its cost out of the host's credit of
 * leased units (one atomic subtraction per dimension; no credit, no take).
 *
 * Why the global bound holds.  Redis issues units only while the global
 * bucket stays within tol - V of its clock (tol = burst x interval), and a
 * unit issued at t may be taken until t + V at the latest: the agent
 * withdraws what is left of a lease before then (FIFO, at its period,
 * early by one period).  So every unit taken in an interval [a, b], on any
 * host, was issued in [a - V, b], and at most (tol - V) + rate x (T + V) =
 * burst + rate x T of them can be.  V is three quarters of the burst in
 * whole units (shl__cluster_validity), so a single request can use at most
 * that much of a bucket in multi-host mode.  The host's agent reads Redis'
 * clock for every grant, so host clocks never enter the argument; only the
 * agent's period (measured on the host's clock) does.
 *
 * An idle host asks for nothing; a light one for twice what it took in the
 * last period; a host whose admissions were refused for lack of credit
 * for all it may hold.  Leases are small (at most V) and short-lived, so an
 * idle host hoards nothing for long.
 *
 * Without Redis (unreachable, restarted, slow) or without a live agent, a
 * host grants itself credit at a static share of the limits (the
 * configuration's fallback_share, else 1 / the hosts seen recently): the
 * share is a local GCRA word per dimension (fb_tat), so agent and workers
 * can both grant without granting twice.
 *
 * Spend: the agent leases spend budget from the organisation's counter in
 * Redis; the host's spend cap is min(cap, its budget), so what the hosts
 * reserved and settled, summed, never passes the organisation's cap.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "internal.h"

/* A lease is asked for when what is left of it is shorter than this
 * fraction of a lease: the agent's period is lease_ms / 4. */
#define SHL_CL_AGENT_STALE(lease_ns) (3 * (lease_ns))

/* ------------------------------------------------------------------ */
/* Configuration                                                        */
/* ------------------------------------------------------------------ */

static int cl_bad(shl_err *e, const char *path, const char *what)
{
	shl__err(e, "%s: %s", path, what);
	return -EINVAL;
}

int shl__cluster_parse(const cJSON *o, struct shl_cluster_cfg *c, shl_err *e)
{
	memset(c, 0, sizeof(*c));
	if (o == NULL || cJSON_IsNull(o))
		return 0;
	if (!cJSON_IsObject(o))
		return cl_bad(e, "cluster", "expected an object {redis, prefix, lease_ms, fallback_share}");
	static const char *const keys[] = {"redis", "prefix", "lease_ms", "fallback_share", NULL};
	for (const cJSON *k = o->child; k != NULL; k = k->next) {
		int ok = 0;
		for (int i = 0; keys[i]; i++)
			ok |= k->string != NULL && strcmp(k->string, keys[i]) == 0;
		if (!ok) {
			shl__err(e, "cluster.%s: unknown key", k->string ? k->string : "?");
			return -EINVAL;
		}
	}
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "redis");
	if (!cJSON_IsString(r) || r->valuestring == NULL)
		return cl_bad(e, "cluster.redis", "expected \"HOST:PORT\"");
	const char *colon = strrchr(r->valuestring, ':');
	size_t hl = colon ? (size_t)(colon - r->valuestring) : 0;
	char *endp = NULL;
	long port = colon ? strtol(colon + 1, &endp, 10) : 0;
	if (colon == NULL || hl == 0 || hl > SHL_CL_HOST_MAX || endp == colon + 1 || *endp != '\0' ||
	    port < 1 || port > 65535)
		return cl_bad(e, "cluster.redis", "expected \"HOST:PORT\" (host 1..127 bytes, port 1..65535)");
	for (size_t i = 0; i < hl; i++) {
		char ch = r->valuestring[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '-' || ch == '_' || ch == '[' || ch == ']' || ch == ':'))
			return cl_bad(e, "cluster.redis", "host has a character outside [A-Za-z0-9._:-[]]");
	}
	memcpy(c->host, r->valuestring, hl);
	c->host[hl] = '\0';
	c->port = (uint32_t)port;
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prefix");
	if (!cJSON_IsString(p) || p->valuestring == NULL || p->valuestring[0] == '\0' ||
	    strlen(p->valuestring) > SHL_CL_PREFIX_MAX)
		return cl_bad(e, "cluster.prefix", "expected the organisation's key prefix, 1..63 bytes");
	for (const char *q = p->valuestring; *q; q++)
		if (*q == '{' || *q == '}' || *q <= ' ' || *q > '~')
			return cl_bad(e, "cluster.prefix",
				      "printable characters other than space, '{' and '}' only");
	strcpy(c->prefix, p->valuestring);
	c->lease_ms = 200;
	const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, "lease_ms");
	if (l != NULL) {
		if (!cJSON_IsNumber(l) || l->valuedouble != (double)(int)l->valuedouble ||
		    l->valueint < 10 || l->valueint > 10000)
			return cl_bad(e, "cluster.lease_ms", "expected an integer from 10 to 10000");
		c->lease_ms = (uint32_t)l->valueint;
	}
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "fallback_share");
	if (f != NULL && !cJSON_IsNull(f)) {
		if (!cJSON_IsNumber(f) || !(f->valuedouble > 0) || f->valuedouble > 1)
			return cl_bad(e, "cluster.fallback_share",
				      "expected a fraction of the limits, 0 < share <= 1, or null");
		c->fallback_ppm = (uint32_t)(f->valuedouble * 1e6 + 0.5);
		if (c->fallback_ppm == 0)
			c->fallback_ppm = 1;
	}
	c->enabled = 1;
	return 0;
}

void shl__cluster_to_json(const struct shl_cluster_cfg *c, cJSON *root)
{
	if (!c->enabled)
		return;
	cJSON *o = cJSON_AddObjectToObject(root, "cluster");
	if (o == NULL)
		return;
	char addr[SHL_CL_HOST_MAX + 16];
	snprintf(addr, sizeof(addr), "%s:%u", c->host, c->port);
	cJSON_AddStringToObject(o, "redis", addr);
	cJSON_AddStringToObject(o, "prefix", c->prefix);
	cJSON_AddNumberToObject(o, "lease_ms", c->lease_ms);
	if (c->fallback_ppm)
		cJSON_AddNumberToObject(o, "fallback_share", c->fallback_ppm / 1e6);
}

/* Under the appliers' flock: the configuration part of the segment's
 * cluster area.  Workers read only `enabled`-derived pool flags from the
 * configuration slot; the agent reads the rest. */
void shl__cluster_store(struct shl_seg *seg, const struct shl_cluster_cfg *c)
{
	struct shl_cluster_seg *cs = &seg->ext.cluster;
	cs->port = c->port;
	cs->lease_ms = c->lease_ms;
	cs->fallback_ppm = c->fallback_ppm;
	memcpy(cs->host, c->host, sizeof(cs->host));
	memcpy(cs->prefix, c->prefix, sizeof(cs->prefix));
	cs->enabled = c->enabled;
}

void shl__cluster_load(const struct shl_seg *seg, struct shl_cluster_cfg *c)
{
	const struct shl_cluster_seg *cs = &seg->ext.cluster;
	memset(c, 0, sizeof(*c));
	c->enabled = cs->enabled == 1;
	if (!c->enabled)
		return;
	c->port = cs->port;
	c->lease_ms = cs->lease_ms;
	c->fallback_ppm = cs->fallback_ppm;
	memcpy(c->host, cs->host, sizeof(c->host));
	memcpy(c->prefix, cs->prefix, sizeof(c->prefix));
	c->host[SHL_CL_HOST_MAX] = c->prefix[SHL_CL_PREFIX_MAX] = '\0';
	if (c->lease_ms < 10 || c->lease_ms > 10000)
		c->lease_ms = 200;
	if (c->fallback_ppm > 1000000)
		c->fallback_ppm = 0;
}

/* A pool's runtime lease state starts empty (a new pool, a removed one). */
void shl__cluster_pool_zero(struct shl_seg *seg, int p)
{
	struct shl_cluster_pool *cp = &seg->pext[p].cluster;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		struct shl_cl_dim *cd = &cp->dim[d];
		/* relaxed: a removed or new pool; a racing worker is refused or
		 * admitted under the old numbers, as for the bucket words. */
		atomic_store_explicit(&cd->credit, 0, memory_order_relaxed);
		atomic_store_explicit(&cd->fb_tat, 0, memory_order_relaxed);
		atomic_store_explicit(&cd->need_ns, 0, memory_order_relaxed);
	}
}

/* ------------------------------------------------------------------ */
/* Leases on the admission path                                         */
/* ------------------------------------------------------------------ */

/*
 * How long leased units of dimension d stay usable (V, ns): the units Redis
 * issues at t may be taken until t + V, and Redis keeps the global bucket
 * within tol - V of its clock when it issues, so that over any interval T
 * every host together takes at most (tol - V) + rate x (T + V) = burst +
 * rate x T.  V is three quarters of the burst in whole units (all of it for
 * a burst of one): a single take may use at most that in multi-host mode.
 */
uint64_t shl__cluster_validity(const struct shl_pool_local *pl, int d)
{
	uint64_t b = pl->burst[d];
	return (b - b / 4) * pl->interval[d];
}

/* The share of the limits a host takes without Redis, in ppm. */
static uint32_t share_ppm(const struct shl_cluster_seg *cs)
{
	/* relaxed: configuration written under the flock before the pools
	 * were flagged; the hosts count is a hint. */
	if (cs->fallback_ppm > 0 && cs->fallback_ppm <= 1000000)
		return cs->fallback_ppm;
	uint32_t n = atomic_load_explicit(&cs->hosts_seen, memory_order_relaxed);
	return 1000000u / (n == 0 ? 1u : n);
}

/*
 * Grant this host `len` ns of credit in dimension d at its static share,
 * without Redis: the share's own GCRA word (fb_tat) decides, so the agent
 * and every worker may try at once and at most `len` per len / share of
 * time is granted.  Returns 1 if credit was granted.
 */
static int fallback_grant(struct shl_seg *seg, int p, int d, int64_t now, uint64_t len)
{
	if (len == 0)
		return 0;
	struct shl_cluster_seg *cs = &seg->ext.cluster;
	struct shl_cluster_pool *cp = &seg->pext[p].cluster;
	struct shl_cl_dim *cd = &cp->dim[d];
	uint64_t n = (uint64_t)now;
	uint64_t cost = len * 1000000u / share_ppm(cs); /* local time it costs (len <= 2^40) */
	uint64_t f = atomic_load_explicit(&cd->fb_tat, memory_order_relaxed);
	uint64_t base = f > n ? f : n;
	if (base + cost - n > cost)
		return 0; /* the share is used up until f */
	/* relaxed/relaxed: an independent GCRA word, as bucket words are. */
	if (!atomic_compare_exchange_strong_explicit(&cd->fb_tat, &f, base + cost,
						     memory_order_relaxed, memory_order_relaxed))
		return 0;
	/* relaxed: the credit is a counter; takes decide by their own RMW. */
	atomic_fetch_add_explicit(&cd->credit, (int64_t)len, memory_order_relaxed);
	atomic_fetch_add_explicit(&cp->fallback_grants, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&cd->granted_ns, len, memory_order_relaxed);
	return 1;
}

int shl__cluster_fallback(struct shl_seg *seg, int p, int d, int64_t now, uint64_t len)
{
	return fallback_grant(seg, p, d, now, len);
}

/* Whether this host must grant itself credit: no agent beat recently, or
 * the agent says Redis is away. */
static int agent_away(const struct shl_cluster_seg *cs, int64_t now)
{
	uint64_t lease_ns = (uint64_t)cs->lease_ms * 1000000u;
	/* relaxed: hints written by the agent. */
	int64_t beat = atomic_load_explicit(&cs->agent_beat, memory_order_relaxed);
	if (beat == 0 || now - beat > (int64_t)SHL_CL_AGENT_STALE(lease_ns))
		return 1;
	return atomic_load_explicit(&cs->fallback, memory_order_relaxed) != 0;
}

/*
 * Take `cost_ns[d]` of credit in every dimension that needs it, all or
 * nothing.  Returns -1 when all were taken, else the dimension short.
 */
int shl__cluster_take(struct shl *h, int p, const uint64_t cost_ns[SHL_NBUCKETS])
{
	struct shl_cluster_pool *cp = &h->seg->pext[p].cluster;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		if (cost_ns[d] == 0)
			continue;
		/* relaxed: a counter; the RMW's atomicity is the guarantee (no
		 * data is published through it). */
		int64_t before = atomic_fetch_sub_explicit(&cp->dim[d].credit, (int64_t)cost_ns[d],
							   memory_order_relaxed);
		if (before < (int64_t)cost_ns[d]) {
			for (int k = 0; k <= d; k++)
				if (cost_ns[k])
					atomic_fetch_add_explicit(&cp->dim[k].credit,
								  (int64_t)cost_ns[k],
								  memory_order_relaxed);
			return d;
		}
	}
	return -1;
}

/* Give back credit taken by shl__cluster_take (the local take failed). */
void shl__cluster_untake(struct shl *h, int p, const uint64_t cost_ns[SHL_NBUCKETS])
{
	struct shl_cluster_pool *cp = &h->seg->pext[p].cluster;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		if (cost_ns[d])
			/* relaxed: as in shl__cluster_take. */
			atomic_fetch_add_explicit(&cp->dim[d].credit, (int64_t)cost_ns[d],
						  memory_order_relaxed);
}

/*
 * An admission of pool p found too little credit in dimension d for its
 * takes (cost_ns[k] ns in each dimension k).  Grant credit at the fallback
 * share when no agent or no Redis is there, and say whether it is worth
 * taking again (1); or record the demand of every dimension short of its
 * take for the agent and refuse (0).
 */
int shl__cluster_short(struct shl *h, const struct shl_local *l, int p, int d,
		       const uint64_t cost_ns[SHL_NBUCKETS], int64_t now)
{
	struct shl_seg *seg = h->seg;
	struct shl_cluster_seg *cs = &seg->ext.cluster;
	struct shl_cluster_pool *cp = &seg->pext[p].cluster;
	if (agent_away(cs, now)) {
		/* Credit up to what may be held (V), as the agent would. */
		struct shl_cl_dim *cd = &cp->dim[d];
		uint64_t v = shl__cluster_validity(&l->pools[p], d);
		int64_t c = atomic_load_explicit(&cd->credit, memory_order_relaxed);
		uint64_t have = c > 0 ? (uint64_t)c : 0;
		if (fallback_grant(seg, p, d, now, v > have ? v - have : cost_ns[d]))
			return 1;
	}
	for (int k = 0; k < SHL_NBUCKETS; k++) {
		struct shl_cl_dim *cd = &cp->dim[k];
		if (cost_ns[k] == 0 ||
		    atomic_load_explicit(&cd->credit, memory_order_relaxed) >= (int64_t)cost_ns[k])
			continue;
		/* relaxed: a demand hint for the agent (the largest take
		 * refused), raised by CAS; any value is safe. */
		uint64_t old = atomic_load_explicit(&cd->need_ns, memory_order_relaxed);
		while (old < cost_ns[k] &&
		       !atomic_compare_exchange_weak_explicit(&cd->need_ns, &old, cost_ns[k],
							      memory_order_relaxed, memory_order_relaxed))
			;
	}
	/* relaxed: a statistic and the agent's demand signal. */
	atomic_fetch_add_explicit(&cp->short_refusals, 1, memory_order_relaxed);
	return 0;
}

/* The wait to report for a refusal for lack of lease: the agent's period. */
int64_t shl__cluster_wait(const struct shl *h)
{
	uint32_t ms = h->seg->ext.cluster.lease_ms;
	return (int64_t)(ms >= 10 && ms <= 10000 ? ms : 200) * 250000; /* lease / 4 */
}

/* The host's spend cap in cluster mode: the organisation's cap, limited to
 * the budget this host has leased for `month` (none leased yet: 0). */
int64_t shl__cluster_cap(const struct shl *h, const struct shl_local *l, uint32_t month)
{
	if (l->spend_cap < 0 || l->spend_cap == INT64_MAX)
		return l->spend_cap; /* no cap: nothing to lease */
	/* acquire: pairs with the agent's release store after Redis granted. */
	uint64_t b = atomic_load_explicit(&h->seg->ext.cluster.spend_budget, memory_order_acquire);
	if ((uint32_t)(b >> SHL_SPEND_BITS) != (month & 127u))
		return 0;
	int64_t u = (int64_t)(b & SHL_SPEND_MASK);
	return u < l->spend_cap ? u : l->spend_cap;
}

/* Whether the organisation's cap (not only this host's budget) is reached. */
int shl__cluster_org_exhausted(const struct shl *h, uint32_t month)
{
	/* relaxed: a flag the agent sets from Redis. */
	return atomic_load_explicit(&h->seg->ext.cluster.global_exhausted, memory_order_relaxed) ==
	       month + 1;
}
