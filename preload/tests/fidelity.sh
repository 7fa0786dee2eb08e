#!/bin/bash
# fidelity.sh - issue 12's table, the rows other scripts do not rerun: the
# real curl tool under the shim, at saturation, against shmlimit-mock's own
# tokenizer and token buckets (mock/README.md).
#
#   1. curl --parallel --parallel-max 8, the mock enforcing RPM as one
#      request per interval (--strict-interval), RPM binding: zero server
#      429s (the pool's default jitter margin, pools[].margin = 0.002, and
#      the shim moving a line by a late send's lateness, preload/hold.c,
#      are what make that hold), >= 99.5% of the limit used, settled totals
#      equal the server's.
#   2. Japanese (CJK with some ASCII), accented French, and mixed bodies
#      (90% English, 10% large Japanese), one pool each, against two
#      mocks side by side, one answering in 3 s (--latency-ms 3000), one
#      at once, a steady curl --parallel fleet each (--parallel-max 24),
#      ITPM binding: zero server 429s after a warm-up of WARM requests per
#      pool, >= 99.5% of the Japanese and the French and the mixed pools'
#      ITPM used, and the learned estimate's error within 5% at the 95th
#      percentile, at both latencies.  (curl --parallel sets CURLOPT_PIPEWAIT: with HTTP/1.1
#      and 3 s answers, libcurl keeps released transfers up to 3 s before
#      sending them; the line moves by that, preload/hold.c, "Late sends";
#      a settle's surplus moves it back, "Early release".)
#   3. A mix of small and large requests from serial curl loops running
#      side by side: with SHMLIMIT_WAIT_MS set to the bound README.md's
#      Fairness paragraph states, no request is refused locally (a request
#      whose computed wait is past the deadline is refused at once, so none
#      refused means every computed wait was within the bound), all served,
#      zero 429s.  Its curl loops run while case 2's fleet waits on its
#      answers (started before case 2, checked after it).
#
# (multi.sh covers the rows of the 429's retry-after, the spend-cap 429 and
# ITPM binding under --parallel.)
#
# Usage: preload/tests/fidelity.sh [BUILD_DIR]
#   FIDELITY_TEXT_N=N: case 2 measures N transfers per pool (default 56);
#   FIDELITY_TEXT_PMAX=P: case 2's measured transfers run with curl
#   --parallel-max P (default 24; 50 or more places every transfer at
#   once, as a batch).
#
# No timing is asserted: what is checked is what the mock and the segment
# report; the use of a limit is the mock's own account of its admissions
# (use.py: GET /mock/admissions, arrivals as the kernel received them).
# Every mock is bounded by --max-seconds and --max-requests;
# segments have the pid in their names and are removed on exit.
# shellcheck disable=SC2154,SC2034
set -u

B=${1:-build}
SO=$B/libshmlimit-preload.so
SEGTOOL=$B/shmlimit-preload-seg
MOCK=$B/shmlimit-mock
STAT=$B/shmlimit-stat
HERE=$(cd "$(dirname "$0")" && pwd)
seg_rm() { "$SEGTOOL" rm "$1"; }
. "$HERE/harness.sh"
harness_init preload-fidelity

MOCK_BOUNDS="--max-seconds 120 --max-requests 500"
nseg=0
new_seg() { # new_seg NAME CONFIG
	nseg=$((nseg + 1))
	local s="shl-preload-fidelity-$$-$nseg"
	"$SEGTOOL" create "$s" "$2" || { echo "FATAL: cannot create segment"; exit 1; }
	SEGS="$SEGS $s"
	eval "$1=$s"
}
seg() { "$SEGTOOL" stats "$1" | awk -v k="$2" '$1 == k { print $2 }'; }
# mstat URL PATH...: a number from the mock's /mock/stats (PATH: JSON keys)
mstat() {
	local u=$1; shift
	curl -s "$u/mock/stats" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1:]:
    d = d.get(k, {}) if isinstance(d, dict) else {}
print(d if isinstance(d, int) else 0)' "$@"
}
# ratio SEG POOL: the pool's learned estimate ratio (shmlimit-stat --json)
ratio() {
	"$STAT" --json "$1" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["pools"]:
    if p["name"] == sys.argv[1]:
        print(p["estimate"]["ratio"])' "$2"
}
shim() {
	local s=$1 p=$2; shift 2
	SHMLIMIT_SEGMENT=$s SHMLIMIT_HOSTS=127.0.0.1:$p LD_PRELOAD=$SO "$@"
}
in_tok() { grep -o '"input_tokens":[0-9]*' "$1" | head -n 1 | cut -d: -f2; }

# gen.py KIND SEED MODEL [N]: a request body (JSON) of deterministic
# pseudo-random text (ja: about N characters, 900 when 0; en: N words);
# gen.py - FILE...: one body per line of FILE (those arguments, then the
# output file), for many bodies in one run.
cat > "$T/gen.py" <<'EOF'
import json, random, sys
def body(kind, seed, model, n):
    r = random.Random(seed)
    if kind == "ja":
        words = ["東京", "では", "新しい", "仕組み", "が", "公開", "されました", "日本語", "の",
                 "文章", "を", "書き", "ます", "会議", "は", "明日", "午後", "に", "開か", "れる",
                 "予定", "です", "データ", "API", "model", "2026年", "12月", "version 4"]
        parts = []
        while sum(len(p) for p in parts) < (n or 900):
            s = "".join(r.choice(words) for _ in range(r.randint(4, 9)))
            parts.append(s + r.choice(["。", "、", "！", "。 "]))
        text = "".join(parts)
    elif kind == "fr":
        words = ["le", "la", "de", "et", "un", "une", "pour", "dans", "avec", "sur", "nous",
                 "café", "crème", "brûlée", "élève", "après", "déjà", "être", "forêt", "hôpital",
                 "garçon", "noël", "naïve", "façade", "répété", "général", "très", "où", "été",
                 "mère", "fenêtre", "château", "théâtre", "société", "écrire", "tableau", "maison"]
        out = []
        for i in range(600):
            w = r.choice(words)
            out.append(w + ("," if r.random() < 0.06 else "") + ("." if r.random() < 0.05 else ""))
        text = " ".join(out)
    else:  # "en" N: about N words of English
        words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "request",
                 "token", "bucket", "fleet", "shared", "memory", "limit", "server", "answer",
                 "window", "process", "estimate", "learned", "ratio", "and", "of", "to", "in"]
        text = " ".join(r.choice(words) for _ in range(n))
    return (json.dumps({"model": model, "max_tokens": 20,
                      "messages": [{"role": "user", "content": text}]}, ensure_ascii=False))
if sys.argv[1] == "-":
    for f in sys.argv[2:]:
        for l in open(f):
            kind, seed, model, n, out = l.split()
            with open(out, "w") as o:
                o.write(body(kind, int(seed), model, int(n)) + "\n")
else:
    print(body(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0))
EOF
# raw.py BODY...: the shim's raw input estimate of each body, by the rule
# preload/README.md states ("What a request is charged at admission"): quarter
# tokens per code point, summed, rounded up.
cat > "$T/raw.py" <<'EOF'
import json, sys
def w(c):
    o = ord(c)
    if 0x00C0 <= o <= 0x024F or 0x1E00 <= o <= 0x1EFF or 0x0370 <= o <= 0x0E7F:
        return 2
    if (0x2E80 <= o <= 0xA4CF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF or
            0xFF00 <= o <= 0xFFEF or 0x20000 <= o <= 0x3FFFF):
        return 4
    if 0x2600 <= o <= 0x27BF or 0x1F000 <= o <= 0x1FAFF:
        return 8
    return 1
for f in sys.argv[1:]:
    t = json.load(open(f))["messages"][0]["content"]
    print((sum(w(c) for c in t) + 3) // 4)
EOF
gen() { python3 "$T/gen.py" "$@"; }

# =====================================================================
# Known limit: with two or three busy loops besides it on the 2 cores,
# this case failed 3 times in about 35 runs (0 in the runs without them):
# each time the 429 went to the second request, its arrival (the kernel's
# stamp at the mock) less than 1 s after the first's, though the shim had
# moved it by the first's lateness at its pre-request callback.  The
# first request's bytes must have left well after that callback (curl
# descheduled for more than the 2 ms margin); its kernel stamp is there
# (checked: the first read of a new connection carries it).  Not
# resolved; a 0.3% or 0.4% margin made 429s rarer but use then fell
# under 99.5%.
echo "# 1. curl --parallel --parallel-max 8, RPM enforced as one request per interval"
# 60 RPM, burst 1, as the server of issue 12's table enforced it (one
# request a second, no tolerance); tokens plentiful, so RPM binds.  The
# margin is left at its default.
cat > "$T/rpm.json" <<'EOF'
{"pools": [{"name": "p", "rpm": 60, "itpm": 6000000, "otpm": 6000000, "burst": {"rpm": 1},
            "prices": {"input": 1, "output": 5, "cache_write_5m": 1.25, "cache_write_1h": 2,
                       "cache_read": 0.1}}],
 "models": [{"match": "claude-haiku-4-5*", "pool": "p"}]}
EOF
start_mock r --config "$T/rpm.json" --strict-interval
new_seg S1 "$T/rpm.json"
NR=12
args=()
for k in $(seq 1 $NR); do
	[ "$k" -gt 1 ] && args+=(--next -s)
	args+=(-o "$T/rpm$k" --url "$r_url/v1/messages"
	       -d "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":20,\"messages\":[{\"role\":\"user\",\"content\":\"request $k of a strict fleet\"}]}")
done
shim "$S1" "$r_port" curl -s --parallel --parallel-max 8 "${args[@]}" 2>"$T/p1.err"
check "strict: curl exit 0" eq $? 0
check "strict: the server refused none (zero 429s)" eq "$(mstat "$r_url" rate_limited)" 0
check "strict: every transfer got a message" eq "$(grep -l msg_mock "$T"/rpm[0-9]* | wc -l | tr -d ' ')" $NR
check "strict: the server admitted $NR" eq "$(mstat "$r_url" by_pool p ok)" $NR
check "strict: the pool was saturated (admissions waited)" ge "$(seg "$S1" p.waited)" $((NR / 2))
# Use of the binding limit, as the server saw it: the requests it admitted
# from the first to the last, of the one it held at the first plus its
# refill until the last (use.py).
use=$(python3 "$HERE/use.py" "$r_url" p rpm)
echo "       use of the RPM limit: $use"
check "strict: >= 99.5% of the RPM limit used" awk -v u="$use" 'BEGIN { exit !(u >= 0.995) }'
check "strict: settled $NR" eq "$(seg "$S1" p.settled)" $NR
check "strict: segment input tokens = server's" eq "$(seg "$S1" p.tokens_in)" "$(mstat "$r_url" usage input_tokens)"
check "strict: segment output tokens = server's" eq "$(seg "$S1" p.tokens_out)" "$(mstat "$r_url" usage output_tokens)"
check "strict: nothing from the shim on stderr" eq "$(grep -c shmlimit "$T/p1.err")" 0

# =====================================================================
echo "# 3. small and large requests side by side: every wait within the Fairness bound"
# (Started here, checked after case 2: its curl loops run while case 2's
# fleet waits on its 3-s answers.)
# ITPM binds: 400 input tokens a second, burst 1000.  Three serial curl
# loops send small bodies (about 100 tokens), one sends large ones (about
# 600) at the same time; each loop has one request at a time.
cat > "$T/mix.json" <<'EOF'
{"pools": [{"name": "m", "rpm": 6000, "itpm": 24000, "otpm": 6000000, "burst": {"rpm": 100, "itpm": 1000},
            "prices": {"input": 1, "output": 5, "cache_write_5m": 1.25, "cache_write_1h": 2,
                       "cache_read": 0.1}}],
 "models": [{"match": "claude-haiku-4*", "pool": "m"}]}
EOF
start_mock z --config "$T/mix.json"
new_seg S3 "$T/mix.json"
NS=10 NL=4
{
	for w in 1 2 3; do for k in $(seq 0 $NS); do echo "en $((w * 100 + k)) claude-haiku-4-5 60 $T/s$w.$k.json"; done; done
	for k in $(seq 0 $NL); do echo "en $((900 + k)) claude-haiku-4-5 400 $T/l.$k.json"; done
} > "$T/mix.list"
gen - "$T/mix.list"
# Warm-up (the ratio learned): request 0 of each loop, serially.
for f in "$T"/s1.0.json "$T"/s2.0.json "$T"/s3.0.json "$T"/l.0.json; do
	SHMLIMIT_WAIT_MS=-1 shim "$S3" "$z_port" curl -s -o /dev/null "$z_url/v1/messages" -d "@$f"
done
R3=$(ratio "$S3" m)
# The bound (README.md, "Fairness: there is a line"): a request reserved at
# now is released at most (ahead + cost - burst) / rate later, ahead being
# the work reserved and not yet refilled, at most the burst plus the
# requests in line: the other loops', one each (two small ones and the
# large, or three small ones), so at most (3 x small + large) / rate.  A
# request's size is the larger of what the segment charges it (raw estimate
# x learned ratio) and what the server counts (count_tokens, which the mock
# neither limits nor charges), since a settlement above the charge
# lengthens the line too; the rate is the pool's slowed by the default
# margin (1.002).
sz() { # sz FILE...: the largest size of those bodies, as above
	local f
	for f in "$@"; do
		curl -s "$z_url/v1/messages/count_tokens" -d "@$f" | grep -o '[0-9]*'
	done | paste -d ' ' <(python3 "$T/raw.py" "$@") - | awk -v q="$(python3 -c "print(round($R3 * 4096))")" \
		'{ c = int(($1 * q + 4095) / 4096); s = c > $2 ? c : $2; if (s > m) m = s } END { print m }'
}
SMAX=$(sz "$T"/s[123].*.json) LMAX=$(sz "$T"/l.*.json)
BOUND_MS=$(awk -v s="$SMAX" -v l="$LMAX" 'BEGIN { printf "%d", (3 * s + l) * 1.002 / 400 * 1000 + 1 }')
echo "       learned ratio $R3; small <= $SMAX, large <= $LMAX tokens: bound $BOUND_MS ms (SHMLIMIT_WAIT_MS)"
n0=$(mstat "$z_url" by_pool m ok)
echo "       (set up by ${SECONDS}s)"
loop() { # loop NAME FILE...: one serial curl per file; exit codes to $T/NAME.rc
	local n=$1 f; shift
	for f in "$@"; do
		SHMLIMIT_WAIT_MS=$BOUND_MS shim "$S3" "$z_port" curl -s -o "$f.out" "$z_url/v1/messages" \
			-d "@$f" 2>>"$T/$n.err"
		echo $? >> "$T/$n.rc"
	done
}
lp=""
for w in 1 2 3; do
	loop "s$w" $(seq -f "$T/s$w.%g.json" 1 $NS) &
	lp="$lp $!"
done
loop l $(seq -f "$T/l.%g.json" 1 $NL) &
lp="$lp $!"

# =====================================================================
echo "# 2. CJK, accented and mixed bodies, servers answering in 3 s (x) and at once (y), a steady curl --parallel fleet each, ITPM binding"
# Three pools, one per kind of traffic (a pool learns one ratio: learn.c
# assumes one mix of traffic per pool): Japanese (900 characters, some
# ASCII words and digits: about 740 tokens at the server) to Sonnet, French
# (600 words: about 1130 tokens) to Haiku, and issue 12's mixed row to
# Opus: nine English bodies of 250 words (about 300 tokens) in ten and one
# large Japanese body of 3,000 characters (about 2,500 tokens).  Each pool
# takes about one body a second, so ITPM binds; RPM and OTPM do not.  The
# burst holds the WARM warm-up requests, which go out with the ratio not
# yet learned (the mixed pool's include one large body: its ratio, the
# 95th percentile, is then the English bodies', which over-estimates the
# large ones).
cat > "$T/txt.json" <<'EOF'
{"pools": [{"name": "ja", "rpm": 6000, "itpm": 45000, "otpm": 6000000, "burst": {"rpm": 100, "itpm": 3300},
            "prices": {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6,
                       "cache_read": 0.3}},
           {"name": "fr", "rpm": 6000, "itpm": 66000, "otpm": 6000000, "burst": {"rpm": 100, "itpm": 4800},
            "prices": {"input": 1, "output": 5, "cache_write_5m": 1.25, "cache_write_1h": 2,
                       "cache_read": 0.1}},
           {"name": "mix", "rpm": 6000, "itpm": 32000, "otpm": 6000000, "burst": {"rpm": 100, "itpm": 3600},
            "prices": {"input": 5, "output": 25, "cache_write_5m": 6.25, "cache_write_1h": 10,
                       "cache_read": 0.5}}],
 "models": [{"match": "claude-sonnet-4*", "pool": "ja"}, {"match": "claude-haiku-4*", "pool": "fr"},
            {"match": "claude-opus-4*", "pool": "mix"}]}
EOF
# Two servers with these pools: x answers in 3 s, y at once; one fleet
# each, run side by side (the same bodies; outputs $T/x.* and $T/y.*).
start_mock x --config "$T/txt.json" --latency-ms 3000
start_mock y --config "$T/txt.json"
new_seg Sx "$T/txt.json"
new_seg Sy "$T/txt.json"
LANGS="ja fr mix"
WARM=4 NM=${FIDELITY_TEXT_N:-56}
# txt_bodies FIRST LAST: the bodies of transfers FIRST..LAST of each pool
# (the mixed pool's first and every tenth after it a large Japanese body:
# with 56, the last one, the 51st, comes 9 transfers, about 7 s, before
# the run ends, time for its answer to give its surplus back: see the use
# check)
txt_bodies() {
	local k
	for k in $(seq "$1" "$2"); do
		echo "ja $k claude-sonnet-4-5 0 $T/ja$k.json"
		echo "fr $k claude-haiku-4-5 0 $T/fr$k.json"
		if [ $((k % 10)) = 1 ]; then
			echo "ja $((5000 + k)) claude-opus-4-5 3000 $T/mix$k.json"
		else
			echo "en $((5000 + k)) claude-opus-4-5 250 $T/mix$k.json"
		fi
	done > "$T/txt.list"
	gen - "$T/txt.list"
}
# txt_args S FIRST LAST: curl's arguments for them, to server S, the pools
# interleaved
txt_args() {
	args=()
	local k l u
	eval "u=\$${1}_url"
	for k in $(seq "$2" "$3"); do
		for l in $LANGS; do
			[ ${#args[@]} -gt 0 ] && args+=(--next -s)
			args+=(-o "$T/$1.$l$k.out" --url "$u/v1/messages" -d "@$T/$l$k.json")
		done
	done
}
samples() { "$STAT" --json "$1" | python3 -c 'import json,sys; print(sum(p["estimate"]["samples"] for p in json.load(sys.stdin)["pools"]))'; }
# admissions of POOL at server S so far (use.py counts from there)
adm() {
	local u
	eval "u=\$${1}_url"
	curl -s "$u/mock/admissions" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["pools"][sys.argv[1]]["admitted"]))' "$2"
}
txt_bodies 1 $((WARM + NM))
for s in x y; do
	eval "seg_=\$S$s port_=\$${s}_port url_=\$${s}_url"
	txt_args $s 1 $WARM
	# (--parallel-immediate: the warm-up only teaches the ratios; no PIPEWAIT)
	shim "$seg_" "$port_" curl -s --parallel --parallel-immediate "${args[@]}" 2>"$T/$s.w.err"
	eval "warm429_$s=$(mstat "$url_" rate_limited)"
	eval "echo \"       $s warm-up: $((3 * WARM)) requests, \$warm429_$s server 429s; learned ratio ja $(ratio "$seg_" ja), fr $(ratio "$seg_" fr), mix $(ratio "$seg_" mix)\""
	check "text $s: the warm-up taught the three pools ($((3 * WARM)) samples)" eq "$(samples "$seg_")" $((3 * WARM))
	for l in $LANGS; do
		eval "a_${s}_$l=$(adm $s $l)"
	done
	eval "r_ja0_$s=$(ratio "$seg_" ja) r_fr0_$s=$(ratio "$seg_" fr)"
done
# The measured runs: a steady fleet per server, at most P transfers at a
# time (curl --parallel-max), each new one placed as an earlier one ends,
# as a worker pool keeps its slots busy.  (A batch placed all at once is
# README.md's "Early release" case.)
fp=""
for s in x y; do
	eval "seg_=\$S$s port_=\$${s}_port"
	txt_args $s $((WARM + 1)) $((WARM + NM))
	( shim "$seg_" "$port_" curl -s --parallel --parallel-max "${FIDELITY_TEXT_PMAX:-24}" \
		"${args[@]}" 2>"$T/$s.p.err"; echo $? > "$T/$s.p.rc" ) &
	fp="$fp $!"
done
# shellcheck disable=SC2086
wait $fp
# Use from the second measured admission of each pool (the first went
# with the warm-up's answers still in flight).  What stays below 100% is
# the 0.2% margin and the learned estimate's surplus (its p95 ratio errs
# high by 2-4% of every request) on the requests in flight at the last
# admission: each settle gives its surplus back (bucket.c, "Slack") and
# the shim moves the transfers held behind it that much sooner
# (preload/hold.c, "Early release"), so only the last seconds' surplus is
# not used.  Without the early release the surplus of every transfer
# waiting in line was lost as well (switched off by hand, at 48 per pool,
# 3 s: mix 98.83%, under its check; fr 99.50%).  The mixed pool's
# large bodies carry about 250 tokens of surplus each (their ratio is the
# English bodies'), which at 3 s comes back some 6 s after one is sent
# (3 s of PIPEWAIT, 3 s of answer): the server's bucket sits that much
# fuller meanwhile and the line catches up after.  A run that stops within
# those 6 s leaves it unused: FIDELITY_TEXT_N=48 puts the last large body
# 51st of 52 and reads about 99.0% for the mixed pool (here it is 51st of
# 60).
for s in x y; do
	eval "seg_=\$S$s url_=\$${s}_url w429=\$warm429_$s"
	check "text $s: curl exit 0" eq "$(cat "$T/$s.p.rc")" 0
	n429=$(($(mstat "$url_" rate_limited) - w429))
	check "text $s: zero server 429s after the first $((3 * WARM)) requests ($WARM per pool)" eq "$n429" 0
	check "text $s: every transfer got a message" eq \
		"$(grep -l msg_mock "$T/$s".*.out | wc -l | tr -d ' ')" $((3 * (WARM + NM)))
	for l in $LANGS; do
		check "text $s: ITPM bound, $l (admissions waited)" ge "$(seg "$seg_" $l.waited)" $((NM / 2))
	done
	check "text $s: segment input tokens = server's" eq "$(seg "$seg_" all.tokens_in)" "$(mstat "$url_" usage input_tokens)"
	check "text $s: nothing from the shim on stderr" eq "$(grep -c shmlimit "$T/$s.p.err")" 0
	for l in $LANGS; do
		eval "from=\$a_${s}_$l"
		use=$(python3 "$HERE/use.py" "$url_" $l itpm $((from + 1)))
		echo "       $s: use of the ITPM limit, $l: $use"
		check "text $s $l: >= 99.5% of the ITPM limit used" awk -v u="$use" 'BEGIN { exit !(u >= 0.995) }'
	done
	eval "r_ja1_$s=$(ratio "$seg_" ja) r_fr1_$s=$(ratio "$seg_" fr)"
	eval "echo \"       $s: learned ratio after: ja \$r_ja1_$s, fr \$r_fr1_$s, mix $(ratio "$seg_" mix)\""
done
# The estimate's error: what the segment charged a request at admission is
# its raw estimate (raw.py) times the pool's learned ratio (rounded up, in
# 1/4096ths: learn.c), against the server's usage.input_tokens.  The ratio
# is read before and after the measured requests; each must keep the 95th
# percentile of |charged - server| / server within 5%.  (Not the mixed
# pool: one ratio for two scripts errs high on the one it fits worse.)
for s in x y; do
	for l in ja fr; do
		bodies=() outs=()
		for k in $(seq $((WARM + 1)) $((WARM + NM))); do
			bodies+=("$T/$l$k.json")
			outs+=("$T/$s.$l$k.out")
		done
		paste -d ' ' <(python3 "$T/raw.py" "${bodies[@]}") \
			<(for f in "${outs[@]}"; do in_tok "$f"; done) > "$T/$s.$l.err.txt"
		eval "ra=\$r_${l}0_$s rb=\$r_${l}1_$s"
		p95=$(python3 - "$T/$s.$l.err.txt" "$ra" "$rb" <<'EOF'
import math, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
worst = 0.0
for r in sys.argv[2:]:
    q = round(float(r) * 4096)
    errs = sorted(abs(-(-raw * q // 4096) - srv) / srv for raw, srv in rows)
    worst = max(worst, errs[math.ceil(0.95 * len(errs)) - 1])
print("%.4f" % worst)
EOF
)
		echo "       $s: $l: estimate error at the 95th percentile $p95 ($(lines "$T/$s.$l.err.txt") requests)"
		check "text $s $l: estimate error <= 5% at the 95th percentile" \
			awk -v e="$p95" -v n="$(lines "$T/$s.$l.err.txt")" 'BEGIN { exit !(n == '"$NM"' && e <= 0.05) }'
	done
done

# =====================================================================
echo "# 3. (checks) small and large requests side by side"
# shellcheck disable=SC2086
wait $lp
cat "$T"/s[123].rc > "$T/s.rc"
cat "$T"/s[123].err "$T/l.err" > "$T/mix.err"
check "mix: every small request exit 0 (none refused locally)" eq \
	"$(grep -cx 0 "$T/s.rc")/$(lines "$T/s.rc")" "$((3 * NS))/$((3 * NS))"
check "mix: every large request exit 0 (none refused locally)" eq \
	"$(grep -cx 0 "$T/l.rc")/$(lines "$T/l.rc")" "$NL/$NL"
check "mix: no refusal line on stderr" eq "$(grep -c 'shmlimit: refused' "$T/mix.err")" 0
check "mix: the segment refused none" eq "$(seg "$S3" m.refused)" 0
check "mix: the server served all $((3 * NS + NL))" eq "$(($(mstat "$z_url" by_pool m ok) - n0))" $((3 * NS + NL))
check "mix: the server refused none (zero 429s)" eq "$(mstat "$z_url" rate_limited)" 0
check "mix: the pool was saturated (admissions waited)" ge "$(seg "$S3" m.waited)" "$NS"
check "mix: segment input tokens = server's" eq "$(seg "$S3" m.tokens_in)" "$(mstat "$z_url" usage input_tokens)"

echo "ran ${SECONDS}s"
harness_done
