/*
 * stat.c - shmlimit-stat: show a live segment's pools, spend and counters.
 *
 * In the spirit of varnishstat: it reads counters straight from shared
 * memory, attaches read-only (a user with only read permission can run it)
 * and never changes the segment.  Every number comes from one
 * shl_stats_get() snapshot, which the library guarantees is not torn
 * between two updates; each output mode (table, JSON, Prometheus) renders
 * that same snapshot.  The live view (-w) redraws in place on a terminal
 * and prints plain repeated snapshots otherwise.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "shmlimit.h"

#define PROG "shmlimit-stat"
/* Every short option; tools/check-flag-docs.sh reads this line. */
#define STAT_SHORTOPTS "w:n:jphV"

static const struct option stat_opts[] = {
	{"watch", required_argument, NULL, 'w'},
	{"count", required_argument, NULL, 'n'},
	{"json", no_argument, NULL, 'j'},
	{"prometheus", no_argument, NULL, 'p'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};

enum mode { MODE_TABLE, MODE_JSON, MODE_PROM };

static const char *const dim_label[SHL_NBUCKETS] = {"requests", "input", "output"};

static volatile sig_atomic_t stop_flag;

/* The segment's table of unknown model ids, read with each snapshot. */
#define UNKNOWN_MAX 16
static shl_unknown_model unknown_ids[UNKNOWN_MAX];
static int n_unknown;


static int has_observed(const shl_pool_stats *ps)
{
	return ps->observed[0] || ps->observed[1] || ps->observed[2];
}

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " [OPTIONS] [NAME]\n"
		"Show a libshmlimit segment's pools, spend and counters (read-only).\n"
		"NAME defaults to $SHMLIMIT_SEGMENT.\n"
		"\n"
		"  -w, --watch SECONDS  redraw every SECONDS until interrupted (live view)\n"
		"  -n, --count N        with --watch: stop after N snapshots\n"
		"  -j, --json           one JSON document\n"
		"  -p, --prometheus     Prometheus text exposition format\n"
		"  -h, --help           this help\n"
		"  -V, --version        print the version\n"
		"\n"
		"Exit status: 0 ok, 2 usage, 3 no such segment, 4 permission denied,\n"
		"5 incompatible segment, 6 corrupt segment, 1 other errors.\n");
}

static double pct(uint64_t used, uint64_t limit)
{
	return limit ? 100.0 * (double)used / (double)limit : 0.0;
}

/* UTC time as "2026-12-01 00:00:00 UTC", or RFC 3339 with iso. */
static void fmt_utc(char *buf, size_t len, int64_t unix_s, int iso)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL ||
	    (iso ? strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm)
		 : strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm)) == 0)
		snprintf(buf, len, "%lld", (long long)unix_s);
}

/* ------------------------------------------------------------------ */
/* Table                                                               */
/* ------------------------------------------------------------------ */

/* Multi-host mode: Redis, the agent, each pool's credit (README "Many hosts"). */
static void render_cluster_table(FILE *f, const shl_stats *s)
{
	if (!s->cluster)
		return;
	fprintf(f, "cluster: Redis %s, agent %s, %d host%s seen, %llu leases, %llu Redis commands%s\n",
		s->cluster_redis_up ? "reachable" : "UNREACHABLE",
		s->cluster_agent_age_ns < 0 ? "NOT RUNNING"
		: s->cluster_agent_age_ns > 2000000000LL ? "STALLED"
							 : "running",
		s->cluster_hosts, s->cluster_hosts == 1 ? "" : "s",
		(unsigned long long)s->cluster_refills, (unsigned long long)s->cluster_redis_ops,
		s->cluster_fallback ? "; FALLBACK share in force" : "");
	if (s->spend_cap >= 0)
		fprintf(f, "cluster: spend budget leased this month $%.6f\n",
			tool_usd(s->cluster_spend_budget));
	for (int i = 0; i < s->npools; i++) {
		const shl_pool_stats *ps = &s->pools[i];
		fprintf(f, "%-12s lease credit: %.2f requests, %.0f input, %.0f output tokens"
			   "; %llu leases, %llu short, %llu fallback\n",
			ps->name, ps->limit[0] ? (double)ps->lease_ns[0] * ps->limit[0] / 60e9 : 0,
			ps->limit[1] ? (double)ps->lease_ns[1] * ps->limit[1] / 60e9 : 0,
			ps->limit[2] ? (double)ps->lease_ns[2] * ps->limit[2] / 60e9 : 0,
			(unsigned long long)ps->lease_refills, (unsigned long long)ps->lease_short,
			(unsigned long long)ps->lease_fallback);
	}
}

static void render_table(FILE *f, const char *name, const shl_stats *s)
{
	char created[64], resets[64];
	fmt_utc(created, sizeof(created), s->created_unix_ns / 1000000000LL, 0);
	fmt_utc(resets, sizeof(resets), s->month_resets_unix, 0);
	fprintf(f, "segment %s  generation %llu  created %s  pools %d  models %d\n", name,
		(unsigned long long)s->generation, created, s->npools, s->nmodels);
	fprintf(f, "%-12s %-9s %12s %12s %14s %12s %7s\n", "POOL", "DIM", "LIMIT/MIN", "BURST",
		"AVAILABLE", "USED/1MIN", "USE%");
	for (int p = 0; p < s->npools; p++) {
		const shl_pool_stats *ps = &s->pools[p];
		for (int d = 0; d < SHL_NBUCKETS; d++)
			fprintf(f, "%-12s %-9s %12llu %12llu %14.1f %12llu %6.1f%%\n",
				d == 0 ? ps->name : "", dim_label[d],
				(unsigned long long)ps->limit[d], (unsigned long long)ps->burst[d],
				ps->available[d], (unsigned long long)ps->used_last_minute[d],
				pct(ps->used_last_minute[d], ps->limit[d]));
		fprintf(f, "%-12s admitted %llu  refused %llu  waited %llu  settled %llu  "
			   "cancelled %llu  server-429 %llu\n",
			"", (unsigned long long)ps->admitted, (unsigned long long)ps->refused,
			(unsigned long long)ps->waited, (unsigned long long)ps->settled,
			(unsigned long long)ps->cancelled, (unsigned long long)ps->server_429);
		fprintf(f, "%-12s tokens in %llu  out %llu  cache read %llu  cache write %llu  "
			   "spend $%.6f\n",
			"", (unsigned long long)ps->tokens_in, (unsigned long long)ps->tokens_out,
			(unsigned long long)ps->cache_read, (unsigned long long)ps->cache_write,
			tool_usd(ps->spend));
		fprintf(f, "%-12s estimate ratio %.3f (learned from %llu settlements)\n", "",
			ps->est_ratio, (unsigned long long)ps->est_samples);
		if (ps->hold_ns > 0)
			fprintf(f, "%-12s HELD by a server retry-after for %.1f s more\n", "",
				(double)ps->hold_ns / 1e9);
		if (has_observed(ps) || ps->provisional) {
			/* Configured vs what the server's headers said, and what
			 * the bucket runs at. */
			fprintf(f, "%-12s limits/min configured %llu/%llu/%llu%s", "",
				(unsigned long long)ps->limit[0], (unsigned long long)ps->limit[1],
				(unsigned long long)ps->limit[2],
				ps->provisional ? " (provisional: a preset's stand-in)" : "");
			if (has_observed(ps))
				fprintf(f, "  observed %llu/%llu/%llu",
					(unsigned long long)ps->observed[0],
					(unsigned long long)ps->observed[1],
					(unsigned long long)ps->observed[2]);
			else
				fprintf(f, "  observed none yet");
			fprintf(f, "  in force %llu/%llu/%llu%s\n",
				(unsigned long long)ps->effective[0],
				(unsigned long long)ps->effective[1],
				(unsigned long long)ps->effective[2],
				ps->follow_server ? "" : " (follow_server off: only lowered)");
		}
	}
	if (s->unknown_model == 2 && s->unknown_pool >= 0)
		fprintf(f, "unknown models: governed by pool %s", s->pools[s->unknown_pool].name);
	else
		fprintf(f, "unknown models: %s",
			s->unknown_model == 1 ? "refused" : "passed through ungoverned");
	if (n_unknown == 0)
		fprintf(f, ", none seen\n");
	for (int i = 0; i < n_unknown; i++)
		fprintf(f, "%s%s (%llu)%s", i ? ", " : "; seen: ", unknown_ids[i].id,
			(unsigned long long)unknown_ids[i].seen, i + 1 == n_unknown ? "\n" : "");
	fprintf(f, "spend %04d-%02d: $%.6f", s->month_year, s->month, tool_usd(s->spend_month));
	if (s->spend_cap >= 0)
		fprintf(f, " of $%.2f cap (%.1f%%)", tool_usd(s->spend_cap),
			s->spend_cap ? 100.0 * (double)s->spend_month / (double)s->spend_cap : 100.0);
	else
		fprintf(f, " (no cap)");
	fprintf(f, ", resets %s%s\n", resets,
		s->spend_exhausted ? "  EXHAUSTED (server reported the cap reached)" : "");
	if (s->attach_failures > 0) {
		char when[64];
		fmt_utc(when, sizeof(when), s->attach_last_unix_ns / 1000000000LL, 1);
		fprintf(f, "ATTACH FAILURES %llu (workers left ungoverned): last uid %u pid %u at %s: "
			   "%s\n",
			(unsigned long long)s->attach_failures, s->attach_last_uid, s->attach_last_pid,
			when, shl_strerror(s->attach_last_error));
	}
	render_cluster_table(f, s);
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */
/* ------------------------------------------------------------------ */


/* The document is the library's (stats_json.c), one implementation for the
 * tool and the bindings. */
static char *render_json(const char *name, const shl_stats *s)
{
	char *j = shl_stats_to_json(s, name);
	if (j == NULL)
		return j;
	/* The unknown model ids seen (shl_unknown_list, read with the snapshot). */
	cJSON *root = cJSON_Parse(j);
	free(j);
	cJSON *um = cJSON_GetObjectItemCaseSensitive(root, "unknown_model");
	cJSON *ul = um ? cJSON_AddArrayToObject(um, "seen") : NULL;
	for (int i = 0; ul && i < n_unknown; i++) {
		cJSON *e = cJSON_CreateObject();
		cJSON_AddItemToArray(ul, e);
		cJSON_AddStringToObject(e, "model", unknown_ids[i].id);
		cJSON_AddNumberToObject(e, "lookups", (double)unknown_ids[i].seen);
	}
	char *out = root ? cJSON_Print(root) : NULL;
	cJSON_Delete(root);
	return out;
}

/* ------------------------------------------------------------------ */
/* Prometheus                                                          */
/* ------------------------------------------------------------------ */

/* Label values: escape backslash, double quote and newline. */
static void prom_escape(char *dst, size_t len, const char *src)
{
	size_t j = 0;
	for (; *src && j + 3 < len; src++) {
		if (*src == '\\' || *src == '"') {
			dst[j++] = '\\';
			dst[j++] = *src;
		} else if (*src == '\n') {
			dst[j++] = '\\';
			dst[j++] = 'n';
		} else {
			dst[j++] = *src;
		}
	}
	dst[j] = '\0';
}

static void prom_head(FILE *f, const char *metric, const char *type, const char *help)
{
	fprintf(f, "# HELP shmlimit_%s %s\n# TYPE shmlimit_%s %s\n", metric, help, metric, type);
}

/* One pool metric across all pools: `get` returns the value of pool p. */
typedef double (*pool_get)(const shl_pool_stats *ps, int i);

static void prom_pool(FILE *f, const char *seg, const shl_stats *s, const char *metric,
		      const char *type, const char *help, const char *label,
		      const char *const *label_vals, int nvals, pool_get get)
{
	char pool[2 * SHL_NAME_MAX + 4];
	prom_head(f, metric, type, help);
	for (int p = 0; p < s->npools; p++) {
		prom_escape(pool, sizeof(pool), s->pools[p].name);
		for (int i = 0; i < nvals; i++) {
			fprintf(f, "shmlimit_%s{segment=\"%s\",pool=\"%s\"", metric, seg, pool);
			if (label)
				fprintf(f, ",%s=\"%s\"", label, label_vals[i]);
			fprintf(f, "} %.17g\n", get(&s->pools[p], i));
		}
	}
}

/* Requests and tokens are different units: never one metric.  The token
 * buckets' metrics carry kind="input" (ITPM) or kind="output" (OTPM). */
static const char *const prom_token_dims[2] = {"input", "output"};
static const char *const prom_tokens[4] = {"input", "output", "cache_read", "cache_write"};
static const char *const prom_results[6] = {"admitted", "refused", "waited",
					    "settled",  "cancelled", "server_429"};

/* i: 0 is the RPM bucket (requests metrics); for tokens metrics i 0, 1 are
 * ITPM and OTPM (t_ variants add 1). */
static double g_limit(const shl_pool_stats *ps, int i) { return (double)ps->limit[i] / 60.0; }
static double g_burst(const shl_pool_stats *ps, int i) { return (double)ps->burst[i]; }
/* Observed and in-force limits: requests alone, tokens by kind (input, output). */
static const char *const prom_token_kinds[2] = {"input", "output"};
static double g_obs_req(const shl_pool_stats *ps, int i)
{
	(void)i;
	return (double)ps->observed[SHL_DIM_RPM] / 60.0;
}
static double g_obs_tok(const shl_pool_stats *ps, int i) { return (double)ps->observed[1 + i] / 60.0; }
static double g_eff_req(const shl_pool_stats *ps, int i)
{
	(void)i;
	return (double)ps->effective[SHL_DIM_RPM] / 60.0;
}
static double g_eff_tok(const shl_pool_stats *ps, int i) { return (double)ps->effective[1 + i] / 60.0; }
static double g_provisional(const shl_pool_stats *ps, int i)
{
	(void)i;
	return ps->provisional ? 1.0 : 0.0;
}
static double g_avail(const shl_pool_stats *ps, int i) { return ps->available[i]; }
static double g_used(const shl_pool_stats *ps, int i) { return (double)ps->used_last_minute[i]; }
static double t_limit(const shl_pool_stats *ps, int i) { return g_limit(ps, i + 1); }
static double t_burst(const shl_pool_stats *ps, int i) { return g_burst(ps, i + 1); }
static double t_avail(const shl_pool_stats *ps, int i) { return g_avail(ps, i + 1); }
static double t_used(const shl_pool_stats *ps, int i) { return g_used(ps, i + 1); }
static double g_hold(const shl_pool_stats *ps, int i)
{
	(void)i;
	return ps->hold_ns > 0 ? (double)ps->hold_ns / 1e9 : 0.0;
}
static double g_spend(const shl_pool_stats *ps, int i)
{
	(void)i;
	return tool_usd(ps->spend);
}
static double g_ratio(const shl_pool_stats *ps, int i)
{
	(void)i;
	return ps->est_ratio;
}
static double g_samples(const shl_pool_stats *ps, int i)
{
	(void)i;
	return (double)ps->est_samples;
}
static double g_tokens(const shl_pool_stats *ps, int i)
{
	const uint64_t v[4] = {ps->tokens_in, ps->tokens_out, ps->cache_read, ps->cache_write};
	return (double)v[i];
}
static double g_requests(const shl_pool_stats *ps, int i)
{
	const uint64_t v[6] = {ps->admitted, ps->refused, ps->waited,
			       ps->settled,  ps->cancelled, ps->server_429};
	return (double)v[i];
}

static void render_prom(FILE *f, const char *name, const shl_stats *s)
{
	char seg[512];
	prom_escape(seg, sizeof(seg), name);
	prom_head(f, "config_generation", "gauge",
		  "Configuration generation of the segment (changes on every apply and reset).");
	fprintf(f, "shmlimit_config_generation{segment=\"%s\"} %llu\n", seg,
		(unsigned long long)s->generation);
	prom_head(f, "created_timestamp_seconds", "gauge", "When the segment was created.");
	fprintf(f, "shmlimit_created_timestamp_seconds{segment=\"%s\"} %lld\n", seg,
		(long long)(s->created_unix_ns / 1000000000LL));
	prom_pool(f, seg, s, "pool_limit_requests_per_second", "gauge",
		  "Refill rate of the requests bucket (the RPM limit / 60).", NULL, NULL, 1, g_limit);
	prom_pool(f, seg, s, "pool_limit_tokens_per_second", "gauge",
		  "Refill rate of a tokens bucket (the ITPM or OTPM limit / 60).", "kind",
		  prom_token_dims, 2, t_limit);
	prom_pool(f, seg, s, "pool_observed_limit_requests_per_second", "gauge",
		  "RPM the server's rate-limit headers report / 60 (0: none reported yet).", NULL,
		  NULL, 1, g_obs_req);
	prom_pool(f, seg, s, "pool_observed_limit_tokens_per_second", "gauge",
		  "ITPM or OTPM the server's rate-limit headers report / 60 (0: none yet).", "kind",
		  prom_token_kinds, 2, g_obs_tok);
	prom_pool(f, seg, s, "pool_effective_limit_requests_per_second", "gauge",
		  "Refill rate the requests bucket runs at (configured, or the server's).", NULL,
		  NULL, 1, g_eff_req);
	prom_pool(f, seg, s, "pool_effective_limit_tokens_per_second", "gauge",
		  "Refill rate a tokens bucket runs at (configured, or the server's).", "kind",
		  prom_token_kinds, 2, g_eff_tok);
	prom_pool(f, seg, s, "pool_provisional", "gauge",
		  "1 when the configured limits are a preset's stand-ins.", NULL, NULL, 1,
		  g_provisional);
	prom_pool(f, seg, s, "pool_burst_requests", "gauge",
		  "Capacity of the requests bucket.", NULL, NULL, 1, g_burst);
	prom_pool(f, seg, s, "pool_burst_tokens", "gauge",
		  "Capacity of a tokens bucket (input: ITPM, output: OTPM).", "kind",
		  prom_token_dims, 2, t_burst);
	prom_pool(f, seg, s, "pool_available_requests", "gauge",
		  "Requests the bucket could admit now (negative: in debt).", NULL, NULL, 1,
		  g_avail);
	prom_pool(f, seg, s, "pool_available_tokens", "gauge",
		  "Tokens available in the bucket now (negative: in debt).", "kind",
		  prom_token_dims, 2, t_avail);
	prom_pool(f, seg, s, "pool_used_last_minute_requests", "gauge",
		  "Requests settled in the last 60 seconds.", NULL, NULL, 1, g_used);
	prom_pool(f, seg, s, "pool_used_last_minute_tokens", "gauge",
		  "Tokens counted against the bucket in the last 60 seconds.", "kind",
		  prom_token_dims, 2, t_used);
	prom_pool(f, seg, s, "pool_hold_seconds", "gauge",
		  "Seconds the pool stays held back by a server retry-after (0: none).", NULL, NULL,
		  1, g_hold);
	prom_pool(f, seg, s, "pool_requests_total", "counter",
		  "Admission events by result since creation or the last counter reset.", "result",
		  prom_results, 6, g_requests);
	prom_pool(f, seg, s, "pool_tokens_total", "counter",
		  "Tokens settled by kind since creation or the last counter reset.", "kind",
		  prom_tokens, 4, g_tokens);
	prom_pool(f, seg, s, "pool_spend_dollars_total", "counter",
		  "USD settled on the pool since creation.", NULL, NULL, 1, g_spend);
	prom_pool(f, seg, s, "pool_estimate_ratio", "gauge",
		  "Learned ratio of the server's input count to the raw estimate (95th percentile "
		  "of the last 112 settlements; the prior 1.25 before any).", NULL, NULL, 1, g_ratio);
	prom_pool(f, seg, s, "pool_estimate_samples_total", "counter",
		  "Settlements the estimate ratio was learned from.", NULL, NULL, 1, g_samples);
	prom_head(f, "spend_month_dollars", "gauge", "USD spent this calendar month (UTC).");
	fprintf(f, "shmlimit_spend_month_dollars{segment=\"%s\"} %.17g\n", seg,
		tool_usd(s->spend_month));
	if (s->spend_cap >= 0) {
		prom_head(f, "spend_cap_dollars", "gauge", "Monthly spend cap in USD.");
		fprintf(f, "shmlimit_spend_cap_dollars{segment=\"%s\"} %.17g\n", seg,
			tool_usd(s->spend_cap));
	}
	prom_head(f, "spend_exhausted", "gauge",
		  "1 when the server reported the monthly spend cap reached.");
	fprintf(f, "shmlimit_spend_exhausted{segment=\"%s\"} %d\n", seg, s->spend_exhausted ? 1 : 0);
	prom_head(f, "attach_failures_total", "counter",
		  "Workers refused at attach after opening the segment read-write (left ungoverned).");
	fprintf(f, "shmlimit_attach_failures_total{segment=\"%s\"} %llu\n", seg,
		(unsigned long long)s->attach_failures);
	prom_head(f, "spend_reset_timestamp_seconds", "gauge",
		  "When the monthly spend counter resets (00:00 UTC on the 1st).");
	fprintf(f, "shmlimit_spend_reset_timestamp_seconds{segment=\"%s\"} %lld\n", seg,
		(long long)s->month_resets_unix);
	prom_head(f, "unknown_model_lookups_total", "counter",
		  "Lookups that met a model id no configured entry matches, by id.");
	for (int i = 0; i < n_unknown; i++) {
		char id[2 * sizeof(unknown_ids[i].id) + 4];
		prom_escape(id, sizeof(id), unknown_ids[i].id);
		fprintf(f, "shmlimit_unknown_model_lookups_total{segment=\"%s\",model=\"%s\"} %llu\n", seg,
			id, (unsigned long long)unknown_ids[i].seen);
	}
	if (!s->cluster)
		return;
	prom_head(f, "cluster_redis_up", "gauge", "1 when the agent's last Redis call succeeded.");
	fprintf(f, "shmlimit_cluster_redis_up{segment=\"%s\"} %d\n", seg, s->cluster_redis_up != 0);
	prom_head(f, "cluster_fallback", "gauge", "1 when this host grants itself its static share.");
	fprintf(f, "shmlimit_cluster_fallback{segment=\"%s\"} %d\n", seg, s->cluster_fallback != 0);
	prom_head(f, "cluster_hosts", "gauge", "Hosts seen heartbeating in Redis in the last 10 s.");
	fprintf(f, "shmlimit_cluster_hosts{segment=\"%s\"} %d\n", seg, s->cluster_hosts);
	prom_head(f, "cluster_leases_total", "counter", "Leases this host's agent took from Redis.");
	fprintf(f, "shmlimit_cluster_leases_total{segment=\"%s\"} %llu\n", seg,
		(unsigned long long)s->cluster_refills);
	prom_head(f, "cluster_redis_commands_total", "counter", "Commands this host's agent sent to Redis.");
	fprintf(f, "shmlimit_cluster_redis_commands_total{segment=\"%s\"} %llu\n", seg,
		(unsigned long long)s->cluster_redis_ops);
	prom_head(f, "cluster_lease_short_total", "counter",
		  "Admissions refused for lack of leased credit.");
	for (int i = 0; i < s->npools; i++) {
		char pool[2 * SHL_NAME_MAX + 2];
		prom_escape(pool, sizeof(pool), s->pools[i].name);
		fprintf(f, "shmlimit_cluster_lease_short_total{segment=\"%s\",pool=\"%s\"} %llu\n", seg,
			pool, (unsigned long long)s->pools[i].lease_short);
	}
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

/* Render one snapshot in `mode` into a malloc'd string. */
static char *render(enum mode mode, const char *name, const shl_stats *s)
{
	if (mode == MODE_JSON) {
		char *j = render_json(name, s);
		if (j == NULL)
			return NULL;
		size_t n = strlen(j);
		char *out = malloc(n + 2);
		if (out) {
			memcpy(out, j, n);
			out[n] = '\n';
			out[n + 1] = '\0';
		}
		free(j);
		return out;
	}
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	if (m == NULL)
		return NULL;
	if (mode == MODE_PROM)
		render_prom(m, name, s);
	else
		render_table(m, name, s);
	if (fclose(m) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* Write a snapshot to a terminal, replacing the previous one in place. */
static void draw_tty(const char *text, int64_t interval_ns)
{
	fputs("\033[H", stdout); /* cursor home */
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		fwrite(p, 1, n, stdout);
		fputs("\033[K\n", stdout); /* clear the rest of the line */
		p += n + (nl ? 1 : 0);
	}
	printf("(every %.1f s; Ctrl-C to quit)\033[K\n\033[J", (double)interval_ns / 1e9);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	enum mode mode = MODE_TABLE;
	int64_t interval = 0;
	uint64_t count = 0;
	int c, watch = 0;
	while ((c = getopt_long(argc, argv, STAT_SHORTOPTS, stat_opts, NULL)) != -1) {
		switch (c) {
		case 'w':
			if (tool_parse_seconds(optarg, &interval) != 0 || interval < 100000000LL) {
				fprintf(stderr, PROG ": --watch: '%s' is not a number of seconds >= 0.1\n",
					optarg);
				return TX_USAGE;
			}
			watch = 1;
			break;
		case 'n':
			if (tool_parse_u64(optarg, UINT32_MAX, &count) != 0 || count == 0) {
				fprintf(stderr, PROG ": --count: '%s' is not a positive integer\n", optarg);
				return TX_USAGE;
			}
			break;
		case 'j':
		case 'p':
			if (mode != MODE_TABLE && mode != (c == 'j' ? MODE_JSON : MODE_PROM)) {
				fprintf(stderr, PROG ": --json and --prometheus exclude each other "
						     "(give one)\n");
				return TX_USAGE;
			}
			mode = c == 'j' ? MODE_JSON : MODE_PROM;
			break;
		case 'h':
			usage(stdout);
			return TX_OK;
		case 'V':
			printf(PROG " " SHL_VERSION_STRING "\n");
			return TX_OK;
		default:
			usage(stderr);
			return TX_USAGE;
		}
	}
	const char *name = NULL;
	if (optind < argc)
		name = argv[optind++];
	else
		name = getenv("SHMLIMIT_SEGMENT");
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		return TX_USAGE;
	}
	if (name == NULL || *name == '\0') {
		fprintf(stderr, PROG ": no segment named (give NAME or set SHMLIMIT_SEGMENT)\n");
		return TX_USAGE;
	}
	if (count && !watch) {
		fprintf(stderr, PROG ": --count needs --watch\n");
		return TX_USAGE;
	}

	shl_t *h = NULL;
	shl_err err;
	memset(&err, 0, sizeof(err));
	int r = shl_attach(name, SHL_ATTACH_RDONLY | SHL_ATTACH_ANY_OWNER, &h, &err);
	if (r < 0) {
		fprintf(stderr, PROG ": %s\n", err.msg[0] ? err.msg : shl_strerror(r));
		return tool_exit_code(r);
	}

	int tty = watch && isatty(STDOUT_FILENO);
	if (watch) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal; /* no SA_RESTART: interrupt the sleep */
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		if (tty)
			fputs("\033[?1049h\033[?25l", stdout); /* alternate screen, hide cursor */
	}
	int rc = TX_OK;
	for (uint64_t n = 0; !stop_flag; n++) {
		shl_stats s;
		r = shl_stats_get(h, &s);
		if (r < 0) {
			if (tty)
				fputs("\033[?25h\033[?1049l", stdout);
			fprintf(stderr, PROG ": %s: %s\n", name, shl_strerror(r));
			rc = tool_exit_code(r);
			break;
		}
		n_unknown = shl_unknown_list(h, unknown_ids, UNKNOWN_MAX);
		if (n_unknown < 0)
			n_unknown = 0;
		char *text = render(mode, name, &s);
		if (text == NULL) {
			fprintf(stderr, PROG ": out of memory\n");
			rc = TX_FAIL;
			break;
		}
		if (tty) {
			draw_tty(text, interval);
		} else {
			if (watch && n > 0 && mode == MODE_TABLE)
				putchar('\n');
			fputs(text, stdout);
			fflush(stdout);
		}
		free(text);
		if (ferror(stdout)) {
			rc = TX_FAIL;
			break;
		}
		if (!watch || (count && n + 1 >= count))
			break;
		struct timespec ts = {(time_t)(interval / 1000000000LL),
				      (long)(interval % 1000000000LL)};
		nanosleep(&ts, NULL); /* EINTR on a signal ends the loop */
	}
	if (tty && rc == TX_OK)
		fputs("\033[?25h\033[?1049l", stdout);
	shl_detach(h);
	return rc;
}
