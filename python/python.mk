# python/python.mk - the Python package `shmlimit` (python/README.md): pure
# Python over libshmlimit.so with ctypes, nothing to compile; its tests, and
# its installation by `make install`.
#
#   make check-python     pytest suite (Debian's python3, python3-httpx, python3-pytest)
#   make install          also installs the package (see below) and bin/shmlimit-run
#
# Installed layout (PREFIX, DESTDIR honoured):
#   $(PREFIX)/lib/shmlimit/python/shmlimit/     the package (shmlimit-run's PYTHONPATH entry)
#   $(PYSITE)/shmlimit.pth                      makes Debian's python3 find it
#   $(PREFIX)/bin/shmlimit-run                  the launcher, with the installed paths
# PYSITE defaults to $(PREFIX)/lib/pythonX.Y/dist-packages for Debian's
# python3 (X.Y its version): on sys.path for PREFIX=/usr/local and /usr.

SHL_PYTHON ?= /usr/bin/python3
SHL_PYVER := $(shell $(SHL_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3)
PYSITE ?= $(PREFIX)/lib/python$(SHL_PYVER)/dist-packages
SHL_PYLIB = $(PREFIX)/lib/shmlimit/python
SHL_NODE_REGISTER ?= $(PREFIX)/lib/shmlimit/node/register.js
PY_SRC := $(wildcard python/shmlimit/*.py)

CHECKS += check-python

.PHONY: check-python install-python
check-python: $(LIB_SO) $(BUILD)/shmlimit-mock $(BUILD)/shmlimit-stat $(BUILD)/libshmlimit-preload.so $(BUILD)/.deps-test
	@scripts/deps.sh --check python
	cd python && timeout 900 $(SHL_PYTHON) -m pytest -q -p no:cacheprovider tests

install: install-python
install-python:
	install -d $(DESTDIR)$(SHL_PYLIB)/shmlimit/_hook $(DESTDIR)$(PYSITE) $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(PY_SRC) python/shmlimit/py.typed $(DESTDIR)$(SHL_PYLIB)/shmlimit/
	install -m 644 python/shmlimit/_hook/__init__.py python/shmlimit/_hook/sitecustomize.py \
	  $(DESTDIR)$(SHL_PYLIB)/shmlimit/_hook/
	echo '$(SHL_PYLIB)' > $(DESTDIR)$(PYSITE)/shmlimit.pth
	sed -e 's|@SHL_PRELOAD_SO@|$(PREFIX)/lib/libshmlimit-preload.so|' \
	    -e 's|@SHL_PY_DIR@|$(SHL_PYLIB)|' \
	    -e 's|@SHL_NODE_REGISTER@|$(SHL_NODE_REGISTER)|' \
	  python/shmlimit-run > $(DESTDIR)$(PREFIX)/bin/shmlimit-run
	chmod 755 $(DESTDIR)$(PREFIX)/bin/shmlimit-run
