# harness.sh - what the shim's test scripts share (sourced, not run):
# a scratch directory, cleanup on exit of the servers they started and the
# segments they made, the environment the shim reads cleared, and the
# assertions.
#
#   harness_init NAME   # makes $T; the script defines seg_rm NAME (how
#                       # a segment it made is removed)
#   PIDS="$PIDS $pid"; SEGS="$SEGS $name"   # cleaned up on exit
#   check "what" CMD... # ok or FAIL, counted
#   start_mock NAME ARGS...  # $MOCK on a free port (MOCK_BOUNDS: its
#                       # --max-seconds and --max-requests); NAME_pid,
#                       # NAME_port, NAME_url
#   harness_done        # the summary line; the exit status
# shellcheck shell=bash disable=SC2034

harness_init() {
	T=$(mktemp -d "${TMPDIR:-/tmp}/shl-$1.XXXXXX") || exit 1
	PIDS="" SEGS=""
	pass=0 fail=0
	trap harness_cleanup EXIT
	trap 'exit 1' INT TERM
	unset SHMLIMIT_SEGMENT SHMLIMIT_HOSTS SHMLIMIT_WAIT_MS SHMLIMIT_ROUTE
}

harness_cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	for s in $SEGS; do seg_rm "$s" >/dev/null 2>&1; done
	[ -n "${KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}

harness_done() {
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
}

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
eq() { [ "$1" = "$2" ] || { echo "       expected '$2', got '$1'" >&2; return 1; }; }
ge() { [ "$1" -ge "$2" ] || { echo "       expected >= $2, got '$1'" >&2; return 1; }; }
le() { [ "$1" -le "$2" ] || { echo "       expected <= $2, got '$1'" >&2; return 1; }; }
has() { grep -q -- "$1" "$2" || { echo "       '$1' not in $2: $(head -c 300 "$2")" >&2; return 1; }; }
lines() { wc -l < "$1" | tr -d ' '; }

# start_mock NAME ARGS...: start a server; sets NAME_pid, NAME_port, NAME_url.
MOCK_BOUNDS="--max-seconds 300 --max-requests 2000"
start_mock() {
	local name=$1; shift
	# shellcheck disable=SC2086
	"$MOCK" --port 0 --port-file "$T/$name.port" $MOCK_BOUNDS "$@" 2>"$T/$name.err" &
	local pid=$! i=0
	PIDS="$PIDS $pid"
	while [ ! -s "$T/$name.port" ] && [ $i -lt 200 ] && kill -0 "$pid" 2>/dev/null; do
		sleep 0.05; i=$((i + 1))
	done
	[ -s "$T/$name.port" ] || { echo "FATAL: mock $name did not start: $(cat "$T/$name.err")"; exit 1; }
	eval "${name}_pid=$pid; ${name}_port=$(cat "$T/$name.port")"
	eval "${name}_url=http://127.0.0.1:\$${name}_port"
}
