// Issue 10, the same core in a browser page: the esbuild bundle (kernels compiled in through the
// `semfreeze:kernels` virtual module, no Node module allowed in), the static server the page and its
// models come from (HTTP Range, CORS, nothing outside web/dist, models/, test/fixtures/, data/), and
// adapter detection, in Node and on Chromium's SwiftShader.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { buildWeb, findNodeImports, repoRoot } from '../scripts/build-web.mjs';
import { parseRange, serveWeb } from '../scripts/serve-web.mjs';
import { summarizeAdapter } from '../src/gpu/device.ts';
import { chromiumPath, launchChromium, openPage } from './util/browser.ts';

const tmpDirs: string[] = [];
function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `semfreeze-${prefix}-`));
  tmpDirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

const kernelNames = readdirSync(join(repoRoot, 'kernels'))
  .filter((f) => f.endsWith('.wgsl'))
  .map((f) => f.slice(0, -'.wgsl'.length))
  .sort();

/** The fixture page: test/fixtures/web/entry.ts bundled as main.js next to its index.html. */
function buildFixture(outdir: string) {
  return buildWeb({ outdir, entryPoints: { main: 'test/fixtures/web/entry.ts' }, copy: ['test/fixtures/web/index.html'] });
}

/** A GET (or other method) with a raw path, unlike fetch, which normalizes `..` away. */
function rawRequest(url: string, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((ok, fail) => {
    const req = request({ host: '127.0.0.1', port: u.port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('buildWeb', () => {
  it('bundles an entry with the kernels compiled in (semfreeze:kernels), a source map and the copied page', async () => {
    const out = tempDir('web-build');
    const { outdir, files } = await buildFixture(out);
    expect(outdir).toBe(out);
    expect(readdirSync(out).sort()).toEqual(['index.html', 'main.js', 'main.js.map']);
    expect(files.length).toBe(3);
    const js = readFileSync(join(out, 'main.js'), 'utf8');
    expect(findNodeImports(js)).toEqual([]);
    // The virtual module is one object literal in the bundle: every kernel's source, verbatim.
    const literal = /^var kernels_default = (\{.*\});$/m.exec(js)?.[1];
    expect(literal, 'the kernels object in main.js').toBeDefined();
    const bundled = runInNewContext(`(${literal})`) as Record<string, string>;
    expect(Object.keys(bundled).sort()).toEqual(kernelNames);
    for (const k of kernelNames) expect(bundled[k], k).toBe(readFileSync(join(repoRoot, 'kernels', `${k}.wgsl`), 'utf8'));
    expect(readFileSync(join(out, 'index.html'), 'utf8')).toBe(readFileSync(join(repoRoot, 'test/fixtures/web/index.html'), 'utf8'));
  });

  it('fails loudly, naming the import and the importer, when the bundle would pull a Node module', async () => {
    const dir = tempDir('web-bad');
    writeFileSync(join(dir, 'fs.ts'), "import { readFileSync } from 'node:fs';\nconsole.log(readFileSync);\n");
    writeFileSync(join(dir, 'bare.ts'), "import { join } from 'path';\nconsole.log(join('a', 'b'));\n");
    writeFileSync(join(dir, 'dawn.ts'), "import { create } from 'webgpu';\nconsole.log(create);\n");
    writeFileSync(join(dir, 'platform.ts'), `import { nodePlatform } from ${JSON.stringify(join(repoRoot, 'src/platform/node.ts'))};\nconsole.log(nodePlatform);\n`);
    const build = (entry: string) => buildWeb({ outdir: join(dir, 'out'), entryPoints: { main: join(dir, entry) }, copy: [] });
    await expect(build('fs.ts')).rejects.toThrow(/fs\.ts imports "node:fs": the Node module "node:fs" cannot go into a browser bundle/);
    await expect(build('bare.ts')).rejects.toThrow(/imports "path": the Node module/);
    await expect(build('dawn.ts')).rejects.toThrow(/imports "webgpu": the Node-only package "webgpu"/);
    // The real mistake: importing the Node platform into browser code.
    await expect(build('platform.ts')).rejects.toThrow(/src\/platform\/node\.ts imports "webgpu"/);
    expect(existsSync(join(dir, 'out', 'main.js'))).toBe(false);
  });

  it('refuses a missing entry point with its name', async () => {
    await expect(buildWeb({ outdir: tempDir('web-missing'), entryPoints: { main: 'web/no-such-entry.ts' }, copy: [] })).rejects.toThrow(/entry point web\/no-such-entry\.ts does not exist/);
  });

  it('findNodeImports spots the import forms of node: modules and webgpu in bundled output', () => {
    expect(findNodeImports('import{a}from"node:fs";import "node:path";const x=await import("webgpu");require("node:os")')).toEqual(['node:fs', 'node:path', 'webgpu', 'node:os']);
    expect(findNodeImports('const s="webgpu is a word"; const t="node:fs";')).toEqual([]);
  });

  const realEntries = ['src/browser.ts', 'web/main.ts', 'web/index.html'].every((f) => existsSync(join(repoRoot, f)));
  it.skipIf(!realEntries)('builds the real entries: semfreeze.js (library) and main.js (page), without Node modules', async () => {
    const out = tempDir('web-real');
    await buildWeb({ outdir: out });
    for (const f of ['semfreeze.js', 'semfreeze.js.map', 'main.js', 'main.js.map', 'index.html']) expect(existsSync(join(out, f)), f).toBe(true);
    for (const f of ['semfreeze.js', 'main.js']) expect(findNodeImports(readFileSync(join(out, f), 'utf8')), f).toEqual([]);
  });
});

describe('serveWeb', () => {
  let server: { url: string; close(): Promise<void> };
  let dist: string;
  const fixture = 'test/fixtures/base-reference.safetensors';
  const bytes = readFileSync(join(repoRoot, fixture));
  const size = bytes.length;

  beforeAll(async () => {
    dist = tempDir('web-dist');
    writeFileSync(join(dist, 'index.html'), '<!doctype html><title>t</title>');
    writeFileSync(join(dist, 'main.js'), 'export {};\n');
    writeFileSync(join(dist, 'main.js.map'), '{}');
    writeFileSync(join(dist, 'style.css'), 'body{}');
    server = await serveWeb({ distDir: dist });
  });
  afterAll(() => server?.close());

  it('serves / as index.html and dist files with their content types, CORS and no-store', async () => {
    expect(server.url).toMatch(/^http:\/\/localhost:\d+\/$/);
    const index = await fetch(server.url);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('access-control-allow-origin')).toBe('*');
    expect(index.headers.get('access-control-expose-headers')).toMatch(/Content-Range.*Content-Length/);
    expect(index.headers.get('cache-control')).toBe('no-store');
    expect(index.headers.get('accept-ranges')).toBe('bytes');
    expect(await index.text()).toBe('<!doctype html><title>t</title>');
    const types: Record<string, string> = {
      'main.js': 'text/javascript; charset=utf-8',
      'main.js.map': 'application/json; charset=utf-8',
      'style.css': 'text/css; charset=utf-8',
      'models/semfreeze-base/config.json': 'application/json; charset=utf-8',
      'models/semfreeze-base/model.safetensors': 'application/octet-stream',
      'models/semfreeze-base/loss-curve.svg': 'image/svg+xml',
      'test/fixtures/gpt2-tiny/config.json': 'application/json; charset=utf-8',
      'data/README.md': 'text/plain; charset=utf-8',
    };
    for (const [path, type] of Object.entries(types)) {
      const r = await fetch(server.url + path, { method: 'HEAD' });
      expect(r.status, path).toBe(200);
      expect(r.headers.get('content-type'), path).toBe(type);
    }
  });

  it('answers HEAD with the length and no body, and OPTIONS preflight with the methods and Range allowed', async () => {
    const head = await fetch(server.url + fixture, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(size));
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    const pre = await fetch(server.url + fixture, { method: 'OPTIONS', headers: { 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'range', Origin: 'http://example.com' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-methods')).toMatch(/GET/);
    expect(pre.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('range');
    const post = await fetch(server.url + fixture, { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
  });

  it('HTTP Range: bytes=a-b, bytes=a-, bytes=-n give 206 with Content-Range; past the end gives 416', async () => {
    const get = (range: string) => fetch(server.url + fixture, { headers: { Range: range } });
    const cases: [string, number, number][] = [
      ['bytes=0-0', 0, 0],
      ['bytes=0-9', 0, 9],
      ['bytes=100-199', 100, 199],
      [`bytes=${size - 10}-`, size - 10, size - 1],
      ['bytes=-7', size - 7, size - 1],
      [`bytes=-${size + 100}`, 0, size - 1],
      [`bytes=5-${size + 1000}`, 5, size - 1],
    ];
    for (const [range, a, b] of cases) {
      const r = await get(range);
      expect(r.status, range).toBe(206);
      expect(r.headers.get('content-range'), range).toBe(`bytes ${a}-${b}/${size}`);
      expect(r.headers.get('content-length'), range).toBe(String(b - a + 1));
      expect(Buffer.from(await r.arrayBuffer()).equals(bytes.subarray(a, b + 1)), range).toBe(true);
    }
    for (const range of [`bytes=${size}-`, `bytes=${size + 5}-${size + 9}`, 'bytes=-0', 'bytes=9-5']) {
      const r = await get(range);
      expect(r.status, range).toBe(416);
      expect(r.headers.get('content-range'), range).toBe(`bytes */${size}`);
      await r.arrayBuffer();
    }
    // No range, or one this server ignores (another unit, several ranges): the whole file.
    for (const range of [undefined, 'items=0-5', 'bytes=0-1,5-6']) {
      const r = await fetch(server.url + fixture, { headers: range ? { Range: range } : {} });
      expect(r.status, String(range)).toBe(200);
      expect(new Uint8Array(await r.arrayBuffer()).length).toBe(size);
    }
  });

  it('parseRange', () => {
    expect(parseRange(undefined, 10)).toBeNull();
    expect(parseRange('bytes=2-4', 10)).toEqual({ start: 2, end: 4 });
    expect(parseRange('bytes=2-', 10)).toEqual({ start: 2, end: 9 });
    expect(parseRange('bytes=-3', 10)).toEqual({ start: 7, end: 9 });
    expect(parseRange('bytes=0-', 0)).toBe('unsatisfiable');
    expect(parseRange('bytes=10-', 10)).toBe('unsatisfiable');
    expect(parseRange('bytes=-', 10)).toBeNull();
  });

  it('serves nothing else of the repository, and refuses .. traversal', async () => {
    for (const path of ['/package.json', '/src/gpu/device.ts', '/kernels/gelu.wgsl', '/scripts/serve-web.mjs', '/models/', '/models/semfreeze-base', '/test/web-infra.test.ts', '/no-such-file.js']) {
      const r = await rawRequest(server.url, path);
      expect(r.status, path).toBe(404);
    }
    for (const path of [
      '/models/../package.json',
      '/models/semfreeze-base/../../package.json',
      '/test/fixtures/%2e%2e/%2e%2e/package.json',
      '/data/..%2f..%2fpackage.json',
      '/../package.json',
      '/./index.html',
      '/models/..%5c..%5cpackage.json',
      '/models//semfreeze-base/config.json',
    ]) {
      const r = await rawRequest(server.url, path);
      expect(r.status, path).toBe(403);
    }
  });

  it('refuses a symlink that leads out of a served folder, follows one that stays inside', async () => {
    const root = tempDir('web-root');
    mkdirSync(join(root, 'models', 'm'), { recursive: true });
    writeFileSync(join(root, 'secret.txt'), 'secret');
    writeFileSync(join(root, 'models', 'm', 'config.json'), '{"n": 1}');
    symlinkSync(join(root, 'secret.txt'), join(root, 'models', 'escape.txt'));
    symlinkSync(join(root, 'models', 'm'), join(root, 'models', 'alias'));
    symlinkSync(root, join(root, 'models', 'up'));
    const s = await serveWeb({ root, distDir: join(root, 'dist') });
    try {
      expect((await rawRequest(s.url, '/models/escape.txt')).status).toBe(403);
      expect((await rawRequest(s.url, '/models/up/secret.txt')).status).toBe(403);
      const inside = await rawRequest(s.url, '/models/alias/config.json');
      expect(inside).toEqual({ status: 200, body: '{"n": 1}' });
      expect((await rawRequest(s.url, '/')).status).toBe(404); // no dist built
    } finally {
      await s.close();
    }
  });
});

describe('summarizeAdapter', () => {
  it("Chromium's SwiftShader: software, vulkan (swiftshader)", () => {
    const s = summarizeAdapter({ vendor: 'google', architecture: 'swiftshader', device: '', description: '', isFallbackAdapter: true });
    expect(s).toEqual({ vendor: 'google', architecture: 'swiftshader', device: '', description: '', backend: 'vulkan (swiftshader)', isSoftware: true });
    // Without isFallbackAdapter (older browsers put it on GPUAdapter), the architecture alone says so.
    expect(summarizeAdapter({ vendor: 'google', architecture: 'swiftshader' })).toMatchObject({ backend: 'vulkan (swiftshader)', isSoftware: true });
  });
  it("Dawn's lavapipe (Mesa llvmpipe): software, vulkan", () => {
    const s = summarizeAdapter({ vendor: 'mesa', architecture: 'software', device: 'llvmpipe-llvm-15-0-6-256-bits-', description: 'llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1', isFallbackAdapter: true });
    expect(s).toMatchObject({ vendor: 'mesa', architecture: 'software', backend: 'vulkan', isSoftware: true });
    expect(summarizeAdapter({ vendor: 'mesa', architecture: 'software', description: 'llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)' }).isSoftware).toBe(true);
  });
  it('hardware adapters are not software; an unknown description is backend unknown', () => {
    expect(summarizeAdapter({ vendor: 'nvidia', architecture: 'ampere', description: 'NVIDIA GeForce RTX 3080 - Vulkan 1.3' })).toMatchObject({ backend: 'vulkan', isSoftware: false });
    expect(summarizeAdapter({ vendor: 'apple', architecture: 'metal-3', description: 'Apple M2 Metal' })).toMatchObject({ backend: 'metal', isSoftware: false });
    expect(summarizeAdapter({ vendor: 'intel', architecture: 'gen-12lp', description: '', isFallbackAdapter: false })).toMatchObject({ backend: 'unknown', isSoftware: false });
    expect(summarizeAdapter({})).toEqual({ vendor: '', architecture: '', device: '', description: '', backend: 'unknown', isSoftware: false });
  });
});

const chromium = chromiumPath();
if (!chromium) console.warn('web-infra: skipping the Chromium tests: no Chromium found (npm run setup installs Debian\'s chromium; or set SEMFREEZE_CHROMIUM)');
describe.skipIf(!chromium)(`in headless Chromium with SwiftShader WebGPU${chromium ? '' : ' (skipped: no Chromium; `npm run setup` installs it)'}`, () => {
  let browser: Browser;
  let server: { url: string; close(): Promise<void> };
  beforeAll(async () => {
    const out = tempDir('web-page');
    await buildFixture(out);
    server = await serveWeb({ distDir: out });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('the bundled page carries every kernel, each compiles on SwiftShader, and the adapter is detected as software', async () => {
    const page = await openPage(browser, server.url, { timeoutMs: 60_000 });
    expect(page.state, page.result + page.console.join('\n')).toBe('done');
    const r = JSON.parse(page.result) as {
      kernels: string[];
      lengths: Record<string, number>;
      hasGpu: boolean;
      info: { vendor: string; architecture: string };
      adapter: { backend: string; isSoftware: boolean };
      compileErrors: Record<string, string[]>;
    };
    expect(r.kernels).toEqual(kernelNames);
    for (const k of kernelNames) expect(r.lengths[k], k).toBe(readFileSync(join(repoRoot, 'kernels', `${k}.wgsl`), 'utf8').length);
    expect(r.hasGpu, page.console.join('\n')).toBe(true);
    expect(r.info).toMatchObject({ vendor: 'google', architecture: 'swiftshader' });
    expect(r.adapter).toMatchObject({ backend: 'vulkan (swiftshader)', isSoftware: true });
    expect(r.compileErrors).toEqual({});
    expect(page.console.filter((l) => l.startsWith('[pageerror]'))).toEqual([]);
  });

  it('the page reads a model file by HTTP Range from the same server', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(server.url);
      const got = await page.evaluate(async () => {
        const r = await fetch('/models/semfreeze-base/model.safetensors', { headers: { Range: 'bytes=0-7' } });
        const b = new Uint8Array(await r.arrayBuffer());
        return { status: r.status, range: r.headers.get('Content-Range'), header: Number(new DataView(b.buffer).getBigUint64(0, true)) };
      });
      const file = readFileSync(join(repoRoot, 'models/semfreeze-base/model.safetensors'));
      expect(got).toEqual({ status: 206, range: `bytes 0-7/${file.length}`, header: Number(file.readBigUInt64LE(0)) });
    } finally {
      await page.close();
    }
  });
});
