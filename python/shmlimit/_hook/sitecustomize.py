"""shmlimit-run's hook: govern httpx in this Python process, then run the
``sitecustomize`` module this one shadows (e.g. Debian's), if there is one.

Fails open: when shmlimit cannot be imported, one line on stderr and the
process runs as without it.
"""


def _shmlimit_hook():
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        import shmlimit.autoinstall

        shmlimit.autoinstall.install()
    except Exception as e:
        sys.stderr.write(f"shmlimit: cannot import shmlimit ({type(e).__name__}: {e}); "
                         "Python requests pass through ungoverned\n")
    # the sitecustomize this one hides, further on the path
    try:
        import importlib.machinery
        import importlib.util

        rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is not None and spec.loader is not None:
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
    except Exception as e:
        sys.stderr.write(f"shmlimit: the shadowed sitecustomize failed ({type(e).__name__}: {e})\n")


_shmlimit_hook()
del _shmlimit_hook
