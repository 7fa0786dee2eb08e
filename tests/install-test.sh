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
# The installed .pc names the prefix it was installed to, even when the
# tree was built (or installed) before with another one (issue 13, defect 4).
grep -qx 'prefix=/opt/shl' "$pc/shmlimit.pc" || { echo "install: shmlimit.pc says $(grep '^prefix=' "$pc/shmlimit.pc"), not /opt/shl"; exit 1; }
make -C "$top" --no-print-directory install DESTDIR="$tmp/usr" PREFIX=/usr >/dev/null
grep -qx 'prefix=/usr' "$tmp/usr/usr/lib/pkgconfig/shmlimit.pc" || { echo "install: PREFIX=/usr after /opt/shl: shmlimit.pc says $(grep '^prefix=' "$tmp/usr/usr/lib/pkgconfig/shmlimit.pc")"; exit 1; }
# LIBDIR (Debian multiarch): the libraries and the .pc go there, and the .pc says so.
ma=/usr/lib/x86_64-linux-gnu
make -C "$top" --no-print-directory install DESTDIR="$tmp/ma" PREFIX=/usr LIBDIR=$ma >/dev/null
for f in libshmlimit.a libshmlimit.so libshmlimit.so.1 libshmlimit-preload.so pkgconfig/shmlimit.pc; do
	test -e "$tmp/ma$ma/$f" || { echo "install: LIBDIR=$ma: no $f there"; exit 1; }
done
test ! -e "$tmp/ma/usr/lib/libshmlimit.a" || { echo "install: LIBDIR ignored (libshmlimit.a in /usr/lib)"; exit 1; }
libdir=$(PKG_CONFIG_PATH="$tmp/ma$ma/pkgconfig" pkg-config --variable=libdir shmlimit)
test "$libdir" = "$ma" || { echo "install: LIBDIR=$ma: shmlimit.pc's libdir is $libdir"; exit 1; }
# uninstall removes every file install put there, and nothing else.
touch "$tmp/ma/usr/include/other.h"
make -C "$top" --no-print-directory uninstall DESTDIR="$tmp/ma" PREFIX=/usr LIBDIR=$ma >/dev/null
left=$(find "$tmp/ma" -type f -o -type l | grep -v '/other.h$' || true)
test -z "$left" || { echo "install: uninstall left: $left"; exit 1; }
test -f "$tmp/ma/usr/include/other.h" || { echo "install: uninstall removed a file it did not install"; exit 1; }
# CPPFLAGS reach every compilation.
make -C "$top" --no-print-directory -n -B CPPFLAGS=-DSHL_CPPFLAGS_PROBE build/lib/errors.o 2>/dev/null |
	grep -q -- -DSHL_CPPFLAGS_PROBE || { echo "install: CPPFLAGS not passed to the compiler"; exit 1; }
echo "install: prefix, LIBDIR, uninstall, CPPFLAGS: 1 passed, 0 failed"
# Only the public API is exported from the shared library.
bad=$(nm -D --defined-only "$tmp/root/opt/shl/lib/libshmlimit.so.1" | awk '{print $3}' | grep -v '^shl_[a-z]' || true)
if [ -n "$bad" ]; then echo "install: unexpected exports: $bad"; exit 1; fi
