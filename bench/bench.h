/*
 * bench.h - the pieces of the benchmark suite, and the one contract every
 * admission mechanism under test follows.
 *
 * The suite compares mechanisms, not rules: libshmlimit, the floor (one
 * clock read plus one CAS), a robust process-shared mutex, flock() and a
 * Redis Lua script all apply the same GCRA rule (rule.c) to the same four
 * dimensions (RPM, ITPM, OTPM, monthly spend) of the same scenario, so any
 * difference between them is the cost of the mechanism that makes the rule
 * atomic across processes.
 *
 * Lifecycle of a mechanism, per measured run:
 *   setup(scenario)   in the parent, before fork: create the shared state
 *   attach(id)        in each forked child: open what a worker would open
 *   admit / settle    in the child, many times
 *   detach            in the child, before it exits
 *   teardown          in the parent, after every child has exited
 * A mechanism's state is one struct bench_mech; each child works on its own
 * copy (fork), so fields written after setup are per process.
 */
#ifndef SHL_BENCH_H
#define SHL_BENCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shmlimit.h"

#define BENCH_MAX_PROCS 512 /* the sweep goes past the segment's process slots */
#define BENCH_MAX_POOLS 16
#define BENCH_NDIM 3 /* RPM, ITPM, OTPM */

/* ------------------------------------------------------------------ */
/* Scenario: limits and request shape, identical for every mechanism.   */
/* ------------------------------------------------------------------ */

struct bench_scenario {
	int npools;
	uint64_t limit[BENCH_NDIM]; /* per minute */
	uint64_t burst[BENCH_NDIM]; /* capacity, units */
	int64_t spend_cap;          /* units of 1e-9 USD, < 0: none */
	int64_t price_in, price_out; /* units per token */
	/* the request every worker sends, and what the "server" reports */
	uint64_t req_in, req_max_out, used_in, used_out;
	/* derived, exactly as the library derives them */
	uint64_t interval[BENCH_NDIM]; /* ns per unit, rounded up */
	uint64_t tol[BENCH_NDIM];      /* burst * interval */
};

/* Fill the derived fields. */
void bench_scenario_derive(struct bench_scenario *sc);

/* An admission in flight: what settle needs. */
struct bench_adm {
	int pool;
	int64_t now;     /* the clock value the admission was decided at */
	int64_t reserved; /* spend units reserved */
	shl_ticket ticket; /* libshmlimit's own record of the admission */
};

/* ------------------------------------------------------------------ */
/* Mechanisms                                                          */
/* ------------------------------------------------------------------ */

struct bench_mech;
struct bench_mech_ops {
	const char *name;
	const char *what; /* one line for the report */
	int (*setup)(struct bench_mech *m);
	int (*attach)(struct bench_mech *m, int id);
	/* 0 admitted, 1 refused (not an error), < 0 error */
	int (*admit)(struct bench_mech *m, int pool, struct bench_adm *a);
	int (*settle)(struct bench_mech *m, struct bench_adm *a);
	void (*detach)(struct bench_mech *m);
	void (*teardown)(struct bench_mech *m);
};

struct bench_mech {
	const struct bench_mech_ops *ops;
	const struct bench_scenario *sc;
	void *state;   /* shared mapping or handle, per mechanism */
	void *local;   /* per-process (set in attach) */
	int id;
	char errmsg[256];
	int64_t epoch; /* bench clock origin (baselines count from it) */
};

extern const struct bench_mech_ops bench_mech_floor;
extern const struct bench_mech_ops bench_mech_shl;
extern const struct bench_mech_ops bench_mech_mutex;
extern const struct bench_mech_ops bench_mech_flock;
extern const struct bench_mech_ops bench_mech_redis;

/* mech_shl.c: the scenario as a libshmlimit JSON configuration, and the
 * segment in use (main() unlinks it on SIGINT/SIGTERM; "" when none). */
int bench_shl_config_json(const struct bench_scenario *sc, char *buf, size_t cap);
extern char bench_shl_segment[64];

/* ------------------------------------------------------------------ */
/* rule.c: the admission rule in plain arithmetic, for the lock-based   */
/* baselines (the caller holds the lock).                               */
/* ------------------------------------------------------------------ */

/* The state one pool needs, plus the segment-wide spend, in a mapping. */
struct bench_pool_state {
	uint64_t tat[BENCH_NDIM];
	int64_t hold_until;
	uint64_t admitted, settled, tokens_in, tokens_out;
	int64_t spend;
	uint64_t pad[6];
};
struct bench_rule_state {
	int64_t spend; /* units this month */
	uint64_t pad[7];
	struct bench_pool_state pools[BENCH_MAX_POOLS];
};

/* Same contract as shl__bucket_take: 0 admit (and *next is the new tat),
 * else the wait in ns; nothing is written. */
int64_t bench_rule_take(uint64_t tat, int64_t now, uint64_t cost_ns, uint64_t tol,
			uint64_t *next);
/* Admission of the scenario's request on pool p: all four or nothing.
 * Returns 0 and fills a->reserved, or 1 when refused. */
int bench_rule_admit(struct bench_rule_state *s, const struct bench_scenario *sc, int p,
		     int64_t now, struct bench_adm *a);
void bench_rule_settle(struct bench_rule_state *s, const struct bench_scenario *sc,
		       struct bench_adm *a, int64_t now);
uint64_t bench_mul_sat(uint64_t a, uint64_t b);

/* ------------------------------------------------------------------ */
/* Clocks                                                               */
/* ------------------------------------------------------------------ */

/* CLOCK_BOOTTIME ns: the clock the rule runs on, for every mechanism. */
int64_t bench_boot_ns(void);
/* CLOCK_MONOTONIC ns: for durations. */
int64_t bench_mono_ns(void);

/* A cheap timestamp for per-call latency (TSC on x86-64, else the
 * monotonic clock), and its conversion to ns. */
void bench_ticks_calibrate(void);
uint64_t bench_ticks(void);
double bench_ticks_per_ns(void);
const char *bench_ticks_source(void);

/* ------------------------------------------------------------------ */
/* hist.c: a log-linear latency histogram (relative error < 1.6%).      */
/* ------------------------------------------------------------------ */

#define BENCH_HIST_SUB 64
#define BENCH_HIST_LINEAR 128
#define BENCH_HIST_BUCKETS (BENCH_HIST_LINEAR + 40 * BENCH_HIST_SUB)

struct bench_hist {
	uint64_t count;
	uint64_t b[BENCH_HIST_BUCKETS];
};

void bench_hist_add(struct bench_hist *h, uint64_t v);
void bench_hist_merge(struct bench_hist *into, const struct bench_hist *from);
/* The value at quantile q (0..1), as the middle of its bucket. */
double bench_hist_quantile(const struct bench_hist *h, double q);

/* ------------------------------------------------------------------ */
/* resp.c: a tiny Redis client (RESP2 over TCP) and the server's life.  */
/* ------------------------------------------------------------------ */

struct resp_conn {
	int fd;
	size_t len, off;
	char buf[4096];
};

/* A parsed reply: integers and statuses only, which is all the scripts
 * return (arrays are flattened into ints). */
struct resp_reply {
	int type; /* '+', '-', ':', '$', '*' */
	int64_t ints[8];
	int nints;
	char str[128];
};

int resp_connect(struct resp_conn *c, int port);
void resp_close(struct resp_conn *c);
/* Send one command (argv of C strings) and read its reply. 0 or -errno. */
int resp_command(struct resp_conn *c, int argc, const char *const *argv,
		 struct resp_reply *r);

/* Start redis-server on 127.0.0.1 at a free port (no persistence); returns
 * its pid (> 0) and the port, or a negative errno with a message. */
int redis_start(const char *binary, int *port, char *msg, size_t msglen);
void redis_stop(int pid, int port);

/* The port of the server main() started for the Redis baseline. */
extern int bench_redis_port;

#endif /* SHL_BENCH_H */
