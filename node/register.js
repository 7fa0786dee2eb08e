'use strict';
/*
 * register.js - govern a Node.js worker with no code change:
 *
 *   SHMLIMIT_SEGMENT=fleet NODE_OPTIONS="--require /path/to/node/register.js" node worker.js
 *
 * (`shmlimit-run SEGMENT -- node worker.js` sets both.)  It replaces the
 * global fetch with governedFetch(fetch): every Claude Messages API request
 * to a governed host (api.anthropic.com:443, and SHMLIMIT_HOSTS) waits for
 * admission in the segment and is settled from its response, which governs
 * the TypeScript SDK (it sends through the global fetch).  The environment is
 * read, and the addon loaded, at the first request to a governed host, so a
 * Node process that never calls the API (npm, a build tool) is not touched.
 *
 * Fails open: no segment, one that cannot be attached, an addon that cannot
 * load, a body it cannot read: the request runs as without it, with one
 * stderr line per cause.  Nothing here throws into the application.
 */
(function register() {
  if (typeof globalThis.fetch !== 'function') return; /* Node < 18: nothing to wrap */
  let governedFetch;
  try {
    ({ governedFetch } = require('./index.js'));
  } catch (e) {
    process.stderr.write(`shmlimit: cannot load ${__dirname}/index.js ` +
                         `(${e && e.message}); requests pass through ungoverned\n`);
    return;
  }
  try {
    globalThis.fetch = governedFetch(globalThis.fetch);
  } catch (e) {
    process.stderr.write(`shmlimit: ${e && e.message}; requests pass through ungoverned\n`);
  }
})();
