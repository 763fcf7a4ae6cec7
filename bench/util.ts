// Shared benchmark plumbing: medians, JSON output, machine description.
import { cpus, totalmem } from 'node:os';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Runtime } from '../src/gpu/runtime.ts';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

export function machine(rt: Runtime) {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    adapter: rt.gpu.info,
    timestamps: rt.gpu.hasTimestamps,
  };
}

/** Write JSON results where --json FILE says, or to stdout. */
export function emit(result: unknown, argv = process.argv): void {
  const i = argv.indexOf('--json');
  const text = JSON.stringify(result, null, 2) + '\n';
  if (i >= 0 && argv[i + 1]) {
    mkdirSync(dirname(argv[i + 1]!), { recursive: true });
    writeFileSync(argv[i + 1]!, text);
    process.stderr.write(`wrote ${argv[i + 1]}\n`);
  } else {
    process.stdout.write(text);
  }
}

export function arg(name: string, fallback: number, argv = process.argv): number {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
}
