"""Failing open, like the shim: whatever cannot be governed runs exactly as without us,
with one line on stderr per cause and process.  Each case runs a worker process twice
(plain httpx, then through GovernedTransport) and compares what it printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap

import pytest

import shmlimit
from conftest import PY, PYDIR, child_env, config, message_body, pool

WORKER = textwrap.dedent("""
    import json, os, sys, httpx
    url, hp, governed, body = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
    if governed:
        import shmlimit
        c = httpx.Client(transport=shmlimit.GovernedTransport(hosts=[hp]), base_url=url)
    else:
        c = httpx.Client(base_url=url)
    for i in range(3):
        r = c.post("/v1/messages", content=body.encode(),
                   headers={"x-api-key": "k", "anthropic-version": "2023-06-01",
                            "content-type": "application/json"})
        print(r.status_code, r.text)
""")


def run(m, body: str, governed: bool, **env):
    p = subprocess.run([PY, "-c", WORKER, m.url, m.hostport, "1" if governed else "0", body],
                       env=child_env(**env), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return re.sub(r"req_mock[0-9a-f]+", "req_mock", p.stdout), [line for line in p.stderr.splitlines() if line]


def same_as_without(m, body, expect, **env):
    plain, perr = run(m, body, False, **env)
    out, err = run(m, body, True, **env)
    assert out == plain and perr == []
    assert len(err) == 1 and err[0].startswith("shmlimit: ") and expect in err[0], err
    return out


GOOD = json.dumps(message_body(1))


def test_no_segment_named(mock):
    m = mock()
    out = same_as_without(m, GOOD, "SHMLIMIT_SEGMENT unset")
    assert out.count("200 ") == 3


def test_missing_segment(mock):
    m = mock()
    name = f"pytest-shl-nosuch-{os.getpid()}"
    same_as_without(m, GOOD, f'segment "{name}"', SHMLIMIT_SEGMENT=name)


def test_corrupt_segment(mock):
    m = mock()
    name = f"pytest-shl-junk-{os.getpid()}"
    with open(f"/dev/shm/{name}", "wb") as f:
        f.write(b"not a segment" * 1000)
    try:
        same_as_without(m, GOOD, f'segment "{name}"', SHMLIMIT_SEGMENT=name)
    finally:
        os.unlink(f"/dev/shm/{name}")


def test_unreadable_body(mock, segment):
    m = mock()
    seg = segment()
    out = same_as_without(m, "this is not JSON", "not a JSON request", SHMLIMIT_SEGMENT=seg)
    assert out.count("400 ") == 3  # the server's answer, as without us
    assert pool(shmlimit.Limiter(seg).stats())["counters"]["admitted"] == 0


def test_model_without_pool(mock, segment):
    m = mock()
    seg = segment()  # only claude-sonnet-4*
    same_as_without(m, json.dumps(message_body(1, model="claude-haiku-4-5")), "without a pool",
                    SHMLIMIT_SEGMENT=seg)


def test_library_not_loadable(mock, segment):
    m = mock()
    seg = segment()
    same_as_without(m, GOOD, "cannot load libshmlimit", SHMLIMIT_SEGMENT=seg,
                    SHMLIMIT_LIBRARY="/nonexistent/libshmlimit.so.1")
    # the explicit API says so instead
    p = subprocess.run([PY, "-c", "import shmlimit\ntry:\n shmlimit.Limiter('x')\n"
                        "except shmlimit.LibraryNotFound as e: print('not found:', e)"],
                       env=child_env(SHMLIMIT_LIBRARY="/nonexistent/libshmlimit.so.1"),
                       capture_output=True, text=True, timeout=30)
    assert p.stdout.startswith("not found: cannot load libshmlimit from SHMLIMIT_LIBRARY")


def test_hook_without_importable_package(mock, segment):
    """shmlimit-run's sitecustomize when the shmlimit package cannot be imported."""
    m = mock()
    seg = segment()
    code = ("import httpx\nr = httpx.post(%r, content=%r.encode())\nprint(r.status_code, r.text)"
            % (m.url + "/v1/messages", GOOD))
    env = child_env(SHMLIMIT_SEGMENT=seg, SHMLIMIT_HOSTS=m.hostport)
    plain = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    env["PYTHONPATH"] = str(PYDIR / "shmlimit" / "_hook")  # the hook, but not the package
    p = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout == plain.stdout
    err = [line for line in p.stderr.splitlines() if line]
    assert len(err) == 1 and "cannot import shmlimit" in err[0]
    assert pool(shmlimit.Limiter(seg).stats())["counters"]["admitted"] == 0
