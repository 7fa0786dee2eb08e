"""shmlimit: share the Claude API's rate limits and spend cap across a fleet of worker
processes, from Python.

A binding of libshmlimit over ctypes (no compiler at install).  Two ways in:

Explicitly::

    import shmlimit
    lim = shmlimit.Limiter("fleet")
    with lim.acquire("claude-sonnet-4-5", input_tokens=1200, max_tokens=1024, timeout=30) as t:
        reply = send_the_request()
        t.settle(reply["usage"])

    async with lim.acquire_async("claude-sonnet-4-5", input_tokens=1200, max_tokens=1024) as t:
        ...

Or through httpx, which governs the official SDK with one line::

    client = anthropic.Anthropic(http_client=httpx.Client(transport=shmlimit.GovernedTransport()))

``GovernedTransport`` / ``AsyncGovernedTransport`` need httpx and are imported lazily, so
``import shmlimit`` works without it.  See python/README.md.
"""

from __future__ import annotations

from .errors import (
    Refused,
    SegmentError,
    ShmlimitError,
    SpendCapReached,
    Timeout,
    TooLarge,
    UnknownModel,
)
from ._native import LibraryNotFound
from .limiter import Limiter, Ticket, create, unlink

__version__ = "1.0.0"

__all__ = [
    "Limiter",
    "Ticket",
    "create",
    "unlink",
    "ShmlimitError",
    "SegmentError",
    "UnknownModel",
    "Refused",
    "Timeout",
    "TooLarge",
    "SpendCapReached",
    "LibraryNotFound",
    "GovernedTransport",
    "AsyncGovernedTransport",
]


def __getattr__(name: str):
    if name in ("GovernedTransport", "AsyncGovernedTransport"):
        from . import transport

        return getattr(transport, name)
    raise AttributeError(f"module 'shmlimit' has no attribute {name!r}")
