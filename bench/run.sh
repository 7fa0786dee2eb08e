#!/bin/sh
# run.sh - what `make bench` (full) and `make bench-quick` (quick) run:
# the comparison binary, the plot, the preload's cost, then the Python and
# Node.js bindings' costs (bench/python-cost.sh, bench/node-cost.js).
#
# Usage: bench/run.sh full|quick [OUTDIR]     (from the top of the tree)
# Results: OUTDIR (default build/bench): results.md, results.csv,
# contention-*.dat, plot.gp, contention.png.
set -eu
mode=${1:-quick}
out=${2:-build/bench}
case $mode in
quick) flag=--quick ;;
full) flag= ;;
*) echo "usage: bench/run.sh full|quick [OUTDIR]" >&2; exit 2 ;;
esac
mkdir -p "$out"
# shellcheck disable=SC2086
build/shmlimit-bench $flag --out "$out"
if command -v gnuplot >/dev/null 2>&1; then
	gnuplot "$out/plot.gp" && echo "plot: $out/contention.png"
else
	echo "plot skipped: gnuplot is not installed (scripts/deps.sh bench installs gnuplot-nox)"
fi
bench/preload-cost.sh "$mode" "$out"
# The bindings (issue 14): each skips, saying why, when its runtime, the
# library or the mock is missing.
bench/python-cost.sh "$mode" "$out"
if command -v node >/dev/null 2>&1; then
	node bench/node-cost.js "$mode" "$out"
else
	echo "Node.js package cost skipped: node is not installed" | tee -a "$out/results.md"
fi
if command -v redis-server >/dev/null 2>&1; then
	build/shmlimit-cluster-bench --agent build/shmlimit-agent $flag --out "$out" &&
		cat "$out/cluster.md" >> "$out/results.md"
else
	echo "multi-host bench skipped: redis-server is not installed (scripts/deps.sh bench)"
fi
echo "report: $out/results.md"
