#!/bin/bash
# learn.sh - the shim's input estimate against a server that counts tokens
# its own way (shmlimit-mock's tokenizer, mock/tokenize.c): the estimate's
# rule per script, the ratio each pool learns from every settlement, and a
# body the learned estimate puts above the ITPM bucket refused locally,
# never sent.
#
# Usage: preload/tests/learn.sh [BUILD_DIR]
#
# The mock runs without --config (it enforces nothing, so only the shim
# refuses), bounded by --max-seconds and --max-requests; segments have the
# pid in their names and are removed on exit.  No test sleeps to pass.
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
harness_init preload-learn

"$MOCK" --port 0 --port-file "$T/port" --max-seconds 100 --max-requests 200 2>"$T/mock.err" &
PIDS="$PIDS $!"
for _ in $(seq 1 200); do [ -s "$T/port" ] && break; sleep 0.05; done
[ -s "$T/port" ] || { echo "FATAL: mock did not start: $(cat "$T/mock.err")"; exit 1; }
PORT=$(cat "$T/port") URL=http://127.0.0.1:$(cat "$T/port")

# One pool whose ITPM bucket holds 3000 tokens, refilling fast enough that
# nothing here waits.
cat > "$T/cfg.json" <<'EOF'
{"pools": [{"name": "learn", "rpm": 60000, "itpm": 6000000, "otpm": 6000000,
  "burst": {"rpm": 1000, "itpm": 3000},
  "prices": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}}],
 "models": [{"match": "claude-sonnet-4*", "pool": "learn"}]}
EOF
nseg=0
new_seg() {
	nseg=$((nseg + 1))
	local s="shl-preload-learn-$$-$nseg"
	"$SEGTOOL" create "$s" "$T/cfg.json" || { echo "FATAL: cannot create segment"; exit 1; }
	SEGS="$SEGS $s"
	eval "$1=$s"
}
shim() {
	local s=$1; shift
	SHMLIMIT_SEGMENT=$s SHMLIMIT_HOSTS=127.0.0.1:$PORT SHMLIMIT_WAIT_MS=0 LD_PRELOAD=$SO "$@"
}
# est SEG FIELD: the pool's estimate.ratio or estimate.samples (shmlimit-stat --json)
est() {
	"$STAT" --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pools"][0]["estimate"][sys.argv[1]])' "$2"
}
body() { # body TEXT
	printf '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"%s"}]}' "$1"
}
rep() { python3 -c 'import sys; print(sys.argv[1] * int(sys.argv[2]), end="")' "$1" "$2"; }
served() { curl -s "$URL/mock/stats" | grep -o '"requests":[0-9]*' | head -n 1 | cut -d: -f2; }

echo "# CJK text: the base rule counts a token per character, as the server does"
new_seg S1
CJK=$(rep '漢字かな한글' 60) # 360 characters
shim "$S1" curl -s -o "$T/cjk.out" "$URL/v1/messages" -d "$(body "$CJK")" 2>"$T/cjk.err"
check "cjk: curl exit 0, nothing on stderr" eq "$?/$(lines "$T/cjk.err")" "0/0"
srv=$(grep -o '"input_tokens":[0-9]*' "$T/cjk.out" | head -n 1 | cut -d: -f2)
check "cjk: the server counted a token per character" eq "$srv" 360
check "cjk: one sample learned" eq "$(est "$S1" samples)" 1
# (the old rule, 4 characters a token, would have learned a ratio of 4)
check "cjk: the ratio learned is 1: the estimate was the server's count" eq "$(est "$S1" ratio)" 1

echo "# English text: the server counts more than 4 characters a token; the pool learns it"
new_seg S2
EN=$(rep 'hello world ' 100) # 1200 characters: estimate 300
for i in 1 2 3 4 5; do
	shim "$S2" curl -s -o "$T/en.$i" "$URL/v1/messages" -d "$(body "$EN")"
done
srv=$(grep -o '"input_tokens":[0-9]*' "$T/en.5" | head -n 1 | cut -d: -f2)
check "english: the server counts above the estimate of 300" ge "$srv" 301
check "english: five samples" eq "$(est "$S2" samples)" 5
# the ratio is the server's count over 300, in 1/4096ths, rounded down
want=$(python3 -c "print($srv * 4096 // 300 / 4096)")
check "english: the ratio learned is the server's count / the estimate ($want)" python3 -c \
	"import sys; sys.exit(abs($(est "$S2" ratio) - $want) > 1e-9)"
"$STAT" "$S2" > "$T/table"
check "shmlimit-stat shows it" has "estimate ratio .* (learned from 5 settlements)" "$T/table"

echo "# a body the learned estimate puts above the ITPM bucket is refused, never sent"
BIG=$(rep 'hello world ' 800) # estimate 2400, under the bucket's 3000; learned: above
n0=$(served)
shim "$S2" curl -s -o /dev/null "$URL/v1/messages" -d "$(body "$BIG")" 2>"$T/big.err"
check "learned: curl exit 42 (refused)" eq $? 42
check "learned: never reached the server" eq "$(served)" "$n0"
check "learned: one line" eq "$(lines "$T/big.err")" 1
check "learned: the line names the limit and the learned ratio" has \
	"pool learn: itpm limit .*learned ratio .*more than the capacity 3000; it can never be admitted" "$T/big.err"
new_seg S3
shim "$S3" curl -s -o /dev/null "$URL/v1/messages" -d "$(body "$BIG")" 2>"$T/big3.err"
check "unlearned (a fresh pool): the same body is sent" eq "$?/$(served)" "0/$((n0 + 1))"

echo "# each token charged once: settle, then the remaining header as of its arrival"
# A pool refilling one input token a second from 100000: the server's
# remaining (x-mock-remaining) says 99600, which counts the 400 tokens the
# server counted for this request; the estimate was 300.  Charging the
# estimate's error (100) on top of the clamp would leave 99500.
cat > "$T/slow.json" <<'EOF'
{"pools": [{"name": "learn", "rpm": 60000, "itpm": 60, "otpm": 6000000,
  "burst": {"rpm": 1000, "itpm": 100000},
  "prices": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}}],
 "models": [{"match": "claude-sonnet-4*", "pool": "learn"}]}
EOF
s4="shl-preload-learn-$$-slow"
"$SEGTOOL" create "$s4" "$T/slow.json" || { echo "FATAL: cannot create segment"; exit 1; }
SEGS="$SEGS $s4"
t0=$(date +%s%N)
shim "$s4" curl -s -o "$T/once.out" -H 'x-mock-remaining: ,99600,' "$URL/v1/messages" -d "$(body "$EN")"
check "once: curl exit 0" eq $? 0
"$SEGTOOL" stats "$s4" > "$T/once.st"
a=$((($(date +%s%N) - t0) / 1000000000 + 1))
check "once: the server counted 400" has '"input_tokens":400' "$T/once.out"
av=$(awk '$1 == "learn.avail_itpm" { print $2 }' "$T/once.st")
check "once: input tokens available >= 99600 (not 99500: charged once)" \
	awk -v x="$av" 'BEGIN { exit !(x + 0 >= 99599.5) }'
check "once: and <= 99600 (+$a refilled)" awk -v x="$av" -v a="$a" 'BEGIN { exit !(x + 0 <= 99600 + a) }'
check "once: settled with the server's 400" eq "$(awk '$1 == "learn.tokens_in" { print $2 }' "$T/once.st")" 400

harness_done
