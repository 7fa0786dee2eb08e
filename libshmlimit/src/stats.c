/*
 * stats.c - a snapshot of a segment for the stats tool and for programs.
 *
 * Every word is read with one atomic load of a whole 64-bit word, so no
 * word is ever torn between two updates; a pool's counters are the shared
 * word plus the sum over the process slots (pslot.c), each slot read once; the configuration part comes from
 * the process-local copy of one generation, so limits, names and prices are
 * all of the same generation.  Reading changes nothing: a read-only handle
 * works.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"
#include "wire.h"

/*
 * pools[] is compacted: it holds the npools pools in use, in index order,
 * and a pool's index (what tickets, refusals, shl_hold and shl_clamp name)
 * is pools[k].index, which differs from k once an apply has removed a pool
 * below it.
 */
int shl_stats_get(shl_t *h, shl_stats *out)
{
	if (h == NULL || out == NULL)
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	memset(out, 0, sizeof(*out));
	const struct shl_seg *seg = h->seg;
	int64_t now = shl__now();
	int64_t unix_ns = shl__unix_ns(), next_s;
	uint32_t month = shl__month_of(unix_ns, &next_s);
	out->generation = l->gen;
	out->created_unix_ns = seg->hdr.created_unix_ns;
	out->now_ns = now;
	out->nmodels = (int)l->slot.nmodels;
	/* The word less the unused leases (spend.c). */
	out->spend_month = shl__spend_month(seg, month, l->slot.spend_epoch);
	out->spend_cap = l->spend_cap;
	/* relaxed: advisory mark, see spend.c. */
	out->spend_exhausted = atomic_load_explicit(&((struct shl_seg *)seg)->spendl.exhausted,
						    memory_order_relaxed) == month + 1;
	out->month_year = (int)(1970 + month / 12);
	out->month = (int)(month % 12) + 1;
	out->month_resets_unix = next_s;
	out->unknown_model = (int)l->slot.unknown_policy;
	out->unknown_pool = -1;
	int k = 0;
	for (unsigned p = 0; p < l->slot.npools; p++) {
		const struct shl_pool_cfg *pc = &l->slot.pools[p];
		if (!(pc->flags & SHL_PF_USED))
			continue;
		const struct shl_pool_local *pl = &l->pools[p];
		struct shl_pool_rt *rt = (struct shl_pool_rt *)&seg->pools[p];
		shl_pool_stats *o = &out->pools[k++];
		o->index = (int)p;
		memcpy(o->name, pc->name, sizeof(o->name));
		o->name[SHL_NAME_MAX] = 0;
		o->index = (int)p;
		if (l->slot.unknown_policy == SHL_UNKNOWN_POOL && l->slot.unknown_pool == p)
			out->unknown_pool = k - 1;
		const struct shl_observed *ob = &seg->pext[p].observed;
		uint64_t eff_burst[SHL_NBUCKETS];
		shl__effective(pc, ob, o->effective, eff_burst);
		/* relaxed: whole words; see the module comment. */
		if (atomic_load_explicit(&((struct shl_observed *)ob)->name_hash,
					 memory_order_relaxed) == pl->name_hash) {
			for (int d = 0; d < SHL_NBUCKETS; d++)
				o->observed[d] = atomic_load_explicit(
					&((struct shl_observed *)ob)->limit[d], memory_order_relaxed);
			o->observed_unix_ns = atomic_load_explicit(
				&((struct shl_observed *)ob)->updated_unix_ns, memory_order_relaxed);
		}
		o->follow_server = !(pc->flags & SHL_PF_NOFOLLOW);
		o->provisional = (pc->flags & SHL_PF_PROVISIONAL) != 0;
		for (int d = 0; d < SHL_NBUCKETS; d++) {
			o->limit[d] = pc->limit[d];
			o->burst[d] = pl->burst[d]; /* at the effective rate */
			/* relaxed: whole words; see the module comment. */
			uint64_t tat = atomic_load_explicit(&rt->bkt[d].tat, memory_order_relaxed);
			double deficit = tat > (uint64_t)now ? (double)(tat - (uint64_t)now) : 0.0;
			o->available[d] = (double)pl->burst[d] - deficit / (double)pl->interval[d];
		}
		/* The shared counters plus the process slots (pslot.c). */
		uint64_t pc_cnt[SHL_PSTATS], pc_win[SHL_NBUCKETS];
		shl__pool_totals(seg, (int)p, now, pc_cnt, pc_win);
		shl__window_sum(rt, now, o->used_last_minute);
		for (int d = 0; d < SHL_NBUCKETS; d++)
			o->used_last_minute[d] += pc_win[d];
		memcpy(o->prices, pc->price, sizeof(o->prices));
		o->otpm_reserve = (pc->flags & SHL_PF_OTPM_RESERVE) != 0;
		o->cache_reads_count = (pc->flags & SHL_PF_CACHE_READS) != 0;
		int64_t hold = atomic_load_explicit(&rt->hold_until, memory_order_relaxed);
		o->hold_ns = hold > now ? hold - now : 0;
#define LD(f) atomic_load_explicit(&rt->f, memory_order_relaxed)
		o->admitted = LD(admitted) + pc_cnt[SHL_PS_ADMITTED];
		o->refused = LD(refused);
		o->waited = LD(waited);
		o->settled = LD(settled) + pc_cnt[SHL_PS_SETTLED];
		o->cancelled = LD(cancelled) + pc_cnt[SHL_PS_CANCELLED];
		o->server_429 = LD(server_429);
		o->tokens_in = LD(tokens_in) + pc_cnt[SHL_PS_TOKENS_IN];
		o->tokens_out = LD(tokens_out) + pc_cnt[SHL_PS_TOKENS_OUT];
		o->cache_read = LD(cache_read) + pc_cnt[SHL_PS_CACHE_READ];
		o->cache_write = LD(cache_write) + pc_cnt[SHL_PS_CACHE_WRITE];
		o->spend = (int64_t)((uint64_t)LD(spend) + pc_cnt[SHL_PS_SPEND]);
#undef LD
		o->est_ratio = (double)shl__learn_ratio(h, (int)p, &o->est_samples) / SHL_LEARN_ONE;
		if (pc->flags & SHL_PF_CLUSTER) {
			const struct shl_cluster_pool *cp = &seg->pext[p].cluster;
			for (int d = 0; d < SHL_NBUCKETS; d++) {
				/* relaxed: whole words, as above. */
				o->lease_ns[d] = atomic_load_explicit(&cp->dim[d].credit,
								      memory_order_relaxed);
			}
			o->lease_refills = atomic_load_explicit(&cp->refills, memory_order_relaxed);
			o->lease_short = atomic_load_explicit(&cp->short_refusals, memory_order_relaxed);
			o->lease_fallback = atomic_load_explicit(&cp->fallback_grants,
								 memory_order_relaxed);
		}
	}
	out->npools = k;
	/* relaxed: statistics; the last_* fields may mix two racing failures. */
	const struct shl_attach_log *al = &seg->ext.attach;
	out->attach_failures = atomic_load_explicit(&al->failures, memory_order_relaxed);
	out->attach_owner_refusals = atomic_load_explicit(&al->owner_refusals, memory_order_relaxed);
	out->attach_last_unix_ns = atomic_load_explicit(&al->last_unix_ns, memory_order_relaxed);
	out->attach_last_uid = atomic_load_explicit(&al->last_uid, memory_order_relaxed);
	out->attach_last_pid = atomic_load_explicit(&al->last_pid, memory_order_relaxed);
	int32_t le = atomic_load_explicit(&al->last_error, memory_order_relaxed);
	/* A scribbled word is not an errno: report it as corruption (and
	 * never hand shl_strerror INT_MIN to negate). */
	out->attach_last_error = le <= 0 && le >= -4095 ? le : -EUCLEAN;
	const struct shl_cluster_seg *cs = &seg->ext.cluster;
	if (l->cluster) {
		/* relaxed: the agent's hints, whole words. */
		int64_t beat = atomic_load_explicit(&cs->agent_beat, memory_order_relaxed);
		uint64_t b = atomic_load_explicit(&cs->spend_budget, memory_order_relaxed);
		out->cluster = 1;
		out->cluster_redis_up = (int)atomic_load_explicit(&cs->redis_up, memory_order_relaxed);
		out->cluster_fallback = (int)atomic_load_explicit(&cs->fallback, memory_order_relaxed) ||
					beat == 0;
		out->cluster_hosts = (int)atomic_load_explicit(&cs->hosts_seen, memory_order_relaxed);
		out->cluster_redis_ops = atomic_load_explicit(&cs->redis_ops, memory_order_relaxed);
		out->cluster_refills = atomic_load_explicit(&cs->refills, memory_order_relaxed);
		out->cluster_agent_age_ns = beat == 0 ? -1 : now - beat;
		out->cluster_rtt_ns = atomic_load_explicit(&cs->rtt_ns, memory_order_relaxed);
		out->cluster_spend_budget =
			(uint32_t)(b >> SHL_SPEND_BITS) == (month & 127u) ? (int64_t)(b & SHL_SPEND_MASK)
									  : 0;
	}
	return 0;
}
