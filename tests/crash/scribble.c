/*
 * scribble.c - a hostile writer scribbles random bytes over a live segment
 * while workers admit, settle, read stats and validate through it.
 *
 * Workers may be refused, may see the segment reported as corrupt, may have
 * to re-attach; they must never crash, hang or write outside the mapping.
 * Each worker runs a bounded loop and exits 0; the parent checks every
 * worker ended by itself (no signal, no timeout) and that the scribbler
 * really did write.  The scribbler starts once every worker has attached
 * (or a second has passed): a worker whose first attach came after the
 * live configuration was scribbled could never attach at all, and would
 * end having done nothing (a start-up race, not a library fault).  Run
 * under AddressSanitizer by check-asan's build too.
 *
 * Usage: shmlimit-scribble [--workers P] [--seconds S] [--stat PATH-TO-shmlimit-stat]
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmlimit.h"

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static char name[64];
static _Atomic int *attached; /* workers attached at least once (shared mapping) */

static void worker(int id, int64_t until)
{
	uint64_t seed = 88172645463325252ULL + (uint64_t)id;
	shl_t *h = NULL;
	long ops = 0;
	int counted = 0;
	while (shl_now() < until) {
		if (h == NULL && shl_attach(name, 0, &h, NULL) != 0) {
			h = NULL;
			continue;
		}
		if (!counted) {
			/* relaxed: a counter the scribbler polls; it publishes nothing. */
			atomic_fetch_add_explicit(attached, 1, memory_order_relaxed);
			counted = 1;
		}
		const char *ids[] = {"claude-sonnet-4-5", "claude-opus-4-6", "claude-haiku-4-5"};
		int m = shl_lookup(h, ids[rnd(&seed) % 3]);
		if (m >= 0) {
			shl_cost c = {.input_tokens = rnd(&seed) % 500, .max_tokens = rnd(&seed) % 500};
			shl_ticket t;
			shl_refusal why;
			int r = shl_acquire(h, m, &c, 1000000, &t, &why); /* at most 1 ms */
			if (r == 0) {
				shl_usage u = {.input_tokens = rnd(&seed) % 600,
					       .output_tokens = rnd(&seed) % 600};
				if (rnd(&seed) & 1)
					shl_settle(h, &t, &u);
				else
					shl_cancel(h, &t);
			}
			shl_hold(h, shl_model_pool(h, m), (int64_t)(rnd(&seed) % 1000));
			shl_clamp(h, shl_model_pool(h, m), (int)(rnd(&seed) % 3), rnd(&seed) % 100000);
		}
		shl_stats st;
		shl_stats_get(h, &st);
		if (rnd(&seed) % 64 == 0) {
			char rep[1024];
			shl_check(h, rep, sizeof(rep));
			shl_detach(h); /* and re-attach through validation */
			h = NULL;
		}
		ops++;
	}
	if (h)
		shl_detach(h);
	_exit(ops > 0 ? 0 : 7);
}

static void scribbler(int P, int64_t until, long *writes_out)
{
	int64_t start_by = shl_now() + 1000000000LL;
	while (atomic_load_explicit(attached, memory_order_relaxed) < P && shl_now() < start_by) {
		struct timespec w = {0, 100000};
		nanosleep(&w, NULL);
	}
	char path[80];
	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	FILE *f = fopen(path, "r+b");
	if (f == NULL)
		_exit(8);
	uint64_t seed = (uint64_t)getpid() * 0x2545F4914F6CDD1DULL;
	long writes = 0;
	unsigned char buf[64];
	while (shl_now() < until) {
		size_t n = 1 + rnd(&seed) % 16;
		for (size_t i = 0; i < n; i++)
			buf[i] = (unsigned char)rnd(&seed);
		long off = (long)(rnd(&seed) % (1642496 - 16)); /* SHL_SEG_SIZE */
		if (rnd(&seed) % 4 == 0)
			off = 0x100 + (long)(rnd(&seed) % 32768); /* pool runtime: the hot words */
		else if (rnd(&seed) % 3 == 0)
			off = 0x1F000 + (long)(rnd(&seed) % 16) * 22592 +
			      (long)(rnd(&seed) % 64); /* process slots: owner and lease */
		fseek(f, off, SEEK_SET);
		fwrite(buf, 1, n, f);
		fflush(f);
		writes++;
		struct timespec d = {0, 20000};
		nanosleep(&d, NULL);
	}
	fclose(f);
	*writes_out = writes;
	_exit(writes > 1000 ? 0 : 9);
}

int main(int argc, char **argv)
{
	int P = 4, secs = 5;
	const char *stat = NULL;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--workers") == 0)
			P = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--seconds") == 0)
			secs = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--stat") == 0)
			stat = argv[i + 1];
	}
	if (P < 1 || P > 64 || secs < 1)
		return 2;
	snprintf(name, sizeof(name), "shlscribble-%d", (int)getpid());
	shl_config *c;
	shl_config_preset(2, &c);
	if (shl_create(name, c, SHL_CREATE_REPLACE, NULL, NULL) != 0)
		return 2;
	shl_config_free(c);
	attached = mmap(NULL, sizeof(*attached), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			-1, 0);
	if (attached == MAP_FAILED)
		return 2;
	atomic_init(attached, 0);
	int64_t until = shl_now() + (int64_t)secs * 1000000000LL;
	pid_t pids[66];
	int n = 0;
	for (int i = 0; i < P; i++)
		if ((pids[n++] = fork()) == 0)
			worker(i, until);
	long writes = 0;
	if ((pids[n++] = fork()) == 0)
		scribbler(P, until, &writes);
	if (stat != NULL && (pids[n++] = fork()) == 0) {
		/* the stats tool, run again and again against the scribbled segment:
		 * any exit code is fine, a signal is not */
		while (shl_now() < until) {
			pid_t p = fork();
			if (p == 0) {
				int fd = open("/dev/null", O_WRONLY);
				dup2(fd, 1);
				dup2(fd, 2);
				execl(stat, stat, "--json", name, (char *)NULL);
				_exit(127);
			}
			int st;
			waitpid(p, &st, 0);
			if (WIFSIGNALED(st))
				_exit(10);
		}
		_exit(0);
	}
	int passed = 0, failed = 0;
	for (int i = 0; i < n; i++) {
		int st = 0;
		waitpid(pids[i], &st, 0);
		int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
		const char *who = i < P ? "worker" : (i == P ? "scribbler" : "stat tool loop");
		if (ok) {
			passed++;
		} else {
			failed++;
			if (WIFSIGNALED(st))
				printf("FAIL: %s %d killed by signal %d\n", who, i, WTERMSIG(st));
			else
				printf("FAIL: %s %d exited %d\n", who, i, WEXITSTATUS(st));
		}
	}
	shl_unlink(name);
	printf("scribble: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
