#!/bin/sh
# deps.sh - make sure the Debian packages a target needs are installed.
#
# Usage: scripts/deps.sh [--check] GROUP...
#        (groups: build, test, bench, fuzz, prom, valgrind, lint, python)
# As root it runs apt-get; otherwise it prints the exact command and fails.
# With --check it never installs: it names what is missing and how to
# install it, and fails (what `make` runs: make never installs packages;
# .ci/run and people run this script without --check).
# Every package the project uses is listed here once, by group.
set -eu
check_only=0
if [ "${1:-}" = "--check" ]; then
	check_only=1
	shift
fi

pkgs_build="gcc make pkg-config liburcu-dev libcjson-dev libcurl4-openssl-dev libhiredis-dev"
pkgs_test="libcunit1-dev curl groff-base redis-server python3"
pkgs_bench="redis-server gnuplot-nox curl"
pkgs_fuzz="clang libclang-rt-14-dev"
pkgs_prom="prometheus"
pkgs_valgrind="valgrind"
pkgs_lint="clang-tidy cppcheck"
pkgs_python="python3 python3-httpx python3-pytest"

want=""
for g in "$@"; do
	eval "want=\"\$want \$pkgs_$g\""
done

missing=""
for p in $want; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
	*"install ok installed"*) ;;
	*) case " $missing " in *" $p "*) ;; *) missing="$missing $p" ;; esac ;;
	esac
done
[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ $check_only = 1 ]; then
	echo "deps: missing Debian packages:$missing" >&2
	echo "deps: install them with:  scripts/deps.sh $* (as root), or apt-get update && $cmd" >&2
	exit 1
fi
if [ "$(id -u)" = 0 ]; then
	echo "deps: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	# Refresh the package lists when they are missing or over a day old.
	if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
		apt-get update -qq >&2
	fi
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >&2
else
	echo "deps: missing Debian packages:$missing" >&2
	echo "deps: run as root:  apt-get update && $cmd" >&2
	exit 1
fi
