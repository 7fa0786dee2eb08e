"""python_cost.py - what the Python binding costs (issue 14, "Measure").

1. Admit + settle through ctypes next to a bare ctypes call of a no-op C function
   pair with the same signatures (noop_try(h, model, cost*, ticket*, why*),
   noop_settle(h, ticket*, usage*), compiled by bench/python-cost.sh), made the same
   way (same argtypes, same preallocated structures): the ratio is what the
   library's work adds to the FFI's own cost (target: within 3x).  Also the
   high-level API (Limiter.try_acquire + Ticket.settle, and the `with` form), whose
   Python objects cost more than the calls.
2. The latency a GovernedTransport adds per request against the local mock:
   sequential requests, plain httpx.Client vs the same through GovernedTransport
   (sync) and AsyncGovernedTransport (async, one request at a time), best of 3,
   alternating.

Usage: python_cost.py MODE NOOP_SO MOCK_URL HOSTPORT SEGMENT   (MODE quick|full)
Prints a Markdown section, then CSV lines prefixed "csv,".
"""

import asyncio
import ctypes
import sys
import time
from ctypes import byref, c_int, c_void_p, POINTER

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/python")
import httpx  # noqa: E402

import shmlimit  # noqa: E402
from shmlimit import _native as N  # noqa: E402

mode, noop_so, url, hostport, seg = sys.argv[1:6]
quick = mode == "quick"
n_calls = 50_000 if quick else 200_000
rounds = 5 if quick else 9
n_req = 150 if quick else 600
reps = 3

lim = shmlimit.Limiter(seg)
lib = lim._lib
hp = lim._hp
m = lim.lookup("claude-sonnet-4-5")
noop = ctypes.CDLL(noop_so)
noop.noop_try.argtypes = lib.shl_try.argtypes
noop.noop_try.restype = c_int
noop.noop_settle.argtypes = lib.shl_settle.argtypes
noop.noop_settle.restype = c_int

cost = N.shl_cost(input_tokens=10, max_tokens=10)
usage = N.shl_usage(input_tokens=10, output_tokens=5)
t = N.shl_ticket()
why = N.shl_refusal()


def bare(n):
    f, g = noop.noop_try, noop.noop_settle
    bc, bt, bw, bu = byref(cost), byref(t), byref(why), byref(usage)
    for _ in range(n):
        f(hp, m, bc, bt, bw)
        g(hp, bt, bu)


def raw(n):
    f, g = lib.shl_try, lib.shl_settle
    bc, bt, bw, bu = byref(cost), byref(t), byref(why), byref(usage)
    for _ in range(n):
        if f(hp, m, bc, bt, bw) != 0:
            raise SystemExit("refused: the bench pool must never refuse")
        g(hp, bt, bu)


def high(n):
    for _ in range(n):
        lim.try_acquire("claude-sonnet-4-5", input_tokens=10, max_tokens=10).settle(
            input_tokens=10, output_tokens=5)


def high_with(n):
    for _ in range(n):
        with lim.acquire("claude-sonnet-4-5", input_tokens=10, max_tokens=10, timeout=0) as tk:
            tk.settle(input_tokens=10, output_tokens=5)


# Interleaved, best of `rounds`: on a shared machine the load changes from one second to
# the next, and each variant must see the same chances.
res = {"bare": float("inf"), "raw": float("inf"), "high": float("inf"), "with": float("inf")}
for _ in range(rounds):
    for name, fn in (("bare", bare), ("raw", raw), ("high", high), ("with", high_with)):
        n = n_calls if name in ("bare", "raw") else n_calls // 5
        t0 = time.perf_counter_ns()
        fn(n)
        res[name] = min(res[name], (time.perf_counter_ns() - t0) / n)

body = b'{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}'
H = {"content-type": "application/json", "x-api-key": "bench", "anthropic-version": "2023-06-01"}


def sync_run(client, n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        r = client.post(url + "/v1/messages", content=body, headers=H)
        if r.status_code != 200:
            raise SystemExit(f"non-200 reply: {r.status_code}")
    return (time.perf_counter_ns() - t0) / n


async def async_run(client, n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        r = await client.post(url + "/v1/messages", content=body, headers=H)
        if r.status_code != 200:
            raise SystemExit(f"non-200 reply: {r.status_code}")
    return (time.perf_counter_ns() - t0) / n


before = lim.stats()["pools"][0]["counters"]["settled"]
plain = httpx.Client()
gov = httpx.Client(transport=shmlimit.GovernedTransport(segment=seg, hosts=[hostport]))
sync_run(plain, 20)
sync_run(gov, 20)
sp = sg = float("inf")
for _ in range(reps):
    sp = min(sp, sync_run(plain, n_req))
    sg = min(sg, sync_run(gov, n_req))


async def amain():
    ap = ag = float("inf")
    async with httpx.AsyncClient() as a, httpx.AsyncClient(
            transport=shmlimit.AsyncGovernedTransport(segment=seg, hosts=[hostport])) as b:
        await async_run(a, 20)
        await async_run(b, 20)
        for _ in range(reps):
            ap = min(ap, await async_run(a, n_req))
            ag = min(ag, await async_run(b, n_req))
    return ap, ag


ap, ag = asyncio.run(amain())
governed = lim.stats()["pools"][0]["counters"]["settled"] - before
expect = (20 + reps * n_req) * 2

print("## 7. Python binding cost (ctypes; httpx transport against the local mock)")
print()
print(f"Admission through ctypes, ns per admit + settle pair (best of {rounds} interleaved runs of "
      f"{n_calls} pairs; the high-level API {n_calls // 5}):")
print()
print("| call pair | ns | ratio to the bare no-op pair |")
print("|---|---:|---:|")
print(f"| bare ctypes no-op pair (noop_try + noop_settle, same argtypes) | {res['bare']:.0f} | 1.00 |")
print(f"| shl_try + shl_settle through ctypes | {res['raw']:.0f} | {res['raw'] / res['bare']:.2f} |")
print(f"| Limiter.try_acquire() + Ticket.settle() | {res['high']:.0f} | {res['high'] / res['bare']:.2f} |")
print(f"| with lim.acquire(timeout=0) as t: t.settle() | {res['with']:.0f} | {res['with'] / res['bare']:.2f} |")
print()
print(f"Latency a governed request adds (sequential requests, best of {reps} runs of {n_req}):")
print()
print("| client | plain, us/request | governed, us/request | added, us/request |")
print("|---|---:|---:|---:|")
print(f"| httpx.Client + GovernedTransport | {sp / 1000:.1f} | {sg / 1000:.1f} | {(sg - sp) / 1000:.1f} |")
print(f"| httpx.AsyncClient + AsyncGovernedTransport | {ap / 1000:.1f} | {ag / 1000:.1f} | {(ag - ap) / 1000:.1f} |")
print()
print(f"Requests the transports governed (segment's settled count): {governed} of {expect}.")
print()
print(f"csv,python,ctypes,admit_settle,1,ns_bare_pair,{res['bare']:.6g},ns")
print(f"csv,python,ctypes,admit_settle,1,ns_shl_pair,{res['raw']:.6g},ns")
print(f"csv,python,ctypes,admit_settle,1,ratio_shl_over_bare,{res['raw'] / res['bare']:.6g},x")
print(f"csv,python,api,admit_settle,1,ns_limiter_pair,{res['high']:.6g},ns")
print(f"csv,python,api,admit_settle,1,ratio_limiter_over_bare,{res['high'] / res['bare']:.6g},x")
print(f"csv,python,httpx,sync,1,us_added_per_request,{(sg - sp) / 1000:.6g},us")
print(f"csv,python,httpx,async,1,us_added_per_request,{(ag - ap) / 1000:.6g},us")
if governed != expect:
    print(f"WARNING: the transports governed {governed} of {expect} requests; the latency above is not theirs.")
    sys.exit(1)
