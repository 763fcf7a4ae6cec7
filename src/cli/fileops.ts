// The file operations that must survive faults (the --out probe, checkpoint saves and their
// recovery) go through fileOp, one call per operation, so that tests can stop or fail any one of
// them: SEMFREEZE_TEST_FAULT=crash@N kills the process (SIGKILL, no cleanup) just before the N-th
// operation, ENOSPC@N (any errno code) makes the N-th fail with that code, and `log` prints each
// operation to stderr as `fileop N: what`. Unset, fileOp only runs the operation.
import { open } from 'node:fs/promises';

export interface FaultPlan {
  /** 'crash', or an errno code such as 'ENOSPC'. */
  kind: string;
  at: number;
  /** In-process tests: a crash throws SimulatedCrash and every later operation throws too. */
  simulate?: boolean;
}

/** What a test sees instead of the process dying: after it, no file operation runs. */
export class SimulatedCrash extends Error {
  constructor(at: number) {
    super(`simulated crash before file operation ${at}`);
    this.name = 'SimulatedCrash';
  }
}

function planFromEnv(spec: string | undefined): { plan: FaultPlan | null; log: boolean } {
  if (!spec) return { plan: null, log: false };
  if (spec === 'log') return { plan: null, log: true };
  const m = /^(crash|E[A-Z]+)@(\d+)$/.exec(spec);
  if (!m) throw new Error(`SEMFREEZE_TEST_FAULT: expected crash@N, ECODE@N or log, got '${spec}'`);
  return { plan: { kind: m[1]!, at: Number(m[2]) }, log: false };
}

const fromEnv = planFromEnv(process.env.SEMFREEZE_TEST_FAULT);
let plan = fromEnv.plan;
const logOps = fromEnv.log;
let count = 0;
let crashed = false;

/** Tests: replace the fault plan (null = none) and restart the count. */
export function setFaultPlan(p: FaultPlan | null): void {
  plan = p;
  count = 0;
  crashed = false;
}

/** How many operations have run (or been attempted) since the start or the last setFaultPlan. */
export const fileOpCount = (): number => count;

export async function fileOp<T>(what: string, run: () => Promise<T>): Promise<T> {
  if (crashed) throw new SimulatedCrash(count);
  count++;
  if (logOps) process.stderr.write(`fileop ${count}: ${what}\n`);
  if (plan && count === plan.at) {
    if (plan.kind === 'crash') {
      if (plan.simulate) {
        crashed = true;
        throw new SimulatedCrash(count);
      }
      process.kill(process.pid, 'SIGKILL');
      await new Promise(() => {});
    }
    throw Object.assign(new Error(`${plan.kind}: injected fault, ${what}`), { code: plan.kind });
  }
  return run();
}

/** A file's contents: text, bytes, or bytes in chunks (written one after another). */
export type FileData = string | Uint8Array | Uint8Array[];

/** Write a file and flush it to the disk before returning (a rename after it then never exposes a hole). */
export async function writeDurable(path: string, data: FileData): Promise<void> {
  const fh = await open(path, 'w');
  try {
    // writeFile on a handle continues from its position: chunks land one after another.
    for (const chunk of Array.isArray(data) ? data : [data]) await fh.writeFile(chunk);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Flush a directory's entries (the renames in it) to the disk. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
