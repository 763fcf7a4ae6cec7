// Issue 10's rule: one core, two shells. Only src/platform/ (and the CLI in src/cli/) may know Node;
// everything else under src/ must bundle for a browser unchanged. A scan of the sources, so a new
// `import … from 'node:fs'` or a stray `process.env` fails here, naming the file and line.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');
const ALLOWED = [/^src\/platform\//, /^src\/cli\//];

/** What marks a file as Node-only: a node: or webgpu import, or Node's globals. */
const NODE_ONLY: { what: string; re: RegExp }[] = [
  { what: "a 'node:' module", re: /\bfrom\s+['"]node:|\bimport\s*\(\s*['"]node:|\brequire\s*\(\s*['"]node:/ },
  { what: "a Node builtin without 'node:'", re: /\bfrom\s+['"](fs|path|os|url|child_process|crypto|stream|util|worker_threads|fs\/promises)['"]/ },
  { what: "the 'webgpu' package (Dawn)", re: /\bfrom\s+['"]webgpu['"]|\bimport\s*\(\s*['"]webgpu['"]/ },
  { what: 'process', re: /(?<![\w.$])process\s*\./ },
  { what: 'Buffer', re: /(?<![\w.$])Buffer\s*[.(]/ },
];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Source text without comments and string contents (a comment may mention `process.` freely). */
function code(text: string): string {
  return text
    .replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, ' '))
    .replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1')
    .replace(/`(?:\\.|[^`\\])*`/g, (m) => m.replace(/[^\n]/g, ' '));
}

function nodeOnlyUses(path: string, text: string): string[] {
  const lines = code(text).split('\n');
  const found: string[] = [];
  lines.forEach((line, i) => {
    for (const { what, re } of NODE_ONLY) if (re.test(line)) found.push(`${path}:${i + 1}: uses ${what}: ${text.split('\n')[i]!.trim()}`);
  });
  return found;
}

describe('platform boundary', () => {
  it('no file under src/ outside src/platform/ and src/cli/ uses Node', () => {
    const offenders = sources(join(root, 'src'))
      .map((f) => relative(root, f).split('\\').join('/'))
      .filter((f) => !ALLOWED.some((re) => re.test(f)))
      .flatMap((f) => nodeOnlyUses(f, readFileSync(join(root, f), 'utf8')));
    expect(offenders).toEqual([]);
  });

  it('the scan finds each kind of Node use (it can fail)', () => {
    const samples = [
      "import { readFile } from 'node:fs/promises';",
      "const fs = await import('node:fs');",
      "import { join } from 'path';",
      "import { create } from 'webgpu';",
      'const home = process.env.HOME;',
      "const b = Buffer.from('x');",
    ];
    for (const s of samples) expect(nodeOnlyUses('x.ts', s), s).toHaveLength(1);
    for (const s of ['// process.env is read by the CLI', 'const label = `Buffer.from`;', 'x.process.y();', 'const GPUBuffer = 1;']) expect(nodeOnlyUses('x.ts', s), s).toEqual([]);
  });
});
