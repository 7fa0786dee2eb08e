# fuzz/fuzz.mk - libFuzzer targets (clang from Debian's packages).
#
#   make fuzz          each target for FUZZ_SECONDS (default 300)
#   make check-fuzz    a short smoke of each (FUZZ_SMOKE seconds), after
#                      replaying every saved regression input
# New inputs go to build/fuzz/corpus-*, never into the repository; a crash
# found is written to build/fuzz/<target>-crash-*; it becomes a file in
# fuzz/regress/<target>/ (copy it there by hand).
FUZZ_TARGETS := config segment request headers usage sse
FUZZ_SECONDS ?= 300
FUZZ_SMOKE ?= 2
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_BIN := $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))

$(BUILD)/.deps-fuzz: scripts/deps.sh
	@mkdir -p $(BUILD)
	@$(DEPS_CHECK) build fuzz
	@touch $@

$(BUILD)/fuzz/libshmlimit.a: $(LIB_SRC) $(wildcard libshmlimit/src/*.h) libshmlimit/include/shmlimit.h | $(BUILD)/.deps-fuzz
	$(MAKE) --no-print-directory BUILD=$(BUILD)/fuzz CC=clang OPT=-O1 \
	  SAN="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" $@

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c $(BUILD)/fuzz/libshmlimit.a
	clang -std=c11 -D_GNU_SOURCE -g -O1 $(WARN) -Ilibshmlimit/include -Ilibshmlimit/src \
	  $(DEP_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< $(BUILD)/fuzz/libshmlimit.a \
	  $(DEP_LIBS) -lpthread

# The request/response component's readers (request body, response
# headers, JSON usage, SSE stream; libshmlimit/src/wire_*.c, behind the
# shl_ex_* API that the shim and the bindings call) are fuzzed through the
# instrumented archive like the rest of the library.
FUZZ_SHIM := request headers usage sse
$(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_SHIM)): fuzz/shimfuzz.h libshmlimit/src/wire.h

.PHONY: fuzz check-fuzz
fuzz: $(FUZZ_BIN)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz/corpus-$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(BUILD)/fuzz/$$t- \
	    $(BUILD)/fuzz/corpus-$$t fuzz/corpus/$$t 2>&1 | grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' ; \
	done

check-fuzz: $(FUZZ_BIN)
	@set -e; pass=0; for t in $(FUZZ_TARGETS); do \
	  for f in fuzz/regress/$$t/*; do [ -f "$$f" ] || continue; \
	    $(BUILD)/fuzz/fuzz_$$t "$$f" >/dev/null 2>&1 || { echo "fuzz: regression $$f fails"; exit 1; }; done; \
	  mkdir -p $(BUILD)/fuzz/corpus-$$t; \
	  timeout $$(( $(FUZZ_SMOKE) + 60 )) $(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SMOKE) \
	    -artifact_prefix=$(BUILD)/fuzz/$$t- \
	    -print_final_stats=1 $(BUILD)/fuzz/corpus-$$t fuzz/corpus/$$t > $(BUILD)/fuzz/$$t.log 2>&1 \
	    || { tail -n 30 $(BUILD)/fuzz/$$t.log; echo "fuzz: $$t: 0 passed, 1 failed"; exit 1; }; \
	  echo "fuzz $$t: $$(grep -o 'number_of_executed_units: [0-9]*' $(BUILD)/fuzz/$$t.log) in $(FUZZ_SMOKE) s"; \
	  pass=$$((pass + 1)); \
	done; echo "fuzz: $$pass passed, 0 failed"
CHECKS += check-fuzz
