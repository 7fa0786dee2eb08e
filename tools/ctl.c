/*
 * ctl.c - shmlimit-ctl: create, configure, reset, check and remove
 * libshmlimit segments, and admit / settle single requests from a shell.
 *
 * This file is the dispatcher: the subcommand table with each one's help,
 * and the helpers every subcommand shares (ctl.h).  The operator's
 * commands are in ctl-admin.c, the admission commands in ctl-admit.c, and
 * the ticket's text format in ticket.c.  Errors print one line naming what
 * was wrong, and each library error class has its own exit status
 * (tools/common.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "sync.h"

const struct option ctl_plain_opts[] = {
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
/* Helpers (ctl.h)                                                     */
/* ------------------------------------------------------------------ */

const struct subcmd *ctl_current;

void sub_usage(FILE *f)
{
	fprintf(f, "Usage: " PROG " %s\n%s", ctl_current->synopsis, ctl_current->help);
}

/* A command-line error: one line naming it, then where help is. */
int usage_error(const char *what, const char *arg)
{
	if (arg)
		fprintf(stderr, PROG " %s: %s '%s'\n", ctl_current->name, what, arg);
	else
		fprintf(stderr, PROG " %s: %s\n", ctl_current->name, what);
	fprintf(stderr, "Try '" PROG " %s --help'.\n", ctl_current->name);
	return TX_USAGE;
}

int lib_error(const char *name, int r, const shl_err *e)
{
	fprintf(stderr, PROG " %s: %s%s%s\n", ctl_current->name,
		e && e->msg[0] ? "" : name, e && e->msg[0] ? "" : ": ",
		e && e->msg[0] ? e->msg : shl_strerror(r));
	return tool_exit_code(r);
}

/* Parse a token count option (at most `max`). */
int count_arg_max(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
	int r = tool_parse_u64(s, max, out);
	if (r == -ERANGE) {
		fprintf(stderr, PROG " %s: --%s: %s is more than %llu tokens\n", ctl_current->name, opt, s,
			(unsigned long long)max);
		return -1;
	}
	if (r != 0) {
		fprintf(stderr, PROG " %s: --%s: '%s' is not a non-negative integer\n", ctl_current->name,
			opt, s);
		return -1;
	}
	return 0;
}

int count_arg(const char *opt, const char *s, uint64_t *out)
{
	return count_arg_max(opt, s, UINT64_MAX / 2, out);
}



/* Positional arguments after options: exactly n. */
int want_args(int argc, char **argv, int n, const char *names)
{
	if (argc - optind < n) {
		fprintf(stderr, PROG " %s: missing %s\n", ctl_current->name, names);
		fprintf(stderr, "Try '" PROG " %s --help'.\n", ctl_current->name);
		return TX_USAGE;
	}
	if (argc - optind > n)
		return usage_error("unexpected argument", argv[optind + n]);
	return 0;
}

/* Getopt loop prologue shared by every subcommand: returns -1 to go on. */
int common_opt(int c)
{
	if (c == 'h') {
		sub_usage(stdout);
		return TX_OK;
	}
	fprintf(stderr, "Try '" PROG " %s --help'.\n", ctl_current->name);
	return TX_USAGE;
}

/* Load a configuration from --tier N or a file; returns 0 or an exit code. */
int load_config(const char *tier, const char *file, shl_config **cfg)
{
	shl_err e;
	memset(&e, 0, sizeof(e));
	if (tier) {
		/* start, build, scale; the numbered tiers 1..4 as aliases. */
		if (shl_preset_json_named(tier) == NULL) {
			fprintf(stderr, PROG " %s: --tier: no preset '%s' (presets: %s; 1..4 name "
					"tier1..tier4)\n", ctl_current->name, tier, shl_preset_names());
			fprintf(stderr, "Try '" PROG " %s --help'.\n", ctl_current->name);
			return TX_USAGE;
		}
		int r = shl_config_preset_named(tier, cfg);
		if (r < 0)
			return lib_error(tier, r, NULL);
		return 0;
	}
	if (file == NULL)
		return usage_error("give --tier N or a configuration FILE", NULL);
	char *buf = NULL;
	size_t len = 0;
	int r = tool_read_file(file, &buf, &len);
	if (r < 0) {
		fprintf(stderr, PROG " %s: cannot read %s: %s\n", ctl_current->name,
			strcmp(file, "-") == 0 ? "standard input" : file,
			r == -EISDIR ? "it is a directory, not a configuration file" : strerror(-r));
		return TX_FAIL;
	}
	r = shl_config_parse(buf, len, cfg, &e);
	free(buf);
	if (r < 0) {
		fprintf(stderr, PROG " %s: %s: %s\n", ctl_current->name, file,
			e.msg[0] ? e.msg : shl_strerror(r));
		return tool_exit_code(r);
	}
	return 0;
}

int attach(const char *name, unsigned flags, shl_t **h)
{
	shl_err e;
	memset(&e, 0, sizeof(e));
	int r = shl_attach(name, flags, h, &e);
	if (r < 0)
		return lib_error(name, r, &e);
	return 0;
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
			ctl_current = &subcmds[i];
			int sargc = argc - optind;
			char **sargv = argv + optind;
			optind = 0; /* glibc: reinitialise getopt for the subcommand's arguments */
			return subcmds[i].run(sargc, sargv);
		}
	}
	fprintf(stderr, PROG ": unknown command '%s' (try '" PROG " --help')\n", cmd);
	return TX_USAGE;
}
