"""Exceptions: what a caller can act on.

    ShmlimitError                 every error of this package (``code``: the library's -errno)
    +-- SegmentError              the segment could not be created or attached
    +-- UnknownModel              no pool governs this model id
    +-- Refused                   not admitted now; ``wait`` says when it could be (retryable)
    |   +-- Timeout               the computed wait is past the deadline given
    +-- TooLarge                  larger than a bucket's capacity: never admissible
    +-- SpendCapReached           the monthly spend cap: not retryable this month
"""

from __future__ import annotations

import errno
from typing import Optional


class ShmlimitError(Exception):
    """An error of libshmlimit.  ``code`` is the library's negative errno value."""

    retryable = False

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


class SegmentError(ShmlimitError):
    """The segment could not be attached or created (missing, wrong version, corrupt, permission)."""


class UnknownModel(ShmlimitError):
    """No pool is configured for this model id (``-ESRCH``)."""


class _Refusal(ShmlimitError):
    def __init__(self, message: str, code: int, *, dimension: str, pool: int, wait: float,
                 need: int, capacity: int, model: Optional[str] = None):
        super().__init__(message, code)
        #: "rpm", "itpm", "otpm", "spend" or "hold": which limit refused
        self.dimension = dimension
        #: the pool's index in the segment
        self.pool = pool
        #: seconds until the request could be admitted (0.0 when never)
        self.wait = wait
        #: units the request needs in that dimension, and its capacity
        self.need = need
        self.capacity = capacity
        self.model = model


class Refused(_Refusal):
    """Not admitted now.  ``wait`` (seconds) says when it could be; retry after it."""

    retryable = True


class Timeout(Refused):
    """The request could not be admitted before the deadline (``timeout``); ``wait`` is the full wait."""


class TooLarge(_Refusal):
    """The request is larger than a bucket's capacity (``dimension``, ``need`` > ``capacity``):
    it can never be admitted on this pool.  Lower ``max_tokens`` or split the input."""


class SpendCapReached(_Refusal):
    """The monthly spend cap is reached (or the server said so).  Not retryable before the
    month rolls over (00:00 UTC on the 1st)."""


def from_code(code: int, message: str, *, why=None, model: Optional[str] = None) -> ShmlimitError:
    """The exception for a negative code and its ``shl_refusal`` (may be None)."""
    from ._native import DIM_NAMES

    kw = dict(dimension="none", pool=-1, wait=0.0, need=0, capacity=0, model=model)
    if why is not None:
        kw.update(dimension=DIM_NAMES.get(why.dim, str(why.dim)), pool=why.pool,
                  wait=max(0, why.wait_ns) / 1e9, need=why.need, capacity=why.capacity)
    detail = ""
    if why is not None and kw["dimension"] != "none":
        detail = f" (dimension {kw['dimension']}, pool {kw['pool']}"
        if code in (-errno.EAGAIN, -errno.ETIMEDOUT):
            detail += f", wait {kw['wait']:.3f} s"
        else:
            detail += f", need {kw['need']}, capacity {kw['capacity']}"
        detail += ")"
    msg = message + detail
    if code == -errno.EAGAIN:
        return Refused(msg, code, **kw)
    if code == -errno.ETIMEDOUT:
        return Timeout(msg, code, **kw)
    if code == -errno.E2BIG:
        return TooLarge(msg, code, **kw)
    if code == -errno.EDQUOT:
        kw["dimension"] = "spend"
        return SpendCapReached(msg, code, **kw)
    if code == -errno.ESRCH:
        return UnknownModel(msg, code)
    if code in (-errno.ENOENT, -errno.EPROTO, -errno.EPROTONOSUPPORT, -errno.EBADMSG,
                -errno.EUCLEAN, -errno.EPERM, -errno.ENAMETOOLONG, -errno.EEXIST):
        return SegmentError(msg, code)
    return ShmlimitError(msg, code)
