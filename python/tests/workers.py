"""Worker bodies for the fleet tests (a module of their own so that spawn children can
import them by name)."""

from __future__ import annotations

import asyncio
import json
import math

import httpx

import shmlimit
from conftest import message_body, read_sse_usage, sdk_headers


def text_tokens(body: dict) -> int:
    """The mock's count for a plain ASCII one-message request: ceil(characters / 4)."""
    return math.ceil(len(body["messages"][0]["content"]) / 4)


def one_sync(c: httpx.Client, body: dict) -> int:
    stream = bool(body.get("stream"))
    with c.stream("POST", "/v1/messages", content=json.dumps(body).encode(),
                  headers=sdk_headers(stream)) as r:
        if stream:
            for _ in r.iter_lines():
                pass
        else:
            r.read()
        return r.status_code


def transport_worker(url: str, hostport: str, seg: str, n: int, stream: bool, tag: int) -> list:
    """n requests, one after the other, through a GovernedTransport of this worker's own."""
    t = shmlimit.GovernedTransport(segment=seg, hosts=[hostport], max_wait=120)
    with httpx.Client(transport=t, base_url=url, timeout=120) as c:
        return [one_sync(c, message_body(tag * 1000 + i, stream=stream)) for i in range(n)]


def limiter_worker(url: str, seg: str, n: int, stream: bool, tag: int, lim=None) -> list:
    """n requests through the explicit API: acquire, send with plain httpx, settle."""
    lim = lim or shmlimit.Limiter(seg)
    out = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for i in range(n):
            b = message_body(tag * 1000 + i, stream=stream)
            with lim.acquire(b["model"], input_tokens=text_tokens(b), max_tokens=b["max_tokens"],
                             timeout=120) as t:
                with c.stream("POST", "/v1/messages", json=b, headers=sdk_headers(stream)) as r:
                    t.mark_sent()
                    if stream:
                        usage = read_sse_usage(list(r.iter_lines()))
                    else:
                        usage = json.loads(r.read())["usage"]
                t.settle(usage)
            out.append(r.status_code)
    return out


def process_main(kind: str, q, *args) -> None:
    """A process's body: run a worker, put (tag, statuses or error) on the queue."""
    try:
        if kind == "transport":
            q.put(("ok", transport_worker(*args)))
        else:
            q.put(("ok", limiter_worker(*args)))
    except BaseException as e:  # report, do not hang the parent
        q.put(("error", repr(e)))


async def async_fleet(url: str, hostport: str, seg: str, n: int, stream: bool, api: str) -> list:
    """n concurrent requests on one event loop.

    The client makes one request (GET /mock/health, not governed) first, as a worker that
    has been running does: httpx's first request on a loop sets up its connection
    machinery (about 100 ms here), and requests admitted while it does reach the server
    that much later, in one bunch with those admitted after them, which a server bucket
    with a burst of 5 and a tolerance of 1 refuses.  Warm, the admitted requests leave
    within a few milliseconds of their release."""
    if api == "transport":
        t = shmlimit.AsyncGovernedTransport(segment=seg, hosts=[hostport], max_wait=120)
        async with httpx.AsyncClient(transport=t, base_url=url, timeout=120) as c:
            await c.get("/mock/health")  # a warm worker (see warm_up)

            async def one(i):
                b = message_body(5000 + i, stream=stream)
                async with c.stream("POST", "/v1/messages", content=json.dumps(b).encode(),
                                    headers=sdk_headers(stream)) as r:
                    async for _ in r.aiter_raw():
                        pass
                    return r.status_code
            return await asyncio.gather(*(one(i) for i in range(n)))
    lim = shmlimit.Limiter(seg)
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        await c.get("/mock/health")

        async def one(i):
            b = message_body(6000 + i, stream=stream)
            async with lim.acquire_async(b["model"], input_tokens=text_tokens(b),
                                         max_tokens=b["max_tokens"], timeout=120) as t:
                async with c.stream("POST", "/v1/messages", json=b, headers=sdk_headers(stream)) as r:
                    t.mark_sent()
                    if stream:
                        usage = read_sse_usage([line async for line in r.aiter_lines()])
                    else:
                        usage = json.loads(await r.aread())["usage"]
                t.settle(usage)
                return r.status_code
        return await asyncio.gather(*(one(i) for i in range(n)))
