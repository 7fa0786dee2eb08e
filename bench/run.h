/*
 * run.h - the two ways a measurement is taken (run.c), and their results.
 */
#ifndef SHL_BENCH_RUN_H
#define SHL_BENCH_RUN_H

#include <sys/types.h>

#include "bench.h"

/* One process, batches of 64 calls: [0] admit, [1] settle, [2] both. */
struct bench_unc {
	double med[3], p99[3]; /* ns per call */
	int reps;
	uint64_t calls, errors;
	char msg[256];
};

/* Returns 0, or a negative errno with out->msg saying why. */
int bench_uncontended(const struct bench_mech_ops *ops, const struct bench_scenario *sc,
		      int max_reps, int64_t budget_ns, struct bench_unc *out);

enum { BENCH_TPUT, BENCH_LAT, BENCH_SAT };

struct bench_cont {
	int procs;
	double seconds;
	uint64_t ops, refused, errors;
	double ops_per_s;
	double cpu_ns_per_op; /* the workers' CPU time (thread clocks) per admit+settle */
	double p50, p99, p999; /* ns per admit+settle (BENCH_LAT) */
	/* BENCH_SAT */
	uint64_t admitted, over;
	double allowed, utilisation;
	char msg[256];
};

/* P forked workers on one pool (separate = 0) or on pool i % npools. */
int bench_contended(const struct bench_mech_ops *ops, const struct bench_scenario *sc, int nprocs,
		    int kind, int separate, int64_t duration_ns, struct bench_cont *out);

/* How many admissions among the sorted decision times `t` exceed what the
 * GCRA bound allows in some window (0 when the limit held). */
uint64_t bench_over_admissions(const int64_t *t, uint64_t n, uint64_t interval, uint64_t tol);

/* Pids of the current run's workers (0 when none), for signal handlers. */
extern volatile pid_t bench_children[BENCH_MAX_PROCS];

#endif /* SHL_BENCH_RUN_H */
