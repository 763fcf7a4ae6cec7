// Running the semfreeze CLI as a child process (`node --import tsx bin/semfreeze.ts ...`) for
// end-to-end tests: exit code, stdout, stderr, and helpers for temp dirs and corrupt fixtures.
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(REPO, 'bin', 'semfreeze.ts');
/** tsx's loader by absolute URL, so that a child started in another working directory finds it. */
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stderr without Dawn's start-up warnings and blank lines: what semfreeze itself said. */
  messages: string[];
  ms: number;
}

/** Lines Dawn/Mesa print on every start, not from semfreeze. */
const NOISE = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced/;

export interface RunOptions {
  timeoutMs?: number;
  env?: Record<string, string>;
  /** Working directory of the child (default: the repository). */
  cwd?: string;
  /** Called once the child is started (for tests that signal it). */
  onSpawn?: (child: ChildProcess) => void;
}

// src/platform/node.ts makes a fresh XDG_RUNTIME_DIR temp dir (never removed) in every process that
// has none; give the children one fixed dir instead, reused by every run.
function childXdg(): string {
  if (process.env.XDG_RUNTIME_DIR) return process.env.XDG_RUNTIME_DIR;
  const dir = join(tmpdir(), `semfreeze-test-xdg-${process.getuid?.() ?? 0}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

export function runCli(args: string[], opts: RunOptions = {}): Promise<CliResult> {
  const t0 = performance.now();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, BIN, ...args], {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, XDG_RUNTIME_DIR: childXdg(), SEMFREEZE_DEBUG: '', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    opts.onSpawn?.(child);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const messages = stderr.split('\n').filter((l) => l.trim().length > 0 && !NOISE.test(l));
      resolvePromise({ code, signal, stdout, stderr, messages, ms: performance.now() - t0 });
    });
  });
}

/** Shows the command's output when an expectation about it fails. */
export function describeRun(r: CliResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout ---\n${r.stdout.slice(-3000)}\n--- stderr ---\n${r.stderr.slice(-3000)}`;
}

/** Parse the JSON a `--json` command printed on stdout. */
export function stdoutJson<T = Record<string, unknown>>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch (e) {
    throw new Error(`stdout is not JSON (${(e as Error).message})\n${describeRun(r)}`);
  }
}

/**
 * A user error: exit code 1, and stderr ends with exactly one message line `semfreeze: <file>: <problem>`
 * (no "error:" prefix, which marks an unexpected exception, and no stack trace). Progress lines
 * printed before the failure (e.g. "model DIR: ... loaded") are allowed. stdout is empty, or (--json) exactly
 * {"error": <the message>}.
 */
export function userErrorLine(r: CliResult): string {
  const where = describeRun(r);
  if (r.code !== 1) throw new Error(`expected exit code 1\n${where}`);
  const errors = r.messages.filter((l) => l.startsWith('semfreeze: '));
  if (errors.length !== 1) throw new Error(`expected exactly one 'semfreeze: ...' line on stderr, got ${errors.length}\n${where}`);
  const line = errors[0]!;
  if (r.messages.at(-1) !== line) throw new Error(`expected the error to be the last line on stderr\n${where}`);
  if (line.startsWith('semfreeze: error: ')) throw new Error(`an unexpected exception (not a user error)\n${where}`);
  if (/^\s+at /m.test(r.stderr)) throw new Error(`a stack trace on stderr\n${where}`);
  // With --json a failure is also {"error": <the message>} on stdout, so stdout stays JSON.
  const jsonError = `${JSON.stringify({ error: line.slice('semfreeze: '.length) })}\n`;
  if (r.stdout.length > 0 && r.stdout !== jsonError) throw new Error(`unexpected output on stdout\n${where}`);
  return line;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `semfreeze-test-${prefix}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** A temp copy of a fixture model directory (config.json, model*.safetensors, tokenizer.json, train.txt). */
export function copyModel(fixtureDir: string, prefix: string, opts: { tokenizer?: boolean } = {}): string {
  const dir = tempDir(prefix);
  for (const f of ['config.json', 'model.safetensors', 'train.txt', ...(opts.tokenizer === false ? [] : ['tokenizer.json'])]) {
    cpSync(join(fixtureDir, f), join(dir, f));
  }
  return dir;
}

/** Split a safetensors file into its header object and data section. */
export function splitSafetensors(bytes: Uint8Array): { header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>; data: Uint8Array } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return { header, data: bytes.subarray(8 + n) };
}

/** Reassemble a safetensors file from a (possibly edited) header and a data section. */
export function joinSafetensors(header: object, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + data.length).fill(0x20, 8, 8 + padded);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.set(data, 8 + padded);
  return out;
}

/** Rewrite DIR/model.safetensors through `edit`. */
export function editSafetensors(dir: string, edit: (bytes: Uint8Array) => Uint8Array, file = 'model.safetensors'): void {
  const path = join(dir, file);
  writeFileSync(path, edit(new Uint8Array(readFileSync(path))));
}
