#!/bin/sh
# install-test.sh - `make install` into a scratch DESTDIR, then build and run
# a program against the installed header, shared library and pkg-config file.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -C "$top" --no-print-directory install DESTDIR="$tmp/root" PREFIX=/opt/shl >/dev/null
pc="$tmp/root/opt/shl/lib/pkgconfig"
test -f "$tmp/root/opt/shl/include/shmlimit.h"
test -L "$tmp/root/opt/shl/lib/libshmlimit.so"
test -f "$tmp/root/opt/shl/lib/libshmlimit-preload.so"
for b in shmlimit-stat shmlimit-ctl shmlimit-plan; do test -x "$tmp/root/opt/shl/bin/$b"; done
for m in shmlimit-stat shmlimit-ctl shmlimit-plan; do test -f "$tmp/root/opt/shl/share/man/man1/$m.1"; done
# the shim exports only its hooks
bad=$(nm -D --defined-only "$tmp/root/opt/shl/lib/libshmlimit-preload.so" | awk '{print $3}' | grep -v '^curl_' || true)
test -z "$bad" || { echo "install: the preload exports more than curl_* hooks: $bad" >&2; exit 1; }
cat > "$tmp/t.c" <<'C'
#include <shmlimit.h>
#include <stdio.h>
int main(void)
{
	shl_config *c;
	if (shl_config_preset(1, &c) != 0)
		return 1;
	shl_config_free(c);
	printf("%s\n", shl_strerror(-E2BIG));
	return 0;
}
C
# The .pc file names the install prefix; point it at the DESTDIR copy.
flags=$(PKG_CONFIG_PATH="$pc" pkg-config --define-variable=prefix="$tmp/root/opt/shl" --cflags --libs shmlimit)
cc -o "$tmp/t" "$tmp/t.c" $flags
out=$(LD_LIBRARY_PATH="$tmp/root/opt/shl/lib" "$tmp/t")
case "$out" in
*"can never be admitted"*) echo "install: 1 passed, 0 failed" ;;
*) echo "install: unexpected output: $out"; echo "install: 0 passed, 1 failed"; exit 1 ;;
esac
# Only the public API is exported from the shared library.
bad=$(nm -D --defined-only "$tmp/root/opt/shl/lib/libshmlimit.so.1" | awk '{print $3}' | grep -v '^shl_[a-z]' || true)
if [ -n "$bad" ]; then echo "install: unexpected exports: $bad"; exit 1; fi
