#!/bin/bash
# bad.sh - the shim under the real curl tool against responses that are
# unusual or broken: truncated bodies, gzip with and without --compressed,
# huge and many headers, invalid UTF-8, absurd usage numbers, malformed SSE.
#
# Usage: preload/tests/bad.sh [BUILD_DIR]
#
# Each case runs the same curl command twice against shmlimit-mock (wire
# faults from its x-mock-* request headers, mock/README.md): once without
# the shim and once under it, with a fresh segment.  It checks that
#   - curl's output (body bytes) and exit code are identical: the shim
#     never changes what the application gets;
#   - the shim wrote at most one line to stderr (and exactly the one
#     expected: "usage could not be read" when it falls back);
#   - the segment's accounting is exact: the request admitted and settled
#     once, the tokens and the spend either the usage the server reported
#     or, when that cannot be believed, the estimate and max_tokens (the
#     worst case it was admitted for) -- never an absurd number.
# The server is started and stopped here (127.0.0.1, --max-seconds,
# --max-requests); segments have the pid in their name and are removed on
# exit.  No test waits on time.
# shellcheck disable=SC2016,SC2154
set -u

B=${1:-build}
SO=$B/libshmlimit-preload.so
SEGTOOL=$B/shmlimit-preload-seg
MOCK=$B/shmlimit-mock
HDRCLIENT=$B/shmlimit-preload-hdrclient
HERE=$(cd "$(dirname "$0")" && pwd)
CFG=$HERE/bad.json
seg_rm() { "$SEGTOOL" rm "$1"; }
. "$HERE/harness.sh"
harness_init preload-bad

"$MOCK" --port 0 --port-file "$T/port" --max-seconds 120 --max-requests 1000 2>"$T/mock.err" &
PIDS="$PIDS $!"
i=0
while [ ! -s "$T/port" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ -s "$T/port" ] || { echo "FATAL: mock did not start: $(cat "$T/mock.err")"; exit 1; }
PORT=$(cat "$T/port")
URL=http://127.0.0.1:$PORT/v1/messages

nseg=0
seg() { "$SEGTOOL" stats "$SEG" | awk -v k="$1" '$1 == k { print $2 }'; }

# The request: 16 characters of text, so the estimate (and the mock's
# count) is 4 input tokens; max_tokens 64; the mock generates 20.
TEXT='Just four and ok'
J='{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"'$TEXT'"}]}'
S='{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"'$TEXT'"}]}'
EST_IN=4 MAX_OUT=64
# What the segment admitted it at, and charges when no usage can be read: a
# fresh pool's estimate is scaled by the prior ratio 1.25 (preload/README.md,
# "the learned ratio"): ceil(4 x 1.25).
ADM_IN=5
# Prices of bad.json in nano-dollars a token: input 3000, output 15000.
spend_of() { echo $(($1 * 3000 + $2 * 15000)); }

# go NAME CMD...: the same command (writing the response to stdout) twice,
# plain and under the shim with a fresh segment ($SEG); compares exit codes
# and bytes.  With IDS set, the server's request ids are masked first.
go() {
	NAME=$1; shift
	"$@" > "$T/$NAME.plain" 2>/dev/null
	RC=$?
	nseg=$((nseg + 1))
	SEG="shl-preload-bad-$$-$nseg"
	"$SEGTOOL" create "$SEG" "$CFG" || { echo "FATAL: cannot create segment"; exit 1; }
	SEGS="$SEGS $SEG"
	SHMLIMIT_SEGMENT=$SEG SHMLIMIT_HOSTS=127.0.0.1:$PORT LD_PRELOAD=$SO \
		"$@" > "$T/$NAME.shim" 2>"$T/$NAME.err"
	check "$NAME: exit code as without the shim ($RC)" eq $? "$RC"
	if [ -z "${IDS:-}" ]; then
		check "$NAME: output byte-identical" cmp -s "$T/$NAME.plain" "$T/$NAME.shim"
	else
		# Error bodies and -i output carry the server's request id, new
		# on every request: compare all the rest.
		sed 's/req_mock[0-9a-f]*/req_mock/g' "$T/$NAME.plain" > "$T/$NAME.p"
		sed 's/req_mock[0-9a-f]*/req_mock/g' "$T/$NAME.shim" > "$T/$NAME.s"
		check "$NAME: output identical but for the request id" cmp -s "$T/$NAME.p" "$T/$NAME.s"
	fi
}
# run NAME CURL-ARGS...: go with the curl tool (body from -d / --data-binary).
run() { local n=$1; shift; go "$n" curl -s "$@" "$URL"; }

# settled IN OUT [WARN]: the segment charged IN input and OUT output tokens
# and their price, once; WARN 1: the shim said, in one line, that the usage
# could not be read (else it said nothing).
settled() {
	local warn=${3:-0}
	check "$NAME: admitted and settled once" eq \
		"$(seg sonnet.admitted)/$(seg sonnet.settled)/$(seg sonnet.cancelled)" "1/1/0"
	check "$NAME: tokens charged $1 in, $2 out" eq "$(seg sonnet.tokens_in)/$(seg sonnet.tokens_out)" "$1/$2"
	check "$NAME: spend = price of that" eq "$(seg sonnet.spend)/$(seg spend_month)" \
		"$(spend_of "$1" "$2")/$(spend_of "$1" "$2")"
	check "$NAME: at most one stderr line" le "$(lines "$T/$NAME.err")" 1
	if [ "$warn" = 1 ]; then
		check "$NAME: that line says the usage could not be read" grep -q \
			"usage could not be read" "$T/$NAME.err"
	else
		check "$NAME: nothing on stderr" eq "$(lines "$T/$NAME.err")" 0
	fi
}
# fallback: the usage could not be believed: the estimate and max_tokens.
fallback() { settled "$ADM_IN" "$MAX_OUT" 1; }

# The output tokens of the last usage-bearing SSE event that curl received
# complete (followed by its blank line) in FILE: what the shim must charge.
last_out() {
	awk 'BEGIN { RS = ""; out = 0 }
	     { ev[NR] = $0 }
	     END { n = NR; for (i = 1; i <= n; i++) {
		 if (match(ev[i], /"output_tokens":[0-9]+/))
			 out = substr(ev[i], RSTART + 16, RLENGTH - 16) } print out }' "$1"
}
complete_only() { # drop an unfinished last event (no blank line after it)
	local f=$1
	if [ "$(tail -c 2 "$f" | od -An -c | tr -d ' ')" = '\n\n' ]; then cat "$f"
	else awk 'BEGIN { RS = ""; ORS = "\n\n" } { e[NR] = $0 } END { for (i = 1; i < NR; i++) print e[i] }' "$f"; fi
}

b64() { printf '%b' "$1" | base64 -w0; }
sse_body() { # sse_body NAME BYTES: x-mock-body of a stream (printf %b escapes)
	run "$1" -H "x-mock-body: $(b64 "$2")" -H 'x-mock-content-type: text/event-stream' -d "$J"
}
MS='data: {"type":"message_start","message":{"id":"msg_x","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","usage":{"input_tokens":30,"output_tokens":1}}}'
MD='data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12}}'
PING='data: {"type":"ping"}'

echo "# truncated bodies (the connection closed mid-body)"
run truncate-json -H 'x-mock-fail: truncate' -d "$J"
check "truncate-json: curl says partial file (18)" eq "$RC" 18
fallback
run truncate-sse -H 'x-mock-fail: truncate' -d "$S"
complete_only "$T/truncate-sse.plain" > "$T/truncate-sse.done"
settled "$EST_IN" "$(last_out "$T/truncate-sse.done")"
run truncate-sse-7-byte-chunks -H 'x-mock-fail: truncate' -H 'x-mock-chunk-bytes: 7' -d "$S"
complete_only "$T/truncate-sse-7-byte-chunks.plain" > "$T/t7.done"
settled "$EST_IN" "$(last_out "$T/t7.done")"
run truncate-json-chunked -H 'x-mock-fail: truncate' -H 'x-mock-chunk-bytes: 5' -d "$J"
fallback

echo "# gzip-encoded bodies, with and without curl --compressed"
run gzip-json-compressed --compressed -H 'x-mock-encoding: gzip' -d "$J"
check "gzip-json-compressed: curl decoded it" grep -q '"usage"' "$T/gzip-json-compressed.shim"
settled "$EST_IN" 20
run gzip-json-raw -H 'x-mock-encoding: gzip' -d "$J"
check "gzip-json-raw: curl wrote the gzip bytes" eq "$(head -c 2 "$T/gzip-json-raw.shim" | od -An -tx1 | tr -d ' ')" 1f8b
fallback
run gzip-sse-compressed --compressed -H 'x-mock-encoding: gzip' -d "$S"
settled "$EST_IN" 20
run gzip-sse-raw -H 'x-mock-encoding: gzip' -d "$S"
fallback
run gzip-sse-chunked-compressed --compressed -H 'x-mock-encoding: gzip' -H 'x-mock-chunk-bytes: 3' -d "$S"
settled "$EST_IN" 20
run gzip-truncated-compressed --compressed -H 'x-mock-encoding: gzip' -H 'x-mock-fail: truncate' -d "$J"
fallback

echo "# huge headers, many headers"
run header-100k -H 'x-mock-pad-bytes: 100000' -d "$J"
check "header-100k: curl accepted it" eq "$RC" 0
settled "$EST_IN" 20
run header-100k-sse -H 'x-mock-pad-bytes: 100000' -d "$S"
settled "$EST_IN" 20
run header-300k -H 'x-mock-pad-bytes: 300000' -d "$J"
check "header-300k: curl refused it" le 1 "$RC"
fallback
run headers-10000 -H 'x-mock-pad-headers: 10000' -d "$J"
check "headers-10000: curl accepted them" eq "$RC" 0
settled "$EST_IN" 20
run headers-10000-sse-chunked -H 'x-mock-pad-headers: 10000' -H 'x-mock-chunk-bytes: 1' -d "$S"
settled "$EST_IN" 20
run headers-20000 -H 'x-mock-pad-headers: 20000' -d "$J"
check "headers-20000: curl refused them (over 300 KB)" le 1 "$RC"
fallback

echo "# invalid UTF-8 in headers and bodies"
run bad-utf8-json -H 'x-mock-bad-utf8: 1' -d "$J"
check "bad-utf8-json: the body has the bytes" grep -q $'\xed\xa0\x80' "$T/bad-utf8-json.shim"
settled "$EST_IN" 20
run bad-utf8-sse -H 'x-mock-bad-utf8: 1' -d "$S"
settled "$EST_IN" 20
IDS=1 run bad-utf8-sse-curl-i -i -H 'x-mock-bad-utf8: 1' -d "$S"
settled "$EST_IN" 20
# A request body with invalid UTF-8: the estimate counts what the mock counts.
printf '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"\xff\xfe \xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80 abc"}]}' > "$T/u8.json"
run bad-utf8-request --data-binary @"$T/u8.json"
srv_in=$(grep -o '"input_tokens":[0-9]*' "$T/bad-utf8-request.plain" | head -n 1 | cut -d: -f2)
settled "$srv_in" 20

echo "# absurd usage numbers: never charged, the estimate and max_tokens instead"
for u in 'negative|{"input_tokens":-5,"output_tokens":-1}' \
	 '1e30|{"input_tokens":12,"output_tokens":1e30}' \
	 'huge-integers|{"input_tokens":18446744073709551616,"output_tokens":99999999999999999999}' \
	 '2^32|{"input_tokens":4,"output_tokens":4294967296}' \
	 'strings|{"input_tokens":"12","output_tokens":"20"}' \
	 'fraction|{"input_tokens":4,"output_tokens":12.5}' \
	 'cache-string|{"input_tokens":4,"output_tokens":7,"cache_creation":{"ephemeral_1h_input_tokens":"x"}}' \
	 'not-an-object|"lots"' \
	 'invalid-json|{"output_tokens":'; do
	run "usage-${u%%|*}" -H "x-mock-usage-raw: ${u#*|}" -d "$J"
	fallback
	run "usage-${u%%|*}-sse" -H "x-mock-usage-raw: ${u#*|}" -d "$S"
	fallback
done
run usage-nulls -H 'x-mock-usage-raw: {"input_tokens":9,"output_tokens":7,"cache_read_input_tokens":null,"cache_creation":null}' -d "$J"
settled 9 7
run usage-max -H 'x-mock-usage-raw: {"input_tokens":10000000,"output_tokens":0}' -d "$J"
settled 10000000 0
run usage-over-max -H 'x-mock-usage-raw: {"input_tokens":10000001,"output_tokens":0}' -d "$J"
fallback

echo "# malformed and unusual SSE streams"
sse_body sse-crlf "event: message_start\r\n$MS\r\n\r\nevent: ping\r\n$PING\r\n\r\n$MD\r\n\r\n"
settled 30 12
sse_body sse-cr-only "event: message_start\r$MS\r\r$PING\r\r$MD\r\r"
settled 30 12
sse_body sse-bom "\xef\xbb\xbf$MS\n\n$MD\n\n"
settled 30 12
sse_body sse-data-over-two-lines "$MS\n\ndata: {\"type\":\"message_delta\",\ndata: \"usage\":{\"output_tokens\":12}}\n\n"
settled 30 12
sse_body sse-no-space-comments-fields ": keep-alive\nid: 1\nretry: 3000\nevent: message_start\ndata:${MS#data: }\n\nevent: whatever\ndata: {\"type\":\"content_block_delta\"}\n\n$MD\n\n"
settled 30 12
sse_body sse-last-event-without-blank-line "$MS\n\n$MD\n"
settled 30 12
sse_body sse-error-event "$MS\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
settled 30 1
sse_body sse-event-not-json "$MS\n\n$PING\n\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":12}\n\n$MD\n\n"
fallback
sse_body sse-usage-string "$MS\n\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":\"12\"}}\n\n"
fallback
sse_body sse-no-usage "$PING\n\n$PING\n\ndata: {\"type\":\"message_stop\"}\n\n"
fallback
sse_body sse-binary "\x00\x01\x02data\xff\xfe\n\n\x80\r\n"
fallback
# A stream labelled application/json (the shim sniffs it), 3 bytes a chunk,
# and 1 byte a chunk with CRLF line ends.
run sse-sniffed-3-byte-chunks -H "x-mock-body: $(b64 "event: message_start\n$MS\n\n$MD\n\n")" -H 'x-mock-chunk-bytes: 3' -d "$J"
settled 30 12
run sse-crlf-1-byte-chunks -H "x-mock-body: $(b64 "$MS\r\n\r\n$MD\r\n\r\n")" -H 'x-mock-content-type: text/event-stream' -H 'x-mock-chunk-bytes: 1' -d "$J"
settled 30 12

echo "# CURLOPT_HEADER: the header blocks arrive in the body"
printf '%s' "$J" > "$T/j.json"; printf '%s' "$S" > "$T/s.json"
IDS=1 go curlopt-header-json "$HDRCLIENT" "$URL" "$T/j.json"
check "curlopt-header-json: the headers are in the output" grep -q '^HTTP/1.1 200' "$T/curlopt-header-json.shim"
settled "$EST_IN" 20
IDS=1 go curlopt-header-sse-100-continue "$HDRCLIENT" "$URL" "$T/s.json" 'Expect: 100-continue'
check "curlopt-header-sse-100-continue: two header blocks" eq \
	"$(grep -c '^HTTP/1.1 ' "$T/curlopt-header-sse-100-continue.shim")" 2
settled "$EST_IN" 20
IDS=1 go curlopt-header-body-starts-with-http "$HDRCLIENT" "$URL" "$T/j.json" \
	"x-mock-body: $(b64 "HTTP/1.1 200 OK, said the stream\n$MS\n\n$MD\n\n")" 'x-mock-content-type: text/event-stream'
settled 30 12
IDS=1 go curlopt-header-sse-chunked-1 "$HDRCLIENT" "$URL" "$T/s.json" 'x-mock-chunk-bytes: 1'
settled "$EST_IN" 20
IDS=1 go curlopt-header-truncated "$HDRCLIENT" "$URL" "$T/j.json" 'x-mock-fail: truncate'
fallback

echo "# a stream's final message_delta has the cache-write total only: the 1 h part keeps its price"
run sse-cache-write-1h -H 'x-mock-usage: 10,5,0,40,0' -d "$S"
check "sse-cache-write-1h: 10 in, 5 out, 40 written" eq \
	"$(seg sonnet.tokens_in)/$(seg sonnet.tokens_out)/$(seg sonnet.cache_write)" "10/5/40"
# 10 x 3000 + 5 x 15000 + 40 x 6000 (1 h writes; 5 min ones are 3750)
check "sse-cache-write-1h: spend at the 1 h write price" eq "$(seg sonnet.spend)" 345000

echo "# an absurd retry-after holds the pool for at most an hour"
IDS=1 run retry-after-a-day -H 'x-mock-fail: 429' -H 'x-mock-retry-after: 86400' -d "$J"
h=$(seg sonnet.hold_ns)
check "retry-after-a-day: held, at most 3600 s ($h ns)" le "$h" 3600000000000
check "retry-after-a-day: held more than 3500 s" le 3500000000000 "$h"
check "retry-after-a-day: settled once, nothing charged" eq \
	"$(seg sonnet.settled)/$(seg sonnet.tokens_in)/$(seg sonnet.spend)" "1/0/0"

echo "# an incompatible or corrupt segment: passthrough, byte-identical, one stderr line"
# A file under the segment name the shim is told to use (/dev/shm/NAME):
# junk, empty, truncated, another layout version.  The shim must not attach
# it, say so once, and leave every request exactly as without it.
BADSEG="shl-preload-bad-$$-corrupt"
SEGS="$SEGS $BADSEG"
SHMF=/dev/shm/$BADSEG
# corrupt NAME BODY: the same curl request plain and under the shim with
# SHMLIMIT_SEGMENT=$BADSEG, whose file has just been written.
corrupt() {
	local n=$1 b=$2
	curl -s "$URL" -d "$b" > "$T/$n.plain" 2>/dev/null
	local rc=$?
	SHMLIMIT_SEGMENT=$BADSEG SHMLIMIT_HOSTS=127.0.0.1:$PORT LD_PRELOAD=$SO \
		curl -s "$URL" -d "$b" > "$T/$n.shim" 2>"$T/$n.err"
	check "$n: exit code as without the shim ($rc)" eq $? "$rc"
	check "$n: output byte-identical" cmp -s "$T/$n.plain" "$T/$n.shim"
	check "$n: exactly one stderr line" eq "$(lines "$T/$n.err")" 1
	check "$n: ... the shim's, naming the segment" grep -q \
		"^shmlimit-preload: segment \"$BADSEG\": .*pass through ungoverned" "$T/$n.err"
}
yes 'not a libshmlimit segment' | head -c 65536 > "$SHMF"
corrupt segment-junk "$J"
corrupt segment-junk-sse "$S"
: > "$SHMF"
corrupt segment-empty "$J"
"$SEGTOOL" create "$BADSEG" "$CFG" || { echo "FATAL: cannot create segment"; exit 1; }
size=$(stat -c %s "$SHMF")
check "a real segment attaches (the cases below differ from it only as said)" eq \
	"$("$SEGTOOL" stats "$BADSEG" | awk '$1 == "sonnet.admitted" { print $2 }')" 0
truncate -s $((size / 2)) "$SHMF"
corrupt segment-truncated "$J"
truncate -s 40 "$SHMF" # shorter than a header
corrupt segment-truncated-header "$J"
"$SEGTOOL" create "$BADSEG" "$CFG" || { echo "FATAL: cannot create segment"; exit 1; }
printf '\377\377' | dd of="$SHMF" bs=1 seek=8 count=2 conv=notrunc 2>/dev/null # header.version
corrupt segment-other-version "$J"
check "segment-other-version: the line says which version" grep -q "version" "$T/segment-other-version.err"

harness_done
