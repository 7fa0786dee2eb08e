'use strict';
/*
 * sdk.test.js - the real TypeScript SDK (@anthropic-ai/sdk, from npm at the
 * version of package-lock.json) through governedFetch, against the mock
 * with the same limits as the segment: at saturation no request gets a
 * server 429, and the segment's settled counters equal the server's usage
 * exactly, streaming and not.
 */
const assert = require('node:assert/strict');
const { test } = require('node:test');
const Anthropic = require('@anthropic-ai/sdk');
const { shmlimit, newSegment, startMock, poolStats, fleetConfig } = require('./helpers');

const { governedFetch } = shmlimit;

function client(m, seg, extra = {}) {
  return new Anthropic({
    apiKey: 'test-key',
    baseURL: m.url,
    maxRetries: 0, /* a server 429 must show, not be retried away */
    fetch: governedFetch(fetch, { segment: seg, hosts: m.host, ...extra }),
  });
}

const words = (n) => Array.from({ length: n }, () => 'tok').join(' ');

test('SDK at saturation, JSON and SSE: zero server 429s, settlement equals the server usage', async () => {
  const m = await startMock();
  const seg = newSegment();
  const c = client(m, seg);
  const N = 12; /* of each kind; sonnet admits 5 at once, then 5 a second */
  const jobs = [];
  for (let i = 0; i < N; i++) {
    const text = `Question ${i}: ${'why is the sky blue? '.repeat(1 + (i % 7))}`;
    const maxTokens = 5 + (i % 30);
    jobs.push(c.messages.create({
      model: 'claude-sonnet-4-5', max_tokens: maxTokens,
      messages: [{ role: 'user', content: text }],
    }).then((r) => {
      assert.equal(r.content[0].text, words(r.usage.output_tokens));
      return 'json';
    }));
    jobs.push((async () => {
      const s = await c.messages.create({
        model: 'claude-sonnet-4-5-20250929', max_tokens: maxTokens, stream: true,
        system: 'You answer briefly.', messages: [{ role: 'user', content: `${text} (stream)` }],
      });
      let out = '';
      let usage = null;
      for await (const ev of s) {
        if (ev.type === 'content_block_delta') out += ev.delta.text;
        if (ev.type === 'message_delta') usage = ev.usage;
      }
      assert.equal(out, words(usage.output_tokens));
      return 'sse';
    })());
    if (i % 6 === 0) { /* the SDK's MessageStream helper too */
      jobs.push(c.messages.stream({
        model: 'claude-sonnet-4-5', max_tokens: 12,
        messages: [{ role: 'user', content: `helper ${i}` }],
      }).finalMessage().then((r) => {
        assert.equal(r.content[0].text, words(r.usage.output_tokens));
        return 'helper';
      }));
    }
  }
  const kinds = await Promise.all(jobs);
  const total = kinds.length;

  const ms = await m.stats();
  assert.equal(ms.rate_limited, 0, 'server 429s');
  assert.equal(ms.by_status['200'], total);
  const p = poolStats(seg, 'sonnet');
  assert.equal(p.admitted, total);
  assert.equal(p.settled, total);
  assert.equal(p.cancelled, 0);
  assert.equal(p.server_429, 0);
  /* saturated: most requests could not go at once (a place in line counts
   * as waited; a library admitting with shl_try counts refusals instead) */
  assert.ok(p.waited + p.refused > total / 2,
            `waited ${p.waited}, refused ${p.refused} of ${total}: not saturated`);
  assert.equal(p.input, ms.usage.input_tokens);
  assert.equal(p.output, ms.usage.output_tokens);
  assert.equal(p.input, ms.by_pool.sonnet.input_tokens);
});

test('a stream the application stops reading early still settles', async () => {
  const m = await startMock();
  const seg = newSegment();
  const c = client(m, seg);
  const s = await c.messages.create({
    model: 'claude-sonnet-4-5', max_tokens: 200, stream: true,
    messages: [{ role: 'user', content: 'a long answer, please' }],
  }, { headers: { 'x-mock-output-tokens': '150' } });
  let input = -1;
  for await (const ev of s) {
    if (ev.type === 'message_start') input = ev.message.usage.input_tokens;
    break; /* the SDK aborts the request */
  }
  assert.ok(input > 0);
  /* The abort reaches the body's reader asynchronously: bounded poll. */
  let p = poolStats(seg, 'sonnet');
  for (let i = 0; i < 250 && p.settled === 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    p = poolStats(seg, 'sonnet');
  }
  assert.equal(p.admitted, 1);
  assert.equal(p.settled, 1, 'the stream was settled');
  assert.equal(p.cancelled, 0, 'it was sent: settled, not cancelled');
  assert.equal(p.input, input, 'with the input message_start reported');
});

test('a response body the application never reads settles when it is collected', {
  skip: typeof global.gc !== 'function' && 'needs --expose-gc',
}, async () => {
  const m = await startMock();
  const seg = newSegment();
  const gf = governedFetch(fetch, { segment: seg, hosts: m.host });
  await (async () => {
    const r = await gf(`${m.url}/v1/messages`, {
      method: 'POST',
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 10,
                             messages: [{ role: 'user', content: 'never read' }] }),
    });
    assert.equal(r.status, 200);
  })();
  let p = poolStats(seg, 'sonnet');
  for (let i = 0; i < 100 && p.settled === 0; i++) {
    global.gc();
    await new Promise((r) => setTimeout(r, 20));
    p = poolStats(seg, 'sonnet');
  }
  assert.equal(p.settled, 1);
});

test('a server 429 through the SDK: counted, and the pool held for its retry-after', async () => {
  const m = await startMock();
  const seg = newSegment();
  const c = client(m, seg);
  await assert.rejects(c.messages.create({
    model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }],
  }, { headers: { 'x-mock-fail': '429', 'x-mock-retry-after': '30' } }),
  (e) => e instanceof Anthropic.RateLimitError && e.status === 429);
  const ms = await m.stats();
  assert.equal(ms.scripted_429, 1);
  const p = poolStats(seg, 'sonnet');
  assert.equal(p.server_429, 1);
  assert.equal(p.settled + p.cancelled, 1);
  const lim = new shmlimit.Limiter(seg);
  assert.throws(() => lim.tryAcquire('claude-sonnet-4-5', { inputTokens: 1 }),
                (e) => e.dim === 'hold' && e.waitMs > 20000);
  lim.close();
});

test('a request that can never be admitted is answered locally and not sent', async () => {
  const m = await startMock();
  const seg = newSegment();
  const c = client(m, seg);
  /* tight: ITPM capacity 1000; 8000 characters are 2000 tokens */
  await assert.rejects(c.messages.create({
    model: 'claude-tight', max_tokens: 10, messages: [{ role: 'user', content: 'x'.repeat(8000) }],
  }), (e) => {
    assert.ok(e instanceof Anthropic.RateLimitError, String(e));
    assert.equal(e.headers.get('x-shmlimit-refused'), 'itpm');
    assert.equal(e.headers.get('x-should-retry'), 'false');
    assert.match(e.message, /can never be admitted/);
    return true;
  });
  /* the spend cap: the API's own error code */
  const seg2 = newSegment(fleetConfig({ spend_cap_usd: 0.01 }));
  const c2 = client(m, seg2, { refusal: 'response' });
  await assert.rejects(c2.messages.create({
    model: 'claude-sonnet-4-5', max_tokens: 10000, messages: [{ role: 'user', content: 'hi' }],
  }), (e) => e.status === 429 && e.error.error.details.error_code === 'enforced_spend_limit_reached');
  /* refusal: 'raise' rejects the fetch itself */
  const gf = governedFetch(fetch, { segment: seg, hosts: m.host, refusal: 'raise' });
  await assert.rejects(gf(`${m.url}/v1/messages`, {
    method: 'POST',
    body: JSON.stringify({ model: 'claude-tight', max_tokens: 1,
                           messages: [{ role: 'user', content: 'y'.repeat(8000) }] }),
  }), (e) => e instanceof shmlimit.RefusedError && e.code === 'E2BIG');
  const ms = await m.stats();
  assert.equal(ms.requests, 0, 'nothing reached the server');
});

test('a wait past SHMLIMIT_WAIT_MS is a local 429 with the wait as retry-after-ms', async () => {
  const m = await startMock();
  const seg = newSegment();
  const lim = new shmlimit.Limiter(seg);
  const held = [];
  for (let i = 0; i < 5; i++) held.push(lim.tryAcquire('claude-sonnet-4-5', { inputTokens: 1 }));
  const c = client(m, seg, { waitMs: 0 });
  await assert.rejects(c.messages.create({
    model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }],
  }), (e) => {
    assert.equal(e.status, 429);
    assert.equal(e.headers.get('x-shmlimit-refused'), 'rpm');
    assert.ok(Number(e.headers.get('retry-after-ms')) > 0);
    assert.equal(e.headers.get('x-should-retry'), null);
    return true;
  });
  for (const t of held) t.cancel();
  lim.close();
  assert.equal((await m.stats()).requests, 0);
});

test('every shape of fetch input is read without being consumed', async () => {
  const m = await startMock();
  const seg = newSegment();
  const gf = governedFetch(fetch, { segment: seg, hosts: m.host, refusal: 'raise' });
  const text = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5,
                                messages: [{ role: 'user', content: 'shapes' }] });
  const url = `${m.url}/v1/messages`;
  const rs = [
    await gf(url, { method: 'POST', body: text }),
    await gf(new URL(url), { method: 'post', body: new TextEncoder().encode(text) }),
    await gf(new Request(url, { method: 'POST', body: text })),
    await gf(url, { method: 'POST', body: new Blob([text]) }),
    await gf(url, { method: 'POST', body: new TextEncoder().encode(text).buffer }),
  ];
  for (const r of rs) {
    assert.equal(r.status, 200);
    assert.equal((await r.json()).usage.output_tokens, 5);
  }
  const p = poolStats(seg, 'sonnet');
  assert.equal(p.settled, rs.length);
  const ms = await m.stats();
  assert.equal(ms.by_status['200'], rs.length);
  assert.equal(p.input, ms.usage.input_tokens);
});

test('count_tokens is governed when the configuration has its entry', async () => {
  const cfg = fleetConfig();
  cfg.pools.push({ name: 'counting', rpm: 600, itpm: 1000000, otpm: 1000000,
                   prices: { input: 0, output: 0, cache_write_5m: 0, cache_write_1h: 0, cache_read: 0 } });
  cfg.models.push({ match: 'count_tokens', pool: 'counting' });
  const m = await startMock();
  const seg = newSegment(cfg);
  const c = client(m, seg);
  const r = await c.messages.countTokens({
    model: 'claude-sonnet-4-5', messages: [{ role: 'user', content: 'how many tokens is this?' }],
  });
  assert.ok(r.input_tokens > 0);
  const p = poolStats(seg, 'counting');
  assert.equal(p.admitted, 1);
  assert.equal(p.settled, 1);
  assert.equal(poolStats(seg, 'sonnet').admitted, 0, 'not charged to the model\'s pool');
});
