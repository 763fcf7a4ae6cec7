#!/usr/bin/env node
// `npm run build:web`: bundle the browser build with esbuild into web/dist/:
//   src/browser.ts → semfreeze.js  (the library bundle a page embeds)
//   web/main.ts    → main.js       (the semfreeze page)
// plus web/index.html, web/*.html (the embedding example) and web/*.css. The WGSL kernels are compiled into the bundle through the
// virtual module `semfreeze:kernels` (default export: { [kernel basename]: WGSL source }), so the
// page fetches no kernel files. A bundle that would pull a Node module (`node:*`, a Node builtin) or
// the `webgpu` package (Dawn for Node) fails the build, naming the import and who imports it.
import * as esbuild from 'esbuild';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export class WebBuildError extends Error {
  constructor(message) {
    super(message);
    this.name = 'WebBuildError';
  }
}

/** The default entry points: output name (without .js) → source, relative to the repository root. */
export const DEFAULT_ENTRY_POINTS = { semfreeze: 'src/browser.ts', main: 'web/main.ts' };

const KERNELS_MODULE = 'semfreeze:kernels';
/** Imports a browser bundle must never contain (besides every Node builtin, with or without `node:`). */
const FORBIDDEN_PACKAGES = ['webgpu'];
const NODE_BUILTINS = new Set(builtinModules.filter((m) => !m.startsWith('_')));

/** kernels/*.wgsl as { basename: source }, sorted by name. */
export function readKernels(root = repoRoot) {
  const dir = join(root, 'kernels');
  const kernels = {};
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.wgsl')).sort()) kernels[f.slice(0, -'.wgsl'.length)] = readFileSync(join(dir, f), 'utf8');
  return kernels;
}

/** Resolves `semfreeze:kernels` to a virtual module holding every kernel's source. */
function kernelsPlugin(root) {
  return {
    name: 'semfreeze-kernels',
    setup(build) {
      build.onResolve({ filter: /^semfreeze:kernels$/ }, () => ({ path: 'kernels', namespace: 'semfreeze-kernels' }));
      build.onLoad({ filter: /.*/, namespace: 'semfreeze-kernels' }, () => {
        const kernels = readKernels(root);
        return {
          contents: `export default ${JSON.stringify(kernels)};\n`,
          loader: 'js',
          watchDirs: [join(root, 'kernels')],
          watchFiles: Object.keys(kernels).map((k) => join(root, 'kernels', `${k}.wgsl`)),
        };
      });
    },
  };
}

function isForbidden(spec) {
  if (spec.startsWith('node:')) return true;
  const pkg = spec.split('/')[0];
  return NODE_BUILTINS.has(spec) || NODE_BUILTINS.has(pkg) || FORBIDDEN_PACKAGES.includes(pkg);
}

/** Refuses Node builtins and the `webgpu` package at resolve time, naming the importing file. */
function browserOnlyPlugin(root) {
  return {
    name: 'semfreeze-browser-only',
    setup(build) {
      build.onResolve({ filter: /.*/ }, (args) => {
        if (args.kind === 'entry-point' || !isForbidden(args.path)) return undefined;
        const from = args.importer ? relative(root, args.importer) : '(entry)';
        const what = FORBIDDEN_PACKAGES.includes(args.path.split('/')[0]) ? 'the Node-only package' : 'the Node module';
        return { errors: [{ text: `${from} imports "${args.path}": ${what} "${args.path}" cannot go into a browser bundle (only src/platform/browser.ts may be used in the browser build; src/platform/node.ts is Node-only)` }] };
      });
    },
  };
}

/** The import specifiers in bundled output that mean a Node module slipped through. */
const OUTPUT_IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\bimport\s+)"(node:[^"]*|webgpu(?:\/[^"]*)?)"/g;

/** Scans built JavaScript for imports of Node modules or `webgpu`; returns the offending specifiers. */
export function findNodeImports(code) {
  const found = new Set();
  for (const m of code.matchAll(OUTPUT_IMPORT)) found.add(m[1]);
  return [...found];
}

function formatMessages(messages, root) {
  return messages
    .map((m) => {
      const where = m.location ? `${isAbsolute(m.location.file) ? relative(root, m.location.file) : m.location.file}:${m.location.line}:${m.location.column}: ` : '';
      const notes = (m.notes ?? []).map((n) => `\n  note: ${n.text}`).join('');
      return `${where}${m.text}${notes}`;
    })
    .join('\n');
}

/**
 * Build the browser bundles.
 * @param {object} [opts]
 * @param {string} [opts.outdir] output folder (relative to the repository root unless absolute), default web/dist
 * @param {boolean} [opts.minify]
 * @param {Record<string, string>} [opts.entryPoints] output name → source file (default DEFAULT_ENTRY_POINTS)
 * @param {string[]} [opts.copy] files copied into outdir as they are (default web/index.html and web/*.css)
 * @param {string} [opts.root] repository root (where kernels/ is)
 * @returns {Promise<{ outdir: string, files: string[], metafile: object }>}
 */
export async function buildWeb({ outdir = 'web/dist', minify = false, entryPoints = DEFAULT_ENTRY_POINTS, copy, root = repoRoot } = {}) {
  const out = resolve(root, outdir);
  for (const src of Object.values(entryPoints)) {
    if (!existsSync(resolve(root, src))) throw new WebBuildError(`build-web: entry point ${src} does not exist`);
  }
  const copied = copy ?? defaultCopies(root);
  for (const f of copied) if (!existsSync(resolve(root, f))) throw new WebBuildError(`build-web: ${f} does not exist`);

  let result;
  try {
    result = await esbuild.build({
      absWorkingDir: root,
      entryPoints: Object.entries(entryPoints).map(([name, src]) => ({ in: resolve(root, src), out: name })),
      outdir: out,
      bundle: true,
      platform: 'browser',
      format: 'esm',
      target: 'es2022',
      sourcemap: true,
      minify,
      metafile: true,
      logLevel: 'silent',
      external: [],
      plugins: [kernelsPlugin(root), browserOnlyPlugin(root)],
    });
  } catch (e) {
    if (Array.isArray(e?.errors) && e.errors.length > 0) throw new WebBuildError(`build-web: the browser bundle failed:\n${formatMessages(e.errors, root)}`);
    throw e;
  }

  const files = [];
  for (const [file, info] of Object.entries(result.metafile.outputs)) {
    const abs = resolve(root, file);
    files.push(abs);
    if (!file.endsWith('.js')) continue;
    const bad = findNodeImports(await readFile(abs, 'utf8'));
    if (bad.length > 0) {
      const importers = Object.entries(result.metafile.inputs)
        .filter(([, input]) => input.imports.some((i) => bad.includes(i.path)))
        .map(([p]) => p);
      throw new WebBuildError(`build-web: ${relative(root, abs)} imports ${bad.map((b) => `"${b}"`).join(', ')}, which a browser cannot load${importers.length > 0 ? ` (imported by ${importers.join(', ')})` : ''}${info.entryPoint ? `; entry point ${info.entryPoint}` : ''}`);
    }
  }

  await mkdir(out, { recursive: true });
  for (const f of copied) {
    const dest = join(out, basename(f));
    await copyFile(resolve(root, f), dest);
    files.push(dest);
  }
  return { outdir: out, files, metafile: result.metafile };
}

function defaultCopies(root) {
  const web = join(root, 'web');
  const pages = existsSync(web) ? readdirSync(web).filter((f) => f.endsWith('.css') || (f.endsWith('.html') && f !== 'index.html')).sort().map((f) => `web/${f}`) : [];
  return ['web/index.html', ...pages];
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const minify = process.argv.includes('--minify');
  const t0 = performance.now();
  try {
    const { outdir, files } = await buildWeb({ minify });
    process.stderr.write(`build-web: ${files.length} files in ${relative(process.cwd(), outdir) || '.'} (${Math.round(performance.now() - t0)} ms)\n`);
    for (const f of files) process.stderr.write(`  ${relative(process.cwd(), f)}\n`);
  } catch (e) {
    process.stderr.write(`${e instanceof WebBuildError ? e.message : e?.stack ?? e}\n`);
    process.exit(1);
  }
}
