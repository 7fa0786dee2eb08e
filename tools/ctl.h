/*
 * ctl.h - what shmlimit-ctl's files share: the subcommand table's entry,
 * the error and argument helpers every subcommand uses, and the
 * subcommands themselves.
 *
 *   ctl.c        main, the subcommand table and its help texts, the helpers
 *   ctl-admin.c  the operator's commands: create, apply, show, reset, rm,
 *                check, hold
 *   ctl-admit.c  admission from a shell: try, route, settle, cancel
 *   ticket.c     the ticket's text format (ticket.h), the one place it is
 *                written and read
 */
#ifndef SHL_TOOLS_CTL_H
#define SHL_TOOLS_CTL_H

#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "shmlimit.h"

#define PROG "shmlimit-ctl"

/* Short options shared by several subcommands; tools/check-flag-docs.sh
 * reads every *_SHORTOPTS line of tools/ctl*.c. */
#define PLAIN_SHORTOPTS "h"

/* Long-only options get codes above the char range. */
enum {
	OPT_CW5M = 256,
	OPT_CW1H,
	OPT_CREAD,
	OPT_MINFREE,
};

struct option;
extern const struct option ctl_plain_opts[]; /* --help only */

struct subcmd {
	const char *name;
	const char *synopsis;
	const char *help;
	int (*run)(int argc, char **argv);
};

/* The subcommand running (for messages). */
extern const struct subcmd *ctl_current;

/* Usage of the current subcommand. */
void sub_usage(FILE *f);
/* A command-line error: one line naming it, then where help is; TX_USAGE. */
int usage_error(const char *what, const char *arg);
/* A library error: its sentence (or `name` and the code's message); the exit code. */
int lib_error(const char *name, int r, const shl_err *e);
/* A token count option, at most `max` (count_arg: any sane count); 0 or -1. */
int count_arg_max(const char *opt, const char *s, uint64_t max, uint64_t *out);
int count_arg(const char *opt, const char *s, uint64_t *out);
/* Exactly n positional arguments after the options; 0 or an exit code. */
int want_args(int argc, char **argv, int n, const char *names);
/* The getopt loop's default case: --help, or a usage error. */
int common_opt(int c);
/* A configuration from --tier N or a file; 0 or an exit code. */
int load_config(const char *tier, const char *file, shl_config **cfg);
/* shl_attach with the error printed; 0 or an exit code. */
int attach(const char *name, unsigned flags, shl_t **h);

/* ctl-admin.c */
int cmd_create(int argc, char **argv);
int cmd_apply(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_reset(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_hold(int argc, char **argv);

/* ctl-admit.c */
int cmd_try(int argc, char **argv);
int cmd_route(int argc, char **argv);
int cmd_settle(int argc, char **argv);
int cmd_cancel(int argc, char **argv);

#endif
