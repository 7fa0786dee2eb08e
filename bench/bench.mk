# bench/bench.mk - the benchmark suite (issue 5); included by the top Makefile.
#
#   make bench         full suite (about 6 minutes): tables, ratios, CSV, PNG under build/bench/
#   make bench-quick   the same comparisons with short runs (about 2 minutes, most of it the
#                      Python transport's sequential requests)
#   make check-bench   smoke test (part of `make check`): every mechanism runs, no over-admission

BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BUILD)/shmlimit-bench

ALL_TARGETS += $(BENCH_BIN)
CHECKS += check-bench

$(BENCH_BIN): $(BENCH_SRC) bench/bench.h bench/run.h $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(BENCH_SRC) $(ALL_LDFLAGS) $(SHL_STATIC)

.PHONY: bench bench-quick check-bench
# The mock and the preload shim come from build-all; if another component
# does not build, the comparison still runs and the preload part says why not.
bench: $(BENCH_BIN)
	@$(DEPS_CHECK) build bench
	@$(MAKE) --no-print-directory build-all || echo "bench: build-all failed; going on"
	timeout 900 bench/run.sh full

bench-quick: $(BENCH_BIN)
	@$(DEPS_CHECK) build bench
	@$(MAKE) --no-print-directory build-all || echo "bench: build-all failed; going on"
	timeout 300 bench/run.sh quick

check-bench: $(BENCH_BIN)
	timeout 120 $(BENCH_BIN) --smoke

# Multi-host mode's costs (README "Many hosts"): hot path on vs off, Redis
# operations per host for 1, 3 and 10 hosts; run by bench/run.sh.
CLUSTER_BENCH := $(BUILD)/shmlimit-cluster-bench
ALL_TARGETS += $(CLUSTER_BENCH)
$(CLUSTER_BENCH): bench/cluster/cluster-bench.c $(LIB_A)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(SHL_STATIC)
