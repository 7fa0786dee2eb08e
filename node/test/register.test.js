'use strict';
/*
 * register.test.js - no code change: workers written against the SDK
 * alone, governed by NODE_OPTIONS=--require node/register.js, and the
 * ways it fails open (the request runs as without it, one stderr line).
 */
const assert = require('node:assert/strict');
const path = require('node:path');
const { test } = require('node:test');
const fs = require('node:fs');
const { REGISTER, tmp, newSegment, startMock, poolStats, runNode, body } = require('./helpers');

const WORKER = path.join(__dirname, 'fixtures', 'sdk-worker.js');
const CLIENT = path.join(__dirname, 'fixtures', 'fetch-client.js');
const PRELOAD = { NODE_OPTIONS: `--require ${REGISTER}` };

const lines = (s) => s.split('\n').filter((l) => l.length > 0);

async function client(m, reqs, env) {
  const r = await runNode([CLIENT, JSON.stringify(reqs)], { MOCK_URL: m.url, ...env });
  assert.equal(r.code, 0, r.stderr);
  return { res: JSON.parse(r.stdout), stderr: r.stderr };
}

test('two SDK workers, no code change: zero server 429s, settlement equals the server usage', async () => {
  const m = await startMock();
  const seg = newSegment();
  const env = { ...PRELOAD, SHMLIMIT_SEGMENT: seg, SHMLIMIT_HOSTS: m.host, MOCK_URL: m.url, N: '8' };
  const [a, b] = await Promise.all([runNode([WORKER], env), runNode([WORKER], env)]);
  for (const r of [a, b]) {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '', 'nothing on stderr');
    const o = JSON.parse(r.stdout);
    assert.deepEqual(o.failed, []);
    assert.equal(o.ok, 16);
  }
  const ms = await m.stats();
  assert.equal(ms.rate_limited, 0, 'server 429s');
  assert.equal(ms.by_status['200'], 32);
  /* the same workers ungoverned: the server refuses them (the check above can fail) */
  const m2 = await startMock();
  const uenv = { ...env, NODE_OPTIONS: '', MOCK_URL: m2.url };
  const us = await Promise.all([runNode([WORKER], uenv), runNode([WORKER], uenv)]);
  assert.ok(us.some((u) => JSON.parse(u.stdout).failed.length > 0));
  assert.ok((await m2.stats()).rate_limited > 0);
  const p = poolStats(seg, 'sonnet');
  assert.equal(p.admitted, 32);
  assert.equal(p.settled, 32);
  assert.equal(p.server_429, 0);
  assert.ok(p.waited + p.refused > 16, `waited ${p.waited}, refused ${p.refused}: not saturated`);
  assert.equal(p.input, ms.usage.input_tokens);
  assert.equal(p.output, ms.usage.output_tokens);
});

test('a governed response is byte for byte the ungoverned one', async () => {
  const m = await startMock();
  const seg = newSegment();
  const reqs = [{ path: '/v1/messages', body: body('claude-sonnet-4-5', 'same bytes?') },
                { path: '/v1/messages', body: body('claude-sonnet-4-5', 'same stream?', { stream: true }) }];
  const plain = await client(m, reqs, {});
  const gov = await client(m, reqs, { ...PRELOAD, SHMLIMIT_SEGMENT: seg, SHMLIMIT_HOSTS: m.host });
  assert.deepEqual(gov.res, plain.res);
  assert.equal(gov.stderr, '');
  assert.equal(poolStats(seg, 'sonnet').settled, 2);
});

const ok3 = [1, 2, 3].map((i) => ({ path: '/v1/messages', body: body('claude-sonnet-4-5', `hello ${i}`) }));

test('no SHMLIMIT_SEGMENT: requests pass, one stderr line', async () => {
  const m = await startMock();
  const { res, stderr } = await client(m, ok3, { ...PRELOAD, SHMLIMIT_HOSTS: m.host });
  assert.deepEqual(res.map((r) => r.status), [200, 200, 200]);
  assert.equal(lines(stderr).length, 1, stderr);
  assert.match(stderr, /SHMLIMIT_SEGMENT is not set; requests pass through ungoverned/);
});

test('a segment that does not exist: requests pass, one stderr line', async () => {
  const m = await startMock();
  const { res, stderr } = await client(m, ok3, {
    ...PRELOAD, SHMLIMIT_SEGMENT: `shl-node-test-none-${process.pid}`, SHMLIMIT_HOSTS: m.host,
  });
  assert.deepEqual(res.map((r) => r.status), [200, 200, 200]);
  assert.equal(lines(stderr).length, 1, stderr);
  assert.match(stderr, /no such segment.*; requests pass through ungoverned/);
});

test('an addon that cannot load: requests pass, one stderr line', async () => {
  const notAddon = path.join(tmp, 'not-an-addon.node');
  fs.writeFileSync(notAddon, 'not an ELF file\n');
  const m = await startMock();
  const seg = newSegment();
  const { res, stderr } = await client(m, ok3, {
    ...PRELOAD, SHMLIMIT_SEGMENT: seg, SHMLIMIT_HOSTS: m.host,
    SHMLIMIT_NODE_ADDON: notAddon,
  });
  assert.deepEqual(res.map((r) => r.status), [200, 200, 200]);
  assert.equal(lines(stderr).length, 1, stderr);
  assert.match(stderr, /cannot load the shmlimit addon/);
  assert.equal(poolStats(seg, 'sonnet').admitted, 0);
});

test('bodies it cannot read, and unknown models: sent as they are, one line per cause', async () => {
  const m = await startMock();
  const seg = newSegment();
  const bad = { path: '/v1/messages', body: '{"model": "claude-sonnet-4-5", "max_tokens": ' };
  const unknown = { path: '/v1/messages', body: body('claude-unknown-9', 'who?') };
  const streamed = { path: '/v1/messages', body: body('claude-sonnet-4-5', 'from a stream'), stream: true };
  const { res, stderr } = await client(m, [bad, bad, unknown, unknown, streamed, streamed], {
    ...PRELOAD, SHMLIMIT_SEGMENT: seg, SHMLIMIT_HOSTS: m.host,
  });
  /* the server's own answers: 400 malformed, 404 unknown model, 200 */
  assert.deepEqual(res.map((r) => r.status), [400, 400, 404, 404, 200, 200]);
  const l = lines(stderr);
  assert.equal(l.length, 3, stderr);
  assert.match(l[0], /not a JSON request with a model.*pass through ungoverned/);
  assert.match(l[1], /claude-unknown-9.*pass through ungoverned/);
  assert.match(l[2], /stream.*passes through ungoverned/);
  assert.equal(poolStats(seg, 'sonnet').admitted, 0);
  const ms = await m.stats();
  assert.equal(ms.requests, 6);
});

test('what is not governed passes untouched and silent', async () => {
  const m = await startMock();
  const other = await startMock(); /* a host not in SHMLIMIT_HOSTS */
  const seg = newSegment();
  const { res, stderr } = await client(m, [
    { path: '/mock/stats', method: 'GET' },
    { path: '/v1/complete', body: body('claude-sonnet-4-5', 'not messages') },
    { path: '/v1/messages/count_tokens', body: body('claude-sonnet-4-5', 'no count pool') },
  ], { ...PRELOAD, SHMLIMIT_SEGMENT: seg, SHMLIMIT_HOSTS: m.host });
  assert.deepEqual(res.map((r) => r.status), [200, 404, 200]);
  const o = await client(other, ok3, { ...PRELOAD, SHMLIMIT_SEGMENT: seg, SHMLIMIT_HOSTS: m.host });
  assert.deepEqual(o.res.map((r) => r.status), [200, 200, 200]);
  assert.equal(stderr + o.stderr, '');
  const s = poolStats(seg, 'sonnet');
  assert.equal(s.admitted, 0);
});

test('a process that never calls the API is not touched, even without a segment', async () => {
  const r = await runNode(['-e', 'console.log(typeof fetch)'], PRELOAD);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'function\n');
  assert.equal(r.stderr, '');
});

test('malformed SHMLIMIT_HOSTS and SHMLIMIT_WAIT_MS: one line each, the rest still governed', async () => {
  const m = await startMock();
  const seg = newSegment();
  const { res, stderr } = await client(m, ok3, {
    ...PRELOAD, SHMLIMIT_SEGMENT: seg, SHMLIMIT_HOSTS: `example.com:99999,${m.host}`,
    SHMLIMIT_WAIT_MS: 'soon',
  });
  assert.deepEqual(res.map((r) => r.status), [200, 200, 200]);
  const l = lines(stderr);
  assert.equal(l.length, 2, stderr);
  assert.match(stderr, /SHMLIMIT_HOSTS: bad port in "example.com:99999"; entry ignored/);
  assert.match(stderr, /SHMLIMIT_WAIT_MS="soon" is not a number of milliseconds; using 60000/);
  assert.equal(poolStats(seg, 'sonnet').settled, 3);
});
