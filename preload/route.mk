# route.mk - what preload/tests/route.sh needs besides the shim and the mock
# (SHMLIMIT_ROUTE; see preload/README.md, "Routing across pools").  The
# script itself runs in check-preload (preload/preload.mk).

PRELOAD_ROUTEAPP := $(BUILD)/shmlimit-preload-routeapp

# A libcurl application that checks its own body buffer after each transfer.
$(PRELOAD_ROUTEAPP): preload/tests/routeapp.c | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CURL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(CURL_LIBS)

check-preload: $(PRELOAD_ROUTEAPP) $(BUILD)/shmlimit-ctl $(BUILD)/shmlimit-stat
