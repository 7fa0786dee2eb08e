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

# sync (tools/sync.c) talks to the Rate Limits API with libcurl.
CURL_LIBS = $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
$(BUILD)/tools/ctl.o $(BUILD)/tools/sync.o: tools/sync.h
$(TOOLS_CTL): $(CTL_OBJ) $(BUILD)/tools/sync.o $(TOOLS_COMMON) $(LIB_A)
	$(CC) -o $@ $(CTL_OBJ) $(BUILD)/tools/sync.o $(TOOLS_COMMON) $(ALL_LDFLAGS) $(SHL_STATIC) $(CURL_LIBS)

# A fleet worker for test-follow.sh: libcurl requests to the mock, the feedback calls.
TOOLS_FOLLOWER := $(BUILD)/tools/test-follower
$(TOOLS_FOLLOWER): $(BUILD)/tools/test-follower.o $(TOOLS_COMMON) $(LIB_A)
	$(CC) -o $@ $(BUILD)/tools/test-follower.o $(TOOLS_COMMON) $(ALL_LDFLAGS) $(SHL_STATIC) $(CURL_LIBS)

# sync against the mock's Rate Limits API (127.0.0.1, started and stopped by the script).
CHECKS += check-sync
.PHONY: check-sync
check-sync: $(TOOLS_CTL) $(TOOLS_STAT) $(BUILD)/shmlimit-mock $(TOOLS_FOLLOWER) $(BUILD)/.deps-test
	timeout 120 tools/test-sync.sh $(TOOLS_CTL) $(TOOLS_STAT) $(BUILD)/shmlimit-mock
	timeout 180 tools/test-follow.sh $(TOOLS_CTL) $(TOOLS_STAT) $(BUILD)/shmlimit-mock $(TOOLS_FOLLOWER)

.PHONY: check-tools check-tools-docs
check-tools: $(TOOLS_STAT) $(TOOLS_CTL) $(TOOLS_ADMITTER) check-tools-docs
	timeout 120 tools/test-tools.sh $(TOOLS_STAT) $(TOOLS_CTL) $(TOOLS_ADMITTER)

# Every flag in the tools' option tables has an entry in its man page and in tools/README.md;
# every man page renders without a warning (groff -man -ww -z prints nothing).
check-tools-docs: $(BUILD)/.deps-test
	timeout 60 tools/check-flag-docs.sh
	timeout 60 tools/check-man.sh

INSTALL_BINS += $(TOOLS_STAT) $(TOOLS_CTL)
INSTALL_MANS += man/shmlimit-stat.1 man/shmlimit-ctl.1 man/shmlimit-agent.1

$(TOOLS_ADMITTER): $(BUILD)/tools/test-admitter.o $(TOOLS_COMMON) $(LIB_A)
	$(CC) -o $@ $(BUILD)/tools/test-admitter.o $(TOOLS_COMMON) $(ALL_LDFLAGS) $(SHL_STATIC)

# The per-host agent of multi-host mode (README "Many hosts").
TOOLS_AGENT := $(BUILD)/shmlimit-agent
ALL_TARGETS += $(TOOLS_AGENT)
INSTALL_BINS += $(TOOLS_AGENT)
$(TOOLS_AGENT): $(BUILD)/tools/agent.o $(LIB_A)
	$(CC) -o $@ $(BUILD)/tools/agent.o $(ALL_LDFLAGS) $(SHL_STATIC)
