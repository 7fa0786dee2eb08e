#!/bin/bash
# test-sync.sh - `shmlimit-ctl sync` against the mock's Rate Limits API.
#
# usage: tools/test-sync.sh CTL STAT MOCK
# The mock listens on 127.0.0.1 (a free port), started and stopped here,
# with tools/sync-mock.json: three Claude 4.x pools, an Opus 5 pool no
# preset knows, a batch pool and a count_tokens pool, exact ids and
# aliases.  Segments are shlsy-<pid>-*, removed on exit, also on failure.
# Waits are bounded polls.  Ends with "N passed, N failed".
set -u
CTL=$(readlink -f "$1") STAT=$(readlink -f "$2") MOCK=$(readlink -f "$3")
cd "$(dirname "$0")/.." || exit 1
P=shlsy-$$
TMP=$(mktemp -d /tmp/shlsy.XXXXXX)
MOCKPID=
cleanup() {
	[ -n "$MOCKPID" ] && kill "$MOCKPID" 2>/dev/null && wait "$MOCKPID" 2>/dev/null
	rm -f /dev/shm/$P-*
	rm -rf "$TMP"
}
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
expect() {
	local want=$1 desc=$2; shift 2
	"$@" >"$TMP/out" 2>"$TMP/err"
	local got=$?
	if [ "$got" -eq "$want" ]; then ok "$desc (exit $got)"; else
		bad "$desc: exit $got, expected $want"; sed 's/^/     | /' "$TMP/out" "$TMP/err" | head -8; fi
}
check() { local desc=$1; shift; if "$@"; then ok "$desc"; else bad "$desc"; fi; }
gen() { "$STAT" --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'; }

"$MOCK" --port 0 --port-file "$TMP/port" --max-seconds 120 --max-requests 5000 \
	--config tools/sync-mock.json 2>"$TMP/mock.err" &
MOCKPID=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
[ -s "$TMP/port" ] || { echo "FAIL the mock did not start"; cat "$TMP/mock.err"; exit 1; }
URL=http://127.0.0.1:$(cat "$TMP/port")
export SHMLIMIT_ADMIN_URL=$URL
fault() { curl -s -X POST "$URL/mock/rate-limits-fault" -d "{\"fault\":\"$1\"}" >/dev/null; }
KEY=sk-ant-admin-test

# ------------------------------------------------- the mock's endpoint itself
code() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
check "mock: no key is a 401" [ "$(code "$URL/v1/organizations/rate_limits")" = 401 ]
check "mock: limit=0 is a 400 naming limit" bash -c "[ \"\$(curl -s -o '$TMP/b' -w '%{http_code}' \
	-H 'x-api-key: $KEY' '$URL/v1/organizations/rate_limits?limit=0')\" = 400 ] && grep -q 'limit: expected' '$TMP/b'"
check "mock: a bad cursor is a 400" [ "$(code -H "x-api-key: $KEY" "$URL/v1/organizations/rate_limits?page=zz")" = 400 ]
check "mock: 4 a page, then the rest, then null" bash -c "
	curl -s -H 'x-api-key: $KEY' '$URL/v1/organizations/rate_limits?limit=4' >'$TMP/p1' &&
	curl -s -H 'x-api-key: $KEY' \"$URL/v1/organizations/rate_limits?limit=4&page=\$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"next_page\"])' '$TMP/p1')\" >'$TMP/p2' &&
	python3 - '$TMP/p1' '$TMP/p2' <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert len(a['data']) == 4 and a['next_page'] and len(b['data']) == 2 and b['next_page'] is None
assert [d['group']['type'] for d in a['data'] + b['data']].count('model_group') == 4
assert b['data'][0]['group']['type'] == 'batch' and b['data'][1]['group']['type'] == 'token_count'
assert b['data'][0]['models'] == [] and len(b['data'][0]['limits']) == 1
PY"
check "mock: an unknown fault kind is a 400" [ "$(code -X POST "$URL/mock/rate-limits-fault" -d '{"fault":"x"}')" = 400 ]

# ------------------------------------------------------- dry run, then sync
S=$P-a
"$CTL" create $S --tier start >/dev/null
g0=$(gen $S)
"$CTL" show $S >"$TMP/before.json" 2>/dev/null
ANTHROPIC_ADMIN_KEY=$KEY expect 0 "sync --dry-run" "$CTL" sync $S --dry-run --page-size 2
cp "$TMP/out" "$TMP/dry.out"
check "dry run: opus pool's new limits in the diff" \
	grep -q '^~ pool opus: rpm 50 -> 4000 itpm 30000 -> 2000000 otpm 8000 -> 400000' "$TMP/dry.out"
check "dry run: the new Opus 5 pool and its id" grep -q '^+ pool {"name":"opus-5"' "$TMP/dry.out"
check "dry run: the batch group as message_batches" \
	grep -q '^+ model {"match":"message_batches","pool":"batch"}' "$TMP/dry.out"
check "dry run: says nothing changed" grep -q 'dry run: nothing changed' "$TMP/dry.out"
"$CTL" show $S >"$TMP/after-dry.json" 2>/dev/null
check "dry run: configuration unchanged" cmp -s "$TMP/before.json" "$TMP/after-dry.json"
check "dry run: generation unchanged" [ "$(gen $S)" = "$g0" ]

# Pagination: 6 groups, 2 a page: 3 pages; then 1 a page.
ANTHROPIC_ADMIN_KEY=$KEY expect 0 "sync (2 items a page)" "$CTL" sync $S --page-size 2
check "sync printed the same difference as the dry run" \
	diff <(grep -v '^'$S: "$TMP/dry.out") <(grep -v '^'$S: "$TMP/out")
g1=$(gen $S)
check "sync published a new generation" [ "$g1" != "$g0" ]
"$CTL" show $S >"$TMP/synced.json" 2>"$TMP/show.err"
if python3 - "$TMP/synced.json" tools/sync-mock.json <<'PY'
import json, sys
live = json.load(open(sys.argv[1])); api = json.load(open(sys.argv[2]))
pools = {p["name"]: p for p in live["pools"]}
models = {m["match"]: m["pool"] for m in live["models"]}
# The mock's pools, by the pool each of its ids now maps to.
want = {"opus-4": "opus", "sonnet-4": "sonnet", "haiku-4-5": "haiku", "opus-5": "opus-5",
        "batches": "batch", "counting": "count_tokens"}
for ap in api["pools"]:
    lp = pools[want[ap["name"]]]
    assert lp["rpm"] == ap["rpm"], (ap["name"], lp["rpm"], ap["rpm"])
    if ap["name"] not in ("batches", "counting"):
        assert (lp["itpm"], lp["otpm"]) == (ap["itpm"], ap["otpm"]), ap["name"]
    else:  # the API gives those groups an RPM only: the token dimensions unlimited
        assert lp["itpm"] == lp["otpm"] == 10**12, ap["name"]
    assert not lp.get("provisional"), ("still provisional", ap["name"])
for m in api["models"]:  # every id and alias listed, exactly
    assert models.get(m["match"]) == want[m["pool"]], (m["match"], models.get(m["match"]))
# Prices: kept from the preset (opus 4.1 its own), the unknown family at the catch-all's.
opus41 = [m for m in live["models"] if m["match"] == "claude-opus-4-1"][0]
assert opus41["prices"]["input"] == 15, opus41
assert pools["opus"]["prices"]["input"] == 5
assert pools["opus-5"]["prices"] == pools["other"]["prices"]
assert all(v == 0 for v in pools["count_tokens"]["prices"].values())
# Kept as they were: the catch-all pool, the spend cap, the prefix entries.
assert live["unknown_model"] == {"pool": "other"} and pools["other"].get("provisional")
assert live["spend_cap_usd"] == 500
assert models["claude-sonnet-4*"] == "sonnet"
PY
then ok "sync: a pool per group with the API's limits, every id and alias, prices kept"
else bad "sync: the configuration does not match the mock's limits"; fi
check "show: no longer names opus as provisional" bash -c "! grep -q \"pool 'opus' has provisional\" '$TMP/show.err'"
check "show: still names the catch-all as provisional" grep -q "pool 'other' has provisional" "$TMP/show.err"

# Idempotent: nothing new, nothing applied, same generation.
ANTHROPIC_ADMIN_KEY=$KEY expect 0 "second sync (1 item a page)" "$CTL" sync $S --page-size 1
check "second sync: in sync" grep -q "in sync with the Rate Limits API (generation $g1, 6 groups)" "$TMP/out"
check "second sync: generation unchanged" [ "$(gen $S)" = "$g1" ]
ANTHROPIC_ADMIN_KEY=$KEY expect 0 "dry run when in sync" "$CTL" sync $S --dry-run
check "dry run when in sync: no difference" grep -q "in sync" "$TMP/out"

# The server's limits change mid-run: the next sync follows.
curl -s -X POST "$URL/mock/limits" -d '{"pools":[{"name":"sonnet-4","rpm":1000}]}' >/dev/null
ANTHROPIC_ADMIN_KEY=$KEY expect 0 "sync after the mock halved sonnet's RPM" "$CTL" sync $S
check "only sonnet's rpm changed" bash -c "[ \"\$(grep -c '^[~+-]' '$TMP/out')\" = 1 ] &&
	grep -q '^~ pool sonnet: rpm 2000 -> 1000\$' '$TMP/out'"
check "stat shows sonnet's new limit" bash -c "'$STAT' --json $S | python3 -c '
import json,sys; d=json.load(sys.stdin)
p=[p for p in d[\"pools\"] if p[\"name\"]==\"sonnet\"][0]
assert p[\"limit\"][\"rpm\"]==1000 and p[\"effective\"][\"rpm\"]==1000'"

# ------------------------------------------------- errors change nothing
S=$P-b
"$CTL" create $S --tier start >/dev/null
"$CTL" show $S >"$TMP/b0.json" 2>/dev/null
gb=$(gen $S)
unchanged() {
	"$CTL" show $S >"$TMP/b1.json" 2>/dev/null
	check "$1: configuration and generation unchanged" \
		bash -c "cmp -s '$TMP/b0.json' '$TMP/b1.json' && [ \"\$('$STAT' --json $S |
		python3 -c 'import json,sys; print(json.load(sys.stdin)[\"generation\"])')\" = $gb ]"
}
ANTHROPIC_ADMIN_KEY=sk-ant-api03-notadmin expect 13 "a key that is not an Admin key: 401" "$CTL" sync $S
check "401: the message names the key and the status" grep -q 'refused the key in \$ANTHROPIC_ADMIN_KEY (HTTP 401' "$TMP/err"
unchanged "401"
ANTHROPIC_ADMIN_KEY=sk-ant-admin-x-noaccess expect 13 "a key without access: 403" "$CTL" sync $S
check "403: the message says so" grep -q 'HTTP 403: this key may not read' "$TMP/err"
unchanged "403"
for f in garbage shape loop; do
	fault $f
	ANTHROPIC_ADMIN_KEY=$KEY expect 15 "an answer that cannot be read ($f)" "$CTL" sync $S --page-size 2
	check "$f: the message says the answer cannot be read" grep -q 'answer cannot be read' "$TMP/err"
	unchanged "$f"
done
fault 500
ANTHROPIC_ADMIN_KEY=$KEY expect 14 "the API answers 500" "$CTL" sync $S
check "500: the message names the status" grep -q 'answered HTTP 500' "$TMP/err"
unchanged "500"
fault none
# A port nothing listens on: a network failure.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
ANTHROPIC_ADMIN_KEY=$KEY expect 14 "nothing listening" "$CTL" sync $S --base-url http://127.0.0.1:$port --timeout 5
check "network failure: the message says it cannot reach the API" grep -q 'cannot reach the Rate Limits API' "$TMP/err"
unchanged "network failure"
env -u ANTHROPIC_ADMIN_KEY "$CTL" sync $S >"$TMP/out" 2>"$TMP/err"
check "no key: exit 2, naming the variable" bash -c "[ $? -eq 2 ] && grep -q 'ANTHROPIC_ADMIN_KEY is not set' '$TMP/err'"
unchanged "no key"
ANTHROPIC_ADMIN_KEY=$KEY expect 3 "no such segment" "$CTL" sync $P-none
ANTHROPIC_ADMIN_KEY=$KEY expect 2 "--page-size 0" "$CTL" sync $S --page-size 0
ANTHROPIC_ADMIN_KEY=$KEY expect 2 "--base-url without a scheme" "$CTL" sync $S --base-url 127.0.0.1:1
ANTHROPIC_ADMIN_KEY=$KEY expect 0 "after the faults: sync works" "$CTL" sync $S

# --------------------------------------------- unknown models in the tools
S=$P-c
"$CTL" create $S --tier build >/dev/null
expect 0 "try on a model no preset names: the catch-all pool" "$CTL" try $S claude-opus-9 --input 10 --output 10
check "try: admitted on pool other" grep -q '^admitted model=claude-opus-9 pool=other ' "$TMP/out"
check "try: says the model is governed by the catch-all" grep -q "model 'claude-opus-9' is in no models\[\] entry: governed by the catch-all pool" "$TMP/err"
check "stat: the unknown model is listed" bash -c "'$STAT' $S | grep -q '^unknown models: governed by pool other; seen: claude-opus-9 (1)'"
check "stat --json: the unknown model is listed" bash -c "'$STAT' --json $S | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d[\"unknown_model\"][\"policy\"]==\"pool\" and d[\"unknown_model\"][\"pool\"]==\"other\"
assert d[\"unknown_model\"][\"seen\"][0][\"model\"]==\"claude-opus-9\"
o=[p for p in d[\"pools\"] if p[\"name\"]==\"other\"][0]
assert o[\"provisional\"] and o[\"follow_server\"] and o[\"observed\"] is None'"
check "stat --prometheus: the unknown model's lookups" bash -c "'$STAT' --prometheus $S | grep -q 'shmlimit_unknown_model_lookups_total{segment=\"$S\",model=\"claude-opus-9\"} 1'"
"$CTL" show $S 2>/dev/null | python3 -c '
import json,sys; d=json.load(sys.stdin); d["unknown_model"]="refuse"; print(json.dumps(d))' >"$TMP/refuse.json"
expect 0 "apply unknown_model refuse" "$CTL" apply $S "$TMP/refuse.json"
expect 11 "try on an unknown model under refuse" "$CTL" try $S claude-opus-9
check "refuse: the message names the policy" grep -q "model 'claude-opus-9': model unknown to the configuration, whose unknown_model policy refuses it" "$TMP/err"

echo "sync: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
