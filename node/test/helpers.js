'use strict';
/*
 * helpers.js - what the Node tests share: the build directory, mock servers
 * started on 127.0.0.1 with --port 0 and stopped by the test, segments with
 * the pid in their name removed at the end, child processes, and the
 * statistics on both sides.
 *
 * No helper sleeps to make a test pass: the only waits are for a port file
 * to appear and for children to exit, each bounded.
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { after } = require('node:test');

const ROOT = path.resolve(__dirname, '..', '..');
const BUILD = process.env.SHMLIMIT_BUILD || path.join(ROOT, 'build');
const MOCK = path.join(BUILD, 'shmlimit-mock');
const PKG = path.join(ROOT, 'node');
const REGISTER = path.join(PKG, 'register.js');

const shmlimit = require(PKG);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'shl-node-test-'));
const mocks = [];
const segments = [];
after(async () => {
  for (const m of mocks) await m.stop();
  for (const s of segments) {
    try { shmlimit.unlink(s); } catch { /* already gone */ }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

/* The segment's configuration.  Sonnet: 300 RPM with a burst of 5 (5
 * requests a second); haiku: 6000 RPM, burst 1 (100 a second); tight: a
 * small ITPM capacity (1000) and spend to refuse on. */
function fleetConfig(over = {}) {
  const prices = { input: 3, output: 15, cache_write_5m: 3.75, cache_write_1h: 6, cache_read: 0.3 };
  return {
    spend_cap_usd: 100,
    pools: [
      { name: 'sonnet', rpm: 300, itpm: 400000, otpm: 200000, burst: { rpm: 5 }, prices },
      { name: 'haiku', rpm: 6000, itpm: 4000000, otpm: 2000000, burst: { rpm: 1 }, prices },
      { name: 'tight', rpm: 60, itpm: 1000, otpm: 1000, prices },
    ],
    models: [
      { match: 'claude-sonnet-4*', pool: 'sonnet' },
      { match: 'claude-haiku-4-5*', pool: 'haiku' },
      { match: 'claude-tight', pool: 'tight' },
    ],
    ...over,
  };
}

/*
 * The mock's limits: the segment's, with 3 more requests of RPM burst for
 * the sonnet pool.  A request reaches the server some time after its
 * release, and on a loaded 2-core machine a process can be kept off the
 * CPU for hundreds of ms in between (its timers then fire together),
 * which bunches arrivals up by as much: 3 requests at 5 a second absorb
 * 600 ms of that (the network does the same to real workers, less).  Over
 * any longer interval the server still allows no more than the segment;
 * an ungoverned fleet gets 429s from it (register.test.js checks).
 */
function serverConfig(cfg = fleetConfig()) {
  const c = JSON.parse(JSON.stringify(cfg));
  for (const p of c.pools) if (p.name === 'sonnet') p.burst = { ...p.burst, rpm: p.burst.rpm + 3 };
  return c;
}

let nseg = 0;
/* A fresh segment; removed when the test file ends. */
function newSegment(config = fleetConfig()) {
  nseg += 1;
  const name = `shl-node-test-${process.pid}-${nseg}`;
  shmlimit.create(name, config, { replace: true });
  segments.push(name);
  return name;
}

let nmock = 0;
/* Start shmlimit-mock with `config` (an object, or null for none; default
 * serverConfig()); resolves
 * to {url, port, host, stats(), stop()}. */
async function startMock(config = serverConfig(), args = []) {
  nmock += 1;
  const portFile = path.join(tmp, `mock${nmock}.port`);
  const argv = ['--port', '0', '--port-file', portFile, '--max-seconds', '300',
                '--max-requests', '20000', ...args];
  if (config) {
    const cf = path.join(tmp, `mock${nmock}.json`);
    fs.writeFileSync(cf, JSON.stringify(config));
    argv.push('--config', cf);
  }
  const child = spawn(MOCK, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  let port = null;
  for (let i = 0; i < 500 && port === null; i++) {
    if (child.exitCode !== null) break;
    try {
      const t = fs.readFileSync(portFile, 'utf8').trim();
      if (t) port = Number(t);
    } catch { /* not yet */ }
    if (port === null) await new Promise((r) => setTimeout(r, 20));
  }
  if (port === null) {
    child.kill('SIGTERM');
    throw new Error(`mock did not start: ${err}`);
  }
  const url = `http://127.0.0.1:${port}`;
  const m = {
    url,
    port,
    host: `127.0.0.1:${port}`,
    async stats() {
      const r = await fetch(`${url}/mock/stats`);
      return r.json();
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  mocks.push(m);
  return m;
}

/* The segment's counters of one pool. */
function poolStats(segment, pool) {
  const lim = new shmlimit.Limiter(segment, { readOnly: true });
  try {
    const p = lim.stats().pools.find((x) => x.name === pool);
    return { ...p.counters, ...p.tokens };
  } finally {
    lim.close();
  }
}

/* Run `node args...` with `env` added; resolves to {code, stdout, stderr}. */
function runNode(args, env = {}, timeoutMs = 120000) {
  return new Promise((resolve, reject) => {
    const clean = { ...process.env };
    for (const k of ['SHMLIMIT_SEGMENT', 'SHMLIMIT_HOSTS', 'SHMLIMIT_WAIT_MS', 'SHMLIMIT_ROUTE',
                     'SHMLIMIT_NODE_ADDON', 'NODE_OPTIONS', 'NODE_TEST_CONTEXT']) {
      delete clean[k];
    }
    const child = spawn(process.execPath, args, {
      env: { ...clean, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: __dirname,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      resolve({ code: sig ? sig : code, stdout, stderr });
    });
  });
}

/* A Messages request body. */
function body(model, text, { maxTokens = 64, stream = false } = {}) {
  return JSON.stringify({
    model,
    max_tokens: maxTokens,
    stream,
    messages: [{ role: 'user', content: text }],
  });
}

module.exports = {
  ROOT, BUILD, PKG, REGISTER, shmlimit, tmp, fleetConfig, serverConfig, newSegment, startMock,
  poolStats, runNode, body,
};
