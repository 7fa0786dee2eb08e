# tests/valgrind.mk - the tools under valgrind memcheck (tests/valgrind.sh):
# shmlimit-stat, shmlimit-ctl (every command and error paths) and
# shmlimit-plan; any memcheck error or definite leak fails.  About 20 s.

$(BUILD)/.deps-valgrind: scripts/deps.sh
	@mkdir -p $(BUILD)
	@$(DEPS_CHECK) valgrind
	@touch $@

.PHONY: check-valgrind
check-valgrind: $(BUILD)/shmlimit-stat $(BUILD)/shmlimit-ctl $(BUILD)/shmlimit-plan $(BUILD)/.deps-valgrind
	timeout 120 tests/valgrind.sh $(BUILD)
CHECKS += check-valgrind
