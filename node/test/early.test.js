'use strict';
/*
 * early.test.js - governedFetch's early release (node/addon.c, "Early
 * release"): a request that settles below its estimate moves the requests
 * of its line (segment handle and pool) that were placed after it and still
 * wait, sooner by exactly what its settle gave back; nothing else moves
 * them.
 *
 * The pool: ITPM 3000 a minute with margin 0 (20 ms a token, exactly) and a
 * burst of 1500 tokens (a tolerance of 30 s).  RPM never binds: a place
 * reserved ahead takes its RPM unit at its release, so that bucket lets it
 * go no sooner than its tolerance less one interval before the release
 * (shl_ex_place's edge), which a burst of 600 puts at 59.9 s.  A body of
 * 4N ASCII characters is estimated at N tokens times the fresh pool's prior
 * of 1.25 (preload/README.md, "What a request is charged at admission").
 * A filler ticket of 500 tokens (Limiter, another handle: in no line of
 * governedFetch) and request A (1000) empty the bucket; A's take ends 30 s
 * ahead.  Every request placed behind A is released before that end, so a
 * settle of A gives its whole surplus back (README.md, "Refunds never
 * over-credit": nothing placed after it lies past its end less the give).
 * The mock (no limits) counts what x-mock-usage says.
 *
 * No assertion is on elapsed time: the shifts are exact nanoseconds, read
 * from the addon (shmlimit._traceEarly), and "sent before its first
 * release" compares with a release 8 s or more ahead.  Waiters that would
 * otherwise wait are aborted, so each test takes well under a second.
 */
const assert = require('node:assert/strict');
const { test } = require('node:test');
const { shmlimit, newSegment, startMock, poolStats, body } = require('./helpers');

const NS_PER_TOKEN = 20e6; /* ITPM 3000 a minute */
const prices = { input: 3, output: 15, cache_write_5m: 3.75, cache_write_1h: 6, cache_read: 0.3 };
const pool = (name) => ({ name, rpm: 600, itpm: 3000, otpm: 1000000,
                          burst: { rpm: 600, itpm: 1500 }, margin: 0, prices });
const config = {
  pools: [pool('early'), pool('other')],
  models: [{ match: 'claude-early*', pool: 'early' }, { match: 'claude-other*', pool: 'other' }],
};

/* A request body a fresh pool estimates at `tokens` (a multiple of 5):
 * tokens / 1.25 raw, four characters each. */
const sized = (model, tokens) => body(model, 'a'.repeat((tokens / 1.25) * 4));

/* Empty `seg`'s pool of `model` by `tokens` with a ticket no line knows. */
function filler(seg, model, tokens) {
  const lim = new shmlimit.Limiter(seg);
  const t = lim.tryAcquire(model, { inputTokens: tokens });
  return { done() { t.cancel(); lim.close(); } };
}

/* Start a governed request; resolves to its Response (or rejects). */
function send(gf, m, model, tokens, { usage, signal } = {}) {
  const headers = usage ? { 'x-mock-usage': usage } : {};
  return gf(`${m.url}/v1/messages`, { method: 'POST', body: sized(model, tokens), headers, signal });
}

/* The trace's record of the request for `model` (each test names its
 * requests by model), once it has taken its place. */
async function placed(trace, model) {
  const find = () => [...trace.values()].find((r) => r.what.endsWith(` model ${model}`));
  for (let i = 0; i < 500 && !find(); i++) await new Promise(setImmediate);
  const r = find();
  assert.ok(r, `${model} took no place`);
  return r;
}

async function aborted(p, ctl) {
  ctl.abort();
  await assert.rejects(p, (e) => e.name === 'AbortError');
}

/* A mock, a segment, the trace of this environment's places (stopped
 * after the test) and a governedFetch on them: each test's start. */
async function early(t) {
  const m = await startMock(null);
  const seg = newSegment(config);
  const trace = shmlimit._traceEarly(true);
  t.after(() => shmlimit._traceEarly(false));
  const gf = shmlimit.governedFetch(fetch, { segment: seg, hosts: m.host, waitMs: -1 });
  return { m, seg, trace, gf };
}

test('a settle below the estimate moves the waiting requests placed after it by exactly its give; a later one\'s cancel moves nothing', async (t) => {
  const { m, seg, trace, gf } = await early(t);
  const lim = new shmlimit.Limiter(seg, { readOnly: true });
  assert.equal(lim.stats().pools[0].estimate.ratio, 1.25, 'the prior');
  lim.close();
  const fill = filler(seg, 'claude-early-x', 500);

  /* A goes at once and is answered; its body, not yet read, settles it */
  const resA = await send(gf, m, 'claude-early-a', 1000, { usage: '700,5,0,0,0' });
  assert.equal(resA.status, 200);
  const a = await placed(trace, 'claude-early-a');
  assert.ok(a.delayNs <= 0 && a.startedAt !== null, 'A went at once');
  /* B (1000) waits 20 s behind A in ITPM, C (100) 22 s behind B */
  const ctlB = new AbortController();
  const ctlC = new AbortController();
  const pB = send(gf, m, 'claude-early-b', 1000, { signal: ctlB.signal });
  const b = await placed(trace, 'claude-early-b');
  const pC = send(gf, m, 'claude-early-c', 100, { signal: ctlC.signal });
  const c = await placed(trace, 'claude-early-c');
  assert.ok(b.seq > a.seq && c.seq > b.seq, 'placed in order');
  assert.ok(b.delayNs > 15e9, `B waits ${b.delayNs} ns`);
  assert.ok(c.delayNs > b.delayNs, `C waits ${c.delayNs} ns`);

  /* A's settle: 700 counted of the 1000 estimated, 300 tokens given back */
  const give = (1000 - 700) * NS_PER_TOKEN;
  await resA.text();
  assert.deepEqual(b.moves.map((v) => v.shiftNs), [give], 'B moved by A\'s give');
  assert.deepEqual(c.moves.map((v) => v.shiftNs), [give], 'C moved by A\'s give');
  assert.ok(b.moves[0].delayNs <= b.delayNs - give, 'B\'s new delay');
  assert.equal(b.startedAt, null, 'B still waits');
  assert.deepEqual(a.moves, []);

  /* C, placed after B, gives its place back: no room before B */
  await aborted(pC, ctlC);
  const p = poolStats(seg, 'early');
  assert.equal(p.cancelled, 1, 'C was cancelled (its place given back)');
  assert.equal(b.moves.length, 1, 'B is not moved by the give of a request placed after it');
  assert.equal(b.startedAt, null);

  await aborted(pB, ctlB);
  fill.done();
  const ms = await m.stats();
  assert.equal(ms.requests, 1, 'only A was sent');
});

test('a give larger than the wait releases the waiting request at once, long before its first release', async (t) => {
  const { m, seg, trace, gf } = await early(t);
  const fill = filler(seg, 'claude-early-x', 500);
  const resA = await send(gf, m, 'claude-early-a', 1000, { usage: '10,5,0,0,0' });
  /* B (400) waits 8 s; A's settle gives 990 tokens, 19.8 s */
  const pB = send(gf, m, 'claude-early-b', 400, { usage: '300,5,0,0,0' });
  const b = await placed(trace, 'claude-early-b');
  assert.ok(b.delayNs > 7e9, `B waits ${b.delayNs} ns`);
  await resA.text();
  assert.equal(b.moves.length, 1, 'B moved');
  assert.ok(b.moves[0].delayNs <= 0, `B is due now (${b.moves[0].delayNs} ns)`);
  assert.ok(b.moves[0].shiftNs > 0 && b.moves[0].shiftNs <= 990 * NS_PER_TOKEN);
  const resB = await pB;
  assert.equal(resB.status, 200);
  await resB.text();
  assert.ok(b.startedAt !== null && b.startedAt < b.releaseAt,
            `B was sent at ${b.startedAt} ms, its first release ${b.releaseAt} ms`);
  fill.done();
  const p = poolStats(seg, 'early');
  assert.equal(p.settled, 2);
  assert.equal(p.input, 310);
  assert.equal((await m.stats()).requests, 2);
});

test('only the line moves: not another pool of the segment, not the same pool of another segment', async (t) => {
  const { m, seg, trace, gf } = await early(t);
  const seg2 = newSegment(config);
  const gf2 = shmlimit.governedFetch(fetch, { segment: seg2, hosts: m.host, waitMs: -1 });
  const fills = [filler(seg, 'claude-early-x', 500), filler(seg, 'claude-other-x', 1500),
                 filler(seg2, 'claude-early-x', 1500)];
  const resA = await send(gf, m, 'claude-early-a', 1000, { usage: '700,5,0,0,0' });
  /* each waits 20 s, placed after A: B in A's line, W1 in the segment's
   * other pool, W2 in the same pool (index 0) of another segment */
  const waits = [[gf, 'claude-early-b'], [gf, 'claude-other-w1'], [gf2, 'claude-early-w2']]
    .map(([f, model]) => {
      const ctl = new AbortController();
      return { ctl, p: send(f, m, model, 1000, { signal: ctl.signal }), model };
    });
  const [b, w1, w2] = await Promise.all(waits.map((w) => placed(trace, w.model)));
  for (const r of [b, w1, w2]) assert.ok(r.delayNs > 15e9, `${r.what} waits ${r.delayNs} ns`);
  /* W1's and W2's fillers give their places back (unseen by any line): their
   * words would now let them go sooner, so only the line rule keeps A's
   * give from moving them */
  fills[1].done();
  fills[2].done();
  await resA.text();
  assert.deepEqual(b.moves.map((v) => v.shiftNs), [300 * NS_PER_TOKEN], 'B, in A\'s line, moved');
  assert.deepEqual(w1.moves, [], 'another pool: not moved');
  assert.deepEqual(w2.moves, [], 'another segment: not moved');
  for (const w of waits) await aborted(w.p, w.ctl);
  fills[0].done();
});

test('a request released by a hold, not by a bucket, is not moved', async (t) => {
  const { m, seg, trace, gf } = await early(t);
  const fill = filler(seg, 'claude-early-x', 500);
  const resA = await send(gf, m, 'claude-early-a', 1000, { usage: '700,5,0,0,0' });
  /* a server 429 holds the pool for 10 s */
  const r429 = await gf(`${m.url}/v1/messages`, {
    method: 'POST', body: sized('claude-early-r', 5),
    headers: { 'x-mock-fail': '429', 'x-mock-retry-after': '10' },
  });
  assert.equal(r429.status, 429);
  await r429.text();
  /* B (100) would wait 2 s behind A in ITPM; the hold makes it 10 s */
  const ctlB = new AbortController();
  const pB = send(gf, m, 'claude-early-b', 100, { signal: ctlB.signal });
  const b = await placed(trace, 'claude-early-b');
  assert.ok(b.delayNs > 8e9, `B waits ${b.delayNs} ns`);
  await resA.text();
  assert.deepEqual(b.moves, [], 'a hold set B\'s release: A\'s give does not move it');
  await aborted(pB, ctlB);
  fill.done();
});
