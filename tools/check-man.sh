#!/bin/sh
# check-man.sh - fail when a man page does not render cleanly: for each
# man/*.1 (or the pages given), `groff -man -ww -z` (all warnings, no
# output) must print nothing, on stdout or stderr.  groff comes from the
# Debian package groff-base (scripts/deps.sh, group test).
set -u
cd "$(dirname "$0")/.." || exit 1
command -v groff >/dev/null || { echo "FAIL groff is missing (scripts/deps.sh test: groff-base)"; exit 1; }
[ $# -gt 0 ] || set -- man/*.1
pass=0 fail=0
for m in "$@"; do
	out=$(groff -man -ww -z "$m" 2>&1)
	if [ -f "$m" ] && [ -z "$out" ]; then
		pass=$((pass + 1))
	else
		echo "FAIL groff -man -ww -z $m:"
		printf '%s\n' "${out:-(no such file)}" | sed 's/^/    /'
		fail=$((fail + 1))
	fi
done
echo "man pages: $pass render without warnings, $fail do not"
[ "$fail" -eq 0 ]
