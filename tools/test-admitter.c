/*
 * test-admitter.c - a long-lived worker for tools/test-tools.sh.
 *
 * It attaches once and keeps admitting (shl_acquire, bounded wait) and
 * settling requests for one model, printing for every admission the
 * configuration generation it was admitted under and the pool's RPM limit
 * as this process sees it.  The test applies a new configuration with
 * shmlimit-ctl while this runs and checks that the same process goes on
 * admitting under the new generation and limits.  It stops by itself after
 * MAX admissions or MAX_SECONDS, or when STOPFILE exists.
 *
 * usage: test-admitter NAME MODEL MAX MAX_SECONDS STOPFILE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "shmlimit.h"

int main(int argc, char **argv)
{
	uint64_t max, secs;
	if (argc != 6 || tool_parse_u64(argv[3], 1000000, &max) != 0 ||
	    tool_parse_u64(argv[4], 3600, &secs) != 0) {
		fprintf(stderr, "usage: test-admitter NAME MODEL MAX MAX_SECONDS STOPFILE\n");
		return 2;
	}
	shl_t *h = NULL;
	shl_err e;
	memset(&e, 0, sizeof(e));
	int r = shl_attach(argv[1], 0, &h, &e);
	if (r < 0) {
		fprintf(stderr, "test-admitter: %s\n", e.msg);
		return 1;
	}
	shl_stats *s = malloc(sizeof(*s));
	if (s == NULL)
		return 1;
	int64_t end = shl_now() + (int64_t)secs * 1000000000LL;
	uint64_t done = 0, errors = 0;
	while (done < max && shl_now() < end && access(argv[5], F_OK) != 0) {
		int model = shl_lookup(h, argv[2]);
		if (model < 0) {
			fprintf(stderr, "test-admitter: lookup: %s\n", shl_strerror(model));
			errors++;
			break;
		}
		shl_cost c = {.input_tokens = 10, .max_tokens = 10};
		shl_ticket t;
		r = shl_acquire(h, model, &c, 2000000000LL, &t, NULL);
		if (r == -ETIMEDOUT || r == -EAGAIN)
			continue;
		if (r < 0) {
			fprintf(stderr, "test-admitter: acquire: %s\n", shl_strerror(r));
			errors++;
			break;
		}
		shl_usage u = {.input_tokens = 10, .output_tokens = 5};
		if ((r = shl_settle(h, &t, &u)) < 0) {
			fprintf(stderr, "test-admitter: settle: %s\n", shl_strerror(r));
			errors++;
		}
		uint64_t rpm = 0;
		const shl_pool_stats *ps;
		if (shl_stats_get(h, s) == 0 && (ps = tool_pool_stats(s, t.pool)) != NULL)
			rpm = ps->limit[SHL_DIM_RPM];
		printf("admitted gen=%llu rpm=%llu\n", (unsigned long long)t.generation,
		       (unsigned long long)rpm);
		fflush(stdout);
		done++;
	}
	printf("done admitted=%llu errors=%llu\n", (unsigned long long)done,
	       (unsigned long long)errors);
	free(s);
	shl_detach(h);
	return errors ? 1 : 0;
}
