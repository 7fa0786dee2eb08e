/*
 * cluster-bench.c - the cost of multi-host mode, measured in one run.
 *
 *   shmlimit-cluster-bench --agent build/shmlimit-agent [--quick] [--out DIR]
 *
 * 1. The hot path with multi-host mode on vs off: one process, shl_try +
 *    shl_settle in a loop on a pool whose limits are far above what one
 *    core can admit, on two segments side by side: one single-host, one in
 *    multi-host mode with its agent and a real redis-server (credit leased
 *    as in production).  Alternating rounds; the median ns per admit+settle
 *    of each, and their ratio (target: within 10%).
 * 2. Redis operations per host at saturation, for 1, 3 and 10 simulated
 *    hosts (a segment and an agent each, one worker process each admitting
 *    as fast as the global limit allows): Redis commands per second per
 *    host, and admissions per Redis command (target: flat per host, not
 *    per request).
 * Servers listen on 127.0.0.1 only and are stopped here.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmlimit.h"

static const char *g_agent = "build/shmlimit-agent";
static int g_port;
static pid_t g_redis;

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(s, (struct sockaddr *)&a, &l) != 0)
		exit(2);
	int p = ntohs(a.sin_port);
	close(s);
	return p;
}

static int redis_alive(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(s);
	return ok;
}

static void redis_start(void)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", g_port);
	g_redis = fork();
	if (g_redis == 0) {
		int fd = open("/dev/null", O_WRONLY);
		dup2(fd, 1);
		execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
		       "", "--appendonly", "no", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && !redis_alive(); i++)
		sleep_ms(25);
	if (!redis_alive()) {
		fprintf(stderr, "cluster-bench: redis-server did not start\n");
		exit(2);
	}
}

static pid_t agent_start(const char *seg, const char *id)
{
	pid_t p = fork();
	if (p == 0) {
		execl(g_agent, g_agent, seg, "--host-id", id, (char *)NULL);
		_exit(127);
	}
	return p;
}

static void stop(pid_t p)
{
	if (p > 0) {
		kill(p, SIGTERM);
		waitpid(p, NULL, 0);
	}
}

static void make_seg(const char *name, int cluster, const char *prefix, long rpm)
{
	char cl[256] = "", cfg[2048];
	if (cluster)
		snprintf(cl, sizeof(cl),
			 ", \"cluster\": {\"redis\": \"127.0.0.1:%d\", \"prefix\": \"%s\","
			 " \"lease_ms\": 100}",
			 g_port, prefix);
	snprintf(cfg, sizeof(cfg),
		 "{\"spend_cap_usd\": null, \"pools\": [{\"name\": \"p\", \"rpm\": %ld,"
		 " \"itpm\": %ld, \"otpm\": %ld, \"margin\": 0,"
		 " \"prices\": {\"input\": 3, \"output\": 15, \"cache_write_5m\": 3.75,"
		 " \"cache_write_1h\": 6, \"cache_read\": 0.3}}],"
		 " \"models\": [{\"match\": \"m*\", \"pool\": \"p\"}]%s}",
		 rpm, rpm * 100, rpm * 100, cl);
	shl_config *c;
	shl_err err;
	if (shl_config_parse(cfg, strlen(cfg), &c, &err) ||
	    shl_create(name, c, SHL_CREATE_REPLACE, NULL, &err)) {
		fprintf(stderr, "cluster-bench: %s\n", err.msg);
		exit(2);
	}
	shl_config_free(c);
}

/* ns per admit+settle over `n` rounds of shl_try + shl_settle.  Two copies,
 * so that `valgrind --tool=callgrind --toggle-collect=hot_single` (or
 * hot_multi) counts the instructions of one segment's loop alone. */
#define HOT_LOOP(fn)                                                                        \
	static __attribute__((noinline)) double fn(shl_t *h, long n, long *refused)         \
	{                                                                                   \
		int m = shl_lookup(h, "m1");                                                \
		shl_cost c = {.input_tokens = 10, .max_tokens = 10};                        \
		shl_usage u = {.input_tokens = 10, .output_tokens = 10};                    \
		shl_ticket t;                                                               \
		int64_t t0 = shl_now();                                                     \
		long ok = 0;                                                                \
		for (long i = 0; i < n; i++) {                                              \
			if (shl_try(h, m, &c, &t, NULL) == 0) {                             \
				shl_settle(h, &t, &u);                                      \
				ok++;                                                       \
			}                                                                   \
		}                                                                           \
		int64_t t1 = shl_now();                                                     \
		*refused += n - ok;                                                         \
		return (double)(t1 - t0) / (double)n;                                       \
	}
HOT_LOOP(hot_single)
HOT_LOOP(hot_multi)

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int quick = 0, hot_only = 0;
	const char *out = "build/bench";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
			g_agent = argv[++i];
		else if (strcmp(argv[i], "--quick") == 0)
			quick = 1;
		else if (strcmp(argv[i], "--hot-only") == 0)
			hot_only = 1;
		else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
			out = argv[++i];
		else {
			fprintf(stderr, "usage: %s [--agent PATH] [--quick] [--hot-only] [--out DIR]\n",
				argv[0]);
			return 2;
		}
	}
	char path[512];
	snprintf(path, sizeof(path), "%s/cluster.md", out);
	FILE *md = fopen(path, "w");
	if (md == NULL) {
		perror(path);
		return 2;
	}
	g_port = free_port();
	redis_start();
	char prefix[32], plain[64], clus[64];
	snprintf(prefix, sizeof(prefix), "bench%d", (int)getpid());
	snprintf(plain, sizeof(plain), "shlcb-%d-plain", (int)getpid());
	snprintf(clus, sizeof(clus), "shlcb-%d-cluster", (int)getpid());

	/* 1. The hot path, on vs off (limits far above one core's rate). */
	make_seg(plain, 0, prefix, 6000000000L);
	make_seg(clus, 1, prefix, 6000000000L);
	pid_t ag = agent_start(clus, "hot");
	sleep_ms(400); /* the agent's first lease (not a correctness wait) */
	shl_t *hp, *hc;
	if (shl_attach(plain, 0, &hp, NULL) || shl_attach(clus, 0, &hc, NULL))
		return 2;
	int rounds = quick ? 5 : 11;
	long n = quick ? 200000 : 1000000, refused_p = 0, refused_c = 0;
	double tp[16], tc[16];
	hot_single(hp, n / 10, &refused_p); /* warm both */
	hot_multi(hc, n / 10, &refused_c);
	refused_p = refused_c = 0;
	for (int r = 0; r < rounds; r++) {
		tp[r] = hot_single(hp, n, &refused_p);
		tc[r] = hot_multi(hc, n, &refused_c);
	}
	qsort(tp, (size_t)rounds, sizeof(double), cmp_d);
	qsort(tc, (size_t)rounds, sizeof(double), cmp_d);
	double mp = tp[rounds / 2], mc = tc[rounds / 2];
	fprintf(md, "## Multi-host mode\n\n### The hot path, on vs off\n\n");
	fprintf(md, "One process, shl_try + shl_settle, %d alternating rounds of %ld, limits far above "
		    "one core's rate; the multi-host segment's credit leased by its agent from a real "
		    "redis-server.\n\n",
		rounds, n);
	fprintf(md, "| segment | admit+settle, median ns (min..max) | refused |\n|---|---|---|\n");
	fprintf(md, "| single host | %.1f (%.1f..%.1f) | %ld |\n", mp, tp[0], tp[rounds - 1], refused_p);
	fprintf(md, "| multi-host | %.1f (%.1f..%.1f) | %ld |\n", mc, tc[0], tc[rounds - 1], refused_c);
	fprintf(md, "\nratio multi-host / single host: **%.2f** (target <= 1.10)\n\n", mc / mp);
	printf("cluster-bench: hot path %.1f ns single host, %.1f ns multi-host: ratio %.2f\n", mp, mc,
	       mc / mp);
	shl_detach(hp);
	shl_detach(hc);
	stop(ag);
	shl_unlink(plain);
	shl_unlink(clus);

	if (hot_only) {
		fclose(md);
		stop(g_redis);
		return 0;
	}
	/* 2. Redis operations per host at saturation, 1, 3 and 10 hosts. */
	fprintf(md, "### Redis operations per host at saturation\n\n");
	fprintf(md, "Each host: a segment, its agent, one worker admitting as fast as the global "
		    "limit (60,000 RPM = 1,000 requests/s, burst 1 s) allows; %d s per run.\n\n",
		quick ? 2 : 5);
	fprintf(md, "| hosts | admitted/s (all hosts) | Redis commands/s per host | admissions per Redis "
		    "command |\n|---|---|---|---|\n");
	int counts[] = {1, 3, 10};
	for (int k = 0; k < 3; k++) {
		int nh = counts[k];
		char names[10][64];
		pid_t agents[10], workers[10];
		snprintf(prefix, sizeof(prefix), "bench%d-%d", (int)getpid(), nh);
		for (int i = 0; i < nh; i++) {
			snprintf(names[i], sizeof(names[i]), "shlcb-%d-h%d", (int)getpid(), i);
			make_seg(names[i], 1, prefix, 60000);
			char id[16];
			snprintf(id, sizeof(id), "h%d", i);
			agents[i] = agent_start(names[i], id);
		}
		sleep_ms(300);
		int secs = quick ? 2 : 5;
		uint64_t ops0[10], adm0[10];
		shl_t *hs[10];
		for (int i = 0; i < nh; i++) {
			shl_stats st;
			shl_attach(names[i], 0, &hs[i], NULL);
			shl_stats_get(hs[i], &st);
			ops0[i] = st.cluster_redis_ops;
			adm0[i] = st.pools[0].admitted;
		}
		for (int i = 0; i < nh; i++) {
			workers[i] = fork();
			if (workers[i] == 0) {
				int m = shl_lookup(hs[i], "m1");
				shl_cost c = {.input_tokens = 10, .max_tokens = 10};
				shl_usage u = {.input_tokens = 10, .output_tokens = 10};
				int64_t end = shl_now() + (int64_t)secs * 1000000000LL;
				while (shl_now() < end) {
					shl_ticket t;
					if (shl_acquire(hs[i], m, &c, 100000000LL, &t, NULL) == 0)
						shl_settle(hs[i], &t, &u);
				}
				_exit(0);
			}
		}
		for (int i = 0; i < nh; i++)
			waitpid(workers[i], NULL, 0);
		double ops = 0, adm = 0;
		for (int i = 0; i < nh; i++) {
			shl_stats st;
			shl_stats_get(hs[i], &st);
			ops += (double)(st.cluster_redis_ops - ops0[i]);
			adm += (double)(st.pools[0].admitted - adm0[i]);
			shl_detach(hs[i]);
			stop(agents[i]);
			shl_unlink(names[i]);
		}
		fprintf(md, "| %d | %.0f | %.1f | %.1f |\n", nh, adm / secs, ops / secs / nh,
			ops > 0 ? adm / ops : 0);
		printf("cluster-bench: %d host(s): %.0f admitted/s, %.1f Redis commands/s per host, %.1f "
		       "admissions per command\n",
		       nh, adm / secs, ops / secs / nh, ops > 0 ? adm / ops : 0);
	}
	fprintf(md, "\n");
	fclose(md);
	stop(g_redis);
	printf("cluster-bench: %s\n", path);
	return 0;
}
