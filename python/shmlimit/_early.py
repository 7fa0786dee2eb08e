"""Early release: this process's waiting reservations, moved sooner by the gives of the
places before them (preload/hold.c, "Early release", without its late-send skew), for the
httpx transports (exchanges) and the Limiter's acquire (tickets).

A line is a segment handle and a pool.  Its places are numbered (seq) in the order they
were taken in the word: one lock covers the reservation (shl_ex_reserve, shl_reserve) and
the numbering.  A give (a settle below the estimate, a cancel: shl_ex_given,
shl_settle_given, shl_cancel_given) makes every place taken after it in its pool end that
much sooner; a waiting reservation placed after the finished one has each taken bucket's
edge (shl_ex_place, shl_ticket_place: how much later than its release that bucket alone
would have let it go) moved down by the give, and when a bucket set its release (an edge of
0: not a hold, not the clock) the release moves to the latest edge, as far as the word
allows counting every give since its take: shl_ex_follow and shl_follow, the library's one
rule.  Gives of places taken after a waiting one make no room before it (the word's ledger,
which every refund raises, would say they do): they never move it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from ctypes import c_int64
from typing import Callable, Optional

from . import _native as N

try:  # asyncio or trio, whichever runs the task (httpx's own async dependency)
    from anyio import Event as _AsyncEvent, move_on_after as _move_on_after
    from anyio import sleep as async_sleep

    async def _wait_event(ev, seconds: float) -> None:
        with _move_on_after(seconds):
            await ev.wait()
except ImportError:  # pragma: no cover
    from asyncio import Event as _AsyncEvent, sleep as async_sleep

    async def _wait_event(ev, seconds: float) -> None:
        try:
            await asyncio.wait_for(ev.wait(), seconds)
        except asyncio.TimeoutError:
            pass


# Tests: called (under the lock) with ("placed", seq, release, edges) for a reservation
# that waits, ("given", seq, gives) for a finish that gave, ("moved", seq, release).
trace: Optional[Callable[..., None]] = None


def _nothing() -> None:
    pass


class Entry:
    """What the lines know of a reservation: its number and line once reserved (None:
    not numbered, a library without early release), and how to move it (`follow(gives,
    place, release)`: shl_ex_follow or shl_follow, bound to it)."""

    __slots__ = ("seq", "line", "follow")

    def __init__(self):
        self.seq = None
        self.line = None
        self.follow = None


class Waiter:
    """A reservation waiting for its release: its place (restated by its follow) and its
    release, moved under the lock; `wake` (set by its waiting thread or task, called under
    the lock) ends its wait early after a move."""

    __slots__ = ("entry", "line", "seq", "place", "release", "wake")

    def __init__(self, entry: Entry, place, release: int):
        self.entry = entry
        self.line = entry.line
        self.seq = entry.seq
        self.place = place
        self.release = release
        self.wake = _nothing


class Lines:
    """The seq count, the waiting reservations by line, and the gives to apply.

    One lock covers every reservation with its numbering, every finish with the reading of
    its give, every waiter's release and place, and every follow, so that a place taken
    after a finish (which counts its give already) is never moved by it.  A waiter leaves
    (under the lock) before it starts or is cancelled: a follow never meets a start.  The
    lock is reentrant because a response garbage collected inside a critical section
    finishes there; its give is queued and applied when the outermost holder leaves, so
    nothing moves under a section that is reading."""

    def __init__(self):
        self.lock = threading.RLock()
        self.depth = 0
        self.seq = 0
        self.waiting = {}  # (handle, pool) -> {seq: Waiter}
        self.gives = []    # (line, seq, last seq placed before the give, gives)

    def __enter__(self) -> Lines:
        self.lock.acquire()
        self.depth += 1
        return self

    def __exit__(self, *exc) -> None:
        try:
            while self.depth == 1 and self.gives:
                self._give(*self.gives.pop(0))
        finally:
            self.depth -= 1
            self.lock.release()

    def reserve(self, entry: Entry, reserve: Callable[[], int], line: Callable[[], tuple],
                release: Callable[[], int], place: Callable[[object], int],
                now: Callable[[], int]):
        """`reserve()` (the library's reservation: 0 or an error) and its number: (its
        result, the waiter when it must wait, else None).  `line()`, `release()` and
        `place(shl_place)` read the reservation; `now()` is the library's clock."""
        with self:
            r = reserve()
            if r != 0:
                return r, None
            # admitted at once or not, its finish may give to the places after it
            self.seq += 1
            entry.seq = self.seq
            entry.line = line()
            rel = release()
            p = N.shl_place()
            if rel <= now() or place(p) != 0:
                return 0, None
            w = Waiter(entry, p, rel)
            self.waiting.setdefault(w.line, {})[w.seq] = w
            if trace is not None:
                trace("placed", w.seq, w.release, list(p.edge))
            return 0, w

    def leave(self, entry: Entry) -> None:
        """`entry` waits no more: nothing moves it from here on."""
        with self:
            line = self.waiting.get(entry.line)
            w = line.get(entry.seq) if line is not None else None
            if w is not None and w.entry is entry:
                del line[entry.seq]
                if not line:
                    del self.waiting[entry.line]

    def finish(self, entry: Entry, finish: Callable[[object], int]) -> int:
        """`finish(gives)` (the library's settle or cancel, filling the gives), its give
        queued for the waiters placed after it."""
        g = (c_int64 * 3)()
        with self:
            # its waiter left before any start or cancel, unless an exception came between
            # its reservation and its wait: never move a finished one
            self.leave(entry)
            r = finish(g)
            if max(g) > 0:
                # the places numbered after self.seq were taken after the give: they count it
                self.gives.append((entry.line, entry.seq, self.seq, g))
                if trace is not None:
                    trace("given", entry.seq, list(g))
        return r

    def _give(self, line, seq: int, last: int, g) -> None:
        for w in list(self.waiting.get(line, {}).values()):
            if seq < w.seq <= last:
                self._advance(w, g)

    @staticmethod
    def _advance(w: Waiter, g) -> None:
        """Move `w` sooner by the gives g of a place before it (its follow: 0, -ESTALE or
        -EINVAL, it stays as it is)."""
        rel = c_int64()
        if w.entry.follow(g, w.place, rel) != 1:
            return
        w.release = rel.value
        if trace is not None:
            trace("moved", w.seq, w.release)
        w.wake()


lines = Lines()


def _reset_after_fork() -> None:
    """A child is a new process with no line yet (the waiters it inherited are its
    parent's, and so may be the lock)."""
    global lines
    lines = Lines()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def wait_sync(lib, w: Optional[Waiter], release: int) -> None:
    """The calling thread waits until the release, or the waiter's release as moved."""
    ev = threading.Event()
    try:
        while True:
            if w is not None:
                with lines:
                    release = w.release
                    ev.clear()
                    w.wake = ev.set
            d = release - lib.shl_now()
            if d <= 0:
                return
            ev.wait(d / 1e9)
    finally:
        if w is not None:
            lines.leave(w.entry)


def _loop_call() -> Callable:
    """A thread-safe call-soon into the running loop (a give may be applied on any thread)."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token().run_sync_soon
        except RuntimeError:  # this task runs on asyncio
            pass
    return asyncio.get_running_loop().call_soon_threadsafe


async def wait_async(lib, w: Optional[Waiter], release: int) -> None:
    """The task waits until the release, or the waiter's release as moved; a cancelled one
    leaves the line first (its caller then gives its place back)."""
    if w is None:
        while True:
            d = release - lib.shl_now()
            if d <= 0:
                return
            await async_sleep(d / 1e9)
    try:
        call = _loop_call()
        while True:
            ev = _AsyncEvent()

            def wake(ev=ev) -> None:
                try:
                    call(ev.set)
                except RuntimeError:  # the loop is closed: no one waits on it
                    pass

            with lines:
                release = w.release
                w.wake = wake
            d = release - lib.shl_now()
            if d <= 0:
                return
            await _wait_event(ev, d / 1e9)
    finally:
        lines.leave(w.entry)
