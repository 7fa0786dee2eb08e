# mock.mk - shmlimit-mock, the mock Claude Messages API (see mock/README.md).
# It needs only cJSON and pthreads, not libshmlimit.

MOCK_SRC := $(wildcard mock/*.c)
MOCK_OBJ := $(patsubst mock/%.c,$(BUILD)/mock/%.o,$(MOCK_SRC))
MOCK_BIN := $(BUILD)/shmlimit-mock

ALL_TARGETS += $(MOCK_BIN)
CHECKS += check-mock

$(BUILD)/mock/%.o: mock/%.c $(wildcard mock/*.h) | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(MOCK_BIN): $(MOCK_OBJ)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(shell pkg-config --libs libcjson 2>/dev/null || echo -lcjson) -lpthread -lm

.PHONY: check-mock
check-mock: $(MOCK_BIN)
	timeout 120 mock/test-mock.sh $(MOCK_BIN)
