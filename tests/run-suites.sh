#!/bin/sh
# run-suites.sh - run each check target in turn, go on after a failure,
# and close with one summary line: "suites: N passed, M failed".
set -u
pass=0 fail=0 failed="" times=""
for t in "$@"; do
	echo "=== $t"
	t0=$(date +%s)
	if ${MAKE:-make} --no-print-directory "$t"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1)); failed="$failed $t"
	fi
	times="$times $t=$(($(date +%s) - t0))s"
done
echo "suite times:$times"

[ -n "$failed" ] && echo "failed suites:$failed"
echo "suites: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
