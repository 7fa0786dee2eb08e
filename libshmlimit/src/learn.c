/*
 * learn.c - the input estimate learns, per pool, how the server counts.
 *
 * The estimate (wire_req.c) is one rule for every model and every text;
 * the server's tokenizer is not public and differs by script and by model
 * generation.  An estimate that runs low admits requests the server then
 * counts above what the bucket had: 429s that hold the whole pool.  So every
 * settlement that read the server's usage adds one sample, the ratio of the
 * server's input count (input, cache writes and cache reads: all the prompt)
 * to the raw estimate, to a ring of the pool's last SHL_LEARN_RING samples
 * in the segment, and new estimates are scaled by the ring's 95th
 * percentile: an upper quantile, not the mean, so that one absurd sample
 * moves nothing and the estimate errs high (the overshoot is given back at
 * settlement; an undershoot is a 429).  Every worker of the host learns from
 * every other at once.
 *
 * Concurrency contract: shl__learn_add and shl__learn_ratio may run at the
 * same time as each other and as anything else, in any process.  The ring
 * publishes no data: each slot is an independent number, written with one
 * relaxed store at an index taken by one relaxed fetch_add, and read with
 * relaxed loads; a reader racing a writer sees the old or the new sample,
 * both valid.  The quantile is recomputed by each adder from what it reads
 * and stored with one relaxed store; two adders racing store quantiles of
 * nearly the same ring, and the later store wins until the next sample.
 *
 * What it assumes: samples of one pool come from one mix of traffic.  What
 * it does not do: weigh samples by size (a sample is a ratio; requests
 * estimated below SHL_LEARN_MIN_TOKENS teach nothing, since per-request
 * overheads would dominate their ratio), or forget with time (only newer
 * samples push older ones out).  A scribbled ring gives a ratio within
 * SHL_LEARN_MIN .. SHL_LEARN_MAX, never more.
 *
 * Before its first sample a pool has no evidence, and the ratio is the prior
 * SHL_LEARN_PRIOR (wire.h), above 1: a request reserved then, in a bucket
 * already drawn down, is released after the first settlements and would
 * otherwise go out under the server's count.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "wire.h"

/* The learn area of a live pool, and the owner tag its samples carry. */
static struct shl_learn *area(struct shl *h, int pool, uint64_t *tag)
{
	struct shl_local *l = shl__local(h);
	if (l == NULL || pool < 0 || (unsigned)pool >= l->slot.npools ||
	    !(l->slot.pools[pool].flags & SHL_PF_USED))
		return NULL;
	*tag = 1ULL << 32 | l->pools[pool].name_hash;
	return &h->seg->pext[pool].learn;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

uint32_t shl__learn_ratio(struct shl *h, int pool, uint64_t *samples)
{
	uint64_t tag;
	struct shl_learn *a = area(h, pool, &tag);
	if (samples != NULL)
		*samples = 0;
	/* relaxed: the owner tag and the ratio are independent advisory
	 * words (see the top); nothing is read through them. */
	if (a == NULL)
		return SHL_LEARN_ONE;
	if (atomic_load_explicit(&a->owner, memory_order_relaxed) != tag)
		return SHL_LEARN_PRIOR;
	uint32_t r = atomic_load_explicit(&a->ratio, memory_order_relaxed);
	if (samples != NULL)
		*samples = atomic_load_explicit(&a->count, memory_order_relaxed);
	if (r == 0)
		return SHL_LEARN_PRIOR;
	return r < SHL_LEARN_MIN ? SHL_LEARN_MIN : r > SHL_LEARN_MAX ? SHL_LEARN_MAX : r;
}

void shl__learn_add(struct shl *h, int pool, uint64_t raw, uint64_t server)
{
	uint64_t tag;
	struct shl_learn *a;
	if (h->rdonly || raw < SHL_LEARN_MIN_TOKENS || (a = area(h, pool, &tag)) == NULL)
		return;
	/* relaxed: see the top.  A pool index taken over by another pool
	 * (an apply) starts afresh: the one that swaps the tag clears. */
	uint64_t own = atomic_load_explicit(&a->owner, memory_order_relaxed);
	if (own != tag &&
	    atomic_compare_exchange_strong_explicit(&a->owner, &own, tag, memory_order_relaxed,
						    memory_order_relaxed)) {
		for (int i = 0; i < SHL_LEARN_RING; i++)
			atomic_store_explicit(&a->ring[i], 0, memory_order_relaxed);
		atomic_store_explicit(&a->count, 0, memory_order_relaxed);
		atomic_store_explicit(&a->ratio, 0, memory_order_relaxed);
	}
	/* raw, server < 2^34 (settle clamps token counts): no overflow. */
	uint64_t q = server * SHL_LEARN_ONE / raw;
	uint32_t s = q < SHL_LEARN_MIN ? SHL_LEARN_MIN : q > SHL_LEARN_MAX ? SHL_LEARN_MAX : (uint32_t)q;
	uint64_t i = atomic_fetch_add_explicit(&a->count, 1, memory_order_relaxed);
	atomic_store_explicit(&a->ring[i % SHL_LEARN_RING], s, memory_order_relaxed);

	uint32_t v[SHL_LEARN_RING];
	int n = 0;
	for (int k = 0; k < SHL_LEARN_RING; k++) {
		uint32_t x = atomic_load_explicit(&a->ring[k], memory_order_relaxed);
		if (x != 0)
			v[n++] = x < SHL_LEARN_MIN ? SHL_LEARN_MIN : x > SHL_LEARN_MAX ? SHL_LEARN_MAX : x;
	}
	if (n == 0)
		return;
	qsort(v, (size_t)n, sizeof(v[0]), cmp_u32);
	/* The 95th percentile, nearest rank: ceil(0.95 n), counted from 1. */
	int rank = (95 * n + 99) / 100;
	atomic_store_explicit(&a->ratio, v[rank - 1], memory_order_relaxed);
}

uint64_t shl__learn_apply(uint64_t raw, uint32_t ratio)
{
	if (raw == 0)
		return 0;
	if (raw > (1ULL << 40))
		raw = 1ULL << 40; /* far past any bucket; keeps the product in range */
	uint64_t x = (raw * ratio + SHL_LEARN_ONE - 1) / SHL_LEARN_ONE;
	return x > (1ULL << 62) ? 1ULL << 62 : x;
}
