#!/bin/sh
# check-flag-docs.sh - fail when a flag in a tool's option tables has no
# entry in that tool's man page or in tools/README.md.
#
# Long flags are read from the `struct option` tables ({"name", ...}), short
# ones from the *_SHORTOPTS strings; stat.c maps to man/shmlimit-stat.1 and
# ctl*.c (and ctl.h) to man/shmlimit-ctl.1.  A man page entry is the flag in roff form
# (\-\-name, \-x); the README must mention it as `--name` / `-x`.
set -u
cd "$(dirname "$0")/.." || exit 1
pass=0 fail=0
for pair in stat:shmlimit-stat ctl:shmlimit-ctl agent:shmlimit-agent; do
	src=$(ls tools/${pair%%:*}.c tools/${pair%%:*}-*.c tools/${pair%%:*}.h 2>/dev/null) man=man/${pair#*:}.1
	# shmlimit-ctl sync lives in a file of its own (tools/sync.c, sync.h).
	[ "${pair%%:*}" = ctl ] && src="$src $(ls tools/sync.c tools/sync.h 2>/dev/null)"
	[ -f "$man" ] || { echo "FAIL $man missing"; fail=$((fail + 1)); continue; }
	# shellcheck disable=SC2086
	longs=$(sed -n 's/^[[:space:]]*{"\([a-z0-9-]*\)",.*_argument.*/\1/p' $src | sort -u)
	# shellcheck disable=SC2086
	shorts=$(sed -n 's/^#define [A-Z_]*SHORTOPTS "+\{0,1\}\([A-Za-z:]*\)".*/\1/p' $src |
		tr -d ':\n' | fold -w1 | sort -u)
	[ -n "$longs" ] || { echo "FAIL no long options found in $src"; fail=$((fail + 1)); }
	for f in $longs; do
		roff=$(printf '%s' "$f" | sed 's/-/\\\\-/g')
		if grep -q -- "\\\\-\\\\-$roff\\b" "$man" && grep -q -- "--$f\\b" tools/README.md; then
			pass=$((pass + 1))
		else
			echo "FAIL --$f ($src) has no entry in $man or tools/README.md"; fail=$((fail + 1))
		fi
	done
	for f in $shorts; do
		if grep -q -- "\\\\-$f\\b" "$man" && grep -q -- "\`-$f\\b\\|[ (]-$f[ ,]" tools/README.md; then
			pass=$((pass + 1))
		else
			echo "FAIL -$f ($src) has no entry in $man or tools/README.md"; fail=$((fail + 1))
		fi
	done
done
echo "flag docs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
