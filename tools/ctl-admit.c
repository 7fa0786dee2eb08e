/*
 * ctl-admit.c - shmlimit-ctl's admission commands: try and route admit one
 * request and print the decision with its ticket (ticket.h), which settle
 * and cancel take back, from any process.  That is what makes the limiter
 * scriptable from a shell.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ticket.h"

/* Short options of each subcommand; tools/check-flag-docs.sh reads these lines. */
#define TRY_SHORTOPTS "i:o:m:Bw:h"
#define ROUTE_SHORTOPTS "i:o:m:Bw:h"
#define SETTLE_SHORTOPTS "i:o:h"

/* A request's token counts (shl_cost): the library refuses one over
 * 2^32 - 1 (-EOVERFLOW); the flag that gave it is named here instead. */
#define COST_MAX UINT32_MAX

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
/*
 * The cost and wait options that try and route share.  Returns -1 when `c`
 * is not one of them, 0 when it was read, or an exit code for a bad value.
 */
static int cost_opt(int c, shl_cost *cost, int64_t *wait_ns)
{
	int bad = 0;
	switch (c) {
	case 'i':
		bad = count_arg_max("input", optarg, COST_MAX, &cost->input_tokens);
		break;
	case 'o':
		bad = count_arg_max("output", optarg, COST_MAX, &cost->max_tokens);
		break;
	case 'm':
		bad = count_arg_max("max-tokens", optarg, COST_MAX, &cost->max_tokens);
		break;
	case OPT_CW5M:
		bad = count_arg_max("cache-write-5m", optarg, COST_MAX, &cost->cache_write_5m);
		break;
	case OPT_CW1H:
		bad = count_arg_max("cache-write-1h", optarg, COST_MAX, &cost->cache_write_1h);
		break;
	case OPT_CREAD:
		bad = count_arg_max("cache-read", optarg, COST_MAX, &cost->cache_read);
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
		fprintf(stderr, "Try '" PROG " %s --help'.\n", ctl_current->name);
		return TX_USAGE;
	}
	return 0;
}

/* The name of pool `p` from a snapshot, or "?". */
static const char *pool_name(const shl_stats *s, int p)
{
	const shl_pool_stats *ps = tool_pool_stats(s, p);
	return ps ? ps->name : "?";
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
		char tk[TICKET_TEXT_MAX];
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

int cmd_try(int argc, char **argv)
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

int cmd_route(int argc, char **argv)
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

/* settle and cancel: NAME TICKET. */
static int ticket_cmd(int argc, char **argv, int settle)
{
	shl_usage u;
	memset(&u, 0, sizeof(u));
	int c;
	while ((c = getopt_long(argc, argv, settle ? SETTLE_SHORTOPTS : PLAIN_SHORTOPTS,
				settle ? settle_opts : ctl_plain_opts, NULL)) != -1) {
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
		fprintf(stderr, PROG " %s: ticket '%s': %s\n", ctl_current->name, tks, why);
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

int cmd_settle(int argc, char **argv)
{
	return ticket_cmd(argc, argv, 1);
}

int cmd_cancel(int argc, char **argv)
{
	return ticket_cmd(argc, argv, 0);
}
