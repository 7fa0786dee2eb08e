#!/bin/sh
# preload-cost.sh - what the LD_PRELOAD shim costs per governed request.
#
# The curl command-line tool posts the same Messages request to the local
# mock server (build/shmlimit-mock, on 127.0.0.1 at a port it picks), with
# and without LD_PRELOAD=build/libshmlimit-preload.so, two ways:
#   per process:  one curl process per request (a fleet of shell workers);
#   one process:  one curl process sending N requests (a long-lived worker);
# each timed best-of-3, alternating plain and shim runs; and, when valgrind
# is installed, one request of one process counted in instructions (the
# shim's start-up cost without the noise of timing).  The shim governs
# 127.0.0.1:PORT through a fresh segment (one generous pool for claude-*),
# and the segment's admitted count must equal the shim's requests, or the
# ratio would be of an ungoverned run and is reported as such.
#
# Usage: bench/preload-cost.sh quick|full [OUTDIR]   (appends to OUTDIR/results.*)
# Skips, saying why, when the mock, the shim or curl is missing.
set -u
mode=${1:-quick}
out=${2:-build/bench}
B=build
MOCK=$B/shmlimit-mock
SHIM=$B/libshmlimit-preload.so
BENCH=$B/shmlimit-bench
md=$out/results.md
csv=$out/results.csv

note() {
	echo "$*"
	if [ -f "$md" ]; then echo "$*" >>"$md"; fi
}
skip() {
	note "## 6. Preload cost per governed request"
	note ""
	note "Skipped: $*."
	note ""
	exit 0
}
[ -x "$MOCK" ] || skip "$MOCK is not built"
[ -f "$SHIM" ] || skip "$SHIM is not built"
[ -x "$BENCH" ] || skip "$BENCH is not built"
command -v curl >/dev/null 2>&1 || skip "curl is not installed"

case $mode in
quick) n1=40 n2=300 ;;
*) n1=150 n2=1500 ;;
esac
reps=3
tmp=$(mktemp -d)
seg=shmlimit-bench-preload-$$
mpid=
cleanup() {
	if [ -n "$mpid" ]; then
		kill "$mpid" 2>/dev/null
		wait "$mpid" 2>/dev/null
	fi
	"$BENCH" --segment unlink "$seg" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

total=$(((n1 + n2) * 2 * reps + 20))
"$MOCK" --port 0 --port-file "$tmp/port" --max-requests "$total" --max-seconds 300 \
	>"$tmp/mock.log" 2>&1 &
mpid=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$tmp/port" ] || skip "the mock did not report a port (see its log: $(head -c 300 "$tmp/mock.log"))"
port=$(cat "$tmp/port")
"$BENCH" --segment create "$seg" || skip "cannot create segment $seg"

url="http://127.0.0.1:$port/v1/messages"
printf '%s' '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}' >"$tmp/body.json"
# One curl process, n2 requests: a config file of n2 blocks.
: >"$tmp/many.cfg"
i=0
while [ $i -lt "$n2" ]; do
	cat >>"$tmp/many.cfg" <<CFG
url = "$url"
data = "@$tmp/body.json"
header = "content-type: application/json"
header = "x-api-key: bench"
header = "anthropic-version: 2023-06-01"
output = "/dev/null"
write-out = "%{http_code}\\n"
silent
next
CFG
	i=$((i + 1))
done

now_ns() { date +%s%N; }
# run_per_process N [env...]: prints elapsed ns; failed requests go to $tmp/fail
run_per_process() {
	n=$1
	shift
	t0=$(now_ns)
	k=0
	: >"$tmp/pcodes"
	while [ "$k" -lt "$n" ]; do
		env "$@" curl -s -o /dev/null -w '%{http_code}\n' -H 'content-type: application/json' \
			-H 'x-api-key: bench' -H 'anthropic-version: 2023-06-01' \
			--data "@$tmp/body.json" "$url" >>"$tmp/pcodes"
		k=$((k + 1))
	done
	t1=$(now_ns)
	grep -v '^200$' "$tmp/pcodes" >>"$tmp/fail"
	echo $((t1 - t0))
}
run_one_process() {
	t0=$(now_ns)
	env "$@" curl -K "$tmp/many.cfg" >"$tmp/codes" 2>/dev/null
	t1=$(now_ns)
	grep -v '^200$' "$tmp/codes" >>"$tmp/fail"
	echo $((t1 - t0))
}
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

shimenv="LD_PRELOAD=$SHIM SHMLIMIT_SEGMENT=$seg SHMLIMIT_HOSTS=127.0.0.1:$port"
: >"$tmp/fail"
best_pp_plain=999999999999999 best_pp_shim=999999999999999
best_op_plain=999999999999999 best_op_shim=999999999999999
r=0
while [ $r -lt $reps ]; do
	best_pp_plain=$(min "$best_pp_plain" "$(run_per_process "$n1" X=1)")
	# shellcheck disable=SC2086
	best_pp_shim=$(min "$best_pp_shim" "$(run_per_process "$n1" $shimenv)")
	best_op_plain=$(min "$best_op_plain" "$(run_one_process X=1)")
	# shellcheck disable=SC2086
	best_op_shim=$(min "$best_op_shim" "$(run_one_process $shimenv)")
	r=$((r + 1))
done
# Start-up, counted in instructions (valgrind --tool=callgrind): one
# request in one curl process, without and with the shim.  Wall time of a
# 6-8 ms process moves by more than the 2% target from run to run on a
# shared machine; the instruction count moves by well under 0.1%.
ir_plain= ir_shim=
irun() {
	env "$@" valgrind --tool=callgrind --callgrind-out-file=/dev/null curl -s -o /dev/null \
		-w '%{http_code}\n' -H 'content-type: application/json' -H 'x-api-key: bench' \
		-H 'anthropic-version: 2023-06-01' --data "@$tmp/body.json" "$url" \
		2>"$tmp/vg.err" >>"$tmp/vgcodes"
	sed -n 's/.*I *refs: *\([0-9,]*\).*/\1/p' "$tmp/vg.err" | tr -d ,
}
extra=0
: >"$tmp/vgcodes"
if command -v valgrind >/dev/null 2>&1; then
	ir_plain=$(irun X=1)
	# shellcheck disable=SC2086
	ir_shim=$(irun $shimenv)
	extra=1
	grep -v '^200$' "$tmp/vgcodes" >>"$tmp/fail"
fi
fails=$(wc -l <"$tmp/fail")
governed=$("$BENCH" --segment stats "$seg" | awk '{print $2}')
expect=$(((n1 + n2) * reps + extra))

note "## 6. Preload cost per governed request (curl CLI against the local mock)"
note ""
note "| curl | requests | without shim, us/request | with shim, us/request | ratio | added per request, us |"
note "|---|---:|---:|---:|---:|---:|"
line() {
	name=$1 n=$2 plain=$3 shim=$4
	awk -v name="$name" -v n="$n" -v p="$plain" -v s="$shim" 'BEGIN {
		printf "| %s | %d | %.1f | %.1f | %.3f | %.1f |\n", name, n, p / n / 1000, s / n / 1000,
			s / p, (s - p) / n / 1000 }'
}
l1=$(line "one process per request" "$n1" "$best_pp_plain" "$best_pp_shim")
l2=$(line "one process, $n2 requests" "$n2" "$best_op_plain" "$best_op_shim")
note "$l1"
note "$l2"
note ""
note "Best of $reps runs each. Requests the shim governed (segment's admitted count): $governed of $expect; non-200 replies: $fails."
note ""
if [ -n "$ir_plain" ] && [ -n "$ir_shim" ]; then
	note "Start-up and one request of one curl process, in instructions (valgrind --tool=callgrind):"
	note ""
	note "| curl, one request | instructions | ratio to plain |"
	note "|---|---:|---:|"
	note "| without shim | $ir_plain | 1.000 |"
	note "$(awk -v p="$ir_plain" -v s="$ir_shim" 'BEGIN { printf "| with shim | %d | %.3f |", s, s / p }')"
	note ""
	note "$(awk -v p="$ir_plain" -v s="$ir_shim" -v t="$l1" 'BEGIN {
		split(t, f, "|"); r = f[6] + 0
		printf "Target (issue 13): a one-request curl under the shim within 2%% of plain: %+.1f%% in instructions, **%s** (in time, best of %d: %+.1f%%, which the load of a shared machine moves by more than that).",
			100 * (s / p - 1), s / p <= 1.02 ? "met" : "MISSED", '"$reps"', 100 * (r - 1) }')"
	note ""
else
	note "Instruction counts skipped: valgrind is not installed."
	note ""
fi
if [ -f "$csv" ]; then
	awk -v a="$best_pp_plain" -v b="$best_pp_shim" -v c="$best_op_plain" -v d="$best_op_shim" \
		-v n1="$n1" -v n2="$n2" 'BEGIN {
		printf "preload,curl,per-process,1,us_per_request_plain,%.6g,us\n", a / n1 / 1000
		printf "preload,curl,per-process,1,us_per_request_shim,%.6g,us\n", b / n1 / 1000
		printf "preload,curl,per-process,1,ratio_shim_over_plain,%.6g,x\n", b / a
		printf "preload,curl,one-process,1,us_per_request_plain,%.6g,us\n", c / n2 / 1000
		printf "preload,curl,one-process,1,us_per_request_shim,%.6g,us\n", d / n2 / 1000
		printf "preload,curl,one-process,1,ratio_shim_over_plain,%.6g,x\n", d / c
	}' >>"$csv"
	if [ -n "$ir_plain" ] && [ -n "$ir_shim" ]; then
		awk -v p="$ir_plain" -v s="$ir_shim" 'BEGIN {
			printf "preload,curl,per-process,1,instructions_plain,%d,count\n", p
			printf "preload,curl,per-process,1,instructions_shim,%d,count\n", s
			printf "preload,curl,per-process,1,instructions_ratio_shim_over_plain,%.6g,x\n", s / p
		}' >>"$csv"
	fi
fi
if [ "$governed" != "$expect" ] || [ "$fails" -ne 0 ]; then
	note "WARNING: the shim did not govern every request or some failed; the ratio above is not the shim's cost."
	exit 1
fi
exit 0
