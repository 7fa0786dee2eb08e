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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmlimit.h"

static volatile int g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static void usage(FILE *f)
{
	fputs("usage: shmlimit-agent SEGMENT [--seconds S] [--host-id ID] [--verbose]\n"
	      "Keeps SEGMENT supplied with leases of the organisation's limits from Redis\n"
	      "(the segment's \"cluster\" configuration) until SIGTERM or SIGINT.\n",
	      f);
}

int main(int argc, char **argv)
{
	const char *seg = NULL;
	shl_agent_opts o = {0};
	o.stop = &g_stop;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
			char *end;
			double s = strtod(argv[++i], &end);
			if (*end != '\0' || !(s > 0) || s > 1e9) {
				fprintf(stderr, "shmlimit-agent: --seconds: expected a positive number, got '%s'\n",
					argv[i]);
				return 2;
			}
			o.run_ns = (int64_t)(s * 1e9);
		} else if (strcmp(argv[i], "--host-id") == 0 && i + 1 < argc) {
			o.host_id = argv[++i];
		} else if (strcmp(argv[i], "--verbose") == 0) {
			o.verbose = 1;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "shmlimit-agent: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		} else if (seg == NULL) {
			seg = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
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
