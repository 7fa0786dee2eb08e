'use strict';
/*
 * loop.test.js - waiting for admission never blocks the event loop: a timer
 * keeps ticking, with no gap above 50 ms, while hundreds of requests wait
 * (through Limiter.acquire, and through governedFetch).
 *
 * On a loaded machine the loop's thread can wait for a CPU for more than
 * 50 ms, which says nothing about the loop.  So each tick also reads the
 * thread's scheduler statistics (/proc/self/task/PID/schedstat: time on the
 * CPU, time runnable but waiting for one), and a gap is a stall when the
 * thread spent more than 50 ms of it running (JavaScript or a busy C call)
 * or more than 50 ms asleep (a blocking call), not counting the time it
 * waited for a CPU.  The
 * detector is checked first against a loop that really blocks, asleep
 * (Atomics.wait, as a C call that sleeps) and busy.  Without schedstat the
 * whole gap counts.
 */
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { test } = require('node:test');
const { shmlimit, newSegment, poolStats, body } = require('./helpers');

const GAP_MS = 50;
const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`;

/* [ns on a CPU, ns runnable waiting for one] of the loop's thread so far
 * ([0, 0] without schedstat) */
let haveSchedstat = true;
function schedstat() {
  if (!haveSchedstat) return [0n, 0n];
  try {
    const f = fs.readFileSync(SCHEDSTAT, 'latin1').split(' ');
    return [BigInt(f[0]), BigInt(f[1])];
  } catch {
    haveSchedstat = false;
    return [0n, 0n];
  }
}

/* Tick every 10 ms on the loop while `work` runs; the gaps longer than
 * GAP_MS once the time spent waiting for a CPU is taken out. */
async function watchLoop(work) {
  const sample = () => [process.hrtime.bigint(), ...schedstat()];
  const ticks = [sample()];
  const tick = () => ticks.push(sample());
  const iv = setInterval(tick, 10);
  try {
    await work();
  } finally {
    clearInterval(iv);
    tick();
  }
  const stalls = [];
  let maxGapMs = 0;
  for (let i = 1; i < ticks.length; i++) {
    const gap = Number(ticks[i][0] - ticks[i - 1][0]) / 1e6;
    const cpu = Number(ticks[i][1] - ticks[i - 1][1]) / 1e6;
    const runq = Number(ticks[i][2] - ticks[i - 1][2]) / 1e6;
    maxGapMs = Math.max(maxGapMs, gap);
    /* the rest of the gap: running (busy), or asleep (a blocking call);
     * either one over GAP_MS is a stall */
    const asleep = haveSchedstat ? gap - runq - cpu : gap;
    if (cpu > GAP_MS || asleep > GAP_MS) {
      stalls.push({ gapMs: Math.round(gap), onCpuMs: Math.round(cpu), asleepMs: Math.round(asleep),
                    waitingForCpuMs: Math.round(runq) });
    }
  }
  return { stalls, ticks: ticks.length, maxGapMs };
}

test('the detector sees a loop that blocks, asleep or busy', async () => {
  const blocker = new Int32Array(new SharedArrayBuffer(4));
  const { stalls } = await watchLoop(async () => {
    await new Promise((r) => setTimeout(r, 30));
    Atomics.wait(blocker, 0, 0, 150); /* asleep 150 ms on the loop's thread */
    await new Promise((r) => setTimeout(r, 30));
    /* busy for 150 ms of CPU time (on a loaded machine, more of wall time) */
    const cpu0 = schedstat()[0];
    const t0 = performance.now();
    while (haveSchedstat ? schedstat()[0] - cpu0 < 150000000n : performance.now() - t0 < 150);
    await new Promise((r) => setTimeout(r, 30));
  });
  assert.equal(stalls.length, 2, `stalls: ${JSON.stringify(stalls)}`);
});

test('the loop keeps ticking while hundreds of requests wait for admission', async (t) => {
  const seg = newSegment();
  const lim = new shmlimit.Limiter(seg);
  const N = 300;
  /* haiku: burst 1, 100 a second: 299 of them wait, the last about 3 s */
  const { stalls, ticks, maxGapMs } = await watchLoop(async () => {
    const all = [];
    for (let i = 0; i < N; i++) {
      if (i % 20 === 19) await new Promise(setImmediate); /* requests arrive, not all in one turn */
      all.push(lim.acquire('claude-haiku-4-5', { inputTokens: 10, maxTokens: 10, timeoutMs: -1 })
        .then((t) => t.settle({ input_tokens: 10, output_tokens: 3 })));
    }
    await Promise.all(all);
  });
  const p = poolStats(seg, 'haiku');
  assert.equal(p.admitted, N);
  assert.equal(p.settled, N);
  assert.ok(p.waited >= N - 5, `only ${p.waited} of ${N} requests waited`);
  t.diagnostic(`${ticks} ticks, longest gap ${Math.round(maxGapMs)} ms` +
              `${haveSchedstat ? '' : ' (no schedstat: whole gaps counted)'}`);
  assert.ok(ticks > 100, `the timer ticked ${ticks} times`);
  assert.deepEqual(stalls, [], 'the loop sat in a blocking call');
  lim.close();
});

test('the same through governedFetch: hundreds of requests waiting for admission', async (t) => {
  /* The wrapped fetch answers at once, as the API would (a JSON message),
   * so the loop carries only what governedFetch does: reading bodies,
   * places in line, timers, starts, the response wrapped and settled.
   * (Real HTTP adds the client's own work on the loop, which a loaded
   * machine bunches up; that is not what is checked here.) */
  const reply = (i) => new Response(JSON.stringify({
    id: `msg_${i}`, type: 'message', role: 'assistant', model: 'claude-haiku-4-5',
    content: [{ type: 'text', text: 'tok tok' }], stop_reason: 'end_turn',
    usage: { input_tokens: 3, output_tokens: 2 },
  }), { status: 200, headers: { 'content-type': 'application/json' } });
  let sent = 0;
  const inner = async () => reply(sent++);
  const seg = newSegment();
  const gf = shmlimit.governedFetch(inner, { segment: seg, hosts: '127.0.0.1:9', waitMs: -1 });
  /* Once before: Response and ReadableStream load fetch's implementation
   * (undici) and web streams at first use, a few hundred ms of compiling
   * on the loop's thread that has nothing to do with waiting. */
  await (await gf('http://127.0.0.1:9/v1/messages', {
    method: 'POST', body: body('claude-haiku-4-5', 'warm up'),
  })).json();
  const N = 300;
  /* haiku: burst 1, 100 a second: about 3 s */
  const { stalls, ticks, maxGapMs } = await watchLoop(async () => {
    const all = [];
    for (let i = 0; i < N; i++) {
      if (i % 20 === 19) await new Promise(setImmediate); /* requests arrive, not all in one turn */
      all.push(gf('http://127.0.0.1:9/v1/messages', {
        method: 'POST', body: body('claude-haiku-4-5', `request ${i}`),
      }).then((r) => r.json()));
    }
    const msgs = await Promise.all(all);
    assert.equal(msgs.length, N);
  });
  const p = poolStats(seg, 'haiku');
  assert.equal(sent, N + 1);
  assert.equal(p.admitted, N + 1);
  assert.equal(p.settled, N + 1);
  assert.equal(p.output, 2 * (N + 1));
  assert.ok(p.waited >= N - 5, `only ${p.waited} of ${N} requests waited`);
  t.diagnostic(`${ticks} ticks, longest gap ${Math.round(maxGapMs)} ms`);
  assert.deepEqual(stalls, [], 'the loop sat in a blocking call');
});
