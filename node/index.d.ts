// Type declarations of the shmlimit Node.js package (node/index.js).

/** Usage as a response reports it (snake_case), or camelCase. */
export interface Usage {
  input_tokens?: number | null;
  output_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
  cache_creation?: {
    ephemeral_5m_input_tokens?: number | null;
    ephemeral_1h_input_tokens?: number | null;
  } | null;
  inputTokens?: number;
  outputTokens?: number;
  cacheWrite5m?: number;
  cacheWrite1h?: number;
  cacheRead?: number;
}

/** What a request will cost, as known before it is sent. */
export interface Cost {
  /** Estimated uncached input tokens. */
  inputTokens?: number;
  /** The request's max_tokens. */
  maxTokens?: number;
  /** Tokens expected to be written to the 5-minute cache. */
  cacheWrite5m?: number;
  /** Tokens expected to be written to the 1-hour cache. */
  cacheWrite1h?: number;
  /** Tokens expected to be read from the cache. */
  cacheRead?: number;
  /** Message Batches pricing (x0.5). */
  batch?: boolean;
}

export interface AcquireOptions extends Cost {
  /** How long to wait for admission, ms: default 60000; 0 only now; < 0 no deadline. */
  timeoutMs?: number;
  /** Gives up the wait (the ticket is cancelled; the promise rejects with the reason). */
  signal?: AbortSignal;
}

/** An error of the library; `code` is the errno name (ENOENT, EINVAL, EPROTO, ...). */
export class ShmlimitError extends Error {
  code: string;
  errno: number;
}

/** A request that was not admitted (nothing was sent). */
export class RefusedError extends ShmlimitError {
  /** ETIMEDOUT: the wait would pass the deadline; E2BIG: larger than a bucket;
   *  EDQUOT: the monthly spend cap; ESRCH: no pool for the model. */
  code: 'ETIMEDOUT' | 'E2BIG' | 'EDQUOT' | 'ESRCH' | 'EAGAIN' | string;
  /** The dimension that refused: rpm, itpm, otpm, spend, hold, none. */
  dim: string;
  /** The pool's name. */
  pool: string | null;
  /** For ETIMEDOUT: how long the wait would have been, ms. */
  waitMs: number;
  /** Units the request needs in that dimension, and its capacity. */
  need: number;
  capacity: number;
  /** Whether waiting longer could admit it (ETIMEDOUT). */
  retryable: boolean;
}

/** An admission: settle it once with the server's usage, or cancel it if never sent. */
export class Ticket {
  readonly model: string;
  readonly pool: number;
  /** True until settled or cancelled. */
  readonly open: boolean;
  settle(usage?: Usage): void;
  cancel(): void;
}

export interface PoolStats {
  name: string;
  counters: { admitted: number; refused: number; waited: number; settled: number;
              cancelled: number; server_429: number };
  tokens: { input: number; output: number; cache_read: number; cache_write: number };
  spend_usd: number;
  [key: string]: unknown;
}

export interface Stats {
  segment: string;
  generation: number;
  spend: { spent_usd: number; cap_usd: number | null; exhausted: boolean; [key: string]: unknown };
  pools: PoolStats[];
  [key: string]: unknown;
}

/** A segment, attached. */
export class Limiter {
  constructor(segment: string, options?: { readOnly?: boolean });
  readonly segment: string;
  /** Admit, waiting on a timer (never blocking the event loop) for a place in line. */
  acquire(model: string, options?: AcquireOptions): Promise<Ticket>;
  /** Admit now or throw a RefusedError. */
  tryAcquire(model: string, options?: Cost): Ticket;
  /** Every pool and the spend (the fields of `shmlimit-stat --json`). */
  stats(): Stats;
  /** Detach, once the last open ticket or response is done. */
  close(): void;
}

type FetchLike = (input: any, init?: any) => Promise<Response>;

export interface GovernedFetchOptions {
  /** The segment (default: SHMLIMIT_SEGMENT). */
  segment?: string;
  /** A Limiter to admit through instead of attaching one. */
  limiter?: Limiter;
  /** More governed hosts, "host:port,..." (default: SHMLIMIT_HOSTS); api.anthropic.com:443 always. */
  hosts?: string;
  /** Admission wait, ms (default: SHMLIMIT_WAIT_MS, else 60000; 0 no wait; < 0 no deadline). */
  waitMs?: number;
  /** A refused request (not sent): 'response' (default) answers with a local 429 shaped like
   *  the API's (x-shmlimit-refused: the dimension; x-should-retry: false when waiting cannot
   *  help; the spend cap as enforced_spend_limit_reached); 'raise' rejects with a RefusedError. */
  refusal?: 'response' | 'raise';
}

/** Wrap fetch so Messages API requests are admitted and settled:
 *  `new Anthropic({ fetch: governedFetch(fetch) })`. */
export function governedFetch<F extends FetchLike>(fetch?: F, options?: GovernedFetchOptions): F;

/** Create a segment from a configuration (JSON text or object). */
export function create(segment: string, config: string | object, options?: { replace?: boolean }): void;
/** Remove a segment's name. */
export function unlink(segment: string): void;
