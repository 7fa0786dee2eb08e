# tests/tests.mk - the library's CUnit suites (one binary, a file per topic).
UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_BIN := $(BUILD)/test-unit
CUNIT_LIBS = $(shell pkg-config --libs cunit 2>/dev/null || echo -lcunit)

$(UNIT_BIN): $(UNIT_SRC) tests/unit/testutil.h $(LIB_A) | $(BUILD)/.deps-test
	$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $(UNIT_SRC) $(ALL_LDFLAGS) $(SHL_STATIC) $(CUNIT_LIBS)

.PHONY: check-unit
check-unit: $(UNIT_BIN)
	timeout 300 $(UNIT_BIN)

CHECKS += check-unit
