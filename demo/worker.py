"""worker.py - a Python worker of `make demo` (demo/run.sh).

Sends Claude Messages requests the way the official ``anthropic`` SDK does
(its headers, a JSON body, ``stream: true`` read as SSE line by line) through
httpx until END, one at a time, and prints one HTTP status per request (000
for a request the limiter refused locally: never sent).

    worker.py W END URL POOL_IDS [--plain]

W: the worker's number (seeds its choices); END: the epoch second to stop
starting requests; URL: the mock's base URL; POOL_IDS: the model ids of its
pool, space-separated.  By default the client is governed with one line,
``httpx.Client(transport=shmlimit.GovernedTransport())`` (the segment from
SHMLIMIT_SEGMENT).  With --plain it is a plain httpx.Client, governed with no
code change by ``shmlimit-run`` (its sitecustomize hook).
"""
import os
import random
import sys
import time

import httpx

WORDS = ("the quick brown fox jumps over the lazy dog while limits hold steady "
         "across every process")
MAXT = 256  # every request's max_tokens (demo/run.sh counts on it)


def main() -> int:
    w, end, url, ids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4].split()
    plain = "--plain" in sys.argv[5:]
    if plain:
        client = httpx.Client(timeout=60)
    else:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
        import shmlimit  # noqa: E402

        client = httpx.Client(timeout=60, transport=shmlimit.GovernedTransport())
    rnd = random.Random(w * 7919 + os.getpid())
    headers = {
        "x-api-key": "demo", "anthropic-version": "2023-06-01",
        "content-type": "application/json", "accept": "application/json",
        "user-agent": "Anthropic/Python 0.75.0", "x-stainless-lang": "python",
        "x-stainless-package-version": "0.75.0", "x-stainless-retry-count": "0",
    }
    n = 0
    while time.time() < end:
        n += 1
        stream = rnd.random() < 0.5
        body = {
            "model": rnd.choice(ids), "max_tokens": MAXT, "stream": stream,
            "messages": [{"role": "user", "content": f"python worker {w} request {n}:"
                          + (" " + WORDS) * rnd.randint(2, 26)}],
        }
        h = dict(headers, **{"x-mock-output-tokens": str(rnd.randint(20, 139))})
        try:
            req = client.build_request("POST", url + "/v1/messages", json=body, headers=h)
            resp = client.send(req, stream=True)  # as the SDK sends
            try:
                if stream:
                    for _line in resp.iter_lines():  # SSE, line by line
                        pass
                else:
                    resp.read()
            finally:
                resp.close()
            refused = resp.status_code == 429 and "x-shmlimit-refused" in resp.headers
            print("000" if refused else resp.status_code, flush=True)
        except httpx.HTTPError as e:
            print(f"python worker {w}: {e!r}", file=sys.stderr)
            print("000", flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
