/*
 * agent.c - shmlimit-agent: the per-host agent of multi-host mode.
 *
 * One command per host: `shmlimit-agent SEGMENT`.  It runs until SIGTERM or
 * SIGINT (or --seconds), keeping the segment supplied with leases of the
 * organisation's limits from the Redis named in the segment's "cluster"
 * configuration (libshmlimit's shl_agent_run, README "Many hosts").  It is
 * supervised by whatever runs the host's services (a systemd unit is in
 * tools/); while it is down, the host's workers grant themselves the
 * configured fallback share.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmlimit.h"

static volatile int g_stop;

static const struct option agent_opts[] = {
	{"seconds", required_argument, NULL, 's'},
	{"host-id", required_argument, NULL, 'i'},
	{"verbose", no_argument, NULL, 'v'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};
#define AGENT_SHORTOPTS "hv"

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static void usage(FILE *f)
{
	fputs("usage: shmlimit-agent [--seconds S] [--host-id ID] [-v|--verbose] SEGMENT\n"
	      "Keeps SEGMENT supplied with leases of the organisation's limits from Redis\n"
	      "(the segment's \"cluster\" configuration) until SIGTERM or SIGINT.\n",
	      f);
}

int main(int argc, char **argv)
{
	const char *seg = NULL;
	shl_agent_opts o = {0};
	o.stop = &g_stop;
	int c;
	while ((c = getopt_long(argc, argv, AGENT_SHORTOPTS, agent_opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return 0;
		case 's': {
			char *end;
			double sec = strtod(optarg, &end);
			if (*end != '\0' || !(sec > 0) || sec > 1e9) {
				fprintf(stderr, "shmlimit-agent: --seconds: expected a positive number, got '%s'\n",
					optarg);
				return 2;
			}
			o.run_ns = (int64_t)(sec * 1e9);
			break;
		}
		case 'i':
			o.host_id = optarg;
			break;
		case 'v':
			o.verbose = 1;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind + 1 == argc)
		seg = argv[optind];
	else if (optind < argc) {
		usage(stderr);
		return 2;
	}
	if (seg == NULL) {
		usage(stderr);
		return 2;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	shl_err err = {{0}};
	int r = shl_agent_run(seg, &o, &err);
	if (r < 0) {
		fprintf(stderr, "shmlimit-agent: %s\n", err.msg[0] ? err.msg : shl_strerror(r));
		return r == -ENOENT ? 3 : 1;
	}
	return 0;
}
