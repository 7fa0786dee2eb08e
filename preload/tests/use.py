"""use.py URL POOL DIM [FROM]: how much of a limit a client used, as the
server saw it (shmlimit-mock's GET /mock/admissions): of the admissions of
POOL from the FROM-th (0: the first the mock made) to the last, what they
took of DIM (rpm: one each; itpm: their input tokens), over what the server
could have admitted in that window: the bucket's level at the FROM-th plus
its refill until the last.  Prints it with 4 decimals (1.0000: all of it).
"""
import json
import sys
import urllib.request

url, pool, dim = sys.argv[1], sys.argv[2], sys.argv[3]
first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
with urllib.request.urlopen(url + "/mock/admissions", timeout=10) as r:
    p = json.load(r)["pools"][pool]
log = p["log"]
log = log[max(0, first - (int(p["admitted"]) - len(log))):]
if len(log) < 2:
    sys.exit("use.py: fewer than 2 admissions of %s from #%d" % (pool, first))
col = {"rpm": 1, "itpm": 2}[dim]
got = len(log) if dim == "rpm" else sum(e[3] for e in log)
could = log[0][col] + p[dim] / 60e9 * (log[-1][0] - log[0][0])
print("%.4f" % (got / could))
