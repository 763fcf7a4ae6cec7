// What every command shares: opening the runtime, errors, progress on stderr, JSON on stdout.
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import type { KernelBuildEvent } from '../gpu/kernels.ts';
import { Runtime } from '../gpu/runtime.ts';
import { nodePlatform, packageRoot } from '../platform/node.ts';

import { UserError } from '../util/errors.ts';
export { UserError };

/** The machine a measurement ran on (benchmark JSON). */
export function machineInfo(rt: Runtime) {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    adapter: rt.gpu.info,
    timestamps: rt.gpu.hasTimestamps,
  };
}

/** Errors about the user's files, flags or machine: their message is the whole story. */
const USER_FACING = new Set(['UserError', 'NoAdapterError', 'ConfigError', 'SafetensorsError', 'TokenizerError', 'TokenDataError', 'FileError', 'KernelCompileError', 'ModelLoadError', 'AnalysisError', 'NotPositiveDefiniteError', 'OptimizerError', 'ScheduleError']);

/**
 * Print an error as one `semfreeze: ...` line on stderr (and, with --json, as {"error": ...} on stdout,
 * so stdout is JSON in failure too); the stack only with --debug. Returns the exit code.
 */
export function reportError(e: unknown, o: { debug: boolean; json: boolean }): number {
  const err = e instanceof Error ? e : new Error(String(e));
  const known = USER_FACING.has(err.name);
  const hint = known || o.debug ? '' : ' (an internal error: rerun with --debug for the stack trace)';
  process.stderr.write(`semfreeze: ${known ? '' : 'error: '}${err.message}${hint}\n`);
  if (o.debug) process.stderr.write(`${err.stack ?? ''}\n`);
  if (o.json) process.stdout.write(`${JSON.stringify({ error: err.message })}\n`);
  return 1;
}

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

let runtime: Promise<Runtime> | null = null;

export function openRuntime(): Promise<Runtime> {
  runtime ??= Runtime.open(nodePlatform).then((rt) => {
    rt.kernels.onBuild = compileProgress();
    return rt;
  });
  return runtime;
}

/** A pipeline served from the driver's shader cache builds in ~2–10 ms; a cold compile takes 0.1–4 s. */
const COLD_BUILD_MS = 150;
/** Slow builds must add up to this before we speak: one slow build on a busy machine is not a cold cache. */
const COLD_TOTAL_MS = 1000;

/**
 * The first run on a machine compiles every kernel (tens of seconds on 2 cores, before any other
 * output could move): say so, with a count, at most every 5 s.
 */
function compileProgress(): (e: KernelBuildEvent) => void {
  let compiled = 0;
  let ms = 0;
  let last = 0;
  return (e) => {
    if (e.ms < COLD_BUILD_MS) return;
    compiled++;
    ms += e.ms;
    const now = Date.now();
    if (ms < COLD_TOTAL_MS || now - last < 5000) return;
    last = now;
    progress(`compiling kernels (first run only) … ${compiled} compiled, ${(ms / 1000).toFixed(0)} s so far`);
  };
}

export function progress(line: string): void {
  // On a terminal, first clear a ProgressLine that may be drawn (it is redrawn on its next update).
  process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}${line}\n`);
}

/** A progress line that rewrites itself on a terminal and appends otherwise. */
export class ProgressLine {
  private last = 0;
  constructor(private readonly minIntervalMs = 250) {}
  update(line: string, force = false): void {
    const now = Date.now();
    // A log file (not a terminal) gets a line every 2 s at most, not a redraw every 250 ms.
    const interval = process.stderr.isTTY ? this.minIntervalMs : Math.max(this.minIntervalMs, 2000);
    if (!force && now - this.last < interval) return;
    this.last = now;
    if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${line}`);
    else process.stderr.write(`${line}\n`);
  }
  done(line?: string): void {
    if (line) this.update(line, true);
    if (process.stderr.isTTY) process.stderr.write('\n');
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export { parseFloatOption, parseIntOption } from '../util/options.ts';
