/*
 * plan.h - the capacity and cost planner behind shmlimit-plan.
 *
 * Shared by the command (main.c), the computation (plan.c) and its tests
 * (test-plan.c); not installed.  Everything here is exact integer
 * arithmetic: token counts, rates and shares are turned into fixed-point
 * integers when the mix is read (rates to 0.001 request per minute, shares
 * to one part per million), prices are the library's units (1e-9 USD per
 * token, i.e. USD per million tokens x 1000), and every product is taken in
 * 128-bit integers.  Input bounds (PLAN_MAX_*) keep every product below
 * 2^128; the comments in plan.c give the worst case of each.
 *
 * Scales used in the result structs:
 *   "load" values (per minute)   x 1e15  (0.001 rpm x 1e-6 share x 1e-6 hit)
 *   rates "_milli"               x 1e3   requests per minute
 *   rates "_e9"                  x 1e9   requests per minute
 *   money "units"                x 1e9   USD (nano-dollars), exact
 */
#ifndef SHMLIMIT_PLAN_H
#define SHMLIMIT_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "shmlimit.h"

typedef unsigned __int128 plan_u128;

#define PLAN_MAX_TASKS 256
#define PLAN_MAX_RPM 1000000         /* requests per minute, per task */
#define PLAN_MAX_TOKENS 100000000ULL /* tokens per request, per field */
#define PLAN_NAME_MAX 63
#define PLAN_MODEL_MAX 127
#define PLAN_MAX_WARNINGS 32
#define PLAN_LONG_CONTEXT 200000     /* input tokens above which premium pricing applies */

#define PLAN_PPM 1000000ULL
#define PLAN_LOAD_SCALE ((plan_u128)1000000000000000ULL) /* 1e15 */

/* Price slots, in the library's order. */
enum { PLAN_P_INPUT, PLAN_P_OUTPUT, PLAN_P_CW5M, PLAN_P_CW1H, PLAN_P_READ, PLAN_NPRICES };

/* The three cost scenarios, in output order. */
enum { PLAN_S_BASE, PLAN_S_CACHE, PLAN_S_CACHE_BATCH, PLAN_NSCEN };

/* A configuration as the planner needs it (read back from shl_config_to_json). */
struct plan_pool {
	char name[SHL_NAME_MAX + 1];
	uint64_t limit[SHL_NBUCKETS]; /* per minute */
	uint64_t burst[SHL_NBUCKETS]; /* bucket capacity, defaults resolved */
	int cache_reads_count;
	int otpm_reserve;
};

struct plan_model {
	char match[SHL_PATTERN_MAX + 1];
	int prefix; /* match ends in '*' */
	int pool;
	int64_t price[PLAN_NPRICES]; /* units per token */
};

struct plan_cfg {
	char source[128]; /* "tier 1 preset" or the file name */
	int64_t spend_cap; /* units; -1: no cap */
	int npools, nmodels;
	struct plan_pool pools[SHL_MAX_POOLS];
	struct plan_model models[SHL_MAX_MODELS];
};

/* One task class of the workload mix, as read (see README.md for the keys). */
struct plan_task {
	char name[PLAN_NAME_MAX + 1];
	char model[PLAN_MODEL_MAX + 1];
	uint64_t rpm_milli;  /* requests per minute x 1000 */
	uint64_t input;      /* input tokens per request, in total */
	uint64_t output;     /* output tokens per request */
	uint64_t cacheable;  /* of `input`, the cacheable prefix */
	uint32_t hit_ppm;    /* cache hit rate x 1e6 */
	uint32_t batch_ppm;  /* share of requests sent through Batch x 1e6 */
	int ttl_1h;          /* cache writes at the 1 h price (else 5 min) */
};

struct plan_mix {
	int ntasks;
	int days_per_month;
	int hours_per_day;
	struct plan_task tasks[PLAN_MAX_TASKS];
};

struct plan_task_result {
	int model;                  /* index in plan_cfg.models */
	int pool;                   /* index in plan_cfg.pools */
	plan_u128 itpm_req_ppm;     /* expected ITPM per Messages request x 1e6 */
	plan_u128 cost_req_ppm[2];  /* expected cost per request, units x 1e6: base, cache */
	plan_u128 requests_month_milli; /* requests per month x 1000 */
	plan_u128 cost[PLAN_NSCEN]; /* units per month, rounded to the unit per task */
};

struct plan_pool_result {
	int ntasks;
	plan_u128 rpm_all_milli;    /* all requests of the pool's tasks, per minute x 1e3 */
	plan_u128 rpm_batch_e9;     /* of which through Batch, x 1e9 */
	/* Messages-API load per minute x 1e15: [0] planned (caching + Batch),
	 * [1] baseline (no caching, no Batch). */
	plan_u128 load[2][SHL_NBUCKETS];
	int binds[2];               /* enum shl_dim that binds first, SHL_DIM_NONE if no load */
	plan_u128 cost[PLAN_NSCEN]; /* units per month */
};

struct plan_result {
	const struct plan_cfg *cfg;
	const struct plan_mix *mix;
	struct plan_task_result tasks[PLAN_MAX_TASKS];
	struct plan_pool_result pools[SHL_MAX_POOLS];
	plan_u128 cost[PLAN_NSCEN];
	plan_u128 rpm_batch_e9;     /* all Batch requests per minute x 1e9 */
	int nwarnings;
	char warnings[PLAN_MAX_WARNINGS][200];
};

/*
 * Read a configuration: a built-in tier preset, or a JSON text.  Returns 0,
 * or a negative errno with a sentence naming the key path in `err`.
 */
int plan_cfg_preset(int tier, struct plan_cfg *out, char *err, size_t errlen);
/* A preset by name (start, build, scale, tier1..tier4, or "1".."4"). */
int plan_cfg_preset_named(const char *name, struct plan_cfg *out, char *err, size_t errlen);
int plan_cfg_parse(const char *json, size_t len, const char *source, struct plan_cfg *out,
		   char *err, size_t errlen);

/* The model entry for a model id: exact id, else longest prefix; -ESRCH if none. */
int plan_model_match(const struct plan_cfg *cfg, const char *id);

/*
 * Read a workload mix.  Returns 0, or -EINVAL with `err` naming the key
 * path, e.g. "tasks[1].rpm: expected a non-negative number".
 */
int plan_mix_parse(const char *json, size_t len, struct plan_mix *out, char *err,
		   size_t errlen);

/*
 * Compute the plan of `mix` under `cfg` into `out` (which keeps pointers to
 * both).  Returns 0, or -ESRCH with `err` naming the task whose model no
 * entry matches.
 */
int plan_compute(const struct plan_cfg *cfg, const struct plan_mix *mix,
		 struct plan_result *out, char *err, size_t errlen);

/* The result as a JSON document (cJSON_Delete it), or NULL without memory. */
cJSON *plan_to_json(const struct plan_result *r);

/* The result as a human-readable table. */
void plan_print_table(FILE *f, const struct plan_result *r);

/*
 * num/den rounded half up to `dec` decimals, as text in buf (den > 0).
 * Exact: long division in 128-bit integers.
 */
void plan_fmt_q(char *buf, size_t n, plan_u128 num, plan_u128 den, int dec);

/* Read a whole file ("-": standard input), at most 16 MiB; malloc'd, NUL-ended. */
char *plan_read_file(const char *path, size_t *len, char *err, size_t errlen);

#endif /* SHMLIMIT_PLAN_H */
