'use strict';
/*
 * shmlimit for Node.js: share the Claude API's rate limits and monthly spend
 * cap with every other worker on the host, through a libshmlimit segment.
 *
 *   const { Limiter, governedFetch } = require('shmlimit');
 *   const lim = new Limiter('fleet');
 *   const t = await lim.acquire('claude-sonnet-4-5', { inputTokens: 1200, maxTokens: 1024 });
 *   ... send, read the usage ...
 *   t.settle(message.usage);
 *
 *   const client = new Anthropic({ fetch: governedFetch(fetch) });
 *
 * Waiting never blocks the event loop: the addon's calls return at once
 * (shl_reserve takes a place in line and says when it comes up; a timer
 * waits for it; shl_start checks again then).  governedFetch's timers move
 * sooner when a request placed before theirs in the line settles below its
 * estimate (the addon's early release: waitRelease).  Requests and responses are
 * read by the library's one reader (shl_ex_*), the one the preload shim and
 * the Python package use, so a request is charged the same whoever sends it.
 *
 * Fails open like the shim: without a segment, with an addon that cannot
 * load, or with a body it cannot read, governedFetch sends the request as
 * fetch would, with one stderr line per cause.  Limiter, the explicit API,
 * throws instead (the caller asked for it).
 */
const path = require('node:path');
const { performance } = require('node:perf_hooks');

/* The addon's result array (node/addon.c: OUT_*). */
const OUT_DELAY_NS = 0;
const OUT_DIM = 1;
const OUT_POOL = 2;
const OUT_WAIT_NS = 3;
const OUT_NEED = 4;
const OUT_CAPACITY = 5;
const OUT_MODEL = 6;
const OUT_TPOOL = 7;
const IN_0 = 8; /* numbers for reserve and settle, written here, not passed */
const OUT_SEQ = 16;
const OUT_MOVED = 17;
const OUT_LEN = 18;

/* Negative errno values the library returns (Linux). */
const EAGAIN = -11;
const ENOMEM = -12;
const EINVAL = -22;
const ESRCH = -3;
const E2BIG = -7;
const EDQUOT = -122;
const ETIMEDOUT = -110;
const EALREADY = -114;

const WAIT_MS_DEFAULT = 60000;
const PREFIX = 'shmlimit: ';

/* ------------------------------------------------------------------ */
/* The addon                                                           */
/* ------------------------------------------------------------------ */

let addon = null;
let out = null;
let loadError = null;

/*
 * The addon, loaded once: SHMLIMIT_NODE_ADDON if set, else shmlimit.node
 * next to this file (an installed package), else the build tree's
 * build/node/shmlimit.node.  Throws the reason when it cannot load.
 */
function load() {
  if (addon) return addon;
  if (loadError) throw loadError;
  const env = process.env.SHMLIMIT_NODE_ADDON;
  const candidates = env
    ? [path.resolve(env)]
    : [path.join(__dirname, 'shmlimit.node'),
       path.join(__dirname, '..', 'build', 'node', 'shmlimit.node')];
  let last = null;
  for (const c of candidates) {
    try {
      addon = require(c);
      break;
    } catch (e) {
      last = e;
    }
  }
  if (!addon) {
    loadError = new Error(`cannot load the shmlimit addon (${candidates.join(', ')}): ` +
                          `${last && last.message ? last.message.split('\n')[0] : last}`);
    loadError.code = 'ENOADDON';
    throw loadError;
  }
  out = new Float64Array(OUT_LEN);
  addon.setOut(out);
  return addon;
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/** An error of the library: .code is the errno name (ENOENT, EINVAL, ...). */
class ShmlimitError extends Error {
  constructor(message, code, errno) {
    super(message);
    this.name = 'ShmlimitError';
    this.code = code;
    this.errno = errno;
  }
}

/**
 * A request was not admitted.  .code: ETIMEDOUT (the wait would pass the
 * deadline; .waitMs says how long it would have been), E2BIG (larger than a
 * bucket: never admissible), EDQUOT (the monthly spend cap), EAGAIN.
 * .retryable says whether waiting can help.
 */
class RefusedError extends ShmlimitError {
  constructor(message, code, errno, details) {
    super(message, code, errno);
    this.name = 'RefusedError';
    Object.assign(this, details);
    this.retryable = code === 'ETIMEDOUT' || code === 'EAGAIN';
  }
}

function refusal(a, r, what, poolName) {
  const dim = a.dimName(out[OUT_DIM] | 0);
  const details = {
    dim,
    pool: poolName,
    waitMs: out[OUT_WAIT_NS] / 1e6,
    need: out[OUT_NEED],
    capacity: out[OUT_CAPACITY],
  };
  let reason;
  if (r === ETIMEDOUT || r === EAGAIN) {
    reason = `admission in ${(details.waitMs / 1000).toFixed(3)} s is past the deadline`;
  } else if (r === E2BIG) {
    reason = `needs ${details.need}, more than the capacity ${details.capacity}; ` +
             'it can never be admitted';
  } else {
    reason = a.strerror(r);
  }
  const msg = `${PREFIX}refused ${what}: pool ${poolName}: ${dim} limit: ${reason}`;
  return new RefusedError(msg, a.errName(r), r, details);
}

/* ------------------------------------------------------------------ */
/* Waiting                                                             */
/* ------------------------------------------------------------------ */

function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  const e = new Error('This operation was aborted');
  e.name = 'AbortError';
  return e;
}

/* A timer of `ms` (> 0), rejected early by `signal`. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(abortReason(signal));
      return;
    }
    let onAbort = null;
    const timer = setTimeout(() => {
      if (signal) signal.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(1, Math.ceil(ms)));
    if (signal) {
      onAbort = () => {
        clearTimeout(timer);
        reject(abortReason(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
    }
  });
}

/* Sleep until performance.now() reaches `at` (a timer may fire a little
 * before the time it was set for, on the loop's cached clock). */
async function sleepUntil(at, signal) {
  for (let left = at - performance.now(); left > 0; left = at - performance.now()) {
    await sleep(left, signal);
  }
}

/*
 * Early release (node/addon.c, "Early release"): governedFetch's places
 * waiting for their release in this environment, by their number (the
 * addon's seq).  When a request finishes, the addon moves sooner the
 * waiting places of its line (segment handle and pool) taken after it, by
 * what its settle or cancel gave back, and says which (exMoved); their
 * timers are set again here.
 */
const waiting = new Map();
let trace = null; /* tests: seq -> what a place did (_traceEarly) */

/* Wait for place `seq`'s release, `delay` ms (> 0) from now, or sooner if
 * it is moved; rejected early by `signal`.  (A timer may fire a little
 * before the time it was set for, on the loop's cached clock: it is set
 * again for the rest.) */
function waitRelease(seq, delay, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(abortReason(signal));
      return;
    }
    const w = { at: performance.now() + delay, timer: null, arm: null };
    let onAbort = null;
    const end = () => {
      waiting.delete(seq);
      clearTimeout(w.timer);
      if (signal) signal.removeEventListener('abort', onAbort);
    };
    w.arm = () => {
      clearTimeout(w.timer);
      const left = w.at - performance.now();
      if (left > 0) {
        w.timer = setTimeout(w.arm, Math.max(1, Math.ceil(left)));
        return;
      }
      end();
      resolve();
    };
    if (signal) {
      onAbort = () => {
        end();
        reject(abortReason(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
    }
    waiting.set(seq, w);
    w.arm();
  });
}

/* Finish an exchange (settle, or cancel when not sent), then set again the
 * timers of the waiting places its give moved. */
function finishExchange(a, x, sent) {
  a.exFinish(x, sent);
  if (out[OUT_MOVED] <= 0) return;
  const moved = a.exMoved(); /* [seq, delayNs, shiftNs, ...] */
  for (let i = 0; i < moved.length; i += 3) {
    const w = waiting.get(moved[i]);
    if (!w) continue;
    w.at = performance.now() + moved[i + 1] / 1e6;
    if (trace && trace.has(moved[i])) {
      trace.get(moved[i]).moves.push({ shiftNs: moved[i + 2], delayNs: moved[i + 1] });
    }
    w.arm();
  }
}

/* timeoutMs as the library's max_wait in ns: < 0 none (-1), else >= 0. */
function deadlineOf(timeoutMs) {
  if (timeoutMs === undefined || timeoutMs === null) timeoutMs = WAIT_MS_DEFAULT;
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs)) {
    throw new TypeError('timeoutMs must be a number of milliseconds');
  }
  return timeoutMs < 0 || timeoutMs === Infinity ? Infinity : performance.now() + timeoutMs;
}

function maxWaitNs(deadline) {
  if (deadline === Infinity) return -1;
  return Math.max(0, Math.floor((deadline - performance.now()) * 1e6));
}

/* ------------------------------------------------------------------ */
/* Limiter and tickets                                                 */
/* ------------------------------------------------------------------ */

/* Usage in the API's shape (snake_case, as in a response's `usage`) or
 * camelCase; cache writes split by cache_creation when given, else 5 min. */
const num = (v) => (typeof v === 'number' && v > 0 ? v : 0);
function usageInto(u) {
  if (!u) u = {};
  const cc = u.cache_creation || {};
  let cw5m = num(u.cacheWrite5m ?? cc.ephemeral_5m_input_tokens);
  const cw1h = num(u.cacheWrite1h ?? cc.ephemeral_1h_input_tokens);
  const cw = num(u.cache_creation_input_tokens);
  if (cw5m + cw1h === 0 && cw > 0) cw5m = cw;
  out[IN_0] = num(u.inputTokens ?? u.input_tokens);
  out[IN_0 + 1] = num(u.outputTokens ?? u.output_tokens);
  out[IN_0 + 2] = cw5m;
  out[IN_0 + 3] = cw1h;
  out[IN_0 + 4] = num(u.cacheRead ?? u.cache_read_input_tokens);
}

/**
 * An admission: settle it with the server's usage, or cancel it if never
 * sent.  A ticket dropped without either keeps its worst case charged (as
 * a worker killed between admission and settle does) and its slot in the
 * addon's table (about 150 bytes) until the process exits: tracking
 * dropped tickets (a FinalizationRegistry) would cost four times the
 * admission itself.
 */
class Ticket {
  constructor(slot, model, pool) {
    this._slot = slot;
    /** The model id it was admitted for. */
    this.model = model;
    /** The pool index it was admitted on. */
    this.pool = pool;
  }

  _done() {
    const s = this._slot;
    if (s < 0) throw new ShmlimitError(`${PREFIX}ticket already settled or cancelled`,
                                       'EALREADY', EALREADY);
    this._slot = -1;
    return s;
  }

  /**
   * Correct the buckets and the spend to what the server reported: a
   * response's `usage` as is ({input_tokens, output_tokens,
   * cache_creation_input_tokens, cache_read_input_tokens, cache_creation}),
   * or {inputTokens, outputTokens, cacheWrite5m, cacheWrite1h, cacheRead}.
   */
  settle(usage) {
    const a = addon;
    usageInto(usage);
    const r = a.settle(this._done());
    if (r < 0) throw new ShmlimitError(`${PREFIX}settle: ${a.strerror(r)}`, a.errName(r), r);
  }

  /** Give back everything of a request that was never sent. */
  cancel() {
    const a = addon;
    const r = a.cancel(this._done());
    if (r < 0) throw new ShmlimitError(`${PREFIX}cancel: ${a.strerror(r)}`, a.errName(r), r);
  }

  /** True until settled or cancelled. */
  get open() {
    return this._slot >= 0;
  }
}

/** A segment, attached: admit requests against its shared limits. */
class Limiter {
  /**
   * @param {string} segment the segment's name (`fleet` or `/fleet`)
   * @param {{readOnly?: boolean}} [options] readOnly: statistics only
   */
  constructor(segment, options = {}) {
    const a = load();
    this.segment = segment;
    this._h = a.attach(String(segment), !!options.readOnly);
    this._models = new Map();
    this._poolNames = null;
  }

  _model(model) {
    let m = this._models.get(model);
    if (m === undefined) {
      m = addon.lookup(this._h, String(model));
      if (m < 0) {
        throw new RefusedError(`${PREFIX}no pool is configured for model ${model}`,
                               addon.errName(m), m, { dim: 'none', pool: null });
      }
      if (this._models.size < 1024) this._models.set(model, m);
    }
    return m;
  }

  _poolName(i) {
    try {
      const s = this.stats();
      return s.pools && s.pools[i] ? s.pools[i].name : String(i);
    } catch {
      return String(i);
    }
  }

  _reserve(m, o, waitNs) {
    out[IN_0] = num(o.inputTokens);
    out[IN_0 + 1] = num(o.cacheWrite5m);
    out[IN_0 + 2] = num(o.cacheWrite1h);
    out[IN_0 + 3] = num(o.cacheRead);
    out[IN_0 + 4] = num(o.maxTokens);
    out[IN_0 + 5] = o.batch ? 1 : 0;
    out[IN_0 + 6] = waitNs;
    return addon.reserve(this._h, m);
  }

  /* The addon's number array (for the benchmark's bare addon calls). */
  _io() {
    return out;
  }

  _refuse(r, model) {
    return refusal(addon, r, `model ${model}`, this._poolName(out[OUT_POOL] | 0));
  }

  /**
   * Admit now or throw a RefusedError (never waits): the synchronous form.
   * @returns {Ticket}
   */
  tryAcquire(model, options = {}) {
    const m = this._model(model);
    const slot = this._reserve(m, options, 0);
    if (slot < 0) throw this._refuse(slot === EAGAIN ? ETIMEDOUT : slot, model);
    return new Ticket(slot, model, out[OUT_TPOOL]);
  }

  /**
   * Admit, waiting (a timer, never a blocking call) for a place in line.
   * options: inputTokens, maxTokens, cacheWrite5m, cacheWrite1h, cacheRead,
   * batch, timeoutMs (default 60000; 0: only now; < 0: no deadline), signal.
   * Rejects with RefusedError (ETIMEDOUT, E2BIG, EDQUOT, ESRCH).
   * @returns {Promise<Ticket>}
   */
  async acquire(model, options = {}) {
    const a = load();
    const m = this._model(model);
    const deadline = deadlineOf(options.timeoutMs);
    const signal = options.signal;
    for (;;) {
      if (signal && signal.aborted) throw abortReason(signal);
      const slot = this._reserve(m, options, maxWaitNs(deadline));
      if (slot === EAGAIN) { /* the line moved under a hostile writer: again after the wait */
        const wait = out[OUT_WAIT_NS] / 1e6;
        if (performance.now() + wait > deadline) throw this._refuse(ETIMEDOUT, model);
        await sleep(wait, signal);
        continue;
      }
      if (slot < 0) throw this._refuse(slot, model);
      const pool = out[OUT_TPOOL];
      const delay = out[OUT_DELAY_NS] / 1e6;
      if (delay <= 0) return new Ticket(slot, model, pool);
      try {
        await sleepUntil(performance.now() + delay, signal);
      } catch (e) {
        a.cancel(slot);
        throw e;
      }
      let r = a.start(slot);
      /* the timer came a little early (dim none: not a hold): the rest */
      while (r === EAGAIN && out[OUT_DIM] === -1 && out[OUT_WAIT_NS] > 0) {
        try {
          await sleep(out[OUT_WAIT_NS] / 1e6, signal);
        } catch (e) {
          a.cancel(slot);
          throw e;
        }
        r = a.start(slot);
      }
      if (r === 0) return new Ticket(slot, model, pool);
      a.cancel(slot);
      if (r !== EAGAIN) throw this._refuse(r, model);
      /* held back by a server retry-after: wait for the hold, then again */
      const wait = out[OUT_WAIT_NS] / 1e6;
      if (performance.now() + wait > deadline) throw this._refuse(ETIMEDOUT, model);
      await sleep(wait, signal);
    }
  }

  /** A snapshot of every pool and the spend (the fields of `shmlimit-stat --json`). */
  stats() {
    return JSON.parse(load().stats(this._h));
  }

  /** Detach (once the last open ticket or response is done). */
  close() {
    if (this._h) addon.close(this._h);
  }
}

/** Create a segment from a JSON configuration (see the README's Configuration). */
function create(segment, config, options = {}) {
  const json = typeof config === 'string' ? config : JSON.stringify(config);
  load().create(String(segment), json, !!options.replace);
}

/** Remove a segment's name (attached processes keep their mapping). */
function unlink(segment) {
  const r = load().unlink(String(segment));
  if (r < 0 && r !== -2) {
    throw new ShmlimitError(`${PREFIX}unlink ${segment}: ${addon.strerror(r)}`,
                            addon.errName(r), r);
  }
}

/* ------------------------------------------------------------------ */
/* governedFetch                                                       */
/* ------------------------------------------------------------------ */

/* One stderr line per cause and process (as the shim and the Python transport). */
const warned = new Set();
function warn(cause, msg) {
  if (warned.has(cause)) return;
  warned.add(cause);
  process.stderr.write(`${PREFIX}${msg}\n`);
}

/* SHMLIMIT_HOSTS: "host:port,[::1]:8080,host" (no port: 443), after
 * api.anthropic.com:443, as the preload shim reads it. */
function parseHosts(list, warn) {
  const hosts = [{ host: 'api.anthropic.com', port: 443 }];
  if (!list) return hosts;
  for (const raw of String(list).split(',')) {
    const e = raw.trim();
    if (!e) continue;
    const rb = e.lastIndexOf(']');
    const colon = e.lastIndexOf(':');
    let host = e;
    let port = 443;
    if (colon > 0 && colon > rb) {
      const p = e.slice(colon + 1);
      if (!/^[0-9]{1,5}$/.test(p) || +p < 1 || +p > 65535) {
        warn('hosts', `SHMLIMIT_HOSTS: bad port in "${e}"; entry ignored`);
        continue;
      }
      port = +p;
      host = e.slice(0, colon);
    }
    hosts.push({ host: host.toLowerCase(), port });
  }
  return hosts;
}

function parseWaitMs(v, warn) {
  if (v === undefined || v === null || v === '') return WAIT_MS_DEFAULT;
  if (typeof v === 'number') return v;
  if (!/^-?[0-9]+$/.test(String(v).trim())) {
    warn('env', `SHMLIMIT_WAIT_MS="${v}" is not a number of milliseconds; using ${WAIT_MS_DEFAULT}`);
    return WAIT_MS_DEFAULT;
  }
  return Number(v);
}

/* The request's URL and method, without touching its body. */
function requestTarget(input, init) {
  let url;
  if (typeof input === 'string') url = input;
  else if (input instanceof URL) url = input.href;
  else if (input && typeof input.url === 'string') url = input.url;
  else url = String(input);
  let method = (init && init.method) || (input && typeof input === 'object' && input.method) || 'GET';
  method = String(method).toUpperCase();
  return { url, method };
}

/* The request body's bytes, or null when it cannot be read without
 * consuming what the application sends (a stream). */
async function bodyBytes(input, init) {
  let b;
  if (init && 'body' in init && init.body !== undefined) {
    b = init.body;
  } else if (input && typeof input === 'object' && typeof input.clone === 'function' &&
             input.body) {
    return new Uint8Array(await input.clone().arrayBuffer());
  } else {
    return new Uint8Array(0);
  }
  if (b === null) return new Uint8Array(0);
  if (typeof b === 'string') return Buffer.from(b, 'utf8');
  if (b instanceof Uint8Array) return b;
  if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  if (b instanceof ArrayBuffer) return new Uint8Array(b);
  if (b instanceof URLSearchParams) return Buffer.from(b.toString(), 'utf8');
  if (typeof Blob === 'function' && b instanceof Blob) return new Uint8Array(await b.arrayBuffer());
  return null;
}

/* Whether a failed fetch can have sent a byte of the request. */
function maybeSent(err) {
  const c = err && (err.cause || err);
  const code = c && c.code;
  return !(code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' ||
           code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'EHOSTUNREACH' ||
           code === 'ENETUNREACH');
}

const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/* The response, its body read by the exchange as the application reads it;
 * the exchange finishes at the end, on an error, or on cancel. */
function wrapResponse(a, x, res) {
  const lines = [];
  res.headers.forEach((v, k) => { lines.push(`${k}: ${v}`); });
  a.exResponse(x, res.status, lines.join('\r\n'));
  if (!res.body || NULL_BODY.has(res.status)) {
    finishExchange(a, x, true);
    return res;
  }
  const reader = res.body.getReader();
  let finished = false;
  const finish = () => {
    if (!finished) {
      finished = true;
      finishExchange(a, x, true);
    }
  };
  const body = new ReadableStream({
    async pull(controller) {
      let r;
      try {
        r = await reader.read();
      } catch (e) {
        finish();
        controller.error(e);
        return;
      }
      if (r.done) {
        finish();
        controller.close();
        return;
      }
      if (r.value && r.value.byteLength) a.exBody(x, r.value);
      controller.enqueue(r.value);
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  const wrapped = new Response(body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
  for (const k of ['url', 'redirected', 'type']) {
    try {
      Object.defineProperty(wrapped, k, { value: res[k], enumerable: true });
    } catch { /* a getter we cannot shadow: leave it */ }
  }
  return wrapped;
}

/*
 * A refused request, answered locally without sending: a response shaped
 * like the API's own 429 (rate_limit_error; for the spend cap with
 * error.details.error_code "enforced_spend_limit_reached"), with
 * retry-after / retry-after-ms when waiting helps and x-should-retry: false
 * when it cannot, and x-shmlimit-refused: the dimension.  The SDKs and
 * applications handle it as they handle the server's (the Python
 * transport answers the same way).
 */
function refusalResponse(e) {
  const headers = { 'content-type': 'application/json', 'x-shmlimit-refused': e.dim };
  const error = { type: 'rate_limit_error', message: `${e.message}; not sent` };
  if (e.code === 'EDQUOT') {
    error.details = { error_code: 'enforced_spend_limit_reached' };
    headers['x-should-retry'] = 'false';
  } else if (!e.retryable) {
    headers['x-should-retry'] = 'false';
  } else {
    const ms = Math.max(1, Math.ceil(e.waitMs));
    headers['retry-after'] = String(Math.max(1, Math.ceil(ms / 1000)));
    headers['retry-after-ms'] = String(ms);
  }
  return new Response(JSON.stringify({ type: 'error', error, request_id: null }),
                      { status: 429, headers });
}

const GOVERNED = Symbol.for('shmlimit.governedFetch');

/* One handle per segment for every governedFetch of the process: a handle
 * takes one of the segment's 64 statistics slots per thread using it. */
const shared = new Map();
function sharedLimiter(segment) {
  let lim = shared.get(segment);
  if (!lim) {
    lim = new Limiter(segment);
    shared.set(segment, lim);
  }
  return lim;
}

/**
 * Wrap a fetch function so that Claude Messages API requests to governed
 * hosts (api.anthropic.com:443, and SHMLIMIT_HOSTS or options.hosts) wait
 * for admission in the segment, and settle from their responses.  The
 * TypeScript SDK takes it as is: `new Anthropic({ fetch: governedFetch(fetch) })`.
 *
 * options: segment (default SHMLIMIT_SEGMENT), limiter (a Limiter to use
 * instead), hosts ("host:port,..."; default SHMLIMIT_HOSTS), waitMs
 * (default SHMLIMIT_WAIT_MS, else 60000; 0: no wait; < 0: no deadline),
 * refusal: 'response' (default) or 'raise'.
 * A refused request is not sent: it is answered by a local 429 shaped like
 * the API's (see refusalResponse), or with refusal 'raise' the promise
 * rejects with a RefusedError.
 */
function governedFetch(fetchImpl = globalThis.fetch, options = {}) {
  if (typeof fetchImpl !== 'function') throw new TypeError('governedFetch needs a fetch function');
  if (fetchImpl[GOVERNED]) return fetchImpl;
  const refusalMode = options.refusal ?? 'response';
  if (refusalMode !== 'response' && refusalMode !== 'raise') {
    throw new TypeError("governedFetch: options.refusal must be 'response' or 'raise'");
  }
  let st = null; /* {a, h, hosts, waitMs} once initialised; {off: true} to pass through */

  function setup() {
    const hosts = parseHosts(options.hosts ?? process.env.SHMLIMIT_HOSTS, warn);
    const waitMs = parseWaitMs(options.waitMs ?? process.env.SHMLIMIT_WAIT_MS, warn);
    let a;
    try {
      a = load();
    } catch (e) {
      warn('addon', `${e.message}; requests pass through ungoverned`);
      return { off: true };
    }
    let lim = options.limiter;
    if (!lim) {
      const seg = options.segment ?? process.env.SHMLIMIT_SEGMENT;
      if (!seg) {
        warn('noseg', 'SHMLIMIT_SEGMENT is not set; requests pass through ungoverned');
        return { off: true };
      }
      try {
        lim = sharedLimiter(seg);
      } catch (e) {
        warn('attach', `segment "${seg}": ${e.message}; requests pass through ungoverned`);
        return { off: true };
      }
    }
    return { a, lim, hosts, waitMs };
  }

  function governedHost(u) {
    const port = u.port ? +u.port
      : u.protocol === 'https:' ? 443 : u.protocol === 'http:' ? 80 : -1;
    const host = u.hostname.toLowerCase();
    for (const h of st.hosts) if (h.port === port && h.host === host) return true;
    return false;
  }

  async function admit(x, what, signal) {
    const a = st.a;
    const deadline = st.waitMs < 0 ? Infinity : performance.now() + st.waitMs;
    for (;;) {
      let r = a.exReserve(x, maxWaitNs(deadline));
      if (r === 0) {
        const delay = out[OUT_DELAY_NS] / 1e6;
        const seq = out[OUT_SEQ];
        const rec = trace && { what, seq, delayNs: out[OUT_DELAY_NS],
                               releaseAt: performance.now() + delay, moves: [], startedAt: null };
        if (rec) trace.set(seq, rec);
        if (delay > 0) {
          await waitRelease(seq, delay, signal);
          r = a.exStart(x);
        }
        if (r === 0) {
          if (rec) rec.startedAt = performance.now();
          return;
        }
      }
      if (r !== EAGAIN) throw refusal(a, r, what, st.lim._poolName(out[OUT_POOL] | 0));
      /* a hold arrived while it waited (its place is given back): wait, then again */
      const wait = out[OUT_WAIT_NS] / 1e6;
      if (performance.now() + wait > deadline) {
        throw refusal(a, ETIMEDOUT, what, st.lim._poolName(out[OUT_POOL] | 0));
      }
      await sleep(wait, signal);
    }
  }

  async function fetchGoverned(input, init) {
    if (st === null) st = setup();
    if (st.off) return fetchImpl(input, init);
    const { url, method } = requestTarget(input, init);
    let u;
    try {
      u = new URL(url);
    } catch {
      return fetchImpl(input, init);
    }
    if (!governedHost(u)) return fetchImpl(input, init);
    const a = st.a;
    const kind = a.exKind(method, u.pathname + u.search);
    if (kind === 0) return fetchImpl(input, init);

    const body = await bodyBytes(input, init);
    if (body === null) {
      warn('stream', `a request body given as a stream cannot be read before it is sent; ` +
                     `${method} ${u.pathname} passes through ungoverned`);
      return fetchImpl(input, init);
    }
    const opened = a.exOpen(st.lim._h, kind, body);
    const x = opened[0];
    if (typeof x === 'number') {
      if (x === ESRCH) {
        /* count_tokens and batches are governed only when configured */
        if (kind === 1) {
          warn('model', `${opened[1] || 'a model'}; its requests pass through ungoverned`);
        }
      } else if (x === EINVAL) {
        warn('body', `${opened[1] || `a request body to ${u.pathname} is not a JSON request ` +
                     'with a model'}; such requests pass through ungoverned`);
      } else {
        warn('open', `${method} ${u.pathname}: ${a.strerror(x)}; passes through ungoverned`);
      }
      return fetchImpl(input, init);
    }
    const what = `${method} ${u.pathname} model ${opened[1]}`;
    const signal = (init && init.signal) || (input && typeof input === 'object' && input.signal);
    try {
      await admit(x, what, signal || undefined);
    } catch (e) {
      finishExchange(a, x, false);
      if (e instanceof RefusedError && refusalMode === 'response') return refusalResponse(e);
      throw e;
    }
    let res;
    try {
      res = await fetchImpl(input, init);
    } catch (e) {
      finishExchange(a, x, maybeSent(e));
      throw e;
    }
    return wrapResponse(a, x, res);
  }
  Object.defineProperty(fetchGoverned, GOVERNED, { value: true });
  return fetchGoverned;
}

module.exports = {
  Limiter,
  Ticket,
  ShmlimitError,
  RefusedError,
  governedFetch,
  create,
  unlink,
  /** The addon, loaded (throws when it cannot load); for benchmarks and tests. */
  get addon() { return load(); },
  /**
   * Tests: record (on) or stop recording governedFetch's places in this
   * environment: a Map from each place's number to {what, seq, delayNs,
   * releaseAt, moves: [{shiftNs, delayNs}], startedAt} (performance.now()
   * times; startedAt null until it may be sent).
   */
  _traceEarly(on) {
    trace = on ? new Map() : null;
    return trace;
  },
};
