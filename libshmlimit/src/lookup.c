/*
 * lookup.c - model id -> model entry, without touching shared memory.
 *
 * Resolving "claude-sonnet-4-5-20250929" means an exact-id search and a
 * longest-prefix search over up to 256 patterns.  Doing that with strcmp in
 * the shared table on every request would cost far more than the admission
 * itself, so each process keeps a lock-free hash table (liburcu's cds_lfht,
 * in its "bulletproof" flavour so that any thread of any host program can
 * read it without registering) from the ids it has seen to their entry.
 *
 * The table belongs to one configuration generation.  When the generation
 * changes, the next miss checks whether the model patterns changed (a key
 * over every pattern and its flags): if not (a reset of the buckets or the
 * spend, an apply that changed only limits or prices), the table's answers
 * still hold and it simply moves to the new generation.  Otherwise the miss
 * builds a new table and publishes it with a release store; the old one is
 * retired, not freed, because a reader may still be in it, and retired
 * tables are freed at shl_detach.  So a process keeps one table per apply
 * that changed the models, an operator's action; in exchange no thread ever
 * waits for a grace period
 * (synchronize_rcu), which a library called from arbitrary host threads
 * (and, through the preload shim, from inside libcurl callbacks) must not
 * risk.  Readers never block; builders serialise on a mutex.
 *
 * At most SHL_LOOKUP_MAX ids are cached per generation; beyond that, a
 * lookup falls back to the scan (of the process-local copy) rather than let
 * a program that invents model ids grow the table without bound.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "internal.h"

#define SHL_LOOKUP_MAX 4096


struct lk_node {
	struct cds_lfht_node node;
	int model;
	size_t len;
	char id[];
};

struct lk_table {
	struct cds_lfht *ht;
	uint64_t gen;  /* moved on (relaxed atomics) while mkey holds */
	uint64_t mkey; /* models_key() of the configuration it answers for */
	int count;
	struct lk_table *next; /* retired list */
};

struct lk {
	struct lk_table *cur; /* read under rcu_read_lock, published with release */
	struct lk_table *retired; /* replaced tables, under mu; freed at detach */
	pthread_mutex_t mu;
};

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void atfork_register(void)
{
	/* urcu-bp's registry lock must not be held across fork(). */
	pthread_atfork(urcu_bp_before_fork, urcu_bp_after_fork_parent, urcu_bp_after_fork_child);
}

/* caa_container_of, without the cast that -Wcast-align rejects. */
static inline struct lk_node *to_node(struct cds_lfht_node *n)
{
	return (struct lk_node *)(void *)((char *)n - offsetof(struct lk_node, node));
}

static uint64_t hash_id(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
	return h;
}

struct key {
	const char *id;
	size_t len;
};

static int match_node(struct cds_lfht_node *node, const void *key)
{
	const struct lk_node *n = to_node(node);
	const struct key *k = key;
	/* acquire: pairs with the release store of len in shl_lookup; the id
	 * and model written before it are visible.  (The table's own publication
	 * orders them too; this makes the contract explicit, and visible to
	 * ThreadSanitizer, which cannot see inside liburcu.) */
	size_t len = __atomic_load_n(&n->len, __ATOMIC_ACQUIRE);
	return len == k->len && memcmp(n->id, k->id, k->len) == 0;
}

/* What the answers depend on: the patterns and their flags, in order. */
static uint64_t models_key(const struct shl_cfg_slot *s)
{
	unsigned nm = s->nmodels > SHL_MAX_MODELS ? SHL_MAX_MODELS : s->nmodels;
	uint64_t k = hash_id((const char *)&nm, sizeof(nm));
	for (unsigned i = 0; i < nm; i++) {
		const struct shl_model_cfg *m = &s->models[i];
		k ^= hash_id(m->match, strnlen(m->match, sizeof(m->match))) + i;
		k = (k ^ m->flags) * 0x100000001b3ULL;
	}
	return k;
}

static struct lk_table *table_new(uint64_t gen)
{
	struct lk_table *t = shl__calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	/* Fixed size, no auto-resize: no worker thread, nothing to fork. */
	t->ht = shl__fault() ? NULL : cds_lfht_new(1024, 1024, 1024, 0, NULL);
	if (t->ht == NULL) {
		free(t);
		return NULL;
	}
	t->gen = gen;
	return t;
}

/* Only once no reader can hold `t`: at detach. */
static void table_free(struct lk_table *t)
{
	if (t == NULL)
		return;
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;
	rcu_read_lock();
	cds_lfht_for_each(t->ht, &it, node) {
		if (cds_lfht_del(t->ht, node) == 0)
			free(to_node(node));
	}
	rcu_read_unlock();
	cds_lfht_destroy(t->ht, NULL);
	free(t);
}

int shl__lookup_init(struct shl *h)
{
	pthread_once(&atfork_once, atfork_register);
	struct lk *lk = shl__calloc(1, sizeof(*lk));
	if (lk == NULL)
		return -ENOMEM;
	pthread_mutex_init(&lk->mu, NULL);
	h->lookup = lk;
	return 0;
}

/* Tables this handle holds, the current one included (tests). */
int shl__lookup_tables(struct shl *h)
{
	struct lk *lk = h->lookup;
	pthread_mutex_lock(&lk->mu);
	int n = lk->cur != NULL;
	for (struct lk_table *t = lk->retired; t != NULL; t = t->next)
		n++;
	pthread_mutex_unlock(&lk->mu);
	return n;
}

void shl__lookup_free(struct shl *h)
{
	struct lk *lk = h->lookup;
	if (lk == NULL)
		return;
	table_free(lk->cur);
	while (lk->retired) {
		struct lk_table *t = lk->retired;
		lk->retired = t->next;
		table_free(t);
	}
	pthread_mutex_destroy(&lk->mu);
	free(lk);
	h->lookup = NULL;
}

int shl_lookup(shl_t *h, const char *model_id)
{
	if (h == NULL || model_id == NULL)
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	struct lk *lk = h->lookup;
	struct key k = {model_id, strlen(model_id)};
	if (k.len > SHL_PATTERN_MAX)
		return shl__model_match(&l->slot, model_id); /* not cached, not recorded */
	uint64_t hv = hash_id(k.id, k.len);
	struct cds_lfht_iter it;

	rcu_read_lock();
	/* acquire: pairs with the release store that publishes a table. */
	struct lk_table *t = __atomic_load_n(&lk->cur, __ATOMIC_ACQUIRE);
	/* relaxed: gen only moves between generations whose answers are the
	 * same (the entries are published by the table and by len). */
	if (t != NULL && __atomic_load_n(&t->gen, __ATOMIC_RELAXED) == l->gen) {
		cds_lfht_lookup(t->ht, hv, match_node, &k, &it);
		struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
		if (node != NULL) {
			int m = to_node(node)->model;
			rcu_read_unlock();
			return m;
		}
	}
	rcu_read_unlock();

	/* Miss: resolve from the local copy, then remember the answer.  An id
	 * no entry matched goes to the segment's table of unknown ids
	 * (unknown.c): once per process and generation, as misses are. */
	int unknown = 0;
	int m = shl__model_match_ex(&l->slot, model_id, &unknown);
	if (unknown && !h->rdonly)
		(void)shl__unknown_record(h, model_id);
	pthread_mutex_lock(&lk->mu);
	t = __atomic_load_n(&lk->cur, __ATOMIC_RELAXED); /* under mu */
	if (t != NULL && __atomic_load_n(&t->gen, __ATOMIC_RELAXED) > l->gen) {
		/* Our config copy is older than the table: another thread has
		 * already seen the newer generation.  Do not go back. */
		pthread_mutex_unlock(&lk->mu);
		return m;
	}
	uint64_t key = 0;
	if (t != NULL && t->gen != l->gen && t->mkey == (key = models_key(&l->slot))) {
		/* Same patterns: every cached answer still holds.  relaxed:
		 * see the reader above. */
		__atomic_store_n(&t->gen, l->gen, __ATOMIC_RELAXED);
	} else if (t == NULL || t->gen != l->gen) {
		struct lk_table *nt = table_new(l->gen);
		if (nt == NULL) {
			pthread_mutex_unlock(&lk->mu);
			return m;
		}
		nt->mkey = t == NULL ? models_key(&l->slot) : key;
		/* release: pairs with the acquire load above; the table is
		 * complete for any reader that sees it. */
		__atomic_store_n(&lk->cur, nt, __ATOMIC_RELEASE);
		if (t != NULL) { /* readers may still be in it: retire, free at detach */
			t->next = lk->retired;
			lk->retired = t;
		}
		t = nt;
	}
	if (t->count < SHL_LOOKUP_MAX) {
		struct lk_node *n = shl__malloc(sizeof(*n) + k.len + 1);
		if (n != NULL) {
			cds_lfht_node_init(&n->node);
			n->model = m;
			memcpy(n->id, k.id, k.len + 1);
			/* release: pairs with the acquire load in match_node(). */
			__atomic_store_n(&n->len, k.len, __ATOMIC_RELEASE);
			rcu_read_lock();
			struct cds_lfht_node *got = cds_lfht_add_unique(t->ht, hv, match_node, &k,
									&n->node);
			rcu_read_unlock();
			if (got != &n->node)
				free(n);
			else
				t->count++;
		}
	}
	pthread_mutex_unlock(&lk->mu);
	return m;
}

/* A pool by name: a scan of the live configuration's (at most 64) pools.
 * Not cached: callers look a pool up once per command or per 429, not
 * per request. */
int shl_pool_find(shl_t *h, const char *name)
{
	if (h == NULL || name == NULL)
		return -EINVAL;
	struct shl_local *l = shl__local(h);
	if (l == NULL)
		return -EUCLEAN;
	for (unsigned p = 0; p < l->slot.npools && p < SHL_MAX_POOLS; p++)
		if ((l->slot.pools[p].flags & SHL_PF_USED) &&
		    strncmp(l->slot.pools[p].name, name, sizeof(l->slot.pools[p].name)) == 0)
			return (int)p;
	return -ESRCH;
}
