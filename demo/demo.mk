# demo.mk - `make demo`: a fleet of curl workers under the preload shim and
# Python (httpx) and Node.js (fetch) workers, all on one segment, against
# the mock API, with the stats tool's live view (see demo/README.md).
# It installs what is missing first (scripts/deps.sh build test: apt-get as
# root, else the command to run; `make demo` and `make check` are the two
# targets that install anything) and builds the
# library, the shim, the mock and, when they exist, the tools first.

DEMO_TOOLS = $(if $(wildcard tools/*.mk),$(BUILD)/shmlimit-ctl $(BUILD)/shmlimit-stat)
# The Python workers load libshmlimit.so; the Node.js workers need the addon
# (built only with the system's node_api.h, node/node.mk).  Without them the
# demo runs its curl workers alone and says so.
DEMO_TOOLS += $(LIB_SO) $(if $(NODE_HAVE_API),$(NODE_ADDON))

demo:
	@scripts/deps.sh build test
	@$(MAKE) --no-print-directory $(BUILD)/.deps-test
	@$(MAKE) --no-print-directory $(LIB_A) $(PRELOAD_SO) $(PRELOAD_SEG) $(BUILD)/shmlimit-mock $(DEMO_TOOLS)
	demo/run.sh $(BUILD)

# `make check-demo`: the demo for 20 s, checking its exit status and its
# "held at the limits" table (demo/check.sh).
CHECKS += check-demo
.PHONY: check-demo
check-demo: $(BUILD)/.deps-test
	@$(MAKE) --no-print-directory $(LIB_A) $(PRELOAD_SO) $(PRELOAD_SEG) $(BUILD)/shmlimit-mock $(DEMO_TOOLS)
	timeout 90 demo/check.sh $(BUILD)
