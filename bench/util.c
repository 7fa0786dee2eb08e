/*
 * util.c - the bench's clocks and its latency histogram.
 *
 * Two clocks, kept apart on purpose: CLOCK_BOOTTIME is what every
 * mechanism's rule runs on (the library's clock, so the comparison is fair),
 * and a cheap tick counter (the TSC on x86-64, calibrated once against
 * CLOCK_MONOTONIC) times individual calls, so that measuring a 40 ns call
 * does not cost another 30 ns clock_gettime on top.
 *
 * The histogram is log-linear (exact below 128 ns, then 64 buckets per power
 * of two: relative error under 1.6%), fixed size, no allocation, so every
 * call of a run is counted whatever the run's length.
 */
#include <time.h>

#include "bench.h"

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

/* ------------------------------------------------------------------ */
/* Clocks                                                              */
/* ------------------------------------------------------------------ */

int64_t bench_boot_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t bench_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double ticks_per_ns = 1.0;

uint64_t bench_ticks(void)
{
#if defined(__x86_64__)
	return __rdtsc();
#else
	return (uint64_t)bench_mono_ns();
#endif
}

void bench_ticks_calibrate(void)
{
#if defined(__x86_64__)
	/* 50 ms against the monotonic clock: good to ~1e-5 on an invariant TSC. */
	int64_t t0 = bench_mono_ns();
	uint64_t k0 = bench_ticks();
	while (bench_mono_ns() - t0 < 50000000)
		;
	int64_t t1 = bench_mono_ns();
	uint64_t k1 = bench_ticks();
	ticks_per_ns = (double)(k1 - k0) / (double)(t1 - t0);
	if (ticks_per_ns <= 0)
		ticks_per_ns = 1.0;
#endif
}

double bench_ticks_per_ns(void)
{
	return ticks_per_ns;
}

const char *bench_ticks_source(void)
{
#if defined(__x86_64__)
	return "rdtsc";
#else
	return "CLOCK_MONOTONIC";
#endif
}

/* ------------------------------------------------------------------ */
/* Histogram: values below 128 ns exact, then 64 buckets per power of 2. */
/* ------------------------------------------------------------------ */

static int hist_index(uint64_t v)
{
	if (v < BENCH_HIST_LINEAR)
		return (int)v;
	int e = 63 - __builtin_clzll(v); /* >= 7 */
	int idx = BENCH_HIST_LINEAR + (e - 7) * BENCH_HIST_SUB +
		  (int)((v >> (e - 6)) & (BENCH_HIST_SUB - 1));
	return idx < BENCH_HIST_BUCKETS ? idx : BENCH_HIST_BUCKETS - 1;
}

static double hist_mid(int idx)
{
	if (idx < BENCH_HIST_LINEAR)
		return idx;
	int e = (idx - BENCH_HIST_LINEAR) / BENCH_HIST_SUB + 7;
	int sub = (idx - BENCH_HIST_LINEAR) % BENCH_HIST_SUB;
	double lo = (double)(1ULL << e) + (double)sub * (double)(1ULL << (e - 6));
	return lo + (double)(1ULL << (e - 6)) / 2.0;
}

void bench_hist_add(struct bench_hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->count++;
}

void bench_hist_merge(struct bench_hist *into, const struct bench_hist *from)
{
	for (int i = 0; i < BENCH_HIST_BUCKETS; i++)
		into->b[i] += from->b[i];
	into->count += from->count;
}

double bench_hist_quantile(const struct bench_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->count);
	if (rank >= h->count)
		rank = h->count - 1;
	uint64_t seen = 0;
	for (int i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen > rank)
			return hist_mid(i);
	}
	return hist_mid(BENCH_HIST_BUCKETS - 1);
}
