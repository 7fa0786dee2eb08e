/*
 * rule.c - the admission rule in plain arithmetic.
 *
 * The lock-based baselines (mutex, flock) run this code while they hold
 * their lock; the Redis baseline runs the same steps in Lua (mech_redis.c);
 * libshmlimit runs them with one CAS per word.  bench_rule_take is a
 * line-by-line copy of shl__bucket_take's decision (saturating unsigned
 * arithmetic, interval rounded up), and the smoke test checks the two agree
 * on random inputs, so the baselines cannot drift into a cheaper rule.
 *
 * What it deliberately leaves out: the library's last-minute statistics
 * window (a few more relaxed CASes per settle on our side only).  Every
 * other counter the library keeps (admitted, settled, tokens) is kept here
 * too, so the lock-based baselines are not handed a lighter job.
 */
#include "bench.h"

uint64_t bench_mul_sat(uint64_t a, uint64_t b)
{
	uint64_t r;
	if (__builtin_mul_overflow(a, b, &r))
		return UINT64_MAX;
	return r;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	uint64_t r;
	if (__builtin_add_overflow(a, b, &r))
		return UINT64_MAX;
	return r;
}

void bench_scenario_derive(struct bench_scenario *sc)
{
	for (int d = 0; d < BENCH_NDIM; d++) {
		uint64_t l = sc->limit[d] ? sc->limit[d] : 1;
		sc->interval[d] = (60000000000ULL + l - 1) / l;
		sc->tol[d] = bench_mul_sat(sc->burst[d], sc->interval[d]);
	}
}

int64_t bench_rule_take(uint64_t tat, int64_t now, uint64_t cost_ns, uint64_t tol,
			uint64_t *next)
{
	uint64_t n = now < 0 ? 0 : (uint64_t)now;
	uint64_t nx = add_sat(tat > n ? tat : n, cost_ns);
	uint64_t ahead = nx - n;
	if (ahead > tol) {
		uint64_t w = ahead - tol;
		return w > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)w;
	}
	*next = nx;
	return 0;
}

int bench_rule_admit(struct bench_rule_state *s, const struct bench_scenario *sc, int p,
		     int64_t now, struct bench_adm *a)
{
	struct bench_pool_state *ps = &s->pools[p];
	if (now < ps->hold_until)
		return 1;
	/* RPM: one request; ITPM: the estimate; OTPM ("actual" mode): nothing
	 * reserved, but a bucket in debt past its tolerance refuses. */
	uint64_t cost[BENCH_NDIM] = {1, sc->req_in, 0};
	uint64_t next[BENCH_NDIM];
	for (int d = 0; d < BENCH_NDIM; d++)
		if (bench_rule_take(ps->tat[d], now, bench_mul_sat(cost[d], sc->interval[d]),
				    sc->tol[d], &next[d]) != 0)
			return 1;
	int64_t units = (int64_t)sc->req_in * sc->price_in +
			(int64_t)sc->req_max_out * sc->price_out;
	if (sc->spend_cap >= 0 && s->spend + units > sc->spend_cap)
		return 1;
	for (int d = 0; d < BENCH_NDIM; d++)
		ps->tat[d] = next[d];
	s->spend += units;
	ps->admitted++;
	a->pool = p;
	a->now = now;
	a->reserved = units;
	return 0;
}

void bench_rule_settle(struct bench_rule_state *s, const struct bench_scenario *sc,
		       struct bench_adm *a, int64_t now)
{
	struct bench_pool_state *ps = &s->pools[a->pool];
	uint64_t n = now < 0 ? 0 : (uint64_t)now;
	/* ITPM: correct the estimate by the real count. */
	if (sc->used_in > sc->req_in) {
		uint64_t ns = bench_mul_sat(sc->used_in - sc->req_in, sc->interval[1]);
		uint64_t t = ps->tat[1];
		ps->tat[1] = add_sat(t > n ? t : n, ns);
	} else if (sc->used_in < sc->req_in) {
		uint64_t ns = bench_mul_sat(sc->req_in - sc->used_in, sc->interval[1]);
		ps->tat[1] = ps->tat[1] > ns ? ps->tat[1] - ns : 0;
	}
	/* OTPM ("actual" mode): charge what was generated, into debt if need be. */
	if (sc->used_out > 0) {
		uint64_t ns = bench_mul_sat(sc->used_out, sc->interval[2]);
		uint64_t t = ps->tat[2];
		ps->tat[2] = add_sat(t > n ? t : n, ns);
	}
	int64_t actual = (int64_t)sc->used_in * sc->price_in + (int64_t)sc->used_out * sc->price_out;
	s->spend += actual - a->reserved;
	if (s->spend < 0)
		s->spend = 0;
	ps->spend += actual;
	ps->tokens_in += sc->used_in;
	ps->tokens_out += sc->used_out;
	ps->settled++;
}

