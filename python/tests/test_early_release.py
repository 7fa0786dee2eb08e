"""Early release in the transports: a request waiting in line is moved sooner by what a
request placed before it in the same pool gave back when it settled below its estimate,
and never by the give of one placed after it (python/shmlimit/_early.py).

The pool's ITPM bucket binds: 10,000 a minute (6 ms a token, plus the pool's 0.2% margin),
a burst of 1,000; RPM's burst of 10,000 puts its edge 10 s before any release here, so it
never limits a move.  A first request teaches the pool its ratio (the mock counts the
body's 500 tokens), so that A and B are estimated at 500 each: A goes at once, B waits
about 3 s behind it; the server counts A at 150, and A's settle gives 350 tokens back,
which moves B about 2.1 s sooner.  The checks are exact, from what the transport read
(the lines' trace hook: B's release and edges at its placing, A's give per bucket,
B's release after the move), never from how long anything took."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading

import anyio
import httpx
import pytest

import shmlimit
from shmlimit import _native as N
from shmlimit import _early as E
from conftest import config, message_body, pool, sdk_headers

SEG = config(rpm=60000, itpm=10000, burst={"rpm": 10000, "itpm": 1000})
INT64_MIN = -(1 << 63)


def body(chars: int = 2000) -> dict:
    b = message_body(0)
    b["messages"][0]["content"] = "x" * chars  # the mock counts 4 characters a token
    return b


def headers(tag: str, count=None) -> dict:
    h = {**sdk_headers(), "x-tag": tag}
    if count is not None:  # what the server counts: input, output, cache writes, read
        h["x-mock-usage"] = f"{count},1,0,0,0"
    return h


class Trace:
    """What the transport reports (under its lock), by seq; `placed` is set at each
    reservation that waits."""

    def __init__(self, lib):
        self.lib = lib
        self.placed, self.given, self.moved = {}, {}, []
        self.cond = threading.Condition()

    def __call__(self, what, seq, *values):
        now = self.lib.shl_now()  # after the library call the event reports
        with self.cond:
            if what == "placed":
                self.placed[seq] = values  # (release, edges)
            elif what == "given":
                self.given[seq] = values[0]
            else:
                self.moved.append((seq, values[0], now))
            self.cond.notify_all()

    def wait_placed(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.placed) >= n, 30)

    def wait_given(self, seq: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: seq in self.given, 30)


@pytest.fixture
def trace(monkeypatch):
    t = Trace(N.load())
    monkeypatch.setattr(E, "trace", t)
    return t


class Sent:
    """The instant (the library's clock) each tagged request reached the inner transport."""

    def __init__(self, lib):
        self.lib = lib
        self.at = {}

    def sync(self):
        outer, inner = self, httpx.HTTPTransport()

        class Rec(httpx.BaseTransport):
            def handle_request(self, request):
                outer.at[request.headers["x-tag"]] = outer.lib.shl_now()
                return inner.handle_request(request)
        return Rec()

    def async_(self):
        outer, inner = self, httpx.AsyncHTTPTransport()

        class Rec(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request):
                outer.at[request.headers["x-tag"]] = outer.lib.shl_now()
                return await inner.handle_async_request(request)
        return Rec()


def moved_by(edges, g) -> int:
    """preload/hold.c's rule, restated: how much sooner a place with these edges may go
    after a give g of a place before it."""
    taken = [d for d in range(3) if edges[d] != INT64_MIN]
    assert max(edges[d] for d in taken) == 0  # a bucket set the release
    return -max(edges[d] - min(g[d], 1 << 62) for d in taken)


def sync_client(m, seg, sent):
    t = shmlimit.GovernedTransport(sent.sync(), segment=seg, hosts=[m.hostport])
    return httpx.Client(transport=t, base_url=m.url, timeout=30)


def post(c, tag, chars=2000, count=None):
    return c.post("/v1/messages", content=json.dumps(body(chars)).encode(), headers=headers(tag, count))


def open_a(c):
    """A0 teaches the pool; A is admitted at once and held open (not settled) until read."""
    assert post(c, "A0").status_code == 200
    return c.send(c.build_request("POST", "/v1/messages", content=json.dumps(body()).encode(),
                                  headers=headers("A", 150)), stream=True)


def check_moved(trace, sent, a_seq, b_seq):
    rel0, edges = trace.placed[b_seq]
    g = trace.given[a_seq]
    shift = moved_by(edges, g)
    assert g[1] > 0 and shift > 1_000_000_000  # A gave ITPM; B goes > 1 s sooner
    assert [m[0] for m in trace.moved].count(b_seq) == 1
    rel1, at = next(m[1:] for m in trace.moved if m[0] == b_seq)
    if at <= rel0 - shift:
        assert rel1 == rel0 - shift
    else:  # the give came so late that the move stopped at the clock (never before now)
        assert rel0 - shift < rel1 <= at
    # B started at its new release (shl_ex_start refuses one started before it), not at
    # its first
    assert rel1 <= sent.at["B"] < rel0


def test_sync_waiter_moved_by_earlier_settle(mock, segment, trace):
    m = mock()
    seg = segment(SEG)
    sent = Sent(trace.lib)
    out = {}
    with sync_client(m, seg, sent) as c:
        ra = open_a(c)
        assert ra.status_code == 200 and not trace.placed and not trace.moved
        tb = threading.Thread(target=lambda: out.setdefault("B", post(c, "B")))
        tb.start()
        trace.wait_placed(1)
        (b_seq,) = trace.placed
        ra.read()  # A settles on this thread; B waits on its own
        ra.close()
        tb.join(30)
    assert out["B"].status_code == 200
    check_moved(trace, sent, b_seq - 1, b_seq)  # A: the place just before B's
    c_ = pool(shmlimit.Limiter(seg).stats())["counters"]
    assert c_["settled"] == 3 and c_["cancelled"] == 0
    assert m.stats()["requests"] == 3


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_waiter_moved_by_earlier_settle_not_by_later_cancel(mock, segment, trace, backend):
    """B and C wait as tasks of one loop; C, placed after B, is cancelled: its give does not
    move B.  A (a sync request of the same process, same line) then settles on a worker
    thread: the wake reaches the loop from there."""
    if backend == "trio":
        pytest.importorskip("trio")
    m = mock()
    seg = segment(SEG)
    sent = Sent(trace.lib)
    out = {}

    async def post_async(c, tag, chars=2000):
        out[tag] = await c.post("/v1/messages", content=json.dumps(body(chars)).encode(),
                                headers=headers(tag))

    async def main():
        with sync_client(m, seg, sent) as sc:
            ra = open_a(sc)
            t = shmlimit.AsyncGovernedTransport(sent.async_(), segment=seg, hosts=[m.hostport])
            async with httpx.AsyncClient(transport=t, base_url=m.url, timeout=30) as c:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(post_async, c, "B")
                    await anyio.to_thread.run_sync(trace.wait_placed, 1)
                    cancel_c = anyio.CancelScope()

                    async def c_task():
                        with cancel_c:
                            await post_async(c, "C", 400)
                    tg.start_soon(c_task)
                    await anyio.to_thread.run_sync(trace.wait_placed, 2)
                    b_seq, c_seq = sorted(trace.placed)
                    cancel_c.cancel()
                    await anyio.to_thread.run_sync(trace.wait_given, c_seq)
                    assert trace.given[c_seq][1] > 0 and not trace.moved  # C gave; B stays
                    await anyio.to_thread.run_sync(lambda: (ra.read(), ra.close()))
        return b_seq

    b_seq = anyio.run(main, backend=backend)
    assert out["B"].status_code == 200 and "C" not in out and "C" not in sent.at
    check_moved(trace, sent, b_seq - 1, b_seq)  # A: the place just before B's
    c_ = pool(shmlimit.Limiter(seg).stats())["counters"]
    assert c_["settled"] == 3 and c_["cancelled"] == 1


def test_library_without_early_release(mock, segment, trace, monkeypatch):
    """An older library (no shl_ex_place, shl_ex_given, shl_ex_follow): requests wait their
    whole wait, as before, and nothing is numbered or moved."""
    monkeypatch.setattr(trace.lib, "has_early", False)
    m = mock()
    seg = segment(config(rpm=600, burst={"rpm": 1}))  # each request 100 ms after the one before
    sent = Sent(trace.lib)
    with sync_client(m, seg, sent) as c:
        assert [post(c, f"S{i}", 8).status_code for i in range(3)] == [200] * 3
    assert not trace.placed and not trace.given and not trace.moved
    assert pool(shmlimit.Limiter(seg).stats())["counters"]["settled"] == 3


def test_fork_child_has_its_own_lines(mock, segment):
    """A child forked while another thread holds the lines' lock (and with the parent's
    places numbered) starts with lines of its own: its requests are numbered from 1 and
    never wait for that lock (an alarm kills a child that does)."""
    m = mock()
    seg = segment(SEG)
    sent = Sent(N.load())
    held, done = threading.Event(), threading.Event()

    def hold():
        with E.lines.lock:
            held.set()
            done.wait(30)

    with sync_client(m, seg, sent) as c:
        assert post(c, "P", 8).status_code == 200 and E.lines.seq > 0
        th = threading.Thread(target=hold)
        th.start()
        try:
            assert held.wait(30)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.alarm(10)
                    fresh = E.lines.seq == 0 and not E.lines.waiting
                    with sync_client(m, seg, sent) as cc:
                        ok = post(cc, "K", 8).status_code == 200
                    code = 0 if fresh and ok and E.lines.seq == 1 else 2
                finally:
                    os._exit(code)
            _, st = os.waitpid(pid, 0)
        finally:
            done.set()
            th.join(30)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
    assert m.stats()["requests"] == 2  # P, and the child's K


# -- the explicit API: Limiter.acquire and acquire_async (tickets; no server needed) -----

MODEL = "claude-sonnet-4-5"


def check_ticket_moved(trace, a_seq, b_seq, started):
    """B moved once by A's give, exactly (or, given after the moved release, to the clock);
    it started at its new release, before its first."""
    rel0, edges = trace.placed[b_seq]
    shift = moved_by(edges, trace.given[a_seq])
    assert shift > 500_000_000  # more than half a second sooner
    assert [m[0] for m in trace.moved].count(b_seq) == 1
    rel1, at = next(m[1:] for m in trace.moved if m[0] == b_seq)
    if at <= rel0 - shift:
        assert rel1 == rel0 - shift
    else:
        assert rel0 - shift < rel1 <= at
    assert rel1 <= started < rel0


def test_acquire_moved_by_earlier_settle(segment, trace):
    """A takes 900 of the 1,000-token burst at once; B (500) waits about 2.4 s in its own
    thread; A settles at 700: its give of 200 tokens (1.2 s) moves B that much sooner."""
    lim = shmlimit.Limiter(segment(SEG))
    lib = trace.lib
    a = lim.acquire(MODEL, input_tokens=900, max_tokens=10)
    out = {}

    def b():
        t = lim.acquire(MODEL, input_tokens=500, max_tokens=10, timeout=30)
        out["started"] = lib.shl_now()
        t.settle(input_tokens=500, output_tokens=1)

    th = threading.Thread(target=b)
    th.start()
    trace.wait_placed(1)
    (b_seq,) = trace.placed
    a.settle(input_tokens=700, output_tokens=1)
    th.join(30)
    check_ticket_moved(trace, b_seq - 1, b_seq, out["started"])
    c = pool(lim.stats())["counters"]
    assert c["settled"] == 2 and c["cancelled"] == 0


def test_acquire_async_not_moved_by_later_cancel(segment, trace):
    """B and C wait as tasks (acquire_async), C placed after B; C's task is cancelled: its
    give does not move B.  A then settles on a worker thread and moves B."""
    lim = shmlimit.Limiter(segment(SEG))
    lib = trace.lib
    a = lim.acquire(MODEL, input_tokens=900, max_tokens=10)
    out = {}

    async def main():
        async def b():
            async with lim.acquire_async(MODEL, input_tokens=500, max_tokens=10) as t:
                out["started"] = lib.shl_now()
                t.settle(input_tokens=500, output_tokens=1)

        tb = asyncio.ensure_future(b())
        await asyncio.to_thread(trace.wait_placed, 1)
        tc = asyncio.ensure_future(lim.acquire_async(MODEL, input_tokens=300, max_tokens=10))
        await asyncio.to_thread(trace.wait_placed, 2)
        b_seq, c_seq = sorted(trace.placed)
        tc.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tc
        assert trace.given[c_seq][1] > 0 and not trace.moved  # C gave; B stays
        await asyncio.to_thread(a.settle, input_tokens=700, output_tokens=1)
        await tb
        return b_seq

    b_seq = asyncio.run(main())
    check_ticket_moved(trace, b_seq - 1, b_seq, out["started"])  # A: numbered just before B
    c = pool(lim.stats())["counters"]
    assert c["settled"] == 2 and c["cancelled"] == 1
