#!/bin/bash
# route.sh - SHMLIMIT_ROUTE: the shim routing a request down a preference
# list when its own pool is full, with the real curl CLI and a small libcurl
# application, against shmlimit-mock on 127.0.0.1.
#
# Usage: preload/tests/route.sh [BUILD_DIR]
#
# The mock server is started here with --port 0, bounded by --max-seconds
# and --max-requests, and stopped here (trap on exit); every segment has the
# pid in its name and is removed on exit.  The pools refill one request a
# minute, so which pool is full is decided by counting, never by timing;
# requests run with SHMLIMIT_WAIT_MS=0 (refused at once when nothing fits).
# The mock's /mock/stats "by_model" shows which model each request reached
# it with; shmlimit-stat --json shows where the shim settled it.
set -u

B=${1:-build}
SO=$(readlink -f "$B/libshmlimit-preload.so")
MOCK=$B/shmlimit-mock
CTL=$(readlink -f "$B/shmlimit-ctl")
STAT=$B/shmlimit-stat
APP=$B/shmlimit-preload-routeapp
seg_rm() { "$CTL" rm "$1"; }
. "$(cd "$(dirname "$0")" && pwd)/harness.sh"
harness_init route-test

# The segment: three pools of 1 request a minute (opus and sonnet hold 1,
# haiku 3), as in the presets' model classes.
cat >"$T/route.json" <<'J'
{"spend_cap_usd": null, "pools": [
 {"name": "opus", "rpm": 1, "itpm": 1000000, "otpm": 1000000, "burst": {"rpm": 1},
  "prices": {"input": 5, "output": 25, "cache_write_5m": 6.25, "cache_write_1h": 10, "cache_read": 0.5}},
 {"name": "sonnet", "rpm": 1, "itpm": 1000000, "otpm": 1000000, "burst": {"rpm": 1},
  "prices": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}},
 {"name": "haiku", "rpm": 1, "itpm": 1000000, "otpm": 1000000, "burst": {"rpm": 3},
  "prices": {"input": 1, "output": 5, "cache_write_5m": 1.25, "cache_write_1h": 2, "cache_read": 0.1}}],
 "models": [{"match": "claude-opus-4*", "pool": "opus"},
            {"match": "claude-sonnet-4*", "pool": "sonnet"},
            {"match": "claude-haiku-4-5*", "pool": "haiku"}]}
J
ROUTE=claude-opus-4-5,claude-sonnet-4-5,claude-haiku-4-5

"$MOCK" --port 0 --port-file "$T/port" --max-seconds 300 --max-requests 500 2>"$T/mock.err" &
MPID=$!
PIDS="$MPID"
for _ in $(seq 1 200); do [ -s "$T/port" ] || ! kill -0 $MPID 2>/dev/null && break; sleep 0.05; done
[ -s "$T/port" ] || { echo "FATAL: mock did not start: $(cat "$T/mock.err")"; exit 1; }
PORT=$(cat "$T/port")
URL=http://127.0.0.1:$PORT/v1/messages

S=shl-route-test-$$
"$CTL" create $S --config "$T/route.json" >/dev/null || { echo "FATAL: cannot create segment"; exit 1; }
SEGS=$S

# shim CMD...: CMD under the shim on segment $S, governing the mock, no wait.
shim() { SHMLIMIT_SEGMENT=$S SHMLIMIT_HOSTS=127.0.0.1:$PORT SHMLIMIT_WAIT_MS=0 LD_PRELOAD=$SO "$@"; }
# routed CMD...: the same with SHMLIMIT_ROUTE=$ROUTE.
routed() { SHMLIMIT_ROUTE=$ROUTE shim "$@"; }
body() { # body MODEL STREAM TEXT
	printf '{"model":"%s","max_tokens":40,"stream":%s,"messages":[{"role":"user","content":"%s"}]}' "$1" "$2" "$3"
}
# mstat FILE: save the mock's statistics; mget FILE MODEL FIELD: one by_model number (0 if absent).
mstat() { curl -s "http://127.0.0.1:$PORT/mock/stats" >"$1"; }
mget() {
	python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["by_model"].get(sys.argv[2], {}); print(m.get(sys.argv[3], 0))' "$1" "$2" "$3"
}
# mdelta A B MODEL FIELD: B - A.
mdelta() { echo $(($(mget "$2" "$3" "$4") - $(mget "$1" "$3" "$4"))); }
# sget POOL EXPR: EXPR on pool `p` of shmlimit-stat --json, e.g. p["counters"]["settled"].
sget() {
	"$STAT" --json $S >"$T/stat.json" &&
		python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=[p for p in d["pools"] if p["name"]==sys.argv[2]][0]; print(eval(sys.argv[3]))' "$T/stat.json" "$1" "$2"
}
settled() { sget "$1" 'p["counters"]["settled"]'; }
# full POOL MODEL: take what is left of POOL's requests with ctl try (bounded).
full() {
	local i
	for i in 1 2 3 4 5 6; do "$CTL" try $S "$2" >/dev/null 2>&1 || return 0; done
	return 1
}
refill() { "$CTL" reset $S --buckets >/dev/null; }
mtotal() { curl -s "http://127.0.0.1:$PORT/mock/stats" | grep -o '"requests":[0-9]*' | head -n 1 | cut -d: -f2; }

OPUS=$(body claude-opus-4-5 false "Which model answers this?")
SONNET=$(body claude-sonnet-4-5 false "Which model answers this?")

echo "# routing off (SHMLIMIT_ROUTE unset): the model is never changed"
shim curl -s "$URL" -d "$OPUS" >"$T/off1" 2>"$T/off1.err"
curl -s "$URL" -d "$OPUS" >"$T/off1.plain"
check "a free pool: the response is byte-identical to one without the shim" cmp -s "$T/off1" "$T/off1.plain"
mstat "$T/m0"
shim curl -s -o /dev/null "$URL" -d "$OPUS" 2>"$T/off2.err"
check "opus full, routing off: refused (curl exit 42)" eq $? 42
mstat "$T/m1"
check "... and nothing reached the server, under any model" eq \
	"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[2]))["requests"] - json.load(open(sys.argv[1]))["requests"])' "$T/m0" "$T/m1")" 0
check "no stderr line about routing" eq "$(grep -c SHMLIMIT_ROUTE "$T/off2.err")" 0

echo "# routing on, the first pool free: sent as asked, not a byte changed"
refill
routed curl -s "$URL" -d "$OPUS" >"$T/on1" 2>"$T/on1.err"
check "the response is byte-identical to one without the shim (same body: same message id)" cmp -s "$T/on1" "$T/off1.plain"
check "settled on opus" eq "$(settled opus)" 2
check "nothing on stderr" eq "$(wc -c <"$T/on1.err" | tr -d ' ')" 0

echo "# routing on, opus full: the server receives the second model"
mstat "$T/m2"
routed curl -s "$URL" -d "$OPUS" >"$T/on2" 2>"$T/on2.err"
check "curl exit 0" eq $? 0
mstat "$T/m3"
check "the mock received claude-sonnet-4-5 once" eq "$(mdelta "$T/m2" "$T/m3" claude-sonnet-4-5 requests)" 1
check "... and claude-opus-4-5 not at all" eq "$(mdelta "$T/m2" "$T/m3" claude-opus-4-5 requests)" 0
check "the response comes from claude-sonnet-4-5" has '"model":"claude-sonnet-4-5"' "$T/on2"
curl -s "$URL" -d "$SONNET" >"$T/on2.plain"
check "only the model changed: the response equals a plain request with the sonnet body" cmp -s "$T/on2" "$T/on2.plain"
in=$(mdelta "$T/m2" "$T/m3" claude-sonnet-4-5 input_tokens)
out=$(mdelta "$T/m2" "$T/m3" claude-sonnet-4-5 output_tokens)
check "settled on the chosen pool: sonnet settled 1, tokens = the server's ($in in, $out out)" eq \
	"$(sget sonnet '(p["counters"]["settled"], p["tokens"]["input"], p["tokens"]["output"])')" "(1, $in, $out)"
check "... at sonnet's prices" eq "$(sget sonnet "abs(p['spend_usd'] - ($in * 3 + $out * 15) / 1e6) < 1e-12")" True
check "opus: still only the 2 earlier requests" eq "$(settled opus)" 2
check "nothing on stderr" eq "$(wc -c <"$T/on2.err" | tr -d ' ')" 0

echo "# opus and sonnet full: a stream goes to the third model"
mstat "$T/m4"
routed curl -s "$URL" -d "$(body claude-opus-4-5 true "Stream it, whoever you are.")" >"$T/on3"
check "curl exit 0" eq $? 0
mstat "$T/m5"
check "the mock received claude-haiku-4-5" eq "$(mdelta "$T/m4" "$T/m5" claude-haiku-4-5 requests)" 1
check "the stream is complete" has "message_stop" "$T/on3"
in=$(mdelta "$T/m4" "$T/m5" claude-haiku-4-5 input_tokens)
out=$(mdelta "$T/m4" "$T/m5" claude-haiku-4-5 output_tokens)
check "settled on haiku with the stream's usage ($in in, $out out)" eq \
	"$(sget haiku '(p["counters"]["settled"], p["tokens"]["input"], p["tokens"]["output"])')" "(1, $in, $out)"

echo "# every pool of the list full: refused, nothing sent"
full haiku claude-haiku-4-5
n0=$(mtotal)
routed curl -s -o /dev/null "$URL" -d "$OPUS" 2>"$T/on4.err"
check "curl exit 42" eq $? 42
check "one refusal line" eq "$(grep -c '^shmlimit: refused' "$T/on4.err")" 1
check "nothing reached the server" eq "$(mtotal)" "$n0"

echo "# routing goes down the list, never up"
refill
full sonnet claude-sonnet-4-5
mstat "$T/m6"
routed curl -s "$URL" -d "$(body claude-sonnet-4-5-20250929 false "A dated id.")" >"$T/on5"
mstat "$T/m7"
check "a dated sonnet id (its pool's place in the list), sonnet full: to claude-haiku-4-5" eq \
	"$(mdelta "$T/m6" "$T/m7" claude-haiku-4-5 requests)/$(mdelta "$T/m6" "$T/m7" claude-opus-4-5 requests)" "1/0"
refill
full opus claude-opus-4-5
SHMLIMIT_ROUTE=claude-sonnet-4-5,claude-haiku-4-5 shim curl -s -o /dev/null "$URL" -d "$OPUS" 2>"$T/notin.err"
check "a model not in the list is not routed (opus full: exit 42)" eq $? 42
check "... refused on its own pool" has "model claude-opus-4-5: pool opus: rpm limit" "$T/notin.err"

echo "# what cannot be routed fails open to no routing"
refill
full opus claude-opus-4-5
ESC='{"mod\u0065l":"claude-opus-4-5","max_tokens":40,"messages":[{"role":"user","content":"escaped key"}]}'
routed curl -s -o /dev/null "$URL" -d "$ESC" 2>"$T/esc.err"
check "a \"model\" key written with an escape is not rewritten (opus full: exit 42)" eq $? 42
check "... one stderr line says why" eq "$(grep -c 'SHMLIMIT_ROUTE: .*not a plain top-level string' "$T/esc.err")" 1
SHMLIMIT_ROUTE=claude-opus-4-5 shim curl -s -o /dev/null "$URL" -d "$OPUS" 2>"$T/one.err"
check "a list of one model routes nothing (exit 42)" eq $? 42
check "... one stderr line says so" has "needs at least two models" "$T/one.err"

echo "# curl --parallel (multi interface): rewritten when each transfer starts"
refill
tok() { sget $1 '(p["tokens"]["input"], p["tokens"]["output"])' | tr -d '(),'; }
for p in opus sonnet haiku; do tok $p >"$T/tok0.$p"; done
s0=$(settled opus)/$(settled sonnet)/$(settled haiku)
mstat "$T/m8"
# One body per transfer (--next: otherwise curl joins every -d into each body).
args=()
for i in 1 2 3; do
	[ $i -gt 1 ] && args+=(--next)
	args+=(-s -o "$T/par$i.out" --url "$URL" -d "$(body claude-opus-4-5 $([ $i = 2 ] && echo true || echo false) "parallel $i")")
done
routed curl --parallel --parallel-max 3 "${args[@]}" 2>"$T/par.err"
check "curl exit 0" eq $? 0
mstat "$T/m9"
check "the mock received each model once (opus, sonnet, haiku)" eq \
	"$(mdelta "$T/m8" "$T/m9" claude-opus-4-5 ok)/$(mdelta "$T/m8" "$T/m9" claude-sonnet-4-5 ok)/$(mdelta "$T/m8" "$T/m9" claude-haiku-4-5 ok)" "1/1/1"
check "three answers from three different models" eq "$(cat "$T"/par*.out | grep -o '"model":"claude-[a-z]*-4-5"' | sort -u | wc -l | tr -d ' ')" 3
s1=$(settled opus)/$(settled sonnet)/$(settled haiku)
check "one more settled on each pool ($s0 -> $s1)" eq \
	"$(echo "$s0 $s1" | awk -F'[/ ]' '{print $4-$1 "/" $5-$2 "/" $6-$3}')" "1/1/1"
for p in opus sonnet haiku; do
	m=claude-$p-4-5
	read -r i0 o0 <"$T/tok0.$p"
	read -r i1 o1 < <(tok $p)
	check "$p: tokens settled = what the server counted for $m" eq \
		"$((i1 - i0)) $((o1 - o0))" "$(mdelta "$T/m8" "$T/m9" $m input_tokens) $(mdelta "$T/m8" "$T/m9" $m output_tokens)"
done
check "the padded bodies were valid JSON to the server: no 400" eq "$(cat "$T"/par*.out | grep -c invalid_request)" 0

echo "# the application's own buffer is never written (a libcurl program)"
for mode in postfields postfields-size copy multi; do
	refill
	full opus claude-opus-4-5
	m=${mode%-size}
	sz=; [ "$mode" != "$m" ] && sz=--size
	routed "$APP" --url "$URL" --model claude-opus-4-5 --mode "$m" $sz --count 2 \
		--between "\"$CTL\" reset $S --buckets >/dev/null" >"$T/app.$mode" 2>"$T/app.$mode.err"
	check "$mode: exit 0 (buffer unchanged after each transfer)" eq $? 0
	check "$mode: opus full, the first request answered by claude-sonnet-4-5" \
		has "^request 1: curl=0 status=200 model=claude-sonnet-4-5 buffer=unchanged$" "$T/app.$mode"
	check "$mode: pools refilled, the same handle sends the application's body again" \
		has "^request 2: curl=0 status=200 model=claude-opus-4-5 buffer=unchanged$" "$T/app.$mode"
done
refill
full opus claude-opus-4-5
routed "$APP" --url "$URL" --model claude-opus-4-5 --mode read --count 2 \
	--between "\"$CTL\" reset $S --buckets >/dev/null" >"$T/app.read" 2>"$T/app.read.err"
check "read callback: not routed, refused as without routing (CURLE_ABORTED_BY_CALLBACK)" \
	has "^request 1: curl=42 status=0 model=- buffer=unchanged$" "$T/app.read"
check "read callback: one stderr line says why" eq "$(grep -c 'SHMLIMIT_ROUTE: a request body from a read callback' "$T/app.read.err")" 1
check "read callback: sent as asked once the pool has room" \
	has "^request 2: curl=0 status=200 model=claude-opus-4-5 buffer=unchanged$" "$T/app.read"

harness_done
