// Learning-rate schedules: pure functions of the 0-based optimizer step s.
//
//   warmup (W steps, W ≥ 0):  s < W        →  lr·(s+1)/W        (first step lr/W, step W−1 reaches lr)
//   constant:                 s ≥ W        →  lr
//   cosine (T total steps):   W ≤ s < T    →  minLr + (lr − minLr)·(1 + cos(π·p))/2,
//                                              p = (s − W)/(T − W − 1)  (p = 0 when T − W = 1)
//                             s ≥ T        →  minLr
//
// So with no warmup the first step uses the full rate, the first step after warmup uses the full
// rate, and the last step (s = T−1) uses exactly minLr. minLr defaults to 10% of lr
// (DEFAULT_MIN_LR_RATIO), as nanoGPT/llm.c, so that the last steps still learn; pass minLr: 0 for
// a decay to zero. The optimizer's setStep takes t = s + 1.

export type ScheduleKind = 'constant' | 'cosine';

export interface ScheduleSpec {
  kind: ScheduleKind;
  /** Peak learning rate (> 0). */
  lr: number;
  /** Linear warmup steps (integer ≥ 0, default 0). */
  warmup?: number;
  /** Total optimizer steps, warmup included (cosine: required, ≥ warmup). */
  totalSteps?: number;
  /** Cosine floor, 0 ≤ minLr ≤ lr (default lr·DEFAULT_MIN_LR_RATIO). */
  minLr?: number;
}

export const DEFAULT_MIN_LR_RATIO = 0.1;

export class ScheduleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScheduleError';
  }
}

/** A validated schedule with every default filled in. */
export interface Schedule {
  kind: ScheduleKind;
  lr: number;
  warmup: number;
  /** Infinity for a constant schedule without totalSteps. */
  totalSteps: number;
  minLr: number;
}

export function makeSchedule(spec: ScheduleSpec): Schedule {
  const { kind, lr } = spec;
  if (kind !== 'constant' && kind !== 'cosine') throw new ScheduleError(`unknown schedule '${String(kind)}' (expected constant or cosine)`);
  if (!(Number.isFinite(lr) && lr > 0)) throw new ScheduleError(`learning rate must be finite and > 0, got ${lr}`);
  const warmup = spec.warmup ?? 0;
  if (!(Number.isInteger(warmup) && warmup >= 0)) throw new ScheduleError(`warmup must be an integer ≥ 0, got ${warmup}`);
  let totalSteps = Infinity;
  if (spec.totalSteps !== undefined && !(kind === 'constant' && spec.totalSteps === Infinity)) {
    totalSteps = spec.totalSteps;
    if (!(Number.isInteger(totalSteps) && totalSteps >= 1)) throw new ScheduleError(`totalSteps must be an integer ≥ 1, got ${totalSteps}`);
    if (warmup > totalSteps) throw new ScheduleError(`warmup (${warmup}) is longer than totalSteps (${totalSteps})`);
  } else if (kind === 'cosine') {
    throw new ScheduleError('a cosine schedule needs totalSteps');
  }
  const minLr = spec.minLr ?? lr * DEFAULT_MIN_LR_RATIO;
  if (!(Number.isFinite(minLr) && minLr >= 0 && minLr <= lr)) throw new ScheduleError(`minLr must be in [0, lr = ${lr}], got ${minLr}`);
  return { kind, lr, warmup, totalSteps, minLr };
}

/** The learning rate of 0-based step s. */
export function learningRate(schedule: ScheduleSpec | Schedule, s: number): number {
  const sc = makeSchedule(schedule);
  if (!(Number.isInteger(s) && s >= 0)) throw new ScheduleError(`step must be an integer ≥ 0, got ${s}`);
  const { lr, warmup: W, totalSteps: T, minLr } = sc;
  if (s < W) return (lr * (s + 1)) / W;
  if (sc.kind === 'constant') return lr;
  if (s >= T) return minLr;
  const D = T - W;
  const k = s - W;
  if (k === 0) return lr;
  if (k === D - 1) return minLr;
  const p = k / (D - 1);
  return minLr + ((lr - minLr) * (1 + Math.cos(Math.PI * p))) / 2;
}

/** Learning rates of steps 0..n−1 (n defaults to totalSteps). */
export function learningRates(schedule: ScheduleSpec | Schedule, n?: number): number[] {
  const sc = makeSchedule(schedule);
  const count = n ?? sc.totalSteps;
  if (!(Number.isInteger(count) && count >= 0)) throw new ScheduleError(`number of steps must be an integer ≥ 0, got ${count}`);
  const out: number[] = [];
  for (let s = 0; s < count; s++) out.push(learningRate(sc, s));
  return out;
}

/** One line for logs, e.g. "cosine lr 0.0003 → 3e-5 over 1000 steps, warmup 100". */
export function describeSchedule(schedule: ScheduleSpec | Schedule): string {
  const sc = makeSchedule(schedule);
  const warm = sc.warmup > 0 ? `, warmup ${sc.warmup}` : '';
  const n = (x: number) => String(Number(x.toPrecision(6)));
  if (sc.kind === 'constant') return `constant lr ${n(sc.lr)}${warm}`;
  return `cosine lr ${n(sc.lr)} → ${n(sc.minLr)} over ${sc.totalSteps} steps${warm}`;
}
