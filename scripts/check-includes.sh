#!/bin/sh
# check-includes.sh - the build's boundary: nothing outside the library, its
# tests and the fuzzers includes the library's internal headers
# (libshmlimit/src/internal.h, layout.h); everyone else has the public
# shmlimit.h only.  Part of `make lint`.
set -u
cd "$(dirname "$0")/.." || exit 1
bad=$(grep -rlE '#[[:space:]]*include[[:space:]]*"(internal|layout)\.h"' \
	--include='*.c' --include='*.h' . 2>/dev/null |
	grep -vE '^\./(libshmlimit/src|tests/unit|fuzz|build)/' || true)
if [ -n "$bad" ]; then
	echo "include boundary: these include the library's internal headers:"
	echo "$bad" | sed 's/^/  /'
	echo "includes: 0 passed, 1 failed"
	exit 1
fi
echo "includes: 1 passed, 0 failed (internal.h, layout.h only in libshmlimit/src, tests/unit, fuzz)"
