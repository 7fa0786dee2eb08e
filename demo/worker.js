'use strict';
/*
 * worker.js - a Node.js worker of `make demo` (demo/run.sh).
 *
 * Sends Claude Messages requests the way the TypeScript SDK does (its
 * headers, a JSON body, `stream: true` read as SSE) through fetch until END,
 * one at a time, and prints one HTTP status per request (000 for a request
 * the limiter refused locally: never sent).
 *
 *   node demo/worker.js W END URL POOL_IDS [--plain]
 *
 * By default it sends through governedFetch(fetch) (node/index.js; the
 * segment from SHMLIMIT_SEGMENT), as one would give the SDK
 * `new Anthropic({ fetch: governedFetch(fetch) })`.  With --plain it uses
 * the global fetch, governed with no code change by `shmlimit-run`
 * (NODE_OPTIONS=--require node/register.js).
 */
const path = require('node:path');

const WORDS = 'the quick brown fox jumps over the lazy dog while limits hold steady across every process';
const MAXT = 256; /* every request's max_tokens (demo/run.sh counts on it) */

async function main() {
  const [w, end, url, ids] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4],
    process.argv[5].split(' ')];
  const plain = process.argv.slice(6).includes('--plain');
  const send = plain ? globalThis.fetch
    : require(path.join(__dirname, '..', 'node', 'index.js')).governedFetch(globalThis.fetch);
  let seed = (w * 7919 + process.pid) >>> 0;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) >>> 0; return (seed >>> 8) % n; };
  for (let n = 1; Date.now() / 1000 < end; n++) {
    const stream = rnd(2) === 0;
    const body = JSON.stringify({
      model: ids[rnd(ids.length)], max_tokens: MAXT, stream,
      messages: [{ role: 'user', content: `node worker ${w} request ${n}:${` ${WORDS}`.repeat(2 + rnd(25))}` }],
    });
    try {
      const r = await send(`${url}/v1/messages`, {
        method: 'POST', body,
        headers: {
          'x-api-key': 'demo', 'anthropic-version': '2023-06-01', 'content-type': 'application/json',
          accept: 'application/json', 'user-agent': 'Anthropic/JS 0.71.0', 'x-stainless-lang': 'js',
          'x-stainless-retry-count': '0', 'x-mock-output-tokens': String(20 + rnd(120)),
        },
      });
      if (stream && r.body) {
        for await (const _chunk of r.body) { /* SSE, as the application reads it */ }
      } else {
        await r.text();
      }
      const refused = r.status === 429 && r.headers.has('x-shmlimit-refused');
      process.stdout.write(`${refused ? '000' : r.status}\n`);
    } catch (e) {
      process.stderr.write(`node worker ${w}: ${e && e.message}\n`);
      process.stdout.write('000\n');
    }
  }
}

main().catch((e) => { process.stderr.write(`node worker: ${e && e.stack}\n`); process.exit(1); });
