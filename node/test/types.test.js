'use strict';
/*
 * types.test.js - node/index.d.ts, checked by the TypeScript compiler
 * (from npm, pinned by package-lock.json) against the SDK's own types:
 * a worker that uses every declaration compiles under --strict, and one
 * that passes wrong types does not.
 */
const assert = require('node:assert/strict');
const path = require('node:path');
const { test } = require('node:test');
const { runNode } = require('./helpers');

const TSC = require.resolve('typescript/bin/tsc');
const FLAGS = ['--noEmit', '--strict', '--esModuleInterop', '--module', 'commonjs',
               '--target', 'es2022', '--moduleResolution', 'node', '--lib', 'es2022,dom',
               '--pretty', 'false'];

test('the declarations compile, with the SDK, under --strict', async () => {
  const r = await runNode([TSC, ...FLAGS, path.join(__dirname, 'fixtures', 'types-check.ts')]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
});

test('and they reject wrong types', async () => {
  const r = await runNode([TSC, ...FLAGS, path.join(__dirname, 'fixtures', 'types-wrong.ts')]);
  assert.notEqual(r.code, 0);
  /* the two wrong lines, and nothing else */
  const errs = r.stdout.split('\n').filter((l) => /error TS/.test(l));
  assert.equal(errs.length, 2, r.stdout);
  assert.match(errs[0], /types-wrong\.ts\(7,54\): error TS2322/);
  assert.match(errs[1], /types-wrong\.ts\(8,14\): error TS2322/);
});
