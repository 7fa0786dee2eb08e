#!/bin/bash
# run.sh - `make demo`: a fleet of real curl processes under the preload shim
# share one segment's limits against a mock Claude API that enforces the same
# limits.  See demo/README.md.
#
# Usage: demo/run.sh [BUILD_DIR]
# Environment: DEMO_SECONDS (default 40), DEMO_WORKERS (curl workers,
# default 6), DEMO_PY_WORKERS (Python httpx workers, default 2),
# DEMO_NODE_WORKERS (Node.js fetch workers, default 2), DEMO_PYTHON (default
# /usr/bin/python3), DEMO_NODE (default node),
# DEMO_RESULTS (a file to write the "held at the limits" figures to, one
# line per cell, for `make check-demo`; default none).
#
# Everything it starts (mock server, workers, live view) and the segment it
# creates are removed on exit, also on Ctrl-C.
set -u

B=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
CFG=$HERE/demo.json
SO=$B/libshmlimit-preload.so
SEGTOOL=$B/shmlimit-preload-seg
CTL=$B/shmlimit-ctl
STAT=$B/shmlimit-stat
MOCK=$B/shmlimit-mock
SECS=${DEMO_SECONDS:-40}
NW=${DEMO_WORKERS:-6}
NP=${DEMO_PY_WORKERS:-2}
NN=${DEMO_NODE_WORKERS:-2}
PY=${DEMO_PYTHON:-/usr/bin/python3}
NODE=${DEMO_NODE:-node}
case "$SECS" in '' | *[!0-9]*) echo "demo: DEMO_SECONDS must be a number" >&2; exit 2 ;; esac
case "$NW" in '' | *[!0-9]*) echo "demo: DEMO_WORKERS must be a number" >&2; exit 2 ;; esac
[ "$SECS" -ge 20 ] && [ "$SECS" -le 600 ] || { echo "demo: DEMO_SECONDS: 20..600" >&2; exit 2; }
[ "$NW" -ge 1 ] && [ "$NW" -le 64 ] || { echo "demo: DEMO_WORKERS: 1..64" >&2; exit 2; }
for n in "$NP" "$NN"; do
	case "$n" in '' | *[!0-9]*) echo "demo: DEMO_PY_WORKERS and DEMO_NODE_WORKERS must be numbers" >&2; exit 2 ;; esac
done
[ "$NP" -le 16 ] && [ "$NN" -le 16 ] || { echo "demo: DEMO_PY_WORKERS, DEMO_NODE_WORKERS: 0..16" >&2; exit 2; }
for f in "$SO" "$SEGTOOL" "$MOCK"; do
	[ -x "$f" ] || [ -f "$f" ] || { echo "demo: $f is missing (run make)" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "demo: the curl command is missing (scripts/deps.sh test)" >&2; exit 1; }
# The Python and Node.js workers join when their runtime and our part for it
# are there; otherwise the demo runs without them, saying so in one line.
SO_ABS=$(cd "$(dirname "$SO")" && pwd)/$(basename "$SO")
PYLIB=$(cd "$B" && pwd)/libshmlimit.so.1
ADDON=$(cd "$B" && pwd)/node/shmlimit.node
if [ "$NP" -gt 0 ]; then
	if ! "$PY" -c 'import httpx' 2>/dev/null; then
		echo "demo: no Python workers: $PY with httpx is not installed (scripts/deps.sh python)"; NP=0
	elif [ ! -f "$PYLIB" ]; then
		echo "demo: no Python workers: $PYLIB is not built (make)"; NP=0
	fi
fi
if [ "$NN" -gt 0 ]; then
	if ! "$NODE" -e 'process.exit(typeof fetch === "function" ? 0 : 1)' 2>/dev/null; then
		echo "demo: no Node.js workers: $NODE (18 or later, for fetch) is not installed"; NN=0
	elif [ ! -f "$ADDON" ]; then
		echo "demo: no Node.js workers: $ADDON is not built (needs node_api.h: Debian's libnode-dev)"; NN=0
	fi
fi

SEG=shl-demo-$$
T=$(mktemp -d "${TMPDIR:-/tmp}/shl-demo.XXXXXX") || exit 1
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	"$SEGTOOL" rm "$SEG" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. The segment, from the demo configuration (the tools when built).
# Its buckets start full when it is created, so from t_create (taken just
# before) on, at most burst + rate x T can be admitted.
t_create=$(date +%s%N)
if [ -x "$CTL" ]; then
	"$CTL" create "$SEG" --config "$CFG" >/dev/null || exit 1
else
	"$SEGTOOL" create "$SEG" "$CFG" || exit 1
fi

# 2. The mock API, enforcing the same limits with its own buckets.
"$MOCK" --port 0 --port-file "$T/port" --config "$CFG" --max-seconds $((SECS + 60)) \
	--max-requests 100000 --stream-chunk-delay-ms 20 2>"$T/mock.err" &
PIDS="$PIDS $!"
i=0
while [ ! -s "$T/port" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ -s "$T/port" ] || { echo "demo: mock did not start: $(cat "$T/mock.err")" >&2; exit 1; }
PORT=$(cat "$T/port")
URL=http://127.0.0.1:$PORT

echo "libshmlimit demo: $NW curl, $NP Python and $NN Node.js workers for ${SECS}s, segment $SEG, mock API at $URL"
echo "limits (demo/demo.json): opus 30 RPM / 6k ITPM / 2k OTPM, sonnet 60 / 12k / 4k, haiku 120 / 20k / 6k"

# 3. The fleet: each worker is a shell loop of plain curl commands.
# Worker w works for pool (w-1) mod 3, with a mix of that pool's model ids
# (a pool is a model class: all its ids share one set of buckets).
POOLS=("claude-haiku-4-5 claude-haiku-4-5-20251001"
       "claude-sonnet-4-5 claude-sonnet-4-5-20250929 claude-sonnet-4-0"
       "claude-opus-4-5 claude-opus-4-6")
MAXT=256 # every request's max_tokens
WORDS="the quick brown fox jumps over the lazy dog while limits hold steady across every process"
worker() {
	local w=$1 n=0 end=$2
	RANDOM=$((w * 7919 + $$))
	while [ "$(date +%s)" -lt "$end" ]; do
		n=$((n + 1))
		local -a ids
		read -r -a ids <<< "${POOLS[$(((w - 1) % 3))]}"
		local model=${ids[$((RANDOM % ${#ids[@]}))]}
		local stream=false
		[ $((RANDOM % 2)) = 0 ] && stream=true
		local reps=$((2 + RANDOM % 25)) text="" k
		for ((k = 0; k < reps; k++)); do text="$text $WORDS"; done
		local out=$((20 + RANDOM % 120))
		local body="{\"model\":\"$model\",\"max_tokens\":$MAXT,\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"worker $w request $n:$text\"}]}"
		SHMLIMIT_SEGMENT=$SEG SHMLIMIT_HOSTS=127.0.0.1:$PORT SHMLIMIT_WAIT_MS=20000 LD_PRELOAD=$SO \
			curl -s -o /dev/null -w '%{http_code}\n' -H "x-mock-output-tokens: $out" \
			"$URL/v1/messages" -d "$body" 2>>"$T/worker.err"
	done
}
start=$(date +%s%N)
end=$(($(date +%s) + SECS))
for w in $(seq 1 "$NW"); do
	worker "$w" "$end" > "$T/w.$w" &
	PIDS="$PIDS $!"
	WPIDS="${WPIDS:-} $!"
done
# The Python and Node.js workers: the same kind of requests, numbered after
# the curl workers (worker w works for pool (w-1) mod 3).  The odd ones are
# governed by one line (GovernedTransport, governedFetch), the even ones
# with no code change (plain httpx / the global fetch under shmlimit-run).
# (SHMLIMIT_PRELOAD: shmlimit-run preloads this build's shim.)
export SHMLIMIT_SEGMENT=$SEG SHMLIMIT_HOSTS=127.0.0.1:$PORT SHMLIMIT_WAIT_MS=20000 \
	SHMLIMIT_LIBRARY=$PYLIB SHMLIMIT_NODE_ADDON=$ADDON SHMLIMIT_PRELOAD=$SO_ABS
RUN=$HERE/../python/shmlimit-run
for i in $(seq 1 "$NP"); do
	w=$((NW + i))
	set -- "$PY" "$HERE/worker.py" "$w" "$end" "$URL" "${POOLS[$(((w - 1) % 3))]}"
	if [ $((i % 2)) = 0 ]; then set -- "$RUN" "$SEG" -- "$@" --plain; fi
	"$@" > "$T/p.$i" 2>>"$T/python.err" &
	PIDS="$PIDS $!"
	WPIDS="${WPIDS:-} $!"
done
for i in $(seq 1 "$NN"); do
	w=$((NW + NP + i))
	set -- "$NODE" "$HERE/worker.js" "$w" "$end" "$URL" "${POOLS[$(((w - 1) % 3))]}"
	if [ $((i % 2)) = 0 ]; then set -- "$RUN" "$SEG" -- "$@" --plain; fi
	"$@" > "$T/n.$i" 2>>"$T/node.err" &
	PIDS="$PIDS $!"
	WPIDS="${WPIDS:-} $!"
done
unset SHMLIMIT_SEGMENT SHMLIMIT_HOSTS SHMLIMIT_WAIT_MS SHMLIMIT_LIBRARY SHMLIMIT_NODE_ADDON SHMLIMIT_PRELOAD
NALL=$((NW + NP + NN))

# 4. While they run: the stats tool's live view on a terminal, else a plain
#    line every 5 seconds.
VIEW=""
if [ -t 1 ] && [ -x "$STAT" ]; then
	"$STAT" -w 1 "$SEG" &
	VIEW=$!
	PIDS="$PIDS $VIEW"
fi
snapshot() {
	"$SEGTOOL" stats "$SEG" | awk -v t="$1" '
		/^(opus|sonnet|haiku)\.(admitted|tokens_in|tokens_out)$/ { }
		{ v[$1] = $2 }
		END { printf "t=%3ss  admitted: opus %s sonnet %s haiku %s   waited: %s   spend $%.4f\n", t,
		      v["opus.admitted"], v["sonnet.admitted"], v["haiku.admitted"],
		      v["opus.waited"] + v["sonnet.waited"] + v["haiku.waited"], v["spend_month"] / 1e9 }'
}
t0=$(date +%s)
# The steady-state window: from 10 s in (the initial full buckets spent) to
# the end of the run, measured with two snapshots of the counters.
w1=""
while [ "$(date +%s)" -lt "$end" ]; do
	sleep 1
	el=$(($(date +%s) - t0))
	if [ -z "$w1" ] && [ "$el" -ge 10 ]; then
		w1=$(date +%s%N); "$SEGTOOL" stats "$SEG" > "$T/s1"
	fi
	# The live view gone (no such option, terminal closed): plain lines.
	if [ -n "$VIEW" ] && ! kill -0 "$VIEW" 2>/dev/null; then VIEW=""; fi
	if [ -z "$VIEW" ] && [ $((el % 5)) = 0 ]; then snapshot "$el"; fi
done
w2=$(date +%s%N); "$SEGTOOL" stats "$SEG" > "$T/s2"
# shellcheck disable=SC2086
wait $WPIDS
# The "held at the limits" figures: from a snapshot taken once every worker
# has finished.  A request is counted as admitted when it takes its place in
# line (shl_ex_reserve), at a release time that can be seconds ahead; once
# its worker is done, that release has passed, so everything the snapshot
# counts was released within T.
"$SEGTOOL" stats "$SEG" > "$T/s3"
t_end=$(date +%s%N) # after the snapshot: T covers everything it counted
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
if [ -n "$VIEW" ]; then kill "$VIEW" 2>/dev/null; wait "$VIEW" 2>/dev/null; echo; fi

# 5. Summary.
curl -s "$URL/mock/stats" > "$T/mock.json"
num() { grep -o "\"$1\":[0-9]*" "$T/mock.json" | head -n 1 | cut -d: -f2; }
rl=$(num rate_limited); scripted=$(num scripted_429); reqs=$(num requests)
codes=$(cat "$T"/[wpn].* | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')
refused=$(grep -c 'shmlimit: refused' "$T/worker.err" 2>/dev/null || true)
if [ -x "$STAT" ]; then
	echo
	echo "=== $STAT $SEG (the stats tool's one-shot table, at the end of the run)"
	"$STAT" "$SEG"
fi
echo
echo "=== summary after $((elapsed_ms / 1000)).$(((elapsed_ms % 1000) / 100)) s, $NALL workers, $reqs requests reached the server"
# Requests per kind of worker: sent (reached the server), and refused
# locally (status 000: never sent).
kind() {
	local name=$1 n=$2 pat=$3 how=$4
	[ "$n" -gt 0 ] || return 0
	cat "$T"/"$pat".* 2>/dev/null | awk -v k="$name" -v n="$n" -v how="$how" '
		{ if ($1 == "000") r++; else s++ }
		END { printf "  %-7s %2d workers  %6d requests sent, %4d refused locally   (%s)\n", k, n, s, r, how }'
}
echo "requests per kind of worker:"
kind curl "$NW" w "curl under LD_PRELOAD"
kind python "$NP" p "httpx: GovernedTransport; plain httpx.Client under shmlimit-run"
kind node "$NN" n "fetch: governedFetch; the global fetch under shmlimit-run"
win_ms=$(((w2 - w1) / 1000000))
echo "rates per minute from 10 s in to the end of the run (${win_ms} ms), against each limit"
echo "(tokens as settled; over a short window a bucket's burst, a few seconds' worth, can show as a few % above):"
awk -v ms="$win_ms" '
	function rate(used, limit,   r) {
		r = used / min
		return sprintf("%7.0f (%6d) %4.0f%%", r, limit, limit ? 100 * r / limit : 0)
	}
	FNR == NR { a[$1] = $2; next }
	{ v[$1] = $2 }
	END {
		min = ms / 60000.0
		printf "%-7s %-21s  %-21s  %-21s\n", "pool", "requests (limit)", "input tokens (limit)", "output tokens (limit)"
		split("opus sonnet haiku", P, " ")
		for (i = 1; i <= 3; i++) {
			p = P[i]
			printf "%-7s %s  %s  %s\n", p,
			  rate(v[p ".admitted"] - a[p ".admitted"], v[p ".limit_rpm"]),
			  rate(v[p ".tokens_in"] + v[p ".cache_write"] - a[p ".tokens_in"] - a[p ".cache_write"], v[p ".limit_itpm"]),
			  rate(v[p ".tokens_out"] - a[p ".tokens_out"], v[p ".limit_otpm"])
		}
	}' "$T/s1" "$T/s2"
T_ms=$(((t_end - t_create + 999999) / 1000000))
echo "held at the limits: use over the whole run (${T_ms} ms from the segment's creation, buckets full,"
echo "to the last worker's end) against the most the limits allow in that time, burst + rate x T"
echo "(output tokens are charged at settle, so the requests in flight can overdraw them a little):"
awk -v ms="$T_ms" '
	function cell(used, burst, limit,   allow) {
		allow = burst + limit * ms / 60000.0
		return sprintf("%7d / %7.0f %4.0f%%", used, allow, allow ? 100 * used / allow : 0)
	}
	{ v[$1] = $2 }
	END {
		printf "%-7s %-21s  %-21s  %-21s\n", "pool", "requests", "input tokens", "output tokens"
		split("opus sonnet haiku", P, " ")
		for (i = 1; i <= 3; i++) {
			p = P[i]
			printf "%-7s %s  %s  %s\n", p,
			  cell(v[p ".admitted"], v[p ".burst_rpm"], v[p ".limit_rpm"]),
			  cell(v[p ".tokens_in"] + v[p ".cache_write"], v[p ".burst_itpm"], v[p ".limit_itpm"]),
			  cell(v[p ".tokens_out"], v[p ".burst_otpm"], v[p ".limit_otpm"])
		}
	}' "$T/s3"
# The same figures, machine-readable: "POOL DIM USED ALLOWED SLACK" per
# cell, ALLOWED = burst + rate x T.  SLACK is 0 for requests and input
# tokens, which are taken at admission.  Output tokens ("actual" mode) are
# taken at settlement, and a bucket not in debt admits, so the outputs of
# the requests in flight can overdraw it: SLACK = the pool's workers (its
# most requests in flight at once) x max_tokens.
if [ -n "${DEMO_RESULTS:-}" ]; then
	awk -v ms="$T_ms" -v nw="$NALL" -v maxt="$MAXT" '
		{ v[$1] = $2 }
		END {
			split("haiku sonnet opus", P, " ")
			for (i = 1; i <= 3; i++) {
				p = P[i]; w = int(nw / 3) + (i <= nw % 3)
				printf "%s rpm %d %.3f 0\n", p, v[p ".admitted"], v[p ".burst_rpm"] + v[p ".limit_rpm"] * ms / 60000.0
				printf "%s itpm %d %.3f 0\n", p, v[p ".tokens_in"] + v[p ".cache_write"], v[p ".burst_itpm"] + v[p ".limit_itpm"] * ms / 60000.0
				printf "%s otpm %d %.3f %d\n", p, v[p ".tokens_out"], v[p ".burst_otpm"] + v[p ".limit_otpm"] * ms / 60000.0, w * maxt
			}
		}' "$T/s3" > "$DEMO_RESULTS"
fi
"$SEGTOOL" stats "$SEG" | awk '
	{ v[$1] = $2 }
	END {
		cap = v["spend_cap"]
		printf "spend:  $%.4f of the $%.2f monthly cap (%.2f%%)\n", v["spend_month"] / 1e9,
		  cap / 1e9, (cap > 0) ? (100 * v["spend_month"] / cap) : 0
		printf "client: %d admitted, %d waited for admission, %d server 429s seen\n",
		  v["all.admitted"], v["opus.waited"] + v["sonnet.waited"] + v["haiku.waited"], v["all.server_429"]
	}'
echo "server: HTTP statuses $codes; rate-limited by the server: $rl (goal: 0); scripted 429s: $scripted"
[ "$refused" -gt 0 ] && echo "client: $refused curl requests refused locally past SHMLIMIT_WAIT_MS (not sent)"
# Every request that reached the server went through the segment: its
# admissions equal the server's count (an ungoverned worker's would not be
# in it).
admitted=$("$SEGTOOL" stats "$SEG" | awk '$1 == "all.admitted" { print $2 }')
if [ "$admitted" = "$reqs" ]; then same="equal: every worker went through the segment"
else same="not equal: some requests were not governed"; fi
echo "governed: $admitted admitted by the segment, $reqs requests reached the server ($same)"
# What the Python and Node.js parts said (a fail-open line: "... pass
# through ungoverned"), at most 3 lines each.
for k in python node; do
	[ -s "$T/$k.err" ] && grep -m 3 'shmlimit' "$T/$k.err" | sed "s/^/$k worker: /"
done
if [ "${rl:-1}" = 0 ]; then
	echo "result: the fleet stayed within the limits: no server 429s"
else
	echo "result: the server refused $rl requests"
	# Which pool and bucket: the mock's by_pool rate_limited_by.
	"$PY" -c 'import json, sys
for p, t in json.load(open(sys.argv[1]))["by_pool"].items():
    for d, n in t.get("rate_limited_by", {}).items():
        if n: print("server: %d refused by %s %s" % (n, p, d))' "$T/mock.json" 2>/dev/null
	exit 1
fi
