// What every command shares: opening the runtime, errors, progress on stderr, JSON on stdout.
import { Runtime } from '../gpu/runtime.ts';
import { nodePlatform } from '../platform/node.ts';

/** An error the user caused (bad file, bad flag): printed as one line, no stack. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

let runtime: Promise<Runtime> | null = null;

export function openRuntime(): Promise<Runtime> {
  runtime ??= Runtime.open(nodePlatform);
  return runtime;
}

export function progress(line: string): void {
  process.stderr.write(`${line}\n`);
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

export function parseIntOption(name: string, value: string, min = 0): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UserError(`${name} must be an integer ≥ ${min}, got '${value}'`);
  return n;
}

export function parseFloatOption(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n)) throw new UserError(`${name} must be a number, got '${value}'`);
  return n;
}
