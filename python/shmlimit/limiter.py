"""Limiter and Ticket: admit, settle and cancel requests against a shared segment."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import time
import warnings
from ctypes import byref, c_int, c_void_p, string_at
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from . import _early
from . import _native as N
from .errors import Refused, SegmentError, ShmlimitError, Timeout, from_code

_EAGAIN = -errno.EAGAIN
_ETIMEDOUT = -errno.ETIMEDOUT
_EDQUOT = -errno.EDQUOT
_ESRCH = -errno.ESRCH

Usage = Union[Mapping[str, Any], Any]
_FAST_KEYS = frozenset(("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read"))


def _usage_struct(usage: Optional[Usage], kw: Mapping[str, int]) -> N.shl_usage:
    """A ``shl_usage`` from an API ``usage`` object (a dict, or an SDK object with the same
    attribute names) and/or keyword counts.

    Read: ``input_tokens``, ``output_tokens``, ``cache_read_input_tokens``,
    ``cache_creation_input_tokens`` and its breakdown ``cache_creation``
    (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``; without it the
    whole cache write counts as 5 minute); the library's own names
    ``cache_write_5m``, ``cache_write_1h``, ``cache_read`` are accepted too.
    """
    vals: Dict[str, Any] = {}
    if usage is not None:
        if isinstance(usage, Mapping):
            get = usage.get
        else:
            def get(k, d=None, _u=usage):
                return getattr(_u, k, d)
        for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                  "cache_creation_input_tokens", "cache_creation", "cache_write_5m",
                  "cache_write_1h", "cache_read"):
            v = get(k, None)
            if v is not None:
                vals[k] = v
    vals.update(kw)
    u = N.shl_usage()
    u.input_tokens = int(vals.get("input_tokens") or 0)
    u.output_tokens = int(vals.get("output_tokens") or 0)
    u.cache_read = int(vals.get("cache_read", vals.get("cache_read_input_tokens")) or 0)
    if "cache_write_5m" in vals or "cache_write_1h" in vals:
        u.cache_write_5m = int(vals.get("cache_write_5m") or 0)
        u.cache_write_1h = int(vals.get("cache_write_1h") or 0)
    else:
        total = int(vals.get("cache_creation_input_tokens") or 0)
        cc = vals.get("cache_creation")
        if cc is not None:
            g = cc.get if isinstance(cc, Mapping) else (lambda k, d=None: getattr(cc, k, d))
            w1 = int(g("ephemeral_1h_input_tokens", 0) or 0)
            w5 = int(g("ephemeral_5m_input_tokens", 0) or 0)
            if total and w1 + w5 != total:
                w5 = max(0, total - w1)
            u.cache_write_5m, u.cache_write_1h = w5, w1
        else:
            u.cache_write_5m = total
    return u


def _cancel(lib, hp, t: N.shl_ticket, e: Optional[_early.Entry]) -> int:
    """shl_cancel; for a numbered place, through its line (its give moves the places
    waiting after it)."""
    if e is None or e.seq is None:
        return lib.shl_cancel(hp, byref(t))
    return _early.lines.finish(e, lambda g: lib.shl_cancel_given(hp, byref(t), g))


def _reserve(lib, hp, m: int, cost: N.shl_cost, left: int, t: N.shl_ticket, why,
             e: _early.Entry):
    """shl_reserve, numbered in its line when the library moves places (shl_follow): (its
    result, the waiter when it must wait, else None)."""
    if not lib.has_early_tickets:
        return lib.shl_reserve(hp, m, byref(cost), left, byref(t), byref(why)), None
    e.follow = lambda g, p, r: lib.shl_follow(hp, byref(t), g, byref(p), byref(r))
    return _early.lines.reserve(
        e, lambda: lib.shl_reserve(hp, m, byref(cost), left, byref(t), byref(why)),
        lambda: (hp, t.pool), lambda: t.admitted_at,
        lambda p: lib.shl_ticket_place(hp, byref(t), byref(p)), lib.shl_now)


class Ticket:
    """One admitted request, to be settled (or cancelled) exactly once.

    Use it as a context manager (``with lim.acquire(...) as t:``).  Leaving the
    block without a settle or cancel:

    * by an exception, before :meth:`mark_sent`: the request is taken as never
      sent and **cancelled** (everything given back);
    * by an exception after :meth:`mark_sent`: settled with the input estimate
      and no output (what the server has certainly seen, as the C shim does);
    * normally: settled with the **worst case** it was admitted for (the input
      estimate and ``max_tokens`` of output), with a ``RuntimeWarning``: the
      request was presumably sent and its usage is unknown, so it is never
      under-counted.
    """

    __slots__ = ("_lim", "_t", "_cost", "model", "waited", "_sent", "_entry", "__weakref__")

    def __init__(self, lim: "Limiter", t: N.shl_ticket, cost: N.shl_cost, model: str,
                 waited: float, entry: Optional[_early.Entry] = None):
        self._lim = lim
        self._t = t
        self._cost = cost
        #: its place in its line (acquire's reservations: _early), whose settle or cancel
        #: moves the waiting places after it
        self._entry = entry
        #: the model id admitted (for route(): the one chosen)
        self.model = model
        #: seconds spent waiting for admission
        self.waited = waited
        self._sent = False

    @property
    def pool(self) -> int:
        """The pool index the request was admitted on."""
        return self._t.pool

    @property
    def open(self) -> bool:
        """True until settled or cancelled."""
        return self._t.state == 1

    @property
    def spend_reserved_usd(self) -> float:
        """The worst-case spend reserved at admission, USD."""
        return self._t.spend / 1e9

    def mark_sent(self) -> None:
        """Record that the request has (or may have) reached the server: an exception
        leaving the ``with`` block then settles with the estimate instead of cancelling."""
        self._sent = True

    def settle(self, usage: Optional[Usage] = None, **counts: int) -> None:
        """Settle with what the server reported: ``usage`` is the response's ``usage``
        (dict or SDK object), or give counts as keywords (``input_tokens=...,
        output_tokens=..., cache_write_5m=..., cache_write_1h=..., cache_read=...``)."""
        if usage is None and counts.keys() <= _FAST_KEYS:  # counts in the library's own names
            u = N.shl_usage()
            for k, v in counts.items():
                setattr(u, k, v)
        else:
            u = _usage_struct(usage, counts)
        lim = self._lim
        e = self._entry
        if e is None or e.seq is None:
            r = lim._settle(lim._hp, byref(self._t), byref(u))
        else:
            r = _early.lines.finish(
                e, lambda g: lim._lib.shl_settle_given(lim._hp, byref(self._t), byref(u), g))
        if r < 0:
            raise from_code(r, f"settle: {lim._lib.strerror(r)}")

    def cancel(self) -> None:
        """Give everything back: the request was never sent."""
        lim = self._lim
        r = _cancel(lim._lib, lim._hp, self._t, self._entry)
        if r < 0:
            raise from_code(r, f"cancel: {lim._lib.strerror(r)}")

    def _close(self, exc: bool) -> None:
        if self._t.state != 1:
            return
        c = self._cost
        if exc and not self._sent:
            self.cancel()
        elif exc:
            self.settle(input_tokens=c.input_tokens, cache_write_5m=c.cache_write_5m,
                        cache_write_1h=c.cache_write_1h, cache_read=c.cache_read)
        else:
            warnings.warn(f"shmlimit: ticket for {self.model} left unsettled; settled with the "
                          "worst case (estimate and max_tokens)", RuntimeWarning, stacklevel=3)
            self.settle(input_tokens=c.input_tokens, output_tokens=c.max_tokens,
                        cache_write_5m=c.cache_write_5m, cache_write_1h=c.cache_write_1h,
                        cache_read=c.cache_read)

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, et, ev, tb) -> bool:
        self._close(et is not None)
        return False

    async def __aenter__(self) -> "Ticket":
        return self

    async def __aexit__(self, et, ev, tb) -> bool:
        self._close(et is not None)
        return False

    def __repr__(self) -> str:
        st = {1: "open", 2: "closed"}.get(self._t.state, str(self._t.state))
        return f"<shmlimit.Ticket {self.model} pool={self._t.pool} {st}>"


class _AsyncAcquire:
    """``await lim.acquire_async(...)`` gives a Ticket; ``async with`` settles or cancels it."""

    __slots__ = ("_coro_fn", "_ticket")

    def __init__(self, coro_fn):
        self._coro_fn = coro_fn
        self._ticket: Optional[Ticket] = None

    def __await__(self):
        return self._coro_fn().__await__()

    async def __aenter__(self) -> Ticket:
        self._ticket = await self._coro_fn()
        return self._ticket

    async def __aexit__(self, et, ev, tb) -> bool:
        if self._ticket is not None:
            self._ticket._close(et is not None)
        return False


class Limiter:
    """A process's handle on a libshmlimit segment.

    ``Limiter("fleet")`` attaches to the segment ``fleet`` (``/dev/shm/fleet``), which
    ``shmlimit-ctl create`` or :func:`shmlimit.create` made.  Without a name,
    ``SHMLIMIT_SEGMENT`` is used.  A Limiter may be shared by any number of threads, is
    inherited by ``fork()`` children, and pickles by name (``multiprocessing`` spawn).

    Raises :class:`SegmentError` when the segment cannot be attached.
    """

    def __init__(self, segment: Optional[str] = None, *, readonly: bool = False,
                 any_owner: bool = False):
        name = segment if segment is not None else os.environ.get("SHMLIMIT_SEGMENT")
        if not name:
            raise SegmentError("no segment named (argument or SHMLIMIT_SEGMENT)", -errno.ENOENT)
        self._lib = N.load()
        self.name = name
        self._readonly = readonly
        self._any_owner = any_owner
        flags = (N.SHL_ATTACH_RDONLY if readonly else 0) | (N.SHL_ATTACH_ANY_OWNER if any_owner else 0)
        h = c_void_p()
        err = N.shl_err()
        r = self._lib.shl_attach(name.encode(), flags, byref(h), byref(err))
        if r < 0:
            msg = err.msg.decode("utf-8", "replace") or self._lib.strerror(r)
            raise from_code(r, f'segment "{name}": {msg}')
        self._h = h
        self._hp = h.value
        self._try = self._lib.shl_try  # bound once: the admit/settle path is a few calls
        self._settle = self._lib.shl_settle
        self._models: Dict[str, int] = {}
        self._gen = self._lib.shl_generation(self._hp)
        self._gen_checked = time.monotonic()
        self._mlock = threading.Lock()

    # -- lifetime ---------------------------------------------------------------
    def close(self) -> None:
        """Detach.  Open tickets must not be settled through this Limiter afterwards."""
        hp, self._hp = self._hp, None
        if hp:
            self._lib.shl_detach(hp)

    def __enter__(self) -> "Limiter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        return (_reattach, (self.name, self._readonly, self._any_owner))

    def __repr__(self) -> str:
        return f"<shmlimit.Limiter {self.name!r}>"

    # -- models -----------------------------------------------------------------
    def lookup(self, model: str) -> int:
        """The model entry index of a model id (exact, then longest prefix); cached, and
        looked up again when the configuration generation changes.  Raises UnknownModel."""
        now = time.monotonic()
        if now - self._gen_checked > 0.5:
            self._gen_checked = now
            g = self._lib.shl_generation(self._hp)
            if g != self._gen:
                self._gen = g
                self._models = {}
        m = self._models.get(model)
        if m is None:
            m = self._lib.shl_lookup(self._hp, model.encode())
            if m < 0:
                raise from_code(m, f"model {model!r}: {self._lib.strerror(m)}")
            self._models[model] = m
        return m

    @staticmethod
    def _cost(input_tokens: int, max_tokens: int, cache_write_5m: int, cache_write_1h: int,
              cache_read: int, batch: bool) -> N.shl_cost:
        c = N.shl_cost()  # set only what is given: cheaper than the constructor's arguments
        if input_tokens:
            c.input_tokens = input_tokens
        if max_tokens:
            c.max_tokens = max_tokens
        if cache_write_5m:
            c.cache_write_5m = cache_write_5m
        if cache_write_1h:
            c.cache_write_1h = cache_write_1h
        if cache_read:
            c.cache_read = cache_read
        if batch:
            c.batch = 1
        return c

    # -- admission --------------------------------------------------------------
    def acquire(self, model: str, *, input_tokens: int = 0, max_tokens: int = 0,
                cache_write_5m: int = 0, cache_write_1h: int = 0, cache_read: int = 0,
                batch: bool = False, timeout: Optional[float] = 30.0) -> Ticket:
        """Admit a request, waiting (this thread sleeps; other threads run) up to
        ``timeout`` seconds (0: do not wait; None: no deadline).

        Returns a :class:`Ticket` to settle with the server's usage.  Raises
        :class:`Timeout` (a computed wait past the deadline, at once, without sleeping
        first), :class:`Refused` (``timeout=0`` and not admissible now),
        :class:`TooLarge`, :class:`SpendCapReached`, :class:`UnknownModel`.

        With a library that has fair waiting (``shl_reserve``), the request takes its
        place in line at once and sleeps until its release time, so large requests are
        not starved by small ones.
        """
        lib = self._lib
        m = self.lookup(model)
        cost = self._cost(input_tokens, max_tokens, cache_write_5m, cache_write_1h, cache_read, batch)
        t = N.shl_ticket()
        why = N.shl_refusal()
        hp = self._hp
        if timeout is not None and timeout <= 0:
            r = lib.shl_try(hp, m, byref(cost), byref(t), byref(why))
            if r < 0:
                raise from_code(r, f"{model}: {lib.strerror(r)}", why=why, model=model)
            return Ticket(self, t, cost, model, 0.0)
        if not lib.has_reserve:
            t0 = time.monotonic()
            r = lib.shl_acquire(hp, m, byref(cost), N.ns(timeout), byref(t), byref(why))
            if r < 0:
                raise from_code(r, f"{model}: {lib.strerror(r)}", why=why, model=model)
            return Ticket(self, t, cost, model, time.monotonic() - t0)
        start = lib.shl_now()
        deadline = None if timeout is None else start + N.ns(timeout)
        e = _early.Entry()
        while True:
            left = -1 if deadline is None else max(0, deadline - lib.shl_now())
            r, w = _reserve(lib, hp, m, cost, left, t, why, e)
            if r < 0:
                raise from_code(r, f"{model}: {lib.strerror(r)}", why=why, model=model)
            try:  # until its release, sooner when the places before it give (_early)
                _early.wait_sync(lib, w, t.admitted_at)
            except BaseException:
                _cancel(lib, hp, t, e)
                raise
            r = lib.shl_start(hp, byref(t), byref(why))
            if r == 0:
                return Ticket(self, t, cost, model, (lib.shl_now() - start) / 1e9, e)
            _cancel(lib, hp, t, e)
            if r != _EAGAIN:
                raise from_code(r, f"{model}: {lib.strerror(r)}", why=why, model=model)
            # held back by a server retry-after since the reservation: wait it out, reserve again
            wait = max(0, why.wait_ns)
            if deadline is not None and lib.shl_now() + wait > deadline:
                raise from_code(_ETIMEDOUT, f"{model}: {lib.strerror(_ETIMEDOUT)}", why=why, model=model)
            time.sleep(wait / 1e9)

    def try_acquire(self, model: str, *, input_tokens: int = 0, max_tokens: int = 0,
                    cache_write_5m: int = 0, cache_write_1h: int = 0, cache_read: int = 0,
                    batch: bool = False) -> Ticket:
        """Admit now or raise :class:`Refused` with the exact wait; never blocks."""
        m = self.lookup(model)
        cost = self._cost(input_tokens, max_tokens, cache_write_5m, cache_write_1h, cache_read, batch)
        t = N.shl_ticket()
        why = N.shl_refusal()
        r = self._try(self._hp, m, byref(cost), byref(t), byref(why))
        if r < 0:
            raise from_code(r, f"{model}: {self._lib.strerror(r)}", why=why, model=model)
        return Ticket(self, t, cost, model, 0.0)

    def acquire_async(self, model: str, *, input_tokens: int = 0, max_tokens: int = 0,
                      cache_write_5m: int = 0, cache_write_1h: int = 0, cache_read: int = 0,
                      batch: bool = False, timeout: Optional[float] = 30.0) -> _AsyncAcquire:
        """Admit without ever blocking the event loop: ``async with lim.acquire_async(...) as t``
        (or ``t = await lim.acquire_async(...)``).

        The admission is a non-blocking call (``shl_reserve``: a place in line, its
        release time computed); the coroutine then ``await``s ``asyncio.sleep`` until
        that time and starts the request (``shl_start``).  Cancelling the awaiting
        task gives the reservation back.  Without fair waiting in the library it
        awaits the exact waits of ``shl_try`` instead.  Same exceptions as
        :meth:`acquire`; the ``async with`` block settles or cancels like the ``with``.
        """
        cost = self._cost(input_tokens, max_tokens, cache_write_5m, cache_write_1h, cache_read, batch)
        return _AsyncAcquire(lambda: self._acquire_async(model, cost, timeout))

    async def _acquire_async(self, model: str, cost: N.shl_cost, timeout: Optional[float]) -> Ticket:
        lib = self._lib
        hp = self._hp
        m = self.lookup(model)
        t = N.shl_ticket()
        why = N.shl_refusal()
        start = lib.shl_now()
        deadline = None if timeout is None else start + N.ns(timeout)
        e = _early.Entry()
        while True:
            left = -1 if deadline is None else max(0, deadline - lib.shl_now())
            w = None
            if lib.has_reserve:
                r, w = _reserve(lib, hp, m, cost, left, t, why, e)
            else:
                r = lib.shl_try(hp, m, byref(cost), byref(t), byref(why))
                if r == _EAGAIN:
                    wait = max(0, why.wait_ns)
                    if deadline is not None and lib.shl_now() + wait > deadline:
                        r = _ETIMEDOUT
                    else:
                        await asyncio.sleep(wait / 1e9)
                        continue
                if r == 0:
                    return Ticket(self, t, cost, model, (lib.shl_now() - start) / 1e9)
            if r < 0:
                raise from_code(r, f"{model}: {lib.strerror(r)}", why=why, model=model)
            try:  # until its release, sooner when the places before it give (_early)
                await _early.wait_async(lib, w, t.admitted_at)
            except BaseException:
                _cancel(lib, hp, t, e)
                raise
            r = lib.shl_start(hp, byref(t), byref(why))
            if r == 0:
                return Ticket(self, t, cost, model, (lib.shl_now() - start) / 1e9, e)
            _cancel(lib, hp, t, e)
            if r != _EAGAIN:
                raise from_code(r, f"{model}: {lib.strerror(r)}", why=why, model=model)
            wait = max(0, why.wait_ns)
            if deadline is not None and lib.shl_now() + wait > deadline:
                raise from_code(_ETIMEDOUT, f"{model}: {lib.strerror(_ETIMEDOUT)}", why=why, model=model)
            await asyncio.sleep(wait / 1e9)

    # -- routing ----------------------------------------------------------------
    def _route_args(self, models: Sequence[str]):
        idx = []
        for mid in models:
            try:
                idx.append(self.lookup(mid))
            except ShmlimitError:
                idx.append(_ESRCH)  # shl_route skips entries that name no model
        return (c_int * len(idx))(*idx)

    def route(self, models: Sequence[str], *, input_tokens: int = 0, max_tokens: int = 0,
              cache_write_5m: int = 0, cache_write_1h: int = 0, cache_read: int = 0,
              batch: bool = False, min_free: float = 0.0, timeout: Optional[float] = 30.0) -> Ticket:
        """Admit on the first model of a preference list whose pool can take the request
        now while keeping ``min_free`` (0..1) of each bucket free; wait (up to ``timeout``)
        for the earliest one otherwise.  ``ticket.model`` is the model chosen.

        Raises as :meth:`acquire`: Refused/Timeout (some model could by waiting),
        SpendCapReached (none can wait its way in and one is refused on spend), TooLarge
        (fits none), UnknownModel (no id names a model)."""
        lib = self._lib
        arr = self._route_args(models)
        cost = self._cost(input_tokens, max_tokens, cache_write_5m, cache_write_1h, cache_read, batch)
        pol = N.shl_route_policy(min_free, N.ns(timeout))
        t = N.shl_ticket()
        why = N.shl_refusal()
        t0 = time.monotonic()
        r = lib.shl_route(self._hp, arr, len(models), byref(cost), byref(pol), byref(t), byref(why))
        if r < 0:
            raise from_code(r, f"route {','.join(models)}: {lib.strerror(r)}", why=why)
        return Ticket(self, t, cost, models[r], time.monotonic() - t0)

    async def route_async(self, models: Sequence[str], *, input_tokens: int = 0,
                          max_tokens: int = 0, cache_write_5m: int = 0, cache_write_1h: int = 0,
                          cache_read: int = 0, batch: bool = False, min_free: float = 0.0,
                          timeout: Optional[float] = 30.0) -> Ticket:
        """:meth:`route` for asyncio: each attempt is a non-blocking ``shl_route`` (timeout
        0); between attempts it awaits the shortest wait the library computed."""
        lib = self._lib
        arr = self._route_args(models)
        cost = self._cost(input_tokens, max_tokens, cache_write_5m, cache_write_1h, cache_read, batch)
        pol = N.shl_route_policy(min_free, 0)
        t = N.shl_ticket()
        why = N.shl_refusal()
        start = lib.shl_now()
        deadline = None if timeout is None else start + N.ns(timeout)
        while True:
            r = lib.shl_route(self._hp, arr, len(models), byref(cost), byref(pol), byref(t), byref(why))
            if r >= 0:
                return Ticket(self, t, cost, models[r], (lib.shl_now() - start) / 1e9)
            if r in (_EAGAIN, _ETIMEDOUT) and why.wait_ns > 0:
                if deadline is None or lib.shl_now() + why.wait_ns <= deadline:
                    await asyncio.sleep(why.wait_ns / 1e9)
                    continue
                r = _ETIMEDOUT
            raise from_code(r, f"route {','.join(models)}: {lib.strerror(r)}", why=why)

    # -- feedback, stats ----------------------------------------------------------
    def _pool_index(self, pool: Union[int, str]) -> int:
        if isinstance(pool, int):
            return pool
        if self._lib.shl_pool_find is not None:
            r = self._lib.shl_pool_find(self._hp, pool.encode())
            if r >= 0:
                return r
        for i, p in enumerate(self.stats()["pools"]):
            if p["name"] == pool:
                return i
        raise from_code(_ESRCH, f"no pool named {pool!r}")

    def hold(self, pool: Union[int, str], seconds: float) -> None:
        """Refuse the whole pool, host-wide, for ``seconds`` (a server 429's retry-after)."""
        r = self._lib.shl_hold(self._hp, self._pool_index(pool), int(seconds * 1e9))
        if r < 0:
            raise from_code(r, f"hold: {self._lib.strerror(r)}")

    def spend_exhaust(self) -> None:
        """The server said the spend cap is reached: refuse every request until the month ends."""
        r = self._lib.shl_spend_exhaust(self._hp)
        if r < 0:
            raise from_code(r, f"spend_exhaust: {self._lib.strerror(r)}")

    def generation(self) -> int:
        """The live configuration generation."""
        return self._lib.shl_generation(self._hp)

    def stats(self) -> Dict[str, Any]:
        """A snapshot of every pool and the spend as plain dicts and lists: the document of
        ``shmlimit-stat --json`` (fields in tools/README.md, "JSON fields")."""
        if self._lib.shl_stats_json is None:
            raise ShmlimitError("this libshmlimit has no shl_stats_json", -errno.ENOSYS)
        p = self._lib.shl_stats_json(self._hp)
        if not p:
            raise ShmlimitError("shl_stats_json failed", -errno.ENOMEM)
        try:
            return json.loads(string_at(p).decode("utf-8"))
        finally:
            self._lib.free(p)


def _reattach(name: str, readonly: bool, any_owner: bool) -> Limiter:
    return Limiter(name, readonly=readonly, any_owner=any_owner)


def create(name: str, config: Union[str, Mapping[str, Any], None] = None, *, tier: Optional[int] = None,
           replace: bool = False, group: bool = False) -> None:
    """Create a segment from a configuration (JSON text or a dict; format: README,
    "Configuration") or a tier preset (1..4).  ``replace``: replace an existing one."""
    lib = N.load()
    if (config is None) == (tier is None):
        raise ValueError("give exactly one of config and tier")
    if config is None:
        from ctypes import c_char_p
        lib.cdll.shl_preset_json.restype = c_char_p
        lib.cdll.shl_preset_json.argtypes = [c_int]
        text = lib.cdll.shl_preset_json(int(tier))
        if text is None:
            raise ValueError(f"no tier {tier}")
    else:
        text = (config if isinstance(config, str) else json.dumps(config)).encode()
    cfg = c_void_p()
    err = N.shl_err()
    r = lib.shl_config_parse(text, len(text), byref(cfg), byref(err))
    if r < 0:
        raise from_code(r, f"configuration: {err.msg.decode('utf-8', 'replace')}")
    try:
        flags = (N.SHL_CREATE_REPLACE if replace else 0) | (N.SHL_CREATE_GROUP if group else 0)
        r = lib.shl_create(name.encode(), cfg, flags, None, byref(err))
        if r < 0:
            raise from_code(r, f'segment "{name}": {err.msg.decode("utf-8", "replace") or lib.strerror(r)}')
    finally:
        lib.shl_config_free(cfg)


def unlink(name: str) -> None:
    """Remove a segment's name (attached processes keep their mapping)."""
    lib = N.load()
    r = lib.shl_unlink(name.encode())
    if r < 0:
        raise from_code(r, f'segment "{name}": {lib.strerror(r)}')


__all__ = ["Limiter", "Ticket", "create", "unlink", "Refused", "Timeout"]
