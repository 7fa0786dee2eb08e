# node.mk - the Node.js package (node/README.md): build/node/shmlimit.node,
# the N-API addon, and its tests.
#
# The addon is built with the system's node_api.h (NODE_INCLUDE, default
# /usr/include/node; Debian's libnode-dev), never a downloaded one, and
# contains libshmlimit statically, hidden (--exclude-libs: it exports only
# the N-API entry points).  Without node_api.h the addon is skipped with a
# message, and so is check-node.

NODE_INCLUDE ?= /usr/include/node
NODE ?= node
NPM ?= npm
NODE_ADDON := $(BUILD)/node/shmlimit.node
NODE_HAVE_API := $(wildcard $(NODE_INCLUDE)/node_api.h)
NODE_TESTS := $(sort $(wildcard node/test/*.test.js))

ifneq ($(NODE_HAVE_API),)
ALL_TARGETS += $(NODE_ADDON)
else
ALL_TARGETS += node-skip
endif
CHECKS += check-node

.PHONY: node-skip check-node node-addon
node-addon: $(NODE_ADDON)
node-skip:
	@echo "node: $(NODE_INCLUDE)/node_api.h not found (Debian: libnode-dev); the Node.js addon is not built"

$(NODE_ADDON): node/addon.c libshmlimit/include/shmlimit.h $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(NODE_INCLUDE) -shared -o $@ node/addon.c \
	  -Wl,--exclude-libs,ALL $(ALL_LDFLAGS) $(LIB_A) $(DEP_LIBS) -lpthread

# The tests need the TypeScript SDK: `npm ci` from the committed lock file
# into node/test/node_modules, again whenever the lock file changes.
node/test/node_modules/.package-lock.json: node/test/package-lock.json node/test/package.json
	cd node/test && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

ifneq ($(NODE_HAVE_API),)
check-node: $(NODE_ADDON) $(BUILD)/shmlimit-mock node/test/node_modules/.package-lock.json
	SHMLIMIT_BUILD=$(abspath $(BUILD)) timeout 600 $(NODE) --test --test-concurrency=1 --expose-gc $(NODE_TESTS)
else
check-node:
	@echo "check-node: skipped: $(NODE_INCLUDE)/node_api.h not found (Debian: libnode-dev)"
endif

# `make install`: the package where shmlimit-run looks for register.js
# ($(PREFIX)/lib/shmlimit/node, SHL_NODE_REGISTER of python/python.mk), the
# addon next to index.js (which loads it from there first).
SHL_NODE_DIR = $(PREFIX)/lib/shmlimit/node
NODE_PKG_FILES := node/index.js node/index.d.ts node/register.js node/package.json node/README.md
.PHONY: install-node
ifneq ($(NODE_HAVE_API),)
install: install-node
install-node: $(NODE_ADDON)
	install -d $(DESTDIR)$(SHL_NODE_DIR)
	install -m 644 $(NODE_PKG_FILES) $(DESTDIR)$(SHL_NODE_DIR)/
	install -m 755 $(NODE_ADDON) $(DESTDIR)$(SHL_NODE_DIR)/
else
install-node:
	@echo "install-node: skipped: $(NODE_INCLUDE)/node_api.h not found"
endif
