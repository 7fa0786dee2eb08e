# bad.mk - preload/tests/bad.sh: the shim under the curl tool (and a libcurl
# client with CURLOPT_HEADER) against broken and unusual responses from
# shmlimit-mock: truncated, gzip, huge headers, invalid UTF-8, absurd usage,
# malformed SSE.  Its own check target, so that preload.mk stays as it is.
# (Literal paths: this file may be read before preload.mk.)

PRELOAD_HDRCLIENT := $(BUILD)/shmlimit-preload-hdrclient

$(PRELOAD_HDRCLIENT): preload/tests/hdrclient.c | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CURL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(CURL_LIBS)

CHECKS += check-preload-bad
.PHONY: check-preload-bad
check-preload-bad: $(BUILD)/libshmlimit-preload.so $(BUILD)/shmlimit-preload-seg \
  $(PRELOAD_HDRCLIENT) $(BUILD)/shmlimit-mock $(BUILD)/.deps-test
	timeout 120 preload/tests/bad.sh $(BUILD)
