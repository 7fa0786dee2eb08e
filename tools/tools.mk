# tools.mk - shmlimit-stat and shmlimit-ctl (see tools/README.md).

TOOLS_STAT := $(BUILD)/shmlimit-stat
TOOLS_CTL := $(BUILD)/shmlimit-ctl
TOOLS_COMMON := $(BUILD)/tools/common.o
# shmlimit-ctl: the dispatcher, the admin and the admission commands, the ticket format.
CTL_OBJ := $(patsubst %,$(BUILD)/tools/%.o,ctl ctl-admin ctl-admit ticket)
TOOLS_ADMITTER := $(BUILD)/tools/test-admitter

ALL_TARGETS += $(TOOLS_STAT) $(TOOLS_CTL)
CHECKS += check-tools

$(BUILD)/tools/%.o: tools/%.c tools/common.h tools/ctl.h tools/ticket.h libshmlimit/include/shmlimit.h | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(TOOLS_STAT): $(BUILD)/tools/stat.o $(TOOLS_COMMON) $(LIB_A)
	$(CC) -o $@ $(BUILD)/tools/stat.o $(TOOLS_COMMON) $(ALL_LDFLAGS) $(SHL_STATIC)

$(TOOLS_CTL): $(CTL_OBJ) $(TOOLS_COMMON) $(LIB_A)
	$(CC) -o $@ $(CTL_OBJ) $(TOOLS_COMMON) $(ALL_LDFLAGS) $(SHL_STATIC)

.PHONY: check-tools check-tools-docs
check-tools: $(TOOLS_STAT) $(TOOLS_CTL) $(TOOLS_ADMITTER) check-tools-docs
	timeout 120 tools/test-tools.sh $(TOOLS_STAT) $(TOOLS_CTL) $(TOOLS_ADMITTER)

# Every flag in the tools' option tables has an entry in its man page and in tools/README.md;
# every man page renders without a warning (groff -man -ww -z prints nothing).
check-tools-docs: $(BUILD)/.deps-test
	timeout 60 tools/check-flag-docs.sh
	timeout 60 tools/check-man.sh

INSTALL_BINS += $(TOOLS_STAT) $(TOOLS_CTL)
INSTALL_MANS += man/shmlimit-stat.1 man/shmlimit-ctl.1

$(TOOLS_ADMITTER): $(BUILD)/tools/test-admitter.o $(TOOLS_COMMON) $(LIB_A)
	$(CC) -o $@ $(BUILD)/tools/test-admitter.o $(TOOLS_COMMON) $(ALL_LDFLAGS) $(SHL_STATIC)
