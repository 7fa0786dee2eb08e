"""Govern httpx with no code change: the hook that ``shmlimit-run`` installs.

``install()`` arranges that every ``httpx.Client`` and ``httpx.AsyncClient`` the
process creates sends through a :class:`~shmlimit.GovernedTransport` /
:class:`~shmlimit.AsyncGovernedTransport` wrapped around the transport it would
otherwise use (its default one, the one passed as ``transport=``, and those of
its proxy ``mounts``), the way Python auto-instrumentation packages patch client
libraries.  httpx is not imported here: a post-import hook on ``sys.meta_path``
patches it when the application imports it (at once if it already has).  A
client given a governed transport already is left as it is.

It is run from the ``sitecustomize`` module that ``shmlimit-run`` puts first on
``PYTHONPATH`` (``shmlimit/_hook/sitecustomize.py``, which then runs the
``sitecustomize`` it shadows, if any).  The segment and the governed hosts come
from the environment (``SHMLIMIT_SEGMENT``, ``SHMLIMIT_HOSTS``,
``SHMLIMIT_WAIT_MS``), as for the preload shim; what cannot be governed passes
through with one stderr line.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from typing import Any

_done = False
_lock = threading.Lock()


def _wrap_client(cls: Any, governed: Any) -> None:
    orig = cls.__init__
    if getattr(orig, "_shmlimit", False):
        return

    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        try:
            t = getattr(self, "_transport", None)
            if t is not None and not isinstance(t, governed):
                self._transport = governed(t)
            mounts = getattr(self, "_mounts", None)
            if isinstance(mounts, dict):
                for k, v in list(mounts.items()):
                    if v is not None and not isinstance(v, governed):
                        mounts[k] = governed(v)
        except Exception as e:  # fail open: the client works as without us
            _say(f"cannot govern an httpx client ({e}); its requests pass through ungoverned")

    __init__._shmlimit = True  # type: ignore[attr-defined]
    __init__.__wrapped__ = orig  # type: ignore[attr-defined]
    __init__.__doc__ = orig.__doc__
    cls.__init__ = __init__


def _say(msg: str) -> None:
    try:
        from .transport import _note

        _note("hook:" + msg, msg)
    except Exception:
        sys.stderr.write(f"shmlimit: {msg}\n")


def patch(httpx_mod: Any) -> None:
    """Patch an imported httpx module's Client and AsyncClient."""
    from .transport import AsyncGovernedTransport, GovernedTransport

    _wrap_client(httpx_mod.Client, GovernedTransport)
    _wrap_client(httpx_mod.AsyncClient, AsyncGovernedTransport)


def _patch_safely(mod: Any) -> None:
    try:
        patch(mod)
    except Exception as e:
        sys.stderr.write(f"shmlimit: cannot govern httpx ({type(e).__name__}: {e}); "
                         "requests pass through ungoverned\n")


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when httpx is found, its loader patches it after loading."""

    def __init__(self):
        self._busy = threading.local()

    def find_spec(self, name, path=None, target=None):
        if name != "httpx" or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._busy.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader = spec.loader
        orig_exec = loader.exec_module

        def exec_module(module):
            orig_exec(module)
            _patch_safely(module)
            try:
                sys.meta_path.remove(self)
            except ValueError:
                pass

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Govern every httpx client of this process (idempotent)."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
    mod = sys.modules.get("httpx")
    if mod is not None:
        _patch_safely(mod)
    else:
        sys.meta_path.insert(0, _Finder())


__all__ = ["install", "patch"]
