# libshmlimit - top-level Makefile.
#
#   make            library (static, shared, pkg-config file), tools, preload shim
#   make check      every test (CUnit suites, multi-process, shell tests of the tools and the shim)
#   make demo       the main job: a fleet of curl workers under the shim against a mock API
#   make bench      the benchmark suite (bench-quick: under a minute)
#   make install    honours PREFIX and DESTDIR
#
# Each component keeps its rules in its own fragment (*/*.mk), included below.
# Missing Debian packages are installed by scripts/deps.sh (as root) or named.

CC ?= cc
PREFIX ?= /usr/local
DESTDIR ?=
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
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) $(CFLAGS) $(SAN) \
             -Ilibshmlimit/include -Ilibshmlimit/src $(DEP_CFLAGS)
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

.PHONY: all deps check install uninstall clean demo bench bench-quick
all: deps-build

# Install (or name) missing build dependencies once, then build everything.
deps-build: $(BUILD)/.deps-build
	@$(MAKE) --no-print-directory build-all
$(BUILD)/.deps-build: scripts/deps.sh
	@mkdir -p $(BUILD)
	@scripts/deps.sh build
	@touch $@
deps: $(BUILD)/.deps-build
$(BUILD)/.deps-test: scripts/deps.sh
	@mkdir -p $(BUILD)
	@scripts/deps.sh build test
	@touch $@

$(BUILD)/lib/%.o: libshmlimit/src/%.c libshmlimit/include/shmlimit.h $(wildcard libshmlimit/src/*.h) | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# Presets are data: each presets/NAME.json becomes a C string, never hand-copied numbers.
$(BUILD)/lib/presets_gen.c: $(PRESETS) scripts/embed.sh
	@mkdir -p $(dir $@)
	scripts/embed.sh $(PRESETS) > $@
$(BUILD)/lib/presets_gen.o: $(BUILD)/lib/presets_gen.c
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(LIB_SO_V): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libshmlimit.so.$(SHL_SOVERSION) -Wl,--no-undefined -o $@ $^ $(ALL_LDFLAGS) $(DEP_LIBS) -lpthread
$(LIB_SO): $(LIB_SO_V)
	ln -sf libshmlimit.so.$(SHL_SOVERSION) $@
$(BUILD)/shmlimit.pc: shmlimit.pc.in Makefile
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(SHL_VERSION)|g' $< > $@

# Static link line for our own programs and tests.
SHL_STATIC = $(LIB_A) $(DEP_LIBS) -lpthread

include $(wildcard tests/*.mk tools/*.mk preload/*.mk bench/*.mk fuzz/*.mk demo/*.mk mock/*.mk plan/*.mk)

build-all: $(ALL_TARGETS)

check: $(BUILD)/.deps-test
	@$(MAKE) --no-print-directory build-all
	@tests/run-suites.sh $(CHECKS)

install: build-all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 libshmlimit/include/shmlimit.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIB_SO_V) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libshmlimit.so.$(SHL_SOVERSION) $(DESTDIR)$(PREFIX)/lib/libshmlimit.so
	install -m 644 $(BUILD)/shmlimit.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	$(if $(strip $(INSTALL_BINS)),install -d $(DESTDIR)$(PREFIX)/bin && install -m 755 $(INSTALL_BINS) $(DESTDIR)$(PREFIX)/bin/)
	$(if $(strip $(INSTALL_LIBS)),install -m 755 $(INSTALL_LIBS) $(DESTDIR)$(PREFIX)/lib/)
	$(if $(strip $(INSTALL_MANS)),install -d $(DESTDIR)$(PREFIX)/share/man/man1 && install -m 644 $(INSTALL_MANS) $(DESTDIR)$(PREFIX)/share/man/man1/)

clean:
	rm -rf $(BUILD)
