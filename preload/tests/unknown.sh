#!/bin/bash
# unknown.sh - a model no entry matches, under each of the configuration's
# unknown_model policies, through the real `curl` tool under the shim:
# "refuse": refused locally with one line naming it, never sent; a
# catch-all pool: governed there, the model named once on stderr; "pass":
# sent ungoverned, one line.
#
# Usage: preload/tests/unknown.sh [BUILD_DIR]
# The mock runs without --config (it enforces nothing), bounded by
# --max-seconds and --max-requests; segments are removed on exit.
# shellcheck disable=SC2154
set -u

B=${1:-build}
SO=$B/libshmlimit-preload.so
SEGTOOL=$B/shmlimit-preload-seg
MOCK=$B/shmlimit-mock
STAT=$B/shmlimit-stat
HERE=$(cd "$(dirname "$0")" && pwd)
seg_rm() { "$SEGTOOL" rm "$1"; }
. "$HERE/harness.sh"
harness_init preload-unknown

"$MOCK" --port 0 --port-file "$T/port" --max-seconds 100 --max-requests 100 2>"$T/mock.err" &
PIDS="$PIDS $!"
for _ in $(seq 1 200); do [ -s "$T/port" ] && break; sleep 0.05; done
[ -s "$T/port" ] || { echo "FATAL: mock did not start: $(cat "$T/mock.err")"; exit 1; }
PORT=$(cat "$T/port") URL=http://127.0.0.1:$(cat "$T/port")

POOL='{"name": "%s", "rpm": 60000, "itpm": 6000000, "otpm": 6000000,
  "prices": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}}'
cfg() { # cfg POLICY_JSON > file
	printf '{"pools": [%s, %s], "models": [{"match": "claude-sonnet-4*", "pool": "sonnet"}], "unknown_model": %s}\n' \
		"$(printf "$POOL" sonnet)" "$(printf "$POOL" other)" "$1"
}
nseg=0
new_seg() { # new_seg VAR POLICY_JSON
	nseg=$((nseg + 1))
	local s="shl-preload-unknown-$$-$nseg"
	cfg "$2" > "$T/cfg$nseg.json"
	"$SEGTOOL" create "$s" "$T/cfg$nseg.json" || { echo "FATAL: cannot create segment"; exit 1; }
	SEGS="$SEGS $s"
	eval "$1=$s"
}
shim() {
	local s=$1; shift
	SHMLIMIT_SEGMENT=$s SHMLIMIT_HOSTS=127.0.0.1:$PORT SHMLIMIT_WAIT_MS=0 LD_PRELOAD=$SO "$@"
}
body() { printf '{"model":"%s","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}' "$1"; }
served() { curl -s "$URL/mock/stats" | grep -o '"requests":[0-9]*' | head -n 1 | cut -d: -f2; }
pool() { # pool SEG NAME FIELD: counters from shmlimit-stat --json
	"$STAT" --json "$1" | python3 -c '
import json, sys
p = [p for p in json.load(sys.stdin)["pools"] if p["name"] == sys.argv[1]][0]
print(p["counters"][sys.argv[2]])' "$2" "$3"
}

echo "# refuse: refused locally, one line naming the model, never sent"
new_seg S1 '"refuse"'
n0=$(served)
shim "$S1" curl -s -o "$T/r.out" "$URL/v1/messages" -d "$(body claude-nova-9)" 2>"$T/r.err"
rc=$?
check "refuse: curl fails (aborted by callback, 42)" eq "$rc" 42
check "refuse: one stderr line" eq "$(lines "$T/r.err")" 1
check "refuse: the line names the model" has "claude-nova-9" "$T/r.err"
check "refuse: nothing reached the server" eq "$(served)" "$n0"
check "refuse: a known model still goes" eq "$(shim "$S1" curl -s -o /dev/null -w '%{http_code}' "$URL/v1/messages" -d "$(body claude-sonnet-4-5)" 2>/dev/null)" 200
echo "# refuse, through curl --parallel (the multi interface)"
n0=$(served)
shim "$S1" curl -s --parallel -o /dev/null "$URL/v1/messages" -d "$(body claude-nova-9)" 2>"$T/rp.err"
check "refuse, multi: curl fails" ge "$?" 1
check "refuse, multi: nothing reached the server" eq "$(served)" "$n0"

echo "# a catch-all pool: governed there, the model named once"
new_seg S2 '{"pool": "other"}'
shim "$S2" curl -s -o /dev/null "$URL/v1/messages" -d "$(body claude-nova-9)" 2>"$T/c.err"
check "catch-all: curl exit 0" eq "$?" 0
check "catch-all: one line naming the model" eq "$(grep -c 'claude-nova-9' "$T/c.err")/$(lines "$T/c.err")" "1/1"
check "catch-all: admitted and settled on the catch-all pool" eq \
	"$(pool "$S2" other admitted)/$(pool "$S2" other settled)/$(pool "$S2" sonnet admitted)" "1/1/0"
"$STAT" --json "$S2" > "$T/c.json"
check "catch-all: shmlimit-stat lists the unknown model" has "claude-nova-9" "$T/c.json"

echo "# pass: sent ungoverned, one line"
new_seg S3 '"pass"'
n0=$(served)
shim "$S3" curl -s -o /dev/null "$URL/v1/messages" -d "$(body claude-nova-9)" 2>"$T/p.err"
check "pass: curl exit 0, sent" eq "$?/$(( $(served) - n0 ))" "0/1"
check "pass: one line" eq "$(lines "$T/p.err")" 1
check "pass: nothing admitted" eq "$(pool "$S3" sonnet admitted)/$(pool "$S3" other admitted)" "0/0"

harness_done
