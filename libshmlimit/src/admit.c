/*
 * admit.c - admission, settlement, and feedback from the server.
 *
 * An admission takes a request's cost out of its pool's three buckets and
 * reserves its worst-case price in the monthly spend, all or nothing:
 *
 *   1. a read-only pass over the three bucket words computes the exact wait
 *      of each; if any must wait, refuse at once with the longest wait (no
 *      word is written, so a refused caller disturbs nobody);
 *   2. take each bucket by CAS; if a racing process emptied one in between,
 *      give back what was taken and refuse;
 *   3. reserve the spend, checking the cap in the same CAS; if that fails,
 *      give back all three.  (The reservation is normally taken from the
 *      calling thread's spend lease, spend.c; the lease itself was taken
 *      from the shared word by that capped CAS.)
 *
 * The common case (OTPM in "actual" mode, some input) fuses steps 1 and
 * 2: OTPM is only checked, and RPM and ITPM are checked from one read of
 * their words and taken by one 8-byte CAS each (RPM then ITPM); if the
 * second loses a race, the slow path retries it and, on a refusal, rolls
 * the first back.  (RPM and ITPM each sit next to their refund ledger, so
 * they are no longer adjacent for one 16-byte CAS; bucket.c.)  The rule on
 * each word is exactly shl__bucket_take_at's, and so is the ticket's mark.
 *
 * Each bucket, by itself, never admits more than burst + rate x T over any
 * interval T; giving back only ever returns what is left of this caller's
 * take.  A rollback follows the same refund rule as a cancel, at a fresh
 * clock reading: a caller descheduled between its take and the rollback
 * may find the bucket refilled past its take and taken again by others,
 * and giving back its whole take then would erase theirs.  So the
 * all-or-nothing rule costs at most a spurious refusal under a race, never
 * an over-admission.  A process killed between steps leaves units taken
 * and not given back: they are consumed (they refill at the bucket's rate),
 * which is the conservative direction; a process killed after admission and
 * before settle leaves its worst-case spend reserved for the month.
 *
 * A request that cannot go now may take its place in line instead
 * (shl_reserve; shl_acquire and shl_route wait through it): the same
 * takes, made for a release time ahead of now, so that every later request
 * finds the words pushed past it (reserve_impl below; bucket.c,
 * "Reservations", for why the refund rule then measures from the pool's
 * horizon).  shl_start re-checks, at the release, what may have changed
 * meanwhile (a hold, the spend cap).
 *
 * Settlement replaces the estimate with the server's usage: ITPM counts
 * input + cache-creation tokens (+ cache reads in pools configured so),
 * OTPM counts actual output (or, in "reserve" mode, refunds the unused part
 * of max_tokens), and the spend is corrected to the real price.
 *
 * Refunds give back only what is provably still this ticket's:
 *   - to a bucket, at most what is left of the take: its end moved down
 *     by every refund of the bucket since (the refund ledger, bucket.c),
 *     minus now (or the reservation horizon); in ITPM, or as much as the
 *     takes after it leave room for, if that is more (every ITPM take
 *     notes its slack: bucket.c, "Slack"); and nothing at all for a
 *     ticket of an earlier configuration generation:
 *     an apply rescales the bucket (its mark is on the old scale) and a
 *     reset republishes the configuration after refilling every bucket;
 *   - to the spend, nothing for a ticket admitted before the last spend
 *     reset (slot.spend_epoch), whose reservation the reset already erased.
 * Charges (usage above the estimate) always apply.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define SHL_TOKENS_MAX 0xffffffffULL /* per field of a cost or usage */

static inline uint64_t clampt(uint64_t v)
{
	return v > SHL_TOKENS_MAX ? SHL_TOKENS_MAX : v;
}

/* Units for token counts already known to be <= 2^32 (prices <= 1e8, so
 * no overflow); batch halves, rounding up.  The three cache products are
 * skipped when the request has no cache tokens (their terms are zero). */
static inline int64_t price_raw(const int64_t price[SHL_NPRICES], uint64_t in, uint64_t out,
				uint64_t cw5, uint64_t cw1, uint64_t rd, int batch)
{
	int64_t u = (int64_t)in * price[SHL_P_INPUT] + (int64_t)out * price[SHL_P_OUTPUT];
	if (shl_unlikely((cw5 | cw1 | rd) != 0))
		u += (int64_t)cw5 * price[SHL_P_CW5] + (int64_t)cw1 * price[SHL_P_CW1] +
		     (int64_t)rd * price[SHL_P_READ];
	return batch ? (u + 1) / 2 : u;
}

/* The same for counts of any size (clamped to 2^32 each). */
static int64_t price_of(const int64_t price[SHL_NPRICES], uint64_t in, uint64_t out,
			uint64_t cw5, uint64_t cw1, uint64_t rd, int batch)
{
	return price_raw(price, clampt(in), clampt(out), clampt(cw5), clampt(cw1), clampt(rd),
			 batch);
}

int shl_price(shl_t *h, int model, const shl_cost *c, int64_t *units)
{
	struct shl_local *l = h ? shl__local(h) : NULL;
	if (l == NULL || c == NULL || units == NULL)
		return h && c && units ? -EUCLEAN : -EINVAL;
	if (model < 0 || (unsigned)model >= l->slot.nmodels)
		return -ESRCH;
	*units = price_of(l->slot.models[model].price, c->input_tokens, c->max_tokens,
			  c->cache_write_5m, c->cache_write_1h, c->cache_read, c->batch);
	return 0;
}

int shl_price_usage(shl_t *h, int model, const shl_usage *u, int batch, int64_t *units)
{
	struct shl_local *l = h ? shl__local(h) : NULL;
	if (l == NULL || u == NULL || units == NULL)
		return h && u && units ? -EUCLEAN : -EINVAL;
	if (model < 0 || (unsigned)model >= l->slot.nmodels)
		return -ESRCH;
	*units = price_of(l->slot.models[model].price, u->input_tokens, u->output_tokens,
			  u->cache_write_5m, u->cache_write_1h, u->cache_read, batch);
	return 0;
}

int shl_model_pool(shl_t *h, int model)
{
	struct shl_local *l = h ? shl__local(h) : NULL;
	if (l == NULL)
		return h ? -EUCLEAN : -EINVAL;
	if (model < 0 || (unsigned)model >= l->slot.nmodels)
		return -ESRCH;
	return (int)l->slot.models[model].pool;
}

/* start + timeout as a deadline, saturating (negative timeout: none). */
static inline int64_t deadline_of(int64_t start, int64_t timeout)
{
	if (timeout < 0 || start < 0 || timeout > INT64_MAX - start)
		return INT64_MAX;
	return start + timeout;
}

/* Only the ITPM bucket notes and reads its takes' slack (bucket.c,
 * "Slack"): RPM has no surplus to give back, and OTPM keeps the horizon
 * rule.  sl is the pool's slack area. */
static inline struct shl_slack *slack_for(struct shl_slack *sl, int d)
{
	return d == SHL_DIM_ITPM ? sl : NULL;
}

/*
 * Give back the takes of a failed admission (buckets 0..upto-1), by the
 * refund rule at a fresh clock reading: what is left of each take, never
 * more.  Off the hot path: only a lost race or a spend refusal gets here.
 */
static __attribute__((noinline, cold)) void rollback(struct shl_pool_rt *rt, struct shl_slack *sl,
						     int upto, const uint64_t cost_ns[SHL_NBUCKETS],
						     const uint64_t mark[SHL_NBUCKETS])
{
	for (int k = 0; k < upto; k++)
		shl__bucket_refund(&rt->bkt[k], SHL_NOW_FRESH, cost_ns[k], mark[k], &rt->horizon,
				   slack_for(sl, k));
}

/* The read-only pass: the exact wait of each dimension, from the words as
 * they are now.  Returns the dimension with the longest wait (*wmax), or
 * -1 if none must wait. */
static inline int waits(struct shl_pool_rt *rt, uint64_t n, const uint64_t cost_ns[],
			const uint64_t tol[], int64_t *wmax)
{
	int wdim = -1;
	*wmax = 0;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		/* relaxed: a hint; the CAS in step 2 decides. */
		uint64_t tat = atomic_load_explicit(&rt->bkt[d].tat, memory_order_relaxed);
		uint64_t base = tat > n ? tat : n;
		uint64_t ahead = base - n;
		ahead = ahead > UINT64_MAX - cost_ns[d] ? UINT64_MAX : ahead + cost_ns[d];
		/* Unsigned: a bucket 2^63 ns or more in debt (one huge settle
		 * saturates the word) must refuse, also for a zero cost. */
		if (ahead > tol[d] && ahead - tol[d] > (uint64_t)*wmax) {
			uint64_t w = ahead - tol[d];
			*wmax = w > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)w;
			wdim = d;
		}
	}
	return wdim;
}

static int refuse(struct shl_pool_rt *rt, shl_refusal *why, int dim, int pool, int64_t wait,
		  uint64_t need, uint64_t cap, int ret)
{
	/* relaxed: a statistic. */
	atomic_fetch_add_explicit(&rt->refused, 1, memory_order_relaxed);
	if (why) {
		why->dim = dim;
		why->pool = pool;
		why->wait_ns = wait;
		why->need = need;
		why->capacity = cap;
	}
	return ret;
}

/*
 * The fused path below when its first attempt did not go through: OTPM in
 * debt, RPM or ITPM short, or a CAS lost a race (took0: RPM was taken,
 * with mark m0, and ITPM's CAS lost).  Takes as the rule says (f[] the
 * marks, returns 0), rolling RPM back if ITPM then refuses, or refuses
 * with the longest wait of all three words as they are now, as the
 * read-only pass reports it; if none must wait any more (the words moved
 * since), with what refused.  Off the hot path.
 */
static __attribute__((noinline, cold)) int
fused_slow(struct shl_pool_rt *rt, struct shl_slack *sl, shl_refusal *why, int p,
	   const struct shl_pool_local *pl, int64_t now, uint64_t need_i, const uint64_t tol[],
	   int took0, uint64_t m0, uint64_t f[2])
{
	const uint64_t n = (uint64_t)now;
	f[0] = f[1] = 0; /* read by the caller only when this admits */
	const uint64_t need[SHL_NBUCKETS] = {1, need_i, 0};
	const uint64_t cost_ns[SHL_NBUCKETS] = {pl->interval[SHL_DIM_RPM],
						need_i * pl->interval[SHL_DIM_ITPM], 0};
	uint64_t mark[SHL_NBUCKETS] = {m0, 0, 0};
	int wd = SHL_DIM_OTPM;
	int64_t w = 1;
	/* relaxed: a hint, as in waits(). */
	uint64_t t2 = atomic_load_explicit(&rt->bkt[SHL_DIM_OTPM].tat, memory_order_relaxed);
	if (took0 || t2 <= n || t2 - n <= tol[SHL_DIM_OTPM]) {
		wd = SHL_DIM_RPM;
		w = took0 ? 0
			  : shl__bucket_take_at(&rt->bkt[SHL_DIM_RPM], now, cost_ns[SHL_DIM_RPM],
						tol[SHL_DIM_RPM], &mark[SHL_DIM_RPM], NULL, now);
		if (w == 0) {
			wd = SHL_DIM_ITPM;
			w = shl__bucket_take_at(&rt->bkt[SHL_DIM_ITPM], now, cost_ns[SHL_DIM_ITPM],
						tol[SHL_DIM_ITPM], &mark[SHL_DIM_ITPM], sl, now);
			if (w == 0) {
				f[0] = mark[SHL_DIM_RPM];
				f[1] = mark[SHL_DIM_ITPM];
				return 0;
			}
			rollback(rt, NULL, 1, cost_ns, mark); /* RPM alone */
		}
	}
	int64_t wmax;
	int wdim = waits(rt, n, cost_ns, tol, &wmax);
	if (wdim < 0) {
		wdim = wd;
		wmax = w;
	}
	return refuse(rt, why, wdim, p, wmax, need[wdim], pl->burst[wdim], -EAGAIN);
}

/* The spend reservation when the lease could not cover it: the month it
 * was counted in (>= 0), or the negative errno of shl__lease_reserve.  Out
 * of line, so that the month needs no stack slot on the hot path. */
static __attribute__((noinline)) int64_t lease_reserve(shl_t *h, const struct shl_local *l,
							struct shl_pslot *ps, uint32_t month,
							int64_t units)
{
	uint32_t charged = month;
	int r = shl__lease_reserve(h, l, ps, month, units, &charged);
	/* Multi-host: this host's budget ran short, not the organisation's
	 * cap; the agent leases more (cluster.c). */
	if (r == -EDQUOT && l->cluster && !shl__cluster_org_exhausted(h, month))
		r = -EAGAIN;
	return r != 0 ? (int64_t)r : (int64_t)charged;
}

/* A refusal of the spend (step 3): give back the takes (each cost is
 * need x interval, as taken; f0..f2: the mark of each take, 0 if none),
 * report the month's spend.  Off the hot path. */
static __attribute__((noinline, cold)) int
refuse_spend(shl_t *h, const struct shl_local *l, const struct shl_pool_local *pl,
	     struct shl_pool_rt *rt, shl_refusal *why, int p, uint32_t month, int64_t units, int r,
	     uint64_t need_i, uint64_t need_o, uint64_t f0, uint64_t f1, uint64_t f2)
{
	const uint64_t cost_ns[SHL_NBUCKETS] = {pl->interval[SHL_DIM_RPM],
						need_i * pl->interval[SHL_DIM_ITPM],
						need_o * pl->interval[SHL_DIM_OTPM]};
	const uint64_t mark[SHL_NBUCKETS] = {f0, f1, f2};
	rollback(rt, &h->seg->pext[p].slack, SHL_NBUCKETS, cost_ns, mark);
	int64_t cur = shl__spend_read(&h->seg->spendl, month);
	return refuse(rt, why, SHL_DIM_SPEND, p, r == -EAGAIN ? shl__cluster_wait(h) : 0,
		      (uint64_t)units + (uint64_t)cur, (uint64_t)l->spend_cap, r);
}

/* The ticket of an admission (`at`: its release; f0..f2: each bucket's
 * mark, 0 if not taken).  Scalars, inlined: on the hot path nothing of it
 * goes through the stack. */
static inline __attribute__((always_inline)) void
ticket_fill(shl_ticket *t, const struct shl_local *l, const struct shl_pool_local *pl, int p,
	    int model, int64_t units, int batch, uint32_t month, int64_t at, uint64_t need_i,
	    uint64_t need_o, uint64_t f0, uint64_t f1, uint64_t f2)
{
	t->model = model;
	t->pool = p;
	t->state = 1;
	t->batch = batch != 0;
	t->rpm = 1;
	t->itpm = need_i;
	t->otpm = need_o;
	t->spend = units;
	t->month = month; /* where a refund must go */
	t->pad = pl->name_hash;
	t->generation = l->gen;
	t->admitted_at = at;
	t->full_at[SHL_DIM_RPM] = f0;
	t->full_at[SHL_DIM_ITPM] = f1;
	t->full_at[SHL_DIM_OTPM] = f2;
}

/*
 * Step 3 and the ticket, once the buckets are taken (f0..f2: each bucket's
 * mark, its tat after the take plus its refund ledger, 0 if not taken).
 */
static inline __attribute__((always_inline)) int
admit_finish(shl_t *h, const struct shl_local *l, const struct shl_pool_local *pl,
	     struct shl_pool_rt *rt, int p, int model, int64_t units, int batch, shl_ticket *t,
	     shl_refusal *why, int64_t now, uint64_t need_i, uint64_t need_o, uint64_t f0,
	     uint64_t f1, uint64_t f2)
{
	/* 3. reserve the worst-case spend (units) against the cap. */
	uint32_t month = shl__month(h, now), charged = month;
	struct shl_pslot *ps = shl__pslot(h);
	if (shl_unlikely(!shl__lease_take(h, l, ps, month, units))) {
		int64_t r = lease_reserve(h, l, ps, month, units);
		if (r < 0)
			return refuse_spend(h, l, pl, rt, why, p, month, units, (int)r, need_i,
					    need_o, f0, f1, f2);
		charged = (uint32_t)r;
	}

	if (shl_likely(ps != NULL))
		shl__padd(&ps->pools[p].cnt[SHL_PS_ADMITTED], 1);
	else
		/* relaxed: a statistic. */
		atomic_fetch_add_explicit(&rt->admitted, 1, memory_order_relaxed);
	ticket_fill(t, l, pl, p, model, units, batch, charged, now, need_i, need_o, f0, f1, f2);
	return 0;
}

/*
 * The common case (OTPM in "actual" mode, some input): steps 1 and 2
 * fused.  OTPM is only checked (a bucket in debt refuses); RPM and ITPM
 * are checked from one read of their words and taken by one 8-byte CAS
 * each, by the rule of shl__bucket_take_at on each word (ledger read
 * first, mark = new tat + ledger).  Anything but a first attempt that goes
 * through (a refusal, a lost race, RPM taken and ITPM's CAS lost)
 * continues in fused_slow, which reports a refusal with the longest wait
 * of all three words, as the read-only pass does.
 */
static inline __attribute__((always_inline)) int
fused(shl_t *h, const struct shl_local *l, const struct shl_pool_local *pl,
      struct shl_pool_rt *rt, int p, int model, int64_t units, int batch, shl_ticket *t,
      shl_refusal *why, int64_t now, uint64_t need_i, const uint64_t tol[])
{
	const uint64_t n = (uint64_t)now;
	struct shl_slack *sl = &h->seg->pext[p].slack;
	const uint64_t c0 = pl->interval[SHL_DIM_RPM]; /* need[RPM] is 1 */
	const uint64_t c1 = need_i * pl->interval[SHL_DIM_ITPM];
	/* acquire: the ledgers are read before the words they mark, and pair
	 * with the refunds' cmpxchg16b, as in shl__bucket_take_at (bucket.c). */
	const uint64_t r0 = atomic_load_explicit(&rt->bkt[0].refunded, memory_order_acquire);
	const uint64_t r1 = atomic_load_explicit(&rt->bkt[1].refunded, memory_order_acquire);
	/* relaxed: hints; the CAS decides (bucket.c). */
	uint64_t t2 = atomic_load_explicit(&rt->bkt[SHL_DIM_OTPM].tat, memory_order_relaxed);
	uint64_t o0 = atomic_load_explicit(&rt->bkt[0].tat, memory_order_relaxed);
	uint64_t o1 = atomic_load_explicit(&rt->bkt[1].tat, memory_order_relaxed);
	uint64_t n0 = shl__gcra_next(o0, n, c0), n1 = shl__gcra_next(o1, n, c1);
	uint64_t f[2]; /* set by fused_slow (zeroed there, off the hot path) */
	int r;
	if (shl_unlikely((t2 > n && t2 - n > tol[SHL_DIM_OTPM]) || n0 - n > tol[SHL_DIM_RPM] ||
			 n1 - n > tol[SHL_DIM_ITPM] ||
			 /* relaxed/relaxed: the word publishes nothing (bucket.c). */
			 !atomic_compare_exchange_strong_explicit(&rt->bkt[0].tat, &o0, n0,
								  memory_order_relaxed,
								  memory_order_relaxed))) {
		r = fused_slow(rt, sl, why, p, pl, now, need_i, tol, 0, 0, f);
		goto slow;
	}
	/* The ITPM take's slack, noted before its CAS (bucket.c, "Slack");
	 * release: pairs with the acquire load of tat in shl__bucket_refund. */
	shl__slack_note(sl, n, (o1 > n ? o1 : n) - n, r1, tol[SHL_DIM_ITPM] - c1, n);
	shl__release_fence();
	/* relaxed/relaxed: as above. */
	if (shl_unlikely(!atomic_compare_exchange_strong_explicit(&rt->bkt[1].tat, &o1, n1,
								   memory_order_relaxed,
								   memory_order_relaxed))) {
		r = fused_slow(rt, sl, why, p, pl, now, need_i, tol, 1, n0 + r0, f);
		goto slow;
	}
	return admit_finish(h, l, pl, rt, p, model, units, batch, t, why, now, need_i, 0, n0 + r0,
			    n1 + r1, 0);
slow:
	if (r != 0)
		return r;
	return admit_finish(h, l, pl, rt, p, model, units, batch, t, why, now, need_i, 0, f[0],
			    f[1], 0);
}

/*
 * Multi-host mode (cluster.c): the general path, with the cost also taken
 * out of the host's credit of leased units, all or nothing.  Too little
 * credit grants some at the fallback share when no agent or Redis is there
 * and takes again; else it records the demand for the agent and refuses
 * with the agent's period as the wait.  Off the single-host path.
 */
static __attribute__((noinline)) int
cluster_admit(shl_t *h, const struct shl_local *l, const struct shl_pool_local *pl,
	      struct shl_pool_rt *rt, int p, int model, int64_t units, int batch, shl_ticket *t,
	      shl_refusal *why, int64_t now, const uint64_t need[SHL_NBUCKETS], const uint64_t tol[])
{
	uint64_t cost_ns[SHL_NBUCKETS];
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		cost_ns[d] = need[d] * pl->interval[d];
		/* A lease holds at most V of a bucket (cluster.c). */
		if (need[d] != 0 && cost_ns[d] > shl__cluster_validity(pl, d))
			return refuse(rt, why, d, p, 0, need[d],
				      shl__cluster_validity(pl, d) / pl->interval[d], -E2BIG);
	}
	int64_t wmax;
	int wdim = waits(rt, (uint64_t)now, cost_ns, tol, &wmax);
	if (wdim >= 0) /* the local bucket refuses: no credit is touched */
		return refuse(rt, why, wdim, p, wmax, need[wdim], pl->burst[wdim], -EAGAIN);
	for (int attempt = 0;; attempt++) {
		int sd = shl__cluster_take(h, p, cost_ns);
		if (sd < 0)
			break;
		if (attempt >= SHL_NBUCKETS || !shl__cluster_short(h, l, p, sd, cost_ns, now))
			return refuse(rt, why, sd, p, shl__cluster_wait(h), need[sd], pl->burst[sd],
				      -EAGAIN);
	}
	uint64_t full_at[SHL_NBUCKETS] = {0, 0, 0};
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		if (need[d] == 0)
			continue;
		int64_t w = shl__bucket_take_at(&rt->bkt[d], now, cost_ns[d], tol[d], &full_at[d],
						slack_for(&h->seg->pext[p].slack, d), now);
		if (w > 0) {
			rollback(rt, &h->seg->pext[p].slack, d, cost_ns, full_at);
			shl__cluster_untake(h, p, cost_ns);
			return refuse(rt, why, d, p, w, need[d], pl->burst[d], -EAGAIN);
		}
	}
	return admit_finish(h, l, pl, rt, p, model, units, batch, t, why, now, need[1], need[2],
			    full_at[0], full_at[1], full_at[2]);
}

/*
 * Multi-host mode's common case (the fused path's: OTPM in "actual" mode,
 * some input, nothing kept free): the credit first, one atomic subtraction
 * each for RPM and ITPM, then the fused takes; a refusal gives the credit
 * back.  Too little credit goes to cluster_admit, which knows what to do.
 */
static __attribute__((noinline)) int
cluster_fused(shl_t *h, const struct shl_local *l, const struct shl_pool_local *pl,
	      struct shl_pool_rt *rt, int p, int model, int64_t units, int batch, shl_ticket *t,
	      shl_refusal *why, int64_t now, uint64_t need_i)
{
	const uint64_t cost_ns[SHL_NBUCKETS] = {pl->interval[SHL_DIM_RPM],
						need_i * pl->interval[SHL_DIM_ITPM], 0};
	if (shl_likely(cost_ns[SHL_DIM_ITPM] <= shl__cluster_validity(pl, SHL_DIM_ITPM) &&
		       shl__cluster_take(h, p, cost_ns) < 0)) {
		int r = fused(h, l, pl, rt, p, model, units, batch, t, why, now, need_i, pl->tol);
		if (r != 0)
			shl__cluster_untake(h, p, cost_ns);
		return r;
	}
	const uint64_t need[SHL_NBUCKETS] = {1, need_i, 0};
	return cluster_admit(h, l, pl, rt, p, model, units, batch, t, why, now, need, pl->tol);
}

/*
 * Routing's min_free: the tolerances that keep `keep` (0..1) of each
 * bucket free.  Returns -1, or the dimension the request can never fit
 * while keeping that much (*cap: the units it may use there).
 */
static __attribute__((noinline)) int kept_tol(const struct shl_pool_local *pl, double keep,
					      const uint64_t need[SHL_NBUCKETS],
					      uint64_t ktol[SHL_NBUCKETS], uint64_t *cap)
{
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		/* Units kept free: keep x burst rounded UP (keeping less than
		 * asked would not be min_free), forgiving the float noise of
		 * products like 0.7 x 10. */
		double x = keep * (double)pl->burst[d];
		uint64_t k = x >= (double)pl->burst[d] ? pl->burst[d] : (uint64_t)x;
		if ((double)k < x - 1e-9 * x)
			k++;
		if (k > pl->burst[d])
			k = pl->burst[d];
		ktol[d] = (pl->burst[d] - k) * pl->interval[d];
		if (need[d] > pl->burst[d] - k) {
			*cap = pl->burst[d] - k;
			return d;
		}
	}
	return -1;
}

/*
 * The admission.  `keep` (0..1) is the fraction of each bucket that must be
 * left free (routing's min_free); shl_try passes the constant 0, which the
 * compiler folds away.
 *
 * Laid out for the common case: the clock is read before the pool's
 * numbers are derived, so little is live across the call; the case of
 * shl_try with OTPM in "actual" mode and some input (need[OTPM] is 0, so
 * its burst check, burst >= 1, cannot refuse; nothing is kept free) goes
 * straight to the fused path; the needs, costs and marks there are
 * scalars and the tolerances are read in place, so none of it goes
 * through the stack; every refusal after the clock is read, and a lost
 * race, is a cold out-of-line call.
 */
static inline __attribute__((always_inline)) int try_impl(shl_t *h, int model, const shl_cost *c,
							  shl_ticket *t, shl_refusal *why,
							  double keep)
{
	if (shl_unlikely(h == NULL || c == NULL || t == NULL))
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (shl_unlikely(l == NULL))
		return -EUCLEAN;
	if (shl_unlikely(h->rdonly))
		return -EACCES;
	/* One unsigned compare also refuses a negative index (nmodels <= 256). */
	if (shl_unlikely((unsigned)model >= l->slot.nmodels))
		return -ESRCH;
	if (shl_unlikely((c->input_tokens | c->cache_write_5m | c->cache_write_1h |
			  c->cache_read | c->max_tokens) > SHL_TOKENS_MAX))
		return -EOVERFLOW;
	/* No check below depends on when the clock is read. */
	const int64_t now = shl__now();
	const uint64_t n = (uint64_t)now;
	const int p = (int)l->slot.models[model].pool;
	const struct shl_pool_local *pl = &l->pools[p];
	struct shl_pool_rt *rt = &h->seg->pools[p];
	/* One register each from here on, not re-derived from p (an empty asm
	 * the compiler cannot see through; no instruction). */
	__asm__("" : "+r"(pl), "+r"(rt));

	/* need[RPM] is 1. */
	const uint32_t flags = pl->flags;
	const uint64_t need_i = c->input_tokens + c->cache_write_5m + c->cache_write_1h +
				((flags & SHL_PF_CACHE_READS) ? c->cache_read : 0);
	/* The worst-case price, for step 3 (counts checked above). */
	const int batch = c->batch;
	const int64_t units = price_raw(l->slot.models[model].price, c->input_tokens,
					c->max_tokens, c->cache_write_5m, c->cache_write_1h,
					c->cache_read, batch);
	/* RPM needs 1 and every burst is at least 1 (config.c): from ITPM. */
	if (shl_unlikely(need_i > pl->burst[SHL_DIM_ITPM]))
		return refuse(rt, why, SHL_DIM_ITPM, p, 0, need_i, pl->burst[SHL_DIM_ITPM], -E2BIG);
	if (shl_likely(!(keep > 0) && !(flags & (SHL_PF_OTPM_RESERVE | SHL_PF_CLUSTER)) &&
		       need_i != 0)) {
		/* relaxed: hold_until is raised by CAS in shl_hold; any value is safe. */
		int64_t hold = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
		if (shl_unlikely(hold > now))
			return refuse(rt, why, SHL_DIM_HOLD, p, hold - now, 0, 0, -EAGAIN);
		return fused(h, l, pl, rt, p, model, units, batch, t, why, now, need_i, pl->tol);
	}
	const uint64_t need_o = (flags & SHL_PF_OTPM_RESERVE) ? c->max_tokens : 0;
	if (shl_unlikely(need_o > pl->burst[SHL_DIM_OTPM]))
		return refuse(rt, why, SHL_DIM_OTPM, p, 0, need_o, pl->burst[SHL_DIM_OTPM], -E2BIG);

	const uint64_t need[SHL_NBUCKETS] = {1, need_i, need_o};
	const uint64_t *tol = pl->tol;
	uint64_t ktol[SHL_NBUCKETS], kcap;
	if (keep > 0) {
		int d = kept_tol(pl, keep, need, ktol, &kcap);
		if (d >= 0)
			return refuse(rt, why, d, p, 0, need[d], kcap, -E2BIG);
		tol = ktol;
	}

	/* relaxed: hold_until is raised by CAS in shl_hold; any value is safe. */
	int64_t hold = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
	if (shl_unlikely(hold > now))
		return refuse(rt, why, SHL_DIM_HOLD, p, hold - now, 0, 0, -EAGAIN);

	if (shl_unlikely(flags & SHL_PF_CLUSTER)) {
		/* Multi-host mode, off the single-host fast test above. */
		if (!(keep > 0) && need_i != 0 && need_o == 0)
			return cluster_fused(h, l, pl, rt, p, model, units, batch, t, why, now, need_i);
		return cluster_admit(h, l, pl, rt, p, model, units, batch, t, why, now, need, tol);
	}
	if (shl_likely(need_i != 0 && need_o == 0))
		return fused(h, l, pl, rt, p, model, units, batch, t, why, now, need_i, tol);
	uint64_t cost_ns[SHL_NBUCKETS], full_at[SHL_NBUCKETS] = {0, 0, 0};
	/* 1. read-only pass: the exact wait of each dimension. */
	for (int d = 0; d < SHL_NBUCKETS; d++)
		cost_ns[d] = need[d] * pl->interval[d]; /* <= tol <= 2^62 */
	int64_t wmax;
	int wdim = waits(rt, n, cost_ns, tol, &wmax);
	if (wdim >= 0)
		return refuse(rt, why, wdim, p, wmax, need[wdim], pl->burst[wdim], -EAGAIN);

	/* 2. take each bucket; give back on a lost race. */
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		if (need[d] == 0)
			continue; /* OTPM in "actual" mode: checked above, taken at settle */
		int64_t w = shl__bucket_take_at(&rt->bkt[d], now, cost_ns[d], tol[d], &full_at[d],
						slack_for(&h->seg->pext[p].slack, d), now);
		if (shl_unlikely(w > 0)) {
			rollback(rt, &h->seg->pext[p].slack, d, cost_ns, full_at);
			return refuse(rt, why, d, p, w, need[d], pl->burst[d], -EAGAIN);
		}
	}
	return admit_finish(h, l, pl, rt, p, model, units, batch, t, why, now, need_i, need_o,
			    full_at[0], full_at[1], full_at[2]);
}

int shl_try(shl_t *h, int model, const shl_cost *c, shl_ticket *t, shl_refusal *why)
{
	return try_impl(h, model, c, t, why, 0.0);
}

static void sleep_until(int64_t wake)
{
	struct timespec ts = {.tv_sec = wake / 1000000000LL, .tv_nsec = wake % 1000000000LL};
	if (shl__clock_boot == NULL)
		while (clock_nanosleep(CLOCK_BOOTTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
}

static struct shl_pool_rt *ticket_pool(shl_t *h, const struct shl_local *l, const shl_ticket *t,
				       const struct shl_pool_local **pl);

/* ------------------------------------------------------------------ */
/* Fair waiting: a place in line.                                      */
/* ------------------------------------------------------------------ */

/* Restarts of a reservation whose words moved under it: each one is
 * another taker's CAS that landed; only a hostile writer gets this far. */
#define SHL_RESERVE_TRIES 10000

/*
 * A reservation (shl_reserve; shl_acquire and shl_route wait through it).
 * GCRA expresses one as a take at a release time rel >= now (bucket.c,
 * "Reservations"):
 *
 *   1. a read-only pass finds the release: per bucket, with its tat, the
 *      cost c and the tolerance tol, r = max(now, tat + c - tol); rel is
 *      the latest of them and of the pool's hold (a 429's retry-after).
 *      Later than the deadline: -ETIMEDOUT, nothing taken, why->wait_ns
 *      = rel - now;
 *   2. raise the pool's horizon to rel (no refund then gives back room
 *      that lies before it by that rule), then take every bucket AT rel,
 *      tat' = max(tat, rel) + c (shl__bucket_take_at for the instant rel;
 *      ITPM's take noted in the slack slots for rel), so
 *      that every dimension is taken for the same instant and none holds
 *      capacity it does not use.  A word that moved so that it needs a
 *      later release (a lost race), or a hold that arrived and covers rel:
 *      give back what was taken, by the refund rule, and start again at 1;
 * The worst-case spend is reserved first, now, as shl_try reserves it (a
 * refusal, -EDQUOT, then takes nothing from the buckets: a take at a
 * future release also moves a bucket's word up to that release, which no
 * refund gives back).  Step 2 then only fails for a hostile writer (given
 * up after SHL_RESERVE_TRIES: the spend goes back, -EAGAIN).
 * The ticket's admitted_at is rel.  OTPM in "actual" mode takes nothing
 * (need 0): the release only waits for its bucket to be out of debt.
 *
 * Requests queue in the order of their step 2: a later one finds the
 * words pushed past the earlier one's release, so in every bucket both
 * need it is released after it (the words take no notice of size: a large
 * request is never overtaken by small ones).
 */
/* A release past the deadline: -ETIMEDOUT, why->wait_ns the whole wait. */
static int late(struct shl_pool_rt *rt, shl_refusal *why, int dim, int p, uint64_t wait,
		const uint64_t need[SHL_NBUCKETS], const uint64_t burst[SHL_NBUCKETS])
{
	int b = dim >= 0 && dim < SHL_NBUCKETS;
	return refuse(rt, why, dim, p, wait > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)wait,
		      b ? need[dim] : 0, b ? burst[dim] : 0, -ETIMEDOUT);
}


static int reserve_impl(shl_t *h, int model, const shl_cost *c, int64_t max_wait, shl_ticket *t,
			shl_refusal *why, double keep)
{
	if (h == NULL || c == NULL || t == NULL)
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	if (h->rdonly)
		return -EACCES;
	if ((unsigned)model >= l->slot.nmodels)
		return -ESRCH;
	if ((c->input_tokens | c->cache_write_5m | c->cache_write_1h | c->cache_read |
	     c->max_tokens) > SHL_TOKENS_MAX)
		return -EOVERFLOW;
	const int64_t now = shl__now();
	const uint64_t n = now < 0 ? 0 : (uint64_t)now;
	const int p = (int)l->slot.models[model].pool;
	const struct shl_pool_local *pl = &l->pools[p];
	struct shl_pool_rt *rt = &h->seg->pools[p];
	struct shl_slack *sl = &h->seg->pext[p].slack;
	const uint32_t flags = pl->flags;
	const uint64_t need_i = c->input_tokens + c->cache_write_5m + c->cache_write_1h +
				((flags & SHL_PF_CACHE_READS) ? c->cache_read : 0);
	const uint64_t need_o = (flags & SHL_PF_OTPM_RESERVE) ? c->max_tokens : 0;
	const int64_t units = price_raw(l->slot.models[model].price, c->input_tokens,
					c->max_tokens, c->cache_write_5m, c->cache_write_1h,
					c->cache_read, c->batch);
	const uint64_t need[SHL_NBUCKETS] = {1, need_i, need_o};
	if (flags & SHL_PF_CLUSTER) {
		/* Multi-host mode has no line: a take needs leased credit now
		 * (cluster.c).  Admit now, or say when to ask again. */
		shl_refusal w;
		int r = try_impl(h, model, c, t, &w, keep);
		if (r == -EAGAIN && max_wait >= 0 && w.wait_ns > max_wait)
			r = -ETIMEDOUT;
		if (why)
			*why = w;
		return r;
	}
	if (need_i > pl->burst[SHL_DIM_ITPM])
		return refuse(rt, why, SHL_DIM_ITPM, p, 0, need_i, pl->burst[SHL_DIM_ITPM], -E2BIG);
	if (need_o > pl->burst[SHL_DIM_OTPM])
		return refuse(rt, why, SHL_DIM_OTPM, p, 0, need_o, pl->burst[SHL_DIM_OTPM], -E2BIG);
	const uint64_t *tol = pl->tol;
	uint64_t ktol[SHL_NBUCKETS], kcap, cost_ns[SHL_NBUCKETS], mark[SHL_NBUCKETS];
	if (keep > 0) {
		int d = kept_tol(pl, keep, need, ktol, &kcap);
		if (d >= 0)
			return refuse(rt, why, d, p, 0, need[d], kcap, -E2BIG);
		tol = ktol;
	}
	for (int d = 0; d < SHL_NBUCKETS; d++)
		cost_ns[d] = need[d] * pl->interval[d]; /* <= tol <= 2^62 */
	const uint64_t deadline = max_wait < 0 ? UINT64_MAX
				  : (uint64_t)max_wait > UINT64_MAX - n ? UINT64_MAX
									: n + (uint64_t)max_wait;
	/* Nothing is taken for a release past the deadline: a first look. */
	{
		int64_t wmax;
		int wdim = waits(rt, n, cost_ns, tol, &wmax);
		uint64_t rel = n + (uint64_t)wmax; /* both < 2^63 */
		/* relaxed: hold_until is raised by CAS in shl_hold; any value is safe. */
		int64_t hold = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
		if (hold > 0 && (uint64_t)hold > rel) {
			rel = (uint64_t)hold;
			wdim = SHL_DIM_HOLD;
		}
		if (rel > deadline)
			return late(rt, why, wdim, p, rel - n, need, pl->burst);
	}
	/* The spend, now (see above). */
	uint32_t month = shl__month(h, now), charged = month;
	struct shl_pslot *ps = shl__pslot(h);
	if (!shl__lease_take(h, l, ps, month, units)) {
		int64_t r = lease_reserve(h, l, ps, month, units);
		if (r < 0) {
			int64_t cur = shl__spend_read(&h->seg->spendl, month);
			return refuse(rt, why, SHL_DIM_SPEND, p, 0, (uint64_t)units + (uint64_t)cur,
				      (uint64_t)l->spend_cap, (int)r);
		}
		charged = (uint32_t)r;
	}
	for (int tries = 0; tries < SHL_RESERVE_TRIES; tries++) {
		/* 1. the release, from the words and the clock as they are now:
		 * a fresh reading each time, or a retry would take at an instant
		 * further and further in the past, where the refill since is not
		 * seen, and lose every race to callers taking at the present. */
		const int64_t now1 = shl__now();
		const uint64_t n1 = now1 < 0 ? 0 : (uint64_t)now1;
		int64_t wmax;
		int wdim = waits(rt, n1, cost_ns, tol, &wmax);
		uint64_t rel = n1 + (uint64_t)wmax; /* both < 2^63 */
		/* relaxed: hold_until is raised by CAS in shl_hold; any value is safe. */
		int64_t hold = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
		if (hold > 0 && (uint64_t)hold > rel) {
			rel = (uint64_t)hold;
			wdim = SHL_DIM_HOLD;
		}
		/* The deadline from this reading too: a request that may go
		 * now (rel == n1) is never late, whatever max_wait. */
		const uint64_t dl1 = max_wait < 0 ? UINT64_MAX
				     : (uint64_t)max_wait > UINT64_MAX - n1 ? UINT64_MAX
									     : n1 + (uint64_t)max_wait;
		if (rel > dl1 || rel > (uint64_t)INT64_MAX) {
			/* The words moved since the first look: give the spend back. */
			shl__lease_adjust(h, l, ps, month, charged, -units);
			return late(rt, why, wdim, p, rel - n1, need, pl->burst);
		}
		/* 2. the horizon, then every bucket at rel */
		if (rel > n1) {
			shl__horizon_raise(&rt->horizon, rel);
			/* release: the raise above is ordered before the takes'
			 * CAS below; pairs with the acquire load of tat in
			 * shl__bucket_refund (bucket.c, "Reservations"). */
			atomic_thread_fence(memory_order_release);
		}
		int d, lost = 0;
		for (d = 0; d < SHL_NBUCKETS && !lost; d++) {
			mark[d] = 0;
			if (need[d] == 0) {
				/* relaxed: a check, as in waits(); nothing is taken. */
				uint64_t tt = atomic_load_explicit(&rt->bkt[d].tat, memory_order_relaxed);
				lost = tt > rel && tt - rel > tol[d];
			} else {
				lost = shl__bucket_take_at(&rt->bkt[d], (int64_t)rel, cost_ns[d], tol[d],
							   &mark[d], slack_for(sl, d), now1) != 0;
			}
			if (lost)
				break;
		}
		if (!lost) {
			/* relaxed: as above.  A hold that arrived meanwhile and
			 * covers the release: start again behind it. */
			hold = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
			lost = hold > 0 && (uint64_t)hold > rel;
		}
		if (lost) {
			rollback(rt, sl, d, cost_ns, mark); /* the buckets before d */
			continue;
		}
		if (ps != NULL)
			shl__padd(&ps->pools[p].cnt[SHL_PS_ADMITTED], 1);
		else
			/* relaxed: a statistic. */
			atomic_fetch_add_explicit(&rt->admitted, 1, memory_order_relaxed);
		if (rel > n1)
			/* relaxed: a statistic. */
			atomic_fetch_add_explicit(&rt->waited, 1, memory_order_relaxed);
		ticket_fill(t, l, pl, p, model, units, c->batch, charged, (int64_t)rel, need_i, need_o,
			    mark[0], mark[1], mark[2]);
		return 0;
	}
	shl__lease_adjust(h, l, ps, month, charged, -units);
	return refuse(rt, why, SHL_DIM_NONE, p, 1, 0, 0, -EAGAIN); /* contended beyond reason */
}

int shl_reserve(shl_t *h, int model, const shl_cost *c, int64_t max_wait_ns, shl_ticket *t,
		shl_refusal *why)
{
	return reserve_impl(h, model, c, max_wait_ns, t, why, 0.0);
}

static void refusal(shl_refusal *why, int dim, int pool, int64_t wait, uint64_t need, uint64_t cap)
{
	if (why) {
		why->dim = dim;
		why->pool = pool;
		why->wait_ns = wait;
		why->need = need;
		why->capacity = cap;
	}
}

/*
 * What may have changed while a reserved request waited, for it to go at
 * `at` (now, or its release): the month marked exhausted (-EDQUOT), or a
 * hold of its pool that covers `at` (-EAGAIN).  Not a refusal of an
 * admission: the pool's `refused` counter is left alone.
 */
static int start_check(shl_t *h, const struct shl_local *l, const shl_ticket *t,
		       shl_refusal *why, int64_t now, int64_t at)
{
	uint32_t month = shl__month(h, now);
	/* relaxed: the advisory mark of shl_spend_exhaust, written relaxed;
	 * it publishes nothing (spend.c). */
	if (atomic_load_explicit(&h->seg->spendl.exhausted, memory_order_relaxed) == month + 1) {
		int64_t cur = shl__spend_read(&h->seg->spendl, month);
		refusal(why, SHL_DIM_SPEND, t->pool, 0, (uint64_t)cur, (uint64_t)l->spend_cap);
		return -EDQUOT;
	}
	const struct shl_pool_local *pl = NULL;
	struct shl_pool_rt *rt = ticket_pool(h, l, t, &pl);
	if (rt != NULL) {
		/* relaxed: hold_until is raised by CAS in shl_hold; any value is safe. */
		int64_t hold = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
		if (hold > at) {
			refusal(why, SHL_DIM_HOLD, t->pool, hold - now, 0, 0);
			return -EAGAIN;
		}
	}
	return 0;
}

int shl_start(shl_t *h, const shl_ticket *t, shl_refusal *why)
{
	if (h == NULL || t == NULL)
		return -EINVAL;
	if (t->state != 1)
		return -EALREADY;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	int64_t now = shl__now();
	int r = start_check(h, l, t, why, now, now);
	if (r != 0)
		return r;
	if (now < t->admitted_at) {
		refusal(why, SHL_DIM_NONE, t->pool, t->admitted_at - now, 0, 0);
		return -EAGAIN;
	}
	return 0;
}

/* Sleep until an open ticket's release (clock_nanosleep on the buckets'
 * clock, so the release has come when it returns), then check what may
 * have changed meanwhile, at the release; a refusal cancels the ticket. */
static int wait_start(shl_t *h, shl_ticket *t, shl_refusal *why)
{
	if (t->admitted_at > shl__now())
		sleep_until(t->admitted_at); /* until the computed instant; no spinning */
	struct shl_local *l = shl__local(h);
	int r = l ? start_check(h, l, t, why, shl__now(), t->admitted_at) : -EUCLEAN;
	if (r != 0)
		shl_cancel(h, t);
	return r;
}

/*
 * Routing: try_impl on each model of the list, in order.  The models of a
 * list differ in pool (rates) and in price (spend), so a refusal by one
 * says nothing of the next, except two: an error that is not a refusal
 * (-EINVAL, -EUCLEAN, -EACCES, -EOVERFLOW) ends the call, and so does a
 * spend refusal while the month is marked exhausted (shl_spend_exhaust:
 * the server refuses every model until the month rolls over).  Otherwise,
 * when no model admits, the result of one pass is, in this order:
 *   - a reservation on the model whose wait is shortest (ties: the earlier
 *     preference) if it is released before the deadline; then a sleep
 *     until its release and shl_start's checks (a hold that arrived
 *     meanwhile: cancel, and pass again); else -ETIMEDOUT (also at once
 *     for a timeout of 0), `why` from that shortest wait;
 *   - -EDQUOT if any model fits its pool but not the spend cap left (its
 *     worst-case price is too high; a cheaper model may still fit later
 *     calls): `why` from the first such model in the list;
 *   - -E2BIG if any model names a pool the request never fits: `why`
 *     from one of them;
 *   - -ESRCH if no entry names a model (`why` untouched).
 */
int shl_route(shl_t *h, const int *models, int n, const shl_cost *c,
	      const shl_route_policy *pol, shl_ticket *t, shl_refusal *why)
{
	if (h == NULL || models == NULL || n <= 0 || c == NULL || t == NULL)
		return -EINVAL;
	double keep = pol ? pol->min_free : 0.0;
	int64_t timeout = pol ? pol->timeout_ns : 0;
	if (!(keep >= 0.0 && keep <= 1.0))
		return -EINVAL;
	shl_refusal best, spend, r1;
	int64_t deadline = deadline_of(shl__now(), timeout);
	for (;;) {
		int fits = 0, never = 0, dquot = 0, bi = -1;
		best.wait_ns = INT64_MAX;
		for (int i = 0; i < n; i++) {
			int r = try_impl(h, models[i], c, t, &r1, keep);
			if (r == 0)
				return i;
			if (r == -ESRCH)
				continue; /* names no model entry (r1 was not written) */
			if (r == -E2BIG) {
				never = 1;
				if (!fits && why)
					*why = r1;
				continue;
			}
			if (r == -EDQUOT) {
				/* relaxed: the advisory mark of shl_spend_exhaust, written
				 * relaxed; it publishes nothing (spend.c). */
				uint32_t ex = atomic_load_explicit(&h->seg->spendl.exhausted,
								   memory_order_relaxed);
				if (ex == shl__month(h, shl__now()) + 1) {
					if (why)
						*why = r1;
					return -EDQUOT; /* the server refuses every model */
				}
				if (!dquot)
					spend = r1; /* the first model refused on spend */
				dquot = 1;
				continue; /* its price does not fit: a cheaper model may */
			}
			if (r != -EAGAIN)
				return r; /* hard errors: no model can help */
			fits = 1;
			if (r1.wait_ns < best.wait_ns) {
				best = r1;
				bi = i;
			}
		}
		if (!fits) {
			if (dquot && why)
				*why = spend;
			return dquot ? -EDQUOT : never ? -E2BIG : -ESRCH;
		}
		if (why)
			*why = best;
		int64_t now = shl__now();
		int64_t wake = best.wait_ns > INT64_MAX - now ? INT64_MAX : now + best.wait_ns;
		if (timeout == 0 || wake > deadline)
			return -ETIMEDOUT;
		int r = reserve_impl(h, models[bi], c, deadline == INT64_MAX ? -1 : deadline - now, t,
				     &r1, keep);
		if (r == 0) {
			r = wait_start(h, t, &r1);
			if (r == 0)
				return bi;
		}
		/* A hold arrived, or the spend moved, or a lost race: pass
		 * again (the pass says -EDQUOT if the month is now exhausted). */
		if (r == -EAGAIN || r == -EDQUOT)
			continue;
		if (why)
			*why = r1;
		return r; /* -ETIMEDOUT: the release moved past the deadline; hard errors */
	}
}

/*
 * A reservation, a sleep until its release, and shl_start's checks.  A
 * hold that arrived while it waited and covers its release: cancel, and
 * reserve again behind the hold (within the deadline).
 */
int shl_acquire(shl_t *h, int model, const shl_cost *c, int64_t timeout_ns, shl_ticket *t,
		shl_refusal *why)
{
	shl_refusal local;
	if (why == NULL)
		why = &local;
	int64_t deadline = deadline_of(shl__now(), timeout_ns);
	for (;;) {
		/* relaxed: a test switch (fault.c), never set outside tests. */
		if (shl_unlikely(atomic_load_explicit(&shl__acquire_count_on, memory_order_relaxed)))
			shl__acquire_attempt();
		int64_t now = shl__now();
		int64_t left = deadline == INT64_MAX ? -1 : deadline > now ? deadline - now : 0;
		int r = reserve_impl(h, model, c, left, t, why, 0.0);
		if (r == -EAGAIN && why->wait_ns > 0 && (left < 0 || why->wait_ns <= left)) {
			sleep_until(now + why->wait_ns); /* multi-host: ask again then */
			continue;
		}
		if (r != 0)
			return r;
		r = wait_start(h, t, why);
		if (r != -EAGAIN)
			return r;
	}
}

/* The pool of an open ticket if it is still the pool it was admitted to
 * (an apply may have removed it), else NULL. */
static struct shl_pool_rt *ticket_pool(shl_t *h, const struct shl_local *l, const shl_ticket *t,
				       const struct shl_pool_local **pl)
{
	if (t->pool < 0 || (unsigned)t->pool >= l->slot.npools)
		return NULL;
	const struct shl_pool_cfg *pc = &l->slot.pools[t->pool];
	if (!(pc->flags & SHL_PF_USED) || l->pools[t->pool].name_hash != t->pad)
		return NULL;
	*pl = &l->pools[t->pool];
	return &h->seg->pools[t->pool];
}

/* Whether this ticket's bucket refunds count: only if it is of the live
 * generation; a ticket of an earlier one gives nothing back to the
 * buckets (see the top). */
static inline int ticket_refunds(const struct shl_local *l, const shl_ticket *t)
{
	return t->generation == l->gen;
}

/* The spend correction of a ticket: a refund (delta < 0) only if its
 * reservation was made after the last spend reset. */
static inline int64_t spend_delta(const struct shl_local *l, const shl_ticket *t, int64_t delta)
{
	return delta < 0 && t->generation < l->slot.spend_epoch ? 0 : delta;
}

/* The last-minute window of our own slot (single writer; the format of
 * shl__window_add, without the CAS). */
static inline void pwin_add(struct shl_pslot_pool *q, int64_t now,
			    const uint64_t add[SHL_NBUCKETS])
{
	uint64_t epoch = (uint64_t)(now < 0 ? 0 : now) / (uint64_t)SHL_WINDOW_SLOT_NS;
	uint64_t tag = (epoch & 0xffff) << SHL_WIN_BITS;
	_Atomic uint64_t *v = q->win[epoch % SHL_WINDOW_SLOTS];
#pragma GCC unroll 3
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		/* x <= SHL_WIN_MASK iff the word's tag is this epoch's, and
		 * then x is its count (w & SHL_WIN_MASK). */
		uint64_t x = atomic_load_explicit(&v[d], memory_order_relaxed) ^ tag;
		uint64_t cnt = x <= SHL_WIN_MASK ? x : 0;
		cnt = cnt + add[d] > SHL_WIN_MASK ? SHL_WIN_MASK : cnt + add[d]; /* add < 2^34 */
		atomic_store_explicit(&v[d], tag | cnt, memory_order_relaxed);
	}
}

/* Inline: a usage equal to the estimate (the common ITPM case) costs one
 * compare and no call.  Returns what it gave back (ns of the word). */
static inline __attribute__((always_inline)) uint64_t adjust(struct shl_bkt *b, int64_t now,
							     uint64_t had, uint64_t real,
							     uint64_t iv, int refunds,
							     uint64_t mark,
							     _Atomic uint64_t *horizon,
							     struct shl_slack *sl)
{
	if (real > had)
		shl__bucket_charge(&b->tat, now, shl__mul_sat(real - had, iv));
	else if (shl_unlikely(had > real) && refunds)
		return shl__bucket_refund(b, SHL_NOW_FRESH, shl__mul_sat(had - real, iv), mark,
					  horizon, sl);
	return 0;
}

/* shl_settle, and what it gave back to each bucket of the ticket's pool
 * (given: NULL, or 3 words it sets; shl__settle_given). */
static inline __attribute__((always_inline)) int settle(shl_t *h, shl_ticket *t,
							const shl_usage *u, uint64_t *given)
{
	if (h == NULL || t == NULL || u == NULL)
		return -EINVAL;
	if (t->state != 1)
		return -EALREADY;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	if (h->rdonly)
		return -EACCES;
	int64_t now = shl__now();
	uint64_t in = u->input_tokens, out = u->output_tokens;
	uint64_t cw5 = u->cache_write_5m, cw1 = u->cache_write_1h, rd = u->cache_read;
	if (shl_unlikely((in | out | cw5 | cw1 | rd) > SHL_TOKENS_MAX)) {
		in = clampt(in);
		out = clampt(out);
		cw5 = clampt(cw5);
		cw1 = clampt(cw1);
		rd = clampt(rd);
	}
	const struct shl_pool_local *pl = NULL;
	struct shl_pool_rt *rt = ticket_pool(h, l, t, &pl);
	const int64_t *price = NULL;
	if (t->model >= 0 && (unsigned)t->model < l->slot.nmodels &&
	    l->slot.models[t->model].pool == (uint32_t)t->pool)
		price = l->slot.models[t->model].price;
	else if (rt != NULL)
		price = l->slot.pools[t->pool].price;
	/* Counts clamped above. */
	int64_t cost = price ? price_raw(price, in, out, cw5, cw1, rd, (int)t->batch) : t->spend;
	struct shl_pslot *ps = shl__pslot(h);
	if (rt != NULL) {
		uint64_t itpm = in + cw5 + cw1 + ((pl->flags & SHL_PF_CACHE_READS) ? rd : 0);
		const int rf = ticket_refunds(l, t);
		uint64_t gi = adjust(&rt->bkt[SHL_DIM_ITPM], now, t->itpm, itpm,
				     pl->interval[SHL_DIM_ITPM], rf, t->full_at[SHL_DIM_ITPM],
				     &rt->horizon, &h->seg->pext[t->pool].slack);
		uint64_t go = adjust(&rt->bkt[SHL_DIM_OTPM], now, t->otpm, out,
				     pl->interval[SHL_DIM_OTPM], rf, t->full_at[SHL_DIM_OTPM],
				     &rt->horizon, NULL);
		if (given != NULL) {
			given[SHL_DIM_ITPM] = gi;
			given[SHL_DIM_OTPM] = go;
		}
		uint64_t add[SHL_NBUCKETS] = {1, itpm, out};
		if (shl_likely(ps != NULL)) {
			/* Our own slot: plain adds, no lock prefix (pslot.c). */
			struct shl_pslot_pool *q = &ps->pools[t->pool];
			shl__padd(&q->cnt[SHL_PS_TOKENS_IN], in);
			shl__padd(&q->cnt[SHL_PS_TOKENS_OUT], out);
			shl__padd(&q->cnt[SHL_PS_CACHE_READ], rd);
			shl__padd(&q->cnt[SHL_PS_CACHE_WRITE], cw5 + cw1);
			shl__padd(&q->cnt[SHL_PS_SPEND], (uint64_t)cost);
			shl__padd(&q->cnt[SHL_PS_SETTLED], 1);
			pwin_add(q, now, add);
		} else {
			/* relaxed: statistics.  Zero adds are skipped: each RMW
			 * costs a locked instruction on a shared line. */
			if (in)
				atomic_fetch_add_explicit(&rt->tokens_in, in, memory_order_relaxed);
			if (out)
				atomic_fetch_add_explicit(&rt->tokens_out, out, memory_order_relaxed);
			if (rd)
				atomic_fetch_add_explicit(&rt->cache_read, rd, memory_order_relaxed);
			if (cw5 + cw1)
				atomic_fetch_add_explicit(&rt->cache_write, cw5 + cw1,
							  memory_order_relaxed);
			if (cost)
				atomic_fetch_add_explicit(&rt->spend, cost, memory_order_relaxed);
			atomic_fetch_add_explicit(&rt->settled, 1, memory_order_relaxed);
			shl__window_add(rt, now, add);
		}
	}
	shl__lease_adjust(h, l, ps, shl__month(h, now), t->month,
			  spend_delta(l, t, cost - t->spend));
	if (ps != NULL)
		shl__padd((_Atomic uint64_t *)&ps->lifetime, (uint64_t)cost);
	else if (cost)
		/* relaxed: a statistic. */
		atomic_fetch_add_explicit(&h->seg->spendl.lifetime, cost, memory_order_relaxed);
	t->state = 2;
	return 0;
}

int shl_settle(shl_t *h, shl_ticket *t, const shl_usage *u)
{
	return settle(h, t, u, NULL);
}

int shl__settle_given(shl_t *h, shl_ticket *t, const shl_usage *u, uint64_t given[SHL_NBUCKETS])
{
	for (int d = 0; d < SHL_NBUCKETS; d++)
		given[d] = 0;
	return settle(h, t, u, given);
}

int shl_cancel(shl_t *h, shl_ticket *t)
{
	uint64_t given[SHL_NBUCKETS];
	return shl__cancel_given(h, t, given);
}

void shl__given_out(const uint64_t given[SHL_NBUCKETS], int64_t given_ns[3])
{
	for (int d = 0; d < SHL_NBUCKETS; d++)
		given_ns[d] = given[d] > INT64_MAX ? INT64_MAX : (int64_t)given[d];
}

int shl_settle_given(shl_t *h, shl_ticket *t, const shl_usage *u, int64_t given_ns[3])
{
	uint64_t given[SHL_NBUCKETS];
	if (given_ns == NULL)
		return -EINVAL;
	int r = shl__settle_given(h, t, u, given);
	shl__given_out(given, given_ns);
	return r;
}

int shl_cancel_given(shl_t *h, shl_ticket *t, int64_t given_ns[3])
{
	uint64_t given[SHL_NBUCKETS];
	if (given_ns == NULL)
		return -EINVAL;
	int r = shl__cancel_given(h, t, given);
	shl__given_out(given, given_ns);
	return r;
}

int shl__cancel_given(shl_t *h, shl_ticket *t, uint64_t given[SHL_NBUCKETS])
{
	for (int d = 0; d < SHL_NBUCKETS; d++)
		given[d] = 0;
	if (h == NULL || t == NULL)
		return -EINVAL;
	if (t->state != 1)
		return -EALREADY;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	if (h->rdonly)
		return -EACCES;
	const struct shl_pool_local *pl = NULL;
	struct shl_pool_rt *rt = ticket_pool(h, l, t, &pl);
	int64_t now = shl__now();
	struct shl_pslot *ps = shl__pslot(h);
	if (rt != NULL) {
		uint64_t had[SHL_NBUCKETS] = {t->rpm, t->itpm, t->otpm};
		for (int d = 0; d < SHL_NBUCKETS && ticket_refunds(l, t); d++)
			given[d] = shl__bucket_refund(&rt->bkt[d], SHL_NOW_FRESH,
						      shl__mul_sat(had[d], pl->interval[d]),
						      t->full_at[d], &rt->horizon,
						      slack_for(&h->seg->pext[t->pool].slack, d));
		if (ps != NULL)
			shl__padd(&ps->pools[t->pool].cnt[SHL_PS_CANCELLED], 1);
		else
			/* relaxed: a statistic. */
			atomic_fetch_add_explicit(&rt->cancelled, 1, memory_order_relaxed);
	}
	shl__lease_adjust(h, l, ps, shl__month(h, now), t->month, spend_delta(l, t, -t->spend));
	t->state = 2;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Feedback from the server.                                           */
/* ------------------------------------------------------------------ */

static int pool_ok(shl_t *h, int pool, struct shl_local **lp)
{
	if (h == NULL)
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	if (h->rdonly)
		return -EACCES;
	if (pool < 0 || (unsigned)pool >= l->slot.npools ||
	    !(l->slot.pools[pool].flags & SHL_PF_USED))
		return -ESRCH;
	*lp = l;
	return 0;
}

int shl__hold(shl_t *h, int pool, int64_t duration_ns, int count_429)
{
	struct shl_local *l;
	int r = pool_ok(h, pool, &l);
	if (r)
		return r;
	if (duration_ns <= 0)
		return 0;
	struct shl_pool_rt *rt = &h->seg->pools[pool];
	int64_t now = shl__now();
	int64_t until = duration_ns > INT64_MAX - now ? INT64_MAX : now + duration_ns;
	/* relaxed: a deadline word read by admissions; it publishes nothing. */
	int64_t old = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
	while (old < until &&
	       !atomic_compare_exchange_weak_explicit(&rt->hold_until, &old, until,
						      memory_order_relaxed, memory_order_relaxed))
		;
	if (count_429)
		/* relaxed: a statistic. */
		atomic_fetch_add_explicit(&rt->server_429, 1, memory_order_relaxed);
	return 0;
}

int shl_hold(shl_t *h, int pool, int64_t duration_ns)
{
	return shl__hold(h, pool, duration_ns, 1);
}

/*
 * A ticket's place in each bucket (shl_ex_place), from its marks: the tat
 * after the take is the mark minus the ledger now (bucket.c; refunds since
 * only make it smaller).  debt = tat before the take - release; edge = tat
 * after - tolerance - release; full = tat after - release.  A ticket of
 * another generation or of a multi-host pool (credit, not these words) has
 * debt 0, edge 0 and full 0 in every bucket it holds units of.
 */
/*
 * Where an open ticket's take ends in each bucket, moved down by every
 * refund since (mark - ledger now: its own line's and any later place's,
 * so never later than the true end): the buckets it takes as a mask, each
 * end in after[], and 1 when the words hold its place (0: another
 * generation, a multi-host pool, not open; after[] is then not set).
 */
static int ticket_ends(shl_t *h, const shl_ticket *t, const struct shl_pool_local **plp,
		       unsigned *taken, uint64_t after[SHL_NBUCKETS])
{
	const uint64_t need[SHL_NBUCKETS] = {t->rpm, t->itpm, t->otpm};
	*taken = 0;
	for (int d = 0; d < SHL_NBUCKETS; d++)
		if (t->full_at[d] != 0 && need[d] != 0)
			*taken |= 1u << d; /* else not taken (OTPM "actual" is only checked) */
	struct shl_local *l = shl__local(h);
	if (l == NULL || t->state != 1 || t->generation != l->gen || t->pool < 0 ||
	    (unsigned)t->pool >= l->slot.npools || (l->pools[t->pool].flags & SHL_PF_CLUSTER))
		return 0;
	*plp = &l->pools[t->pool];
	for (int d = 0; d < SHL_NBUCKETS; d++)
		if (*taken & 1u << d)
			/* acquire: as a take's ledger read (bucket.c). */
			after[d] = t->full_at[d] - atomic_load_explicit(
				&h->seg->pools[t->pool].bkt[d].refunded, memory_order_acquire);
	return 1;
}

void shl__ticket_place(shl_t *h, const shl_ticket *t, shl_place *out)
{
	const uint64_t need[SHL_NBUCKETS] = {t->rpm, t->itpm, t->otpm};
	const struct shl_pool_local *pl = NULL;
	unsigned taken;
	uint64_t after[SHL_NBUCKETS];
	int known = ticket_ends(h, t, &pl, &taken, after);
	uint64_t rel = t->admitted_at < 0 ? 0 : (uint64_t)t->admitted_at;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		out->debt[d] = out->edge[d] = out->full[d] = INT64_MIN;
		if (!(taken & 1u << d))
			continue;
		out->debt[d] = out->edge[d] = out->full[d] = 0;
		if (!known)
			continue;
		uint64_t before = after[d] - shl__mul_sat(need[d], pl->interval[d]);
		/* signed distances from the release: tat words are within 2^62
		 * ns of now */
		int64_t db = (int64_t)(before - rel), e = (int64_t)(after[d] - pl->tol[d] - rel);
		int64_t f = (int64_t)(after[d] - rel);
		out->debt[d] = db > 0 ? db : 0;
		out->edge[d] = e < 0 ? e : 0;
		out->full[d] = f > 0 ? f : 0;
	}
}

int shl_ticket_place(shl_t *h, const shl_ticket *t, shl_place *out)
{
	if (h == NULL || t == NULL || out == NULL || t->state != 1)
		return -EINVAL;
	shl__ticket_place(h, t, out);
	return 0;
}

int64_t shl__ticket_floor(shl_t *h, const shl_ticket *t)
{
	const struct shl_pool_local *pl = NULL;
	unsigned taken;
	uint64_t after[SHL_NBUCKETS];
	if (!ticket_ends(h, t, &pl, &taken, after) || taken == 0)
		return INT64_MAX;
	int64_t floor = INT64_MIN;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		/* within 2^62 ns of now */
		int64_t e = (int64_t)(after[d] - pl->tol[d]);
		if ((taken & 1u << d) && e > floor)
			floor = e;
	}
	return floor;
}

int shl__ticket_advance(shl_t *h, shl_ticket *t, int64_t *release_ns)
{
	int64_t want = *release_ns, now = shl__now();
	if (want < now)
		want = now;
	if (want >= t->admitted_at) {
		*release_ns = t->admitted_at;
		return 0;
	}
	int64_t floor = shl__ticket_floor(h, t);
	if (floor == INT64_MAX) {
		*release_ns = t->admitted_at;
		return -ESTALE;
	}
	if (want < floor)
		want = floor;
	if (want < t->admitted_at)
		t->admitted_at = want;
	*release_ns = t->admitted_at;
	return 0;
}

int shl_follow(shl_t *h, shl_ticket *t, const int64_t given_ns[3], shl_place *place,
	       int64_t *release_ns)
{
	if (h == NULL || t == NULL || given_ns == NULL || place == NULL || release_ns == NULL ||
	    t->state != 1)
		return -EINVAL;
	int64_t was = INT64_MIN, at = INT64_MIN, g[SHL_NBUCKETS];
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		/* >= 0 as the gives are said; capped so that edge - g cannot wrap */
		g[d] = given_ns[d] < 0 ? 0 : given_ns[d] > (INT64_C(1) << 62) ? INT64_C(1) << 62
									: given_ns[d];
		if (place->edge[d] == INT64_MIN)
			continue;
		if (place->edge[d] > was)
			was = place->edge[d];
		if (place->edge[d] - g[d] > at)
			at = place->edge[d] - g[d];
	}
	*release_ns = t->admitted_at;
	/* A bucket set the release (edge 0), else something the gives do not
	 * move did (a hold, the clock at the placing): it stays. */
	int64_t shift = was == 0 ? -at : 0;
	if (shift <= 0)
		return 0;
	int64_t before = t->admitted_at, rel = before - shift;
	int r = shl__ticket_advance(h, t, &rel);
	*release_ns = t->admitted_at;
	if (r != 0)
		return r;
	if ((shift = before - rel) <= 0)
		return 0;
	for (int d = 0; d < SHL_NBUCKETS; d++) {
		if (place->edge[d] == INT64_MIN)
			continue;
		/* how far this bucket's positions move relative to the new
		 * release: < 0 where the give was more than the release moved */
		int64_t by = shift - g[d];
		place->edge[d] = place->edge[d] + by > 0 ? 0 : place->edge[d] + by;
		/* a debt of 0 ended at or before the release: 0 stays */
		place->debt[d] = place->debt[d] > 0 && place->debt[d] + by > 0 ? place->debt[d] + by : 0;
		/* a full of 0 was at or before the release: at most `by` now */
		place->full[d] = place->full[d] + by > 0 ? place->full[d] + by : 0;
	}
	return 1;
}

int shl__clamp_at(shl_t *h, int pool, int dim, uint64_t remaining, uint64_t after, int64_t at,
		  int64_t since)
{
	struct shl_local *l;
	int r = pool_ok(h, pool, &l);
	if (r)
		return r;
	if (dim < 0 || dim >= SHL_NBUCKETS)
		return -EINVAL;
	const struct shl_pool_local *pl = &l->pools[pool];
	if (remaining >= pl->burst[dim])
		return 0;
	/* At most `remaining` units were available at `at`, and `after` more
	 * have been used since: the bucket is full no earlier than
	 * (burst - remaining + after) intervals after `at`. */
	uint64_t owe = shl__add_sat(pl->burst[dim] - remaining, after);
	uint64_t floor = shl__add_sat((uint64_t)(at < 0 ? 0 : at), shl__mul_sat(owe, pl->interval[dim]));
	struct shl_pool_rt *rt = &h->seg->pools[pool];
	/* relaxed: a hint for the statistic below (bucket words, bucket.c). */
	uint64_t before = atomic_load_explicit(&rt->bkt[dim].tat, memory_order_relaxed);
	if (since > 0 && since < at) {
		/* The server counted `remaining` at some instant in [since, at]
		 * (it answers after the request's release, and the answer took
		 * at - since: latency, generation).  If the word is already
		 * past where that count puts it at the earliest of those
		 * instants, the count fits this segment's own account (the
		 * server counted earlier than `at`, and nothing was used that
		 * the segment does not know of): nothing to correct.  Raising
		 * to the floor as of `at` would take the whole latency's refill
		 * from the line at every answer.  Token counts are rounded to
		 * the nearest thousand (so up to 500 more may have been there). */
		uint64_t rnd = dim != SHL_DIM_RPM && remaining % 1000 == 0 ? 500 : 0;
		uint64_t hi = remaining + rnd < pl->burst[dim] ? remaining + rnd : pl->burst[dim];
		uint64_t early = shl__add_sat((uint64_t)since,
					      shl__mul_sat(shl__add_sat(pl->burst[dim] - hi, after),
							   pl->interval[dim]));
		if (before >= early)
			return 0;
	}
	shl__bucket_raise(&rt->bkt[dim].tat, floor);
	if (before < floor)
		/* relaxed: a statistic. */
		atomic_fetch_add_explicit(&rt->clamps, 1, memory_order_relaxed);
	return 0;
}

int shl_clamp(shl_t *h, int pool, int dim, uint64_t remaining)
{
	return shl__clamp_at(h, pool, dim, remaining, 0, shl__now(), 0);
}

int shl_spend_exhaust(shl_t *h)
{
	if (h == NULL)
		return -EINVAL;
	if (h->rdonly)
		return -EACCES;
	uint32_t m = shl__month(h, shl__now());
	/* relaxed: advisory; read by shl__spend_reserve. */
	atomic_store_explicit(&h->seg->spendl.exhausted, m + 1, memory_order_relaxed);
	return 0;
}
