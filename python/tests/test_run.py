"""shmlimit-run: govern workers with no code change (Python through the sitecustomize hook,
curl through the preload shim, Node through register.js when that part is built); and the
two ways of installing the package (make install, pip)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import shmlimit
from conftest import BUILD, PY, PYDIR, ROOT, child_env, config, message_body, pool, totals

RUN = str(PYDIR / "shmlimit-run")

# A plain httpx worker: it never imports shmlimit.
PY_WORKER = textwrap.dedent("""
    import asyncio, json, sys, httpx
    url, n, mode, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    def body(i):
        b = {"model": "claude-sonnet-4-5", "max_tokens": 64,
             "messages": [{"role": "user", "content": "py %d %d " % (tag, i) + "w " * (i % 5)}]}
        if mode.endswith("sse"):
            b["stream"] = True
        return b
    H = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    if mode.startswith("async"):
        async def main():
            global c
            async with httpx.AsyncClient(base_url=url, timeout=120) as c:
                async def one(i):
                    async with c.stream("POST", "/v1/messages", json=body(i), headers=H) as r:
                        await r.aread()
                        return r.status_code
                return await asyncio.gather(*(one(i) for i in range(n)))
        st = asyncio.run(main())
    else:
        with httpx.Client(base_url=url, timeout=120) as c:
            st = []
            for i in range(n):
                with c.stream("POST", "/v1/messages", json=body(i), headers=H) as r:
                    r.read()
                    st.append(r.status_code)
    print(" ".join(map(str, st)))
    print(type(c._transport).__name__)
""")

NODE_WORKER = textwrap.dedent("""
    const [url, n, tag] = process.argv.slice(1);  // node -e CODE ARGS: no script path
    (async () => {
      const st = [];
      for (let i = 0; i < Number(n); i++) {
        const r = await fetch(url + '/v1/messages', {method: 'POST',
          headers: {'content-type': 'application/json', 'x-api-key': 'k', 'anthropic-version': '2023-06-01'},
          body: JSON.stringify({model: 'claude-sonnet-4-5', max_tokens: 64,
            messages: [{role: 'user', content: `node ${tag} ${i}`}]})});
        await r.text();
        st.push(r.status);
      }
      console.log(st.join(' '));
    })();
""")


def py_cmd(m, n, mode, tag):
    return [PY, "-c", PY_WORKER, m.url, str(n), mode, str(tag)]


def curl_cmd(m, n, tag):
    """A shell worker: n curl processes one after the other, each printing its status."""
    body = json.dumps(message_body(9000 + tag)).replace("'", "")
    return ["sh", "-c", f"for i in $(seq {n}); do curl -s -o /dev/null -w '%{{http_code}} ' "
            f"-H 'x-api-key: k' -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' "
            f"-d '{body}' {m.url}/v1/messages || exit 1; done; echo"]


def launch(seg, cmd, env):
    return subprocess.Popen([RUN, seg, "--", *cmd], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def node_ready() -> bool:
    return (shutil.which("node") is not None and (ROOT / "node" / "register.js").exists()
            and (BUILD / "node" / "shmlimit.node").exists())


@pytest.mark.parametrize("mode", ["sync-json", "sync-sse", "async-json", "async-sse"])
def test_python_worker_governed(mock, segment, mode):
    m = mock()
    seg = segment()
    env = child_env(SHMLIMIT_HOSTS=m.hostport)
    p = launch(seg, py_cmd(m, 6, mode, 1), env)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    statuses, tname = out.splitlines()
    assert statuses.split() == ["200"] * 6
    assert tname in ("GovernedTransport", "AsyncGovernedTransport")
    assert err == ""
    st = shmlimit.Limiter(seg).stats()
    assert pool(st)["counters"]["settled"] == 6
    assert totals(st) == m.stats()["usage"]


def test_mixed_fleet_one_segment(mock, segment):
    """Python (sync and async), curl and, when built, Node workers under shmlimit-run,
    sharing one segment at saturation: zero 429s, settled = the server's usage."""
    mcfg = config(rpm=600, burst={"rpm": 8})
    m = mock(mcfg)
    seg = segment(config(rpm=600, burst={"rpm": 2}))  # as in test_fleet.py
    env = child_env(SHMLIMIT_HOSTS=m.hostport)
    cmds = [py_cmd(m, 8, "sync-json", 1), py_cmd(m, 8, "async-sse", 2), py_cmd(m, 8, "sync-sse", 3),
            curl_cmd(m, 8, 4), curl_cmd(m, 8, 5)]
    if node_ready():
        cmds.append(["node", "-e", NODE_WORKER, m.url, "8", "6"])
    procs = [launch(seg, c, env) for c in cmds]
    statuses = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        assert err == "", err
        statuses += out.split()[:8]
    n = 8 * len(cmds)
    assert statuses == ["200"] * n
    ms = m.stats()
    assert ms["rate_limited"] == 0
    st = shmlimit.Limiter(seg).stats()
    c = pool(st)["counters"]
    assert c["settled"] == n and c["cancelled"] == 0
    assert totals(st) == ms["usage"]


def test_missing_segment_fails_open(mock):
    m = mock()
    env = child_env(SHMLIMIT_HOSTS=m.hostport)
    plain = subprocess.run(py_cmd(m, 2, "sync-json", 7), env=env, capture_output=True, text=True, timeout=60)
    name = f"pytest-shl-nosuch-{os.getpid()}"
    p = subprocess.run([RUN, name, "--", *py_cmd(m, 2, "sync-json", 7)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert p.stdout.splitlines()[0] == plain.stdout.splitlines()[0] == "200 200"
    err = [line for line in p.stderr.splitlines() if line]
    assert len(err) == 1 and f'segment "{name}"' in err[0] and "ungoverned" in err[0]
    # the shim says the same for curl, once
    p = subprocess.run([RUN, name, "--", *curl_cmd(m, 1, 8)], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.stdout.split() == ["200"]
    assert len([line for line in p.stderr.splitlines() if line]) == 1


def test_shadowed_sitecustomize_still_runs(tmp_path, mock, segment):
    m = mock()
    seg = segment()
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['SHADOWED_RAN'] = 'yes'\n")
    env = child_env(SHMLIMIT_HOSTS=m.hostport)
    env["PYTHONPATH"] = str(tmp_path)
    code = ("import os, httpx\nr = httpx.post(%r, json=%r)\nprint(r.status_code, os.environ.get('SHADOWED_RAN'))"
            % (m.url + "/v1/messages", message_body(1)))
    p = subprocess.run([RUN, seg, "--", PY, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["200", "yes"]
    assert pool(shmlimit.Limiter(seg).stats())["counters"]["settled"] == 1


def test_usage_errors_and_exit_status():
    assert subprocess.run([RUN], capture_output=True).returncode == 2
    assert subprocess.run([RUN, "seg"], capture_output=True).returncode == 2
    assert subprocess.run([RUN, "seg", "--", "sh", "-c", "exit 7"], capture_output=True).returncode == 7
    assert subprocess.run([RUN, "seg", "--", "/nonexistent/cmd"], capture_output=True).returncode == 127


def test_make_install_layout(tmp_path, mock, segment):
    """make install PREFIX=...: Debian's python3 finds the package through the .pth in
    its site directory, the package finds the installed library, and the installed
    shmlimit-run has the installed paths."""
    prefix = tmp_path / "prefix"
    p = subprocess.run(["make", "-s", "--no-print-directory", "install", f"PREFIX={prefix}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    ver = "%d.%d" % sys.version_info[:2]
    site = prefix / "lib" / f"python{ver}" / "dist-packages"
    assert (site / "shmlimit.pth").read_text().strip() == str(prefix / "lib" / "shmlimit" / "python")
    code = ("import site, sys; site.addsitedir(sys.argv[1]); import shmlimit, shmlimit._native as N;"
            "print(shmlimit.__file__); print(N.load().path)")
    env = child_env()
    env.pop("PYTHONPATH")
    q = subprocess.run([PY, "-c", code, str(site)], env=env, capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    f, lib = q.stdout.split()
    assert f.startswith(str(prefix / "lib" / "shmlimit" / "python" / "shmlimit"))
    assert lib == str(prefix / "lib" / "libshmlimit.so.1")
    run = (prefix / "bin" / "shmlimit-run").read_text()
    assert f'PRELOAD_SO="{prefix}/lib/libshmlimit-preload.so"' in run
    assert f'PY_DIR="{prefix}/lib/shmlimit/python"' in run
    # the installed launcher governs a Python worker with the installed package
    m = mock()
    seg = segment()
    env = child_env(SHMLIMIT_HOSTS=m.hostport)
    env.pop("PYTHONPATH")
    r = subprocess.run([str(prefix / "bin" / "shmlimit-run"), seg, "--", *py_cmd(m, 2, "sync-json", 1)],
                       env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines() == ["200 200", "GovernedTransport"]


def test_pip_install_no_compiler(tmp_path):
    """pip installs the package from the tree offline, without building anything."""
    src = tmp_path / "src"
    shutil.copytree(PYDIR, src, ignore=shutil.ignore_patterns("tests", "__pycache__", "build", "*.egg-info"))
    target = tmp_path / "site"
    p = subprocess.run([PY, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-deps",
                        "--target", str(target), str(src)], capture_output=True, text=True, timeout=300,
                       env={**child_env(), "CC": "/bin/false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert p.returncode == 0, p.stderr
    assert (target / "shmlimit" / "transport.py").exists()
    assert (target / "shmlimit" / "_hook" / "sitecustomize.py").exists()
    assert (target / "bin" / "shmlimit-run").exists()
    assert not list(target.rglob("*.so"))  # nothing compiled
