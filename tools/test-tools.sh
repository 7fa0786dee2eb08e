#!/bin/bash
# test-tools.sh - drive the real shmlimit-stat and shmlimit-ctl binaries.
#
# usage: tools/test-tools.sh STAT CTL ADMITTER
# SHL_FAST=1 skips the one timed section (concurrent route loops).
# Every segment is named shltt-<pid>-*, and all of them are removed on exit,
# also on failure.  Waits are bounded polls on a condition, never a sleep
# that a pass depends on.  Ends with "N passed, N failed".
set -u
STAT=$(readlink -f "$1") CTL=$(readlink -f "$2") ADMITTER=$(readlink -f "$3")
cd "$(dirname "$0")/.." || exit 1
P=shltt-$$
TMP=$(mktemp -d /tmp/shltt.XXXXXX)
BGPID=
cleanup() {
	[ -n "$BGPID" ] && kill "$BGPID" 2>/dev/null
	rm -f /dev/shm/$P-*
	rm -rf "$TMP"
}
trap cleanup EXIT
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
skipped() { skip=$((skip + 1)); echo "skip $*"; }
# expect CODE DESC CMD...: run CMD, compare its exit status.
expect() {
	local want=$1 desc=$2; shift 2
	"$@" >"$TMP/out" 2>"$TMP/err"
	local got=$?
	if [ "$got" -eq "$want" ]; then ok "$desc (exit $got)"; else
		bad "$desc: exit $got, expected $want"; sed 's/^/     | /' "$TMP/out" "$TMP/err" | head -5; fi
}
# check DESC COND...: a test(1)/shell condition.
check() { local desc=$1; shift; if "$@"; then ok "$desc"; else bad "$desc"; fi; }
# jq-like field read with python: jget FILE EXPR (EXPR on `d`).
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# ---------------------------------------------------------------- presets
for tier in 1 2 3 4 start build scale; do
	N=$P-tier$tier
	expect 0 "create --tier $tier" "$CTL" create $N --tier $tier
	"$STAT" --json $N >"$TMP/t.json"; rc=$?
	check "stat --json on tier $tier (exit $rc)" [ $rc -eq 0 ]
	# Each pool's limits in stat --json equal the preset file's.
	if python3 - "$TMP/t.json" libshmlimit/presets/$( [ "${#tier}" = 1 ] && echo tier)$tier.json <<'PY'
import json, sys
st = json.load(open(sys.argv[1])); pre = json.load(open(sys.argv[2]))
assert [p["name"] for p in st["pools"]] == [p["name"] for p in pre["pools"]], "pool names"
for sp, pp in zip(st["pools"], pre["pools"]):
    for k in ("rpm", "itpm", "otpm"):
        assert sp["limit"][k] == pp[k], (sp["name"], k, sp["limit"][k], pp[k])
cap = pre.get("spend_cap_usd")
assert st["spend"]["cap_usd"] == cap, ("cap", st["spend"]["cap_usd"], cap)
# The catch-all pool (unknown_model) is one hidden model entry more.
assert st["nmodels"] == len(pre["models"]) + ("pool" in (pre.get("unknown_model") or {})), "nmodels"
assert st["unknown_model"]["pool"] == (pre.get("unknown_model") or {}).get("pool"), "catch-all"
PY
	then ok "tier $tier: limits, pool names, cap and model count match the preset"
	else bad "tier $tier: stat --json differs from the preset"; fi
	expect 0 "check on tier $tier" "$CTL" check $N
	expect 0 "rm tier $tier" "$CTL" rm $N
	check "rm removed /dev/shm/$N" [ ! -e /dev/shm/$N ]
done

# ---------------------------------------------------------------- create / exists / force / config errors
N=$P-main
expect 0 "create main --tier 1" "$CTL" create $N --tier 1
expect 8 "create over an existing segment is refused" "$CTL" create $N --tier 2
grep -q "already exists" "$TMP/err" && ok "message says it already exists" || bad "exists message: $(cat "$TMP/err")"
expect 0 "create --force replaces it" "$CTL" create $N --tier 2 --force
"$STAT" --json $N >"$TMP/s.json"
check "the replaced segment has tier 2 limits" [ "$(jget "$TMP/s.json" 'd["pools"][1]["limit"]["rpm"]')" = 1000 ]
echo '{"spend_cap_usd": 5, "pools": [{"name": "p", "rpm": -3, "itpm": 1, "otpm": 1}], "models": []}' >"$TMP/badcfg.json"
expect 7 "create from an invalid config" "$CTL" create $P-bad --config "$TMP/badcfg.json"
grep -q "rpm" "$TMP/err" && ok "the config error names the key (rpm)" || bad "config error: $(cat "$TMP/err")"
check "no segment left by a failed create" [ ! -e /dev/shm/$P-bad ]
expect 1 "create from a missing file" "$CTL" create $P-bad --config "$TMP/nope.json"
expect 2 "create with neither --tier nor --config" "$CTL" create $P-bad
expect 2 "create --tier 9" "$CTL" create $P-bad --tier 9
expect 2 "unknown command" "$CTL" frobnicate $N
expect 2 "reset without saying what" "$CTL" reset $N
for sub in create apply show reset rm check try route hold settle cancel; do
	"$CTL" $sub --help >"$TMP/out" 2>&1; rc=$?
	if [ $rc -eq 0 ] && grep -q "^Usage: shmlimit-ctl $sub" "$TMP/out"; then ok "ctl $sub --help"; else bad "ctl $sub --help (exit $rc)"; fi
done
expect 0 "stat --help" "$STAT" --help
expect 0 "ctl --version" "$CTL" --version

# ---------------------------------------------------------------- show / create round trip
"$CTL" show $N >"$TMP/show1.json"
expect 0 "create from show output (stdin)" sh -c "\"$CTL\" create $P-copy --config - < \"$TMP/show1.json\""
"$CTL" show $P-copy >"$TMP/show2.json"
check "show | create | show is identical" cmp -s "$TMP/show1.json" "$TMP/show2.json"
expect 0 "apply the show output back" "$CTL" apply $P-copy "$TMP/show1.json"
"$CTL" show $P-copy >"$TMP/show3.json"
check "apply of show output leaves show unchanged" cmp -s "$TMP/show1.json" "$TMP/show3.json"
"$CTL" rm $P-copy >/dev/null

# ---------------------------------------------------------------- try / settle / cancel and JSON fields
cat >"$TMP/small.json" <<'J'
{"spend_cap_usd": 10, "pools": [
 {"name": "sonnet", "rpm": 1, "itpm": 60000, "otpm": 12000, "burst": {"rpm": 3, "itpm": 6000, "otpm": 1200},
  "prices": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}}],
 "models": [{"match": "claude-sonnet-4*", "pool": "sonnet"}]}
J
N=$P-try
expect 0 "create from a config file" "$CTL" create $N --config "$TMP/small.json"
expect 0 "try admits" "$CTL" try $N claude-sonnet-4-5 --input 1000 --output 200
T1=$(sed -n 's/.* ticket=\([^ ]*\).*/\1/p' "$TMP/out")
grep -q "^admitted model=claude-sonnet-4-5 pool=sonnet " "$TMP/out" && ok "try prints the decision and pool" || bad "try output: $(cat "$TMP/out")"
check "ticket has 16 colon-separated fields" [ "$(echo "$T1" | tr ':' '\n' | wc -l)" -eq 16 ]
expect 0 "settle the ticket from another process" "$CTL" settle $N "$T1" --input 1000 --output 200
expect 0 "second try admits" "$CTL" try $N claude-sonnet-4-5 --input 500 --max-tokens 100
T2=$(sed -n 's/.* ticket=\([^ ]*\).*/\1/p' "$TMP/out")
expect 0 "cancel a ticket" "$CTL" cancel $N "ticket=$T2"
# The rpm bucket holds 3 and refills one a minute: admit until refused
# (bounded), then cancel the extra tickets so that only T1's spend remains.
ADM=2 CAN=1 T3= OPEN=
for i in 1 2 3 4 5; do
	"$CTL" try $N claude-sonnet-4-5 --input 10 --output 10 >"$TMP/out" 2>"$TMP/err"; rc=$?
	[ $rc -ne 0 ] && break
	ADM=$((ADM + 1)); T3=$(sed -n 's/.* ticket=\([^ ]*\).*/\1/p' "$TMP/out"); OPEN="$OPEN $T3"
done
check "try is refused once the rpm burst is used up (exit $rc)" [ $rc -eq 9 ]
check "at most 3 more admissions before the refusal ($((ADM - 2)))" [ $((ADM - 2)) -le 3 ]
grep -q "^refused .*dimension=rpm wait=[0-9.]* need=1 capacity=3" "$TMP/out" && ok "refusal names rpm, the wait, need and capacity" || bad "refusal output: $(cat "$TMP/out")"
[ -n "$T3" ] || T3=$T2
for T in $OPEN; do "$CTL" cancel $N "$T" >/dev/null && CAN=$((CAN + 1)); done
# --wait: a pool refilling 10 requests a second, burst 1, after its one token is taken.
sed 's/"rpm": 1,/"rpm": 600,/; s/"burst": {"rpm": 3,/"burst": {"rpm": 1,/' "$TMP/small.json" >"$TMP/fast.json"
"$CTL" create $P-wait --config "$TMP/fast.json" >/dev/null
"$CTL" try $P-wait claude-sonnet-4-5 --input 1 --output 1 >/dev/null
expect 0 "try --wait is admitted" "$CTL" try $P-wait claude-sonnet-4-5 --input 10 --output 10 --wait 10
grep -q "^admitted .*waited=[0-9.]* ticket=t1:" "$TMP/out" && ok "try --wait prints the time waited" || bad "wait output: $(cat "$TMP/out")"
"$CTL" rm $P-wait >/dev/null
expect 10 "a request larger than the itpm burst can never be admitted" "$CTL" try $N claude-sonnet-4-5 --input 100000
grep -q "^never .*dimension=itpm" "$TMP/out" && ok "never names itpm" || bad "never output: $(cat "$TMP/out")"
expect 10 "try: a request whose worst case passes the spend cap" "$CTL" try $N claude-sonnet-4-5 --output 700000
grep -q "^never model=claude-sonnet-4-5 pool=sonnet dimension=spend need=[0-9]* capacity=10000000000 " "$TMP/out" && ok "never names spend and the cap" || bad "spend output: $(cat "$TMP/out")"
expect 10 "route: the same request over the spend cap" "$CTL" route $N claude-sonnet-4-5,claude-sonnet-4-5-x --output 700000
grep -q "^never model=claude-sonnet-4-5 pool=sonnet dimension=spend need=1050[0-9]\{7\} capacity=10000000000 " "$TMP/out" && ok "route's never names spend, the need and the cap" || bad "route spend output: $(cat "$TMP/out")"
# Routing past a spend refusal: with $1 left, Opus 4.5's worst case for
# 50,000 output tokens ($1.25) does not fit but Haiku 4.5's ($0.25) does.
sed 's/"spend_cap_usd": 100,/"spend_cap_usd": 1,/' libshmlimit/presets/tier1.json >"$TMP/cap1.json"
"$CTL" create $P-cap1 --config "$TMP/cap1.json" >/dev/null
expect 10 "try: opus over the \$1 cap" "$CTL" try $P-cap1 claude-opus-4-5 --input 10 --max-tokens 50000
expect 0 "try: haiku under the \$1 cap" "$CTL" try $P-cap1 claude-haiku-4-5 --input 10 --max-tokens 50000
"$CTL" cancel $P-cap1 "$(sed -n 's/.*ticket=//p' "$TMP/out")" >/dev/null
expect 0 "route: opus refused on spend, goes on to haiku" "$CTL" route $P-cap1 claude-opus-4-5,claude-haiku-4-5 --input 10 --max-tokens 50000
grep -q "^admitted model=claude-haiku-4-5 pool=haiku " "$TMP/out" && ok "route admitted on haiku" || bad "route past spend: $(cat "$TMP/out")"
"$CTL" cancel $P-cap1 "$(sed -n 's/.*ticket=//p' "$TMP/out")" >/dev/null
expect 10 "route: every model of the list refused on spend" "$CTL" route $P-cap1 claude-haiku-4-5,claude-opus-4-5 --input 10 --max-tokens 250000
grep -q "^never model=claude-haiku-4-5 pool=haiku dimension=spend need=12500[0-9]\{5\} capacity=1000000000 " "$TMP/out" && ok "route's never names the first model refused on spend, its need and the cap" || bad "route spend output: $(cat "$TMP/out")"
"$STAT" --json $P-cap1 >"$TMP/cap1s.json"
check "the refused routes left nothing admitted or reserved" [ "$(jget "$TMP/cap1s.json" 'sum(p["counters"]["admitted"] - p["counters"]["cancelled"] for p in d["pools"]), d["spend"]["spent_usd"] == 0')" = "(0, True)" ]
"$CTL" rm $P-cap1 >/dev/null
expect 11 "unknown model" "$CTL" try $N gpt-4 --input 1
grep -q "gpt-4" "$TMP/err" && ok "unknown model message names the model" || bad "msg: $(cat "$TMP/err")"
expect 2 "malformed ticket" "$CTL" settle $N "t1:1:2:3" --input 1
expect 2 "non-numeric token count" "$CTL" try $N claude-sonnet-4-5 --input 12abc
grep -q -- "--input: '12abc'" "$TMP/err" && ok "count error names the flag and value" || bad "msg: $(cat "$TMP/err")"
USED=$(echo "$T3" | awk -F: 'BEGIN{OFS=":"} {$4=2; print}')
expect 12 "settling a ticket marked settled" "$CTL" settle $N "$USED" --input 1

"$STAT" --json $N >"$TMP/j.json"
if python3 - "$TMP/j.json" "$N" $ADM $CAN <<'PY'
import json, sys, re, time
d = json.load(open(sys.argv[1])); name = sys.argv[2]
def eq(a, b, what):
    assert a == b, "%s: %r != %r" % (what, a, b)
eq(d["segment"], name, "segment")
assert isinstance(d["generation"], int) and d["generation"] >= 1, "generation"
assert abs(d["created_unix"] - time.time()) < 3600, "created_unix"
eq(d["npools"], 1, "npools"); eq(d["nmodels"], 1, "nmodels")
sp = d["spend"]
assert re.fullmatch(r"\d{4}-\d{2}", sp["month"]), "month"
eq(sp["cap_usd"], 10, "cap_usd"); eq(sp["exhausted"], False, "exhausted")
assert re.fullmatch(r"\d{4}-\d{2}-01T00:00:00Z", sp["resets_utc"]), "resets_utc"
assert sp["resets_unix"] > time.time() and sp["resets_unix"] % 86400 == 0, "resets_unix"
# Settled: 1000 in * $3/M + 200 out * $15/M = $0.006; everything else was cancelled.
assert abs(sp["spent_usd"] - 0.006) < 1e-12, "spent_usd %r" % sp["spent_usd"]
p = d["pools"][0]
eq(p["name"], "sonnet", "name")
eq(p["limit"], {"rpm": 1, "itpm": 60000, "otpm": 12000}, "limit")
eq(p["burst"], {"rpm": 3, "itpm": 6000, "otpm": 1200}, "burst")
for k in ("rpm", "itpm", "otpm"):
    assert p["available"][k] <= p["burst"][k], "available " + k
    assert 0 <= p["used_pct"][k] <= 100, "used_pct " + k
eq(p["used_last_minute"]["itpm"], 1000, "used_last_minute.itpm (the settled request)")
eq(p["otpm_mode"], "actual", "otpm_mode"); eq(p["cache_reads_count"], False, "cache_reads_count")
eq(p["hold_seconds"], 0, "hold_seconds")
c = p["counters"]
eq(c["admitted"], int(sys.argv[3]), "admitted"); eq(c["settled"], 1, "settled"); eq(c["cancelled"], int(sys.argv[4]), "cancelled")
assert c["refused"] >= 1, "refused"
eq(p["tokens"]["input"], 1000, "tokens.input"); eq(p["tokens"]["output"], 200, "tokens.output")
assert abs(p["spend_usd"] - 0.006) < 1e-12, "pool spend_usd %r" % p["spend_usd"]
eq(p["prices"], {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}, "prices")
# settled through shl_settle, not a read response: nothing learned yet
eq(p["estimate"], {"ratio": 1.25, "samples": 0}, "estimate")  # the prior, before any settlement
PY
then ok "stat --json: every field checked"; else bad "stat --json field check"; fi

# The table shows the same snapshot.
expect 0 "stat table" "$STAT" $N
grep -q "^sonnet  *requests  *1  *3 " "$TMP/out" && ok "table row: sonnet rpm limit 1 burst 3" || bad "table: $(head -4 "$TMP/out")"
grep -q "^spend [0-9-]*: \$0.006000 of \$10.00 cap" "$TMP/out" && ok "table spend line" || bad "spend line: $(grep spend "$TMP/out")"
grep -q "admitted $ADM " "$TMP/out" && ok "table counters" || bad "counters: $(grep admitted "$TMP/out")"
grep -q "estimate ratio 1.250 (learned from 0 settlements)" "$TMP/out" && ok "table estimate ratio" || bad "estimate: $(grep estimate "$TMP/out")"
expect 0 "SHMLIMIT_SEGMENT names the segment" env SHMLIMIT_SEGMENT=$N "$STAT" --json
expect 2 "stat without a name" env -u SHMLIMIT_SEGMENT "$STAT"

# ---------------------------------------------------------------- Prometheus
"$STAT" --prometheus $N >"$TMP/prom.txt"
check "every sample's metric has HELP and TYPE" python3 - "$TMP/prom.txt" <<'PY'
import sys, re
help_, type_ = set(), {}
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("# HELP "): help_.add(line.split()[2]); continue
    if line.startswith("# TYPE "): _, _, m, t = line.split(); type_[m] = t; continue
    m = re.fullmatch(r'([a-z_]+)\{([^}]*)\} (\S+)', line)
    if not m: sys.exit("bad line: " + line)
    name = m.group(1); float(m.group(3))
    if name not in help_ or name not in type_: sys.exit("no HELP/TYPE for " + name)
    if (type_[name] == "counter") != name.endswith("_total"): sys.exit("counter naming: " + name)
PY
grep -q "^shmlimit_pool_requests_total{segment=\"$N\",pool=\"sonnet\",result=\"admitted\"} $ADM$" "$TMP/prom.txt" && ok "prometheus admitted counter" || bad "prometheus admitted counter"
grep -q "^shmlimit_spend_cap_dollars{segment=\"$N\"} 10$" "$TMP/prom.txt" && ok "prometheus spend cap" || bad "prometheus spend cap"
# Naming (issue 13, defect 9): requests and tokens never share a metric, every
# metric carries its unit, and the metrics are exactly those tools/README.md lists.
check "prometheus names: no dimension label, units in names, as documented" python3 - "$TMP/prom.txt" tools/README.md <<'PY'
import sys, re
names, labels = set(), {}
for line in open(sys.argv[1]):
    m = re.match(r'([a-z_]+)\{([^}]*)\}', line)
    if m:
        names.add(m.group(1))
        labels.setdefault(m.group(1), set()).update(re.findall(r'(\w+)=', m.group(2)))
doc = set(re.findall(r'^\| `(shmlimit_[a-z_]+)` \|', open(sys.argv[2]).read(), re.M))
if names - doc: sys.exit("undocumented: %s" % sorted(names - doc))
missing = doc - names - {"shmlimit_attach_failures_total", "shmlimit_unknown_model_lookups_total"}
if missing: sys.exit("documented, not output: %s" % sorted(missing))
for n, l in labels.items():
    if "dimension" in l: sys.exit("%s mixes requests and tokens through a dimension label" % n)
units = ("_requests", "_tokens", "_seconds", "_dollars", "_total", "_per_second", "_info", "_ratio")
unitless = {"shmlimit_config_generation", "shmlimit_spend_exhausted", "shmlimit_pool_provisional"}
for n in names:
    if n not in unitless and not n.endswith(units): sys.exit("no unit in the name: " + n)
    if "_requests" in n and "kind" in labels[n]: sys.exit("requests metric with a token kind: " + n)
PY
grep -q "^shmlimit_pool_burst_requests{segment=\"$N\",pool=\"sonnet\"} 3$" "$TMP/prom.txt" && ok "prometheus: burst of requests" || bad "burst_requests: $(grep burst "$TMP/prom.txt" | head -3)"
grep -q "^shmlimit_pool_limit_tokens_per_second{segment=\"$N\",pool=\"sonnet\",kind=\"input\"} " "$TMP/prom.txt" && ok "prometheus: input token rate" || bad "limit_tokens: $(grep limit "$TMP/prom.txt" | head -3)"
grep -q "^shmlimit_pool_estimate_ratio{segment=\"$N\",pool=\"sonnet\"} 1.25$" "$TMP/prom.txt" && ok "prometheus estimate ratio" || bad "prometheus estimate ratio: $(grep estimate_ratio "$TMP/prom.txt")"
if command -v promtool >/dev/null 2>&1; then
	if promtool check metrics <"$TMP/prom.txt" >"$TMP/pt" 2>&1; then ok "promtool check metrics"; else bad "promtool check metrics: $(cat "$TMP/pt")"; fi
else
	skipped "promtool not installed (apt-get install prometheus): promtool check metrics not run"
fi

# ---------------------------------------------------------------- reset
expect 0 "reset --counters" "$CTL" reset $N --counters
"$STAT" --json $N >"$TMP/j.json"
check "counters are zero after reset" [ "$(jget "$TMP/j.json" 'd["pools"][0]["counters"]["admitted"]')" = 0 ]
expect 0 "reset --spend" "$CTL" reset $N --spend
"$STAT" --json $N >"$TMP/j.json"
check "spend is zero after reset" [ "$(jget "$TMP/j.json" 'd["spend"]["spent_usd"]')" = 0 ]
expect 0 "reset --buckets" "$CTL" reset $N --buckets
"$STAT" --json $N >"$TMP/j.json"
check "buckets are full after reset" [ "$(jget "$TMP/j.json" 'd["pools"][0]["available"]["rpm"] == 3 and d["pools"][0]["available"]["itpm"] == 6000')" = True ]

# ---------------------------------------------------------------- watch mode
expect 0 "stat -w 0.1 -n 3 (not a terminal)" "$STAT" -w 0.1 -n 3 $N
check "plain repeated output: 3 snapshots" [ "$(grep -c '^segment ' "$TMP/out")" -eq 3 ]
check "no terminal escapes when not a terminal" [ "$(grep -c $'\033' "$TMP/out")" -eq 0 ]
"$STAT" --json -w 0.1 -n 2 $N >"$TMP/out"
check "--json --watch: 2 documents" [ "$(grep -c '^{' "$TMP/out")" -eq 2 ]
if command -v script >/dev/null 2>&1; then
	timeout 20 script -qec "$STAT -w 0.1 -n 2 $N" /dev/null >"$TMP/tty" 2>&1
	check "terminal: redraws in place (cursor home)" grep -q $'\033\\[H' "$TMP/tty"
	check "terminal: alternate screen entered and left" grep -q $'\033\\[?1049l' "$TMP/tty"
else
	skipped "script(1) not installed: terminal redraw not checked"
fi
expect 2 "stat -w with a bad interval" "$STAT" -w abc $N

# ---------------------------------------------------------------- live apply while a process admits
cat >"$TMP/live1.json" <<'J'
{"spend_cap_usd": null, "pools": [{"name": "haiku", "rpm": 600, "itpm": 600000, "otpm": 600000,
  "prices": {"input": 1, "output": 5, "cache_write_5m": 1.25, "cache_write_1h": 2, "cache_read": 0.1}}],
 "models": [{"match": "claude-haiku-4-5*", "pool": "haiku"}]}
J
sed 's/"rpm": 600,/"rpm": 1200,/' "$TMP/live1.json" >"$TMP/live2.json"
N=$P-live
"$CTL" create $N --config "$TMP/live1.json" >/dev/null
"$ADMITTER" $N claude-haiku-4-5 400 60 "$TMP/stop" >"$TMP/adm.log" 2>"$TMP/adm.err" &
BGPID=$!
# Bounded poll: wait until it has admitted at least 5 requests.
waitlines() { local pat=$1 n=$2 i; for i in $(seq 1 300); do
	[ "$(grep -c "$pat" "$TMP/adm.log")" -ge "$n" ] && return 0
	kill -0 $BGPID 2>/dev/null || return 1; sleep 0.1; done; return 1; }
waitlines "^admitted gen=" 5; check "the admitter is admitting" [ $? -eq 0 ]
G0=$(jget <("$STAT" --json $N) 'd["generation"]')
expect 0 "apply a new config while it admits" "$CTL" apply $N "$TMP/live2.json"
"$STAT" --json $N >"$TMP/j.json"
check "stat --json shows the new rpm limit" [ "$(jget "$TMP/j.json" 'd["pools"][0]["limit"]["rpm"]')" = 1200 ]
G1=$(jget "$TMP/j.json" 'd["generation"]')
check "generation changed ($G0 -> $G1)" [ "$G1" != "$G0" ]
waitlines "^admitted gen=$G1 rpm=1200" 5; check "the same process keeps admitting under the new generation and limits" [ $? -eq 0 ]
touch "$TMP/stop"; wait $BGPID; rc=$?; BGPID=
check "the admitter finished without errors (exit $rc)" [ $rc -eq 0 ]
check "the admitter saw the old limits before the apply" grep -q "^admitted gen=$G0 rpm=600$" "$TMP/adm.log"
check "no admission reports the old rpm after the new generation" [ "$(grep -c "^admitted gen=$G1 rpm=600$" "$TMP/adm.log")" -eq 0 ]

# ---------------------------------------------------------------- read-only attach by another user
N=$P-ro
"$CTL" create $N --tier 1 >/dev/null
chmod 0644 /dev/shm/$N
if [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null && id nobody >/dev/null 2>&1; then
	BIN=$TMP/bin; mkdir -p "$BIN"; cp "$STAT" "$CTL" "$BIN/"; chmod 755 "$TMP" "$BIN" "$BIN"/*
	expect 0 "stat as nobody with read permission only" runuser -u nobody -- "$BIN/shmlimit-stat" --json $N
	python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$TMP/out" && ok "nobody gets a JSON document" || bad "nobody's JSON"
	expect 0 "ctl show as nobody" runuser -u nobody -- "$BIN/shmlimit-ctl" show $N
	expect 4 "ctl try as nobody is denied (needs write)" runuser -u nobody -- "$BIN/shmlimit-ctl" try $N claude-haiku-4-5 --input 1
	grep -q "permission denied" "$TMP/err" && ok "message says permission denied" || bad "msg: $(cat "$TMP/err")"
	chmod 0600 /dev/shm/$N
	expect 4 "stat as nobody without read permission" runuser -u nobody -- "$BIN/shmlimit-stat" $N
	# issue 13, defect 8: check and create --force by someone who may not.
	expect 4 "ctl check as nobody without read permission" runuser -u nobody -- "$BIN/shmlimit-ctl" check $N
	if grep -q "BAD" "$TMP/out" "$TMP/err"; then bad "check of an unreadable segment says BAD: $(cat "$TMP/out")"
	else grep -q "permission denied" "$TMP/err" && ok "check says permission denied, not BAD" || bad "check msg: $(cat "$TMP/out" "$TMP/err")"; fi
	expect 4 "create --force over another user's segment" runuser -u nobody -- "$BIN/shmlimit-ctl" create $N --tier 2 --force
	grep -q "permission denied" "$TMP/err" && ! grep -q "already exists" "$TMP/err" && ok "create --force says permission denied" || bad "create --force msg: $(cat "$TMP/err")"
	check "the owner's segment is still there" [ -e /dev/shm/$N ]
else
	skipped "not root or no runuser/nobody: read-only attach by another user not checked"
fi

# ---------------------------------------------------------------- error paths
expect 3 "stat: no such segment" "$STAT" $P-nosuch
grep -q "does not exist" "$TMP/err" && ok "message says it does not exist" || bad "msg: $(cat "$TMP/err")"
expect 3 "ctl show: no such segment" "$CTL" show $P-nosuch
expect 3 "ctl rm: no such segment" "$CTL" rm $P-nosuch
expect 3 "ctl apply: no such segment" "$CTL" apply $P-nosuch --tier 1
head -c 65536 /dev/urandom >/dev/shm/$P-junk
expect 5 "stat: garbage segment is incompatible" "$STAT" $P-junk
grep -q "magic" "$TMP/err" && ok "message names the bad magic" || bad "msg: $(cat "$TMP/err")"
expect 5 "ctl check: garbage segment" "$CTL" check $P-junk
grep -q "BAD" "$TMP/out" && ok "check reports BAD" || bad "check output: $(cat "$TMP/out")"
: >/dev/shm/$P-empty
expect 5 "stat: empty segment is incompatible" "$STAT" $P-empty
expect 7 "stat: malformed segment name" "$STAT" 'bad/name'
# A real segment whose layout version is bumped: copy and patch the header.
python3 - /dev/shm/$P-ro /dev/shm/$P-ver <<'PY' && {
import sys
b = bytearray(open(sys.argv[1], "rb").read())
# The magic is 8 bytes, the layout version the next 4 (libshmlimit/src/layout.h).
b[8] ^= 0x40
open(sys.argv[2], "wb").write(bytes(b))
PY
	expect 5 "stat: other layout version is incompatible" "$STAT" $P-ver
}

# ---------------------------------------------------------------- route: a preference list
# Four pools refilling one request a minute (nothing refills during the
# test, so every count below is exact): pa and pb hold 1 request, pc 4, pd 2;
# pb's input bucket holds 5000 tokens.
PR='"prices": {"input": 1, "output": 5, "cache_write_5m": 1.25, "cache_write_1h": 2, "cache_read": 0.1}'
cat >"$TMP/route.json" <<J
{"spend_cap_usd": null, "pools": [
 {"name": "pa", "rpm": 1, "itpm": 600000, "otpm": 600000, "burst": {"rpm": 1}, $PR},
 {"name": "pb", "rpm": 1, "itpm": 600000, "otpm": 600000, "burst": {"rpm": 1, "itpm": 5000}, $PR},
 {"name": "pc", "rpm": 1, "itpm": 600000, "otpm": 600000, "burst": {"rpm": 4}, $PR},
 {"name": "pd", "rpm": 1, "itpm": 600000, "otpm": 600000, "burst": {"rpm": 2}, $PR}],
 "models": [{"match": "model-a", "pool": "pa"}, {"match": "model-b", "pool": "pb"},
            {"match": "model-c*", "pool": "pc"}, {"match": "model-d", "pool": "pd"}]}
J
N=$P-route
"$CTL" create $N --config "$TMP/route.json" >/dev/null
# admitted POOL: the pool's admitted counter from stat --json.
admitted() { "$STAT" --json $N >"$TMP/ra.json" && jget "$TMP/ra.json" "[p for p in d['pools'] if p['name'] == '$1'][0]['counters']['admitted']"; }
# chosen: the model= word of the last decision line.
chosen() { sed -n 's/^[a-z]* model=\([^ ]*\) pool=\([^ ]*\) .*/\1@\2/p' "$TMP/out"; }
expect 0 "route: all pools free" "$CTL" route $N model-a,model-b,model-c --input 10 --output 5
check "route picks the first model when its pool is free ($(chosen))" [ "$(chosen)" = model-a@pa ]
grep -q "^admitted model=model-a pool=pa waited=0.000 ticket=t1:" "$TMP/out" && ok "route prints try's admitted line" || bad "route output: $(cat "$TMP/out")"
RT_A=$(sed -n 's/.* ticket=\([^ ]*\).*/\1/p' "$TMP/out")
expect 0 "route: the first pool is full" "$CTL" route $N model-a,model-b,model-c --input 10 --output 5
check "route falls through to the second model ($(chosen))" [ "$(chosen)" = model-b@pb ]
RT_B=$(sed -n 's/.* ticket=\([^ ]*\).*/\1/p' "$TMP/out")
expect 0 "route: the first two pools are full" "$CTL" route $N model-a,model-b,model-c --input 10
check "route falls through to the third model ($(chosen))" [ "$(chosen)" = model-c@pc ]
expect 0 "route: a dated id matched by a prefix entry" "$CTL" route $N model-c-20250101,model-a --input 10
check "the list's order decides: model-c (a dated id of a prefix entry) before model-a ($(chosen))" [ "$(chosen)" = model-c-20250101@pc ]
"$CTL" route $N model-c >/dev/null && "$CTL" route $N model-c >/dev/null
check "pc admitted exactly its burst of 4" [ "$(admitted pc)" = 4 ]
expect 9 "route: every pool of the list is full" "$CTL" route $N model-a,model-b,model-c --input 10
grep -q "^refused model=model-[abc] pool=p[abc] dimension=rpm wait=[0-9.]* need=1 capacity=[14]$" "$TMP/out" && ok "the refusal names a model, its pool, rpm and the wait" || bad "refusal: $(cat "$TMP/out")"
check "the refused route admitted nothing (pa 1, pb 1, pc 4)" [ "$(admitted pa)$(admitted pb)$(admitted pc)" = 114 ]
# The printed tickets settle (and cancel) with ctl, on the pool chosen.
expect 0 "settle the ticket of a routed admission" "$CTL" settle $N "$RT_B" --input 9 --output 4
expect 0 "cancel the ticket of a route admission" "$CTL" cancel $N "ticket=$RT_A"
"$STAT" --json $N >"$TMP/r.json"
check "the settlement went to the chosen pool pb (settled 1, tokens 9 in, 4 out)" \
	[ "$(jget "$TMP/r.json" "[(p['counters']['settled'], p['tokens']['input'], p['tokens']['output']) for p in d['pools'] if p['name'] == 'pb'][0]")" = "(1, 9, 4)" ]
check "nothing was settled on pa or pc; pa's ticket was cancelled" \
	[ "$(jget "$TMP/r.json" "[(p['counters']['settled'], p['counters']['cancelled']) for p in d['pools']]")" = "[(0, 1), (1, 0), (0, 0), (0, 0)]" ]
expect 12 "a route ticket is settled once" "$CTL" settle $N "$(echo "$RT_B" | awk -F: 'BEGIN{OFS=":"} {$4=2; print}')"
"$CTL" reset $N --buckets >/dev/null
expect 11 "route: an unknown model in the list" "$CTL" route $N model-a,nosuch,model-b --input 1
grep -q "'nosuch'" "$TMP/err" && ok "the message names the unknown model" || bad "msg: $(cat "$TMP/err")"
check "nothing was admitted for a list with an unknown model" [ "$(admitted pa)" = 1 ]
expect 0 "route: a request too large for pb's input bucket" "$CTL" route $N model-b,model-a --input 8000
check "a pool the request can never fit is passed over ($(chosen))" [ "$(chosen)" = model-a@pa ]
expect 10 "route: a request too large for every pool of the list" "$CTL" route $N model-b --input 8000
grep -q "^never model=model-b pool=pb dimension=itpm need=8000 capacity=5000 " "$TMP/out" && ok "never names the pool and itpm" || bad "never: $(cat "$TMP/out")"
# --min-free 0.5: pc (4 requests) admits 2 and keeps 2 free, pd (2) admits
# 1 and keeps 1; then both refuse, though pc still has room that a plain
# route then takes.
"$CTL" reset $N --buckets >/dev/null
R=
for i in 1 2 3; do "$CTL" route $N model-c,model-d --min-free 0.5 >"$TMP/out" 2>&1; R="$R $(chosen)"; done
check "--min-free 0.5 keeps half of pc free:$R" [ "$R" = " model-c@pc model-c@pc model-d@pd" ]
expect 9 "--min-free 0.5: both pools down to the half they keep" "$CTL" route $N model-c,model-d --min-free 0.5
expect 0 "route without --min-free takes what --min-free kept" "$CTL" route $N model-c,model-d
check "... on pc ($(chosen))" [ "$(chosen)" = model-c@pc ]
expect 10 "--min-free 1 leaves no pool usable" "$CTL" route $N model-c,model-d --min-free 1
expect 2 "route --min-free 1.5" "$CTL" route $N model-a --min-free 1.5
expect 2 "route --min-free abc" "$CTL" route $N model-a --min-free abc
expect 2 "route with an empty model in the list" "$CTL" route $N model-a,,model-b
expect 2 "route without a model list" "$CTL" route $N
expect 2 "route: bad --input" "$CTL" route $N model-a --input x
expect 3 "route: no such segment" "$CTL" route $P-nosuch model-a

# ---------------------------------------------------------------- route from concurrent shell loops
# (SHL_FAST=1, as in make check-fast, skips this timed section.)
if [ "${SHL_FAST:-0}" = 1 ]; then
	skipped "SHL_FAST=1: the concurrent route loops (about 10 s) not run"
else
# Two pools of 300 requests a minute (5 a second), burst 2; 6 loops of 8
# `route --wait` each keep both saturated.  Per pool, what was admitted over
# the whole run can be at most burst + rate x elapsed, elapsed measured on
# the library's clock (CLOCK_BOOTTIME) from before the first process started
# to after the last one ended (so the bound errs on the generous side).
cat >"$TMP/mp.json" <<J
{"spend_cap_usd": null, "pools": [
 {"name": "qa", "rpm": 300, "itpm": 6000000, "otpm": 6000000, "burst": {"rpm": 2}, $PR},
 {"name": "qb", "rpm": 300, "itpm": 6000000, "otpm": 6000000, "burst": {"rpm": 2}, $PR}],
 "models": [{"match": "m-a", "pool": "qa"}, {"match": "m-b", "pool": "qb"}]}
J
N=$P-mp
"$CTL" create $N --config "$TMP/mp.json" >/dev/null
boot() { python3 -c 'import time; print(repr(time.clock_gettime(time.CLOCK_BOOTTIME)))'; }
T0=$(boot)
LOOPS=
for l in 1 2 3 4 5 6; do
	( for i in 1 2 3 4 5 6 7 8; do "$CTL" route $N m-a,m-b --input 1 --wait 20; done >"$TMP/mp.$l" 2>&1 ) &
	LOOPS="$LOOPS $!"
done
for l in $LOOPS; do wait $l; done
T1=$(boot)
"$STAT" --json $N >"$TMP/mp.json.out"
if python3 - "$TMP/mp.json.out" "$T0" "$T1" "$TMP"/mp.[0-9] <<'PY'
import json, sys, re
d = json.load(open(sys.argv[1])); t0 = float(sys.argv[2]); t1 = float(sys.argv[3])
lines = [l for f in sys.argv[4:] for l in open(f)]
assert len(lines) == 48, "%d decision lines, expected 48" % len(lines)
for l in lines:
    assert re.match(r"(admitted model=m-[ab] pool=q[ab] waited=[0-9.]+ ticket=t1:|refused )", l), "line: " + l
mine = {"qa": 0, "qb": 0}
for l in lines:
    m = re.match(r"admitted model=m-([ab]) pool=(q[ab]) ", l)
    if m:
        assert m.group(2) == "q" + m.group(1), "model and pool disagree: " + l
        mine[m.group(2)] += 1
elapsed = t1 - t0
pools = {p["name"]: p for p in d["pools"]}
for name in ("qa", "qb"):
    adm = pools[name]["counters"]["admitted"]
    bound = 2 + 5.0 * elapsed
    print("     | %s: admitted %d, bound %.1f over %.3f s, refused %d" % (name, adm, bound, elapsed, pools[name]["counters"]["refused"]))
    assert adm == mine[name], "%s: the segment counts %d admissions, the loops printed %d" % (name, adm, mine[name])
    assert adm <= bound, "%s: admitted %d > burst + rate x elapsed = %.2f" % (name, adm, bound)
# Saturation: the preferred pool refused (so the bound was tested at the
# limit), and the overflow was routed to the second pool.
assert pools["qa"]["counters"]["refused"] > 0, "qa never refused: the loops did not saturate it"
assert mine["qb"] > 0, "nothing was routed to qb"
PY
then ok "6 concurrent route loops: per pool, admitted <= burst + rate x elapsed; counts agree with the loops' output; the overflow went to the second pool"
else bad "concurrent route loops"; fi
fi

# ---------------------------------------------------------------- hold: the table's HELD line
N=$P-route
"$CTL" reset $N --buckets >/dev/null
# An hour: long enough that no assertion below depends on how fast it runs.
expect 0 "hold pb for an hour" "$CTL" hold $N pb 3600
held_s() { sed -n 's/^held pool=pb seconds=\([0-9.]*\)$/\1/p' "$TMP/out"; }
check "hold prints the hold in force ($(held_s))" python3 -c 'import sys; sys.exit(not 1 < float(sys.argv[1]) <= 3600)' "$(held_s)"
expect 0 "stat table of a held pool" "$STAT" $N
# The HELD line is in pb's block: after the line starting "pb", before "pc".
check "exactly one HELD line, in pb's block, with the seconds left" python3 - "$TMP/out" <<'PY'
import sys, re
lines = open(sys.argv[1]).read().split("\n")
held = [i for i, l in enumerate(lines) if "HELD" in l]
pb = [i for i, l in enumerate(lines) if l.startswith("pb ")][0]
pc = [i for i, l in enumerate(lines) if l.startswith("pc ")][0]
assert len(held) == 1 and pb < held[0] < pc, (held, pb, pc)
m = re.search(r"HELD by a server retry-after for ([0-9.]+) s more", lines[held[0]])
assert m and 1 < float(m.group(1)) <= 3600, lines[held[0]]
PY
"$STAT" --json $N >"$TMP/h.json"
check "stat --json: pb's hold_seconds in (1, 3600], the others 0" \
	python3 -c 'import json,sys; h=[p["hold_seconds"] for p in json.load(open(sys.argv[1]))["pools"]]; sys.exit(not (h[0] == 0 and 1 < h[1] <= 3600 and h[2] == h[3] == 0))' "$TMP/h.json"
check "the hold counts as a server 429 on pb" [ "$(jget "$TMP/h.json" 'd["pools"][1]["counters"]["server_429"]')" = 1 ]
"$STAT" --prometheus $N >"$TMP/h.prom"
grep -q "^shmlimit_pool_hold_seconds{segment=\"$N\",pool=\"pb\"} [1-9][0-9]*\." "$TMP/h.prom" && ok "prometheus hold gauge" || bad "prometheus hold: $(grep hold_seconds "$TMP/h.prom")"
expect 9 "try on the held pool is refused" "$CTL" try $N model-b --input 1
grep -q "^refused model=model-b pool=pb dimension=hold wait=[1-9][0-9]*\." "$TMP/out" && ok "the refusal names the hold and its wait" || bad "hold refusal: $(cat "$TMP/out")"
expect 0 "route passes over the held pool" "$CTL" route $N model-b,model-c --input 1
check "... to model-c ($(chosen))" [ "$(chosen)" = model-c@pc ]
expect 0 "a shorter hold does not shorten it" "$CTL" hold $N pb 1
check "the hour's hold is still in force ($(held_s))" python3 -c 'import sys; sys.exit(not 1 < float(sys.argv[1]) <= 3600)' "$(held_s)"
expect 2 "hold: no such pool" "$CTL" hold $N nopool 5
grep -q "no pool 'nopool'" "$TMP/err" && ok "the message names the pool" || bad "msg: $(cat "$TMP/err")"
expect 2 "hold 0 seconds" "$CTL" hold $N pb 0
expect 2 "hold for more than a day" "$CTL" hold $N pb 90000
expect 2 "hold: seconds not a number" "$CTL" hold $N pb soon
expect 2 "hold without seconds" "$CTL" hold $N pb
expect 3 "hold: no such segment" "$CTL" hold $P-nosuch pb 5
"$CTL" reset $N --buckets >/dev/null
"$STAT" $N >"$TMP/out"
check "reset --buckets clears the hold: no HELD line" [ "$(grep -c HELD "$TMP/out")" -eq 0 ]
expect 0 "try on the released pool" "$CTL" try $N model-b --input 1

# ---------------------------------------------------------------- corrupt segments: stat exits 6
# scribble SEG WHAT: patch the live configuration slot in /dev/shm/SEG in
# place (layout: libshmlimit/src/layout.h).  WHAT=index sets models[0].pool
# to 200 and recomputes the slot's FNV-1a checksum, so that only attach's
# validation of every index can find it; WHAT=byte flips a byte of pools[0]'s
# name and leaves the checksum stale.  Exits 3 when the stored checksum does
# not match this script's idea of the layout (then the test says so).
scribble() {
	python3 - /dev/shm/$1 $2 <<'PY'
import struct, sys
path, what = sys.argv[1], sys.argv[2]
SLOT0, SLOT1, SLOT_SIZE = 0x8100, 0x12140, 41024
CK, MODELS, MODEL_SIZE, MODEL_POOL = 24, 8256, 128, 64
def fnv(b):
    h = 0xcbf29ce484222325
    for c in b[:CK] + bytes(8) + b[CK + 8:]:
        h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
    return h
with open(path, "r+b") as f:
    f.seek(0x40); gen = struct.unpack("<Q", f.read(8))[0]
    off = SLOT1 if gen & 1 else SLOT0
    f.seek(off); slot = bytearray(f.read(SLOT_SIZE))
    if struct.unpack_from("<Q", slot, CK)[0] != fnv(bytes(slot)) or struct.unpack_from("<Q", slot, 16)[0] != gen:
        sys.exit(3)
    if what == "index":
        struct.pack_into("<I", slot, MODELS + MODEL_POOL, 200)
        struct.pack_into("<Q", slot, CK, fnv(bytes(slot)))
    else:
        slot[64] ^= 0x20
    f.seek(off); f.write(slot)
PY
}
N=$P-corrupt
"$CTL" create $N --tier 1 >/dev/null
scribble $N index; rc=$?
check "the scribbler understands the layout (checksum and generation of the live slot; exit $rc)" [ $rc -eq 0 ]
expect 6 "stat: a model entry pointing at pool 200 is corrupt" "$STAT" $N
grep -q "corrupt: config.models\[0\].pool: 200 is not a pool in use" "$TMP/err" && ok "the message names the field and the index" || bad "msg: $(cat "$TMP/err")"
expect 6 "stat --json on the corrupt segment" "$STAT" --json $N
check "no JSON document for a corrupt segment" [ ! -s "$TMP/out" ]
expect 6 "ctl check: the same segment" "$CTL" check $N
grep -q "models\[0\].pool" "$TMP/out" && ok "check names models[0].pool" || bad "check: $(cat "$TMP/out")"
expect 6 "ctl try on the corrupt segment" "$CTL" try $N claude-haiku-4-5 --input 1
"$CTL" create $N --tier 1 --force >/dev/null
scribble $N byte
expect 6 "stat: a scribbled byte under a stale checksum" "$STAT" $N
grep -q "checksum mismatch" "$TMP/err" && ok "the message says checksum mismatch" || bad "msg: $(cat "$TMP/err")"
# A bucket word far in the future: attach cannot see it (runtime words are
# not in the checksum), ctl check does.
"$CTL" create $N --tier 1 --force >/dev/null
python3 - /dev/shm/$N <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(0x100); f.write(struct.pack("<Q", 1 << 62))   # pools[0].tat[rpm]
PY
expect 6 "ctl check: a bucket word years ahead" "$CTL" check $N
grep -q "pools\[0\].tat\[rpm\]: .* over a year ahead" "$TMP/out" && ok "check names pools[0].tat[rpm]" || bad "check: $(cat "$TMP/out")"
expect 9 "the scribbled bucket refuses (it never admits more)" "$CTL" try $N claude-opus-4-5 --input 1

# ---------------------------------------------------------------- pool identity after an apply (issue 13, defect 1)
# [a,b,c] then [b,c]: b and c keep their indices 1 and 2, so the statistics'
# position (0, 1) is not the pool index.  hold and try must name c, not b.
N=$P-ident
cat >"$TMP/abc.json" <<'J'
{"spend_cap_usd": null, "pools": [
 {"name": "a", "rpm": 600, "itpm": 100000, "otpm": 100000, "prices": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1, "cache_read": 1}},
 {"name": "b", "rpm": 600, "itpm": 100000, "otpm": 100000, "prices": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1, "cache_read": 1}},
 {"name": "c", "rpm": 600, "itpm": 100000, "otpm": 100000, "prices": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1, "cache_read": 1}}],
 "models": [{"match": "ma", "pool": "a"}, {"match": "mb", "pool": "b"}, {"match": "mc", "pool": "c"}]}
J
cat >"$TMP/bc.json" <<'J'
{"spend_cap_usd": null, "pools": [
 {"name": "b", "rpm": 600, "itpm": 100000, "otpm": 100000, "prices": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1, "cache_read": 1}},
 {"name": "c", "rpm": 600, "itpm": 100000, "otpm": 100000, "prices": {"input": 1, "output": 1, "cache_write_5m": 1, "cache_write_1h": 1, "cache_read": 1}}],
 "models": [{"match": "mb", "pool": "b"}, {"match": "mc", "pool": "c"}]}
J
"$CTL" create $N --config "$TMP/abc.json" >/dev/null
expect 0 "apply [b,c] over [a,b,c]" "$CTL" apply $N "$TMP/bc.json"
expect 0 "hold c after the apply" "$CTL" hold $N c 30
grep -q "^held pool=c seconds=[1-9][0-9]*\.[0-9]*$" "$TMP/out" && ok "hold prints pool c and its seconds ($(cat "$TMP/out"))" || bad "hold c printed: $(cat "$TMP/out")"
"$STAT" --json $N >"$TMP/id.json"
check "the hold is on c, not on b" python3 -c 'import json,sys; h={p["name"]: p["hold_seconds"] for p in json.load(open(sys.argv[1]))["pools"]}; sys.exit(not (h["b"] == 0 and 1 < h["c"] <= 30))' "$TMP/id.json"
expect 9 "try on c is refused by its hold" "$CTL" try $N mc --input 1
grep -q "^refused model=mc pool=c dimension=hold" "$TMP/out" && ok "try names pool c" || bad "try mc: $(cat "$TMP/out")"
expect 0 "try on b is admitted" "$CTL" try $N mb --input 1
grep -q "^admitted model=mb pool=b " "$TMP/out" && ok "try names pool b" || bad "try mb: $(cat "$TMP/out")"
"$CTL" rm $N >/dev/null

# ---------------------------------------------------------------- squatters (issue 13, defect 3)
# A FIFO, a directory or a socket in the segment's place: every tool exits at
# once (under 5 s) with a message saying what is there, never blocking in open.
for kind in fifo dir socket; do
	N=$P-sq-$kind
	case $kind in
	fifo) mkfifo -m 666 /dev/shm/$N ;;
	dir) mkdir -m 777 /dev/shm/$N ;;
	socket) python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' /dev/shm/$N ;;
	esac
	for cmd in "$STAT $N" "$STAT --prometheus $N" "$STAT --json $N" "$CTL show $N" "$CTL check $N" "$CTL try $N claude-haiku-4-5" "$CTL apply $N --tier 1"; do
		# shellcheck disable=SC2086
		timeout 5 $cmd >"$TMP/out" 2>"$TMP/err"; rc=$?
		if [ $rc -eq 5 ] && grep -q "not a regular file" "$TMP/out" "$TMP/err"; then
			ok "$kind squatting the name: '${cmd##*/}' exits 5 at once, saying so"
		else
			bad "$kind squatting the name: '${cmd##*/}': exit $rc: $(cat "$TMP/out" "$TMP/err" | head -3)"
		fi
	done
	rm -rf /dev/shm/$N
done

# ---------------------------------------------------------------- messages (issue 13, defect 8)
N=$P-msg
"$CTL" create $N --tier 1 >/dev/null
expect 2 "try --input 4294967296 (over a request's 2^32 - 1 tokens)" "$CTL" try $N claude-haiku-4-5 --input 4294967296
grep -q -- "--input" "$TMP/err" && ! grep -q "segment" "$TMP/err" && ok "the message names --input, not the segment" || bad "msg: $(cat "$TMP/err")"
expect 2 "route --cache-read 4294967296" "$CTL" route $N claude-haiku-4-5 --cache-read 4294967296
grep -q -- "--cache-read" "$TMP/err" && ok "the message names --cache-read" || bad "msg: $(cat "$TMP/err")"
expect 10 "try --output 4294967295 is a count (that no bucket holds: exit 10)" "$CTL" try $N claude-haiku-4-5 --input 1 --output 4294967295
expect 2 "stat --json --prometheus together" "$STAT" --json --prometheus $N
grep -q -- "--json.*--prometheus\|--prometheus.*--json" "$TMP/err" && ok "the message names both flags" || bad "msg: $(cat "$TMP/err")"
check "no output for refused flags" [ ! -s "$TMP/out" ]
mkdir -p "$TMP/cfgdir"
expect 1 "create --config DIR" "$CTL" create $P-msgdir --config "$TMP/cfgdir"
grep -q "is a directory" "$TMP/err" && ! grep -q "Input/output" "$TMP/err" && ok "the message says it is a directory" || bad "msg: $(cat "$TMP/err")"
expect 1 "apply DIR" "$CTL" apply $N "$TMP/cfgdir"
grep -q "is a directory" "$TMP/err" && ok "apply: the message says it is a directory" || bad "msg: $(cat "$TMP/err")"
python3 -c 'print("[" * 5000 + "]" * 5000)' >"$TMP/deep.json"
expect 7 "create from JSON nested 5000 deep" "$CTL" create $P-msgdeep --config "$TMP/deep.json"
grep -q "nested" "$TMP/err" && ok "the message says nested too deep" || bad "msg: $(cat "$TMP/err")"
"$CTL" rm $N >/dev/null

# ---------------------------------------------------------------- group segments (issue 13, defect 2)
# Another user in the segment's group attaches a --group segment read-write
# (try, settle) without any flag; a segment not made for a group still
# refuses another owner, and the refusal is counted where stat shows it.
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
	BIN=$TMP/gbin; mkdir -p "$BIN"; cp "$STAT" "$CTL" "$BIN/"; chmod 755 "$TMP" "$BIN" "$BIN"/*
	G="setpriv --reuid=65534 --regid=65534 --groups=$(id -g) --"
	N=$P-grp
	"$CTL" create $N --tier 1 --group >/dev/null
	# shellcheck disable=SC2086
	expect 0 "try as another user of the segment's group" $G "$BIN/shmlimit-ctl" try $N claude-haiku-4-5 --input 1
	T1=$(sed -n 's/.*ticket=//p' "$TMP/out")
	# shellcheck disable=SC2086
	expect 0 "settle as another user of the group" $G "$BIN/shmlimit-ctl" settle $N "$T1" --input 1
	# shellcheck disable=SC2086
	expect 4 "try as a user outside the group" setpriv --reuid=65534 --regid=65534 --clear-groups -- "$BIN/shmlimit-ctl" try $N claude-haiku-4-5 --input 1
	N=$P-solo
	"$CTL" create $N --tier 1 >/dev/null
	chmod 0666 /dev/shm/$N
	# shellcheck disable=SC2086
	expect 4 "try as another user on a segment not created for a group" $G "$BIN/shmlimit-ctl" try $N claude-haiku-4-5 --input 1
	grep -q "not created for a group" "$TMP/err" && ok "the message says why (not created for a group)" || bad "msg: $(cat "$TMP/err")"
	"$STAT" $N >"$TMP/out"
	grep -q "^ATTACH FAILURES 1 .*uid 65534 .*owned by another user" "$TMP/out" && ok "stat shows the refused attach" || bad "stat: $(tail -2 "$TMP/out")"
	"$STAT" --json $N >"$TMP/g.json"
	check "stat --json: attach_failures.count 1, last_uid 65534" python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))["attach_failures"]; sys.exit(not (a["count"] == 1 and a["owner_refusals"] == 1 and a["last_uid"] == 65534))' "$TMP/g.json"
	"$STAT" --prometheus $N >"$TMP/g.prom"
	grep -q "^shmlimit_attach_failures_total{segment=\"$N\"} 1$" "$TMP/g.prom" && ok "prometheus attach failures counter" || bad "prom: $(grep attach "$TMP/g.prom")"
	"$CTL" rm $P-grp >/dev/null; "$CTL" rm $N >/dev/null
else
	skipped "not root or no setpriv/nobody: group segments used by another user not checked"
fi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
