'use strict';
/*
 * limiter.test.js - the explicit API: Limiter, acquire, tickets, errors,
 * statistics, against a segment (no server).
 */
const assert = require('node:assert/strict');
const { test } = require('node:test');
const { shmlimit, fleetConfig, newSegment, poolStats } = require('./helpers');

const { Limiter, RefusedError, ShmlimitError } = shmlimit;

test('acquire and settle count exactly, in the pool of the model', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  const tickets = await Promise.all([1, 2, 3].map(() =>
    lim.acquire('claude-sonnet-4-5', { inputTokens: 100, maxTokens: 50 })));
  for (const t of tickets) assert.equal(t.open, true);
  tickets[0].settle({ input_tokens: 90, output_tokens: 40 });
  tickets[1].settle({ inputTokens: 10, outputTokens: 5 });
  tickets[2].cancel();
  assert.equal(tickets[0].open, false);
  const p = poolStats(seg, 'sonnet');
  assert.equal(p.admitted, 3);
  assert.equal(p.settled, 2);
  assert.equal(p.cancelled, 1);
  assert.equal(p.input, 100);
  assert.equal(p.output, 45);
  assert.equal(poolStats(seg, 'haiku').admitted, 0);
  lim.close();
});

test('settle accepts a response usage with its cache breakdown', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  const t = await lim.acquire('claude-sonnet-4-5', { inputTokens: 100, maxTokens: 50 });
  t.settle({
    input_tokens: 7, output_tokens: 3, cache_creation_input_tokens: 30,
    cache_read_input_tokens: 11,
    cache_creation: { ephemeral_5m_input_tokens: 10, ephemeral_1h_input_tokens: 20 },
  });
  const p = poolStats(seg, 'sonnet');
  assert.equal(p.cache_write, 30);
  assert.equal(p.cache_read, 11);
  lim.close();
});

test('a ticket settles once', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  const t = await lim.acquire('claude-sonnet-4-5', { inputTokens: 1, maxTokens: 1 });
  t.settle({ input_tokens: 1, output_tokens: 1 });
  assert.throws(() => t.settle({}), (e) => e instanceof ShmlimitError && e.code === 'EALREADY');
  assert.throws(() => t.cancel(), (e) => e.code === 'EALREADY');
  lim.close();
});

test('requests wait their turn: the burst goes at once, the rest at the rate', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  /* sonnet: burst 5, then 5 a second: 3 of 8 must wait */
  const ts = await Promise.all(Array.from({ length: 8 }, () =>
    lim.acquire('claude-sonnet-4-5', { inputTokens: 1, maxTokens: 1 })));
  for (const t of ts) t.settle({ input_tokens: 1, output_tokens: 1 });
  const p = poolStats(seg, 'sonnet');
  assert.equal(p.admitted, 8);
  assert.ok(p.waited >= 3, `waited ${p.waited}`);
  lim.close();
});

test('tryAcquire refuses with the wait when the pool is empty', () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  const held = [];
  for (let i = 0; i < 5; i++) held.push(lim.tryAcquire('claude-sonnet-4-5', { inputTokens: 1 }));
  assert.throws(() => lim.tryAcquire('claude-sonnet-4-5', { inputTokens: 1 }), (e) => {
    assert.ok(e instanceof RefusedError);
    assert.equal(e.code, 'ETIMEDOUT');
    assert.equal(e.dim, 'rpm');
    assert.equal(e.pool, 'sonnet');
    assert.equal(e.retryable, true);
    assert.ok(e.waitMs > 0 && e.waitMs <= 201, `waitMs ${e.waitMs}`); /* 200 ms and the jitter margin */
    return true;
  });
  for (const t of held) t.cancel();
  lim.close();
});

test('a wait past timeoutMs is refused, nothing taken', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  const held = [];
  for (let i = 0; i < 5; i++) held.push(lim.tryAcquire('claude-sonnet-4-5', { inputTokens: 1 }));
  await assert.rejects(lim.acquire('claude-sonnet-4-5', { inputTokens: 1, timeoutMs: 20 }),
                       (e) => e.code === 'ETIMEDOUT' && e.waitMs > 20);
  assert.equal(poolStats(seg, 'sonnet').admitted, 5);
  for (const t of held) t.cancel();
  lim.close();
});

test('too large for a bucket: E2BIG, not retryable', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  await assert.rejects(lim.acquire('claude-tight', { inputTokens: 5000 }), (e) => {
    assert.equal(e.code, 'E2BIG');
    assert.equal(e.dim, 'itpm');
    assert.equal(e.need, 5000);
    assert.equal(e.capacity, 1000);
    assert.equal(e.retryable, false);
    return true;
  });
  lim.close();
});

test('the spend cap: EDQUOT', async () => {
  const seg = newSegment(fleetConfig({ spend_cap_usd: 0.01 }));
  const lim = new Limiter(seg);
  /* 10,000 output tokens at 15 USD per million: 0.15 USD, over the cap */
  await assert.rejects(lim.acquire('claude-sonnet-4-5', { inputTokens: 1, maxTokens: 10000 }),
                       (e) => e.code === 'EDQUOT' && e.dim === 'spend' && !e.retryable);
  lim.close();
});

test('a model without a pool: ESRCH', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  await assert.rejects(lim.acquire('gpt-4o', { inputTokens: 1 }), (e) => e.code === 'ESRCH');
  lim.close();
});

test('an aborted wait rejects with the reason and gives its place back', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  const held = [];
  for (let i = 0; i < 5; i++) held.push(lim.tryAcquire('claude-sonnet-4-5', { inputTokens: 1 }));
  const ac = new AbortController();
  const p = lim.acquire('claude-sonnet-4-5', { inputTokens: 1, signal: ac.signal });
  setImmediate(() => ac.abort(new Error('stop waiting')));
  await assert.rejects(p, /stop waiting/);
  const s = poolStats(seg, 'sonnet');
  assert.equal(s.admitted - s.cancelled, 5, 'the aborted request holds nothing');
  for (const t of held) t.cancel();
  lim.close();
});

test('attach errors carry the library code', () => {
  assert.throws(() => new Limiter(`shl-node-test-missing-${process.pid}`),
                (e) => e.code === 'ENOENT' && /no such segment/.test(e.message));
  assert.throws(() => new Limiter('bad name!'), (e) => e.code === 'ENAMETOOLONG');
});

test('a read-only limiter reads statistics and cannot admit', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg, { readOnly: true });
  const s = lim.stats();
  assert.deepEqual(s.pools.map((p) => p.name), ['sonnet', 'haiku', 'tight']);
  assert.equal(s.spend.cap_usd, 100);
  await assert.rejects(lim.acquire('claude-sonnet-4-5', { inputTokens: 1 }),
                       (e) => e.code === 'EACCES');
  lim.close();
});

test('close waits for open tickets', async () => {
  const seg = newSegment();
  const lim = new Limiter(seg);
  const t = await lim.acquire('claude-sonnet-4-5', { inputTokens: 3, maxTokens: 1 });
  lim.close();
  assert.throws(() => lim.stats(), /invalid argument/);
  t.settle({ input_tokens: 3, output_tokens: 1 }); /* still settles through the handle */
  const p = poolStats(seg, 'sonnet');
  assert.equal(p.settled, 1);
  assert.equal(p.input, 3);
});
