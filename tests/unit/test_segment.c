/*
 * test_segment.c - create, attach and every refusal with its own code;
 * apply (pools matched by name, state carried over), reset, check.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "testutil.h"

static shl_t *mk(const char *name, shl_config *c)
{
	shl_t *h = NULL;
	shl_err e = {{0}};
	int r = shl_create(name, c, 0, &h, &e);
	if (r)
		fprintf(stderr, "create: %s\n", e.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	return h;
}

static int attach_err(const char *name, unsigned flags, shl_err *e)
{
	shl_t *h = NULL;
	int r = shl_attach(name, flags, &h, e);
	if (h)
		shl_detach(h);
	return r;
}

/* Write into the segment's object directly, like a foreign process. */
static void poke(const char *name, off_t off, const void *p, size_t n)
{
	char path[128];
	snprintf(path, sizeof(path), "/%s", name);
	int fd = shm_open(path, O_RDWR, 0);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(pwrite(fd, p, n, off), (ssize_t)n);
	close(fd);
}

static void test_create_attach(void)
{
	const char *n = tu_name();
	char name[64];
	snprintf(name, sizeof(name), "%s", n);
	shl_config *c;
	shl_config_preset(1, &c);
	shl_t *h = mk(name, c);
	shl_err e = {{0}};
	/* O_EXCL: a second create is refused, unless replacing. */
	CU_ASSERT_EQUAL(shl_create(name, c, 0, NULL, &e), -EEXIST);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "already exists"));
	/* "/name" and "name" are the same segment. */
	char slash[80];
	snprintf(slash, sizeof(slash), "/%s", name);
	shl_t *h2 = NULL;
	CU_ASSERT_EQUAL(shl_attach(slash, 0, &h2, &e), 0);
	CU_ASSERT_EQUAL(shl_generation(h2), shl_generation(h));
	CU_ASSERT_STRING_EQUAL(shl_name(h2), slash);
	/* mode 0600 by default */
	struct stat st;
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
	CU_ASSERT_EQUAL((size_t)st.st_size, SHL_SEG_SIZE);
	shl_detach(h2);
	shl_detach(h);
	CU_ASSERT_EQUAL(shl_create(name, c, SHL_CREATE_REPLACE | SHL_CREATE_GROUP, &h, &e), 0);
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0660);
	shl_detach(h);
	CU_ASSERT_EQUAL(shl_unlink(name), 0);
	CU_ASSERT_EQUAL(shl_unlink(name), -ENOENT);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "does not exist"));
	shl_config_free(c);
}

static void test_bad_names(void)
{
	shl_config *c;
	shl_config_preset(1, &c);
	shl_err e = {{0}};
	const char *bad[] = {"", "/", "a/b", "a b", "..", "ü", NULL};
	for (int i = 0; bad[i]; i++) {
		CU_ASSERT_EQUAL(shl_create(bad[i], c, 0, NULL, &e), -ENAMETOOLONG);
		CU_ASSERT_EQUAL(attach_err(bad[i], 0, &e), -ENAMETOOLONG);
	}
	char longname[260];
	memset(longname, 'a', 250);
	longname[250] = 0;
	CU_ASSERT_EQUAL(shl_create(longname, c, 0, NULL, &e), -ENAMETOOLONG);
	CU_ASSERT_EQUAL(shl_create(NULL, c, 0, NULL, &e), -ENAMETOOLONG);
	CU_ASSERT_EQUAL(shl_create("okname", NULL, 0, NULL, &e), -EINVAL);
	shl_config_free(c);
}

static void test_bad_segments(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c;
	shl_config_preset(2, &c);
	shl_err e = {{0}};
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, &e), 0);

	/* wrong magic */
	uint64_t magic = 0x1122334455667788ULL, good = SHL_MAGIC;
	poke(name, 0, &magic, 8);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "header.magic"));
	poke(name, 0, &good, 8);
	/* old (or future) layout version */
	uint32_t v = 0;
	poke(name, 8, &v, 4);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EPROTONOSUPPORT);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "header.version is 0"));
	v = SHL_LAYOUT_VERSION;
	poke(name, 8, &v, 4);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), 0);
	/* header says another size */
	uint64_t sz = 12345;
	poke(name, 16, &sz, 8);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EBADMSG);
	sz = SHL_SEG_SIZE;
	poke(name, 16, &sz, 8);
	/* scribbled configuration: checksum no longer matches */
	uint64_t junk = 0xdeadbeef;
	poke(name, (off_t)(offsetof(struct shl_seg, cfg) + offsetof(struct shl_cfg_slot, pools) +
			   offsetof(struct shl_pool_cfg, limit)),
	     &junk, 8);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EUCLEAN);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "checksum"));
	/* generation pointing at a slot that serves another generation */
	uint64_t g = 3;
	poke(name, 0x40, &g, 8);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EUCLEAN);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "generation"));

	/* truncated object */
	char path[128];
	snprintf(path, sizeof(path), "/%s", name);
	int fd = shm_open(path, O_RDWR, 0);
	CU_ASSERT_EQUAL(ftruncate(fd, 4096), 0);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EBADMSG);
	CU_ASSERT_EQUAL(ftruncate(fd, 10), 0);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EBADMSG);
	CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "smaller than a header"));
	/* a foreign object: right size, random contents */
	CU_ASSERT_EQUAL(ftruncate(fd, (off_t)SHL_SEG_SIZE), 0);
	char *garbage = malloc(SHL_SEG_SIZE);
	for (size_t i = 0; i < SHL_SEG_SIZE; i++)
		garbage[i] = (char)(i * 7 + 3);
	CU_ASSERT_EQUAL(pwrite(fd, garbage, SHL_SEG_SIZE, 0), (ssize_t)SHL_SEG_SIZE);
	free(garbage);
	CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EPROTO);
	/* someone else's segment */
	CU_ASSERT_EQUAL(shl_create(name, c, SHL_CREATE_REPLACE, NULL, &e), 0);
	close(fd);
	fd = shm_open(path, O_RDWR, 0);
	if (geteuid() == 0) {
		CU_ASSERT_EQUAL(fchown(fd, 65534, 65534), 0);
		CU_ASSERT_EQUAL(attach_err(name, 0, &e), -EPERM);
		CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "owned by uid 65534"));
		CU_ASSERT_EQUAL(attach_err(name, SHL_ATTACH_ANY_OWNER, &e), 0);
	}
	close(fd);
	shl_unlink(name);
	shl_config_free(c);
}

static void test_readonly(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c;
	shl_config_preset(1, &c);
	CU_ASSERT_EQUAL_FATAL(shl_create(name, c, 0, NULL, NULL), 0);
	shl_t *h = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, SHL_ATTACH_RDONLY, &h, NULL), 0);
	int m = shl_lookup(h, "claude-haiku-4-5");
	CU_ASSERT(m >= 0);
	shl_ticket t;
	shl_cost cost = {.input_tokens = 10};
	CU_ASSERT_EQUAL(shl_try(h, m, &cost, &t, NULL), -EACCES);
	CU_ASSERT_EQUAL(shl_apply(h, c, NULL), -EACCES);
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_SPEND), -EACCES);
	CU_ASSERT_EQUAL(shl_hold(h, 0, 1000), -EACCES);
	shl_stats st;
	CU_ASSERT_EQUAL(shl_stats_get(h, &st), 0);
	CU_ASSERT_EQUAL(st.npools, 4); /* the preset's three and its catch-all */
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c);
}

static void test_apply(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	/* pool p: 600/min tokens, burst 600 */
	shl_config *c1 = tu_pool_cfg(600, 600, 600, 10, 600, 600, NULL, NULL);
	tu_boot = 1000LL * 1000000000LL; /* a still clock: exact arithmetic */
	tu_unix = 1790000000LL * 1000000000LL;
	tu_fake_clock(1);
	shl_t *h = mk(name, c1);
	shl_t *w = NULL; /* a second "worker" handle */
	CU_ASSERT_EQUAL_FATAL(shl_attach(name, 0, &w, NULL), 0);
	int m = shl_lookup(w, "m1");
	shl_ticket t;
	shl_cost cost = {.input_tokens = 300};
	CU_ASSERT_EQUAL(shl_try(w, m, &cost, &t, NULL), 0);
	uint64_t g1 = shl_generation(h);
	shl_stats st;
	shl_stats_get(w, &st);
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 300.0, 1e-9);

	/* Upgrade: double the limits, add a pool q in front of p. */
	const char *j2 = "{\"pools\":[{\"name\":\"q\",\"rpm\":5,\"itpm\":5,\"otpm\":5,\"prices\":{"
			 "\"input\":1,\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1,"
			 "\"cache_read\":1}},{\"name\":\"p\",\"rpm\":1200,\"itpm\":1200,"
			 "\"otpm\":1200,\"burst\":{\"rpm\":20},\"prices\":{\"input\":3,\"output\":15,"
			 "\"cache_write_5m\":3.75,\"cache_write_1h\":6,\"cache_read\":0.3}}],"
			 "\"models\":[{\"match\":\"m*\",\"pool\":\"p\"},{\"match\":\"q*\","
			 "\"pool\":\"q\"}]}";
	shl_config *c2 = tu_cfg(j2);
	shl_err e = {{0}};
	CU_ASSERT_EQUAL_FATAL(shl_apply(h, c2, &e), 0);
	CU_ASSERT_EQUAL(shl_generation(h), g1 + 1);
	/* The worker sees it at its next call, without re-attaching. */
	CU_ASSERT_EQUAL(shl_stats_get(w, &st), 0);
	CU_ASSERT_EQUAL(st.generation, g1 + 1);
	CU_ASSERT_EQUAL(st.npools, 2);
	/* p kept its index 0 (and its state); q went to a new index. */
	CU_ASSERT_STRING_EQUAL(st.pools[0].name, "p");
	CU_ASSERT_EQUAL(st.pools[0].limit[SHL_DIM_ITPM], 1200);
	CU_ASSERT_EQUAL(st.pools[0].burst[SHL_DIM_RPM], 20);
	CU_ASSERT_EQUAL(st.pools[0].admitted, 1);
	/* The deficit carried over in tokens: still about 300 used. */
	CU_ASSERT_DOUBLE_EQUAL(st.pools[0].available[SHL_DIM_ITPM], 1200.0 - 300.0, 1e-9);
	CU_ASSERT_STRING_EQUAL(st.pools[1].name, "q");
	CU_ASSERT_EQUAL(st.pools[1].admitted, 0);
	CU_ASSERT_EQUAL(shl_model_pool(w, shl_lookup(w, "m1")), 0);
	CU_ASSERT_EQUAL(shl_model_pool(w, shl_lookup(w, "q1")), 1);
	/* The ticket from before the apply settles against the same pool. */
	shl_usage u = {.input_tokens = 300, .output_tokens = 10};
	CU_ASSERT_EQUAL(shl_settle(w, &t, &u), 0);
	shl_stats_get(w, &st);
	CU_ASSERT_EQUAL(st.pools[0].tokens_out, 10);
	/* The live config reads back as what was applied. */
	shl_config *got = NULL;
	CU_ASSERT_EQUAL(shl_config_get(w, &got), 0);
	char *a = shl_config_to_json(got), *b = shl_config_to_json(c2);
	CU_ASSERT_PTR_NOT_NULL(strstr(a, "\"q\""));
	CU_ASSERT_EQUAL(strlen(a), strlen(b)); /* same pools, p and q in index order */
	free(a);
	free(b);
	shl_config_free(got);
	/* Removing p: a ticket of p settles spend only. */
	CU_ASSERT_EQUAL(shl_try(w, shl_lookup(w, "m2"), &cost, &t, NULL), 0);
	const char *j3 = "{\"pools\":[{\"name\":\"q\",\"rpm\":5,\"itpm\":5,\"otpm\":5,\"prices\":{"
			 "\"input\":1,\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1,"
			 "\"cache_read\":1}}],\"models\":[{\"match\":\"q*\",\"pool\":\"q\"}]}";
	shl_config *c3 = tu_cfg(j3);
	CU_ASSERT_EQUAL(shl_apply(h, c3, NULL), 0);
	CU_ASSERT_EQUAL(shl_lookup(w, "m1"), -ESRCH);
	CU_ASSERT_EQUAL(shl_settle(w, &t, &u), 0);
	CU_ASSERT_EQUAL(shl_settle(w, &t, &u), -EALREADY);
	/* Read-only apply of a bad slot is refused before anything is written. */
	shl_config bad;
	memcpy(&bad, c3, sizeof(bad));
	bad.slot.pools[0].limit[0] = 0;
	CU_ASSERT_EQUAL(shl_apply(h, &bad, &e), -EINVAL);
	CU_ASSERT_EQUAL(shl_generation(h), g1 + 2);
	shl_detach(w);
	shl_detach(h);
	tu_fake_clock(0);
	shl_unlink(name);
	shl_config_free(c1);
	shl_config_free(c2);
	shl_config_free(c3);
}

static void test_reset_and_check(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c = tu_pool_cfg(60, 6000, 6000, 1, 100, 100, NULL, "10");
	shl_t *h = mk(name, c);
	int m = shl_lookup(h, "mx");
	shl_ticket t;
	shl_cost cost = {.input_tokens = 100, .max_tokens = 10};
	CU_ASSERT_EQUAL(shl_try(h, m, &cost, &t, NULL), 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &cost, &t, NULL), -EAGAIN);
	CU_ASSERT_EQUAL(shl_reset(h, 0), -EINVAL);
	CU_ASSERT_EQUAL(shl_reset(h, 8), -EINVAL);
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_BUCKETS), 0);
	CU_ASSERT_EQUAL(shl_try(h, m, &cost, &t, NULL), 0);
	shl_stats st;
	shl_stats_get(h, &st);
	CU_ASSERT(st.spend_month > 0);
	CU_ASSERT_EQUAL(st.pools[0].admitted, 2);
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_SPEND | SHL_RESET_COUNTERS), 0);
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, 0);
	CU_ASSERT_EQUAL(st.pools[0].admitted, 0);
	char rep[2048];
	CU_ASSERT_EQUAL(shl_check(h, rep, sizeof(rep)), 0);
	CU_ASSERT_STRING_EQUAL(rep, "");
	/* Scribble a bucket a century ahead and a hold a week ahead. */
	atomic_store(&h->seg->pools[0].bkt[1].tat, (uint64_t)INT64_MAX);
	atomic_store(&h->seg->pools[0].hold_until, shl_now() + 7LL * 86400 * 1000000000LL);
	CU_ASSERT_EQUAL(shl_check(h, rep, sizeof(rep)), -EUCLEAN);
	CU_ASSERT_PTR_NOT_NULL(strstr(rep, "pools[0].tat[itpm]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(rep, "pools[0].hold_until"));
	/* A reservation horizon (shl_reserve's latest release) a century ahead. */
	atomic_store(&h->seg->pools[0].horizon, (uint64_t)INT64_MAX);
	CU_ASSERT_EQUAL(shl_check(h, rep, sizeof(rep)), -EUCLEAN);
	CU_ASSERT_PTR_NOT_NULL(strstr(rep, "pools[0].horizon"));
	/* The slack area's far and a slot's span a century ahead (bucket.c,
	 * "Slack": they only turn the refund rule off, but mean a scribble). */
	atomic_store(&h->seg->pext[0].slack.far, (uint64_t)INT64_MAX);
	atomic_store(&h->seg->pext[0].slack.slot[3].tag, (((uint64_t)INT64_MAX >> SHL_SLACK_SHIFT) + 1) << 32);
	CU_ASSERT_EQUAL(shl_check(h, rep, sizeof(rep)), -EUCLEAN);
	CU_ASSERT_PTR_NOT_NULL(strstr(rep, "pext[0].slack.far"));
	CU_ASSERT_PTR_NOT_NULL(strstr(rep, "pext[0].slack.slot[3].tag"));
	/* ...and a scribbled slot */
	h->seg->cfg[shl_generation(h) & 1].npools = 99;
	CU_ASSERT_EQUAL(shl_check(h, rep, sizeof(rep)), -EUCLEAN);
	CU_ASSERT_PTR_NOT_NULL(strstr(rep, "checksum"));
	CU_ASSERT_PTR_NOT_NULL(strstr(rep, "config.npools: 99"));
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c);
}

#define PR1 "\"prices\":{\"input\":1,\"output\":1,\"cache_write_5m\":1,\"cache_write_1h\":1," \
	    "\"cache_read\":1}"
#define TWO_POOLS                                                                          \
	"\"pools\":[{\"name\":\"a\",\"rpm\":60,\"itpm\":600,\"otpm\":600," PR1 "},"           \
	"{\"name\":\"b\",\"rpm\":60,\"itpm\":600,\"otpm\":600," PR1 "}]"

/* Model entries keep their index across applies while they stay; new ones
 * fill the places of removed ones; with fewer entries, only those above the
 * new count move (and their old index answers -ESRCH). */
static void test_apply_model_indices(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c1 = tu_cfg("{" TWO_POOLS ",\"models\":[{\"match\":\"a*\",\"pool\":\"a\"},"
				"{\"match\":\"b*\",\"pool\":\"b\"},{\"match\":\"c*\",\"pool\":\"a\"},"
				"{\"match\":\"d*\",\"pool\":\"b\"}]}");
	shl_t *h = mk(name, c1);
	CU_ASSERT_EQUAL(shl_lookup(h, "a1"), 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "d1"), 3);
	/* reorder, add e, move c to pool b: indices stay, e comes last */
	shl_config *c2 = tu_cfg("{" TWO_POOLS ",\"models\":[{\"match\":\"e*\",\"pool\":\"a\"},"
				"{\"match\":\"d*\",\"pool\":\"b\"},{\"match\":\"c*\",\"pool\":\"b\"},"
				"{\"match\":\"b*\",\"pool\":\"b\"},{\"match\":\"a*\",\"pool\":\"a\"}]}");
	CU_ASSERT_EQUAL_FATAL(shl_apply(h, c2, NULL), 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "a1"), 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "b1"), 1);
	CU_ASSERT_EQUAL(shl_lookup(h, "c1"), 2);
	CU_ASSERT_EQUAL(shl_model_pool(h, 2), 1);
	CU_ASSERT_EQUAL(shl_lookup(h, "d1"), 3);
	CU_ASSERT_EQUAL(shl_lookup(h, "e1"), 4);
	/* remove b and c, add x: four entries now; a and d stay, x takes b's
	 * place, and e (at 4, not below the new count) moves into c's */
	shl_config *c3 = tu_cfg("{" TWO_POOLS ",\"models\":[{\"match\":\"x*\",\"pool\":\"a\"},"
				"{\"match\":\"a*\",\"pool\":\"a\"},{\"match\":\"d*\",\"pool\":\"b\"},"
				"{\"match\":\"e*\",\"pool\":\"a\"}]}");
	CU_ASSERT_EQUAL_FATAL(shl_apply(h, c3, NULL), 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "a1"), 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "x1"), 1);
	CU_ASSERT_EQUAL(shl_lookup(h, "e1"), 2);
	CU_ASSERT_EQUAL(shl_lookup(h, "d1"), 3);
	CU_ASSERT_EQUAL(shl_lookup(h, "b1"), -ESRCH);
	shl_cost cost = {.input_tokens = 1};
	shl_ticket t;
	CU_ASSERT_EQUAL(shl_try(h, 4, &cost, &t, NULL), -ESRCH); /* e's old index */
	/* the live config reads back and applies again unchanged */
	shl_config *got = NULL;
	CU_ASSERT_EQUAL_FATAL(shl_config_get(h, &got), 0);
	CU_ASSERT_EQUAL(shl_apply(h, got, NULL), 0);
	CU_ASSERT_EQUAL(shl_lookup(h, "e1"), 2);
	shl_config_free(got);
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c1);
	shl_config_free(c2);
	shl_config_free(c3);
}

/* A reset republishes the configuration; the spend epoch survives applies
 * and separates tickets from before and after a spend reset. */
static void test_reset_epochs(void)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", tu_name());
	shl_config *c = tu_pool_cfg(6000, 60000, 60000, 100, 10000, 10000, NULL, NULL);
	shl_t *h = mk(name, c);
	int m = shl_lookup(h, "m");
	shl_cost cost = {.input_tokens = 1000};
	shl_ticket old, fresh;
	shl_stats st;
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &cost, &old, NULL), 0);
	uint64_t g = shl_generation(h);
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_COUNTERS), 0);
	CU_ASSERT_EQUAL(shl_generation(h), g); /* counters alone: nothing to fence */
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_SPEND), 0);
	CU_ASSERT_EQUAL(shl_generation(h), g + 1);
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &cost, &fresh, NULL), 0);
	/* an apply in between keeps the epoch */
	CU_ASSERT_EQUAL(shl_apply(h, c, NULL), 0);
	CU_ASSERT_EQUAL(shl_generation(h), g + 2);
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, fresh.spend);
	CU_ASSERT_EQUAL(shl_cancel(h, &old), 0); /* erased by the reset: no refund */
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, fresh.spend);
	CU_ASSERT_EQUAL(shl_cancel(h, &fresh), 0); /* after it: refunded, apply or not */
	shl_stats_get(h, &st);
	CU_ASSERT_EQUAL(st.spend_month, 0);
	/* a ticket of an earlier generation refunds nothing to the buckets */
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &cost, &fresh, NULL), 0);
	CU_ASSERT_EQUAL(shl_reset(h, SHL_RESET_BUCKETS), 0);
	CU_ASSERT_EQUAL_FATAL(shl_try(h, m, &cost, &old, NULL), 0);
	shl_usage u = {.input_tokens = 0};
	CU_ASSERT_EQUAL(shl_settle(h, &fresh, &u), 0);
	shl_stats_get(h, &st);
	CU_ASSERT(st.pools[0].available[SHL_DIM_ITPM] <= 10000 - 1000 + 1);
	CU_ASSERT_EQUAL(st.spend_month, old.spend); /* the spend refund still applied */
	char rep[1024];
	CU_ASSERT_EQUAL(shl_check(h, rep, sizeof(rep)), 0);
	shl_detach(h);
	shl_unlink(name);
	shl_config_free(c);
}

void suite_segment(void)
{
	CU_pSuite s = CU_add_suite("segment", NULL, NULL);
	TU_ADD(s, test_create_attach);
	TU_ADD(s, test_bad_names);
	TU_ADD(s, test_bad_segments);
	TU_ADD(s, test_readonly);
	TU_ADD(s, test_apply);
	TU_ADD(s, test_reset_and_check);
	TU_ADD(s, test_apply_model_indices);
	TU_ADD(s, test_reset_epochs);
}
