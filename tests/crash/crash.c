/*
 * crash.c - kill -9 workers at random moments and check that nobody else
 * is hurt.
 *
 * P worker processes (more than cores) admit and settle against two pools at
 * saturation while the parent SIGKILLs a random worker every few ms and
 * respawns it, `kills` times.  Half the worker instances take a place in
 * line (shl_reserve, up to 10 ms ahead), sleep until the release and start
 * (shl_start), or give the place up half-way (shl_cancel); a kill often
 * lands while one sleeps.  Each worker instance records, in memory the
 * parent keeps (so it survives the kill):
 *   - every admission it made (its release time, t.admitted_at, pool,
 *     units): the bound check, which holds for release times;
 *   - every spend-changing call as "pending" before and "done" after: the
 *     spend check.  A call cut by the kill stays pending; whether it landed
 *     is unknowable from outside, so it may or may not be in the segment.
 * At the end:
 *   1. no pool admitted, over any window between two logged admissions, more
 *      than burst + rate x window (in RPM and ITPM, each admission's ITPM
 *      net of what its settle reported under the estimate, which the
 *      settle gives back while others wait in line; and in OTPM for pool b,
 *      in "reserve" mode, whose OTPM limit binds: each record holds the
 *      units admission reserved, less what the settle that follows gives
 *      back, set before the settle, like `cancelled`, so a cut settle only
 *      weakens the check.  Pool a is in "actual" mode, where admission
 *      takes no OTPM and each settle charges its output whatever the
 *      bucket holds: the output of requests admitted while it had credit
 *      has no bound of this form, so only pool b's OTPM is checked);
 *   2. segment spend = sum of done calls + some of the pending ones: it lies
 *      between done + (pending refunds) and done + (pending charges);
 *   3. shl_check() finds the segment sound;
 *   4. nothing is wedged: a fresh process, after sleeping the wait it is
 *      told, is admitted in every pool;
 *   5. the run ended on its own (the caller runs it under timeout(1)).
 *
 * Usage: shmlimit-crash [--workers P] [--kills K] [--seconds S]
 * With SHL_CRASH_DEBUG set, the first window over the bound is printed with
 * every admission of that pool around it (release and call times, whether
 * it came from a reservation, and when it was cancelled).
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmlimit.h"

#define MAXINST 4096 /* worker instances (P + kills) */
#define MAXADM 4096  /* admissions logged per instance */

struct adm {
	int64_t ts;
	uint32_t pool;
	_Atomic uint32_t itpm;      /* ITPM units held: t.itpm, lowered BEFORE a settle that
				       reports less (same rule as `cancelled`) */
	_Atomic uint32_t cancelled; /* set BEFORE the cancel: a cut cancel only weakens the check */
	_Atomic uint32_t otpm;      /* OTPM units held: t.otpm at admission, lowered BEFORE a
				       settle that refunds part of it (same rule as `cancelled`) */
	uint32_t reserved;          /* 1: from shl_reserve (debug output) */
	int64_t called;             /* shl_now() before the call */
	int64_t cancel_at;          /* shl_now() before a cancel (debug output) */
};

struct inst {
	_Atomic int64_t done;     /* spend units of completed calls */
	_Atomic int64_t pend_lo;  /* the cut call changed spend by 0 or this... */
	_Atomic int64_t pend_hi;  /* ...or this (one of them, we cannot tell) */
	_Atomic uint32_t nadm;
	_Atomic uint32_t ahead; /* reservations whose release lay ahead */
	struct adm a[MAXADM];
};

struct shared {
	_Atomic int stop;
	struct inst in[MAXINST];
};

static struct shared *sh;
static char segname[64];
static const uint64_t RPM = 120000, ITPM = 1200000, BRPM = 20, BITPM = 4000;
/* Pool b's OTPM ("reserve" mode): low enough to bind (about 15 output
 * tokens reserved a request, against 2000 requests/s of RPM). */
static const uint64_t OTPM_B = 600000, BOTPM_B = 1000;

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void pend(struct inst *w, int64_t lo, int64_t hi)
{
	atomic_store(&w->pend_lo, lo);
	atomic_store(&w->pend_hi, hi);
}

static void sleep_until(int64_t at)
{
	struct timespec ts = {.tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL};
	while (clock_nanosleep(CLOCK_BOOTTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void worker(int id)
{
	struct inst *w = &sh->in[id];
	shl_t *h;
	if (shl_attach(segname, 0, &h, NULL) != 0)
		_exit(3);
	int models[2] = {shl_lookup(h, "a-model"), shl_lookup(h, "b-model")};
	uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)id * 7919;
	const int reserver = id % 2 == 1; /* takes a place in line */
	while (!atomic_load(&sh->stop)) {
		int mi = (int)(rnd(&seed) & 1);
		shl_cost c = {.input_tokens = 1 + rnd(&seed) % 40, .max_tokens = 1 + rnd(&seed) % 30};
		int64_t res = 0;
		shl_price(h, models[mi], &c, &res);
		shl_ticket t;
		pend(w, 0, res); /* an admission reserves res, a refusal nothing */
		int64_t called = shl_now();
		int r = reserver ? shl_reserve(h, models[mi], &c, 10000000, &t, NULL)
				 : shl_try(h, models[mi], &c, &t, NULL);
		if (r != 0) {
			pend(w, 0, 0);
			continue;
		}
		atomic_fetch_add(&w->done, res);
		pend(w, 0, 0);
		uint32_t k = atomic_load(&w->nadm);
		if (k < MAXADM) {
			w->a[k].ts = t.admitted_at;
			w->a[k].pool = (uint32_t)t.pool;
			atomic_store(&w->a[k].itpm, (uint32_t)t.itpm);
			w->a[k].reserved = (uint32_t)reserver;
			w->a[k].called = called;
			atomic_store(&w->a[k].otpm, (uint32_t)t.otpm);
			atomic_store(&w->a[k].cancelled, 0);
			atomic_store(&w->nadm, k + 1);
		}
		int give_up = rnd(&seed) % 5 == 0;
		if (reserver) {
			/* to the release, or half-way there to give the place up */
			int64_t now = shl_now();
			if (t.admitted_at > now)
				atomic_fetch_add(&w->ahead, 1);
			if (t.admitted_at > now)
				sleep_until(give_up ? now + (t.admitted_at - now) / 2 : t.admitted_at);
			if (!give_up && shl_start(h, &t, NULL) != 0)
				give_up = 1;
		}
		if (give_up) {
			/* a request never sent: its units come back, so it must not
			 * count toward the bound (net admissions are bounded) */
			if (k < MAXADM) {
				w->a[k].cancel_at = shl_now();
				atomic_store(&w->a[k].cancelled, 1);
			}
			pend(w, 0, -res);
			shl_cancel(h, &t);
			atomic_fetch_add(&w->done, -res);
			pend(w, 0, 0);
			continue;
		}
		/* One settle in three reports up to half the estimate less input
		 * (the surplus a learned ratio leaves), which the settle gives
		 * back, by the near slots' rule while a line is queued
		 * (bucket.c): record the units still held first, so that the
		 * bound check counts what was given back as never admitted. */
		shl_usage u = {.input_tokens = c.input_tokens, .output_tokens = rnd(&seed) % 30};
		if (rnd(&seed) % 3 == 0)
			u.input_tokens -= rnd(&seed) % (c.input_tokens / 2 + 1);
		if (k < MAXADM && u.input_tokens < t.itpm)
			atomic_store(&w->a[k].itpm, (uint32_t)u.input_tokens);
		/* In "reserve" mode a settle below max_tokens refunds the rest:
		 * record the units still held first (a charge above it only
		 * delays later admissions, so the reservation stays counted). */
		if (k < MAXADM && u.output_tokens < t.otpm)
			atomic_store(&w->a[k].otpm, (uint32_t)u.output_tokens);
		int64_t act = 0;
		shl_price_usage(h, models[mi], &u, 0, &act);
		pend(w, 0, act - res);
		shl_settle(h, &t, &u);
		atomic_fetch_add(&w->done, act - res);
		pend(w, 0, 0);
	}
	shl_detach(h);
	_exit(0);
}

static pid_t spawn(int id)
{
	pid_t p = fork();
	if (p == 0)
		worker(id);
	return p;
}

static int cmp_adm(const void *x, const void *y)
{
	const struct adm *a = x, *b = y;
	return (a->ts > b->ts) - (a->ts < b->ts);
}

static int passed, failed;
static void check(int ok, const char *what);
static void check(int ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
	if (ok)
		passed++;
	else
		failed++;
}

int main(int argc, char **argv)
{
	int P = 6, K = 200, secs = 20;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--workers") == 0)
			P = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--kills") == 0)
			K = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--seconds") == 0)
			secs = atoi(argv[i + 1]);
	}
	if (P < 1 || P > 64 || K < 0 || P + K > MAXINST || secs < 1) {
		fprintf(stderr, "usage: shmlimit-crash [--workers 1..64] [--kills N] [--seconds S]\n");
		return 2;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 2;
	snprintf(segname, sizeof(segname), "shlcrash-%d", (int)getpid());
	char cfgjson[1024];
	const char *pr = "\"prices\":{\"input\":3,\"output\":15,\"cache_write_5m\":3.75,"
			 "\"cache_write_1h\":6,\"cache_read\":0.3}";
	snprintf(cfgjson, sizeof(cfgjson),
		 "{\"spend_cap_usd\":null,\"pools\":["
		 "{\"name\":\"a\",\"rpm\":%llu,\"itpm\":%llu,\"otpm\":1000000,\"burst\":{\"rpm\":%llu,"
		 "\"itpm\":%llu},%s},"
		 "{\"name\":\"b\",\"rpm\":%llu,\"itpm\":%llu,\"otpm\":%llu,\"burst\":{\"rpm\":%llu,"
		 "\"itpm\":%llu,\"otpm\":%llu},\"otpm_mode\":\"reserve\",%s}],"
		 "\"models\":[{\"match\":\"a*\",\"pool\":\"a\"},{\"match\":\"b*\",\"pool\":\"b\"}]}",
		 (unsigned long long)RPM, (unsigned long long)ITPM, (unsigned long long)BRPM,
		 (unsigned long long)BITPM, pr, (unsigned long long)RPM, (unsigned long long)ITPM,
		 (unsigned long long)OTPM_B, (unsigned long long)BRPM, (unsigned long long)BITPM,
		 (unsigned long long)BOTPM_B, pr);
	shl_config *cfg;
	shl_err e;
	if (shl_config_parse(cfgjson, strlen(cfgjson), &cfg, &e) != 0 ||
	    shl_create(segname, cfg, SHL_CREATE_REPLACE, NULL, &e) != 0) {
		fprintf(stderr, "crash: %s\n", e.msg);
		return 2;
	}
	shl_config_free(cfg);

	pid_t pids[64];
	int slot[64], next = 0;
	for (int i = 0; i < P; i++) {
		slot[i] = next++;
		pids[i] = spawn(slot[i]);
	}
	uint64_t seed = (uint64_t)getpid() * 2654435761u;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int kills = 0;
	while (kills < K) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec >= secs)
			break;
		struct timespec d = {0, (long)(rnd(&seed) % 5000000)};
		nanosleep(&d, NULL);
		int v = (int)(rnd(&seed) % (uint64_t)P);
		kill(pids[v], SIGKILL);
		waitpid(pids[v], NULL, 0);
		kills++;
		slot[v] = next++;
		pids[v] = spawn(slot[v]);
	}
	atomic_store(&sh->stop, 1);
	int clean = 1;
	for (int i = 0; i < P; i++) {
		int st = 0;
		waitpid(pids[i], &st, 0);
		clean &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	uint64_t ahead = 0;
	for (int i = 0; i < next; i++)
		ahead += atomic_load(&sh->in[i].ahead);
	printf("crash: %d workers, %d kills, %d worker instances\n", P, kills, next);
	char rwhat[128];
	snprintf(rwhat, sizeof(rwhat), "reserve traffic: %llu reservations released ahead of their call",
		 (unsigned long long)ahead);
	check(ahead > 0, rwhat);
	check(clean, "surviving workers exited cleanly when told");

	/* 1. the bound, per pool, over every window between two admissions */
	size_t total = 0;
	for (int i = 0; i < next; i++)
		total += atomic_load(&sh->in[i].nadm);
	struct adm *all = malloc(total * sizeof(*all) + 1);
	for (int pool = 0; pool < 2; pool++) {
		size_t n = 0;
		for (int i = 0; i < next; i++)
			for (uint32_t k = 0; k < atomic_load(&sh->in[i].nadm); k++)
				if (sh->in[i].a[k].pool == (uint32_t)pool &&
				    !atomic_load(&sh->in[i].a[k].cancelled))
					all[n++] = sh->in[i].a[k];
		qsort(all, n, sizeof(*all), cmp_adm);
		long bad = 0, bad_otpm = 0;
		uint64_t itpm_total = 0, otpm_total = 0;
		for (size_t i = 0; i < n; i++) {
			itpm_total += atomic_load(&all[i].itpm);
			otpm_total += atomic_load(&all[i].otpm);
		}
		for (size_t i = 0; i < n; i++) {
			uint64_t units = 0, ounits = 0;
			for (size_t j = i; j < n; j++) {
				units += atomic_load(&all[j].itpm);
				ounits += atomic_load(&all[j].otpm);
				unsigned __int128 dt = (unsigned __int128)(all[j].ts - all[i].ts);
				if (j - i + 1 > BRPM + dt * RPM / 60000000000ULL ||
				    units > BITPM + dt * ITPM / 60000000000ULL) {
					if (bad++ == 0 && getenv("SHL_CRASH_DEBUG")) {
						printf("pool %d: window [%zu, %zu] dt %llu ns: %zu requests "
						       "(allowed %llu), %llu tokens (allowed %llu)\n",
						       pool, i, j, (unsigned long long)dt, j - i + 1,
						       (unsigned long long)(BRPM + dt * RPM / 60000000000ULL),
						       (unsigned long long)units,
						       (unsigned long long)(BITPM + dt * ITPM / 60000000000ULL));
						for (int q = 0; q < next; q++)
							for (uint32_t k = 0; k < atomic_load(&sh->in[q].nadm); k++) {
								struct adm *x = &sh->in[q].a[k];
								int in_ts = x->ts >= all[i].ts - 30000000 &&
									    x->ts <= all[j].ts + 1000000;
								int in_call = x->called >= all[i].ts - 30000000 &&
									      x->called <= all[j].ts + 1000000;
								if (x->pool != (uint32_t)pool || !(in_ts || in_call))
									continue;
								printf("  inst %d: ts %lld called %lld itpm %u res %u "
								       "cancelled %u at %lld\n", q,
								       (long long)x->ts, (long long)x->called, x->itpm,
								       x->reserved, atomic_load(&x->cancelled),
								       (long long)x->cancel_at);
							}
					}
				}
				if (pool == 1 && ounits > BOTPM_B + dt * OTPM_B / 60000000000ULL)
					bad_otpm++;
				/* Windows whose allowance passes the pool's whole
				 * log in every dimension cannot fail. */
				if (dt * RPM / 60000000000ULL > n &&
				    dt * ITPM / 60000000000ULL > itpm_total &&
				    dt * OTPM_B / 60000000000ULL > otpm_total)
					break;
			}
		}
		char what[128];
		snprintf(what, sizeof(what),
			 "pool %c: %zu logged admissions, none over burst + rate x window", 'a' + pool, n);
		check(bad == 0 && n > 0, what);
		if (pool == 1) {
			/* More than the burst held in all: windows where the
			 * refill rate matters were checked. */
			snprintf(what, sizeof(what),
				 "pool b: %llu OTPM units held (reserve mode), none over "
				 "burst + rate x window",
				 (unsigned long long)otpm_total);
			check(bad_otpm == 0 && otpm_total > BOTPM_B, what);
		}
	}
	free(all);

	/* 2. spend: done calls, plus whichever cut calls landed */
	int64_t done = 0, lo = 0, hi = 0;
	int pendings = 0;
	for (int i = 0; i < next; i++) {
		done += atomic_load(&sh->in[i].done);
		int64_t a = atomic_load(&sh->in[i].pend_lo), b = atomic_load(&sh->in[i].pend_hi);
		if (a != b) {
			pendings++;
			lo += a < b ? a : b;
			hi += a < b ? b : a;
		}
	}
	shl_t *h;
	if (shl_attach(segname, 0, &h, &e) != 0) {
		check(0, e.msg);
		return 1;
	}
	shl_stats st;
	shl_stats_get(h, &st);
	char what[256];
	snprintf(what, sizeof(what),
		 "spend %lld = done %lld + cut calls in [%lld, %lld] (%d calls cut mid-way)",
		 (long long)st.spend_month, (long long)done, (long long)lo, (long long)hi, pendings);
	check(st.spend_month >= done + lo && st.spend_month <= done + hi, what);

	/* 3. the segment validates */
	char rep[4096];
	int cr = shl_check(h, rep, sizeof(rep));
	snprintf(what, sizeof(what), "segment validates%s%.200s", cr ? ": " : "", cr ? rep : "");
	check(cr == 0, what);

	/* 4. nothing wedged: each pool admits after the wait it announces */
	for (int mi = 0; mi < 2; mi++) {
		int m = shl_lookup(h, mi ? "b-x" : "a-x");
		shl_cost c = {.input_tokens = 10, .max_tokens = 10};
		shl_ticket t;
		shl_refusal why;
		int r = shl_acquire(h, m, &c, 5LL * 1000000000LL, &t, &why);
		snprintf(what, sizeof(what), "pool %c admits a fresh request after the kills (%s)",
			 'a' + mi, r ? shl_strerror(r) : "ok");
		check(r == 0, what);
	}
	shl_detach(h);
	shl_unlink(segname);
	printf("crash: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
