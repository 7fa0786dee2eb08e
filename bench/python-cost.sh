#!/bin/sh
# python-cost.sh - what the Python binding costs (issue 14, "Measure"):
# admit + settle through ctypes next to a bare ctypes call pair of no-op C
# functions (ratio; target within 3x), and the latency GovernedTransport /
# AsyncGovernedTransport add per request against the local mock.  The
# measurement itself is bench/python_cost.py (Debian's python3 with httpx).
#
# Usage: bench/python-cost.sh quick|full [OUTDIR]   (appends to OUTDIR/results.*)
# Skips, saying why, when python3/httpx, the library, the mock or a C
# compiler (for the no-op pair) is missing.
set -u
mode=${1:-quick}
out=${2:-build/bench}
B=build
MOCK=$B/shmlimit-mock
PY=${SHL_PYTHON:-/usr/bin/python3}
md=$out/results.md
csv=$out/results.csv
mkdir -p "$out"

note() {
	echo "$*"
	if [ -f "$md" ]; then echo "$*" >>"$md"; fi
}
skip() {
	note "## 7. Python binding cost"
	note ""
	note "Skipped: $*."
	note ""
	exit 0
}
[ -x "$MOCK" ] || skip "$MOCK is not built"
[ -f "$B/libshmlimit.so" ] || skip "$B/libshmlimit.so is not built"
"$PY" -c 'import httpx' 2>/dev/null || skip "$PY with httpx is not installed (scripts/deps.sh python)"
command -v "${CC:-cc}" >/dev/null 2>&1 || skip "no C compiler for the no-op function pair"

tmp=$(mktemp -d)
seg=shmlimit-bench-python-$$
mpid=
cleanup() {
	if [ -n "$mpid" ]; then
		kill "$mpid" 2>/dev/null
		wait "$mpid" 2>/dev/null
	fi
	"$PY" -c "import sys; sys.path.insert(0, 'python'); import shmlimit; shmlimit.unlink('$seg')" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$tmp/noop.c" <<'C'
int noop_try(void *h, int model, void *cost, void *t, void *why);
int noop_settle(void *h, void *t, void *u);
int noop_try(void *h, int model, void *cost, void *t, void *why) { (void)h; (void)model; (void)cost; (void)t; (void)why; return 0; }
int noop_settle(void *h, void *t, void *u) { (void)h; (void)t; (void)u; return 0; }
C
"${CC:-cc}" -O2 -shared -fPIC -o "$tmp/libnoop.so" "$tmp/noop.c" || skip "cannot compile the no-op pair"

# A pool that never refuses: admission does its full work, never waits.
cat >"$tmp/cfg.json" <<'J'
{"spend_cap_usd": null,
 "pools": [{"name": "bench", "rpm": 1000000000000, "itpm": 1000000000000, "otpm": 1000000000000,
            "prices": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}}],
 "models": [{"match": "claude-*", "pool": "bench"}]}
J
"$PY" -c "import sys; sys.path.insert(0, 'python'); import shmlimit; shmlimit.create('$seg', open('$tmp/cfg.json').read(), replace=True)" ||
	skip "cannot create segment $seg"
"$MOCK" --port 0 --port-file "$tmp/port" --max-requests 100000 --max-seconds 600 >"$tmp/mock.log" 2>&1 &
mpid=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$tmp/port" ] || skip "the mock did not report a port"
port=$(cat "$tmp/port")

"$PY" bench/python_cost.py "$mode" "$tmp/libnoop.so" "http://127.0.0.1:$port" "127.0.0.1:$port" "$seg" >"$tmp/out"
rc=$?
grep -v '^csv,' "$tmp/out" | while IFS= read -r l; do note "$l"; done
if [ -f "$csv" ]; then grep '^csv,' "$tmp/out" | sed 's/^csv,//' >>"$csv"; fi
exit $rc
