"""ctypes declarations of libshmlimit (libshmlimit/include/shmlimit.h).

The library is looked for, in this order:

1. ``SHMLIMIT_LIBRARY``: a path to ``libshmlimit.so``.  When it is set and
   cannot be loaded, nothing else is tried (an explicit choice is not
   silently replaced).
2. The build tree: ``build/libshmlimit.so.1`` next to this package's
   ``python/`` directory (a checkout where ``make`` has run).
3. The installation prefix: ``<prefix>/lib/libshmlimit.so.1`` when this
   package lives under ``<prefix>/lib/`` (``make install`` puts it in
   ``<prefix>/lib/shmlimit/python/``).
4. The system: ``libshmlimit.so.1`` through the dynamic loader.

ctypes releases the GIL for the duration of every call into a ``CDLL``, so
threads blocked in ``shl_acquire`` do not hold up the interpreter.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from ctypes import (
    POINTER,
    Structure,
    byref,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import List, Optional

SHL_CREATE_GROUP = 0x1
SHL_CREATE_REPLACE = 0x2
SHL_ATTACH_RDONLY = 0x1
SHL_ATTACH_ANY_OWNER = 0x2

SHL_EX_NONE = 0
SHL_EX_MESSAGES = 1
SHL_EX_COUNT = 2
SHL_EX_BATCH = 3

SHL_EX_SETTLED = 0
SHL_EX_ESTIMATED = 1
SHL_EX_CANCELLED = 2
SHL_EX_UNADMITTED = 3

DIM_NAMES = {0: "rpm", 1: "itpm", 2: "otpm", 3: "spend", 4: "hold", -1: "none"}


class shl_err(Structure):
    _fields_ = [("msg", c_char * 256)]


class shl_cost(Structure):
    _fields_ = [
        ("input_tokens", c_uint64),
        ("cache_write_5m", c_uint64),
        ("cache_write_1h", c_uint64),
        ("cache_read", c_uint64),
        ("max_tokens", c_uint64),
        ("batch", c_int),
    ]


class shl_usage(Structure):
    _fields_ = [
        ("input_tokens", c_uint64),
        ("output_tokens", c_uint64),
        ("cache_write_5m", c_uint64),
        ("cache_write_1h", c_uint64),
        ("cache_read", c_uint64),
    ]


class shl_ticket(Structure):
    _fields_ = [
        ("model", c_int32),
        ("pool", c_int32),
        ("state", c_uint32),
        ("batch", c_uint32),
        ("rpm", c_uint64),
        ("itpm", c_uint64),
        ("otpm", c_uint64),
        ("spend", c_int64),
        ("month", c_uint32),
        ("pad", c_uint32),
        ("generation", c_uint64),
        ("admitted_at", c_int64),
        ("full_at", c_uint64 * 3),
    ]


class shl_refusal(Structure):
    _fields_ = [
        ("dim", c_int),
        ("pool", c_int),
        ("wait_ns", c_int64),
        ("need", c_uint64),
        ("capacity", c_uint64),
    ]


class shl_place(Structure):
    """Where a reservation lies in each bucket of its pool, in ns from its release
    (shl_ex_place; INT64_MIN for a bucket it does not take)."""
    _fields_ = [("debt", c_int64 * 3), ("edge", c_int64 * 3), ("full", c_int64 * 3)]


class shl_route_policy(Structure):
    _fields_ = [("min_free", c_double), ("timeout_ns", c_int64)]


# (name, restype, argtypes, required).  Optional ones are the newer parts of
# the API: a library without them still serves what it has.
_P = c_void_p
_SIGS = [
    ("shl_strerror", c_char_p, [c_int], True),
    ("shl_dim_name", c_char_p, [c_int], True),
    ("shl_config_parse", c_int, [c_char_p, c_size_t, POINTER(c_void_p), POINTER(shl_err)], True),
    ("shl_config_free", None, [_P], True),
    ("shl_create", c_int, [c_char_p, _P, c_uint, POINTER(c_void_p), POINTER(shl_err)], True),
    ("shl_attach", c_int, [c_char_p, c_uint, POINTER(c_void_p), POINTER(shl_err)], True),
    ("shl_detach", None, [_P], True),
    ("shl_unlink", c_int, [c_char_p], True),
    ("shl_generation", c_uint64, [_P], True),
    ("shl_lookup", c_int, [_P, c_char_p], True),
    ("shl_model_pool", c_int, [_P, c_int], True),
    ("shl_try", c_int, [_P, c_int, POINTER(shl_cost), POINTER(shl_ticket), POINTER(shl_refusal)], True),
    ("shl_acquire", c_int,
     [_P, c_int, POINTER(shl_cost), c_int64, POINTER(shl_ticket), POINTER(shl_refusal)], True),
    ("shl_route", c_int,
     [_P, POINTER(c_int), c_int, POINTER(shl_cost), POINTER(shl_route_policy),
      POINTER(shl_ticket), POINTER(shl_refusal)], True),
    ("shl_settle", c_int, [_P, POINTER(shl_ticket), POINTER(shl_usage)], True),
    ("shl_cancel", c_int, [_P, POINTER(shl_ticket)], True),
    ("shl_price", c_int, [_P, c_int, POINTER(shl_cost), POINTER(c_int64)], True),
    ("shl_hold", c_int, [_P, c_int, c_int64], True),
    ("shl_spend_exhaust", c_int, [_P], True),
    ("shl_now", c_int64, [], True),
    # fair waiting (branch `fair`)
    ("shl_reserve", c_int,
     [_P, c_int, POINTER(shl_cost), c_int64, POINTER(shl_ticket), POINTER(shl_refusal)], False),
    ("shl_start", c_int, [_P, POINTER(shl_ticket), POINTER(shl_refusal)], False),
    ("shl_pool_find", c_int, [_P, c_char_p], False),
    # statistics as JSON
    ("shl_stats_json", c_void_p, [_P], False),
    # the request/response component (branch `wire`)
    ("shl_ex_kind", c_int, [c_char_p, c_char_p], False),
    ("shl_ex_open", c_int, [_P, c_int, c_char_p, c_size_t, POINTER(c_void_p), POINTER(shl_err)], False),
    ("shl_ex_model", c_char_p, [_P], False),
    ("shl_ex_stream", c_int, [_P], False),
    ("shl_ex_cost", c_int, [_P, POINTER(shl_cost)], False),
    ("shl_ex_ticket", POINTER(shl_ticket), [_P], False),
    ("shl_ex_reserve", c_int, [_P, _P, c_int64, POINTER(c_int64), POINTER(shl_refusal)], False),
    ("shl_ex_start", c_int, [_P, _P, POINTER(shl_refusal)], False),
    ("shl_ex_status", None, [_P, c_int], False),
    ("shl_ex_header", None, [_P, c_char_p, c_size_t, c_char_p, c_size_t], False),
    ("shl_ex_body", None, [_P, c_char_p, c_size_t], False),
    ("shl_ex_finish", c_int, [_P, _P, c_int], False),
    ("shl_ex_free", None, [_P], False),
    # early release (preload/hold.c, "Early release"): a waiting reservation moved sooner
    # by what the settles placed before it gave back
    ("shl_ex_place", c_int, [_P, _P, POINTER(shl_place)], False),
    ("shl_ex_given", c_int, [_P, POINTER(c_int64)], False),
    ("shl_ex_follow", c_int, [_P, _P, POINTER(c_int64), POINTER(shl_place), POINTER(c_int64)],
     False),
    ("shl_settle_given", c_int, [_P, POINTER(shl_ticket), POINTER(shl_usage), POINTER(c_int64)],
     False),
    ("shl_cancel_given", c_int, [_P, POINTER(shl_ticket), POINTER(c_int64)], False),
    ("shl_ticket_place", c_int, [_P, POINTER(shl_ticket), POINTER(shl_place)], False),
    ("shl_follow", c_int, [_P, POINTER(shl_ticket), POINTER(c_int64), POINTER(shl_place),
                           POINTER(c_int64)], False),
]

EARLY_FUNCS = ["shl_ex_place", "shl_ex_given", "shl_ex_follow"]
EARLY_TICKET_FUNCS = ["shl_settle_given", "shl_cancel_given", "shl_ticket_place", "shl_follow"]
EX_FUNCS = [n for n, _, _, _ in _SIGS if n.startswith("shl_ex_") and n not in EARLY_FUNCS]


class LibraryNotFound(OSError):
    """libshmlimit.so could not be loaded (see the module docstring for where it is looked for)."""


def _candidates() -> List[str]:
    env = os.environ.get("SHMLIMIT_LIBRARY")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    tree = os.path.normpath(os.path.join(here, "..", "..", "build"))
    for n in ("libshmlimit.so.1", "libshmlimit.so"):
        out.append(os.path.join(tree, n))
    # make install: <prefix>/lib/shmlimit/python/shmlimit, or a package installed
    # under <prefix>/lib/pythonX.Y/...: the nearest ancestor named lib
    d = here
    while True:
        parent = os.path.dirname(d)
        if parent == d:
            break
        if os.path.basename(parent) == "lib":
            out.append(os.path.join(parent, "libshmlimit.so.1"))
            break
        d = parent
    out.append("libshmlimit.so.1")
    out.append("libshmlimit.so")
    return out


class Lib:
    """The loaded library: every function of _SIGS as an attribute (None when absent)."""

    def __init__(self, path: str, cdll: ctypes.CDLL):
        self.path = path
        self.cdll = cdll
        self.missing: List[str] = []
        for name, res, args, required in _SIGS:
            try:
                f = getattr(cdll, name)
            except AttributeError:
                if required:
                    raise LibraryNotFound(f"{path}: no symbol {name}; not a libshmlimit 1.x")
                self.missing.append(name)
                setattr(self, name, None)
                continue
            f.restype = res
            f.argtypes = args
            setattr(self, name, f)
        self.has_reserve = self.shl_reserve is not None and self.shl_start is not None
        self.has_ex = all(getattr(self, n) is not None for n in EX_FUNCS)
        self.has_early = self.has_ex and all(getattr(self, n) is not None for n in EARLY_FUNCS)
        self.has_early_tickets = self.has_reserve and all(
            getattr(self, n) is not None for n in EARLY_TICKET_FUNCS)
        libc = ctypes.CDLL(None)
        self.free = libc.free
        self.free.argtypes = [c_void_p]
        self.free.restype = None

    def strerror(self, code: int) -> str:
        s = self.shl_strerror(code)
        return s.decode("utf-8", "replace") if s else f"error {code}"


_lib: Optional[Lib] = None
_lib_error: Optional[BaseException] = None
_lock = threading.Lock()


def load() -> Lib:
    """The library, loaded once per process; raises LibraryNotFound."""
    global _lib, _lib_error
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        if _lib_error is not None:
            raise _lib_error
        errors = []
        for path in _candidates():
            if os.sep in path and not os.path.exists(path):
                errors.append(f"{path}: not found")
                continue
            try:
                cdll = ctypes.CDLL(path)
            except OSError as e:
                errors.append(str(e))
                continue
            try:
                _lib = Lib(path, cdll)
            except LibraryNotFound as e:
                errors.append(str(e))
                continue
            return _lib
        where = "SHMLIMIT_LIBRARY" if os.environ.get("SHMLIMIT_LIBRARY") else "the build tree, the prefix or the system"
        _lib_error = LibraryNotFound(f"cannot load libshmlimit from {where}: " + "; ".join(errors))
        raise _lib_error


def ns(seconds: Optional[float]) -> int:
    """Seconds (None: no deadline) as the library's timeout nanoseconds (< 0: none)."""
    if seconds is None:
        return -1
    if seconds <= 0:
        return 0
    v = int(seconds * 1e9)
    return v if v < (1 << 62) else -1


__all__ = [
    "Lib", "LibraryNotFound", "load", "ns", "shl_cost", "shl_usage", "shl_ticket", "shl_refusal",
    "shl_err", "shl_route_policy", "shl_place", "byref", "errno", "DIM_NAMES",
]
