#!/bin/bash
# run.sh - tests of libshmlimit-preload.so with the real curl CLI and a small
# multi-threaded libcurl worker, against shmlimit-mock on 127.0.0.1.
#
# Usage: preload/tests/run.sh [BUILD_DIR]
#
# Every mock server is started here with --port 0, bounded by --max-seconds
# and --max-requests, and stopped here (trap on exit); every segment has the
# pid in its name and is removed on exit.  No test sleeps to pass: the only
# waits are for a port file to appear, bounded.
# shellcheck disable=SC2016,SC2154
set -u

B=${1:-build}
SO=$B/libshmlimit-preload.so
SEGTOOL=$B/shmlimit-preload-seg
WORKER=$B/shmlimit-preload-worker
MOCK=$B/shmlimit-mock
HERE=$(cd "$(dirname "$0")" && pwd)
CFG=$HERE/fleet.json
seg_rm() { "$SEGTOOL" rm "$1"; }
. "$HERE/harness.sh"
harness_init preload-test

# new_seg NAME [CONFIG]: a fresh segment; its name in $NAME.
nseg=0
new_seg() {
	nseg=$((nseg + 1))
	local s="shl-preload-test-$$-$nseg"
	"$SEGTOOL" create "$s" "${2:-$CFG}" || { echo "FATAL: cannot create segment"; exit 1; }
	SEGS="$SEGS $s"
	eval "$1=$s"
}
seg() { "$SEGTOOL" stats "$1" | awk -v k="$2" '$1 == k { print $2 }'; }
# mock_num URL KEY: a number from /mock/stats (first occurrence of "KEY":N).
mock_num() {
	curl -s "$1/mock/stats" | grep -o "\"$2\":[0-9]*" | head -n 1 | cut -d: -f2
}
# shim SEG PORT CMD...: run CMD under the shim, governing 127.0.0.1:PORT.
shim() {
	local s=$1 p=$2; shift 2
	SHMLIMIT_SEGMENT=$s SHMLIMIT_HOSTS=127.0.0.1:$p LD_PRELOAD=$SO "$@"
}
body() { # body MODEL MAX_TOKENS STREAM TEXT
	printf '{"model":"%s","max_tokens":%s,"stream":%s,"messages":[{"role":"user","content":"%s"}]}' \
		"$1" "$2" "$3" "$4"
}

echo "# exports"
nm -D --defined-only "$SO" | awk '{print $3}' | sort > "$T/exports"
printf '%s\n' curl_easy_cleanup curl_easy_duphandle curl_easy_perform curl_easy_reset \
	curl_easy_setopt curl_multi_add_handle curl_multi_cleanup curl_multi_info_read \
	curl_multi_perform curl_multi_poll curl_multi_remove_handle curl_multi_setopt \
	curl_multi_socket curl_multi_socket_action curl_multi_socket_all curl_multi_timeout \
	curl_multi_wait > "$T/want"
check "the shim exports exactly its seventeen hooks" cmp -s "$T/exports" "$T/want"
# The stub forwards every hook to the implementation's of the same name.
nm -D --defined-only "$B/libshmlimit-preload-impl.so" | awk '{print $3}' | sort > "$T/impl"
echo shim_impl_start | sort -m - "$T/want" > "$T/want_impl"
check "the implementation exports the same hooks and the stub's entry" cmp -s "$T/impl" "$T/want_impl"
check "the stub needs nothing but libc" eq "$(readelf -d "$SO" | grep -c NEEDED)" 1

start_mock m --config "$CFG"
new_seg S1

echo "# curl CLI: JSON and SSE, byte-identical, counters match the server"
J=$(body claude-sonnet-4-5 200 false "Hello, how are you today? A plain JSON request.")
E=$(body claude-sonnet-4-5 200 true "Hello again; this time as a stream of events, please.")
C='{"model":"claude-sonnet-4-5","max_tokens":300,"system":[{"type":"text","text":"You are a careful assistant with a long system prompt to cache.","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":[{"type":"text","text":"cached question","cache_control":{"type":"ephemeral"}},{"type":"text","text":"and a fresh one"}]}]}'
curl -s "$m_url/v1/messages" -d "$J" > "$T/j.plain"
shim "$S1" "$m_port" curl -s "$m_url/v1/messages" -d "$J" > "$T/j.shim" 2>"$T/j.err"
check "JSON response byte-identical with and without the shim" cmp -s "$T/j.plain" "$T/j.shim"
check "JSON: nothing on stderr" eq "$(lines "$T/j.err")" 0
curl -s "$m_url/v1/messages" -d "$E" > "$T/e.plain"
shim "$S1" "$m_port" curl -s "$m_url/v1/messages" -d "$E" > "$T/e.shim"
check "SSE response byte-identical with and without the shim" cmp -s "$T/e.plain" "$T/e.shim"
check "SSE response is a stream" has "message_stop" "$T/e.shim"
# --data-binary @file, a 1 h + 5 min cache write, a forced usage, and an SSE
# stream sent in many small chunks (mock --stream-chunk-delay-ms below).
printf '%s' "$C" > "$T/c.json"
shim "$S1" "$m_port" curl -s -o "$T/c.out" "$m_url/v1/messages" --data-binary @"$T/c.json"
shim "$S1" "$m_port" curl -s -o "$T/f.out" "$m_url/v1/messages" -H 'x-mock-usage: 120,33,40,50,60' -d "$E"
check "counters: 4 admitted, 4 settled" eq "$(seg "$S1" sonnet.admitted)/$(seg "$S1" sonnet.settled)" "4/4"
# The server counted 6 requests (2 without the shim); subtract those two.
curl -s "$m_url/mock/stats" > "$T/stats1"
srv_in=$(mock_num "$m_url" input_tokens) srv_out=$(mock_num "$m_url" output_tokens)
srv_cw=$(mock_num "$m_url" cache_creation_input_tokens) srv_cr=$(mock_num "$m_url" cache_read_input_tokens)
pj_in=$(grep -o '"input_tokens":[0-9]*' "$T/j.plain" | head -n1 | cut -d: -f2)
pj_out=$(grep -o '"output_tokens":[0-9]*' "$T/j.plain" | tail -n1 | cut -d: -f2)
pe_in=$(grep -o '"input_tokens":[0-9]*' "$T/e.plain" | tail -n1 | cut -d: -f2)
pe_out=$(grep -o '"output_tokens":[0-9]*' "$T/e.plain" | tail -n1 | cut -d: -f2)
check "segment input tokens = server's" eq "$(seg "$S1" sonnet.tokens_in)" $((srv_in - pj_in - pe_in))
check "segment output tokens = server's" eq "$(seg "$S1" sonnet.tokens_out)" $((srv_out - pj_out - pe_out))
check "segment cache writes = server's" eq "$(seg "$S1" sonnet.cache_write)" "$srv_cw"
check "segment cache reads = server's" eq "$(seg "$S1" sonnet.cache_read)" "$srv_cr"
check "cache writes were seen at all" ge "$srv_cw" 50

echo "# curl --parallel (multi interface) is governed"
new_seg S2
args=()
for i in 1 2 3 4 5 6; do
	# --next: each URL its own body (without it curl joins every -d into each request)
	[ "$i" -gt 1 ] && args+=(--next -s)
	args+=(-o "$T/par$i.out" --url "$m_url/v1/messages" -d "$(body claude-haiku-4-5 50 $([ $((i % 2)) = 0 ] && echo true || echo false) "parallel $i")")
done
r0=$(mock_num "$m_url" rate_limited); i0=$(mock_num "$m_url" input_tokens)
shim "$S2" "$m_port" curl -s --no-progress-meter --parallel --parallel-max 6 "${args[@]}"
check "--parallel: curl exit 0" eq $? 0
check "--parallel: 6 admitted and settled" eq "$(seg "$S2" haiku.admitted)/$(seg "$S2" haiku.settled)" "6/6"
check "--parallel: admissions waited for the RPM bucket (burst 2)" ge "$(seg "$S2" haiku.waited)" 3
check "--parallel: the server refused none" eq "$(mock_num "$m_url" rate_limited)" "$r0"
check "--parallel: every output is a message" eq "$(grep -l msg_mock "$T"/par*.out | wc -l | tr -d ' ')" 6
check "--parallel: segment input tokens = server's" eq "$(seg "$S2" haiku.tokens_in)" "$(($(mock_num "$m_url" input_tokens) - i0))"

echo "# multi-threaded libcurl worker (POSTFIELDS, COPYPOSTFIELDS, read callback, dup, reset)"
new_seg S3
start_mock w --config "$CFG"
shim "$S3" "$w_port" "$WORKER" --url "$w_url/v1/messages" --threads 6 --requests 5 --model claude-sonnet-4-5 > "$T/w.out" 2>"$T/w.err"
check "worker: all 30 requests succeeded" has "30 ok, 0 failed" "$T/w.out"
check "worker: 30 admitted and settled" eq "$(seg "$S3" sonnet.admitted)/$(seg "$S3" sonnet.settled)" "30/30"
check "worker: the server refused none" eq "$(mock_num "$w_url" rate_limited)" 0
check "worker: segment input tokens = server's" eq "$(seg "$S3" sonnet.tokens_in)" "$(mock_num "$w_url" input_tokens)"
check "worker: segment output tokens = server's" eq "$(seg "$S3" sonnet.tokens_out)" "$(mock_num "$w_url" output_tokens)"
check "worker: no stderr from the shim" eq "$(grep -c shmlimit "$T/w.err")" 0
new_seg S3b
start_mock wf --config "$CFG" # fresh server buckets for a fresh segment
shim "$S3b" "$wf_port" "$WORKER" --url "$wf_url/v1/messages" --threads 4 --requests 4 --fork 3 --model claude-sonnet-4-5 > "$T/wf.out" 2>"$T/wf.err"
check "fork: children forked while threads run all succeed" has "16 ok, 0 failed$" "$T/wf.out"
check "fork: 28 admitted and settled in all" eq "$(seg "$S3b" sonnet.admitted)/$(seg "$S3b" sonnet.settled)" "28/28"
check "fork: the server refused none" eq "$(mock_num "$wf_url" rate_limited)" 0

echo "# a fleet of processes: zero 429s, admitted rate at the limit"
new_seg S4
start_mock f --config "$CFG"
NW=6 PER=5
start=$(date +%s%N)
fleet=""
for w in $(seq 1 $NW); do
	( for i in $(seq 1 $PER); do
		shim "$S4" "$f_port" curl -s -o /dev/null \
			-w '%{http_code} %header{anthropic-ratelimit-requests-remaining}\n' "$f_url/v1/messages" \
			-d "$(body claude-haiku-4-5 40 $([ $((i % 2)) = 0 ] && echo true || echo false) "worker $w request $i")"
	  done ) > "$T/fleet.$w" &
	fleet="$fleet $!"
done
# shellcheck disable=SC2086
wait $fleet
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
total=$((NW * PER))
check "fleet: every request got a 200" eq "$(cat "$T"/fleet.* | grep -c '^200 ')" "$total"
check "fleet: the server refused none (zero 429s)" eq "$(mock_num "$f_url" rate_limited)" 0
check "fleet: admitted = sent" eq "$(seg "$S4" haiku.admitted)" "$total"
# 240 RPM = 4/s, burst 2: 30 requests cannot take less than (30-2)/4 = 7 s
# if the limit held (a bound only a broken limiter can fail).
check "fleet: never faster than the limit ($elapsed_ms ms >= 7000)" ge "$elapsed_ms" 6990
# "Close to the limit", without timing: the server's own RPM bucket was kept
# empty, i.e. requests were admitted as fast as it refills.  Every response
# after the burst must show 0 or 1 requests remaining (1: the mock's
# tolerance of one request).
check "fleet: admitted at the limit (server bucket kept empty)" eq \
	"$(cat "$T"/fleet.* | awk '$2 > 1' | wc -l | tr -d ' ')" 0

echo "# a 429 with retry-after holds every process back"
new_seg S5
H=$(body claude-haiku-4-5 40 false "hold me")
shim "$S5" "$m_port" curl -s -o "$T/h429.out" -H 'x-mock-fail: 429' -H 'x-mock-retry-after: 30' "$m_url/v1/messages" -d "$H"
check "429 reached the application unchanged" has "rate_limit_error" "$T/h429.out"
check "429 counted" eq "$(seg "$S5" haiku.server_429)" 1
n0=$(mock_num "$m_url" requests)
SHMLIMIT_WAIT_MS=200 shim "$S5" "$m_port" curl -s -o /dev/null "$m_url/v1/messages" -d "$H" 2>"$T/h2.err"
check "another process is refused while held (curl exit 42)" eq $? 42
check "the refusal names the pool and the hold" has "pool haiku: hold limit" "$T/h2.err"
check "the refusal is one line" eq "$(grep -c shmlimit "$T/h2.err")" 1
check "the held request was never sent" eq "$(mock_num "$m_url" requests)" "$n0"
SHMLIMIT_WAIT_MS=200 shim "$S5" "$m_port" curl -s -o /dev/null "$m_url/v1/messages" -d "$(body claude-sonnet-4-5 40 false other-pool)"
check "other pools are not held" eq $? 0

echo "# the spend-cap 429"
new_seg S6
shim "$S6" "$m_port" curl -s -o /dev/null -H 'x-mock-fail: spend-cap' "$m_url/v1/messages" -d "$H"
check "spend marked exhausted" eq "$(seg "$S6" spend_exhausted)" 1
n0=$(mock_num "$m_url" requests)
shim "$S6" "$m_port" curl -s -o /dev/null "$m_url/v1/messages" -d "$(body claude-sonnet-4-5 40 false x)" 2>"$T/sc.err"
check "next request fails at once (curl exit 42)" eq $? 42
check "the refusal names the spend cap" has "spend limit" "$T/sc.err"
check "and was never sent" eq "$(mock_num "$m_url" requests)" "$n0"

echo "# never admissible: larger than a bucket"
new_seg S7
BIG=$(head -c 12000 /dev/zero | tr '\0' 'a')
shim "$S7" "$m_port" curl -s -o /dev/null "$m_url/v1/messages" -d "$(body claude-sonnet-4-5 40 false "$BIG")" 2>"$T/big.err"
check "E2BIG: curl exit 42" eq $? 42
check "E2BIG: the line names pool and limit" has "pool sonnet: itpm limit" "$T/big.err"

echo "# faults: 529 mid-stream and a truncated reply settle what was seen"
new_seg S8
shim "$S8" "$m_port" curl -s -o /dev/null -H 'x-mock-fail: 529-midstream' "$m_url/v1/messages" -d "$(body claude-haiku-4-5 40 true mid)"
shim "$S8" "$m_port" curl -s -o /dev/null -H 'x-mock-fail: truncate' "$m_url/v1/messages" -d "$(body claude-haiku-4-5 40 false trunc)"
check "faults: both settled, none cancelled" eq "$(seg "$S8" haiku.settled)/$(seg "$S8" haiku.cancelled)" "2/0"
check "faults: input of both charged" ge "$(seg "$S8" haiku.tokens_in)" 2

echo "# other hosts and paths pass through untouched"
new_seg S9
SHMLIMIT_SEGMENT=$S9 LD_PRELOAD=$SO curl -s "$m_url/v1/messages" -d "$J" > "$T/o1"
check "a host not in the list: identical output" cmp -s "$T/o1" "$T/j.plain"
shim "$S9" "$m_port" curl -s "$m_url/v1/complete" -d "$J" > "$T/o2"
curl -s "$m_url/v1/complete" -d "$J" > "$T/o2.plain"
# (error bodies carry a fresh request id: compare without it)
noid() { sed 's/"request_id":"[^"]*"//' "$1"; }
check "another path: identical output" eq "$(noid "$T/o2")" "$(noid "$T/o2.plain")"
shim "$S9" "$m_port" curl -s "$m_url/mock/health" > "$T/o3"
check "a GET: answered" has '"ok":true' "$T/o3"
shim "$S9" "$m_port" curl -s -o /dev/null "$m_url/v1/messages/count_tokens" -d "$J"
check "none of them admitted" eq "$(seg "$S9" all.admitted)" 0

echo "# count_tokens and batches, when the configuration names them"
new_seg S10 "$HERE/counting.json"
shim "$S10" "$m_port" curl -s -o "$T/ct.out" "$m_url/v1/messages/count_tokens" -d "$J"
check "count_tokens: answered" has "input_tokens" "$T/ct.out"
check "count_tokens: admitted on its own pool, settled, no tokens" eq \
	"$(seg "$S10" counting.admitted)/$(seg "$S10" counting.settled)/$(seg "$S10" counting.tokens_in)/$(seg "$S10" sonnet.admitted)" "1/1/0/0"
echo "# Message Batches: charged half the estimate, at the batch entry's prices"
# A configuration made here from the tier 1 preset: the preset has no
# count_tokens nor message_batches entry (the reference gives no numbers
# for their limits), so the test adds a "batch" pool whose prices are the
# preset's Sonnet prices, and maps message_batches to it.
python3 - "$HERE/../../libshmlimit/presets/tier1.json" "$T/batchcfg.json" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
sonnet = [p for p in cfg["pools"] if p["name"] == "sonnet"][0]
cfg["pools"].append({"name": "batch", "rpm": 50, "itpm": 1000000, "otpm": 1000000,
                     "prices": sonnet["prices"]})
cfg["models"].append({"match": "message_batches", "pool": "batch"})
json.dump(cfg, open(sys.argv[2], "w"))
PY
new_seg S10b "$T/batchcfg.json"
BATCH='{"requests":[{"custom_id":"a","params":'"$J"'},{"custom_id":"b","params":'"$J"'}]}'
curl -s "$m_url/v1/messages/batches" -d "$BATCH" > "$T/b.plain"
shim "$S10b" "$m_port" curl -s "$m_url/v1/messages/batches" -d "$BATCH" > "$T/b.shim" 2>"$T/b.err"
check "batch: the mock accepted it (a message_batch in progress)" has '"processing_status":"in_progress"' "$T/b.shim"
check "batch: response byte-identical with and without the shim" eq \
	"$(sed 's/"[a-z_]*_at":"[^"]*"//g' "$T/b.shim")" "$(sed 's/"[a-z_]*_at":"[^"]*"//g' "$T/b.plain")"
check "batch: nothing on stderr" eq "$(lines "$T/b.err")" 0
check "batch: admitted on the batch pool once, settled, nothing on sonnet" eq \
	"$(seg "$S10b" batch.admitted)/$(seg "$S10b" batch.settled)/$(seg "$S10b" sonnet.admitted)" "1/1/0"
# The non-batch estimate of the two requests: the shim's estimate of J's
# input, ceil(47 / 4) = 12 tokens (the mock, with a tokenizer of its own,
# counts 16), and max_tokens as output, at the preset's Sonnet prices (USD
# per million tokens = nano-dollars per token / 1000); the batch is charged
# half of it, rounded up.
est_in=12
est=$(python3 - "$T/batchcfg.json" "$est_in" "$J" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
pr = [p for p in cfg["pools"] if p["name"] == "sonnet"][0]["prices"]
n_in, body = int(sys.argv[2]), json.loads(sys.argv[3])
one = round(n_in * pr["input"] * 1000) + round(body["max_tokens"] * pr["output"] * 1000)
print(2 * one)
PY
)
check "batch: the estimate is not trivial" ge "$est" 1000
check "batch: spend charged = half the non-batch estimate" eq "$(seg "$S10b" batch.spend)" $(((est + 1) / 2))
check "batch: the month's spend is that too" eq "$(seg "$S10b" spend_month)" $(((est + 1) / 2))
check "batch: its tokens are the estimate" eq "$(seg "$S10b" batch.tokens_in)/$(seg "$S10b" batch.tokens_out)" \
	"$((2 * est_in))/400"
# A batch mixing models is priced at the message_batches entry's prices
# (documented): an Opus and a Haiku request here cost as two Sonnet ones.
JO=${J/claude-sonnet-4-5/claude-opus-4-5} JH=${J/claude-sonnet-4-5/claude-haiku-4-5}
new_seg S10c "$T/batchcfg.json"
shim "$S10c" "$m_port" curl -s -o /dev/null "$m_url/v1/messages/batches" \
	-d '{"requests":[{"custom_id":"o","params":'"$JO"'},{"custom_id":"h","params":'"$JH"'}]}'
check "mixed batch: priced at the batch entry's prices, not each model's" eq "$(seg "$S10c" batch.spend)" $(((est + 1) / 2))
check "mixed batch: no model pool charged" eq "$(seg "$S10c" opus.admitted)/$(seg "$S10c" haiku.admitted)" "0/0"
# Refused by the server: nothing charged.
new_seg S10d "$T/batchcfg.json"
shim "$S10d" "$m_port" curl -s -o /dev/null -H 'x-mock-fail: 500' "$m_url/v1/messages/batches" -d "$BATCH"
check "batch: a 500 is settled with no spend" eq "$(seg "$S10d" batch.settled)/$(seg "$S10d" batch.spend)" "1/0"
check "the mock counted the batches it accepted" eq "$(mock_num "$m_url" batches)" 3

echo "# feedback: anthropic-ratelimit-*-remaining clamps the pool's buckets (shl_clamp)"
# feedback.json: one pool "fb" refilling 1 unit a second in every dimension
# (60 a minute) from bursts of 1000 requests and 1000000 tokens, so that a
# clamp shows plainly; the allowance below is what can have refilled since.
# The mock runs without --config: it sends only the remaining headers that
# x-mock-remaining asks for.
FB=$HERE/feedback.json
start_mock nc
segf() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }
fle() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }' || { echo "       expected <= $2, got '$1'" >&2; return 1; }; }
fge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }' || { echo "       expected >= $2, got '$1'" >&2; return 1; }; }
since() { echo $((($(date +%s%N) - $1) / 1000000000 + 1)); } # whole seconds since $1, rounded up
K=$(body claude-haiku-4-5 40 false "feedback, please")
new_seg S11 "$FB"
"$SEGTOOL" stats "$S11" > "$T/fb0.st"
check "clamp: the pool starts full" eq "$(segf "$T/fb0.st" fb.avail_rpm)/$(segf "$T/fb0.st" fb.avail_itpm)/$(segf "$T/fb0.st" fb.avail_otpm)" "1000.000/1000000.000/1000000.000"
t0=$(date +%s%N)
shim "$S11" "$nc_port" curl -s -o "$T/fb.out" -H 'x-mock-remaining: 3,1000,2000' "$nc_url/v1/messages" -d "$K" 2>"$T/fb.err"
check "clamp: curl exit 0" eq $? 0
t1=$(date +%s%N) # the buckets refill from this snapshot on
"$SEGTOOL" stats "$S11" > "$T/fb1.st"
a=$(since "$t0")
check "clamp: the response reached the application" has msg_mock "$T/fb.out"
check "clamp: nothing on stderr" eq "$(lines "$T/fb.err")" 0
check "clamp: admitted and settled once" eq "$(segf "$T/fb1.st" fb.admitted)/$(segf "$T/fb1.st" fb.settled)" "1/1"
check "clamp: requests available <= 3 (+$a refilled)" fle "$(segf "$T/fb1.st" fb.avail_rpm)" $((3 + a))
check "clamp: input tokens available <= 1000 (+$a refilled)" fle "$(segf "$T/fb1.st" fb.avail_itpm)" $((1000 + a))
check "clamp: output tokens available <= 2000 (+$a refilled)" fle "$(segf "$T/fb1.st" fb.avail_otpm)" $((2000 + a))
"$B/shmlimit-stat" --json "$S11" > "$T/fb1.json"
a=$(since "$t0")
check "clamp: shmlimit-stat --json shows the same (available rpm/itpm/otpm)" python3 -c '
import json, sys
p = [p for p in json.load(open(sys.argv[1]))["pools"] if p["name"] == "fb"][0]
a, av = int(sys.argv[2]), p["available"]
sys.exit(not (av["rpm"] <= 3 + a and av["itpm"] <= 1000 + a and av["otpm"] <= 2000 + a))' "$T/fb1.json" "$a"
# A higher remaining never raises a bucket; a header left out leaves it.
# The allowance counts the refill since the first snapshot was taken.
shim "$S11" "$nc_port" curl -s -o /dev/null -H 'x-mock-remaining: 999,900000,' "$nc_url/v1/messages" -d "$K"
"$SEGTOOL" stats "$S11" > "$T/fb2.st"
a=$(since "$t1")
check "clamp: a higher remaining does not raise the input bucket" fle "$(segf "$T/fb2.st" fb.avail_itpm)" "$(awk -v x="$(segf "$T/fb1.st" fb.avail_itpm)" -v a="$a" 'BEGIN { print x + a }')"
check "clamp: nor the requests bucket" fle "$(segf "$T/fb2.st" fb.avail_rpm)" "$(awk -v x="$(segf "$T/fb1.st" fb.avail_rpm)" -v a="$a" 'BEGIN { print x + a }')"
check "clamp: still settled normally" eq "$(segf "$T/fb2.st" fb.settled)" 2
new_seg S11b "$FB"
shim "$S11b" "$nc_port" curl -s -o /dev/null -H 'x-mock-remaining: ,,5000' "$nc_url/v1/messages" -d "$K"
"$SEGTOOL" stats "$S11b" > "$T/fb3.st"
check "clamp: only the dimension given is clamped: output" fle "$(segf "$T/fb3.st" fb.avail_otpm)" 5000
check "clamp: ... not input (one request's estimate taken)" fge "$(segf "$T/fb3.st" fb.avail_itpm)" 999000

echo "# retry-after-ms on a 429 holds the pool (shl_hold)"
# The mock sends retry-after: 2 next to retry-after-ms; the shim reads
# retry-after-ms first: a 10-minute hold shows as more than 2 s left.
new_seg S12 "$FB"
shim "$S12" "$nc_port" curl -s -o "$T/ra.out" -H 'x-mock-fail: 429' -H 'x-mock-retry-after-ms: 600000' "$nc_url/v1/messages" -d "$K" 2>"$T/ra.err"
check "hold: the 429 reached the application unchanged" has rate_limit_error "$T/ra.out"
check "hold: nothing on stderr" eq "$(lines "$T/ra.err")" 0
"$SEGTOOL" stats "$S12" > "$T/ra.st"
check "hold: 429 counted, settled" eq "$(segf "$T/ra.st" fb.server_429)/$(segf "$T/ra.st" fb.settled)" "1/1"
check "hold: the pool is held for retry-after-ms, not retry-after (> 2 s left)" ge "$(segf "$T/ra.st" fb.hold_ns)" 2000000001
check "hold: at most the 600 s asked" le "$(segf "$T/ra.st" fb.hold_ns)" 600000000000
# The same, as the stats tool shows it (shmlimit-stat --json: pools[].hold_seconds).
"$B/shmlimit-stat" --json "$S12" > "$T/ra.json"
check "hold: shmlimit-stat --json shows the pool held for more than 2 s, at most 600 s" python3 -c '
import json, sys
p = [p for p in json.load(open(sys.argv[1]))["pools"] if p["name"] == "fb"][0]
sys.exit(not (2 < p["hold_seconds"] <= 600))' "$T/ra.json"
n0=$(mock_num "$nc_url" requests)
SHMLIMIT_WAIT_MS=0 shim "$S12" "$nc_port" curl -s -o /dev/null "$nc_url/v1/messages" -d "$K" 2>"$T/ra2.err"
check "hold: a request that may not wait is refused (curl exit 42)" eq $? 42
check "hold: the refusal names the pool and the hold" has "pool fb: hold limit" "$T/ra2.err"
check "hold: one stderr line" eq "$(lines "$T/ra2.err")" 1
SHMLIMIT_WAIT_MS=5000 shim "$S12" "$nc_port" curl -s -o /dev/null "$nc_url/v1/messages" -d "$K" 2>"$T/ra3.err"
check "hold: a wait past SHMLIMIT_WAIT_MS is refused at once (exit 42)" eq $? 42
check "hold: ... saying it is past the deadline" has "past the deadline" "$T/ra3.err"
check "hold: neither was sent" eq "$(mock_num "$nc_url" requests)" "$n0"
"$SEGTOOL" stats "$S12" > "$T/ra.st"
check "hold: both counted as refused, only the 429 admitted" eq "$(segf "$T/ra.st" fb.refused)/$(segf "$T/ra.st" fb.admitted)" "2/1"
# A short hold and a request that may wait: it is admitted after the hold.
# Either it slept (the pool's "waited" counter), or the hold, which began
# after t0, was over before it asked: then it returned at least 1.5 s after
# t0.  A shim that ignored the hold fails both, short of a 1.5 s stall.
new_seg S13 "$FB"
t0=$(date +%s%N)
shim "$S13" "$nc_port" curl -s -o /dev/null -H 'x-mock-fail: 429' -H 'x-mock-retry-after-ms: 1500' "$nc_url/v1/messages" -d "$K"
check "hold: 1500 ms read, not retry-after's 2 s" le "$(seg "$S13" fb.hold_ns)" 1500000000
SHMLIMIT_WAIT_MS=-1 shim "$S13" "$nc_port" curl -s -o "$T/ra4.out" "$nc_url/v1/messages" -d "$K"
check "hold: a request that may wait succeeds" eq $? 0
t2=$(date +%s%N)
check "hold: ... and was sent" has msg_mock "$T/ra4.out"
check "hold: ... after waiting for the hold" eval '[ "$(seg "$S13" fb.waited)" = 1 ] || [ $((t2 - t0)) -ge 1500000000 ]'

echo "# a transport error with nothing sent cancels the admission"
# A port nothing listens on: a mock started and shut down, its port closed.
start_mock gone
curl -s -o /dev/null -X POST "$gone_url/mock/shutdown"
wait "$gone_pid"
new_seg S14 "$FB"
curl -s "$gone_url/v1/messages" -d "$K" > "$T/cr.plain" 2>"$T/cr.plain.err"
rc_plain=$?
check "refused: without the shim curl fails to connect (exit 7)" eq "$rc_plain" 7
shim "$S14" "$gone_port" curl -s "$gone_url/v1/messages" -d "$K" > "$T/cr.shim" 2>"$T/cr.err"
check "refused: the same exit code under the shim" eq $? "$rc_plain"
check "refused: the same (empty) output" cmp -s "$T/cr.plain" "$T/cr.shim"
check "refused: nothing on stderr from the shim" eq "$(grep -c shmlimit "$T/cr.err")" 0
"$SEGTOOL" stats "$S14" > "$T/cr.st"
check "refused: admitted once, cancelled, not settled" eq "$(segf "$T/cr.st" fb.admitted)/$(segf "$T/cr.st" fb.cancelled)/$(segf "$T/cr.st" fb.settled)" "1/1/0"
check "refused: no spend left reserved (month)" eq "$(segf "$T/cr.st" spend_month)" 0
check "refused: no spend on the pool" eq "$(segf "$T/cr.st" fb.spend)" 0
check "refused: no tokens charged" eq "$(segf "$T/cr.st" fb.tokens_in)/$(segf "$T/cr.st" fb.tokens_out)" "0/0"
check "refused: the input tokens were given back (bucket full)" fge "$(segf "$T/cr.st" fb.avail_itpm)" 1000000
check "refused: the request was given back (bucket full)" fge "$(segf "$T/cr.st" fb.avail_rpm)" 1000

echo "# no segment: passthrough, one stderr line"
SHMLIMIT_SEGMENT=shl-preload-test-$$-none SHMLIMIT_HOSTS=127.0.0.1:$m_port LD_PRELOAD=$SO \
	curl -s "$m_url/v1/messages" -d "$J" > "$T/n1" 2>"$T/n1.err"
check "no segment: identical output" cmp -s "$T/n1" "$T/j.plain"
check "no segment: one stderr line" eq "$(grep -c 'pass through' "$T/n1.err")" 1
SHMLIMIT_HOSTS=127.0.0.1:$m_port LD_PRELOAD=$SO curl -s "$m_url/v1/messages" -d "$J" > "$T/n2" 2>/dev/null
check "SHMLIMIT_SEGMENT unset: identical output" cmp -s "$T/n2" "$T/j.plain"
shim "$S9" "$m_port" curl -s "$m_url/v1/messages" -d 'not json' > "$T/n3" 2>"$T/n3.err"
curl -s "$m_url/v1/messages" -d 'not json' > "$T/n3.plain"
check "unparseable body: identical output" eq "$(noid "$T/n3")" "$(noid "$T/n3.plain")"
check "unparseable body: one stderr line" eq "$(grep -c 'pass through' "$T/n3.err")" 1

harness_done
