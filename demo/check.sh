#!/bin/bash
# check.sh - `make check-demo`: run the demo briefly (DEMO_SECONDS=20 by
# default) and check what it reports.
#
# Usage: demo/check.sh [BUILD_DIR]
#
# Checks: the demo exits 0 (the mock server refused no request); the curl,
# Python and Node.js workers all sent requests (Python and Node only when
# their runtimes are there; the demo says when they are not), and the
# segment admitted every request the server got; its "held
# at the limits" table has a row per pool; every requests and input-tokens
# cell is at most 100% of burst + rate x T, in the printed table and exactly
# in the machine-readable figures (DEMO_RESULTS); output tokens, taken at
# settlement, are at most burst + rate x T plus what the requests in flight
# can overdraw (the pool's workers x max_tokens, see demo/run.sh).  The
# demo starts and stops everything itself; nothing here waits on time.
set -u

B=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/shl-demo-check.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }

DEMO_SECONDS=${DEMO_SECONDS:-20} DEMO_WORKERS=${DEMO_WORKERS:-6} DEMO_RESULTS=$T/held \
	"$HERE/run.sh" "$B" > "$T/out" 2>&1
rc=$?
sed 's/^/  | /' "$T/out"
check "the demo exits 0 (no server 429)" [ "$rc" -eq 0 ]
check "it says the fleet stayed within the limits" grep -q '^result: the fleet stayed within the limits' "$T/out"

# The printed table: the rows after its header line, up to the spend line.
awk '/^held at the limits/ { on = 1; next } on && /^spend:/ { exit } on && /^(opus|sonnet|haiku) / { print }' \
	"$T/out" > "$T/rows"
check "the held-at-the-limits table has a row per pool" [ "$(wc -l < "$T/rows")" -eq 3 ]
# Each row: POOL  used / allowed  P%  (x3: requests, input, output).
printed_ok() {
	awk '{ n = 0
	       for (i = 2; i <= NF; i++) if ($i ~ /^[0-9.]+%$/) { n++; pct[n] = $i + 0 }
	       if (n != 3) { print "       row without three cells: " $0 > "/dev/stderr"; bad = 1 }
	       for (k = 1; k <= 2; k++) if (pct[k] > 100) { print "       over 100%: " $0 > "/dev/stderr"; bad = 1 } }
	     END { exit bad }' "$T/rows"
}
check "printed: every requests and input-tokens cell is at most 100%" printed_ok

# The Python and Node.js workers (when their runtimes are there): they sent
# requests, and every request that reached the server was admitted by the
# segment (an ungoverned worker's requests would be missing from its count).
for k in python node; do
	case $k in python) name=Python ;; node) name=Node.js ;; esac
	if grep -q "^demo: no $name workers:" "$T/out"; then
		echo "skip - $k workers: $(grep -m 1 "^demo: no $name workers:" "$T/out")"
		continue
	fi
	n=$(awk -v k="$k" '$1 == k && $5 == "requests" { print $4 }' "$T/out")
	check "$k workers ran and sent requests (${n:-none})" [ "${n:-0}" -gt 0 ]
done
check "curl workers sent requests" [ "0$(awk '$1 == "curl" && $5 == "requests" { print $4 }' "$T/out")" -gt 0 ]
governed() {
	awk '/^governed: / { a = $2; r = $7; seen = 1 }
	     END { if (!seen || a != r) { print "       " (seen ? a " admitted, " r " at the server" : "no governed line") > "/dev/stderr"; exit 1 } }' "$T/out"
}
check "every request at the server was admitted by the segment (all workers governed)" governed
check "no Python or Node.js worker ran ungoverned (no fail-open line)" \
	sh -c "! grep -Eq '^(python|node) worker: .*ungoverned' '$T/out'"

check "the machine-readable figures: 9 cells" [ "$(wc -l < "$T/held" 2>/dev/null || echo 0)" -eq 9 ]
while read -r pool dim used allowed slack; do
	if [ "$slack" = 0 ]; then
		check "$pool $dim: $used <= burst + rate x T = $allowed (at most 100%)" \
			awk -v u="$used" -v a="$allowed" 'BEGIN { exit !(u + 0 <= a + 0) }'
	else
		check "$pool $dim: $used <= burst + rate x T + in flight = $allowed + $slack" \
			awk -v u="$used" -v a="$allowed" -v s="$slack" 'BEGIN { exit !(u + 0 <= a + s) }'
	fi
	check "$pool $dim: the limits were used at all" [ "$used" -gt 0 ]
done < "$T/held"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
