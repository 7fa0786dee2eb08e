# libshmlimit - top-level Makefile.
#
#   make            library (static, shared, pkg-config file), tools, preload shim
#   make check      every test (CUnit suites, multi-process, shell tests of the tools and the shim)
#   make demo       the main job: a fleet of curl workers under the shim against a mock API
#   make bench      the benchmark suite (bench-quick: under a minute)
#   make install    honours PREFIX, DESTDIR, BINDIR, LIBDIR, INCLUDEDIR, MANDIR (uninstall: the same)
#
# Each component keeps its rules in its own fragment (*/*.mk), included below.
# make never installs anything: a missing Debian package is named, with the
# command that installs it (scripts/deps.sh --check); scripts/deps.sh GROUP
# installs (as root), and .ci/run calls it.

CC ?= cc
PREFIX ?= /usr/local
DESTDIR ?=
# Installation directories (LIBDIR=/usr/lib/x86_64-linux-gnu for Debian multiarch).
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
BUILD := build

SHL_SOVERSION := 1
SHL_VERSION := 1.0.0

PKGS := liburcu-bp liburcu-cds libcjson
# Resolved lazily so that `make` can first install what is missing.
DEP_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
DEP_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wcast-align -Wformat=2 -Wno-unused-parameter
OPT ?= -O2
CFLAGS ?= $(OPT) -g
SAN ?=
# Every component sees the public header only; the library's own sources,
# its tests and the fuzzers add LIB_CFLAGS' -Ilibshmlimit/src (internal.h,
# layout.h).  make lint checks that nothing else includes them.
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) $(CPPFLAGS) $(CFLAGS) $(SAN) \
             -Ilibshmlimit/include $(DEP_CFLAGS)
LIB_CFLAGS = $(ALL_CFLAGS) -Ilibshmlimit/src
ALL_LDFLAGS = $(LDFLAGS) $(SAN)

LIB_SRC := $(wildcard libshmlimit/src/*.c)
LIB_OBJ := $(patsubst libshmlimit/src/%.c,$(BUILD)/lib/%.o,$(LIB_SRC)) $(BUILD)/lib/presets_gen.o
LIB_A := $(BUILD)/libshmlimit.a
LIB_SO := $(BUILD)/libshmlimit.so
LIB_SO_V := $(LIB_SO).$(SHL_SOVERSION)
PRESETS := $(sort $(wildcard libshmlimit/presets/*.json))

# Components register their outputs and checks here, and what `make
# install` copies: INSTALL_BINS (to bin/), INSTALL_LIBS (lib/), INSTALL_MANS (share/man/man1/).
ALL_TARGETS := $(LIB_A) $(LIB_SO) $(BUILD)/shmlimit.pc
CHECKS :=
INSTALL_BINS :=
INSTALL_LIBS :=
INSTALL_MANS :=

.PHONY: all check install uninstall clean demo bench bench-quick
all: build-all

# Name missing packages (never install them) before the first compile:
# one stamp per group set, redone when scripts/deps.sh changes.
DEPS_CHECK := scripts/deps.sh --check
$(BUILD)/.deps-build: scripts/deps.sh
	@mkdir -p $(BUILD)
	@$(DEPS_CHECK) build
	@touch $@
$(BUILD)/.deps-test: scripts/deps.sh
	@mkdir -p $(BUILD)
	@$(DEPS_CHECK) build test
	@touch $@

$(BUILD)/lib/%.o: libshmlimit/src/%.c libshmlimit/include/shmlimit.h $(wildcard libshmlimit/src/*.h) | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

# Presets are data: each presets/NAME.json becomes a C string, never hand-copied numbers.
$(BUILD)/lib/presets_gen.c: $(PRESETS) scripts/embed.sh
	@mkdir -p $(dir $@)
	scripts/embed.sh $(PRESETS) > $@
$(BUILD)/lib/presets_gen.o: $(BUILD)/lib/presets_gen.c
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(LIB_SO_V): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libshmlimit.so.$(SHL_SOVERSION) -Wl,--no-undefined -o $@ $^ $(ALL_LDFLAGS) $(DEP_LIBS) -lpthread -ldl
$(LIB_SO): $(LIB_SO_V)
	ln -sf libshmlimit.so.$(SHL_SOVERSION) $@
# The .pc file records the install directories: a stamp holding them is
# rewritten whenever they change (make, then make install PREFIX=/usr), so
# the file is regenerated then.  Directories under PREFIX are written
# relative to ${prefix}, so pkg-config --define-variable=prefix works.
PC_DIRS := $(PREFIX)|$(LIBDIR)|$(INCLUDEDIR)|$(SHL_VERSION)
pc_rel = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
$(BUILD)/.pc-dirs: FORCE
	@mkdir -p $(BUILD)
	@echo '$(PC_DIRS)' | cmp -s - $@ || echo '$(PC_DIRS)' > $@
$(BUILD)/shmlimit.pc: shmlimit.pc.in $(BUILD)/.pc-dirs
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(call pc_rel,$(LIBDIR))|g' \
	  -e 's|@INCLUDEDIR@|$(call pc_rel,$(INCLUDEDIR))|g' -e 's|@VERSION@|$(SHL_VERSION)|g' $< > $@
.PHONY: FORCE
FORCE:

# Static link line for our own programs and tests.
SHL_STATIC = $(LIB_A) $(DEP_LIBS) -lpthread -ldl

include $(wildcard tests/*.mk tools/*.mk preload/*.mk bench/*.mk fuzz/*.mk demo/*.mk mock/*.mk plan/*.mk python/*.mk node/*.mk)

build-all: $(ALL_TARGETS)

# The README's two commands, `make demo` and `make check`, install what they
# need first (scripts/deps.sh: apt-get as root, else the command to run);
# every other target, the build above all, only names what is missing.
DEPS_CHECK_GROUPS := build test fuzz valgrind python
check:
	@scripts/deps.sh $(DEPS_CHECK_GROUPS)
	@scripts/deps.sh prom >/dev/null 2>&1 || echo "check: promtool not installed; its check will be skipped"
	@$(MAKE) --no-print-directory $(BUILD)/.deps-test
	@$(MAKE) --no-print-directory build-all
	@tests/run-suites.sh $(CHECKS)

# The edit-compile-test loop (about 30 s of CPU: under a minute on an idle
# 2-core machine; the timeouts only guard against a hang): the unit suites but
# the multi-process one (config included), the tools without their timed
# section, the flag and man-page docs.  `make check` stays the one full test.
FAST_SUITES := layout,config,bucket,spend,segment,admit,threads,fault,review,pslot,lease,issue13,mt,rule
.PHONY: check-fast lint
check-fast: $(UNIT_BIN) $(TOOLS_STAT) $(TOOLS_CTL) $(TOOLS_ADMITTER) $(BUILD)/.deps-test
	SHL_TEST_ONLY=$(FAST_SUITES) timeout 300 $(UNIT_BIN) >$(BUILD)/check-fast-unit.log 2>&1 || \
	  { tail -n 40 $(BUILD)/check-fast-unit.log; exit 1; }
	@grep -E '^ +(tests|asserts) ' $(BUILD)/check-fast-unit.log
	SHL_FAST=1 timeout 300 tools/test-tools.sh $(TOOLS_STAT) $(TOOLS_CTL) $(TOOLS_ADMITTER) \
	  >$(BUILD)/check-fast-tools.log 2>&1 || { grep -A5 '^FAIL' $(BUILD)/check-fast-tools.log; \
	  tail -n 1 $(BUILD)/check-fast-tools.log; exit 1; }
	@tail -n 1 $(BUILD)/check-fast-tools.log
	timeout 60 tools/check-flag-docs.sh
	timeout 60 tools/check-man.sh

# Static checks, not part of make check: clang-tidy (.clang-tidy) and
# cppcheck over the library, the tools and the planner, the include
# boundary (scripts/check-includes.sh), every flag documented, every man
# page rendering without a warning.  Needs scripts/deps.sh lint.
LINT_SRC := $(LIB_SRC) $(wildcard tools/*.c) $(wildcard plan/*.c)
lint: $(BUILD)/.deps-lint
	scripts/check-includes.sh
	tools/check-flag-docs.sh
	tools/check-man.sh
	cppcheck --quiet --enable=warning,portability --inline-suppr --suppress=varFuncNullUB \
	  --error-exitcode=1 --std=c11 -D_GNU_SOURCE -D__x86_64__ -Ilibshmlimit/include \
	  --include=scripts/cppcheck.h \
	  libshmlimit/src tools plan
	clang-tidy --quiet $(LINT_SRC) -- -std=c11 -D_GNU_SOURCE -Ilibshmlimit/include \
	  -Ilibshmlimit/src $(DEP_CFLAGS)
	@echo "lint: includes, flag docs, man pages, cppcheck, clang-tidy: clean"
$(BUILD)/.deps-lint: scripts/deps.sh
	@mkdir -p $(BUILD)
	@$(DEPS_CHECK) test lint
	@touch $@

install: build-all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 libshmlimit/include/shmlimit.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIB_SO_V) $(DESTDIR)$(LIBDIR)/
	ln -sf libshmlimit.so.$(SHL_SOVERSION) $(DESTDIR)$(LIBDIR)/libshmlimit.so
	install -m 644 $(BUILD)/shmlimit.pc $(DESTDIR)$(PKGCONFIGDIR)/
	$(if $(strip $(INSTALL_BINS)),install -d $(DESTDIR)$(BINDIR) && install -m 755 $(INSTALL_BINS) $(DESTDIR)$(BINDIR)/)
	$(if $(strip $(INSTALL_LIBS)),install -m 755 $(INSTALL_LIBS) $(DESTDIR)$(LIBDIR)/)
	$(if $(strip $(INSTALL_MANS)),install -d $(DESTDIR)$(MANDIR)/man1 && install -m 644 $(INSTALL_MANS) $(DESTDIR)$(MANDIR)/man1/)

# Removes exactly what install copies (directories stay: others may share them).
uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/shmlimit.h $(DESTDIR)$(PKGCONFIGDIR)/shmlimit.pc
	rm -f $(addprefix $(DESTDIR)$(LIBDIR)/,libshmlimit.a libshmlimit.so libshmlimit.so.$(SHL_SOVERSION) $(notdir $(INSTALL_LIBS)))
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(INSTALL_BINS)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(INSTALL_MANS)))

clean:
	rm -rf $(BUILD)
