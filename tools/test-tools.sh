#!/bin/bash
# test-tools.sh - drive the real shmlimit-stat and shmlimit-ctl binaries.
#
# usage: tools/test-tools.sh STAT CTL ADMITTER
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
for tier in 1 2 3 4; do
	N=$P-tier$tier
	expect 0 "create --tier $tier" "$CTL" create $N --tier $tier
	"$STAT" --json $N >"$TMP/t.json"; rc=$?
	check "stat --json on tier $tier (exit $rc)" [ $rc -eq 0 ]
	# Each pool's limits in stat --json equal the preset file's.
	if python3 - "$TMP/t.json" libshmlimit/presets/tier$tier.json <<'PY'
import json, sys
st = json.load(open(sys.argv[1])); pre = json.load(open(sys.argv[2]))
assert [p["name"] for p in st["pools"]] == [p["name"] for p in pre["pools"]], "pool names"
for sp, pp in zip(st["pools"], pre["pools"]):
    for k in ("rpm", "itpm", "otpm"):
        assert sp["limit"][k] == pp[k], (sp["name"], k, sp["limit"][k], pp[k])
cap = pre.get("spend_cap_usd")
assert st["spend"]["cap_usd"] == cap, ("cap", st["spend"]["cap_usd"], cap)
assert st["nmodels"] == len(pre["models"]), "nmodels"
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
for sub in create apply show reset rm check try settle cancel; do
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
PY
then ok "stat --json: every field checked"; else bad "stat --json field check"; fi

# The table shows the same snapshot.
expect 0 "stat table" "$STAT" $N
grep -q "^sonnet  *requests  *1  *3 " "$TMP/out" && ok "table row: sonnet rpm limit 1 burst 3" || bad "table: $(head -4 "$TMP/out")"
grep -q "^spend [0-9-]*: \$0.006000 of \$10.00 cap" "$TMP/out" && ok "table spend line" || bad "spend line: $(grep spend "$TMP/out")"
grep -q "admitted $ADM " "$TMP/out" && ok "table counters" || bad "counters: $(grep admitted "$TMP/out")"
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
# The magic is 8 bytes, the layout version the next 4 (libshmlimit/src/internal.h).
b[8] ^= 0x40
open(sys.argv[2], "wb").write(bytes(b))
PY
	expect 5 "stat: other layout version is incompatible" "$STAT" $P-ver
}

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
