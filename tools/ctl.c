/*
 * ctl.c - shmlimit-ctl: create, configure, reset, check and remove
 * libshmlimit segments, and admit / settle single requests from a shell.
 *
 * Each subcommand is one small function over the public API; the tool
 * keeps no state of its own.  `try` prints an admission as a ticket
 * string (the shl_ticket fields, colon-separated decimals behind a "t1"
 * version tag) so that another process -- another shell command -- can
 * settle or cancel it later; that is what makes the limiter scriptable.
 * Errors print one line naming what was wrong, and each library error
 * class has its own exit status (tools/common.h).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "shmlimit.h"
#include "sync.h"

#define PROG "shmlimit-ctl"

/* Short options of each subcommand; tools/check-flag-docs.sh reads these lines. */
#define CREATE_SHORTOPTS "t:c:fgh"
#define APPLY_SHORTOPTS "t:h"
#define RESET_SHORTOPTS "bscah"
#define TRY_SHORTOPTS "i:o:m:Bw:h"
#define ROUTE_SHORTOPTS "i:o:m:Bw:h"
#define SETTLE_SHORTOPTS "i:o:h"
#define PLAIN_SHORTOPTS "h"

/* Long-only options get codes above the char range. */
enum {
	OPT_CW5M = 256,
	OPT_CW1H,
	OPT_CREAD,
	OPT_MINFREE,
};

static const struct option create_opts[] = {
	{"tier", required_argument, NULL, 't'},
	{"config", required_argument, NULL, 'c'},
	{"force", no_argument, NULL, 'f'},
	{"group", no_argument, NULL, 'g'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option apply_opts[] = {
	{"tier", required_argument, NULL, 't'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option reset_opts[] = {
	{"buckets", no_argument, NULL, 'b'},
	{"spend", no_argument, NULL, 's'},
	{"counters", no_argument, NULL, 'c'},
	{"all", no_argument, NULL, 'a'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option try_opts[] = {
	{"input", required_argument, NULL, 'i'},
	{"output", required_argument, NULL, 'o'},
	{"max-tokens", required_argument, NULL, 'm'},
	{"cache-write-5m", required_argument, NULL, OPT_CW5M},
	{"cache-write-1h", required_argument, NULL, OPT_CW1H},
	{"cache-read", required_argument, NULL, OPT_CREAD},
	{"batch", no_argument, NULL, 'B'},
	{"wait", required_argument, NULL, 'w'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option route_opts[] = {
	{"input", required_argument, NULL, 'i'},
	{"output", required_argument, NULL, 'o'},
	{"max-tokens", required_argument, NULL, 'm'},
	{"cache-write-5m", required_argument, NULL, OPT_CW5M},
	{"cache-write-1h", required_argument, NULL, OPT_CW1H},
	{"cache-read", required_argument, NULL, OPT_CREAD},
	{"batch", no_argument, NULL, 'B'},
	{"wait", required_argument, NULL, 'w'},
	{"min-free", required_argument, NULL, OPT_MINFREE},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option settle_opts[] = {
	{"input", required_argument, NULL, 'i'},
	{"output", required_argument, NULL, 'o'},
	{"cache-write-5m", required_argument, NULL, OPT_CW5M},
	{"cache-write-1h", required_argument, NULL, OPT_CW1H},
	{"cache-read", required_argument, NULL, OPT_CREAD},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option plain_opts[] = {
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
static const struct option main_opts[] = {
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};
#define MAIN_SHORTOPTS "+hV"

/* ------------------------------------------------------------------ */
/* Help texts                                                          */
/* ------------------------------------------------------------------ */

struct subcmd {
	const char *name;
	const char *synopsis;
	const char *help;
	int (*run)(int argc, char **argv);
};

static const struct subcmd *current;

static void sub_usage(FILE *f)
{
	fprintf(f, "Usage: " PROG " %s\n%s", current->synopsis, current->help);
}

/* A command-line error: one line naming it, then where help is. */
static int usage_error(const char *what, const char *arg)
{
	if (arg)
		fprintf(stderr, PROG " %s: %s '%s'\n", current->name, what, arg);
	else
		fprintf(stderr, PROG " %s: %s\n", current->name, what);
	fprintf(stderr, "Try '" PROG " %s --help'.\n", current->name);
	return TX_USAGE;
}

static int lib_error(const char *name, int r, const shl_err *e)
{
	fprintf(stderr, PROG " %s: %s%s%s\n", current->name,
		e && e->msg[0] ? "" : name, e && e->msg[0] ? "" : ": ",
		e && e->msg[0] ? e->msg : shl_strerror(r));
	return tool_exit_code(r);
}

/* Parse a token count option. */
static int count_arg(const char *opt, const char *s, uint64_t *out)
{
	if (tool_parse_u64(s, UINT64_MAX / 2, out) != 0) {
		fprintf(stderr, PROG " %s: --%s: '%s' is not a non-negative integer\n", current->name,
			opt, s);
		return -1;
	}
	return 0;
}

/* Positional arguments after options: exactly n. */
static int want_args(int argc, char **argv, int n, const char *names)
{
	if (argc - optind < n) {
		fprintf(stderr, PROG " %s: missing %s\n", current->name, names);
		fprintf(stderr, "Try '" PROG " %s --help'.\n", current->name);
		return TX_USAGE;
	}
	if (argc - optind > n)
		return usage_error("unexpected argument", argv[optind + n]);
	return 0;
}

/* Getopt loop prologue shared by every subcommand: returns -1 to go on. */
static int common_opt(int c)
{
	if (c == 'h') {
		sub_usage(stdout);
		return TX_OK;
	}
	fprintf(stderr, "Try '" PROG " %s --help'.\n", current->name);
	return TX_USAGE;
}

/* Load a configuration from --tier N or a file; returns 0 or an exit code. */
static int load_config(const char *tier, const char *file, shl_config **cfg)
{
	shl_err e;
	memset(&e, 0, sizeof(e));
	if (tier) {
		/* start, build, scale; the numbered tiers 1..4 as aliases. */
		if (shl_preset_json_named(tier) == NULL) {
			fprintf(stderr, PROG " %s: --tier: no preset '%s' (presets: %s; 1..4 name "
					"tier1..tier4)\n", current->name, tier, shl_preset_names());
			fprintf(stderr, "Try '" PROG " %s --help'.\n", current->name);
			return TX_USAGE;
		}
		int r = shl_config_preset_named(tier, cfg);
		if (r < 0)
			return lib_error(tier, r, NULL);
		return 0;
	}
	char *buf = NULL;
	size_t len = 0;
	int r = tool_read_file(file, &buf, &len);
	if (r < 0) {
		fprintf(stderr, PROG " %s: cannot read %s: %s\n", current->name,
			strcmp(file, "-") == 0 ? "standard input" : file, strerror(-r));
		return TX_FAIL;
	}
	r = shl_config_parse(buf, len, cfg, &e);
	free(buf);
	if (r < 0) {
		fprintf(stderr, PROG " %s: %s: %s\n", current->name, file,
			e.msg[0] ? e.msg : shl_strerror(r));
		return tool_exit_code(r);
	}
	return 0;
}

static int attach(const char *name, unsigned flags, shl_t **h)
{
	shl_err e;
	memset(&e, 0, sizeof(e));
	int r = shl_attach(name, flags, h, &e);
	if (r < 0)
		return lib_error(name, r, &e);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Tickets as text                                                     */
/* ------------------------------------------------------------------ */

#define TICKET_TAG "t1"
#define TICKET_FIELDS 16

/*
 * Every shl_ticket field in declaration order, pad included (the library
 * keeps a check value there):
 * "t1:model:pool:state:batch:rpm:itpm:otpm:spend:month:pad:generation:admitted_at:f0:f1:f2"
 */
static void ticket_format(const shl_ticket *t, char *buf, size_t len)
{
	snprintf(buf, len,
		 TICKET_TAG ":%" PRId32 ":%" PRId32 ":%" PRIu32 ":%" PRIu32 ":%" PRIu64 ":%" PRIu64
			    ":%" PRIu64 ":%" PRId64 ":%" PRIu32 ":%" PRIu32 ":%" PRIu64 ":%" PRId64 ":%" PRIu64
			    ":%" PRIu64 ":%" PRIu64,
		 t->model, t->pool, t->state, t->batch, t->rpm, t->itpm, t->otpm, t->spend, t->month,
		 t->pad, t->generation, t->admitted_at, t->full_at[0], t->full_at[1], t->full_at[2]);
}

/* Parse a ticket string; on error writes which field was wrong into why. */
static int ticket_parse(const char *s, shl_ticket *t, char *why, size_t whylen)
{
	static const char *const names[TICKET_FIELDS] = {
		"tag",   "model",      "pool",        "state",     "batch",
		"rpm",   "itpm",       "otpm",        "spend",     "month",
		"pad",   "generation", "admitted_at", "full_at[0]", "full_at[1]", "full_at[2]"};
	char copy[512];
	if (snprintf(copy, sizeof(copy), "%s", s) >= (int)sizeof(copy)) {
		snprintf(why, whylen, "too long");
		return -1;
	}
	char *field[TICKET_FIELDS];
	int n = 0;
	char *save = NULL;
	for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
		if (n == TICKET_FIELDS) {
			snprintf(why, whylen, "more than %d fields", TICKET_FIELDS);
			return -1;
		}
		field[n++] = p;
	}
	if (n != TICKET_FIELDS) {
		snprintf(why, whylen, "%d fields, expected %d", n, TICKET_FIELDS);
		return -1;
	}
	if (strcmp(field[0], TICKET_TAG) != 0) {
		snprintf(why, whylen, "does not start with '" TICKET_TAG ":'");
		return -1;
	}
	int64_t iv[TICKET_FIELDS];
	uint64_t uv[TICKET_FIELDS];
	memset(t, 0, sizeof(*t));
	for (int i = 1; i < TICKET_FIELDS; i++) {
		int r;
		if (i == 1 || i == 2)
			r = tool_parse_i64(field[i], 0, INT32_MAX, &iv[i]);
		else if (i == 8 || i == 12)
			r = tool_parse_i64(field[i], INT64_MIN, INT64_MAX, &iv[i]);
		else if (i == 3 || i == 4 || i == 9 || i == 10)
			r = tool_parse_u64(field[i], UINT32_MAX, &uv[i]);
		else
			r = tool_parse_u64(field[i], UINT64_MAX, &uv[i]);
		if (r != 0) {
			snprintf(why, whylen, "field %d (%s) '%s' is not a valid number", i, names[i],
				 field[i]);
			return -1;
		}
	}
	t->model = (int32_t)iv[1];
	t->pool = (int32_t)iv[2];
	t->state = (uint32_t)uv[3];
	t->batch = (uint32_t)uv[4];
	t->rpm = uv[5];
	t->itpm = uv[6];
	t->otpm = uv[7];
	t->spend = iv[8];
	t->month = (uint32_t)uv[9];
	t->pad = (uint32_t)uv[10];
	t->generation = uv[11];
	t->admitted_at = iv[12];
	t->full_at[0] = uv[13];
	t->full_at[1] = uv[14];
	t->full_at[2] = uv[15];
	if (t->pool >= SHL_MAX_POOLS || t->model >= SHL_MAX_MODELS) {
		snprintf(why, whylen, "pool %d / model %d out of range", t->pool, t->model);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Subcommands                                                         */
/* ------------------------------------------------------------------ */

static int cmd_create(int argc, char **argv)
{
	const char *tier = NULL, *file = NULL;
	unsigned flags = 0;
	int c;
	while ((c = getopt_long(argc, argv, CREATE_SHORTOPTS, create_opts, NULL)) != -1) {
		switch (c) {
		case 't':
			tier = optarg;
			break;
		case 'c':
			file = optarg;
			break;
		case 'f':
			flags |= SHL_CREATE_REPLACE;
			break;
		case 'g':
			flags |= SHL_CREATE_GROUP;
			break;
		default:
			return common_opt(c);
		}
	}
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	if (!tier == !file)
		return usage_error("give exactly one of --tier N and --config FILE", NULL);
	const char *name = argv[optind];
	shl_config *cfg = NULL;
	if ((r = load_config(tier, file, &cfg)) != 0)
		return r;
	shl_err e;
	memset(&e, 0, sizeof(e));
	r = shl_create(name, cfg, flags, NULL, &e);
	shl_config_free(cfg);
	if (r == -EEXIST) {
		fprintf(stderr, PROG " create: segment '%s' already exists (use --force to replace it)\n",
			name);
		return TX_EXISTS;
	}
	if (r < 0)
		return lib_error(name, r, &e);
	printf("created %s from %s%s\n", name, tier ? "preset " : "", tier ? tier : file);
	return TX_OK;
}

static int cmd_apply(int argc, char **argv)
{
	const char *tier = NULL;
	int c;
	while ((c = getopt_long(argc, argv, APPLY_SHORTOPTS, apply_opts, NULL)) != -1) {
		if (c == 't')
			tier = optarg;
		else
			return common_opt(c);
	}
	int r = want_args(argc, argv, tier ? 1 : 2, tier ? "segment NAME" : "segment NAME or FILE");
	if (r)
		return r;
	const char *name = argv[optind];
	shl_config *cfg = NULL;
	if ((r = load_config(tier, tier ? NULL : argv[optind + 1], &cfg)) != 0)
		return r;
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0) {
		shl_config_free(cfg);
		return r;
	}
	shl_err e;
	memset(&e, 0, sizeof(e));
	r = shl_apply(h, cfg, &e);
	shl_config_free(cfg);
	if (r < 0) {
		shl_detach(h);
		return lib_error(name, r, &e);
	}
	printf("applied to %s: generation %llu\n", name, (unsigned long long)shl_generation(h));
	shl_detach(h);
	return TX_OK;
}

static int cmd_show(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, PLAIN_SHORTOPTS, plain_opts, NULL)) != -1)
		return common_opt(c);
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	const char *name = argv[optind];
	shl_t *h = NULL;
	if ((r = attach(name, SHL_ATTACH_RDONLY | SHL_ATTACH_ANY_OWNER, &h)) != 0)
		return r;
	shl_config *cfg = NULL;
	r = shl_config_get(h, &cfg);
	static struct {
		char name[SHL_NAME_MAX + 1];
		int observed;
	} cfg_prov[SHL_MAX_POOLS + 1];
	shl_stats *st = malloc(sizeof(*st));
	int k = 0;
	if (r == 0 && st != NULL && shl_stats_get(h, st) == 0)
		for (int i = 0; i < st->npools; i++)
			if (st->pools[i].provisional) {
				snprintf(cfg_prov[k].name, sizeof(cfg_prov[k].name), "%s",
					 st->pools[i].name);
				cfg_prov[k++].observed = st->pools[i].observed[0] != 0 ||
							 st->pools[i].observed[1] != 0 ||
							 st->pools[i].observed[2] != 0;
			}
	free(st);
	shl_detach(h);
	if (r < 0)
		return lib_error(name, r, NULL);
	char *json = shl_config_to_json(cfg);
	shl_config_free(cfg);
	if (json == NULL) {
		fprintf(stderr, PROG " show: out of memory\n");
		return TX_FAIL;
	}
	puts(json);
	free(json);
	/* Provisional pools said so, on stderr (stdout stays the JSON). */
	for (unsigned i = 0; cfg_prov[i].name[0] && i < SHL_MAX_POOLS; i++)
		fprintf(stderr, PROG " show: pool '%s' has provisional limits (%s): the lowest "
				"published numbers for its model class, until the server's "
				"rate-limit headers or 'shmlimit-ctl sync' replace them\n",
			cfg_prov[i].name, cfg_prov[i].observed ? "the server's numbers are in force" :
								 "no server numbers seen yet");
	return TX_OK;
}

static int cmd_reset(int argc, char **argv)
{
	unsigned what = 0;
	int c;
	while ((c = getopt_long(argc, argv, RESET_SHORTOPTS, reset_opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			what |= SHL_RESET_BUCKETS;
			break;
		case 's':
			what |= SHL_RESET_SPEND;
			break;
		case 'c':
			what |= SHL_RESET_COUNTERS;
			break;
		case 'a':
			what |= SHL_RESET_BUCKETS | SHL_RESET_SPEND | SHL_RESET_COUNTERS;
			break;
		default:
			return common_opt(c);
		}
	}
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	if (what == 0)
		return usage_error("say what to reset: --buckets, --spend, --counters or --all", NULL);
	const char *name = argv[optind];
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0)
		return r;
	r = shl_reset(h, what);
	shl_detach(h);
	if (r < 0)
		return lib_error(name, r, NULL);
	printf("reset %s:%s%s%s\n", name, what & SHL_RESET_BUCKETS ? " buckets" : "",
	       what & SHL_RESET_SPEND ? " spend" : "", what & SHL_RESET_COUNTERS ? " counters" : "");
	return TX_OK;
}

static int cmd_rm(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, PLAIN_SHORTOPTS, plain_opts, NULL)) != -1)
		return common_opt(c);
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	const char *name = argv[optind];
	r = shl_unlink(name);
	if (r == -ENOENT) {
		fprintf(stderr, PROG " rm: segment '%s' does not exist\n", name);
		return TX_NOSEG;
	}
	if (r < 0)
		return lib_error(name, r, NULL);
	printf("removed %s\n", name);
	return TX_OK;
}

static int cmd_check(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, PLAIN_SHORTOPTS, plain_opts, NULL)) != -1)
		return common_opt(c);
	int r = want_args(argc, argv, 1, "segment NAME");
	if (r)
		return r;
	const char *name = argv[optind];
	shl_t *h = NULL;
	shl_err e;
	memset(&e, 0, sizeof(e));
	r = shl_attach(name, SHL_ATTACH_RDONLY | SHL_ATTACH_ANY_OWNER, &h, &e);
	if (r < 0) {
		/* An unreadable header is a finding, reported like the others. */
		printf("%s: BAD\n%s\n", name, e.msg[0] ? e.msg : shl_strerror(r));
		return tool_exit_code(r);
	}
	char report[8192];
	report[0] = '\0';
	r = shl_check(h, report, sizeof(report));
	shl_detach(h);
	if (r < 0) {
		printf("%s: BAD\n%s", name, report[0] ? report : shl_strerror(r));
		if (report[0] == '\0' || report[strlen(report) - 1] != '\n')
			putchar('\n');
		return tool_exit_code(r);
	}
	printf("%s: ok\n", name);
	return TX_OK;
}

/*
 * The cost and wait options that try and route share.  Returns -1 when `c`
 * is not one of them, 0 when it was read, or an exit code for a bad value.
 */
static int cost_opt(int c, shl_cost *cost, int64_t *wait_ns)
{
	int bad = 0;
	switch (c) {
	case 'i':
		bad = count_arg("input", optarg, &cost->input_tokens);
		break;
	case 'o':
		bad = count_arg("output", optarg, &cost->max_tokens);
		break;
	case 'm':
		bad = count_arg("max-tokens", optarg, &cost->max_tokens);
		break;
	case OPT_CW5M:
		bad = count_arg("cache-write-5m", optarg, &cost->cache_write_5m);
		break;
	case OPT_CW1H:
		bad = count_arg("cache-write-1h", optarg, &cost->cache_write_1h);
		break;
	case OPT_CREAD:
		bad = count_arg("cache-read", optarg, &cost->cache_read);
		break;
	case 'B':
		cost->batch = 1;
		break;
	case 'w':
		if (tool_parse_seconds(optarg, wait_ns) != 0)
			return usage_error("--wait: not a number of seconds:", optarg);
		break;
	default:
		return -1;
	}
	if (bad) {
		fprintf(stderr, "Try '" PROG " %s --help'.\n", current->name);
		return TX_USAGE;
	}
	return 0;
}

/* The name of pool `p` from a snapshot, or "?". */
static const char *pool_name(const shl_stats *s, int p)
{
	return s && p >= 0 && p < s->npools ? s->pools[p].name : "?";
}

/*
 * One decision line, shared by try and route: r is the library's result,
 * model_id the model it names (the chosen one when admitted).  Returns the
 * exit code.
 */
static int print_decision(const char *name, int r, const char *model_id, const char *pool,
			  const shl_ticket *t, const shl_refusal *why, int64_t waited)
{
	if (r == 0) {
		char tk[512];
		ticket_format(t, tk, sizeof(tk));
		printf("admitted model=%s pool=%s waited=%.3f ticket=%s\n", model_id, pool,
		       (double)(waited > 0 ? waited : 0) / 1e9, tk);
		return TX_OK;
	}
	if (r == -EAGAIN || r == -ETIMEDOUT) {
		printf("refused model=%s pool=%s dimension=%s wait=%.3f need=%llu capacity=%llu\n",
		       model_id, pool, shl_dim_name(why->dim), (double)why->wait_ns / 1e9,
		       (unsigned long long)why->need, (unsigned long long)why->capacity);
		return TX_REFUSED;
	}
	if (r == -E2BIG || r == -EDQUOT) {
		printf("never model=%s pool=%s dimension=%s need=%llu capacity=%llu reason=\"%s\"\n",
		       model_id, pool, r == -EDQUOT ? "spend" : shl_dim_name(why->dim),
		       (unsigned long long)why->need, (unsigned long long)why->capacity,
		       shl_strerror(r));
		return TX_NEVER;
	}
	return lib_error(name, r, NULL);
}

static int cmd_try(int argc, char **argv)
{
	shl_cost cost;
	memset(&cost, 0, sizeof(cost));
	int64_t wait_ns = 0;
	int c;
	while ((c = getopt_long(argc, argv, TRY_SHORTOPTS, try_opts, NULL)) != -1) {
		int r = cost_opt(c, &cost, &wait_ns);
		if (r < 0)
			return common_opt(c);
		if (r > 0)
			return r;
	}
	int r = want_args(argc, argv, 2, "segment NAME and MODEL");
	if (r)
		return r;
	const char *name = argv[optind], *model_id = argv[optind + 1];
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0)
		return r;
	int model = shl_lookup(h, model_id);
	if (model < 0) {
		fprintf(stderr, PROG " try: model '%s': %s\n", model_id, shl_strerror(model));
		shl_detach(h);
		return tool_exit_code(model);
	}
	if (shl_unknown_note(h, model_id) == 1)
		fprintf(stderr, PROG " try: model '%s' is in no models[] entry: governed by the "
				"catch-all pool (unknown_model)\n", model_id);
	shl_ticket t;
	shl_refusal why;
	memset(&why, 0, sizeof(why));
	int64_t t0 = shl_now();
	r = wait_ns > 0 ? shl_acquire(h, model, &cost, wait_ns, &t, &why)
			: shl_try(h, model, &cost, &t, &why);
	int64_t waited = shl_now() - t0;
	shl_stats *s = malloc(sizeof(*s));
	int pidx = r == 0 ? t.pool : (r == -EAGAIN || r == -ETIMEDOUT || r == -E2BIG) ? why.pool : -1;
	if (pidx < 0)
		pidx = shl_model_pool(h, model);
	if (s && shl_stats_get(h, s) != 0) {
		free(s);
		s = NULL;
	}
	int rc = print_decision(name, r, model_id, pool_name(s, pidx), &t, &why,
				wait_ns > 0 ? waited : 0);
	free(s);
	shl_detach(h);
	return rc;
}

/* A fraction 0..1 (decimals), for --min-free. */
static int parse_fraction(const char *s, double *out)
{
	if (s == NULL || ((*s < '0' || *s > '9') && *s != '.'))
		return -1;
	char *end = NULL;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= 0.0 && v <= 1.0))
		return -1;
	*out = v;
	return 0;
}

#define ROUTE_MAX 64 /* models in one preference list */

static int cmd_route(int argc, char **argv)
{
	shl_cost cost;
	memset(&cost, 0, sizeof(cost));
	int64_t wait_ns = 0;
	double min_free = 0.0;
	int c;
	while ((c = getopt_long(argc, argv, ROUTE_SHORTOPTS, route_opts, NULL)) != -1) {
		if (c == OPT_MINFREE) {
			if (parse_fraction(optarg, &min_free) != 0)
				return usage_error("--min-free: not a fraction from 0 to 1:", optarg);
			continue;
		}
		int r = cost_opt(c, &cost, &wait_ns);
		if (r < 0)
			return common_opt(c);
		if (r > 0)
			return r;
	}
	int r = want_args(argc, argv, 2, "segment NAME and MODEL[,MODEL...]");
	if (r)
		return r;
	const char *name = argv[optind];
	/* Split the preference list; ids point into `list`. */
	char list[ROUTE_MAX * (SHL_PATTERN_MAX + 2)];
	if (snprintf(list, sizeof(list), "%s", argv[optind + 1]) >= (int)sizeof(list))
		return usage_error("model list too long:", argv[optind + 1]);
	const char *ids[ROUTE_MAX];
	int n = 0;
	for (char *p = list;;) {
		char *comma = strchr(p, ',');
		if (comma)
			*comma = '\0';
		if (*p == '\0')
			return usage_error("empty model name in the list", argv[optind + 1]);
		if (n == ROUTE_MAX)
			return usage_error("more than 64 models in the list", NULL);
		ids[n++] = p;
		if (!comma)
			break;
		p = comma + 1;
	}
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0)
		return r;
	int models[ROUTE_MAX];
	for (int i = 0; i < n; i++) {
		models[i] = shl_lookup(h, ids[i]);
		if (models[i] < 0) {
			fprintf(stderr, PROG " route: model '%s': %s\n", ids[i],
				shl_strerror(models[i]));
			shl_detach(h);
			return tool_exit_code(models[i]);
		}
	}
	shl_ticket t;
	shl_refusal why;
	memset(&why, 0, sizeof(why));
	why.pool = -1;
	why.dim = SHL_DIM_NONE;
	shl_route_policy pol = {.min_free = min_free, .timeout_ns = wait_ns};
	int64_t t0 = shl_now();
	r = shl_route(h, models, n, &cost, &pol, &t, &why);
	int64_t waited = shl_now() - t0;
	/* The model the line names: the chosen one, else the first whose pool
	 * refused (for -EDQUOT, the first model refused on spend: shl_route's
	 * `why` is that model's, and an earlier model of the same pool would
	 * have met the same buckets and the spend refusal too). */
	int which = r >= 0 ? r : 0;
	int pidx = r >= 0 ? t.pool : why.pool;
	if (r < 0 && pidx >= 0)
		for (int i = n - 1; i >= 0; i--)
			if (shl_model_pool(h, models[i]) == pidx)
				which = i;
	if (pidx < 0)
		pidx = shl_model_pool(h, models[which]);
	shl_stats *s = malloc(sizeof(*s));
	if (s && shl_stats_get(h, s) != 0) {
		free(s);
		s = NULL;
	}
	int rc = print_decision(name, r >= 0 ? 0 : r, ids[which], pool_name(s, pidx), &t, &why,
				wait_ns > 0 ? waited : 0);
	free(s);
	shl_detach(h);
	return rc;
}

#define HOLD_MAX_SECONDS 86400 /* shl_check calls a longer hold corrupt */

static int cmd_hold(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, PLAIN_SHORTOPTS, plain_opts, NULL)) != -1)
		return common_opt(c);
	int r = want_args(argc, argv, 3, "segment NAME, POOL and SECONDS");
	if (r)
		return r;
	const char *name = argv[optind], *pool = argv[optind + 1];
	int64_t ns = 0;
	if (tool_parse_seconds(argv[optind + 2], &ns) != 0 || ns <= 0 ||
	    ns > HOLD_MAX_SECONDS * 1000000000LL)
		return usage_error("SECONDS: expected a number of seconds above 0, at most 86400, got",
				   argv[optind + 2]);
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0)
		return r;
	shl_stats *s = malloc(sizeof(*s));
	if (s == NULL) {
		shl_detach(h);
		fprintf(stderr, PROG " hold: out of memory\n");
		return TX_FAIL;
	}
	int rc = TX_OK, p = -1;
	if ((r = shl_stats_get(h, s)) < 0) {
		rc = lib_error(name, r, NULL);
		goto out;
	}
	for (int i = 0; i < s->npools && p < 0; i++)
		if (strcmp(s->pools[i].name, pool) == 0)
			p = i;
	if (p < 0) {
		fprintf(stderr, PROG " hold: segment '%s' has no pool '%s' (pools:", name, pool);
		for (int i = 0; i < s->npools; i++)
			fprintf(stderr, " %s", s->pools[i].name);
		fprintf(stderr, ")\n");
		rc = TX_USAGE;
		goto out;
	}
	if ((r = shl_hold(h, p, ns)) < 0) {
		rc = lib_error(name, r, NULL);
		goto out;
	}
	/* A hold extends, never shortens: print what is in force now. */
	if (shl_stats_get(h, s) == 0)
		printf("held pool=%s seconds=%.3f\n", pool, (double)s->pools[p].hold_ns / 1e9);
out:
	free(s);
	shl_detach(h);
	return rc;
}

/* settle and cancel: NAME TICKET. */
static int ticket_cmd(int argc, char **argv, int settle)
{
	shl_usage u;
	memset(&u, 0, sizeof(u));
	int c;
	while ((c = getopt_long(argc, argv, settle ? SETTLE_SHORTOPTS : PLAIN_SHORTOPTS,
				settle ? settle_opts : plain_opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'i':
			bad = count_arg("input", optarg, &u.input_tokens);
			break;
		case 'o':
			bad = count_arg("output", optarg, &u.output_tokens);
			break;
		case OPT_CW5M:
			bad = count_arg("cache-write-5m", optarg, &u.cache_write_5m);
			break;
		case OPT_CW1H:
			bad = count_arg("cache-write-1h", optarg, &u.cache_write_1h);
			break;
		case OPT_CREAD:
			bad = count_arg("cache-read", optarg, &u.cache_read);
			break;
		default:
			return common_opt(c);
		}
		if (bad)
			return TX_USAGE;
	}
	int r = want_args(argc, argv, 2, "segment NAME and TICKET");
	if (r)
		return r;
	const char *name = argv[optind], *tks = argv[optind + 1];
	/* Accept the whole "ticket=..." word as printed by try. */
	if (strncmp(tks, "ticket=", 7) == 0)
		tks += 7;
	shl_ticket t;
	char why[160];
	if (ticket_parse(tks, &t, why, sizeof(why)) != 0) {
		fprintf(stderr, PROG " %s: ticket '%s': %s\n", current->name, tks, why);
		return TX_USAGE;
	}
	shl_t *h = NULL;
	if ((r = attach(name, 0, &h)) != 0)
		return r;
	r = settle ? shl_settle(h, &t, &u) : shl_cancel(h, &t);
	shl_detach(h);
	if (r < 0)
		return lib_error(name, r, NULL);
	printf("%s\n", settle ? "settled" : "cancelled");
	return TX_OK;
}

static int cmd_settle(int argc, char **argv)
{
	return ticket_cmd(argc, argv, 1);
}

static int cmd_cancel(int argc, char **argv)
{
	return ticket_cmd(argc, argv, 0);
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */
/* ------------------------------------------------------------------ */

static const struct subcmd subcmds[] = {
	{"create", "create NAME (--tier TIER | --config FILE) [--force] [--group]",
	 "Create a segment from a built-in tier preset or a JSON configuration file\n"
	 "('-' reads standard input).  TIER: start, build or scale (today's tiers;\n"
	 "their pool limits are provisional stand-ins until the server's headers or\n"
	 "'sync' replace them), or 1..4 (the older numbered tiers).\n"
	 "  -t, --tier TIER      use the built-in preset of that tier\n"
	 "  -c, --config FILE    use the configuration in FILE\n"
	 "  -f, --force          replace an existing segment of that name\n"
	 "  -g, --group          mode 0660 (group may attach) instead of 0600\n",
	 cmd_create},
	{"apply", "apply NAME (FILE | --tier TIER)",
	 "Replace a live segment's configuration without stopping its workers.\n"
	 "Pools keep their state by name; workers see the new limits at once.\n"
	 "  -t, --tier TIER      apply a built-in preset (start, build, scale, 1..4)\n",
	 cmd_apply},
	{"show", "show NAME",
	 "Print the live configuration as JSON that create and apply accept back.\n", cmd_show},
	{"reset", "reset NAME [--buckets] [--spend] [--counters] [--all]",
	 "Reset parts of a segment; at least one must be named.\n"
	 "  -b, --buckets        refill every bucket and clear retry-after holds\n"
	 "  -s, --spend          zero this month's spend and clear exhaustion\n"
	 "  -c, --counters       zero the statistics counters\n"
	 "  -a, --all            all three\n",
	 cmd_reset},
	{"rm", "rm NAME", "Remove the segment name (attached processes keep their mapping).\n",
	 cmd_rm},
	{"check", "check NAME",
	 "Validate a segment's header, configuration and runtime words; print 'ok'\n"
	 "or every problem found, one per line.\n",
	 cmd_check},
	{"try", "try NAME MODEL [--input N] [--output N] [--cache-write-5m N]\n"
		"       [--cache-write-1h N] [--cache-read N] [--batch] [--wait SECONDS]",
	 "Admit one request of the given cost for MODEL and print the decision:\n"
	 "  admitted model=M pool=P waited=S ticket=T     (exit 0)\n"
	 "  refused model=M pool=P dimension=D wait=S ... (exit 9)\n"
	 "  never model=M pool=P dimension=D ...          (exit 10)\n"
	 "  -i, --input N        uncached input tokens (estimate)\n"
	 "  -o, --output N       output tokens to reserve (the request's max_tokens)\n"
	 "  -m, --max-tokens N   the same as --output\n"
	 "      --cache-write-5m N  tokens written to the 5-minute cache\n"
	 "      --cache-write-1h N  tokens written to the 1-hour cache\n"
	 "      --cache-read N   tokens read from the cache\n"
	 "  -B, --batch          Message Batches pricing (half price)\n"
	 "  -w, --wait SECONDS   wait up to SECONDS for admission instead of refusing\n",
	 cmd_try},
	{"route", "route NAME MODEL[,MODEL...] [--input N] [--output N] [--cache-write-5m N]\n"
		  "       [--cache-write-1h N] [--cache-read N] [--batch] [--min-free F]\n"
		  "       [--wait SECONDS]",
	 "Admit one request on the first MODEL of the preference list whose pool can\n"
	 "take it now (shl_route); a MODEL whose worst-case price does not fit the\n"
	 "spend cap left is passed over.  When none can, wait (with --wait) until the\n"
	 "first that can.  Prints the decision as try does, naming the chosen model:\n"
	 "  admitted model=M pool=P waited=S ticket=T     (exit 0)\n"
	 "  refused model=M pool=P dimension=D wait=S ... (exit 9; the shortest wait)\n"
	 "  never model=M pool=P dimension=D ...          (exit 10; fits no pool, or\n"
	 "                                                 no model fits the spend cap left)\n"
	 "A model the configuration does not know: exit 11, naming it.\n"
	 "The cost options and --wait are try's (see 'try --help').\n"
	 "      --min-free F     leave at least the fraction F (0..1) of each bucket\n"
	 "                       of a pool free; a pool that cannot is passed over\n",
	 cmd_route},
	{"hold", "hold NAME POOL SECONDS",
	 "Hold POOL back for SECONDS (decimals allowed, up to 86400), as a server\n"
	 "429's retry-after does: every admission on it is refused (dimension=hold)\n"
	 "until then.  Extends, never shortens, a hold; 'reset --buckets' clears it.\n"
	 "The library counts each hold as a server 429 in the statistics.\n",
	 cmd_hold},
	{"settle", "settle NAME TICKET [--input N] [--output N] [--cache-write-5m N]\n"
		   "       [--cache-write-1h N] [--cache-read N]",
	 "Settle an admission made by try or route with the usage the server reported.\n"
	 "  -i, --input N        input tokens used\n"
	 "  -o, --output N       output tokens generated\n"
	 "      --cache-write-5m N, --cache-write-1h N, --cache-read N   cache usage\n",
	 cmd_settle},
	{"cancel", "cancel NAME TICKET",
	 "Refund an admission made by try or route whose request was never sent.\n", cmd_cancel},
	{"sync", SYNC_SYNOPSIS, SYNC_HELP, cmd_sync}, /* tools/sync.c */
};
#define NSUB (sizeof(subcmds) / sizeof(subcmds[0]))

static void main_usage(FILE *f)
{
	fprintf(f, "Usage: " PROG " [--help | --version] COMMAND [OPTIONS] NAME ...\n"
		   "Create, configure, reset, check and remove libshmlimit segments.\n\n"
		   "Commands:\n");
	for (size_t i = 0; i < NSUB; i++)
		fprintf(f, "  %s\n", subcmds[i].synopsis);
	fprintf(f, "\nEvery command takes --help.\n"
		   "Exit status: 0 ok, 1 other error, 2 usage, 3 no such segment,\n"
		   "4 permission denied, 5 incompatible segment, 6 corrupt segment,\n"
		   "7 invalid configuration, 8 segment exists, 9 refused now (try, route),\n"
		   "10 never admissible or spend cap, 11 unknown model, 12 ticket already used,\n"
		   "13 sync: key refused, 14 sync: API unreachable or error, 15 sync: answer unreadable.\n");
}

int main(int argc, char **argv)
{
	int c;
	while ((c = getopt_long(argc, argv, MAIN_SHORTOPTS, main_opts, NULL)) != -1) {
		if (c == 'h') {
			main_usage(stdout);
			return TX_OK;
		}
		if (c == 'V') {
			printf(PROG " " SHL_VERSION_STRING "\n");
			return TX_OK;
		}
		main_usage(stderr);
		return TX_USAGE;
	}
	if (optind >= argc) {
		main_usage(stderr);
		return TX_USAGE;
	}
	const char *cmd = argv[optind];
	for (size_t i = 0; i < NSUB; i++) {
		if (strcmp(cmd, subcmds[i].name) == 0) {
			current = &subcmds[i];
			int sargc = argc - optind;
			char **sargv = argv + optind;
			optind = 0; /* glibc: reinitialise getopt for the subcommand's arguments */
			return subcmds[i].run(sargc, sargv);
		}
	}
	fprintf(stderr, PROG ": unknown command '%s' (try '" PROG " --help')\n", cmd);
	return TX_USAGE;
}
