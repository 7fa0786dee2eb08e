"""GovernedTransport / AsyncGovernedTransport against the mock, with the official SDK's
request shape (the SDK itself is not installable here: headers x-api-key,
anthropic-version, a JSON body, stream=true SSE read line by line)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import httpx
import pytest

import shmlimit
from conftest import config, message_body, pool, read_sse_usage, sdk_headers, totals


def client(m, seg, **kw):
    return httpx.Client(transport=shmlimit.GovernedTransport(segment=seg, hosts=[m.hostport], **kw),
                        base_url=m.url, timeout=30)


def aclient(m, seg, **kw):
    return httpx.AsyncClient(transport=shmlimit.AsyncGovernedTransport(segment=seg, hosts=[m.hostport], **kw),
                             base_url=m.url, timeout=30)


def sdk_create(c: httpx.Client, body: dict, extra=None):
    """What Anthropic().messages.create(**body) does on the wire; returns (status, usage, bytes)."""
    h = sdk_headers(body.get("stream", False))
    h.update(extra or {})
    req = c.build_request("POST", "/v1/messages", content=json.dumps(body).encode(), headers=h)
    r = c.send(req, stream=True)
    try:
        if body.get("stream"):
            raw = b""
            lines = []
            for line in r.iter_lines():
                lines.append(line)
            raw = "\n".join(lines).encode()
            return r.status_code, read_sse_usage(lines), raw
        data = r.read()
        return r.status_code, json.loads(data).get("usage"), data
    finally:
        r.close()


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_shape_sync_exact_and_unchanged(mock, segment, stream):
    m = mock()
    seg = segment()
    bodies = [message_body(i, stream=stream) for i in range(6)]
    with httpx.Client(base_url=m.url) as plain:
        ungoverned = [sdk_create(plain, b)[2] for b in bodies]
    before = m.stats()["usage"]
    with client(m, seg) as c:
        got = [sdk_create(c, b) for b in bodies]
    assert all(s == 200 for s, _, _ in got)
    assert [raw for _, _, raw in got] == ungoverned  # not a byte changed
    after = m.stats()["usage"]
    server = {k: after[k] - before[k] for k in after}
    st = shmlimit.Limiter(seg).stats()
    assert totals(st) == server
    c_ = pool(st)["counters"]
    assert c_["admitted"] == 6 and c_["settled"] == 6 and c_["cancelled"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_shape_async_exact(mock, segment, stream):
    m = mock()
    seg = segment()

    async def main():
        async with aclient(m, seg) as c:
            async def one(i):
                b = message_body(i, stream=stream)
                async with c.stream("POST", "/v1/messages", content=json.dumps(b).encode(),
                                    headers=sdk_headers(stream)) as r:
                    lines = [line async for line in r.aiter_lines()]
                    assert r.status_code == 200
                    return lines
            return await asyncio.gather(*(one(i) for i in range(8)))

    asyncio.run(main())
    st = shmlimit.Limiter(seg).stats()
    assert totals(st) == m.stats()["usage"]
    assert pool(st)["counters"]["settled"] == 8


def test_early_closed_stream_settles(mock, segment):
    m = mock(args=["--stream-chunk-delay-ms", "20"])
    seg = segment()
    with client(m, seg) as c:
        b = message_body(1, stream=True, max_tokens=200)
        with c.stream("POST", "/v1/messages", json=b, headers={**sdk_headers(True), "x-mock-output-tokens": "100"}) as r:
            it = r.iter_lines()
            for line in it:  # read up to message_start, then walk away
                if line.startswith("data:") and "message_start" in line:
                    start = json.loads(line[5:])["message"]["usage"]
                    break
        p = pool(shmlimit.Limiter(seg).stats())
        assert p["counters"]["settled"] == 1 and p["counters"]["cancelled"] == 0
        assert p["tokens"]["input"] == start["input_tokens"]
        assert 1 <= p["tokens"]["output"] < 100  # what it had reported, not the worst case

    async def main():
        async with aclient(m, seg) as c:
            async with c.stream("POST", "/v1/messages", json=message_body(2, stream=True),
                                headers=sdk_headers(True)) as r:
                async for _ in r.aiter_raw():
                    break

    asyncio.run(main())
    assert pool(shmlimit.Limiter(seg).stats())["counters"]["settled"] == 2


def test_unread_response_settles_on_gc(mock, segment):
    m = mock()
    seg = segment()
    c = client(m, seg)
    r = c.send(c.build_request("POST", "/v1/messages", json=message_body(3)), stream=True)
    assert pool(shmlimit.Limiter(seg).stats())["counters"]["settled"] == 0
    r.close()  # what `with` does; the SDK always reads or closes
    assert pool(shmlimit.Limiter(seg).stats())["counters"]["settled"] == 1
    c.close()


@pytest.mark.parametrize("stream", [False, True])
def test_gzip_response_read_exactly(mock, segment, stream):
    m = mock()
    seg = segment()
    with client(m, seg) as c:
        r = c.post("/v1/messages", json=message_body(4, stream=stream, max_tokens=500),
                   headers={"x-mock-encoding": "gzip", "x-mock-output-tokens": "33"})
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        r.read()  # the application gets the decoded body as usual
    p = pool(shmlimit.Limiter(seg).stats())
    assert p["tokens"]["output"] == 33  # the usage, not max_tokens
    assert p["tokens"]["input"] == m.stats()["usage"]["input_tokens"]


def test_server_429_holds_pool(mock, segment):
    m = mock()
    seg = segment()
    with client(m, seg) as c:
        r = c.post("/v1/messages", json=message_body(5),
                   headers={"x-mock-fail": "429", "x-mock-retry-after": "30"})
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        assert "x-shmlimit-refused" not in r.headers  # the server's own answer, passed through
    p = pool(shmlimit.Limiter(seg).stats())
    assert p["hold_seconds"] > 25 and p["counters"]["server_429"] == 1
    # every process now waits instead of hitting the wall: a short deadline is refused locally
    n = m.stats()["requests"]
    with client(m, seg, max_wait=0.5) as c:
        r = c.post("/v1/messages", json=message_body(6))
    assert r.status_code == 429 and r.headers["x-shmlimit-refused"] == "hold"
    assert int(r.headers["retry-after"]) >= 25
    assert m.stats()["requests"] == n  # never sent


def test_spend_cap_429_stops_everyone(mock, segment):
    m = mock()
    seg = segment(config(cap=100))
    with client(m, seg) as c:
        r = c.post("/v1/messages", json=message_body(7), headers={"x-mock-fail": "spend-cap"})
        assert r.status_code == 429
        n = m.stats()["requests"]
        r = c.post("/v1/messages", json=message_body(8))
    assert r.status_code == 429 and r.headers["x-should-retry"] == "false"
    assert r.json()["error"]["details"]["error_code"] == "enforced_spend_limit_reached"
    assert m.stats()["requests"] == n
    assert shmlimit.Limiter(seg).stats()["spend"]["exhausted"] is True
    with client(m, seg, refusal="raise") as c:
        with pytest.raises(shmlimit.SpendCapReached):
            c.post("/v1/messages", json=message_body(9))


def test_too_large_refused_locally(mock, segment):
    m = mock()
    seg = segment(config(itpm=100))
    big = message_body(0)
    big["messages"][0]["content"] = "x" * 2000  # 500 tokens > 100
    with client(m, seg) as c:
        r = c.post("/v1/messages", json=big)
    assert r.status_code == 429 and r.headers["x-should-retry"] == "false"
    assert r.headers["x-shmlimit-refused"] == "itpm"
    assert m.stats()["requests"] == 0
    with client(m, seg, refusal="raise") as c:
        with pytest.raises(shmlimit.TooLarge) as e:
            c.post("/v1/messages", json=big)
    assert e.value.dimension == "itpm"


def test_deadline_refusal_then_wait(mock, segment):
    m = mock()
    seg = segment(config(rpm=60, burst={"rpm": 1}))
    with client(m, seg, max_wait=0) as c:
        assert c.post("/v1/messages", json=message_body(1)).status_code == 200
        r = c.post("/v1/messages", json=message_body(2))
        assert r.status_code == 429 and r.headers["x-shmlimit-refused"] == "rpm"
        # the wait, whole seconds rounded up: one interval of 60 RPM (1 s, lengthened
        # by the pool's jitter margin, 0.2%) less the little time since the first
        assert r.headers["retry-after"] in ("1", "2")
    with client(m, seg, max_wait=5) as c:  # waiting long enough is admitted
        assert c.post("/v1/messages", json=message_body(3)).status_code == 200
    st = m.stats()
    assert st["requests"] == 2 and st["rate_limited"] == 0


def test_connection_refused_cancels(segment):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    seg = segment()
    t = shmlimit.GovernedTransport(segment=seg, hosts=[f"127.0.0.1:{port}"])
    with httpx.Client(transport=t) as c:
        with pytest.raises(httpx.ConnectError):
            c.post(f"http://127.0.0.1:{port}/v1/messages", json=message_body(1))
    st = shmlimit.Limiter(seg).stats()
    p = pool(st)
    assert p["counters"]["cancelled"] == 1 and p["counters"]["settled"] == 0
    assert st["spend"]["spent_usd"] == 0 and p["tokens"]["input"] == 0


def test_other_hosts_paths_methods_untouched(mock, segment):
    m = mock()
    seg = segment()
    with httpx.Client(transport=shmlimit.GovernedTransport(segment=seg), base_url=m.url) as c:
        assert c.post("/v1/messages", json=message_body(1)).status_code == 200  # host not governed
    with client(m, seg) as c:
        assert c.get("/mock/health").status_code == 200
        assert c.post("/v1/complete", json=message_body(1)).status_code == 404
        # count_tokens without a config entry: not governed
        assert c.post("/v1/messages/count_tokens", json=message_body(1)).status_code == 200
    c_ = pool(shmlimit.Limiter(seg).stats())["counters"]
    assert c_["admitted"] == 0 and c_["refused"] == 0


def test_env_hosts(mock, segment, monkeypatch):
    m = mock()
    seg = segment()
    monkeypatch.setenv("SHMLIMIT_HOSTS", f"example.com, {m.hostport}")
    monkeypatch.setenv("SHMLIMIT_SEGMENT", seg)
    with httpx.Client(transport=shmlimit.GovernedTransport(), base_url=m.url) as c:
        assert c.post("/v1/messages", json=message_body(1)).status_code == 200
    assert pool(shmlimit.Limiter(seg).stats())["counters"]["settled"] == 1


def test_fork_child_does_not_settle_parent_exchange(mock, segment):
    """A child forked while a response is open exits normally (its atexit runs the
    finalizers it inherited): the exchange is the parent's, settled once, by the parent."""
    import os
    m = mock()
    seg = segment()
    with client(m, seg) as c:
        with c.stream("POST", "/v1/messages", json=message_body(1, stream=True)) as r:
            pid = os.fork()
            if pid == 0:  # what a normal exit does: the atexit handlers (weakref finalizers)
                import atexit
                try:
                    atexit._run_exitfuncs()
                finally:
                    os._exit(0)
            _, st = os.waitpid(pid, 0)
            assert os.WEXITSTATUS(st) == 0
            assert pool(shmlimit.Limiter(seg).stats())["counters"]["settled"] == 0
            for _ in r.iter_raw():
                pass
    p = pool(shmlimit.Limiter(seg).stats())
    assert p["counters"]["settled"] == 1 and p["counters"]["admitted"] == 1
