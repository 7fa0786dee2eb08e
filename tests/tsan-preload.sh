#!/bin/bash
# tsan-preload.sh - the preload shim's multi-threaded libcurl worker under
# ThreadSanitizer (issue 13, defect 10): the shim and the library built with
# -fsanitize=thread (TSAN_BUILD), the worker too, against the mock server
# (MOCK_BUILD, not instrumented: another process).  Any TSan report fails.
#
# usage: tests/tsan-preload.sh TSAN_BUILD MOCK_BUILD
set -u
TB=$1 MB=$2
T=$(mktemp -d /tmp/shl-tsan-preload.XXXXXX)
SEG=shl-tsan-preload-$$
MPID=
cleanup() { [ -n "$MPID" ] && kill "$MPID" 2>/dev/null; "$MB/shmlimit-preload-seg" rm $SEG 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
"$MB/shmlimit-mock" --port 0 --port-file "$T/port" --max-seconds 100 --max-requests 2000 2>"$T/mock.err" &
MPID=$!
for _ in $(seq 200); do [ -s "$T/port" ] && break; sleep 0.05; done
[ -s "$T/port" ] || { echo "tsan-preload: the mock did not start: $(cat "$T/mock.err")"; exit 1; }
port=$(cat "$T/port")
"$MB/shmlimit-preload-seg" create $SEG "$(dirname "$0")/../preload/tests/fleet.json" || exit 1
TSAN_OPTIONS="halt_on_error=1:exitcode=66:report_signal_unsafe=0" \
	SHMLIMIT_SEGMENT=$SEG SHMLIMIT_HOSTS=127.0.0.1:$port LD_PRELOAD=$TB/libshmlimit-preload.so \
	"$TB/shmlimit-preload-worker" --url "http://127.0.0.1:$port/v1/messages" --threads 6 \
	--requests 5 --model claude-sonnet-4-5 >"$T/out" 2>"$T/err"
rc=$?
adm=$("$MB/shmlimit-preload-seg" stats $SEG | awk '$1 == "sonnet.admitted" { print $2 }')
if [ $rc -eq 0 ] && grep -q "30 ok, 0 failed" "$T/out" && ! grep -q "ThreadSanitizer" "$T/err" &&
	[ "$adm" = 30 ]; then
	echo "tsan-preload: 6 threads x 5 requests under the shim, no ThreadSanitizer report: 1 passed, 0 failed"
	exit 0
fi
echo "tsan-preload: exit $rc, shim admitted ${adm:-?} of 30; $(cat "$T/out")"
grep -A 30 "ThreadSanitizer" "$T/err" | head -60
echo "tsan-preload: 0 passed, 1 failed"
exit 1
