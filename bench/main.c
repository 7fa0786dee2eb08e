/*
 * main.c - shmlimit-bench: libshmlimit against the floor and the
 * alternatives, side by side in one run, and its report.
 *
 * Sections, in order (README.md says what each figure means):
 *   1. uncontended cost per call, one process;
 *   2. contention: P = 1, 2, 4, 8, 16 processes on one pool and on
 *      separate pools: admissions per second, then p50/p99/p99.9 latency;
 *   3. accuracy at saturation: demand above the limit, utilisation and
 *      over-admissions;
 * then ratios (ours / theirs, pair by pair from this run) and the targets
 * of issue 5.  Everything printed is also written as CSV, markdown and
 * gnuplot input under --out.  The preload's cost (curl with and without the
 * shim) is measured by bench/preload-cost.sh, not here.
 *
 * --smoke turns it into a test: tiny runs of every mechanism, checking that
 * each runs and never over-admits, and that the over-admission detector
 * does detect; it ends "N passed, N failed".  That the baselines' rule is
 * the library's (bench_rule_take against shl__bucket_take) is checked by
 * the library's tests (tests/unit/test_rule.c): the benchmark sees only the
 * public header.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmlimit.h"
#include "run.h"

#define MAX_MECHS 5
#define MAX_P 8

static const struct bench_mech_ops *const all_mechs[MAX_MECHS] = {
	&bench_mech_shl, &bench_mech_floor, &bench_mech_mutex, &bench_mech_flock, &bench_mech_redis,
};

struct opts {
	int quick, smoke;
	int procs[MAX_P], nprocs;
	const struct bench_mech_ops *mechs[MAX_MECHS];
	int nmechs;
	int64_t dur_ns, sat_ns, unc_budget_ns;
	int unc_reps;
	int tput_runs; /* 1..3 */
	const char *out, *redis;
};

static int redis_pid = -1;

/* ------------------------------------------------------------------ */
/* Cleanup on signals: no segment, file, worker or server left behind. */
/* ------------------------------------------------------------------ */

static void on_signal(int sig)
{
	for (int i = 0; i < BENCH_MAX_PROCS; i++)
		if (bench_children[i] > 0)
			kill(bench_children[i], SIGKILL);
	if (redis_pid > 0)
		kill(redis_pid, SIGKILL);
	/* Reap what was killed (waitpid is async-signal-safe). */
	for (int i = 0; i < BENCH_MAX_PROCS; i++)
		if (bench_children[i] > 0)
			waitpid(bench_children[i], NULL, 0);
	if (redis_pid > 0)
		waitpid(redis_pid, NULL, 0);
	if (bench_shl_segment[0] != '\0')
		shl_unlink(bench_shl_segment);
	char path[96];
	snprintf(path, sizeof(path), "/dev/shm/shmlimit-bench-flock-%ld", (long)getpid());
	unlink(path);
	_exit(128 + sig);
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmlimit-bench [--quick | --smoke] [--procs LIST] [--mechs LIST]\n"
		"                      [--duration-ms N] [--sat-ms N] [--out DIR]\n"
		"                      [--redis-server PATH]\n"
		"       shmlimit-bench --segment create|stats|unlink NAME\n"
		"  --quick            short runs (the whole suite in well under a minute)\n"
		"  --smoke            tiny runs as a test: exit 1 on failure or over-admission\n"
		"  --procs LIST       process counts, comma-separated (default 1,2,4,8,16)\n"
		"  --mechs LIST       shl,floor,mutex,flock,redis (default all)\n"
		"  --duration-ms N    each contention run (default 1000; quick 150; smoke 20)\n"
		"  --sat-ms N         each saturation run (default 1000; quick 250; smoke 120)\n"
		"  --out DIR          where results go (default build/bench)\n"
		"  --redis-server P   redis-server binary (default: redis-server in PATH)\n"
		"  --segment CMD NAME create a generous segment for the preload measurement\n"
		"                     (every claude-* model, no cap), print its admitted and\n"
		"                     settled totals, or unlink it\n");
}

static int parse_ll(const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	long long dur = -1, sat = -1;
	const char *procs = "1,2,4,8,16", *mechs = "shl,floor,mutex,flock,redis";
	o->out = "build/bench";
	o->redis = "redis-server";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--quick") == 0)
			o->quick = 1;
		else if (strcmp(a, "--smoke") == 0)
			o->smoke = 1;
		else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		} else if (v == NULL) {
			fprintf(stderr, "shmlimit-bench: unknown option or missing value: %s\n", a);
			return -EINVAL;
		} else if (strcmp(a, "--procs") == 0)
			procs = argv[++i];
		else if (strcmp(a, "--mechs") == 0)
			mechs = argv[++i];
		else if (strcmp(a, "--out") == 0)
			o->out = argv[++i];
		else if (strcmp(a, "--redis-server") == 0)
			o->redis = argv[++i];
		else if (strcmp(a, "--duration-ms") == 0) {
			if (parse_ll(argv[++i], 1, 600000, &dur) != 0) {
				fprintf(stderr, "shmlimit-bench: --duration-ms: expected 1..600000\n");
				return -EINVAL;
			}
		} else if (strcmp(a, "--sat-ms") == 0) {
			if (parse_ll(argv[++i], 1, 600000, &sat) != 0) {
				fprintf(stderr, "shmlimit-bench: --sat-ms: expected 1..600000\n");
				return -EINVAL;
			}
		} else {
			fprintf(stderr, "shmlimit-bench: unknown option: %s\n", a);
			return -EINVAL;
		}
	}
	if (o->smoke && strcmp(procs, "1,2,4,8,16") == 0)
		procs = "1,2";
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", procs);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		long long p;
		if (parse_ll(t, 1, BENCH_MAX_PROCS, &p) != 0 || o->nprocs >= MAX_P) {
			fprintf(stderr, "shmlimit-bench: --procs: up to %d counts of 1..%d\n", MAX_P,
				BENCH_MAX_PROCS);
			return -EINVAL;
		}
		o->procs[o->nprocs++] = (int)p;
	}
	snprintf(buf, sizeof(buf), "%s", mechs);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int found = 0;
		for (int k = 0; k < MAX_MECHS; k++)
			if (strcmp(t, all_mechs[k]->name) == 0 && o->nmechs < MAX_MECHS) {
				o->mechs[o->nmechs++] = all_mechs[k];
				found = 1;
			}
		if (!found) {
			fprintf(stderr, "shmlimit-bench: --mechs: unknown mechanism %s\n", t);
			return -EINVAL;
		}
	}
	if (o->nprocs == 0 || o->nmechs == 0)
		return -EINVAL;
	int64_t ms = 1000000;
	o->dur_ns = (dur > 0 ? dur : o->smoke ? 20 : o->quick ? 150 : 1000) * ms;
	o->sat_ns = (sat > 0 ? sat : o->smoke ? 120 : o->quick ? 250 : 1000) * ms;
	o->unc_reps = o->smoke ? 20 : o->quick ? 3000 : 20000;
	o->tput_runs = o->smoke || o->quick ? 1 : 3;
	o->unc_budget_ns = (o->smoke ? 50 : o->quick ? 400 : 2000) * ms;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Scenarios                                                           */
/* ------------------------------------------------------------------ */

/* Never binding: 1 ns per unit, 1000 s of burst, a cap far away.  The
 * request: 100 input tokens, max_tokens 100, 50 generated, Sonnet prices. */
static void scenario_open(struct bench_scenario *sc, int npools)
{
	memset(sc, 0, sizeof(*sc));
	sc->npools = npools;
	for (int d = 0; d < BENCH_NDIM; d++) {
		sc->limit[d] = 60000000000ULL;
		sc->burst[d] = 1000000000000ULL;
	}
	sc->spend_cap = 10000000LL * SHL_UNITS_PER_USD; /* 10 million USD */
	sc->price_in = 3 * SHL_UNITS_PER_TOKEN_PER_USD_PER_MTOK;
	sc->price_out = 15 * SHL_UNITS_PER_TOKEN_PER_USD_PER_MTOK;
	sc->req_in = 100;
	sc->req_max_out = 100;
	sc->used_in = 100;
	sc->used_out = 50;
	bench_scenario_derive(sc);
}

/* Saturation: RPM binds at 300,000/min (one admission per 200 us) with a
 * burst of 50; the other dimensions never bind. */
static void scenario_sat(struct bench_scenario *sc)
{
	scenario_open(sc, 1);
	sc->limit[0] = 300000;
	sc->burst[0] = 50;
	bench_scenario_derive(sc);
}

/* ------------------------------------------------------------------ */
/* Output helpers                                                       */
/* ------------------------------------------------------------------ */

static FILE *md, *csv;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (md != NULL) {
		va_start(ap, fmt);
		vfprintf(md, fmt, ap);
		va_end(ap);
	}
	fflush(stdout);
}

static void row(const char *section, const char *mech, const char *mode, int procs,
		const char *metric, double value, const char *unit)
{
	if (csv != NULL)
		fprintf(csv, "%s,%s,%s,%d,%s,%.6g,%s\n", section, mech, mode, procs, metric, value,
			unit);
}

static void read_first_line(const char *path, const char *key, char *out, size_t cap)
{
	snprintf(out, cap, "unknown");
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f) != NULL) {
		if (key == NULL || strncmp(line, key, strlen(key)) == 0) {
			char *v = key ? strchr(line, ':') : line;
			v = v ? v + (key ? 1 : 0) : line;
			while (*v == ' ' || *v == '\t')
				v++;
			v[strcspn(v, "\n")] = '\0';
			snprintf(out, cap, "%.200s", v);
			break;
		}
	}
	fclose(f);
}

static void machine(const struct opts *o)
{
	char cpu[256], cs[64], mem[64], rv[128] = "not used";
	read_first_line("/proc/cpuinfo", "model name", cpu, sizeof(cpu));
	read_first_line("/sys/devices/system/clocksource/clocksource0/current_clocksource", NULL, cs,
			sizeof(cs));
	read_first_line("/proc/meminfo", "MemTotal", mem, sizeof(mem));
	struct utsname u;
	uname(&u);
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	char date[64];
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", &tm);
	if (redis_pid > 0) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "%s --version 2>/dev/null", o->redis);
		FILE *p = popen(cmd, "r");
		if (p != NULL) {
			if (fgets(rv, sizeof(rv), p) == NULL)
				snprintf(rv, sizeof(rv), "unknown");
			rv[strcspn(rv, "\n")] = '\0';
			pclose(p);
		}
	}
	say("# libshmlimit benchmark (%s run)\n\n", o->smoke ? "smoke" : o->quick ? "quick" : "full");
	say("| | |\n|---|---|\n");
	say("| date | %s |\n", date);
	say("| cpu | %s, %ld online cores |\n", cpu, sysconf(_SC_NPROCESSORS_ONLN));
	say("| memory | %s |\n", mem);
	say("| kernel | %s %s %s |\n", u.sysname, u.release, u.machine);
	say("| clock source | %s (call timer: %s, %.3f ticks/ns) |\n", cs, bench_ticks_source(),
	    bench_ticks_per_ns());
	say("| compiler | gcc %s |\n", __VERSION__);
	say("| redis | %s |\n", rv);
	char load[128];
	read_first_line("/proc/loadavg", NULL, load, sizeof(load));
	say("| load average at start | %s%s |\n", load,
	    strtod(load, NULL) > 0.5 ? " (the machine was busy: figures may be perturbed)" : "");
	say("| runs | contention %.0f ms each, saturation %.0f ms each |\n\n", o->dur_ns / 1e6,
	    o->sat_ns / 1e6);
	row("machine", "", "", 0, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN), "count");
}

/* ------------------------------------------------------------------ */
/* The suite                                                            */
/* ------------------------------------------------------------------ */

struct results {
	struct bench_unc unc[MAX_MECHS];
	int unc_ok[MAX_MECHS];
	/* [mode][p][mech] */
	struct bench_cont tput[2][MAX_P][MAX_MECHS], lat[2][MAX_P][MAX_MECHS];
	int cont_ok[2][MAX_P][MAX_MECHS];
	struct bench_cont sat[MAX_P][MAX_MECHS];
	int sat_ok[MAX_P][MAX_MECHS];
	int skipped[MAX_MECHS];
};

static int mech_index(const struct opts *o, const char *name)
{
	for (int k = 0; k < o->nmechs; k++)
		if (strcmp(o->mechs[k]->name, name) == 0)
			return k;
	return -1;
}

static int failures;

static void uncontended(const struct opts *o, struct results *R)
{
	struct bench_scenario sc;
	scenario_open(&sc, 1);
	say("## 1. Uncontended, one process (ns per call; median and p99 over batches of 64)\n\n");
	say("| mechanism | admit p50 | admit p99 | settle p50 | settle p99 | admit+settle p50 | "
	    "admit+settle p99 | calls |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int k = 0; k < o->nmechs; k++) {
		const struct bench_mech_ops *ops = o->mechs[k];
		if (R->skipped[k])
			continue;
		struct bench_unc *u = &R->unc[k];
		int64_t budget = o->unc_budget_ns;
		int rc = bench_uncontended(ops, &sc, o->unc_reps, budget, u);
		if (rc != 0) {
			say("| %s | failed: %s |\n", ops->name, u->msg);
			failures++;
			continue;
		}
		R->unc_ok[k] = 1;
		say("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %llu |\n", ops->name, u->med[0],
		    u->p99[0], u->med[1], u->p99[1], u->med[2], u->p99[2],
		    (unsigned long long)u->calls);
		static const char *const what[3] = {"admit", "settle", "admit_settle"};
		for (int j = 0; j < 3; j++) {
			char metric[64];
			snprintf(metric, sizeof(metric), "%s_p50", what[j]);
			row("uncontended", ops->name, "", 1, metric, u->med[j], "ns");
			snprintf(metric, sizeof(metric), "%s_p99", what[j]);
			row("uncontended", ops->name, "", 1, metric, u->p99[j], "ns");
		}
	}
	say("\n");
}

static const char *const mode_name[2] = {"one-pool", "separate-pools"};

/* Index of the run with the median throughput (n <= 3). */
static int median_run(const struct bench_cont *r, int n)
{
	if (n < 3)
		return 0;
	double a = r[0].ops_per_s, b = r[1].ops_per_s, c = r[2].ops_per_s;
	if ((a <= b && b <= c) || (c <= b && b <= a))
		return 1;
	if ((b <= a && a <= c) || (c <= a && a <= b))
		return 0;
	return 2;
}

static void contention(const struct opts *o, struct results *R)
{
	for (int mode = 0; mode < 2; mode++) {
		say("## 2%c. Contention, %s: admit+settle per second, and latency of one admit+settle "
		    "(ns)\n\n",
		    mode ? 'b' : 'a',
		    mode ? "each process on its own pool (the spend counter is still shared)"
			 : "every process on one pool");
		say("| mechanism | P | admissions/s | p50 | p99 | p99.9 |\n|---|---:|---:|---:|---:|---:|\n");
		for (int pi = 0; pi < o->nprocs; pi++) {
			int P = o->procs[pi];
			struct bench_scenario sc;
			scenario_open(&sc, mode ? (P < BENCH_MAX_POOLS ? P : BENCH_MAX_POOLS) : 1);
			for (int k = 0; k < o->nmechs; k++) {
				const struct bench_mech_ops *ops = o->mechs[k];
				if (R->skipped[k])
					continue;
				struct bench_cont *t = &R->tput[mode][pi][k], *l = &R->lat[mode][pi][k];
				/* Throughput: the median of tput_runs runs sharing the
				 * duration, so one burst of outside load moves one run. */
				int rc = 0;
				struct bench_cont runs[3];
				for (int j = 0; j < o->tput_runs && rc == 0; j++)
					rc = bench_contended(ops, &sc, P, BENCH_TPUT, mode,
							     o->dur_ns / o->tput_runs, &runs[j]);
				if (rc == 0)
					*t = runs[median_run(runs, o->tput_runs)];
				else
					*t = runs[0];
				if (rc == 0)
					rc = bench_contended(ops, &sc, P, BENCH_LAT, mode, o->dur_ns, l);
				if (rc == 0 && (t->ops == 0 || t->refused + l->refused > 0)) {
					snprintf(t->msg, sizeof(t->msg),
						 "%llu admissions, %llu refusals (expected none)",
						 (unsigned long long)t->ops,
						 (unsigned long long)(t->refused + l->refused));
					rc = -EPROTO;
				}
				if (rc != 0) {
					say("| %s | %d | failed: %s | | | |\n", ops->name, P,
					    t->msg[0] ? t->msg : l->msg);
					failures++;
					continue;
				}
				R->cont_ok[mode][pi][k] = 1;
				say("| %s | %d | %.0f | %.0f | %.0f | %.0f |\n", ops->name, P,
				    t->ops_per_s, l->p50, l->p99, l->p999);
				row("contention", ops->name, mode_name[mode], P, "admissions_per_s",
				    t->ops_per_s, "1/s");
				row("contention", ops->name, mode_name[mode], P, "p50", l->p50, "ns");
				row("contention", ops->name, mode_name[mode], P, "p99", l->p99, "ns");
				row("contention", ops->name, mode_name[mode], P, "p99.9", l->p999, "ns");
			}
		}
		say("\n");
	}
}

static void saturation(const struct opts *o, struct results *R)
{
	struct bench_scenario sc;
	scenario_sat(&sc);
	say("## 3. Accuracy at saturation: limit %llu RPM (one per %llu us), burst %llu; every "
	    "process retries at once when refused\n\n",
	    (unsigned long long)sc.limit[0], (unsigned long long)(sc.interval[0] / 1000),
	    (unsigned long long)sc.burst[0]);
	say("| mechanism | P | admitted | allowed | utilisation | over-admissions | refusals |\n"
	    "|---|---:|---:|---:|---:|---:|---:|\n");
	for (int pi = 0; pi < o->nprocs; pi++) {
		int P = o->procs[pi];
		for (int k = 0; k < o->nmechs; k++) {
			const struct bench_mech_ops *ops = o->mechs[k];
			if (R->skipped[k])
				continue;
			struct bench_cont *s = &R->sat[pi][k];
			int rc = bench_contended(ops, &sc, P, BENCH_SAT, 0, o->sat_ns, s);
			if (rc != 0) {
				say("| %s | %d | failed: %s | | | | |\n", ops->name, P, s->msg);
				failures++;
				continue;
			}
			R->sat_ok[pi][k] = 1;
			say("| %s | %d | %llu | %.0f | %.2f%% | %llu | %llu |\n", ops->name, P,
			    (unsigned long long)s->admitted, s->allowed, 100.0 * s->utilisation,
			    (unsigned long long)s->over, (unsigned long long)s->refused);
			row("saturation", ops->name, "one-pool", P, "utilisation", 100.0 * s->utilisation,
			    "%");
			row("saturation", ops->name, "one-pool", P, "over_admissions", (double)s->over,
			    "count");
			row("saturation", ops->name, "one-pool", P, "admitted", (double)s->admitted,
			    "count");
			row("saturation", ops->name, "one-pool", P, "allowed", s->allowed, "count");
			row("saturation", ops->name, "one-pool", P, "refusals", (double)s->refused,
			    "count");
		}
	}
	say("\n");
}

static void ratios(const struct opts *o, struct results *R)
{
	int s = mech_index(o, "shl");
	if (s < 0 || R->skipped[s])
		return;
	say("## 4. Ratios, ours / theirs (this run)\n\n");
	say("Cost and latency: below 1 means libshmlimit is cheaper or faster. Throughput: above 1 "
	    "means libshmlimit admits more per second.\n\n");
	say("| baseline | admit cost | settle cost | admit+settle cost |\n|---|---:|---:|---:|\n");
	static const char *const what[3] = {"admit", "settle", "admit_settle"};
	for (int k = 0; k < o->nmechs; k++) {
		if (k == s || R->skipped[k] || !R->unc_ok[s] || !R->unc_ok[k])
			continue;
		const char *n = o->mechs[k]->name;
		say("| %s |", n);
		for (int j = 0; j < 3; j++) {
			double r = R->unc[s].med[j] / R->unc[k].med[j];
			char metric[64];
			snprintf(metric, sizeof(metric), "%s_cost_ours_over_theirs", what[j]);
			say(" %.3g |", r);
			row("ratio", n, "", 1, metric, r, "x");
		}
		say("\n");
	}
	say("\n| baseline | P | throughput, one pool | throughput, separate pools | p99, one pool | "
	    "p99, separate pools |\n|---|---:|---:|---:|---:|---:|\n");
	for (int k = 0; k < o->nmechs; k++) {
		if (k == s || R->skipped[k])
			continue;
		const char *n = o->mechs[k]->name;
		for (int pi = 0; pi < o->nprocs; pi++) {
			say("| %s | %d |", n, o->procs[pi]);
			for (int j = 0; j < 2; j++) {
				for (int mode = 0; mode < 2; mode++) {
					if (!R->cont_ok[mode][pi][s] || !R->cont_ok[mode][pi][k]) {
						say(" - |");
						continue;
					}
					double r = j == 0 ? R->tput[mode][pi][s].ops_per_s /
								R->tput[mode][pi][k].ops_per_s
							  : R->lat[mode][pi][s].p99 / R->lat[mode][pi][k].p99;
					say(" %.3g |", r);
					row("ratio", n, mode_name[mode], o->procs[pi],
					    j == 0 ? "throughput_ours_over_theirs" : "p99_ours_over_theirs", r,
					    "x");
				}
			}
			say("\n");
		}
	}
	say("\n");
}

static int pidx(const struct opts *o, int P)
{
	for (int i = 0; i < o->nprocs; i++)
		if (o->procs[i] == P)
			return i;
	return -1;
}

static void target(const char *what, int known, int met, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void target(const char *what, int known, int met, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	say("| %s | %s | %s |\n", what, known ? buf : "not measured in this run",
	    !known ? "-" : met ? "met" : "**MISSED**");
	row("target", "shl", "", 0, what, known ? (met ? 1 : 0) : -1, "met");
}

static void targets(const struct opts *o, struct results *R)
{
	int s = mech_index(o, "shl"), f = mech_index(o, "floor"), mu = mech_index(o, "mutex"),
	    rd = mech_index(o, "redis");
	int p2 = pidx(o, 2), p16 = pidx(o, 16);
	if (s < 0)
		return;
	say("## 5. Targets (issue 5)\n\n| target | measured | verdict |\n|---|---|---|\n");
	int k = f >= 0 && R->unc_ok[s] && R->unc_ok[f];
	double r = k ? R->unc[s].med[0] / R->unc[f].med[0] : 0;
	target("uncontended admit within 1.5x of the floor", k, r <= 1.5, "%.2fx (%.1f vs %.1f ns)",
	       r, k ? R->unc[s].med[0] : 0, k ? R->unc[f].med[0] : 0);
	k = p2 >= 0 && mu >= 0 && R->cont_ok[0][p2][s] && R->cont_ok[0][p2][mu];
	r = k ? R->tput[0][p2][s].ops_per_s / R->tput[0][p2][mu].ops_per_s : 0;
	target("P=2, one pool: >= 3x the mutex's throughput", k, r >= 3, "%.2fx", r);
	if (k && f >= 0 && R->cont_ok[0][p2][f])
		say("| (bound: the floor itself is %.2fx the mutex here) | | |\n",
		    R->tput[0][p2][f].ops_per_s / R->tput[0][p2][mu].ops_per_s);
	k = p2 >= 0 && rd >= 0 && R->cont_ok[0][p2][s] && R->cont_ok[0][p2][rd];
	r = k ? R->tput[0][p2][s].ops_per_s / R->tput[0][p2][rd].ops_per_s : 0;
	target("P=2, one pool: >= 1000x Redis's throughput", k, r >= 1000, "%.0fx", r);
	if (k && f >= 0 && R->cont_ok[0][p2][f])
		say("| (bound: the floor itself is %.0fx Redis here) | | |\n",
		    R->tput[0][p2][f].ops_per_s / R->tput[0][p2][rd].ops_per_s);
	k = p2 >= 0 && p16 >= 0 && R->cont_ok[0][p2][s] && R->cont_ok[0][p16][s];
	r = k ? R->tput[0][p16][s].ops_per_s / R->tput[0][p2][s].ops_per_s : 0;
	target("P=16 throughput >= 70% of P=2 (one pool)", k, r >= 0.7, "%.0f%%", 100 * r);
	r = k ? R->lat[0][p16][s].p99 / R->lat[0][p2][s].p99 : 0;
	target("P=16 p99 within 10x of P=2 p99 (one pool)", k, r <= 10, "%.2fx (%.0f vs %.0f ns)", r,
	       k ? R->lat[0][p16][s].p99 : 0, k ? R->lat[0][p2][s].p99 : 0);
	double umin = 2;
	uint64_t over = 0;
	int any = 0;
	for (int pi = 0; pi < o->nprocs; pi++)
		if (R->sat_ok[pi][s]) {
			any = 1;
			if (R->sat[pi][s].utilisation < umin)
				umin = R->sat[pi][s].utilisation;
			over += R->sat[pi][s].over;
		}
	target("utilisation at saturation >= 99.5% (lowest P)", any, umin >= 0.995, "%.2f%%",
	       100 * umin);
	target("over-admissions zero (all P)", any, over == 0, "%llu", (unsigned long long)over);
	say("\n");
}

/* Gnuplot input: per mode, one row per P, throughput and p99 per mechanism. */
static void plot_files(const struct opts *o, struct results *R)
{
	for (int mode = 0; mode < 2; mode++) {
		char path[512];
		snprintf(path, sizeof(path), "%s/contention-%s.dat", o->out, mode_name[mode]);
		FILE *f = fopen(path, "w");
		if (f == NULL)
			continue;
		fprintf(f, "procs");
		for (int k = 0; k < o->nmechs; k++)
			fprintf(f, " %s_tput %s_p99", o->mechs[k]->name, o->mechs[k]->name);
		fprintf(f, "\n");
		for (int pi = 0; pi < o->nprocs; pi++) {
			fprintf(f, "%d", o->procs[pi]);
			for (int k = 0; k < o->nmechs; k++) {
				if (R->cont_ok[mode][pi][k])
					fprintf(f, " %.6g %.6g", R->tput[mode][pi][k].ops_per_s,
						R->lat[mode][pi][k].p99);
				else
					fprintf(f, " NaN NaN");
			}
			fprintf(f, "\n");
		}
		fclose(f);
	}
	char path[512];
	snprintf(path, sizeof(path), "%s/plot.gp", o->out);
	FILE *g = fopen(path, "w");
	if (g == NULL)
		return;
	fprintf(g, "# generated by shmlimit-bench; run: gnuplot %s\n", path);
	fprintf(g, "set terminal pngcairo size 1400,1000 noenhanced font ',10'\n"
		   "set output '%s/contention.png'\n"
		   "set datafile missing 'NaN'\n"
		   "set multiplot layout 2,2 title 'libshmlimit vs baselines (%s run)'\n"
		   "set logscale y\nset logscale x 2\nset grid\nset key outside right\n"
		   "set xlabel 'processes (2 cores)'\n",
		o->out, o->quick ? "quick" : "full");
	for (int mode = 0; mode < 2; mode++) {
		for (int what = 0; what < 2; what++) {
			fprintf(g, "set title '%s, %s'\nset ylabel '%s'\nplot ",
				what ? "p99 latency of admit+settle" : "throughput", mode_name[mode],
				what ? "ns" : "admissions per second");
			for (int k = 0; k < o->nmechs; k++)
				fprintf(g, "%s'%s/contention-%s.dat' using 1:%d with linespoints lw 2 title '%s'",
					k ? ", " : "", o->out, mode_name[mode], 2 + 2 * k + what,
					o->mechs[k]->name);
			fprintf(g, "\n");
		}
	}
	fprintf(g, "unset multiplot\n");
	fclose(g);
}

/* ------------------------------------------------------------------ */
/* Smoke checks (--smoke)                                               */
/* ------------------------------------------------------------------ */

static int npass, nfail;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s: ", ok ? "ok" : "FAIL");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	ok ? npass++ : nfail++;
}

/* The detector sees an over-admission when there is one.  A bucket of
 * burst b admits b at once and then one per interval: tol = b * interval. */
static void check_detector(void)
{
	int64_t t[100];
	for (int i = 0; i < 100; i++)
		t[i] = 1000000 + (int64_t)i * 100; /* one per 100 ns */
	check(bench_over_admissions(t, 100, 100, 100) == 0,
	      "detector: the exact rate with burst 1 is not an over-admission");
	check(bench_over_admissions(t, 100, 100, 0) == 1,
	      "detector: with no burst at all, the first admission is one too many");
	t[50] = t[49]; /* two at once */
	check(bench_over_admissions(t, 100, 100, 100) == 1,
	      "detector: a second admission at the same instant is found");
	check(bench_over_admissions(t, 100, 100, 200) == 0, "detector: a burst of 2 covers it");
	/* Three more pulled early: [4900, 5700] now holds 12 admissions where
	 * burst 1 + 800 ns / 100 ns allows 9. */
	t[60] = t[59] = t[58] = t[57];
	check(bench_over_admissions(t, 100, 100, 100) == 3,
	      "detector: reports the worst window's excess (3)");
}

static void smoke(const struct opts *o, struct results *R)
{
	check_detector();
	for (int k = 0; k < o->nmechs; k++) {
		const char *n = o->mechs[k]->name;
		if (R->skipped[k]) {
			printf("skip: %s (not available here)\n", n);
			continue;
		}
		check(R->unc_ok[k], "%s: uncontended calls run without error", n);
		for (int pi = 0; pi < o->nprocs; pi++) {
			check(R->cont_ok[0][pi][k] && R->cont_ok[1][pi][k],
			      "%s: P=%d contention runs (one and separate pools) admit and settle", n,
			      o->procs[pi]);
			check(R->sat_ok[pi][k] && R->sat[pi][k].admitted > 0 && R->sat[pi][k].over == 0,
			      "%s: P=%d saturation: %llu admitted, %llu over-admissions", n, o->procs[pi],
			      (unsigned long long)R->sat[pi][k].admitted,
			      (unsigned long long)R->sat[pi][k].over);
		}
	}
}

/* ------------------------------------------------------------------ */
/* Segment helpers for bench/preload-cost.sh                            */
/* ------------------------------------------------------------------ */

/* One generous pool that every claude-* model maps to: the shim's cost is
 * measured, not its refusals. */
static const char preload_cfg[] =
	"{\"spend_cap_usd\": null, \"pools\": [{\"name\": \"all\", \"rpm\": 1000000000,"
	" \"itpm\": 1000000000000, \"otpm\": 1000000000000,"
	" \"prices\": {\"input\": 3, \"output\": 15, \"cache_write_5m\": 3.75,"
	" \"cache_write_1h\": 6, \"cache_read\": 0.3}}],"
	" \"models\": [{\"match\": \"claude-*\", \"pool\": \"all\"}]}";

static int segment_cmd(const char *cmd, const char *name)
{
	shl_err err = {{0}};
	int rc;
	if (strcmp(cmd, "create") == 0) {
		shl_config *cfg = NULL;
		rc = shl_config_parse(preload_cfg, strlen(preload_cfg), &cfg, &err);
		if (rc == 0)
			rc = shl_create(name, cfg, SHL_CREATE_REPLACE, NULL, &err);
		shl_config_free(cfg);
	} else if (strcmp(cmd, "unlink") == 0) {
		rc = shl_unlink(name);
	} else if (strcmp(cmd, "stats") == 0) {
		shl_t *h = NULL;
		rc = shl_attach(name, SHL_ATTACH_RDONLY, &h, &err);
		shl_stats *st = rc == 0 ? calloc(1, sizeof(*st)) : NULL;
		if (rc == 0 && st == NULL)
			rc = -ENOMEM;
		if (rc == 0)
			rc = shl_stats_get(h, st);
		if (rc == 0) {
			uint64_t adm = 0, set = 0;
			for (int p = 0; p < st->npools; p++) {
				adm += st->pools[p].admitted;
				set += st->pools[p].settled;
			}
			printf("admitted %llu settled %llu\n", (unsigned long long)adm,
			       (unsigned long long)set);
		}
		free(st);
		if (h != NULL)
			shl_detach(h);
	} else {
		fprintf(stderr, "shmlimit-bench: --segment: create, stats or unlink\n");
		return 2;
	}
	if (rc != 0) {
		fprintf(stderr, "shmlimit-bench: --segment %s %s: %s %s\n", cmd, name, shl_strerror(rc),
			err.msg);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--segment") == 0)
		return segment_cmd(argv[2], argv[3]);
	struct opts o;
	if (parse_opts(argc, argv, &o) != 0) {
		usage(stderr);
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	bench_ticks_calibrate();
	struct results *R = calloc(1, sizeof(*R));
	if (R == NULL)
		return 1;
	char path[512];
	if (!o.smoke) {
		mkdir(o.out, 0755); /* the make target creates parents */
		snprintf(path, sizeof(path), "%s/results.csv", o.out);
		csv = fopen(path, "w");
		snprintf(path, sizeof(path), "%s/results.md", o.out);
		md = fopen(path, "w");
		if (csv == NULL || md == NULL) {
			fprintf(stderr, "shmlimit-bench: cannot write under %s: %s\n", o.out,
				strerror(errno));
			return 1;
		}
		fprintf(csv, "section,mechanism,mode,procs,metric,value,unit\n");
	}
	int r = mech_index(&o, "redis");
	if (r >= 0) {
		char msg[256];
		int port = 0;
		int pid = redis_start(o.redis, &port, msg, sizeof(msg));
		if (pid < 0) {
			R->skipped[r] = 1;
			printf("redis baseline skipped: %s\n", msg);
		} else {
			redis_pid = pid;
			bench_redis_port = port;
		}
	}
	machine(&o);
	say("Mechanisms (same GCRA rule over RPM, ITPM, OTPM and spend; see bench/README.md):\n\n");
	for (int k = 0; k < o.nmechs; k++)
		say("- **%s**: %s%s\n", o.mechs[k]->name, o.mechs[k]->what,
		    R->skipped[k] ? " (skipped: not available)" : "");
	say("\n");
	uncontended(&o, R);
	contention(&o, R);
	saturation(&o, R);
	ratios(&o, R);
	targets(&o, R);
	if (redis_pid > 0)
		redis_stop(redis_pid, bench_redis_port);
	redis_pid = -1;
	if (!o.smoke) {
		plot_files(&o, R);
		fclose(csv);
		fclose(md);
		printf("results: %s/results.md, %s/results.csv, %s/plot.gp\n", o.out, o.out, o.out);
	}
	int rc = failures ? 1 : 0;
	if (o.smoke) {
		smoke(&o, R);
		printf("%d passed, %d failed\n", npass, nfail);
		rc = nfail ? 1 : 0;
	}
	free(R);
	return rc;
}
