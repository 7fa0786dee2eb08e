"""Shared fixtures: the build tree, mock servers and segments, each started and removed by
the test that uses it (servers on 127.0.0.1, bounded by --max-requests and --max-seconds;
segments named with the pid)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
PYDIR = ROOT / "python"
PY = "/usr/bin/python3"
sys.path.insert(0, str(PYDIR))

import shmlimit  # noqa: E402

PRICES = {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}
_seq = itertools.count()


def config(rpm=600, itpm=10_000_000, otpm=10_000_000, burst=None, cap=None, pools=None, models=None):
    """A configuration: one pool `sonnet` for claude-sonnet-4* unless pools/models are given."""
    if pools is None:
        p = {"name": "sonnet", "rpm": rpm, "itpm": itpm, "otpm": otpm, "prices": PRICES}
        if burst:
            p["burst"] = burst
        pools = [p]
    if models is None:
        models = [{"match": "claude-sonnet-4*", "pool": "sonnet"}]
    return {"spend_cap_usd": cap, "pools": pools, "models": models}


class Mock:
    def __init__(self, tmp: Path, cfg=None, max_requests=20000, max_seconds=300, args=()):
        n = next(_seq)
        self.portfile = tmp / f"mock{n}.port"
        self.errfile = tmp / f"mock{n}.err"
        cmd = [str(BUILD / "shmlimit-mock"), "--port", "0", "--port-file", str(self.portfile),
               "--max-requests", str(max_requests), "--max-seconds", str(max_seconds), *args]
        if cfg is not None:
            cf = tmp / f"mock{n}.json"
            cf.write_text(json.dumps(cfg))
            cmd += ["--config", str(cf)]
        self.proc = subprocess.Popen(cmd, stderr=open(self.errfile, "w"))
        deadline = time.monotonic() + 10
        while not (self.portfile.exists() and self.portfile.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mock did not start: {self.errfile.read_text()}")
            time.sleep(0.02)
        self.port = int(self.portfile.read_text())
        self.hostport = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.hostport}"

    def stats(self) -> dict:
        return httpx.get(self.url + "/mock/stats", timeout=10).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                httpx.post(self.url + "/mock/shutdown", timeout=5)
            except httpx.HTTPError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def mock(tmp_path):
    """mock(cfg=None, **kw) -> a running Mock, stopped at teardown."""
    made = []

    def make(cfg=None, **kw):
        m = Mock(tmp_path, cfg, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


@pytest.fixture
def segment():
    """segment(cfg) -> a fresh segment's name, removed at teardown."""
    made = []

    def make(cfg=None, tier=None):
        name = f"pytest-shl-{os.getpid()}-{next(_seq)}"
        if tier is not None:
            shmlimit.create(name, tier=tier, replace=True)
        else:
            shmlimit.create(name, cfg if cfg is not None else config(), replace=True)
        made.append(name)
        return name

    yield make
    for n in made:
        try:
            shmlimit.unlink(n)
        except shmlimit.ShmlimitError:
            pass


def pool(stats: dict, name: str = "sonnet") -> dict:
    return next(p for p in stats["pools"] if p["name"] == name)


def totals(stats: dict) -> dict:
    """The segment's settled tokens, summed over pools, in the mock's names."""
    t = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
         "cache_read_input_tokens": 0}
    for p in stats["pools"]:
        t["input_tokens"] += p["tokens"]["input"]
        t["output_tokens"] += p["tokens"]["output"]
        t["cache_creation_input_tokens"] += p["tokens"]["cache_write"]
        t["cache_read_input_tokens"] += p["tokens"]["cache_read"]
    return t


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PYDIR) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in ("SHMLIMIT_SEGMENT", "SHMLIMIT_HOSTS", "SHMLIMIT_WAIT_MS", "SHMLIMIT_LIBRARY"):
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def sdk_headers(stream: bool = False) -> dict:
    """The headers the official Python SDK sends with a Messages request."""
    h = {
        "x-api-key": "sk-ant-test",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "accept": "application/json",
        "user-agent": "Anthropic/Python 0.40.0",
        "x-stainless-lang": "python",
        "x-stainless-package-version": "0.40.0",
        "x-stainless-retry-count": "0",
    }
    if stream:
        h["x-stainless-helper-method"] = "stream"
    return h


def message_body(i: int = 0, stream: bool = False, max_tokens: int = 64, model="claude-sonnet-4-5") -> dict:
    b = {"model": model, "max_tokens": max_tokens,
         "messages": [{"role": "user", "content": f"request number {i}: " + "words " * (i % 7)}]}
    if stream:
        b["stream"] = True
    return b


def read_sse_usage(lines) -> dict:
    """The usage of an SSE stream as the SDK accumulates it (message_start, last message_delta)."""
    usage = {}
    for line in lines:
        if not line.startswith("data:"):
            continue
        ev = json.loads(line[5:])
        if ev.get("type") == "message_start":
            usage.update(ev["message"]["usage"])
        elif ev.get("type") == "message_delta" and ev.get("usage"):
            usage.update(ev["usage"])
    return usage
