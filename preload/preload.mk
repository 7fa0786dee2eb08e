# preload.mk - libshmlimit-preload.so, the LD_PRELOAD shim for libcurl
# programs, and its tests (see preload/README.md): check-preload and
# check-preload-bad, with the helper programs they run.
#
# The shim contains libshmlimit statically (hidden: --exclude-libs and the
# version script) and reaches libcurl only through dlsym(RTLD_NEXT), so it
# does not link libcurl; liburcu and cJSON are shared-library dependencies.

# libshmlimit-preload.so is the stub (stub.c, libc only); the first hook of a
# process that names a segment loads libshmlimit-preload-impl.so, the shim
# itself, from the same directory (stub.c says why).
PRELOAD_SRC := $(filter-out preload/stub.c,$(wildcard preload/*.c))
PRELOAD_OBJ := $(patsubst preload/%.c,$(BUILD)/preload/%.o,$(PRELOAD_SRC))
PRELOAD_SO := $(BUILD)/libshmlimit-preload.so
PRELOAD_IMPL := $(BUILD)/libshmlimit-preload-impl.so
PRELOAD_WORKER := $(BUILD)/shmlimit-preload-worker
PRELOAD_SEG := $(BUILD)/shmlimit-preload-seg
CURL_CFLAGS = $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS = $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)

ALL_TARGETS += $(PRELOAD_SO) $(PRELOAD_IMPL) $(PRELOAD_WORKER) $(PRELOAD_SEG)
CHECKS += check-preload

$(BUILD)/preload/%.o: preload/%.c preload/shim.h libshmlimit/include/shmlimit.h | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CURL_CFLAGS) -c $< -o $@

$(PRELOAD_IMPL): $(PRELOAD_OBJ) $(LIB_A) preload/impl.map
	$(CC) -shared -o $@ $(PRELOAD_OBJ) -Wl,--version-script=preload/impl.map \
	  -Wl,--exclude-libs,ALL -Wl,--no-undefined -Wl,-z,nodelete \
	  $(ALL_LDFLAGS) $(LIB_A) $(DEP_LIBS) -ldl -lpthread

$(PRELOAD_SO): $(BUILD)/preload/stub.o preload/preload.map $(PRELOAD_IMPL)
	$(CC) -shared -o $@ $(BUILD)/preload/stub.o -Wl,--version-script=preload/preload.map \
	  -Wl,--no-undefined -Wl,-z,nodelete $(ALL_LDFLAGS) -ldl -lpthread

# The multi-threaded libcurl worker used by the tests and usable on its own.
$(PRELOAD_WORKER): preload/tests/worker.c | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CURL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(CURL_LIBS) -lpthread

.PHONY: check-preload
# run.sh: the curl tool and the threaded worker; route.sh: SHMLIMIT_ROUTE
# (preload/README.md, "Routing across pools"), with a libcurl application
# that checks its own body buffer after each transfer, and the tools.
PRELOAD_ROUTEAPP := $(BUILD)/shmlimit-preload-routeapp
check-preload: $(PRELOAD_SO) $(PRELOAD_WORKER) $(PRELOAD_SEG) $(BUILD)/shmlimit-mock $(BUILD)/.deps-test \
  $(PRELOAD_ROUTEAPP) $(BUILD)/shmlimit-ctl $(BUILD)/shmlimit-stat
	timeout 120 preload/tests/run.sh $(BUILD)
	timeout 120 preload/tests/route.sh $(BUILD)
	timeout 120 preload/tests/learn.sh $(BUILD)
	timeout 120 preload/tests/multi.sh $(BUILD)
	timeout 120 preload/tests/unknown.sh $(BUILD)
	timeout 240 preload/tests/fidelity.sh $(BUILD)

$(PRELOAD_ROUTEAPP): preload/tests/routeapp.c | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CURL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(CURL_LIBS)

# check-preload-bad: preload/tests/bad.sh, the shim under the curl tool (and
# a libcurl client with CURLOPT_HEADER) against broken and unusual responses
# from shmlimit-mock: truncated, gzip, huge headers, invalid UTF-8, absurd
# usage, malformed SSE.
PRELOAD_HDRCLIENT := $(BUILD)/shmlimit-preload-hdrclient

$(PRELOAD_HDRCLIENT): preload/tests/hdrclient.c | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CURL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(CURL_LIBS)

CHECKS += check-preload-bad
.PHONY: check-preload-bad
check-preload-bad: $(PRELOAD_SO) $(PRELOAD_SEG) $(PRELOAD_HDRCLIENT) $(BUILD)/shmlimit-mock \
  $(BUILD)/.deps-test
	timeout 120 preload/tests/bad.sh $(BUILD)

# A segment helper for the tests (create / stats / rm), library only.
$(PRELOAD_SEG): preload/tests/seg.c $(LIB_A)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(SHL_STATIC)
INSTALL_LIBS += $(PRELOAD_SO) $(PRELOAD_IMPL)
