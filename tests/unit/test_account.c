/*
 * test_account.c - limits that match the account (issue 15): presets by
 * name, the unknown_model policy and its table of ids, the limits the
 * server's headers report (observed, followed), and a response served by
 * another model than the one admitted.
 */
#include <pthread.h>

#include "testutil.h"

#define PRICES(i, o) \
	"\"prices\":{\"input\":" #i ",\"output\":" #o ",\"cache_write_5m\":0,\"cache_write_1h\":0," \
	"\"cache_read\":0}"

/* Two pools: a (models a-*) and b (models b-*), a catch-all "c" optional. */
static shl_config *two_pools(const char *unknown, const char *pool_extra)
{
	char j[2048];
	snprintf(j, sizeof(j),
		 "{\"spend_cap_usd\":null,\"pools\":["
		 "{\"name\":\"a\",\"rpm\":600,\"itpm\":60000,\"otpm\":6000%s," PRICES(1, 2) "},"
		 "{\"name\":\"b\",\"rpm\":600,\"itpm\":60000,\"otpm\":6000," PRICES(10, 20) "},"
		 "{\"name\":\"c\",\"rpm\":60,\"itpm\":6000,\"otpm\":600," PRICES(100, 200) "}],"
		 "\"models\":[{\"match\":\"a-*\",\"pool\":\"a\"},{\"match\":\"a-cheap\",\"pool\":\"a\","
		 PRICES(0, 1) "},{\"match\":\"b-*\",\"pool\":\"b\"}]%s%s}",
		 pool_extra ? pool_extra : "", unknown ? ",\"unknown_model\":" : "",
		 unknown ? unknown : "");
	return tu_cfg(j);
}

static shl_t *seg_of(shl_config *c)
{
	shl_t *h = NULL;
	shl_err e = {{0}};
	int r = shl_create(tu_name(), c, SHL_CREATE_REPLACE, &h, &e);
	shl_config_free(c);
	if (r != 0)
		fprintf(stderr, "create: %s\n", e.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	return h;
}

/* The index of a pool by name, from the live configuration. */
static int pool_of(shl_t *h, const char *name)
{
	struct shl_local *l = shl__local(h);
	for (unsigned p = 0; l && p < l->slot.npools; p++)
		if ((l->slot.pools[p].flags & SHL_PF_USED) && strcmp(l->slot.pools[p].name, name) == 0)
			return (int)p;
	return -ESRCH;
}

static void seg_done(shl_t *h)
{
	char name[256];
	snprintf(name, sizeof(name), "%s", shl_name(h));
	shl_detach(h);
	shl_unlink(name);
}

static int pool_named(shl_stats *s, const char *name)
{
	for (int i = 0; i < s->npools; i++)
		if (strcmp(s->pools[i].name, name) == 0)
			return i;
	return -1;
}

/* ------------------------------------------------------------------ */
/* Presets by name                                                      */
/* ------------------------------------------------------------------ */

static void test_named_presets(void)
{
	static const struct {
		const char *name;
		int64_t cap_usd;
	} want[] = {{"start", 500}, {"build", 1000}, {"scale", 200000}, {"Start", 500},
		    {"tier1", 100},  {"1", 100},	  {"4", 200000}};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		shl_config *c = NULL;
		CU_ASSERT_EQUAL_FATAL(shl_config_preset_named(want[i].name, &c), 0);
		CU_ASSERT_EQUAL(c->slot.spend_cap, want[i].cap_usd * SHL_UNITS_PER_USD);
		CU_ASSERT_EQUAL(c->slot.unknown_policy, SHL_UNKNOWN_POOL);
		shl_config_free(c);
	}
	/* The numbered aliases are the same text as the int API's. */
	CU_ASSERT_PTR_EQUAL(shl_preset_json_named("2"), shl_preset_json(2));
	CU_ASSERT_PTR_EQUAL(shl_preset_json_named("tier3"), shl_preset_json(3));
	shl_config *c = NULL;
	CU_ASSERT_EQUAL(shl_config_preset_named("evaluation", &c), -EINVAL);
	CU_ASSERT_EQUAL(shl_config_preset_named("", &c), -EINVAL);
	CU_ASSERT_EQUAL(shl_config_preset_named("0", &c), -EINVAL);
	CU_ASSERT_PTR_NULL(shl_preset_json_named("custom"));
	CU_ASSERT_PTR_NOT_NULL(strstr(shl_preset_names(), "start"));
	CU_ASSERT_PTR_NOT_NULL(strstr(shl_preset_names(), "tier4"));
	/* The named tiers' pool numbers are not published: every pool is
	 * marked provisional, at the lowest published numbers of its class
	 * (tier 1's), and the catch-all is no larger than any of them. */
	shl_config *t1 = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_config_preset_named("start", &c), 0);
	CU_ASSERT_EQUAL_FATAL(shl_config_preset(1, &t1), 0);
	for (unsigned p = 0; p < c->slot.npools; p++) {
		CU_ASSERT(c->slot.pools[p].flags & SHL_PF_PROVISIONAL);
		CU_ASSERT(!(c->slot.pools[p].flags & SHL_PF_NOFOLLOW));
		CU_ASSERT_EQUAL(memcmp(c->slot.pools[p].limit, t1->slot.pools[p].limit,
				       sizeof(c->slot.pools[p].limit)), 0);
		for (int d = 0; d < SHL_NBUCKETS; d++)
			CU_ASSERT(c->slot.pools[c->slot.unknown_pool].limit[d] <=
				  c->slot.pools[p].limit[d]);
	}
	CU_ASSERT_STRING_EQUAL(c->slot.pools[c->slot.unknown_pool].name, "other");
	/* A model family the presets do not name goes to the catch-all. */
	int m = shl__model_match(&c->slot, "claude-opus-5");
	CU_ASSERT_FATAL(m >= 0);
	CU_ASSERT_EQUAL(c->slot.models[m].pool, c->slot.unknown_pool);
	m = shl__model_match(&c->slot, "claude-sonnet-4-5-20250929");
	CU_ASSERT_FATAL(m >= 0);
	CU_ASSERT_STRING_EQUAL(c->slot.pools[c->slot.models[m].pool].name, "sonnet");
	shl_config_free(c);
	shl_config_free(t1);
}

/* ------------------------------------------------------------------ */
/* unknown_model                                                        */
/* ------------------------------------------------------------------ */

static void test_unknown_parse(void)
{
	shl_config *c = two_pools("\"refuse\"", NULL);
	CU_ASSERT_EQUAL(c->slot.unknown_policy, SHL_UNKNOWN_REFUSE);
	CU_ASSERT_EQUAL(c->slot.nmodels, 3);
	char *j = shl_config_to_json(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(j, "\"unknown_model\":\t\"refuse\""));
	free(j);
	shl_config_free(c);
	c = two_pools("{\"pool\":\"c\"}", NULL);
	CU_ASSERT_EQUAL(c->slot.unknown_policy, SHL_UNKNOWN_POOL);
	CU_ASSERT_EQUAL(c->slot.unknown_pool, 2);
	CU_ASSERT_EQUAL(c->slot.nmodels, 4); /* the hidden catch-all entry */
	CU_ASSERT(c->slot.models[3].flags & SHL_MF_CATCHALL);
	/* Round trip: the catch-all is written as unknown_model, not a model. */
	j = shl_config_to_json(c);
	CU_ASSERT_PTR_NULL(strstr(j, "\"match\":\t\"*\""));
	shl_config *b = tu_cfg(j);
	CU_ASSERT_EQUAL(memcmp(&b->slot, &c->slot, sizeof(c->slot)), 0);
	free(j);
	shl_config_free(b);
	shl_config_free(c);
	c = two_pools(NULL, NULL);
	CU_ASSERT_EQUAL(c->slot.unknown_policy, SHL_UNKNOWN_PASS); /* the default */
	shl_config_free(c);
	/* Errors name the key. */
	static const struct {
		const char *json, *msg;
	} bad[] = {
		{"{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1," PRICES(1, 1)
		 "}],\"unknown_model\":\"drop\"}",
		 "unknown_model: expected \"pass\", \"refuse\" or {\"pool\": NAME}"},
		{"{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1," PRICES(1, 1)
		 "}],\"unknown_model\":{\"pool\":\"zz\"}}",
		 "unknown_model.pool: no pool of that name"},
		{"{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1," PRICES(1, 1)
		 "}],\"unknown_model\":{\"pool\":\"a\",\"x\":1}}",
		 "unknown_model.x: unknown key"},
		{"{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1," PRICES(1, 1)
		 "}],\"models\":[{\"match\":\"*\",\"pool\":\"a\"}],\"unknown_model\":{\"pool\":\"a\"}}",
		 "unknown_model.pool: models[0] ('*') already matches every model"},
		{"{\"pools\":[{\"name\":\"a\",\"rpm\":1,\"itpm\":1,\"otpm\":1,\"follow_server\":1,"
		 PRICES(1, 1) "}]}",
		 "pools[0].follow_server: expected true or false"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		shl_err e = {{0}};
		shl_config *x = NULL;
		CU_ASSERT_EQUAL(shl_config_parse(bad[i].json, strlen(bad[i].json), &x, &e), -EINVAL);
		if (strstr(e.msg, bad[i].msg) == NULL)
			fprintf(stderr, "\n  got '%s', want '%s'\n", e.msg, bad[i].msg);
		CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, bad[i].msg));
	}
}

static void test_unknown_policies(void)
{
	/* pass: today's behaviour, not governed. */
	shl_t *h = seg_of(two_pools("\"pass\"", NULL));
	CU_ASSERT_EQUAL(shl_lookup(h, "z-new"), -ESRCH);
	CU_ASSERT(shl_lookup(h, "a-1") >= 0);
	shl_unknown_model u[16];
	CU_ASSERT_EQUAL(shl_unknown_list(h, u, 16), 1);
	CU_ASSERT_STRING_EQUAL(u[0].id, "z-new");
	seg_done(h);
	/* refuse: a distinct code, the id noted. */
	h = seg_of(two_pools("\"refuse\"", NULL));
	CU_ASSERT_EQUAL(shl_lookup(h, "z-new"), -ENOMSG);
	CU_ASSERT_EQUAL(shl_lookup(h, "z-new"), -ENOMSG); /* cached answer */
	CU_ASSERT_PTR_NOT_NULL(strstr(shl_strerror(-ENOMSG), "unknown_model"));
	CU_ASSERT_EQUAL(shl_unknown_list(h, u, 16), 1);
	/* Endpoint ids never go to the policy. */
	CU_ASSERT_EQUAL(shl_lookup(h, "count_tokens"), -ESRCH);
	seg_done(h);
	/* a catch-all pool: governed, on that pool, at its prices. */
	h = seg_of(two_pools("{\"pool\":\"c\"}", NULL));
	int m = shl_lookup(h, "z-new");
	CU_ASSERT_FATAL(m >= 0);
	CU_ASSERT_EQUAL(shl_model_pool(h, m), pool_of(h, "c"));
	CU_ASSERT_EQUAL(shl_lookup(h, "message_batches"), -ESRCH);
	CU_ASSERT_EQUAL(shl_model_pool(h, shl_lookup(h, "b-2")), pool_of(h, "b"));
	shl_cost cost = {.input_tokens = 10, .max_tokens = 10};
	shl_ticket t;
	CU_ASSERT_EQUAL(shl_try(h, m, &cost, &t, NULL), 0);
	CU_ASSERT_EQUAL(t.pool, pool_of(h, "c"));
	int64_t units = 0;
	CU_ASSERT_EQUAL(shl_price(h, m, &cost, &units), 0);
	CU_ASSERT_EQUAL(units, 10 * 100000 + 10 * 200000); /* c's prices */
	CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);
	/* shl_unknown_note: once per process, then "already". */
	CU_ASSERT_EQUAL(shl_unknown_note(h, "a-1"), 0);
	CU_ASSERT(shl_lookup(h, "z-note-once") >= 0); /* the lookup notes it in the segment */
	CU_ASSERT_EQUAL(shl_unknown_note(h, "z-note-once"), 1);
	CU_ASSERT_EQUAL(shl_unknown_note(h, "z-note-once"), 2);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.unknown_model, SHL_UNKNOWN_POOL);
	CU_ASSERT_EQUAL(st.unknown_pool, pool_named(&st, "c"));
	int n = shl_unknown_list(h, u, 16);
	CU_ASSERT_EQUAL(n, 2);
	int seen_new = 0, seen_note = 0;
	for (int i = 0; i < n; i++) {
		seen_new |= strcmp(u[i].id, "z-new") == 0;
		seen_note |= strcmp(u[i].id, "z-note-once") == 0;
		CU_ASSERT(u[i].seen >= 1);
	}
	CU_ASSERT(seen_new && seen_note);
	/* The table is bounded: past 12 ids, they are counted as dropped. */
	for (int i = 0; i < 20; i++) {
		char id[32];
		snprintf(id, sizeof(id), "z-many-%d", i);
		CU_ASSERT(shl_lookup(h, id) >= 0);
	}
	CU_ASSERT_EQUAL(shl_unknown_list(h, u, 16), SHL_UNKNOWN_SLOTS);
	CU_ASSERT(atomic_load(&h->seg->ext.unknown.dropped) > 0);
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_COUNTERS), 0);
	CU_ASSERT_EQUAL(shl_unknown_list(h, u, 16), 0);
	seg_done(h);
}

/* ------------------------------------------------------------------ */
/* Observed limits                                                      */
/* ------------------------------------------------------------------ */

static void test_observe_follow(void)
{
	tu_fake_clock(1);
	tu_boot = 1000000000000LL;
	tu_unix = 1767225600LL * 1000000000LL;
	shl_t *h = seg_of(two_pools(NULL, NULL));
	int a = pool_of(h, "a"), ma = shl_lookup(h, "a-1");
	uint64_t g0 = shl_generation(h);
	/* The configured numbers again: nothing to follow, but recorded. */
	uint64_t same[3] = {600, 60000, 6000};
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, same), 0);
	CU_ASSERT_EQUAL(shl_generation(h), g0);
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, same), 0);
	/* The server halves RPM (burst: 10 a second's worth -> 5). */
	uint64_t half[3] = {300, 0, 0};
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, half), 1);
	uint64_t g1 = shl_generation(h);
	CU_ASSERT(g1 > g0);
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, half), 0); /* idempotent */
	CU_ASSERT_EQUAL(shl_generation(h), g1);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	int sa = pool_named(&st, "a");
	CU_ASSERT_EQUAL(st.pools[sa].limit[0], 600);	  /* configured */
	CU_ASSERT_EQUAL(st.pools[sa].observed[0], 300);	  /* observed */
	CU_ASSERT_EQUAL(st.pools[sa].observed[1], 60000); /* kept from before */
	CU_ASSERT_EQUAL(st.pools[sa].effective[0], 300);
	CU_ASSERT_EQUAL(st.pools[sa].follow_server, 1);
	/* The bucket admits at most the new burst now, in this process too. */
	shl_cost cost = {.input_tokens = 1, .max_tokens = 1};
	shl_ticket t[8];
	int ok = 0;
	for (int i = 0; i < 8; i++)
		ok += shl_try(h, ma, &cost, &t[i], NULL) == 0;
	CU_ASSERT_EQUAL(ok, 5);
	/* A second handle (another process's view) follows too. */
	shl_t *h2 = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(shl_name(h), 0, &h2, NULL), 0);
	shl_ticket t2;
	shl_refusal why;
	CU_ASSERT_EQUAL(shl_try(h2, ma, &cost, &t2, &why), -EAGAIN);
	CU_ASSERT_EQUAL(why.capacity, 5);
	/* Doubled: up, with follow_server on; tickets of the old rate give
	 * nothing back to the buckets (their generation has passed). */
	uint64_t dbl[3] = {1200, 0, 0};
	CU_ASSERT_EQUAL(shl_observe_limits(h2, a, dbl), 1);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	/* Up: the bucket keeps the units it had (none: 5 of 5 taken) and fills
	 * up to the new burst, 20, at the new rate; nothing comes back from
	 * tickets of the old rate. */
	CU_ASSERT_EQUAL(st.pools[sa].burst[0], 20);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[sa].available[0], 0.0, 0.01);
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(shl_cancel(h, &t[i]), 0);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[sa].available[0], 0.0, 0.01);
	/* 0.75 s at 1200 RPM (20 a second) later: 15 units back (less the
	 * pool's jitter margin, 0.2 %). */
	tu_boot += 750000000LL;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[sa].available[0], 15.0, 0.1);
	/* Down again, to 600 (burst 10): the deficit of 5 units stays: 5 left. */
	uint64_t back[3] = {600, 0, 0};
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, back), 1);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[sa].burst[0], 10);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[sa].available[0], 5.0, 0.1);
	CU_ASSERT_EQUAL(st.pools[sa].effective[0], 600);
	/* Garbage is refused and changes nothing. */
	uint64_t huge[3] = {2000000000000ULL, 0, 0};
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, huge), -EOVERFLOW);
	CU_ASSERT_EQUAL(shl_observe_limits(h, 99, dbl), -EINVAL);
	/* An apply that changes a's configured limits forgets the observed. */
	shl_config *same_cfg = two_pools(NULL, NULL);
	CU_ASSERT_EQUAL(shl_apply(h, same_cfg, NULL), 0); /* same limits */
	shl_config_free(same_cfg);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[sa].effective[0], 600);
	shl_config *c2 = tu_cfg("{\"pools\":[{\"name\":\"a\",\"rpm\":120,\"itpm\":60000,"
				"\"otpm\":6000," PRICES(1, 2) "}],\"models\":[{\"match\":\"a-*\","
				"\"pool\":\"a\"}]}");
	CU_ASSERT_EQUAL(shl_apply(h, c2, NULL), 0);
	shl_config_free(c2);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[0].effective[0], 120);
	CU_ASSERT_EQUAL(st.pools[0].observed[0], 0);
	shl_detach(h2);
	seg_done(h);
	tu_fake_clock(0);
}

static void test_observe_nofollow(void)
{
	shl_t *h = seg_of(two_pools(NULL, ",\"follow_server\":false"));
	int a = pool_of(h, "a");
	uint64_t g0 = shl_generation(h);
	/* Higher than configured: recorded, not followed. */
	uint64_t up[3] = {1200, 120000, 12000};
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, up), 0);
	CU_ASSERT_EQUAL(shl_generation(h), g0);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[0].follow_server, 0);
	CU_ASSERT_EQUAL(st.pools[0].observed[1], 120000);
	CU_ASSERT_EQUAL(st.pools[0].effective[1], 60000);
	/* Lower: never more than the server allows. */
	uint64_t down[3] = {0, 30000, 0};
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, down), 1);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[0].effective[0], 600);
	CU_ASSERT_EQUAL(st.pools[0].effective[1], 30000);
	CU_ASSERT_EQUAL(st.pools[0].effective[2], 6000);
	CU_ASSERT_EQUAL(st.pools[0].burst[1], 30000); /* a default burst, at the rate */
	/* Read-only handles cannot record. */
	shl_t *ro = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(shl_name(h), SHL_ATTACH_RDONLY, &ro, NULL), 0);
	uint64_t other[3] = {0, 20000, 0};
	CU_ASSERT_EQUAL(shl_observe_limits(ro, a, other), -EACCES);
	shl_detach(ro);
	seg_done(h);
}

/* ------------------------------------------------------------------ */
/* A response served by another model                                    */
/* ------------------------------------------------------------------ */

static void test_settle_as(void)
{
	shl_t *h = seg_of(two_pools(NULL, NULL));
	int ma = shl_lookup(h, "a-1"), mcheap = shl_lookup(h, "a-cheap"), mb = shl_lookup(h, "b-1");
	shl_cost cost = {.input_tokens = 100, .max_tokens = 100};
	shl_usage u = {.input_tokens = 100, .output_tokens = 50};
	shl_ticket t;
	/* Same pool, another model: that model's prices. */
	CU_ASSERT_EQUAL_FATAL(shl_try(h, ma, &cost, &t, NULL), 0);
	CU_ASSERT_EQUAL(shl_settle_as(h, &t, mcheap, &u), 0);
	CU_ASSERT_EQUAL(shl_settle_as(h, &t, mcheap, &u), -EALREADY);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	int sa = pool_named(&st, "a"), sb = pool_named(&st, "b");
	CU_ASSERT_EQUAL(st.pools[sa].settled, 1);
	CU_ASSERT_EQUAL(st.pools[sa].spend, 50 * 1000); /* a-cheap: 0 in, 1 out */
	/* Another pool: given back to a, charged to b at b's prices. */
	CU_ASSERT_EQUAL_FATAL(shl_try(h, ma, &cost, &t, NULL), 0);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	double a_itpm = st.pools[sa].available[1];
	CU_ASSERT_EQUAL(shl_settle_as(h, &t, mb, &u), 0);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[sa].cancelled, 1);
	CU_ASSERT_EQUAL(st.pools[sa].settled, 1);
	CU_ASSERT(st.pools[sa].available[1] > a_itpm); /* the estimate came back */
	CU_ASSERT_EQUAL(st.pools[sb].settled, 1);
	CU_ASSERT_EQUAL(st.pools[sb].tokens_in, 100);
	CU_ASSERT_EQUAL(st.pools[sb].tokens_out, 50);
	CU_ASSERT_EQUAL(st.pools[sb].spend, 100 * 10000 + 50 * 20000);
	CU_ASSERT(st.pools[sb].available[1] <= 60000 - 100 + 1);
	CU_ASSERT(st.pools[sb].available[0] <= 10 - 1 + 0.01);
	CU_ASSERT_EQUAL(st.spend_month, 50 * 1000 + 100 * 10000 + 50 * 20000);
	/* No entry for the serving model: as shl_settle. */
	CU_ASSERT_EQUAL_FATAL(shl_try(h, ma, &cost, &t, NULL), 0);
	CU_ASSERT_EQUAL(shl_settle_as(h, &t, -ESRCH, &u), 0);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[sa].settled, 2);
	CU_ASSERT_EQUAL_FATAL(shl_try(h, ma, &cost, &t, NULL), 0);
	CU_ASSERT_EQUAL(shl_settle_as(h, &t, 200, &u), -ESRCH);
	CU_ASSERT_EQUAL(shl_cancel(h, &t), 0);
	seg_done(h);
}

/* Every allocation of an observation failing in turn: -ENOMEM, nothing
 * recorded, nothing published; the same report later is followed. */
static void test_observe_faults(void)
{
	shl_t *h = seg_of(two_pools(NULL, NULL));
	int a = pool_of(h, "a");
	uint64_t half[3] = {300, 0, 0};
	int points = 0;
	for (long n = 1; n < 20; n++) {
		uint64_t g = shl_generation(h);
		atomic_store(&shl__fault_countdown, n);
		int r = shl_observe_limits(h, a, half);
		int fired = atomic_load(&shl__fault_countdown) == 0;
		atomic_store(&shl__fault_countdown, 0);
		if (r == 1) {
			CU_ASSERT(!fired || n > 1);
			break;
		}
		points++;
		CU_ASSERT_EQUAL(r, -ENOMEM);
		CU_ASSERT_EQUAL(shl_generation(h), g);
		shl_stats st;
		CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
		CU_ASSERT_EQUAL(st.pools[0].observed[0], 0);
		CU_ASSERT_EQUAL(st.pools[0].effective[0], 600);
	}
	CU_ASSERT(points >= 1);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[0].effective[0], 300);
	seg_done(h);
}

/* Admissions in several threads while another thread's observations move
 * the rate up and down: every call answers, tickets of either rate settle,
 * and the rate in force is the last one observed. */
struct obs_arg {
	shl_t *h;
	int model;
	_Atomic int stop;
	long bad;
};

static void *obs_admitter(void *p)
{
	struct obs_arg *a = p;
	shl_cost cost = {.input_tokens = 1, .max_tokens = 1};
	shl_usage u = {.input_tokens = 1, .output_tokens = 1};
	while (!atomic_load(&a->stop)) {
		shl_ticket t;
		int r = shl_try(a->h, a->model, &cost, &t, NULL);
		if (r == 0)
			r = shl_settle(a->h, &t, &u);
		if (r != 0 && r != -EAGAIN)
			__atomic_add_fetch(&a->bad, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_observe_threads(void)
{
	shl_t *h = seg_of(two_pools(NULL, NULL));
	struct obs_arg arg = {.h = h, .model = shl_lookup(h, "a-1")};
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, obs_admitter, &arg), 0);
	int a = pool_of(h, "a"), changed = 0;
	for (int i = 0; i < 200; i++) {
		uint64_t lim[3] = {i % 2 ? 300 : 1200, 0, 0};
		changed += shl_observe_limits(h, a, lim) == 1;
	}
	atomic_store(&arg.stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	CU_ASSERT_EQUAL(arg.bad, 0);
	CU_ASSERT_EQUAL(changed, 200);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[0].effective[0], 300);
	char report[1024];
	CU_ASSERT_EQUAL(shl_check(h, report, sizeof(report)), 0);
	seg_done(h);
}

/* The catch-all pool serves models of different server pools: it keeps
 * the lowest limits reported and never flaps between them. */
static void test_observe_catchall(void)
{
	shl_t *h = seg_of(two_pools("{\"pool\":\"c\"}", NULL));
	int c = pool_of(h, "c");
	CU_ASSERT_EQUAL(shl_model_pool(h, shl_lookup(h, "z-1")), c);
	uint64_t g0 = shl_generation(h);
	uint64_t one[3] = {30, 3000, 300}, two[3] = {120, 12000, 1200}, three[3] = {20, 0, 0};
	CU_ASSERT_EQUAL(shl_observe_limits(h, c, one), 1); /* down from 60: followed */
	uint64_t g1 = shl_generation(h);
	CU_ASSERT(g1 > g0);
	for (int i = 0; i < 10; i++) { /* another family, higher: no change, no flap */
		CU_ASSERT_EQUAL(shl_observe_limits(h, c, two), 0);
		CU_ASSERT_EQUAL(shl_observe_limits(h, c, one), 0);
	}
	CU_ASSERT_EQUAL(shl_generation(h), g1);
	CU_ASSERT_EQUAL(shl_observe_limits(h, c, three), 1); /* lower still: followed */
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	int sc = pool_named(&st, "c");
	CU_ASSERT_EQUAL(st.pools[sc].effective[0], 20);
	CU_ASSERT_EQUAL(st.pools[sc].effective[1], 3000);
	CU_ASSERT_EQUAL(st.pools[sc].effective[2], 300);
	/* A named pool follows up and down as usual. */
	int a = pool_of(h, "a");
	uint64_t up[3] = {1200, 0, 0}, down[3] = {300, 0, 0};
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, down), 1);
	CU_ASSERT_EQUAL(shl_observe_limits(h, a, up), 1);
	seg_done(h);
}

/* The request/response component (shl_ex_*) makes these calls itself: the
 * headers' limits are observed for the pool that served, a response
 * served by another model is charged to that model's pool, and a model
 * the policy refuses is refused at open. */
static shl_exchange *ex_admitted(shl_t *h, const char *model)
{
	char body[256];
	snprintf(body, sizeof(body),
		 "{\"model\":\"%s\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
		 "\"content\":\"hi\"}]}",
		 model);
	shl_exchange *x = NULL;
	shl_err e = {{0}};
	CU_ASSERT_EQUAL_FATAL(shl_ex_open(h, SHL_EX_MESSAGES, body, strlen(body), &x, &e), 0);
	int64_t rel;
	shl_refusal why;
	CU_ASSERT_EQUAL_FATAL(shl_ex_reserve(h, x, 0, &rel, &why), 0);
	CU_ASSERT_EQUAL_FATAL(shl_ex_start(h, x, &why), 0);
	return x;
}

static void ex_reply(shl_exchange *x, const char *rpm_limit, const char *served)
{
	shl_ex_status(x, 200);
	shl_ex_header(x, "content-type", 12, "application/json", 16);
	if (rpm_limit)
		shl_ex_header(x, "anthropic-ratelimit-requests-limit", 34, rpm_limit,
			      strlen(rpm_limit));
	char b[256];
	snprintf(b, sizeof(b),
		 "{\"type\":\"message\",\"model\":\"%s\",\"content\":[],"
		 "\"usage\":{\"input_tokens\":100,\"output_tokens\":50}}",
		 served);
	shl_ex_body(x, b, strlen(b));
}

static void test_exchange_calls(void)
{
	shl_t *h = seg_of(two_pools("\"refuse\"", NULL));
	int a = pool_of(h, "a");
	/* The headers' limit is observed and followed, in the same finish. */
	shl_exchange *x = ex_admitted(h, "a-1");
	uint64_t g0 = shl_generation(h);
	ex_reply(x, "300", "a-1");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	shl_ex_free(x);
	CU_ASSERT(shl_generation(h) > g0);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	int sa = pool_named(&st, "a"), sb = pool_named(&st, "b");
	CU_ASSERT_EQUAL(st.pools[sa].observed[0], 300);
	CU_ASSERT_EQUAL(st.pools[sa].effective[0], 300);
	CU_ASSERT_EQUAL(st.pools[sa].settled, 1);
	/* Asked for a-1, served by b-1: b's pool and prices, b's headers. */
	x = ex_admitted(h, "a-1");
	ex_reply(x, "900", "b-1");
	CU_ASSERT_EQUAL(shl_ex_finish(h, x, 1), SHL_EX_SETTLED);
	shl_ex_free(x);
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.pools[sa].settled, 1);
	CU_ASSERT_EQUAL(st.pools[sa].cancelled, 1);
	CU_ASSERT_EQUAL(st.pools[sb].settled, 1);
	CU_ASSERT_EQUAL(st.pools[sb].tokens_in, 100);
	CU_ASSERT_EQUAL(st.pools[sb].spend, 100 * 10000 + 50 * 20000);
	CU_ASSERT_EQUAL(st.pools[sb].observed[0], 900);
	CU_ASSERT_EQUAL(st.pools[sa].observed[0], 300); /* a's untouched */
	/* A model the configuration refuses: refused at open, named. */
	const char *z = "{\"model\":\"z-1\",\"max_tokens\":1,\"messages\":[]}";
	shl_err e = {{0}};
	CU_ASSERT_EQUAL(shl_ex_open(h, SHL_EX_MESSAGES, z, strlen(z), &x, &e), -ENOMSG);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "z-1"));
	(void)a;
	seg_done(h);
}

/* shl_reserve with no wait allowed (max_wait 0, "only now", as the shim's
 * SHMLIMIT_WAIT_MS=0) on the real clock: a free pool admits at once (the
 * clock moving on between the first look and the take is no lateness); a
 * full one refuses with -ETIMEDOUT and takes nothing. */
static void test_reserve_now_real_clock(void)
{
	shl_t *h = seg_of(two_pools(NULL, NULL));
	int m = shl_lookup(h, "a-1");
	shl_cost cost = {.input_tokens = 1, .max_tokens = 1};
	shl_ticket t[12];
	shl_refusal why;
	int ok = 0, late = 0;
	for (int i = 0; i < 12; i++) {
		int r = shl_reserve(h, m, &cost, 0, &t[ok], &why);
		ok += r == 0;
		late += r == -ETIMEDOUT;
	}
	CU_ASSERT(ok >= 10); /* the burst: 10 (600 RPM), maybe one refilled */
	CU_ASSERT_EQUAL(ok + late, 12);
	for (int i = 0; i < ok; i++)
		CU_ASSERT_EQUAL(shl_cancel(h, &t[i]), 0);
	seg_done(h);
}

void suite_account(void)
{
	CU_pSuite s = CU_add_suite("account", NULL, NULL);
	TU_ADD(s, test_named_presets);
	TU_ADD(s, test_unknown_parse);
	TU_ADD(s, test_unknown_policies);
	TU_ADD(s, test_observe_follow);
	TU_ADD(s, test_observe_nofollow);
	TU_ADD(s, test_settle_as);
	TU_ADD(s, test_observe_faults);
	TU_ADD(s, test_observe_threads);
	TU_ADD(s, test_observe_catchall);
	TU_ADD(s, test_exchange_calls);
	TU_ADD(s, test_reserve_now_real_clock);
}
