# plan.mk - shmlimit-plan, the capacity/cost planner (see plan/README.md).
# It links the static library only to read and validate configurations.

PLAN_BIN := $(BUILD)/shmlimit-plan
PLAN_TEST := $(BUILD)/test-plan
PLAN_OBJ := $(BUILD)/plan/plan.o

ALL_TARGETS += $(PLAN_BIN)
CHECKS += check-plan

$(BUILD)/plan/%.o: plan/%.c plan/plan.h libshmlimit/include/shmlimit.h | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(PLAN_BIN): $(BUILD)/plan/main.o $(PLAN_OBJ) $(LIB_A)
	$(CC) -o $@ $(BUILD)/plan/main.o $(PLAN_OBJ) $(ALL_LDFLAGS) $(SHL_STATIC)

$(PLAN_TEST): $(BUILD)/plan/test-plan.o $(PLAN_OBJ) $(LIB_A)
	$(CC) -o $@ $(BUILD)/plan/test-plan.o $(PLAN_OBJ) $(ALL_LDFLAGS) $(SHL_STATIC)

.PHONY: check-plan
check-plan: $(PLAN_BIN) $(PLAN_TEST)
	timeout 120 $(PLAN_TEST) $(PLAN_BIN) plan/README.md man/shmlimit-plan.1
INSTALL_BINS += $(PLAN_BIN)
INSTALL_MANS += man/shmlimit-plan.1
