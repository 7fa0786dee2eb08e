#!/bin/bash
# test-mock.sh - black-box tests of shmlimit-mock through the real curl CLI.
#
# Usage: mock/test-mock.sh [path/to/shmlimit-mock]
#
# Every server is started here on 127.0.0.1 with --port 0, bounded by
# --max-seconds, and stopped here (trap on exit).  No sleeping to pass: the
# only waits are for the port file to appear and for a process to exit, both
# bounded.  Needs bash, curl, grep, sed, awk (no jq).
# Checks are written as `check DESC eval '...'` (expanded when run), and
# start_mock sets NAME_pid / NAME_url through eval:
# shellcheck disable=SC2016,SC2034,SC2154
set -u

MOCK=${1:-build/shmlimit-mock}
T=$(mktemp -d "${TMPDIR:-/tmp}/shl-mock-test.XXXXXX") || exit 1
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
# check DESCRIPTION COMMAND...: pass iff the command succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
eq() { [ "$1" = "$2" ] || { echo "       expected '$2', got '$1'" >&2; return 1; }; }
has() { grep -q -- "$1" "$2" || { echo "       '$1' not in $2: $(head -c 300 "$2")" >&2; return 1; }; }
hasnt() { ! grep -q -- "$1" "$2"; }

# start_mock NAME ARGS...: start a server, set NAME_pid and NAME_url.
start_mock() {
	local name=$1; shift
	"$MOCK" --port 0 --port-file "$T/$name.port" --max-seconds 90 "$@" \
		2>"$T/$name.err" &
	local pid=$!
	PIDS="$PIDS $pid"
	local i=0
	while [ ! -s "$T/$name.port" ] && [ $i -lt 200 ] && kill -0 "$pid" 2>/dev/null; do
		sleep 0.05; i=$((i + 1))
	done
	if [ ! -s "$T/$name.port" ]; then
		echo "FATAL: $name did not start: $(cat "$T/$name.err")"; exit 1
	fi
	eval "${name}_pid=$pid"
	eval "${name}_url=http://127.0.0.1:$(cat "$T/$name.port")"
}

# wait_exit PID SECONDS: wait (bounded) for a server to end; sets RC to its
# exit status, or to "still-running".  (Not in $(...): a subshell cannot
# wait for its parent's children.)
wait_exit() {
	local i=0
	while kill -0 "$1" 2>/dev/null && [ $i -lt $(($2 * 20)) ]; do
		sleep 0.05; i=$((i + 1))
	done
	if kill -0 "$1" 2>/dev/null; then RC=still-running; return; fi
	wait "$1"; RC=$?
}

# post URL ARGS...: POST, body in $T/body, headers in $T/hdr; prints status.
post() {
	local url=$1; shift
	curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H 'content-type: application/json' \
		"$url" "$@"
}
hdr() { grep -i "^$1:" "$T/hdr" | head -n 1 | sed 's/^[^:]*: *//' | tr -d '\r'; }
# json_num KEY FILE: the first number value of "KEY" in a compact JSON file.
json_num() { grep -o "\"$1\":[0-9]*" "$2" | head -n 1 | cut -d: -f2; }
last_num() { grep -o "\"$1\":[0-9]*" "$2" | tail -n 1 | cut -d: -f2; }
toks() { local s="" i; for ((i = 0; i < $1; i++)); do s="$s${s:+ }tok"; done; printf '%s' "$s"; }
# 25 characters; the mock counts 9 tokens: Hello(2) world(2) ,(1) how(1) are(1) you(1) ?(1)
MSG='"messages":[{"role":"user","content":"Hello world, how are you?"}]'
MSG_TOK=9
body() { printf '{"model":"%s","max_tokens":%s,%s%s}' "$1" "$2" "$MSG" "${3:-}"; }

echo "# shmlimit-mock tests ($MOCK)"

# ------------------------------------------------------------------
# Options
# ------------------------------------------------------------------
"$MOCK" --port nope >/dev/null 2>&1; check "bad --port value exits 2" eq $? 2
"$MOCK" --fail-every 3:teapot >/dev/null 2>&1; check "bad --fail-every kind exits 2" eq $? 2
echo '{"pools":[{"name":"p","rpm":-1}]}' > "$T/badcfg.json"
"$MOCK" --config "$T/badcfg.json" >/dev/null 2>"$T/badcfg.err"
check "invalid --config exits 2" eq $? 2
check "invalid --config names the field" has 'rpm' "$T/badcfg.err"
"$MOCK" --help | grep -q -- --max-requests; check "--help lists the options" eq $? 0
# Every option and every x-mock-* header is documented in mock/README.md.
DIR=$(cd "$(dirname "$0")" && pwd)
undoc=""
for o in $("$MOCK" --help | grep -o -- '--[a-z-]*' | sort -u) \
	$(cat "$DIR"/*.c | grep -o '"x-mock-[a-z0-9-]*"' | tr -d '"' | sort -u); do
	grep -q -- "\`$o" "$DIR/README.md" || undoc="$undoc $o"
done
check "every option and header documented in README.md" eq "$undoc" ""

# ------------------------------------------------------------------
# Plain server: JSON, SSE, usage, cache, faults
# ------------------------------------------------------------------
start_mock plain
U=$plain_url/v1/messages

st=$(post "$U" -d "$(body claude-sonnet-4-5 100)")
check "JSON: status 200" eq "$st" 200
check "JSON: content-type" eq "$(hdr content-type)" "application/json"
check "JSON: request-id header" eval '[[ "$(hdr request-id)" == req_* ]]'
check "JSON: id msg_..." has '"id":"msg_' "$T/body"
check "JSON: type message, role assistant" has '"type":"message","role":"assistant"' "$T/body"
check "JSON: model echoed" has '"model":"claude-sonnet-4-5"' "$T/body"
check "JSON: input_tokens = the mock's count (9)" eq "$(json_num input_tokens "$T/body")" $MSG_TOK
check "JSON: default 20 output tokens" eq "$(json_num output_tokens "$T/body")" 20
check "JSON: text is 20 words" has "\"text\":\"$(toks 20)\"" "$T/body"
check "JSON: stop_reason end_turn" has '"stop_reason":"end_turn"' "$T/body"
check "JSON: cache fields" has '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0}' "$T/body"
check "JSON: service_tier" has '"service_tier":"standard"' "$T/body"
check "no --config: no rate-limit headers" eval '! grep -qi "^anthropic-ratelimit" "$T/hdr"'
cp "$T/body" "$T/first.json"
post "$U" -d "$(body claude-sonnet-4-5 100)" >/dev/null
check "same request, same body (byte-identical)" cmp -s "$T/body" "$T/first.json"
post "$U" -H 'x-mock-remaining: ,1234,7' -d "$(body claude-sonnet-4-5 100)" >/dev/null
check "no --config, x-mock-remaining: only the remaining headers asked for" eq \
	"$(grep -i '^anthropic-ratelimit' "$T/hdr" | tr -d '\r' | tr '\n' ' ')" \
	"anthropic-ratelimit-input-tokens-remaining: 1234 anthropic-ratelimit-output-tokens-remaining: 7 "
st=$(post "$U" -H 'x-mock-remaining: 1,2' -d "$(body m 10)"); check "x-mock-remaining with two fields: 400" eq "$st" 400
st=$(post "$U" -H 'x-mock-remaining: a,,' -d "$(body m 10)"); check "x-mock-remaining not a number: 400" eq "$st" 400

post "$U" -H 'x-mock-output-tokens: 5' -d "$(body m 100)" >/dev/null
check "x-mock-output-tokens: 5" eq "$(json_num output_tokens "$T/body")" 5
post "$U" -H 'x-mock-output-tokens: 50' -d "$(body m 3)" >/dev/null
check "output capped by max_tokens" eq "$(json_num output_tokens "$T/body")" 3
check "capped: stop_reason max_tokens" has '"stop_reason":"max_tokens"' "$T/body"
post "$U" -H 'x-mock-usage: 11,4,3,2,1' -d "$(body m 100)" >/dev/null
check "x-mock-usage forces usage" has '"usage":{"input_tokens":11,"cache_creation_input_tokens":5,"cache_read_input_tokens":1,"cache_creation":{"ephemeral_5m_input_tokens":3,"ephemeral_1h_input_tokens":2},"output_tokens":4' "$T/body"
st=$(post "$U" -H 'x-mock-usage: 1,2,3' -d "$(body m 100)")
check "malformed x-mock-usage: 400" eq "$st" 400

# system string + each tool's JSON (printed compact, as cJSON does) count
# too, and a tools array adds the 346-token tool-use system prompt.
# TOOL: 38 tokens (16 words of 1 or 2 tokens, 22 punctuation marks);
# "Be brief.": 4.
TOOL='{"name":"get","description":"d","input_schema":{"type":"object"}}'
post "$U" -d "$(body m 100 ",\"system\":\"Be brief.\",\"tools\":[$TOOL,$TOOL]")" >/dev/null
check "system + tools counted: 346 + 2 x 38 + 4 + 9" eq "$(json_num input_tokens "$T/body")" 435
post "$U" -d '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"h\u00e9llo w\u00f6rld"}]}' >/dev/null
check "accented words weigh more: h\u00e9llo w\u00f6rld = 2 + 2" eq "$(json_num input_tokens "$T/body")" 4
post "$U" -d '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]}]}' >/dev/null
check "an image of unreadable size counts 1600 tokens" eq "$(json_num input_tokens "$T/body")" 1600
post "$U" -d '{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get","input":{"q":"x"}}]}]}' >/dev/null
check "tool_use: name + input JSON (1 + 9)" eq "$(json_num input_tokens "$T/body")" 10

# Prompt cache: first sight writes (1h here), the same text again reads.
SYS='cached system prompt number one' S_TOK=9   # cached(2) system(2) prompt(2) number(2) one(1)
CB=",\"system\":[{\"type\":\"text\",\"text\":\"$SYS\",\"cache_control\":{\"type\":\"ephemeral\",\"ttl\":\"1h\"}}]"
post "$U" -d "$(body m 100 "$CB")" >/dev/null
check "cache: first sight is a 1h write" has "\"cache_creation_input_tokens\":$S_TOK,\"cache_read_input_tokens\":0,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":$S_TOK}" "$T/body"
check "cache: uncached input is the rest" eq "$(json_num input_tokens "$T/body")" \
	$MSG_TOK
post "$U" -d "$(body m 100 "$CB")" >/dev/null
check "cache: second sight is a read" has "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":$S_TOK" "$T/body"
# A longer prefix: the cached part is read, the rest up to the new breakpoint
# written ("more text here": 3 tokens).
MORE='"messages":[{"role":"user","content":[{"type":"text","text":"more text here","cache_control":{"type":"ephemeral"}}]}]'
post "$U" -d "{\"model\":\"m\",\"max_tokens\":9$CB,$MORE}" >/dev/null
check "cache: prefix read + 5m write of the rest" has "\"usage\":{\"input_tokens\":0,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":$S_TOK,\"cache_creation\":{\"ephemeral_5m_input_tokens\":3,\"ephemeral_1h_input_tokens\":0}" "$T/body"
CB5=",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"$SYS-5m\",\"cache_control\":{\"type\":\"ephemeral\"}}]}]"
post "$U" -d "{\"model\":\"m\",\"max_tokens\":9$CB5}" >/dev/null
check "cache: block in messages, 5m write (SYS + - 5 m)" has "\"ephemeral_5m_input_tokens\":$((S_TOK + 3))" "$T/body"

st=$(post "$U/count_tokens" -d "{\"model\":\"m\",$MSG}")
check "count_tokens: 200" eq "$st" 200
check "count_tokens: body" eq "$(cat "$T/body")" "{\"input_tokens\":$MSG_TOK}"

# Message Batches: accepted, never run
BREQ="{\"custom_id\":\"a\",\"params\":$(body claude-haiku-4-5 10)}"
st=$(post "$U/batches" -d "{\"requests\":[$BREQ,${BREQ/\"a\"/\"b\"}]}")
check "batches: 200" eq "$st" 200
check "batches: a message_batch in progress" has '"type":"message_batch","processing_status":"in_progress"' "$T/body"
check "batches: id msgbatch_..." has '"id":"msgbatch_' "$T/body"
check "batches: request_counts" has '"request_counts":{"processing":2,"succeeded":0,"errored":0,"canceled":0,"expired":0}' "$T/body"
check "batches: created_at and expires_at" eval 'grep -Eq "\"created_at\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\.[0-9]{6}Z\",\"expires_at\":\"[0-9-]{10}T" "$T/body"'
check "batches: results_url null" has '"results_url":null' "$T/body"
st=$(post "$U/batches" -d '{"requests":[]}'); check "batches: empty requests: 400" eq "$st" 400
st=$(post "$U/batches" -d '{"requests":[{"custom_id":"a","params":{}}]}'); check "batches: params without a model: 400" eq "$st" 400
st=$(post "$U/batches" -H 'x-mock-fail: 529' -d "{\"requests\":[$BREQ]}"); check "batches: x-mock-fail 529" eq "$st" 529

# Errors of the request itself.
st=$(post "$U" -d '{"model":"m",'); check "malformed JSON: 400" eq "$st" 400
check "malformed JSON: invalid_request_error" has '"type":"invalid_request_error"' "$T/body"
st=$(post "$U" -d "{\"model\":\"m\",$MSG}"); check "missing max_tokens: 400" eq "$st" 400
st=$(post "$plain_url/v1/nothing" -d '{}'); check "unknown path: 404" eq "$st" 404
st=$(post "$U" -H 'x-mock-fail: teapot' -d "$(body m 10)"); check "unknown x-mock-fail: 400" eq "$st" 400

# SSE
curl -s -N -D "$T/hdr" -o "$T/sse" -H 'x-mock-output-tokens: 9' "$U" \
	-d "$(body claude-haiku-4-5 100 ',"stream":true')"
check "SSE: content-type" eq "$(hdr content-type)" "text/event-stream"
grep '^event:' "$T/sse" | sed 's/^event: //' > "$T/events"
check "SSE: starts with message_start" eq "$(head -n 1 "$T/events")" message_start
check "SSE: ends with message_stop" eq "$(tail -n 1 "$T/events")" message_stop
check "SSE: event order" eq "$(uniq "$T/events" | tr '\n' ' ')" \
	"message_start content_block_start ping content_block_delta message_delta ping content_block_delta content_block_stop message_delta message_stop "
check "SSE: at least two message_delta" eval '[ "$(grep -c "^message_delta" "$T/events")" -ge 2 ]'
check "SSE: message_start usage" has '"usage":{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1' "$T/sse"
check "SSE: final cumulative output_tokens" eq "$(last_num output_tokens "$T/sse")" 9
inter=$(grep '"type":"message_delta"' "$T/sse" | head -n 1 | grep -o '"output_tokens":[0-9]*' | cut -d: -f2)
check "SSE: intermediate output_tokens between 1 and 8" eval '[ "$inter" -ge 1 ] && [ "$inter" -lt 9 ]'
check "SSE: deltas concatenate to the text" eq \
	"$(grep -o '"text_delta","text":"[^"]*"' "$T/sse" | sed 's/.*"text":"//; s/"$//' | tr -d '\n')" "$(toks 9)"
check "SSE: every data line is one line of JSON" eval '! grep -v -e "^event: " -e "^data: {.*}$" -e "^$" "$T/sse" | grep -q .'

# Scripted faults
st=$(post "$U" -H 'x-mock-fail: 429' -d "$(body m 10)")
check "fault 429: status" eq "$st" 429
check "fault 429: default retry-after 2" eq "$(hdr retry-after)" 2
check "fault 429: rate_limit_error" has '"type":"rate_limit_error"' "$T/body"
check "fault 429: request_id in body" has '"request_id":"req_' "$T/body"
post "$U" -H 'x-mock-fail: 429' -H 'x-mock-retry-after: 7' -d "$(body m 10)" >/dev/null
check "fault 429: x-mock-retry-after 7" eq "$(hdr retry-after)" 7
post "$U" -H 'x-mock-fail: 429' -H 'x-mock-retry-after-ms: 1500' -d "$(body m 10)" >/dev/null
check "fault 429: x-mock-retry-after-ms 1500" eq "$(hdr retry-after-ms)/$(hdr retry-after)" 1500/2
check "fault 429: no retry-after-ms unless asked" eq "$(post "$U" -H 'x-mock-fail: 429' -d "$(body m 10)")/$(hdr retry-after-ms)" 429/
st=$(post "$U" -H 'x-mock-fail: 429' -H 'x-mock-retry-after-ms: 1.5' -d "$(body m 10)"); check "fault 429: bad x-mock-retry-after-ms: 400" eq "$st" 400
st=$(post "$U" -H 'x-mock-fail: spend-cap' -d "$(body m 10)")
check "fault spend-cap: 429" eq "$st" 429
check "fault spend-cap: error_code" has '"details":{"error_code":"enforced_spend_limit_reached"}' "$T/body"
check "fault spend-cap: no retry-after" eq "$(hdr retry-after)" ""
st=$(post "$U" -H 'x-mock-fail: 529' -d "$(body m 10)")
check "fault 529: status" eq "$st" 529
check "fault 529: overloaded_error" has '"type":"overloaded_error"' "$T/body"
st=$(post "$U" -H 'x-mock-fail: 500' -d "$(body m 10)")
check "fault 500: status" eq "$st" 500
check "fault 500: api_error" has '"type":"api_error"' "$T/body"
st=$(post "$U" -N -H 'x-mock-fail: 529-midstream' -d "$(body m 10 ',"stream":true')")
check "fault 529-midstream: status 200" eq "$st" 200
grep '^event:' "$T/body" | sed 's/^event: //' > "$T/events"
check "fault 529-midstream: message_start then error" eq "$(tr '\n' ' ' < "$T/events")" "message_start error "
check "fault 529-midstream: overloaded_error" has '"type":"overloaded_error"' "$T/body"
post "$U" -H 'x-mock-fail: truncate' -d "$(body m 10)" >/dev/null; rc=$?
check "fault truncate: curl reports a partial transfer (18)" eq "$rc" 18
len=$(hdr content-length)
check "fault truncate: about half the body" eval '[ "$(wc -c < "$T/body")" -eq $((len / 2)) ]'
post "$U" -N -H 'x-mock-fail: truncate' -d "$(body m 10 ',"stream":true')" >/dev/null; rc=$?
check "fault truncate (SSE): curl fails" eval '[ "$rc" -ne 0 ]'
check "fault truncate (SSE): no message_stop" hasnt message_stop "$T/body"

# HTTP plumbing
curl -sv -o /dev/null -o /dev/null "$U" "$U" -d "$(body m 10)" 2>"$T/ka"
check "keep-alive: curl reuses the connection" grep -qi 're-using existing connection' "$T/ka"
head -c 1500000 /dev/zero | tr '\0' 'a' > "$T/big.txt"
printf '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"%s"}]}' \
	"$(cat "$T/big.txt")" > "$T/big.json"
curl -sv -o "$T/body" -w '%{http_code}' "$U" --data-binary @"$T/big.json" 2>"$T/big.err" > "$T/big.st"
check "1.5 MB body: curl sent Expect: 100-continue" grep -qi '^> Expect: 100-continue' "$T/big.err"
check "1.5 MB body: 200" eq "$(cat "$T/big.st")" 200
check "1.5 MB body: input_tokens" eq "$(json_num input_tokens "$T/body")" 375000
st=$(post "$U" -H 'Transfer-Encoding: chunked' --data-binary @"$T/big.json")
check "chunked request body: 200" eq "$st" 200
check "chunked request body: input_tokens" eq "$(json_num input_tokens "$T/body")" 375000
head -c $((9 * 1024 * 1024)) /dev/zero | tr '\0' 'a' > "$T/huge.json"
st=$(post "$U" --data-binary @"$T/huge.json")
check "9 MiB body: 413" eq "$st" 413
st=$(curl -s -o "$T/body" -w '%{http_code}' -X 'BAD METHOD' "$U" 2>/dev/null)
check "malformed request line: 400" eq "$st" 400

# Many at once: curl --parallel, 40 transfers, 20 at a time.
args=()
for i in $(seq 1 40); do args+=(-o "$T/par.$i" "$U"); done
curl -s --no-progress-meter --parallel --parallel-max 20 \
	-H 'content-type: application/json' -d "$(body par 10)" "${args[@]}" 2>/dev/null
n=$(cat "$T"/par.* | grep -o '"output_tokens":10' | wc -l)
check "parallel: 40 of 40 answered" eq "$n" 40

curl -s -o "$T/stats" "$plain_url/mock/stats"
check "stats: by_model counts the parallel requests" has '"par":{"requests":40,"ok":40,' "$T/stats"
check "stats: scripted_429 = 5" eq "$(json_num scripted_429 "$T/stats")" 5
check "stats: by_status 529" has '"529":2' "$T/stats"
check "stats: batches accepted and their requests" has '"batches":1,"batch_requests":2,' "$T/stats"
check "stats: rate_limited 0 without limits" eq "$(json_num rate_limited "$T/stats")" 0
# usage totals are the sum of the successes: check output_tokens of "par"
check "stats: by_model output tokens" has '"par":{"requests":40,"ok":40,"rate_limited":0,"input_tokens":360,"output_tokens":400,' "$T/stats"

st=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$plain_url/mock/shutdown")
check "shutdown: 200" eq "$st" 200
wait_exit "$plain_pid" 15; check "shutdown: exits 0" eq "$RC" 0

# ------------------------------------------------------------------
# Wire faults: gzip, chunk sizes, huge headers, bad UTF-8, raw usage and bodies
# ------------------------------------------------------------------
start_mock wire
U=$wire_url/v1/messages
B=$(body m 10) BS=$(body m 10 ',"stream":true')
post "$U" -d "$B" >/dev/null; cp "$T/body" "$T/w.plain"
post "$U" -d "$BS" >/dev/null; cp "$T/body" "$T/ws.plain"
post "$U" -H 'x-mock-encoding: gzip' -d "$B" >/dev/null
check "gzip: content-encoding" eq "$(hdr content-encoding)" gzip
check "gzip: the bytes are gzip, not the text" eval '[ "$(head -c 2 "$T/body" | od -An -tx1 | tr -d " ")" = 1f8b ] && ! grep -q usage "$T/body"'
post "$U" --compressed -H 'x-mock-encoding: gzip' -d "$B" >/dev/null
check "gzip: curl --compressed decodes it to the plain body" cmp -s "$T/body" "$T/w.plain"
post "$U" --compressed -H 'x-mock-encoding: gzip' -d "$BS" >/dev/null
check "gzip (SSE): decodes to the plain stream" cmp -s "$T/body" "$T/ws.plain"
post "$U" -H 'x-mock-chunk-bytes: 3' -d "$BS" >/dev/null
check "chunk-bytes: chunked" eq "$(hdr transfer-encoding)" chunked
check "chunk-bytes (SSE): the same stream" cmp -s "$T/body" "$T/ws.plain"
post "$U" -H 'x-mock-chunk-bytes: 5' -d "$B" >/dev/null
check "chunk-bytes (JSON): the same body" cmp -s "$T/body" "$T/w.plain"
post "$U" -H 'x-mock-chunk-bytes: 4' -H 'x-mock-fail: truncate' -d "$B" >/dev/null; rc=$?
check "chunk-bytes + truncate: curl reports a partial transfer" eval '[ "$rc" -ne 0 ] && [ -s "$T/body" ]'
post "$U" -H 'x-mock-pad-bytes: 70000' -H 'x-mock-pad-headers: 300' -d "$B" >/dev/null
check "pad-bytes: a 70000-byte header value" eq "$(hdr x-mock-pad | tr -d '\n' | wc -c)" 70000
check "pad-headers: 300 headers" eq "$(grep -c '^x-mock-pad-[0-9]*:' "$T/hdr")" 300
check "pad: the body as without" cmp -s "$T/body" "$T/w.plain"
post "$U" -H 'x-mock-bad-utf8: 1' -d "$B" >/dev/null
check "bad-utf8: a header value that is not UTF-8" grep -qa $'^x-mock-bad-utf8: \xff\xfe' "$T/hdr"
check "bad-utf8: a header name that is not UTF-8" grep -qa $'^x-mock-\xe9t\xe9' "$T/hdr"
check "bad-utf8: in the text, usage unchanged" eval 'grep -qa $'"'"'"text":"tok\xff\xfe'"'"' "$T/body" && [ "$(json_num output_tokens "$T/body")" = 10 ]'
post "$U" -H 'x-mock-usage-raw: {"output_tokens":-5,"input_tokens":1e30}' -d "$B" >/dev/null
check "usage-raw: verbatim in the JSON reply" has '"usage":{"output_tokens":-5,"input_tokens":1e30}}' "$T/body"
post "$U" -H 'x-mock-usage-raw: "lots"' -d "$BS" >/dev/null
check "usage-raw: in message_start and every message_delta" eq "$(grep -c '"usage":"lots"' "$T/body")" 3
post "$U" -H "x-mock-body: $(printf 'data: x\r\r\xff' | base64 -w0)" -H 'x-mock-content-type: text/event-stream' -d "$B" >/dev/null
check "body: exactly the bytes given" eq "$(od -An -tx1 "$T/body" | tr -d ' \n')" 646174613a20780d0dff
check "body: the content-type given" eq "$(hdr content-type)" text/event-stream
for h in 'x-mock-encoding: br' 'x-mock-chunk-bytes: 0' 'x-mock-pad-bytes: x' 'x-mock-pad-headers: 100001' \
	 'x-mock-bad-utf8: yes' 'x-mock-body: !!!'; do
	st=$(post "$U" -H "$h" -d "$B")
	check "malformed ${h%%:*}: 400" eq "$st" 400
done
curl -s -o "$T/stats" "$wire_url/mock/stats"
# 19 requests: 13 answered 200, of which a truncate, two usage-raw and a body
check "stats: usage-raw and body replies not in the usage totals" has '"m":{"requests":19,"ok":9,' "$T/stats"
curl -s -o /dev/null -X POST "$wire_url/mock/shutdown"
wait_exit "$wire_pid" 15; check "wire: exits 0" eq "$RC" 0

# ------------------------------------------------------------------
# Server-side limits from --config
# ------------------------------------------------------------------
cat > "$T/cfg.json" <<'EOF'
{"spend_cap_usd": 10,
 "pools": [
  {"name": "slow", "rpm": 6, "itpm": 600000, "otpm": 600000},
  {"name": "itok", "rpm": 6000, "itpm": 600, "otpm": 600000, "burst": {"itpm": 100}},
  {"name": "otok", "rpm": 6000, "itpm": 600000, "otpm": 60, "burst": {"otpm": 10}},
  {"name": "wide", "rpm": 6000},
  {"name": "hdr", "rpm": 6000, "itpm": 600000, "otpm": 600000},
  {"name": "res", "rpm": 6000, "itpm": 600000, "otpm": 60, "otpm_mode": "reserve",
   "burst": {"otpm": 100}},
  {"name": "crc", "rpm": 6000, "itpm": 600, "otpm": 600000, "cache_reads_count": true,
   "burst": {"itpm": 100}}
 ],
 "models": [
  {"match": "slow-*", "pool": "slow"},
  {"match": "lp*", "pool": "slow"},
  {"match": "lp-long*", "pool": "itok"},
  {"match": "exact", "pool": "itok"},
  {"match": "exact*", "pool": "wide"},
  {"match": "hdr", "pool": "hdr"},
  {"match": "itok", "pool": "itok"},
  {"match": "otok", "pool": "otok"},
  {"match": "res", "pool": "res"},
  {"match": "crc", "pool": "crc"}
 ]}
EOF
start_mock lim --config "$T/cfg.json" --latency-ms 1 --stream-chunk-delay-ms 1
U=$lim_url/v1/messages

st=$(post "$U" -d "$(body nomatch 10)")
check "config: unknown model 404" eq "$st" 404
check "config: not_found_error" has '"type":"not_found_error"' "$T/body"

post "$U" -H 'x-mock-usage: 1,1,0,0,0' -d "$(body lp-long-x 10)" >/dev/null
check "longest prefix wins" eq "$(hdr anthropic-ratelimit-input-tokens-limit)" 600
post "$U" -H 'x-mock-usage: 1,1,0,0,0' -d "$(body exact 10)" >/dev/null
check "exact match beats prefix" eq "$(hdr anthropic-ratelimit-input-tokens-limit)" 600
post "$U" -H 'x-mock-usage: 1,1,0,0,0' -d "$(body exact-not 10)" >/dev/null
check "prefix when not exact" eq "$(hdr anthropic-ratelimit-requests-limit)" 6000
check "unlimited dimensions: no header" eq "$(hdr anthropic-ratelimit-input-tokens-limit)" ""
st=$(post "$U" -N -d "$(body exact-sse 10 ',"stream":true')")
check "SSE with limits (and delays): 200, headers, complete" eval \
	'[ "$st" = 200 ] && [ "$(hdr anthropic-ratelimit-requests-limit)" = 6000 ] && grep -q message_stop "$T/body"'

# RPM 6: capacity 1, tolerance 1 -> two requests pass, the third is refused.
s1=$(post "$U" -d "$(body slow-a 10)")
check "headers: requests-limit" eq "$(hdr anthropic-ratelimit-requests-limit)" 6
check "headers: requests-remaining" eq "$(hdr anthropic-ratelimit-requests-remaining)" 0
check "headers: input-tokens-limit" eq "$(hdr anthropic-ratelimit-input-tokens-limit)" 600000
check "headers: output-tokens-remaining rounded to 1000" eval '[[ "$(hdr anthropic-ratelimit-output-tokens-remaining)" == *000 ]]'
check "headers: tokens-limit" eq "$(hdr anthropic-ratelimit-tokens-limit)" 600000
check "headers: reset is RFC 3339 UTC" eval '[[ "$(hdr anthropic-ratelimit-requests-reset)" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]]'
post "$U" -H 'x-mock-remaining: ,,5' -d "$(body hdr 10)" >/dev/null
check "x-mock-remaining: output-tokens-remaining replaced" eq "$(hdr anthropic-ratelimit-output-tokens-remaining)" 5
check "x-mock-remaining: tokens-remaining follows it" eq "$(hdr anthropic-ratelimit-tokens-remaining)" 5
check "x-mock-remaining: other dimensions kept" eq "$(hdr anthropic-ratelimit-requests-limit)/$(hdr anthropic-ratelimit-input-tokens-remaining)" 6000/600000
s2=$(post "$U" -d "$(body slow-b 10)")
s3=$(post "$U" -d "$(body slow-a 10)")
check "rpm: burst + tolerance admitted" eq "$s1 $s2" "200 200"
check "rpm: next one refused with 429" eq "$s3" 429
check "rpm: rate_limit_error" has '"type":"rate_limit_error"' "$T/body"
ra=$(hdr retry-after)
check "rpm: retry-after in 1..10 s" eval '[ "${ra:-0}" -ge 1 ] && [ "$ra" -le 10 ]'
check "rpm: 429 carries rate-limit headers" eq "$(hdr anthropic-ratelimit-requests-limit)" 6

# ITPM 600, capacity 100 (+1 tolerance), input known at start.
st=$(post "$U" -H 'x-mock-usage: 150,1,0,0,0' -d "$(body itok 10)")
check "itpm: larger than the bucket: 429" eq "$st" 429
st=$(post "$U" -H 'x-mock-usage: 60,1,20,10,500' -d "$(body itok 10)")
check "itpm: 90 of 100 (cache reads free): 200" eq "$st" 200
st=$(post "$U" -H 'x-mock-usage: 60,1,0,0,0' -d "$(body itok 10)")
check "itpm: 60 more: 429" eq "$st" 429
ra=$(hdr retry-after)
check "itpm: retry-after at most (60-1-8)/10 s" eval '[ "${ra:-0}" -ge 1 ] && [ "$ra" -le 6 ]'
st=$(post "$U" -H 'x-mock-usage: 60,1,0,0,50' -d "$(body crc 10)")
check "cache_reads_count: reads count (110 > 101): 429" eq "$st" 429

# OTPM actual: charged after generation; refused only while in debt.
st=$(post "$U" -H 'x-mock-usage: 1,50,0,0,0' -d "$(body otok 100)")
check "otpm: 50 > capacity 10 still admitted (not in debt yet)" eq "$st" 200
st=$(post "$U" -H 'x-mock-usage: 1,1,0,0,0' -d "$(body otok 100)")
check "otpm: in debt: 429" eq "$st" 429
ra=$(hdr retry-after)
check "otpm: retry-after ~39 s" eval '[ "${ra:-0}" -ge 30 ] && [ "$ra" -le 39 ]'

# OTPM reserve: max_tokens taken at start, the unused part given back.
st=$(post "$U" -d "$(body res 200)")
check "reserve: max_tokens 200 > capacity: 429" eq "$st" 429
st=$(post "$U" -H 'x-mock-output-tokens: 10' -d "$(body res 50)")
check "reserve: max_tokens 50: 200" eq "$st" 200
st=$(post "$U" -H 'x-mock-output-tokens: 10' -d "$(body res 85)")
check "reserve: unused reservation returned (85 <= 90)" eq "$st" 200
st=$(post "$U" -H 'x-mock-output-tokens: 10' -d "$(body res 95)")
check "reserve: then 95 > 80: 429" eq "$st" 429

curl -s -o "$T/stats" "$lim_url/mock/stats"
check "stats: rate_limited counts own 429s" eq "$(json_num rate_limited "$T/stats")" 7
check "stats: by_pool" has '"slow":{"requests":3,"ok":2,"rate_limited":1,' "$T/stats"
check "stats: rate_limited_by names the bucket that refused" eq "$(python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))["by_pool"]
print(" ".join("%s:%s" % (n, ",".join(str(p[n]["rate_limited_by"][d]) for d in ("rpm", "itpm", "otpm")))
               for n in ("slow", "itok", "otok", "res")))' "$T/stats")" "slow:1,0,0 itok:0,2,0 otok:0,0,1 res:0,0,2"
check "stats: 404 counted" has '"404":1' "$T/stats"
# GET /mock/admissions: pool itok admitted three (two of 1 token, then
# 90: the 429s are not admissions), the first from a full bucket of 100.
curl -s -o "$T/adm" "$lim_url/mock/admissions"
check "admissions: itok's log" eq "$(python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))["pools"]["itok"]
print(int(p["admitted"]), len(p["log"]), [int(e[3]) for e in p["log"]], int(p["log"][0][2]),
      int(p["itpm"]), p["log"][0][0] <= p["log"][1][0] <= p["log"][2][0])' "$T/adm")" \
	"3 3 [1, 1, 90] 100 600 True"

kill -TERM "$lim_pid"
wait_exit "$lim_pid" 15; check "SIGTERM: exits 0" eq "$RC" 0

# ------------------------------------------------------------------
# The mock's own tokenizer, script by script (mock/README.md, "Usage")
# ------------------------------------------------------------------
start_mock tok
# count TEXT: count_tokens of one user message whose content is TEXT
# (raw bytes; JSON escapes allowed).
count() {
	printf '{"model":"m","messages":[{"role":"user","content":"%s"}]}' "$1" > "$T/ct.json"
	curl -s "$tok_url/v1/messages/count_tokens" --data-binary @"$T/ct.json" | grep -o '[0-9]*'
}
check "tokens: English words and punctuation (9)" eq "$(count 'Hello world, how are you?')" 9
check "tokens: a pangram (13; the shim estimates 11)" eq "$(count 'The quick brown fox jumps over the lazy dog.')" 13
check "tokens: digit runs by threes (9)" eq "$(count 'In 2026, 1234567 tokens')" 9
check "tokens: whitespace runs (7)" eq "$(count 'a  b\n\nc\td')" 7
check "tokens: one space is free (2 words, 2 tokens)" eq "$(count 'ab cd')" 2
check "tokens: accented Latin (6; the shim 5)" eq "$(count 'café crème brûlée')" 6
check "tokens: accents by JSON escape too (3)" eq "$(count 'na\u00efvet\u00e9')" 3
check "tokens: Cyrillic (5; the shim 3)" eq "$(count 'привет мир')" 5
check "tokens: Japanese, one a character (8; the shim 2)" eq "$(count '日本語のテキスト')" 8
check "tokens: Chinese with a full-width comma (5)" eq "$(count '你好，世界')" 5
check "tokens: Hangul (5)" eq "$(count '안녕하세요')" 5
check "tokens: emoji, 3 each (6; the shim 1)" eq "$(count '👍🎉')" 6
check "tokens: an emoji in U+2600..U+27BF (3)" eq "$(count '❤')" 3
check "tokens: a ZWJ sequence, 3 emoji + 2 joiners (11)" eq "$(count '👩‍👩‍👧')" 11
check "tokens: bytes that are not UTF-8, 1 each (2 + ab 1)" eq "$(count $'\xff\xfeab')" 3
check "tokens: a lead byte without its continuation (1 + x 1)" eq "$(count $'\xe6x')" 2
# Images by size: PNG 500 x 300 = 200 tokens, 4000 x 3000 capped at 1600,
# GIF 100 x 75 = 10, JPEG 50 x 30 = 2.
img() {
	printf '{"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/x","data":"%s"}}]}]}' \
		"$(printf "$1" | base64 -w0)" > "$T/img.json"
	curl -s "$tok_url/v1/messages/count_tokens" --data-binary @"$T/img.json" | grep -o '[0-9]*'
}
PNGH='\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR'
check "image: PNG 500x300 = 200" eq "$(img "$PNGH"'\x00\x00\x01\xf4\x00\x00\x01\x2c\x08\x02\x00\x00\x00')" 200
check "image: PNG 4000x3000 capped at 1600" eq "$(img "$PNGH"'\x00\x00\x0f\xa0\x00\x00\x0b\xb8\x08\x02\x00\x00\x00')" 1600
check "image: GIF 100x75 = 10" eq "$(img 'GIF89a\x64\x00\x4b\x00\x00\x00\x00')" 10
check "image: JPEG 50x30 = 2" eq "$(img '\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xc0\x00\x11\x08\x00\x1e\x00\x32\x03\x01\x22\x00')" 2
curl -s -o /dev/null "$tok_url/mock/shutdown" -X POST
wait_exit "$tok_pid" 15; check "tok: exits 0" eq "$RC" 0

for v in 0 1.2345 abc 1001 -1 .5; do
	"$MOCK" --token-scale "$v" >/dev/null 2>&1; check "--token-scale $v: exits 2" eq $? 2
done
cat > "$T/scale.json" <<'EOF'
{"pools": [{"name": "p", "rpm": 6000, "itpm": 1200, "otpm": 600000, "burst": {"itpm": 20}},
           {"name": "q", "rpm": 6000, "itpm": 600000, "otpm": 600000}],
 "models": [{"match": "p", "pool": "p"}, {"match": "m", "pool": "q"}]}
EOF
# --token-scale 1.5: 9 tokens become ceil(13.5) = 14; the cache parts are
# differences of the scaled cumulative count (14 + 13 = ceil(1.5 x 18)).
start_mock sc --token-scale 1.5 --config "$T/scale.json"
st=$(post "$sc_url/v1/messages/count_tokens" -d "{\"model\":\"m\",$MSG}")
check "--token-scale 1.5: count_tokens 14" eq "$(cat "$T/body")" '{"input_tokens":14}'
post "$sc_url/v1/messages" -H 'x-mock-usage: 1,1,0,0,0' -d "$(body m 10)" >/dev/null # forced: not scaled
check "--token-scale: x-mock-usage is used as given" eq "$(json_num input_tokens "$T/body")" 1
post "$sc_url/v1/messages" -d "$(body m 10 "$CB")" >/dev/null
check "--token-scale: 1h write 14 + input 13" has '"usage":{"input_tokens":13,"cache_creation_input_tokens":14,' "$T/body"
# The ITPM bucket (20, tolerance 1) is charged the scaled count: 14, then a
# second 14 is refused (at scale 1, two 9s would fit).
s1=$(post "$sc_url/v1/messages" -d "$(body p 10)")
s2=$(post "$sc_url/v1/messages" -d "$(body p 10)")
check "--token-scale: the bucket is charged the scaled count (200 then 429)" eq "$s1 $s2" "200 429"
check "--token-scale: refused for input tokens" has 'input tokens per minute' "$T/body"
curl -s -o /dev/null -X POST "$sc_url/mock/shutdown"
wait_exit "$sc_pid" 15

# ------------------------------------------------------------------
# --strict-interval and --latency-ms
# ------------------------------------------------------------------
cat > "$T/strict.json" <<'EOF'
{"pools": [{"name": "s", "rpm": 60, "itpm": 600, "otpm": 600000, "burst": {"rpm": 5}},
           {"name": "t", "rpm": 6000, "itpm": 600, "otpm": 600000}],
 "models": [{"match": "s", "pool": "s"}, {"match": "t", "pool": "t"}]}
EOF
"$MOCK" --config "$T/scale.json" --serve-model nope >/dev/null 2>&1
check "--serve-model not in --config: exits 2" eq $? 2
start_mock strict --config "$T/strict.json" --strict-interval --latency-ms 2000
U=$strict_url/v1/messages
curl -s -o "$T/lim" "$strict_url/mock/limits"
check "strict: every bucket one interval's worth (rpm 1, itpm 10)" has '"name":"s","rpm":60,"itpm":600,"otpm":600000,"burst":{"rpm":1,"itpm":10,"otpm":10000}' "$T/lim"
check "strict: reported" has '"strict_interval":true' "$T/lim"
# A: admitted at arrival, then 2 s of think time.  B arrives during it and
# meets the bucket as A left it: refused at once, answered before A.
: > "$T/order"
( st=$(curl -s -o "$T/latA" -w '%{http_code}' "$U" -d "$(body s 10)"); echo "A $st" >> "$T/order" ) &
ap=$!
i=0
while ! grep -q '"name":"s",[^}]*},"available":{"rpm":0' <(curl -s "$strict_url/mock/limits") && [ $i -lt 100 ]; do
	sleep 0.02; i=$((i + 1))
done
st=$(post "$U" -d "$(body s 10)"); echo "B $st" >> "$T/order"
check "strict: a second request within the second: 429" eq "$st" 429
check "strict: retry-after 1" eq "$(hdr retry-after)" 1
wait "$ap"
check "latency: admission at arrival, the answer after the delay (B refused before A answers)" \
	eq "$(tr '\n' ' ' < "$T/order")" "B 429 A 200 "
r=$(curl -s -N -o "$T/body" -w '%{http_code} %{time_starttransfer}' "$U" -d "$(body t 10 ',"stream":true')")
check "latency: SSE answer delayed at least 2 s ($r)" eval '[ "${r%% *}" = 200 ] && awk -v t="${r#* }" "BEGIN { exit !(t >= 2.0) }"'
check "latency: SSE complete" has message_stop "$T/body"
# ITPM 600 strictly: 10 tokens a second, no tolerance: 11 is refused every time.
st=$(post "$U" -H 'x-mock-usage: 11,1,0,0,0' -d "$(body t 10)")
check "strict: a request over one second's ITPM (11 > 10): 429" eq "$st" 429
curl -s -o "$T/lim" -X POST "$strict_url/mock/limits" -d '{"pools":[{"name":"s","rpm":120,"burst":{"rpm":9}}]}'
check "strict: a limits change keeps the strict capacity" has '"name":"s","rpm":120,"itpm":600,"otpm":600000,"burst":{"rpm":1,' "$T/lim"
kill -TERM "$strict_pid"; wait_exit "$strict_pid" 15

# ------------------------------------------------------------------
# POST /mock/limits: limits changed mid-run; server-side fallback
# ------------------------------------------------------------------
cat > "$T/chg.json" <<'EOF'
{"pools": [{"name": "big", "rpm": 6000, "itpm": 600000, "otpm": 600000},
           {"name": "small", "rpm": 6, "itpm": 6000, "otpm": 6000, "burst": {"itpm": 3000}}],
 "models": [{"match": "big-*", "pool": "big"}, {"match": "small-*", "pool": "small"}]}
EOF
start_mock chg --config "$T/chg.json"
U=$chg_url/v1/messages
st=$(curl -s -o "$T/lim" -w '%{http_code}' "$chg_url/mock/limits")
check "limits: GET shows the configured pools" eval '[ "$st" = 200 ] && grep -q "\"name\":\"big\",\"rpm\":6000,\"itpm\":600000" "$T/lim"'
codes=""
for i in 1 2 3; do codes="$codes $(post "$U" -d "$(body big-1 10)")"; done
check "limits: big admits 3 in a row" eq "$codes" " 200 200 200"
st=$(curl -s -o "$T/lim" -w '%{http_code}' -X POST "$chg_url/mock/limits" \
	-d '{"pools":[{"name":"big","rpm":60,"itpm":3000}]}')
check "limits: POST 200" eq "$st" 200
check "limits: the answer shows the new limits and default bursts" has '"name":"big","rpm":60,"itpm":3000,"otpm":600000,"burst":{"rpm":1,"itpm":3000,"otpm":600000}' "$T/lim"
codes=""
for i in 1 2 3; do codes="$codes $(post "$U" -d "$(body big-1 10)")"; done
check "limits: halved and more: enforced at once (burst 1 + tolerance 1)" eq "$codes" " 200 200 429"
check "limits: headers report the new requests-limit" eq "$(hdr anthropic-ratelimit-requests-limit)" 60
check "limits: headers report the new input-tokens-limit" eq "$(hdr anthropic-ratelimit-input-tokens-limit)" 3000
check "limits: a refusal names the pool" has 'pool big (requests per minute)' "$T/body"
curl -s -o /dev/null -X POST "$chg_url/mock/limits" -d '{"pools":[{"name":"big","rpm":600000}]}'
st=$(post "$U" -d "$(body big-1 10)")
check "limits: raised: admitted again" eq "$st" 200
check "limits: headers report the raised limit" eq "$(hdr anthropic-ratelimit-requests-limit)" 600000
# A configured burst scales with the limit: small itpm 6000 / burst 3000 -> 3000 / 1500.
curl -s -o "$T/lim" -X POST "$chg_url/mock/limits" -d '{"pools":[{"name":"small","itpm":3000}]}'
check "limits: a configured burst scales with the limit" has '"name":"small","rpm":6,"itpm":3000,"otpm":6000,"burst":{"rpm":1,"itpm":1500,' "$T/lim"
st=$(post "$U" -H 'x-mock-usage: 1600,1,0,0,0' -d "$(body small-1 10)")
check "limits: the new token capacity is enforced (1600 > 1500 + 15)" eq "$st" 429
check "limits: input-tokens-limit header" eq "$(hdr anthropic-ratelimit-input-tokens-limit)" 3000
curl -s -o "$T/lim0" "$chg_url/mock/limits"
for b in '{"pools":[{"name":"nope","rpm":5}]}|404' '{"pools":[{"name":"big","rpm":-1}]}|400' \
	 '{"pools":[{"name":"big","rpm":"5"}]}|400' '{"pools":[]}|400' 'not json|400' \
	 '{"pools":[{"name":"big","burst":{"rpm":0}}]}|400' \
	 '{"pools":[{"name":"big","rpm":5},{"name":"nope"}]}|404'; do
	st=$(curl -s -o "$T/body" -w '%{http_code}' -X POST "$chg_url/mock/limits" -d "${b%|*}")
	check "limits: ${b%|*}: ${b##*|}" eq "$st" "${b##*|}"
done
curl -s -o "$T/lim1" "$chg_url/mock/limits"
check "limits: refused changes change nothing (all or nothing)" eval \
	'[ "$(sed "s/\"available\":{[^}]*}//g" "$T/lim0")" = "$(sed "s/\"available\":{[^}]*}//g" "$T/lim1")" ]'
st=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$chg_url/mock/limits"); check "limits: DELETE 405" eq "$st" 405

# Server-side fallback: big-1 requested, small-1 serves and its pool pays.
post "$U" -H 'x-mock-serve-model: small-1' -d "$(body big-1 10)" >/dev/null
check "serve-model: JSON model is the serving one" has '"model":"small-1"' "$T/body"
check "serve-model: the serving pool's headers" eq "$(hdr anthropic-ratelimit-requests-limit)" 6
post "$U" -N -H 'x-mock-serve-model: small-2' -d "$(body big-1 10 ',"stream":true')" >/dev/null
check "serve-model: SSE message_start model" has '"type":"message_start","message":{"id":"msg_mock[0-9a-f]*","type":"message","role":"assistant","model":"small-2"' "$T/body"
st=$(post "$U" -H 'x-mock-serve-model: small-3' -d "$(body big-1 10)")
check "serve-model: the serving pool is charged (small: 2 admitted, the third 429)" eq "$st" 429
check "serve-model: the refusal names the serving pool" has 'pool small' "$T/body"
st=$(post "$U" -H 'x-mock-serve-model: other' -d "$(body big-1 10)")
check "serve-model: a model no entry matches: 400" eq "$st" 400
st=$(post "$U" -H 'x-mock-serve-model: small-1' -d "$(body nomatch 10)")
check "serve-model: the requested model must exist: 404" eq "$st" 404
curl -s -o "$T/stats" "$chg_url/mock/stats"
check "serve-model: stats count the serving model" has '"small-1":{"requests":2,"ok":1,' "$T/stats"
kill -TERM "$chg_pid"; wait_exit "$chg_pid" 15

start_mock sm --serve-model claude-haiku-4-5
post "$sm_url/v1/messages" -d "$(body claude-opus-4-5 10)" >/dev/null
check "--serve-model: every reply is that model" has '"model":"claude-haiku-4-5"' "$T/body"
post "$sm_url/v1/messages" -H 'x-mock-serve-model: x-1' -d "$(body claude-opus-4-5 10)" >/dev/null
check "--serve-model: the header overrides it" has '"model":"x-1"' "$T/body"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$sm_url/mock/limits" -d '{"pools":[{"name":"p"}]}')
check "limits: without --config: 404" eq "$st" 404
kill -TERM "$sm_pid"; wait_exit "$sm_pid" 15

# ------------------------------------------------------------------
# --max-requests and --fail-every
# ------------------------------------------------------------------
start_mock few --max-requests 4 --fail-every 2:529
codes=""
for i in 1 2 3 4; do
	codes="$codes $(post "$few_url/v1/messages" -d "$(body m 10)")"
done
check "--fail-every 2:529: every 2nd request" eq "$codes" " 200 529 200 529"
wait_exit "$few_pid" 15; check "--max-requests 4: exits 0 by itself" eq "$RC" 0
check "--max-requests: says why" has 'exiting: --max-requests' "$T/few.err"

start_mock brief --max-seconds 1
wait_exit "$brief_pid" 15; check "--max-seconds 1: exits 0 by itself" eq "$RC" 0

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
