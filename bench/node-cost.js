#!/usr/bin/env node
'use strict';
/*
 * node-cost.js - what the Node.js package costs.
 *
 * 1. Through N-API: admit + settle (the addon's reserve and settle, two
 *    calls with numbers only; and the JS API, tryAcquire + settle, which
 *    adds the Ticket object) next to a bare call pair of a no-op C function
 *    through the same N-API (`noop`, same arguments' shape).  Target: admit
 *    + settle within 3x of the bare pair.  The pool never binds (limits of
 *    10^12 a minute), so every admission is the fast path.
 * 2. Per governed request: the same Messages request posted to the local
 *    mock (build/shmlimit-mock, 127.0.0.1, a port it picks) with the global
 *    fetch and with governedFetch(fetch), one after the other, keep-alive;
 *    the added latency is the difference of the medians.  The segment's
 *    settled count must equal the governed requests, or the figure would be
 *    of an ungoverned run and is reported as such.
 * Each measure alternates its two sides, best (part 1) or median (part 2)
 * of several rounds.
 *
 * Usage: node bench/node-cost.js quick|full [OUTDIR]
 * Appends a section to OUTDIR/results.md and lines to OUTDIR/results.csv
 * when they exist (bench/run.sh makes them); prints the section.  Skips,
 * saying why, when the addon or the mock is not built.
 */
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { performance } = require('node:perf_hooks');

const ROOT = path.resolve(__dirname, '..');
const BUILD = process.env.SHMLIMIT_BUILD || path.join(ROOT, 'build');
const mode = process.argv[2] || 'quick';
const outDir = process.argv[3] || path.join(BUILD, 'bench');
const md = path.join(outDir, 'results.md');
const csv = path.join(outDir, 'results.csv');
const TITLE = '## 8. Node.js package cost (N-API addon, governedFetch against the local mock)';

function note(s = '') {
  process.stdout.write(`${s}\n`);
  if (fs.existsSync(md)) fs.appendFileSync(md, `${s}\n`);
}
function csvLine(s) {
  if (fs.existsSync(csv)) fs.appendFileSync(csv, `${s}\n`);
}
function skip(why) {
  note(TITLE);
  note();
  note(`Skipped: ${why}.`);
  note();
  process.exit(0);
}

const MOCK = path.join(BUILD, 'shmlimit-mock');
const ADDON = path.join(BUILD, 'node', 'shmlimit.node');
if (!fs.existsSync(ADDON)) skip(`${ADDON} is not built (node_api.h missing?)`);
if (!fs.existsSync(MOCK)) skip(`${MOCK} is not built`);
let shl;
try {
  shl = require(path.join(ROOT, 'node'));
  void shl.addon; /* loads it, or throws why not */
} catch (e) {
  skip(`the addon does not load: ${e.message}`);
}

const quick = mode !== 'full';
const CALLS = quick ? 300000 : 2000000;
const ROUNDS = quick ? 5 : 9;
const REQS = quick ? 200 : 1000;

const BIG = 1e12;
const config = {
  spend_cap_usd: null,
  pools: [{ name: 'bench', rpm: BIG, itpm: BIG, otpm: BIG,
            prices: { input: 3, output: 15, cache_write_5m: 3.75, cache_write_1h: 6, cache_read: 0.3 } }],
  models: [{ match: 'claude-*', pool: 'bench' }],
};

/* ns per iteration of fn(i) over n iterations */
function time(n, fn) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn(i);
  return Number(process.hrtime.bigint() - t0) / n;
}

function median(a) {
  const s = [...a].sort((x, y) => x - y);
  return s[s.length >> 1];
}

async function startMock(tmp) {
  const portFile = path.join(tmp, 'port');
  const child = spawn(MOCK, ['--port', '0', '--port-file', portFile, '--max-seconds', '600',
                             '--max-requests', String(REQS * ROUNDS * 2 + 100)],
                      { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((r) => child.on('exit', r));
  for (let i = 0; i < 500; i++) {
    try {
      const t = fs.readFileSync(portFile, 'utf8').trim();
      if (t) return { port: Number(t), stop: async () => { child.kill('SIGTERM'); await exited; } };
    } catch { /* not yet */ }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGTERM');
  return null;
}

async function main() {
  const seg = `shmlimit-bench-node-${process.pid}`;
  const tmp = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'shl-node-bench-'));
  let mock = null;
  try {
    shl.create(seg, config, { replace: true });
    const a = shl.addon;
    const lim = new shl.Limiter(seg);
    const h = lim._h;
    const m = a.lookup(h, 'claude-sonnet-4-5');

    /* 1. N-API: warm up, then alternate */
    const bare = () => { a.noop(h, m); a.noop(h, m); };
    const io = lim._io();
    const raw = () => {
      io[8] = 100; io[9] = 0; io[10] = 0; io[11] = 0; io[12] = 64; io[13] = 0; io[14] = 0;
      const s = a.reserve(h, m);
      io[8] = 100; io[9] = 20; io[10] = 0; io[11] = 0; io[12] = 0;
      a.settle(s);
    };
    const api = () => {
      lim.tryAcquire('claude-sonnet-4-5', { inputTokens: 100, maxTokens: 64 })
        .settle({ input_tokens: 100, output_tokens: 20 });
    };
    time(CALLS / 10, bare); time(CALLS / 10, raw); time(CALLS / 10, api);
    const best = { bare: Infinity, raw: Infinity, api: Infinity };
    for (let r = 0; r < ROUNDS; r++) {
      best.bare = Math.min(best.bare, time(CALLS, bare));
      best.raw = Math.min(best.raw, time(CALLS, raw));
      best.api = Math.min(best.api, time(CALLS, api));
    }
    let cns = Infinity; /* the same pair looped in C, no N-API */
    for (let r = 0; r < ROUNDS; r++) cns = Math.min(cns, a.cLoop(h, m, CALLS));
    const st = lim.stats().pools[0].counters;
    const expect = (CALLS / 10 + CALLS * ROUNDS) * 2 + CALLS * ROUNDS;

    /* 2. per governed request against the mock */
    mock = await startMock(tmp);
    if (!mock) throw new Error('the mock did not start');
    const url = `http://127.0.0.1:${mock.port}/v1/messages`;
    const gf = shl.governedFetch(fetch, { segment: seg, hosts: `127.0.0.1:${mock.port}` });
    const bodyText = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 64,
                                      messages: [{ role: 'user', content: 'hello' }] });
    const init = { method: 'POST', body: bodyText,
                   headers: { 'content-type': 'application/json', 'x-api-key': 'bench',
                              'anthropic-version': '2023-06-01' } };
    let fails = 0;
    async function one(f) {
      const t0 = performance.now();
      const res = await f(url, init);
      await res.arrayBuffer();
      if (res.status !== 200) fails++;
      return performance.now() - t0;
    }
    for (let i = 0; i < 20; i++) { await one(fetch); await one(gf); }
    const settled0 = lim.stats().pools[0].counters.settled;
    const lat = { plain: [], gov: [] };
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < REQS / ROUNDS; i++) {
        lat.plain.push(await one(fetch));
        lat.gov.push(await one(gf));
      }
    }
    const governed = lim.stats().pools[0].counters.settled - settled0;
    const n = lat.gov.length;
    const mp = median(lat.plain) * 1000;
    const mg = median(lat.gov) * 1000;

    note(TITLE);
    note();
    note(`Node ${process.version}; ${CALLS} call pairs per round, best of ${ROUNDS} rounds, alternating.`);
    note();
    note('| through N-API | ns per pair | x bare pair |');
    note('|---|---:|---:|');
    note(`| bare call pair of a no-op C function (noop, noop) | ${best.bare.toFixed(1)} | 1.00 |`);
    note(`| admit + settle, addon calls (reserve, settle) | ${best.raw.toFixed(1)} | ${(best.raw / best.bare).toFixed(2)} |`);
    note(`| admit + settle, JS API (tryAcquire, Ticket.settle) | ${best.api.toFixed(1)} | ${(best.api / best.bare).toFixed(2)} |`);
    note(`| reference: shl_reserve + shl_settle looped in C, no N-API | ${cns.toFixed(1)} | ${(cns / best.bare).toFixed(2)} |`);
    note();
    note(`Target: admit + settle within 3x of the bare pair: addon calls ${best.raw / best.bare <= 3 ? 'met' : 'MISSED'}, JS API ${best.api / best.bare <= 3 ? 'met' : 'MISSED'}. ` +
         `What the binding adds over the library's own work: addon calls ${(best.raw - cns).toFixed(1)} ns ` +
         `(${((best.raw - cns) / best.bare).toFixed(2)}x the bare pair), JS API ${(best.api - cns).toFixed(1)} ns. ` +
         `Admitted ${st.admitted}, settled ${st.settled} of ${expect}.`);
    note();
    note('| fetch against the local mock (keep-alive, one at a time) | requests | median us | added us |');
    note('|---|---:|---:|---:|');
    note(`| global fetch | ${n} | ${mp.toFixed(1)} | |`);
    note(`| governedFetch(fetch) | ${n} | ${mg.toFixed(1)} | ${(mg - mp).toFixed(1)} |`);
    note();
    note(`Requests governed (segment's settled count): ${governed} of ${n}; non-200 replies: ${fails}.`);
    note();
    csvLine(`node,napi,bare-pair,1,ns_per_pair,${best.bare.toFixed(3)},ns`);
    csvLine(`node,napi,admit-settle-addon,1,ns_per_pair,${best.raw.toFixed(3)},ns`);
    csvLine(`node,napi,admit-settle-addon,1,ratio_over_bare_pair,${(best.raw / best.bare).toFixed(4)},x`);
    csvLine(`node,napi,admit-settle-api,1,ns_per_pair,${best.api.toFixed(3)},ns`);
    csvLine(`node,napi,admit-settle-api,1,ratio_over_bare_pair,${(best.api / best.bare).toFixed(4)},x`);
    csvLine(`node,c,admit-settle,1,ns_per_pair,${cns.toFixed(3)},ns`);
    csvLine(`node,fetch,plain,1,us_per_request_median,${mp.toFixed(3)},us`);
    csvLine(`node,fetch,governed,1,us_per_request_median,${mg.toFixed(3)},us`);
    csvLine(`node,fetch,governed,1,us_added_median,${(mg - mp).toFixed(3)},us`);
    lim.close();
    if (governed !== n || fails !== 0 || st.settled !== expect) {
      note('WARNING: not every request was governed, or some failed; the figures above are not the cost.');
      process.exitCode = 1;
    }
  } finally {
    if (mock) await mock.stop();
    try { shl.unlink(seg); } catch { /* gone */ }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  note(`node-cost: ${e.stack || e}`);
  process.exitCode = 1;
});
