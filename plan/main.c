/*
 * main.c - shmlimit-plan: the command line of the capacity/cost planner.
 *
 * It only reads files and prints; it never touches a shared-memory segment,
 * so it can run on a laptop before anything is deployed.  The work is in
 * plan.c; this file parses options, reads the inputs and picks the output
 * format.  Exit status: 0 plan printed, 1 bad input (mix or configuration,
 * one line on stderr naming the key path), 2 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmlimit-plan (--tier TIER | --config FILE) [--json] MIX.json\n"
		"\n"
		"Capacity and monthly cost of a workload mix at a tier or configuration.\n"
		"\n"
		"  --tier TIER    use a built-in preset: start, build, scale, or 1 to 4\n"
		"  --config FILE  use a libshmlimit configuration file\n"
		"  --json         print JSON instead of the table\n"
		"  -h, --help     print this help and exit\n"
		"  --version      print the version and exit\n"
		"\n"
		"MIX.json ('-' for standard input) lists task classes; see shmlimit-plan(1).\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"tier", required_argument, NULL, 't'},
		{"config", required_argument, NULL, 'c'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int json = 0, opt;
	const char *tier = NULL;
	const char *config = NULL;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 't':
			if (optarg[0] == '\0' || strlen(optarg) > 32) {
				fprintf(stderr, "shmlimit-plan: --tier: expected a preset name "
						"(start, build, scale) or a tier number, got '%s'\n",
					optarg);
				return 2;
			}
			tier = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("shmlimit-plan %s\n", SHL_VERSION_STRING);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if ((tier != NULL) == (config != NULL)) {
		fprintf(stderr, "shmlimit-plan: give exactly one of --tier N or --config FILE\n");
		return 2;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "shmlimit-plan: expected one workload mix file (or '-')\n");
		usage(stderr);
		return 2;
	}
	const char *mixpath = argv[optind];

	static struct plan_cfg cfg;
	static struct plan_mix mix;
	static struct plan_result res;
	char err[512] = "";
	size_t len = 0;
	int r;
	if (config != NULL) {
		char *txt = plan_read_file(config, &len, err, sizeof(err));
		if (txt == NULL) {
			fprintf(stderr, "shmlimit-plan: %s\n", err);
			return 1;
		}
		r = plan_cfg_parse(txt, len, config, &cfg, err, sizeof(err));
		free(txt);
		if (r < 0) {
			fprintf(stderr, "shmlimit-plan: %s: %s\n", config, err);
			return 1;
		}
	} else if (plan_cfg_preset_named(tier, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "shmlimit-plan: %s\n", err);
		return 2;
	}

	char *txt = plan_read_file(mixpath, &len, err, sizeof(err));
	if (txt == NULL) {
		fprintf(stderr, "shmlimit-plan: %s\n", err);
		return 1;
	}
	r = plan_mix_parse(txt, len, &mix, err, sizeof(err));
	free(txt);
	if (r == 0)
		r = plan_compute(&cfg, &mix, &res, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "shmlimit-plan: %s: %s\n", mixpath, err);
		return 1;
	}

	if (json) {
		cJSON *doc = plan_to_json(&res);
		char *out = doc ? cJSON_Print(doc) : NULL;
		cJSON_Delete(doc);
		if (out == NULL) {
			fprintf(stderr, "shmlimit-plan: out of memory\n");
			return 1;
		}
		printf("%s\n", out);
		free(out);
	} else {
		plan_print_table(stdout, &res);
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "shmlimit-plan: write error: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
