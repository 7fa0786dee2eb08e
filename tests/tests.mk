# tests/tests.mk - the library's CUnit suites (one binary, a file per topic).
UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_BIN := $(BUILD)/test-unit
CUNIT_LIBS = $(shell pkg-config --libs cunit 2>/dev/null || echo -lcunit)

# test_rule.c checks the benchmark's copy of the admission rule (bench/rule.c)
# against the library's: the benchmark itself sees only the public header.
UNIT_BENCH_RULE := bench/rule.c
$(UNIT_BIN): $(UNIT_SRC) tests/unit/testutil.h $(UNIT_BENCH_RULE) bench/bench.h $(LIB_A) | $(BUILD)/.deps-test
	$(CC) $(LIB_CFLAGS) -Ibench -Wno-missing-prototypes -o $@ $(UNIT_SRC) $(UNIT_BENCH_RULE) \
	  $(ALL_LDFLAGS) $(SHL_STATIC) $(CUNIT_LIBS)

.PHONY: check-unit
check-unit: $(UNIT_BIN)
	timeout 300 $(UNIT_BIN)

CHECKS += check-unit

# Sanitizers: the library and its suites rebuilt in their own build trees.
#   check-asan: AddressSanitizer + UndefinedBehaviorSanitizer, whole suite
#   check-tsan: ThreadSanitizer, every multi-threaded suite (threads: lookup and
#               applies; mt: admission, waits, routing, settle, cancel, apply,
#               reset, stats readers, attach/detach; pslot: per-thread slots)
#               and the preload shim's threaded libcurl worker
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
.PHONY: check-asan check-tsan
check-asan:
	$(MAKE) --no-print-directory BUILD=$(BUILD)/asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  $(BUILD)/asan/test-unit $(BUILD)/asan/shmlimit-scribble $(BUILD)/asan/shmlimit-crash
	$(SAN_ENV) timeout 600 $(BUILD)/asan/test-unit
	$(SAN_ENV) timeout 120 $(BUILD)/asan/shmlimit-scribble --workers 3 --seconds 4
	$(SAN_ENV) timeout 120 $(BUILD)/asan/shmlimit-crash --workers 4 --kills 60 --seconds 10
TSAN_SUITES := threads,mt,pslot
check-tsan: $(BUILD)/shmlimit-mock $(BUILD)/shmlimit-preload-seg
	$(MAKE) --no-print-directory BUILD=$(BUILD)/tsan OPT=-O1 SAN="-fsanitize=thread" \
	  $(BUILD)/tsan/test-unit $(BUILD)/tsan/libshmlimit-preload.so $(BUILD)/tsan/shmlimit-preload-worker
	TSAN_OPTIONS=halt_on_error=1:exitcode=66 SHL_TEST_ONLY=$(TSAN_SUITES) timeout 600 $(BUILD)/tsan/test-unit
	timeout 120 tests/tsan-preload.sh $(BUILD)/tsan $(BUILD)
CHECKS += check-asan check-tsan

.PHONY: check-install
check-install: $(LIB_A) $(LIB_SO) $(BUILD)/shmlimit.pc
	timeout 120 tests/install-test.sh
CHECKS += check-install

# The kill -9 crash test: a quick run in `make check`, a long one in `make chaos`.
$(BUILD)/shmlimit-crash: tests/crash/crash.c $(LIB_A)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(SHL_STATIC)
.PHONY: check-crash chaos
check-crash: $(BUILD)/shmlimit-crash
	timeout 120 $(BUILD)/shmlimit-crash --workers 6 --kills 200 --seconds 20
chaos: $(BUILD)/shmlimit-crash
	timeout 900 $(BUILD)/shmlimit-crash --workers 16 --kills 4000 --seconds 600
CHECKS += check-crash

# A hostile writer scribbling over a live segment (with the stats tool too).
$(BUILD)/shmlimit-scribble: tests/crash/scribble.c $(LIB_A)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(SHL_STATIC)
.PHONY: check-scribble
check-scribble: $(BUILD)/shmlimit-scribble
	timeout 120 $(BUILD)/shmlimit-scribble --workers 4 --seconds 6 \
	  $(if $(wildcard $(BUILD)/shmlimit-stat),--stat $(BUILD)/shmlimit-stat)
CHECKS += check-scribble
