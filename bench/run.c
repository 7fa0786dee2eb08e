/*
 * run.c - how one measurement is taken: in-process for the uncontended
 * figures, P forked workers for contention and saturation.
 *
 * Uncontended: the caller's own process times batches of 64 calls with the
 * tick counter (so per-call timer overhead is amortised away) and keeps
 * every batch's mean; the median and p99 are over batches.  Admit-only,
 * settle-only and admit+settle batches are interleaved so all three see
 * the same machine state.
 *
 * Contended: a control block in a MAP_SHARED mapping holds a start gate and
 * a stop flag.  The parent forks P workers; each attaches (as a real worker
 * would, by name), reports ready, spins politely (sched_yield) until the
 * gate opens, runs until the stop flag, writes its counts and exits.  The
 * parent opens the gate, sleeps the run's duration, raises the flag and
 * reaps every worker within a bounded time (SIGKILL past it), so a wedged
 * mechanism cannot hang the bench.  Three loop kinds:
 *   TPUT  admit+settle, counting only (no timer in the loop);
 *   LAT   admit+settle, each pair timed with the tick counter;
 *   SAT   demand above the limit: retry at once when refused, record the
 *         clock value of every admission for the over-admission check.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "run.h"

/* Workers of the current run, for the signal handler. */
volatile pid_t bench_children[BENCH_MAX_PROCS];

struct ctl {
	_Atomic int ready;
	_Atomic int go;
	_Atomic int stop;
	int pad0[13];
	struct {
		uint64_t ops, refused, errors, nrec;
		int64_t cpu_ns; /* CPU time in the measured loop */
		int err;
		char msg[180];
	} res[BENCH_MAX_PROCS];
};

static void sleep_ns(int64_t ns)
{
	struct timespec ts = {.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ */
/* Uncontended                                                         */
/* ------------------------------------------------------------------ */

#define BATCH 64

int bench_uncontended(const struct bench_mech_ops *ops, const struct bench_scenario *sc,
		      int max_reps, int64_t budget_ns, struct bench_unc *out)
{
	memset(out, 0, sizeof(*out));
	struct bench_mech m = {.ops = ops, .sc = sc, .epoch = bench_boot_ns()};
	int rc = ops->setup(&m);
	if (rc != 0) {
		snprintf(out->msg, sizeof(out->msg), "setup: %.40s %.150s", strerror(-rc), m.errmsg);
		return rc;
	}
	rc = ops->attach(&m, 0);
	if (rc != 0) {
		snprintf(out->msg, sizeof(out->msg), "attach: %.40s %.150s", strerror(-rc), m.errmsg);
		ops->teardown(&m);
		return rc;
	}
	double *v[3];
	for (int k = 0; k < 3; k++)
		v[k] = calloc((size_t)max_reps, sizeof(double));
	struct bench_adm *a = calloc(BATCH, sizeof(*a));
	if (v[0] == NULL || v[1] == NULL || v[2] == NULL || a == NULL) {
		rc = -ENOMEM;
		goto done;
	}
	double tpn = bench_ticks_per_ns();
	int64_t t0 = bench_mono_ns();
	int reps = 0;
	/* One warm-up round, not kept. */
	for (int r = -1; r < max_reps; r++) {
		uint64_t k0, k1;
		/* admit only, then settle untimed */
		k0 = bench_ticks();
		for (int i = 0; i < BATCH; i++)
			if (ops->admit(&m, 0, &a[i]) != 0)
				out->errors++;
		k1 = bench_ticks();
		for (int i = 0; i < BATCH; i++)
			ops->settle(&m, &a[i]);
		if (r >= 0)
			v[0][r] = (double)(k1 - k0) / tpn / BATCH;
		/* admit untimed, settle only */
		for (int i = 0; i < BATCH; i++)
			if (ops->admit(&m, 0, &a[i]) != 0)
				out->errors++;
		k0 = bench_ticks();
		for (int i = 0; i < BATCH; i++)
			if (ops->settle(&m, &a[i]) != 0)
				out->errors++;
		k1 = bench_ticks();
		if (r >= 0)
			v[1][r] = (double)(k1 - k0) / tpn / BATCH;
		/* the whole lifecycle */
		k0 = bench_ticks();
		for (int i = 0; i < BATCH; i++) {
			if (ops->admit(&m, 0, &a[0]) != 0)
				out->errors++;
			else if (ops->settle(&m, &a[0]) != 0)
				out->errors++;
		}
		k1 = bench_ticks();
		if (r >= 0) {
			v[2][r] = (double)(k1 - k0) / tpn / BATCH;
			reps = r + 1;
		}
		if (out->errors > 0) {
			snprintf(out->msg, sizeof(out->msg), "calls failed or were refused");
			break;
		}
		if (r >= 19 && bench_mono_ns() - t0 > budget_ns)
			break;
	}
	out->reps = reps;
	out->calls = (uint64_t)reps * BATCH;
	for (int k = 0; k < 3 && reps > 0; k++) {
		qsort(v[k], (size_t)reps, sizeof(double), cmp_double);
		out->med[k] = v[k][reps / 2];
		int i99 = (int)(0.99 * reps);
		out->p99[k] = v[k][i99 < reps ? i99 : reps - 1];
	}
	rc = out->errors ? -EPROTO : 0;
done:
	for (int k = 0; k < 3; k++)
		free(v[k]);
	free(a);
	ops->detach(&m);
	ops->teardown(&m);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Contended                                                           */
/* ------------------------------------------------------------------ */

static void child_main(struct bench_mech *m, struct ctl *ctl, int id, int kind, int pool,
		       struct bench_hist *hist, int64_t *rec, uint64_t reccap)
{
	int rc = m->ops->attach(m, id);
	if (rc != 0) {
		ctl->res[id].err = rc;
		snprintf(ctl->res[id].msg, sizeof(ctl->res[id].msg), "attach: %.40s %.120s",
			 strerror(-rc), m->errmsg);
		atomic_fetch_add(&ctl->ready, 1);
		_exit(1);
	}
	/* relaxed is enough for the gate: nothing is published through it. */
	atomic_fetch_add(&ctl->ready, 1);
	while (!atomic_load_explicit(&ctl->go, memory_order_acquire) &&
	       !atomic_load_explicit(&ctl->stop, memory_order_relaxed))
		sched_yield();
	uint64_t ops = 0, refused = 0, errors = 0, nrec = 0;
	int err = 0;
	double tpn = bench_ticks_per_ns();
	struct timespec c0, c1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	struct bench_adm a;
	/* At least one admission per worker, however late the scheduler runs
	 * it: a wedged mechanism is still bounded by the parent's reaper. */
	while (ops == 0 || !atomic_load_explicit(&ctl->stop, memory_order_relaxed)) {
		uint64_t k0 = kind == BENCH_LAT ? bench_ticks() : 0;
		int r = m->ops->admit(m, pool, &a);
		if (r == 0) {
			if (kind == BENCH_SAT) {
				if (nrec < reccap)
					rec[nrec] = a.now;
				nrec++;
			}
			r = m->ops->settle(m, &a);
			if (r == 0)
				ops++;
		} else if (r == 1) {
			refused++;
			continue;
		}
		if (r < 0) {
			errors++;
			err = r;
			break;
		}
		if (kind == BENCH_LAT)
			bench_hist_add(hist, (uint64_t)((double)(bench_ticks() - k0) / tpn));
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	ctl->res[id].cpu_ns = (int64_t)(c1.tv_sec - c0.tv_sec) * 1000000000LL + (c1.tv_nsec - c0.tv_nsec);
	ctl->res[id].ops = ops;
	ctl->res[id].refused = refused;
	ctl->res[id].errors = errors;
	ctl->res[id].nrec = nrec;
	ctl->res[id].err = err;
	if (err)
		snprintf(ctl->res[id].msg, sizeof(ctl->res[id].msg), "%.40s %.120s", strerror(-err),
			 m->errmsg);
	m->ops->detach(m);
	_exit(0);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

uint64_t bench_over_admissions(const int64_t *t, uint64_t n, uint64_t interval, uint64_t tol)
{
	/* Any set of admissions whose decision times lie in [a, b] obeys
	 * count * interval <= b - a + tol (see README "Accuracy").  Over the
	 * sorted times: max over i <= j of (j-i+1)*I - (t_j - t_i) - tol,
	 * i.e. max_j ((j+1)I - t_j) + max_{i<=j} (t_i - iI). */
	__int128 best = 0, maxb = -((__int128)1 << 100);
	for (uint64_t j = 0; j < n; j++) {
		__int128 bi = (__int128)t[j] - (__int128)j * interval;
		if (bi > maxb)
			maxb = bi;
		__int128 aj = (__int128)(j + 1) * interval - t[j];
		__int128 excess = aj + maxb - (__int128)tol;
		if (excess > best)
			best = excess;
	}
	if (best <= 0)
		return 0;
	return (uint64_t)((best + interval - 1) / interval);
}

int bench_contended(const struct bench_mech_ops *ops, const struct bench_scenario *sc, int nprocs,
		    int kind, int separate, int64_t duration_ns, struct bench_cont *out)
{
	memset(out, 0, sizeof(*out));
	out->procs = nprocs;
	if (nprocs < 1 || nprocs > BENCH_MAX_PROCS)
		return -EINVAL;
	struct bench_mech m = {.ops = ops, .sc = sc, .epoch = bench_boot_ns()};
	size_t ctl_sz = sizeof(struct ctl);
	size_t hist_sz = sizeof(struct bench_hist) * (size_t)nprocs;
	/* Saturation records: what the limit allows over the run, with room. */
	uint64_t reccap = 0;
	if (kind == BENCH_SAT)
		reccap = sc->burst[0] + (uint64_t)(duration_ns / (int64_t)sc->interval[0]) * 2 + 4096;
	size_t rec_sz = sizeof(int64_t) * (size_t)(reccap ? reccap : 1) * (size_t)nprocs;
	struct ctl *ctl = mmap(NULL, ctl_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct bench_hist *hist = kind == BENCH_LAT ? mmap(NULL, hist_sz, PROT_READ | PROT_WRITE,
						      MAP_SHARED | MAP_ANONYMOUS, -1, 0)
						: NULL;
	int64_t *rec = kind == BENCH_SAT ? mmap(NULL, rec_sz, PROT_READ | PROT_WRITE,
						MAP_SHARED | MAP_ANONYMOUS, -1, 0)
					 : NULL;
	int rc = 0;
	if (ctl == MAP_FAILED || hist == MAP_FAILED || rec == MAP_FAILED) {
		rc = -ENOMEM;
		snprintf(out->msg, sizeof(out->msg), "mmap: %s", strerror(errno));
		goto unmap;
	}
	rc = ops->setup(&m);
	if (rc != 0) {
		snprintf(out->msg, sizeof(out->msg), "setup: %.40s %.150s", strerror(-rc), m.errmsg);
		goto unmap;
	}
	fflush(NULL);
	int started = 0;
	for (int i = 0; i < nprocs; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			rc = -errno;
			snprintf(out->msg, sizeof(out->msg), "fork: %s", strerror(errno));
			break;
		}
		if (pid == 0) {
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			int pool = separate ? i % sc->npools : 0;
			child_main(&m, ctl, i, kind, pool, hist ? &hist[i] : NULL,
				   rec ? rec + (size_t)i * reccap : NULL, reccap);
		}
		bench_children[i] = pid;
		started++;
	}
	/* Gate: every worker attached (10 s at most). */
	for (int w = 0; w < 10000 && atomic_load(&ctl->ready) < started; w++)
		sleep_ns(1000000);
	int64_t go_boot = bench_boot_ns(), t0 = bench_mono_ns();
	atomic_store_explicit(&ctl->go, 1, memory_order_release);
	if (rc == 0)
		sleep_ns(duration_ns);
	atomic_store_explicit(&ctl->stop, 1, memory_order_relaxed);
	int64_t t1 = bench_mono_ns(), stop_boot = bench_boot_ns();
	/* Reap, bounded: 20 s for all of them together, then SIGKILL. */
	int64_t reap_deadline = bench_mono_ns() + 20000000000LL;
	for (int i = 0; i < started; i++) {
		int st, done = 0;
		while (!done && bench_mono_ns() < reap_deadline) {
			pid_t r = waitpid(bench_children[i], &st, WNOHANG);
			if (r == bench_children[i] || (r < 0 && errno != EINTR))
				done = 1;
			else
				sleep_ns(1000000);
		}
		if (!done) {
			kill(bench_children[i], SIGKILL);
			waitpid(bench_children[i], &st, 0);
			snprintf(out->msg, sizeof(out->msg), "worker %d did not stop; killed", i);
			rc = rc ? rc : -ETIMEDOUT;
		}
		bench_children[i] = 0;
	}
	ops->teardown(&m);
	out->seconds = (double)(t1 - t0) / 1e9;
	uint64_t nrec = 0;
	double cpu = 0;
	for (int i = 0; i < started; i++) {
		cpu += (double)ctl->res[i].cpu_ns;
		out->ops += ctl->res[i].ops;
		out->refused += ctl->res[i].refused;
		out->errors += ctl->res[i].errors;
		if (ctl->res[i].err != 0 && rc == 0) {
			rc = ctl->res[i].err;
			snprintf(out->msg, sizeof(out->msg), "worker %d: %s", i, ctl->res[i].msg);
		}
		nrec += ctl->res[i].nrec;
	}
	out->ops_per_s = out->seconds > 0 ? (double)out->ops / out->seconds : 0;
	out->cpu_ns_per_op = out->ops > 0 ? cpu / (double)out->ops : 0;
	if (kind == BENCH_LAT) {
		struct bench_hist *all = calloc(1, sizeof(*all));
		if (all != NULL) {
			for (int i = 0; i < started; i++)
				bench_hist_merge(all, &hist[i]);
			out->p50 = bench_hist_quantile(all, 0.50);
			out->p99 = bench_hist_quantile(all, 0.99);
			out->p999 = bench_hist_quantile(all, 0.999);
			free(all);
		}
	}
	if (kind == BENCH_SAT) {
		/* Gather every worker's records into one sorted array. */
		int64_t *allt = malloc(sizeof(int64_t) * (nrec ? nrec : 1));
		uint64_t n = 0, lost = 0;
		for (int i = 0; allt != NULL && i < started; i++) {
			uint64_t k = ctl->res[i].nrec;
			if (k > reccap) {
				lost += k - reccap;
				k = reccap;
			}
			memcpy(allt + n, rec + (size_t)i * reccap, k * sizeof(int64_t));
			n += k;
		}
		out->admitted = nrec;
		/* The bucket is full at the gate; demand lasts until the last
		 * worker sees the stop flag, which on an oversubscribed machine
		 * can be after stop_boot: the window ends at the later of the two. */
		int64_t end = stop_boot;
		if (allt != NULL) {
			qsort(allt, n, sizeof(int64_t), cmp_i64);
			out->over = bench_over_admissions(allt, n, sc->interval[0], sc->tol[0]) + lost;
			if (n > 0 && allt[n - 1] > end)
				end = allt[n - 1];
		}
		double allowed = (double)sc->burst[0] + (double)(end - go_boot) / (double)sc->interval[0];
		out->allowed = allowed;
		out->utilisation = allowed > 0 ? (double)nrec / allowed : 0;
		free(allt);
	}
unmap:
	if (rec != NULL && rec != MAP_FAILED)
		munmap(rec, rec_sz);
	if (hist != NULL && hist != MAP_FAILED)
		munmap(hist, hist_sz);
	if (ctl != MAP_FAILED)
		munmap(ctl, ctl_sz);
	return rc;
}
