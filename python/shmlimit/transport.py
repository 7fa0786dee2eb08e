"""httpx transports that govern Claude Messages API requests.

``GovernedTransport(inner=None, ...)`` wraps any httpx transport (default
``httpx.HTTPTransport()``); ``AsyncGovernedTransport`` any async one (default
``httpx.AsyncHTTPTransport()``).  A ``POST`` to a governed host whose path is a
Messages API path (``/v1/messages``, ``/v1/messages/count_tokens``,
``/v1/messages/batches``: ``shl_ex_kind``) is

1. read by the library (``shl_ex_open``: model, estimate, stream; the same C
   reader as the preload shim's, no second copy here);
2. admitted: a place in line (``shl_ex_reserve``, never blocking), a wait until
   its release time (the calling thread waits in the sync transport, the task
   in the async one: the event loop is never blocked), and ``shl_ex_start``
   (holds and the spend cap checked again).  The wait moves sooner when a
   request of this process placed before it in the same pool settles below its
   estimate or is cancelled: what that gave back to the shared word
   (``shl_ex_given``) is room before this place, and ``shl_ex_follow`` moves
   the reservation into it (the preload shim's rule for its held transfers,
   preload/hold.c, "Early release"; python/shmlimit/_early.py).  Gives of
   requests placed after it are not counted: they make no room before it;
3. sent through the inner transport, unchanged;
4. settled from the response: status and headers (``shl_ex_status``,
   ``shl_ex_header``), then the body as the application reads it
   (``shl_ex_body``: the SSE usage of a stream is read as it is consumed), and
   ``shl_ex_finish`` when the body ends or the response is closed (a stream
   closed early settles with what it reported), or when it is garbage collected.
   A gzip or deflate body is decoded for the reader only; the application gets
   the bytes as they came.

Everything else passes through untouched.

Refusals (the wait would pass the deadline, a request too large for its pool,
the spend cap) are answered locally, without sending, by a response shaped like
the API's own 429 (``rate_limit_error``; for the spend cap with
``error.details.error_code = "enforced_spend_limit_reached"``), with
``retry-after`` / ``retry-after-ms`` when waiting helps and ``x-should-retry:
false`` when it cannot, and ``x-shmlimit-refused: <dimension>``: the SDKs and
applications handle it as they handle the server's.  ``refusal="raise"`` raises
the :mod:`shmlimit.errors` exception instead.

Failing open, like the shim: no segment (``segment=None`` and
``SHMLIMIT_SEGMENT`` unset, or one that cannot be attached), no loadable
libshmlimit, a library without the request reader, a body the reader cannot
read, a model without a pool: the request is sent as without the transport,
with one line on stderr per cause and process.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
import threading
import time
import weakref
import zlib
from ctypes import byref, c_int64, c_void_p
from typing import Iterable, Iterator, AsyncIterator, Optional, Set, Tuple

import httpx

from ._early import async_sleep as _async_sleep
from . import _early
from . import _native as N
from .errors import from_code

_EAGAIN = -errno.EAGAIN
_ETIMEDOUT = -errno.ETIMEDOUT
_EDQUOT = -errno.EDQUOT
_E2BIG = -errno.E2BIG
_ESRCH = -errno.ESRCH

DEFAULT_HOSTS = ("api.anthropic.com:443",)
DEFAULT_WAIT_MS = 60000

# ---------------------------------------------------------------------------
# one stderr line per cause and process

_noted: Set[str] = set()


def _reset_notes_after_fork() -> None:  # a child is a new process: it says it again
    _noted.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_notes_after_fork)
_note_lock = threading.Lock()


def _note(key: str, msg: str) -> None:
    with _note_lock:
        if key in _noted:
            return
        _noted.add(key)
    try:
        sys.stderr.write(f"shmlimit: {msg}\n")
        sys.stderr.flush()
    except Exception:
        pass


# ---------------------------------------------------------------------------
# hosts


def _parse_host(entry: str) -> Optional[Tuple[str, int]]:
    e = entry.strip()
    if not e:
        return None
    if e.startswith("["):
        end = e.find("]")
        if end < 0:
            return None
        host, rest = e[1:end], e[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else "443"
    elif e.count(":") == 1:
        host, port = e.split(":")
    elif ":" not in e:
        host, port = e, "443"
    else:
        return None
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.lower(), int(port)


def governed_hosts(hosts: Optional[Iterable[str]] = None) -> Set[Tuple[str, int]]:
    """``hosts`` (default ``api.anthropic.com:443``) plus ``SHMLIMIT_HOSTS`` (comma-separated
    ``host:port``, ``[::1]:8080``; no port means 443), as (host, port) pairs."""
    out: Set[Tuple[str, int]] = set()
    for h in (DEFAULT_HOSTS if hosts is None else hosts):
        p = _parse_host(h)
        if p is None:
            raise ValueError(f"not a host[:port]: {h!r}")
        out.add(p)
    for h in os.environ.get("SHMLIMIT_HOSTS", "").split(","):
        if not h.strip():
            continue
        p = _parse_host(h)
        if p is None:
            _note("hosts:" + h, f"SHMLIMIT_HOSTS entry {h.strip()!r} is not host:port; ignored")
        else:
            out.add(p)
    return out


def _env_wait_ms() -> int:
    v = os.environ.get("SHMLIMIT_WAIT_MS")
    if v is None or v.strip() == "":
        return DEFAULT_WAIT_MS
    try:
        return int(v)
    except ValueError:
        _note("wait", f"SHMLIMIT_WAIT_MS={v!r} is not a number; using {DEFAULT_WAIT_MS}")
        return DEFAULT_WAIT_MS

# ---------------------------------------------------------------------------
# segments, attached once per process and name

_handles = {}
_handles_lock = threading.Lock()


def _handle(segment: Optional[str]):
    """(lib, handle pointer) for the segment, or None (the reason noted once)."""
    name = segment if segment is not None else os.environ.get("SHMLIMIT_SEGMENT")
    if not name:
        _note("noseg", "no segment (SHMLIMIT_SEGMENT unset); requests pass through ungoverned")
        return None
    got = _handles.get(name)
    if got is not None:
        return got or None
    with _handles_lock:
        got = _handles.get(name)
        if got is not None:
            return got or None
        try:
            lib = N.load()
        except N.LibraryNotFound as e:
            _note("lib", f"{e}; requests pass through ungoverned")
            _handles[name] = False
            return None
        if not lib.has_ex:
            _note("noex", f"{lib.path} has no request reader (shl_ex_*); requests pass through ungoverned")
            _handles[name] = False
            return None
        h = c_void_p()
        err = N.shl_err()
        r = lib.shl_attach(name.encode(), 0, byref(h), byref(err))
        if r < 0:
            msg = err.msg.decode("utf-8", "replace") or lib.strerror(r)
            _note("seg:" + name, f'segment "{name}": {msg}; requests pass through ungoverned')
            _handles[name] = False
            return None
        _handles[name] = (lib, h.value)
        return _handles[name]

# ---------------------------------------------------------------------------
# one exchange


class _Exchange(_early.Entry):
    """A governed request and its response; finish() runs once, from any thread.  As an
    Entry: its place in its line, numbered once reserved (_early.Lines.reserve)."""

    __slots__ = ("lib", "hp", "x", "done", "lock", "decoder", "pid", "__weakref__")

    def __init__(self, lib, hp, x):
        super().__init__()
        self.lib = lib
        self.hp = hp
        self.x = x
        self.pid = os.getpid()
        self.done = False
        self.lock = threading.Lock()
        self.decoder = None

    def reserve(self, left: int, rel: c_int64, why):
        """shl_ex_reserve, numbered in its line when the library moves places: (its
        result, the waiter when it must wait, else None)."""
        lib, hp, x = self.lib, self.hp, self.x
        if not lib.has_early:
            return lib.shl_ex_reserve(hp, x, left, byref(rel), byref(why)), None
        self.follow = lambda g, p, r: lib.shl_ex_follow(hp, x, g, byref(p), byref(r))
        return _early.lines.reserve(
            self, lambda: lib.shl_ex_reserve(hp, x, left, byref(rel), byref(why)),
            lambda: (hp, lib.shl_ex_ticket(x).contents.pool), lambda: rel.value,
            lambda p: lib.shl_ex_place(hp, x, byref(p)), lib.shl_now)

    def head(self, response: httpx.Response) -> None:
        lib, x = self.lib, self.x
        lib.shl_ex_status(x, response.status_code)
        enc = b""
        for name, value in response.headers.raw:
            lib.shl_ex_header(x, name, len(name), value, len(value))
            if name.lower() == b"content-encoding":
                enc = value.strip().lower()
        if enc in (b"gzip", b"x-gzip"):
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == b"deflate":
            self.decoder = zlib.decompressobj()

    def body(self, chunk: bytes) -> None:
        if self.done or not chunk:
            return
        if self.decoder is not None:
            try:
                chunk = self.decoder.decompress(chunk)
            except zlib.error:
                self.decoder = None
                chunk = b"\0"  # unreadable from here on: the reader falls back to the estimate
        if chunk:
            self.lib.shl_ex_body(self.x, chunk, len(chunk))

    def finish(self, sent: int) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        if os.getpid() != self.pid:
            return  # a fork child's copy (its exit runs the finalizers): the parent settles it
        try:
            lib, hp, x = self.lib, self.hp, self.x
            if self.seq is None:
                r = lib.shl_ex_finish(hp, x, sent)
            else:
                def fin(g) -> int:
                    r = lib.shl_ex_finish(hp, x, sent)
                    lib.shl_ex_given(x, g)  # g stays 0 when nothing was given
                    return r
                r = _early.lines.finish(self, fin)
        finally:
            self.lib.shl_ex_free(self.x)
        if r == N.SHL_EX_ESTIMATED:
            _note("estimated", "a response's usage could not be read; settled with the estimate "
                  "and max_tokens (the worst case it was admitted for)")


def _sent(exc: BaseException) -> int:
    """Whether a request may have reached the server, judged by how sending failed."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                        httpx.UnsupportedProtocol, httpx.ProxyError)):
        return 0
    return 1  # a read or write error, a timeout, a cancelled task: it may have been sent


def _refusal_response(code: int, why, model: str, segment: str) -> httpx.Response:
    dim = N.DIM_NAMES.get(why.dim, "none")
    wait = max(0, why.wait_ns) / 1e9
    headers = [("content-type", "application/json"), ("x-shmlimit-refused", dim)]
    err = {"type": "rate_limit_error"}
    if code == _EDQUOT:
        err["message"] = (f"shmlimit: the monthly spend cap of segment {segment} is reached "
                          f"(model {model}); not sent")
        err["details"] = {"error_code": "enforced_spend_limit_reached"}
        headers.append(("x-should-retry", "false"))
    elif code == _E2BIG:
        err["message"] = (f"shmlimit: request larger than the {dim} capacity of pool {why.pool} "
                          f"(need {why.need}, capacity {why.capacity}); it can never be admitted; not sent")
        headers.append(("x-should-retry", "false"))
    else:
        err["message"] = (f"shmlimit: not admitted within the wait allowed: pool {why.pool}, "
                          f"{dim} limit, admissible in {wait:.3f} s; not sent")
        headers.append(("retry-after", str(max(1, math.ceil(wait)))))
        headers.append(("retry-after-ms", str(max(1, math.ceil(wait * 1000)))))
    body = json.dumps({"type": "error", "error": err, "request_id": None}).encode()
    return httpx.Response(429, headers=headers, content=body)


class _Base:
    def __init__(self, segment: Optional[str], hosts: Optional[Iterable[str]],
                 max_wait: Optional[float], refusal: str):
        if refusal not in ("response", "raise"):
            raise ValueError("refusal must be 'response' or 'raise'")
        self._segment = segment
        self._hosts = governed_hosts(hosts)
        if max_wait is None:
            ms = _env_wait_ms()
            self._max_wait_ns = -1 if ms < 0 else ms * 1000000
        else:
            self._max_wait_ns = -1 if max_wait < 0 else int(max_wait * 1e9)
        self._refusal = refusal

    def _open(self, request: httpx.Request):
        """(lib, handle, kind) for a governed request, or None to pass it through."""
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        if (url.host.lower(), port) not in self._hosts:
            return None
        try:
            lib = N.load()
        except N.LibraryNotFound as e:
            _note("lib", f"{e}; requests pass through ungoverned")
            return None
        if not lib.has_ex:
            _note("noex", f"{lib.path} has no request reader (shl_ex_*); requests pass through ungoverned")
            return None
        kind = lib.shl_ex_kind(request.method.encode(), url.raw_path)
        if kind == N.SHL_EX_NONE:
            return None
        got = _handle(self._segment)
        if got is None:
            return None
        return got[0], got[1], kind

    def _read(self, lib, hp, kind, body: bytes, path: str) -> Optional[_Exchange]:
        x = c_void_p()
        err = N.shl_err()
        r = lib.shl_ex_open(hp, kind, body, len(body), byref(x), byref(err))
        if r == _ESRCH:
            _note("esrch", f"a request to {path} names a model without a pool"
                  f" ({err.msg.decode('utf-8', 'replace')}); such requests pass through ungoverned")
            return None
        if r < 0:
            why = err.msg.decode("utf-8", "replace") or f"a request body to {path} cannot be read ({lib.strerror(r)})"
            _note("body:" + path, f"{why}; such requests pass through ungoverned")
            return None
        return _Exchange(lib, hp, x.value)

    def _refused(self, ex: _Exchange, code: int, why) -> httpx.Response:
        lib = ex.lib
        model = (lib.shl_ex_model(ex.x) or b"?").decode("utf-8", "replace")
        ex.finish(0)
        seg = self._segment or os.environ.get("SHMLIMIT_SEGMENT", "")
        if self._refusal == "raise":
            raise from_code(code, f"{model}: {lib.strerror(code)}", why=why, model=model)
        return _refusal_response(code, why, model, seg)

    def _deadline(self, lib) -> Optional[int]:
        return None if self._max_wait_ns < 0 else lib.shl_now() + self._max_wait_ns


class GovernedTransport(_Base, httpx.BaseTransport):
    """An httpx transport that governs Messages API requests through a libshmlimit segment.

    ``GovernedTransport(transport=None, *, segment=None, hosts=None, max_wait=None,
    refusal="response")``:

    * ``transport``: the transport that sends (default ``httpx.HTTPTransport()``);
    * ``segment``: the segment name (default: ``SHMLIMIT_SEGMENT``);
    * ``hosts``: governed ``host[:port]`` list (default ``["api.anthropic.com"]``, port 443),
      plus ``SHMLIMIT_HOSTS``;
    * ``max_wait``: seconds a request may wait for admission (default ``SHMLIMIT_WAIT_MS``,
      else 60; negative: no deadline; 0: only now);
    * ``refusal``: ``"response"`` (a local 429 shaped like the API's) or ``"raise"``.

    The admission wait blocks the calling thread until the release time, which moves sooner
    when a request placed before it settles below its estimate.  ``anthropic.Anthropic(
    http_client=httpx.Client(transport=shmlimit.GovernedTransport()))`` governs the official
    SDK.
    """

    def __init__(self, transport: Optional[httpx.BaseTransport] = None, *,
                 segment: Optional[str] = None, hosts: Optional[Iterable[str]] = None,
                 max_wait: Optional[float] = None, refusal: str = "response"):
        _Base.__init__(self, segment, hosts, max_wait, refusal)
        self._inner = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return self._inner.handle_request(request)
        got = self._open(request)
        if got is None:
            return self._inner.handle_request(request)
        lib, hp, kind = got
        body = request.read()
        ex = self._read(lib, hp, kind, body, request.url.path)
        if ex is None:
            return self._inner.handle_request(request)
        try:
            refused = self._admit(ex)
        except BaseException:
            ex.finish(0)
            raise
        if refused is not None:
            return refused
        try:
            response = self._inner.handle_request(request)
        except BaseException as e:
            ex.finish(_sent(e))
            raise
        try:
            ex.head(response)
            response.stream = _SyncStream(response.stream, ex)
        except BaseException:
            ex.finish(1)
            raise
        return response

    def _admit(self, ex: _Exchange) -> Optional[httpx.Response]:
        lib, hp, x = ex.lib, ex.hp, ex.x
        rel = c_int64()
        why = N.shl_refusal()
        deadline = self._deadline(lib)
        while True:
            left = -1 if deadline is None else max(0, deadline - lib.shl_now())
            r, w = ex.reserve(left, rel, why)
            if r == _EAGAIN:  # a library without fair waiting: shl_try's exact wait
                wait = max(0, why.wait_ns)
                if deadline is not None and lib.shl_now() + wait > deadline:
                    return self._refused(ex, _ETIMEDOUT, why)
                time.sleep(wait / 1e9)
                continue
            if r < 0:
                return self._refused(ex, r, why)
            _early.wait_sync(lib, w, rel.value)
            r = lib.shl_ex_start(hp, x, byref(why))
            if r == 0:
                return None
            if r != _EAGAIN:  # the reservation is cancelled
                return self._refused(ex, r, why)
            wait = max(0, why.wait_ns)
            if deadline is not None and lib.shl_now() + wait > deadline:
                return self._refused(ex, _ETIMEDOUT, why)
            time.sleep(wait / 1e9)

    def close(self) -> None:
        self._inner.close()


class AsyncGovernedTransport(_Base, httpx.AsyncBaseTransport):
    """The asyncio counterpart of :class:`GovernedTransport` (same arguments; default inner
    transport ``httpx.AsyncHTTPTransport()``).  It never blocks the event loop: the
    admission wait awaits an event with a timeout at the release time the library computed
    (anyio's: asyncio or trio), set when that release moves sooner, and every library call
    it makes returns at once.  A task cancelled while it waits gives its place back."""

    def __init__(self, transport: Optional[httpx.AsyncBaseTransport] = None, *,
                 segment: Optional[str] = None, hosts: Optional[Iterable[str]] = None,
                 max_wait: Optional[float] = None, refusal: str = "response"):
        _Base.__init__(self, segment, hosts, max_wait, refusal)
        self._inner = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return await self._inner.handle_async_request(request)
        got = self._open(request)
        if got is None:
            return await self._inner.handle_async_request(request)
        lib, hp, kind = got
        body = await request.aread()
        ex = self._read(lib, hp, kind, body, request.url.path)
        if ex is None:
            return await self._inner.handle_async_request(request)
        try:
            refused = await self._admit(ex)
        except BaseException:
            ex.finish(0)
            raise
        if refused is not None:
            return refused
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as e:
            ex.finish(_sent(e))
            raise
        try:
            ex.head(response)
            response.stream = _AsyncStream(response.stream, ex)
        except BaseException:
            ex.finish(1)
            raise
        return response

    async def _admit(self, ex: _Exchange) -> Optional[httpx.Response]:
        lib, hp, x = ex.lib, ex.hp, ex.x
        rel = c_int64()
        why = N.shl_refusal()
        deadline = self._deadline(lib)
        while True:
            left = -1 if deadline is None else max(0, deadline - lib.shl_now())
            r, w = ex.reserve(left, rel, why)
            if r == _EAGAIN:  # a library without fair waiting: shl_try's exact wait
                wait = max(0, why.wait_ns)
                if deadline is not None and lib.shl_now() + wait > deadline:
                    return self._refused(ex, _ETIMEDOUT, why)
                await _async_sleep(wait / 1e9)
                continue
            if r < 0:
                return self._refused(ex, r, why)
            await _early.wait_async(lib, w, rel.value)
            r = lib.shl_ex_start(hp, x, byref(why))
            if r == 0:
                return None
            if r != _EAGAIN:
                return self._refused(ex, r, why)
            wait = max(0, why.wait_ns)
            if deadline is not None and lib.shl_now() + wait > deadline:
                return self._refused(ex, _ETIMEDOUT, why)
            await _async_sleep(wait / 1e9)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _SyncStream(httpx.SyncByteStream):
    """The response body: each chunk goes to the reader as the application takes it; the
    end of the body, close(), or garbage collection settles."""

    def __init__(self, inner, ex: _Exchange):
        self._inner = inner
        self._ex = ex
        self._fin = weakref.finalize(self, ex.finish, 1)

    def __iter__(self) -> Iterator[bytes]:
        ex = self._ex
        for chunk in self._inner:
            ex.body(chunk)
            yield chunk
        ex.finish(1)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._ex.finish(1)


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner, ex: _Exchange):
        self._inner = inner
        self._ex = ex
        self._fin = weakref.finalize(self, ex.finish, 1)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ex = self._ex
        async for chunk in self._inner:
            ex.body(chunk)
            yield chunk
        ex.finish(1)

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._ex.finish(1)


__all__ = ["GovernedTransport", "AsyncGovernedTransport", "governed_hosts"]
