#!/bin/bash
# test-follow.sh - a fleet follows the server's limits (issue 15, item 2),
# and a response served by another model is charged to its pool (item 5).
#
# usage: tools/test-follow.sh CTL STAT MOCK FOLLOWER
# Workers are build/tools/test-follower processes: real requests to the mock
# (127.0.0.1, started and stopped here), admitted by the library, the
# responses' rate-limit headers fed back with shl_observe_limits, 429s with
# shl_hold, fallbacks settled with shl_settle_as.  The segment starts with
# haiku at 1200 RPM, the server's is 600; then the mock halves it, then
# doubles it again.  Assertions are on counts and on the limits in force,
# never on timing.  Ends with "N passed, N failed".
set -u
CTL=$(readlink -f "$1") STAT=$(readlink -f "$2") MOCK=$(readlink -f "$3") FOL=$(readlink -f "$4")
cd "$(dirname "$0")/.." || exit 1
S=shlfo-$$
TMP=$(mktemp -d /tmp/shlfo.XXXXXX)
MOCKPID=
cleanup() {
	[ -n "$MOCKPID" ] && kill "$MOCKPID" 2>/dev/null && wait "$MOCKPID" 2>/dev/null
	rm -f /dev/shm/$S
	[ -n "${KEEP:-}" ] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { local desc=$1; shift; if "$@"; then ok "$desc"; else bad "$desc"; fi; }
# pool NAME EXPR: a Python expression on the pool `p` of stat --json.
pool() {
	"$STAT" --json $S | python3 -c '
import json, sys
p = [p for p in json.load(sys.stdin)["pools"] if p["name"] == sys.argv[1]][0]
print(eval(sys.argv[2]))' "$1" "$2"
}
# fleet PHASE N COUNT [SERVE]: N workers of COUNT requests each, waited for.
fleet() {
	local pids=() i
	for i in $(seq "$2"); do
		"$FOL" $S "$URL" claude-haiku-4-5 "$3" 60 ${4:-} >"$TMP/$1.$i" 2>&1 &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i"; done
}
# late429 PHASE SKIP: 429s among each worker's requests after its first SKIP.
late429() { cat "$TMP/$1".* | awk -v k="$2" '$1 ~ /^[0-9]+$/ && $1 > k && $2 == 429' | wc -l; }

"$MOCK" --port 0 --port-file "$TMP/port" --max-seconds 120 --config tools/follow-mock.json \
	2>"$TMP/mock.err" &
MOCKPID=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
[ -s "$TMP/port" ] || { echo "FAIL the mock did not start"; cat "$TMP/mock.err"; exit 1; }
URL=http://127.0.0.1:$(cat "$TMP/port")
"$CTL" create $S --config tools/follow-seg.json >/dev/null

# 1. The configuration says 1200 RPM, the server 600: the first response teaches it.
fleet learn 2 20
check "learn: every worker finished" bash -c "grep -h '^done' $TMP/learn.* | grep -c 'errors=0' | grep -qx 2"
check "learn: observed 600 RPM, in force 600, configured still 1200" \
	[ "$(pool haiku '(p["observed"]["rpm"], p["effective"]["rpm"], p["limit"]["rpm"])')" = "(600, 600, 1200)" ]
check "learn: no 429 once followed (after each worker's first 10 requests)" [ "$(late429 learn 10)" -eq 0 ]

# 2. The server halves it mid-run.
curl -s -X POST "$URL/mock/limits" -d '{"pools":[{"name":"haiku","rpm":300}]}' >/dev/null
fleet halve 2 20
check "halved: in force 300 RPM" [ "$(pool haiku 'p["effective"]["rpm"]')" = 300 ]
check "halved: the workers saw the new limit within their first requests" \
	bash -c "[ \$(awk '\$1 <= 3 && \$3 == \"limit=300\"' $TMP/halve.* | wc -l) -ge 2 ]"
check "halved: no 429 after the change settled (after each worker's first 10)" [ "$(late429 halve 10)" -eq 0 ]

# 3. And doubles it again: the fleet follows up.
curl -s -X POST "$URL/mock/limits" -d '{"pools":[{"name":"haiku","rpm":600}]}' >/dev/null
fleet double 2 20
check "doubled: in force 600 RPM again" [ "$(pool haiku 'p["effective"]["rpm"]')" = 600 ]
check "doubled: no 429 at all" [ "$(late429 double 0)" -eq 0 ]
check "doubled: the bucket's burst follows (10 a second's worth)" [ "$(pool haiku 'p["burst"]["rpm"]')" = 10 ]

# 4. A server-side fallback: asked for haiku, served by sonnet.
h0=$(pool haiku 'p["counters"]["cancelled"]') s0=$(pool sonnet 'p["counters"]["settled"]')
fleet fallback 1 5 claude-sonnet-4-5
check "fallback: every response served by sonnet" [ "$(grep -c 'served=claude-sonnet-4-5' $TMP/fallback.1)" -eq 5 ]
check "fallback: the serving pool is charged (5 settled, 50 tokens in)" \
	[ "$(pool sonnet '(p["counters"]["settled"], p["tokens"]["input"])')" = "($((s0 + 5)), 50)" ]
check "fallback: the asked-for pool gets its admissions back" \
	[ "$(pool haiku 'p["counters"]["cancelled"]')" -eq $((h0 + 5)) ]
check "fallback: sonnet's prices (5 x (10 x 3 + 5 x 15) / 1e6 USD)" \
	[ "$(pool sonnet 'round(p["spend_usd"], 9)')" = 0.000525 ]

echo "follow: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
