/*
 * observe.c - what the server says about its limits and its models, fed
 * back into the segment: the limits its response headers report
 * (shl_observe_limits) and the model that really served a request
 * (shl_settle_as).
 *
 * The response headers anthropic-ratelimit-*-limit carry the pool's real
 * per-minute limits, which move under a configuration written from a
 * preset or last month's sync.  They are recorded per pool in the pool
 * extension (layout.h, struct shl_observed); the process-local derived
 * configuration runs each bucket at the observed rate (or at the lower of
 * the two when the pool does not follow the server), re-derived when the
 * recorded words change: a change publishes a new generation, so "within
 * one request" holds for every process, and the check on the common path,
 * where nothing changed, is a handful of relaxed loads.
 *
 * The catch-all pool (unknown_model) is the exception: the models it
 * governs belong to server pools it cannot tell apart (a new Opus and a new
 * Sonnet both land there), so it keeps the lowest limits any of them
 * reported, and only ever goes down -- following each in turn would flap
 * the rate, and a new generation, with every response.  `sync` (or an
 * apply) gives such models pools of their own.
 *
 * A response whose model differs from the request's was served, and
 * counted, by the other model's pool: the admission goes back to its pool
 * and the serving pool is charged, at the serving model's prices.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define LIMIT_MAX 1000000000000ULL /* as config.c: per minute, any dimension */

int shl_observe_limits(shl_t *h, int pool, const uint64_t limit_per_min[3])
{
	if (h == NULL || limit_per_min == NULL)
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	if (pool < 0 || (unsigned)pool >= l->slot.npools ||
	    !(l->slot.pools[pool].flags & SHL_PF_USED))
		return -EINVAL;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		if (limit_per_min[d] > LIMIT_MAX)
			return -EOVERFLOW;
	const struct shl_observed *ob = &h->seg->pext[pool].observed;
	int catchall = shl__catchall_pool(&l->slot, pool);
	/* relaxed: a compare only; a change goes through the flock. */
	int same = atomic_load_explicit(&ob->name_hash, memory_order_relaxed) ==
		   l->pools[pool].name_hash;
	for (int d = 0; same && d < SHL_NBUCKETS; d++) {
		uint64_t was = atomic_load_explicit(&ob->limit[d], memory_order_relaxed);
		same = limit_per_min[d] == 0 || was == limit_per_min[d] ||
		       (catchall && was != 0 && limit_per_min[d] > was);
	}
	if (same)
		return 0;
	if (h->rdonly)
		return -EACCES;
	return shl__observe_apply(h, pool, limit_per_min);
}

int shl_settle_as(shl_t *h, shl_ticket *t, int served, const shl_usage *u)
{
	uint64_t given[SHL_NBUCKETS];
	return shl__settle_as_given(h, t, served, u, given);
}

int shl__settle_as_given(shl_t *h, shl_ticket *t, int served, const shl_usage *u,
			 uint64_t given[SHL_NBUCKETS])
{
	for (int d = 0; d < SHL_NBUCKETS; d++)
		given[d] = 0;
	if (h == NULL || t == NULL || u == NULL)
		return -EINVAL;
	if (served < 0 || served == t->model)
		return shl__settle_given(h, t, u, given);
	if (t->state != 1)
		return -EALREADY;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	if ((unsigned)served >= l->slot.nmodels)
		return -ESRCH;
	if (h->rdonly)
		return -EACCES;
	int sp = (int)l->slot.models[served].pool;
	if (sp == t->pool) {
		/* The same pool: its buckets as shl_settle; the serving model's
		 * prices (shl_settle prices a ticket by its model entry). */
		shl_ticket x = *t;
		x.model = served;
		int r = shl__settle_given(h, &x, u, given);
		t->state = x.state;
		return r;
	}
	/* Another pool: the admitted pool gets its units back (the server
	 * counted the request elsewhere) and the spend reservation returns... */
	int r = shl__cancel_given(h, t, given);
	if (r < 0)
		return r;
	/* ...and the serving pool is charged one request and the usage, as a
	 * ticket of the live generation that held nothing: shl_settle then
	 * charges all of it (a charge is never refused) and prices it at the
	 * serving model's prices.  The request itself: one RPM unit. */
	const struct shl_pool_local *pl = &l->pools[sp];
	int64_t now = shl__now();
	shl__bucket_charge(&h->seg->pools[sp].bkt[SHL_DIM_RPM].tat, now,
			   pl->interval[SHL_DIM_RPM]);
	shl_ticket x;
	memset(&x, 0, sizeof(x));
	x.model = served;
	x.pool = sp;
	x.state = 1;
	x.batch = t->batch;
	x.month = shl__month(h, now);
	x.pad = pl->name_hash;
	x.generation = l->gen;
	x.admitted_at = now;
	r = shl_settle(h, &x, u);
	return r;
}
