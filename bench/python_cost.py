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
   alternating.  Both clients send through a transport that times itself, and the
   added latency is the difference of the time spent outside it: the network and the
   server (sync httpx meets a 40 ms delayed-ACK stall per request against the mock)
   are taken out of both sides.

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


class Timed(httpx.BaseTransport):
    """The sending transport, timing itself (its call and the reading of its body), so
    that what the network and the server take (here sync httpx meets a 40 ms
    delayed-ACK stall on every request) can be taken out of both sides."""

    def __init__(self, inner):
        self.inner = inner
        self.ns = 0

    def handle_request(self, request):
        t0 = time.perf_counter_ns()
        r = self.inner.handle_request(request)
        self.ns += time.perf_counter_ns() - t0
        r.stream = TimedStream(r.stream, self)
        return r


class TimedStream(httpx.SyncByteStream):
    def __init__(self, inner, owner):
        self.inner, self.owner = inner, owner

    def __iter__(self):
        it = iter(self.inner)
        while True:
            t0 = time.perf_counter_ns()
            try:
                chunk = next(it)
            except StopIteration:
                self.owner.ns += time.perf_counter_ns() - t0
                return
            self.owner.ns += time.perf_counter_ns() - t0
            yield chunk

    def close(self):
        self.inner.close()


class ATimed(httpx.AsyncBaseTransport):
    def __init__(self, inner):
        self.inner = inner
        self.ns = 0

    async def handle_async_request(self, request):
        t0 = time.perf_counter_ns()
        r = await self.inner.handle_async_request(request)
        self.ns += time.perf_counter_ns() - t0
        r.stream = ATimedStream(r.stream, self)
        return r


class ATimedStream(httpx.AsyncByteStream):
    def __init__(self, inner, owner):
        self.inner, self.owner = inner, owner

    async def __aiter__(self):
        it = self.inner.__aiter__()
        while True:
            t0 = time.perf_counter_ns()
            try:
                chunk = await it.__anext__()
            except StopAsyncIteration:
                self.owner.ns += time.perf_counter_ns() - t0
                return
            self.owner.ns += time.perf_counter_ns() - t0
            yield chunk

    async def aclose(self):
        await self.inner.aclose()


def sync_run(client, timed, n):
    """(wall ns per request, ns per request outside the sending transport)"""
    timed.ns = 0
    t0 = time.perf_counter_ns()
    for _ in range(n):
        r = client.post(url + "/v1/messages", content=body, headers=H)
        if r.status_code != 200:
            raise SystemExit(f"non-200 reply: {r.status_code}")
    wall = time.perf_counter_ns() - t0
    return wall / n, (wall - timed.ns) / n


async def async_run(client, timed, n):
    timed.ns = 0
    t0 = time.perf_counter_ns()
    for _ in range(n):
        r = await client.post(url + "/v1/messages", content=body, headers=H)
        if r.status_code != 200:
            raise SystemExit(f"non-200 reply: {r.status_code}")
    wall = time.perf_counter_ns() - t0
    return wall / n, (wall - timed.ns) / n


def mins(acc, v):
    return (min(acc[0], v[0]), min(acc[1], v[1]))


before = lim.stats()["pools"][0]["counters"]["settled"]
tp, tg = Timed(httpx.HTTPTransport()), Timed(httpx.HTTPTransport())
plain = httpx.Client(transport=tp)
gov = httpx.Client(transport=shmlimit.GovernedTransport(tg, segment=seg, hosts=[hostport]))
sync_run(plain, tp, 20)
sync_run(gov, tg, 20)
inf = (float("inf"), float("inf"))
sp = sg = inf
for _ in range(reps):
    sp = mins(sp, sync_run(plain, tp, n_req))
    sg = mins(sg, sync_run(gov, tg, n_req))


async def amain():
    ap = ag = inf
    ta, tb = ATimed(httpx.AsyncHTTPTransport()), ATimed(httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=ta) as a, httpx.AsyncClient(
            transport=shmlimit.AsyncGovernedTransport(tb, segment=seg, hosts=[hostport])) as b:
        await async_run(a, ta, 20)
        await async_run(b, tb, 20)
        for _ in range(reps):
            ap = mins(ap, await async_run(a, ta, n_req))
            ag = mins(ag, await async_run(b, tb, n_req))
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
print(f"Latency a governed request adds (sequential requests, best of {reps} runs of {n_req}; "
      "`outside the sender`: the wall time minus the time spent in the sending transport, "
      "i.e. httpx's own work plus, governed, the transport's):")
print()
print("| client | plain, us/request | governed, us/request | outside the sender, plain | outside the sender, governed | added, us/request |")
print("|---|---:|---:|---:|---:|---:|")
print(f"| httpx.Client + GovernedTransport | {sp[0] / 1000:.1f} | {sg[0] / 1000:.1f} | {sp[1] / 1000:.1f} | "
      f"{sg[1] / 1000:.1f} | {(sg[1] - sp[1]) / 1000:.1f} |")
print(f"| httpx.AsyncClient + AsyncGovernedTransport | {ap[0] / 1000:.1f} | {ag[0] / 1000:.1f} | {ap[1] / 1000:.1f} | "
      f"{ag[1] / 1000:.1f} | {(ag[1] - ap[1]) / 1000:.1f} |")
print()
print(f"Requests the transports governed (segment's settled count): {governed} of {expect}.")
print()
print(f"csv,python,ctypes,admit_settle,1,ns_bare_pair,{res['bare']:.6g},ns")
print(f"csv,python,ctypes,admit_settle,1,ns_shl_pair,{res['raw']:.6g},ns")
print(f"csv,python,ctypes,admit_settle,1,ratio_shl_over_bare,{res['raw'] / res['bare']:.6g},x")
print(f"csv,python,api,admit_settle,1,ns_limiter_pair,{res['high']:.6g},ns")
print(f"csv,python,api,admit_settle,1,ratio_limiter_over_bare,{res['high'] / res['bare']:.6g},x")
print(f"csv,python,httpx,sync,1,us_added_per_request,{(sg[1] - sp[1]) / 1000:.6g},us")
print(f"csv,python,httpx,async,1,us_added_per_request,{(ag[1] - ap[1]) / 1000:.6g},us")
if governed != expect:
    print(f"WARNING: the transports governed {governed} of {expect} requests; the latency above is not theirs.")
    sys.exit(1)
