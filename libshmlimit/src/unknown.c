/*
 * unknown.c - model ids that no configured entry matches.
 *
 * Such an id goes to the configuration's unknown_model policy (the
 * catch-all pool, pass, or refuse; config.c), and is worth an operator's
 * attention either way: a fleet that moved to a new model generation is
 * governed by a conservative stand-in at best.  So every id met is noted
 * in a small table in the segment extension (layout.h, struct
 * shl_unknown_tab) that shmlimit-stat lists, and the request/response
 * component can name each id once per process on stderr
 * (shl_unknown_note).
 *
 * The table is claim-only: an entry is taken by a CAS of its tag from 0 to
 * the id's hash (bit 0 clear while the id is being written), the id is
 * written, then the tag's bit 0 is set with a release store.  Two
 * processes meeting the same new id race for entries with the same hash;
 * a claimer that finds the hash already claimed (written or not) adds to
 * its count instead, so an id has at most one entry.  When all entries
 * are taken, further ids are counted in `dropped`.  Lookups record only
 * on a miss of their process-local table, so the cost is once per
 * process and configuration, never per request.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "internal.h"

static uint64_t id_tag(const char *id)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (const char *c = id; *c; c++)
		h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
	return (h | 2u) & ~(uint64_t)1; /* never 0, bit 0 clear */
}

int shl__unknown_record(struct shl *h, const char *id)
{
	if (h->rdonly)
		return -EACCES;
	size_t n = strlen(id);
	if (n == 0 || n > SHL_PATTERN_MAX)
		return -EINVAL;
	struct shl_unknown_tab *u = &h->seg->ext.unknown;
	uint64_t tag = id_tag(id);
	for (int i = 0; i < SHL_UNKNOWN_SLOTS; i++) {
		struct shl_unknown_ent *e = &u->ent[i];
		/* relaxed: only the hash is compared here; the id is read by
		 * readers after their acquire load of the tag. */
		uint64_t t = atomic_load_explicit(&e->tag, memory_order_relaxed);
		if (t == 0) {
			if (!atomic_compare_exchange_strong_explicit(&e->tag, &t, tag,
								     memory_order_relaxed,
								     memory_order_relaxed)) {
				if ((t & ~(uint64_t)1) == tag)
					goto seen;
				continue; /* taken by another id meanwhile */
			}
			for (size_t k = 0; k < sizeof(e->id); k++)
				__atomic_store_n(&e->id[k], k < n ? id[k] : '\0', __ATOMIC_RELAXED);
			atomic_fetch_add_explicit(&e->seen, 1, memory_order_relaxed);
			/* release: pairs with the acquire load in shl_unknown_list;
			 * the id written above is complete for a reader that sees
			 * bit 0. */
			atomic_store_explicit(&e->tag, tag | 1u, memory_order_release);
			atomic_fetch_add_explicit(&u->n, 1, memory_order_relaxed);
			return 1;
		}
		if ((t & ~(uint64_t)1) == tag) {
		seen:
			/* relaxed: a statistic. */
			atomic_fetch_add_explicit(&e->seen, 1, memory_order_relaxed);
			return 0;
		}
	}
	atomic_fetch_add_explicit(&u->dropped, 1, memory_order_relaxed);
	return -ENOSPC;
}

/* Ids this process has been told about (shl_unknown_note): a small set of
 * hashes; past it, no more lines (the table still records). */
#define NOTED_MAX 256
static pthread_mutex_t noted_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t noted[NOTED_MAX];
static int nnoted;

int shl_unknown_note(shl_t *h, const char *model_id)
{
	if (h == NULL || model_id == NULL)
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	int unknown = 0;
	shl__model_match_ex(&l->slot, model_id, &unknown);
	if (!unknown)
		return 0; /* (shl_lookup notes it in the segment's table) */
	uint64_t tag = id_tag(model_id);
	int first = 1;
	pthread_mutex_lock(&noted_mu);
	for (int i = 0; i < nnoted && first; i++)
		first = noted[i] != tag;
	if (first) {
		if (nnoted < NOTED_MAX)
			noted[nnoted++] = tag;
		else
			first = 0;
	}
	pthread_mutex_unlock(&noted_mu);
	return first ? 1 : 2;
}

int shl_unknown_list(shl_t *h, shl_unknown_model *out, int max)
{
	if (h == NULL || (out == NULL && max > 0) || max < 0)
		return -EINVAL;
	const struct shl_unknown_tab *u = &h->seg->ext.unknown;
	int k = 0;
	for (int i = 0; i < SHL_UNKNOWN_SLOTS && k < max; i++) {
		struct shl_unknown_ent *e = (struct shl_unknown_ent *)&u->ent[i];
		/* acquire: pairs with the release store that sets bit 0. */
		uint64_t t = atomic_load_explicit(&e->tag, memory_order_acquire);
		if (!(t & 1u))
			continue;
		char id[sizeof(e->id)];
		for (size_t c = 0; c < sizeof(id); c++)
			id[c] = __atomic_load_n(&e->id[c], __ATOMIC_RELAXED);
		id[sizeof(id) - 1] = '\0';
		/* Only printable ids (the segment is shared memory: trust nothing). */
		int ok = id[0] != '\0';
		for (const char *c = id; *c && ok; c++)
			ok = *c > ' ' && *c < 0x7f;
		if (!ok)
			continue;
		memcpy(out[k].id, id, sizeof(id));
		out[k].seen = atomic_load_explicit(&e->seen, memory_order_relaxed);
		k++;
	}
	return k;
}
