# tests/stats-json.mk - shl_stats_json() unit test (its own CUnit binary,
# so that the shared suite registry in tests/unit/main.c is untouched).
STATS_JSON_TEST := $(BUILD)/test-stats-json

$(STATS_JSON_TEST): tests/stats_json/test_stats_json.c $(LIB_A) | $(BUILD)/.deps-test
	$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $< $(ALL_LDFLAGS) $(SHL_STATIC) $(CUNIT_LIBS)

.PHONY: check-stats-json
check-stats-json: $(STATS_JSON_TEST)
	timeout 60 $(STATS_JSON_TEST)

CHECKS += check-stats-json
