#!/bin/bash
# valgrind.sh - the tools under valgrind memcheck: shmlimit-stat (table,
# --json, --prometheus, --watch), shmlimit-ctl (every command, and error
# paths: an existing or missing segment, a bad configuration, a used
# ticket, an unknown model) and shmlimit-plan, each run checked for its own
# exit status and for zero memcheck errors and definite leaks.
#
# Usage: tests/valgrind.sh [BUILD_DIR]
# Segments are named with the pid and removed on exit.
set -u

B=${1:-build}
STAT=$B/shmlimit-stat CTL=$B/shmlimit-ctl PLAN=$B/shmlimit-plan
T=$(mktemp -d "${TMPDIR:-/tmp}/shl-valgrind.XXXXXX") || exit 1
N=shl-vg-$$
cleanup() {
	"$CTL" rm "$N" >/dev/null 2>&1
	"$CTL" rm "$N-b" >/dev/null 2>&1
	"$CTL" rm "$N-s" >/dev/null 2>&1
	[ -n "${KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
command -v valgrind >/dev/null || { echo "valgrind is not installed (scripts/deps.sh valgrind)"; exit 1; }

pass=0 fail=0 k=0
# vg WANT CMD...: run CMD under memcheck; it must exit WANT with no error.
# Its stdout is left in $T/out (and $T/out.K).
vg() {
	local want=$1; shift
	k=$((k + 1))
	valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
		--show-leak-kinds=definite --log-file="$T/vg.$k" "$@" > "$T/out.$k" 2>"$T/err.$k"
	local rc=$?
	cp "$T/out.$k" "$T/out"
	local what="${*#"$B"/}"
	if [ "$rc" = "$want" ] && [ ! -s "$T/vg.$k" ]; then
		pass=$((pass + 1)); echo "ok   - $what (exit $rc, memcheck clean)"
	else
		fail=$((fail + 1)); echo "FAIL - $what: exit $rc (want $want)"
		head -n 40 "$T/vg.$k" "$T/err.$k" | sed 's/^/       /'
	fi
}

# The stat tool (on a segment of its own, with some traffic) and the
# planner run alongside shmlimit-ctl's sequence (2 cores).
side_runs() {
	local HERE
	HERE=$(cd "$(dirname "$0")/.." && pwd)
	k=1000
	echo "# shmlimit-stat"
	"$CTL" create "$N-s" --tier 2 >/dev/null || echo "FAIL - create $N-s"
	for i in 1 2 3; do
		t=$("$CTL" try "$N-s" claude-haiku-4-5 --input 500 --output 200 | grep -o 'ticket=[^ ]*')
		"$CTL" settle "$N-s" "${t#ticket=}" --input 480 --output 150 >/dev/null
	done
	vg 0 "$STAT" --help
	vg 0 "$STAT" "$N-s"
	vg 0 "$STAT" --json "$N-s"
	vg 0 "$STAT" --prometheus "$N-s"
	vg 0 "$STAT" --watch 0.1 --count 2 "$N-s"
	vg 3 "$STAT" "$N-none"
	# scribbled over (its first configuration slot): reported corrupt, exit 6
	printf '\377\377\377\377\377\377\377\377' |
		dd of="/dev/shm/$N-s" bs=1 seek=64 conv=notrunc 2>/dev/null
	vg 6 "$STAT" --json "$N-s"
	vg 6 "$CTL" check "$N-s"
	"$CTL" rm "$N-s" >/dev/null
	echo "# shmlimit-plan"
	vg 0 "$PLAN" --help
	vg 0 "$PLAN" --tier 2 "$HERE/plan/example-mix.json"
	vg 0 "$PLAN" --tier 4 --json "$HERE/plan/example-mix.json"
	vg 0 "$PLAN" --config "$HERE/libshmlimit/presets/tier1.json" "$HERE/plan/example-mix.json"
	echo '{"tasks":[{"name":"x"}]}' > "$T/badmix.json"
	vg 1 "$PLAN" --tier 1 "$T/badmix.json"
	echo "$pass $fail" > "$T/side.count"
}
side_runs > "$T/side.log" 2>&1 &
side_pid=$!

echo "# shmlimit-ctl"
vg 0 "$CTL" --help
vg 0 "$CTL" create "$N" --tier 1
vg 8 "$CTL" create "$N" --tier 1
vg 0 "$CTL" show "$N"
cp "$T/out" "$T/cfg.json"
vg 0 "$CTL" apply "$N" --tier 2
vg 0 "$CTL" apply "$N" "$T/cfg.json"
echo '{"pools":[{"name":"x","rpm":-1}]}' > "$T/bad.json"
vg 7 "$CTL" apply "$N" "$T/bad.json"
vg 1 "$CTL" apply "$N" "$T/no-such-file.json"
vg 0 "$CTL" create "$N-b" --config "$T/cfg.json"
vg 0 "$CTL" try "$N" claude-sonnet-4-5 --input 100 --output 50 --cache-write-5m 10
ticket=$(grep -o 'ticket=[^ ]*' "$T/out" | cut -d= -f2)
vg 0 "$CTL" settle "$N" "$ticket" --input 90 --output 40 --cache-read 5
vg 2 "$CTL" settle "$N" "t1:${ticket#t1:?}" --input 90
# A model the preset does not name goes to its catch-all pool (the note on
# stderr included); an id no entry has and no policy catches is exit 11.
vg 0 "$CTL" try "$N" no-such-model --input 1
vg 11 "$CTL" try "$N" count_tokens --input 1
vg 2 "$CTL" try "$N" claude-sonnet-4-5 --input many
vg 0 "$CTL" route "$N" claude-opus-4-5,claude-sonnet-4-5 --input 10 --output 10
ticket=$(grep -o 'ticket=[^ ]*' "$T/out" | cut -d= -f2)
vg 0 "$CTL" cancel "$N" "$ticket"
vg 0 "$CTL" hold "$N" sonnet 1
vg 0 "$CTL" check "$N"
vg 0 "$CTL" reset "$N" --all

vg 0 "$STAT" --json "$N"
echo "# shmlimit-ctl rm, and a missing segment"
vg 0 "$CTL" rm "$N-b"
vg 0 "$CTL" rm "$N"
vg 3 "$CTL" show "$N"

wait "$side_pid"
cat "$T/side.log"
read -r p f < "$T/side.count" 2>/dev/null || { p=0 f=1; }
pass=$((pass + p)) fail=$((fail + f))

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
