// Shared benchmark plumbing: medians, JSON output, machine description.
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export { median } from '../src/util/stats.ts';

export { machineInfo as machine } from '../src/cli/common.ts';

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
