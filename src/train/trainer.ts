// The fine-tuning loop's core, platform-free: batches in a reproducible order, one optimizer step
// (accumulated micro-batches submitted back to back, one wait), the learning-rate schedule, and the
// loss read back only when asked for.
import type { TokenWindows } from '../data/tokens.ts';
import { learningRate, type Schedule } from './schedule.ts';
import type { TrainingGraph } from './graph.ts';
import type { BoundaryCache } from './boundary.ts';
import { mulberry32 } from '../util/random.ts';

/** Seeded permutation (Fisher–Yates with mulberry32). */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const next = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    const tmp = p[i]!;
    p[i] = p[j]!;
    p[j] = tmp;
  }
  return p;
}

export interface LoaderState {
  epoch: number;
  cursor: number;
}

/** Windows of the training data in batches of B; shuffled per epoch (seed + epoch) or in order. */
export class BatchLoader {
  private order: Uint32Array;
  state: LoaderState = { epoch: 0, cursor: 0 };

  constructor(readonly windows: TokenWindows, readonly B: number, readonly shuffle: boolean, readonly seed: number) {
    this.order = this.orderFor(0);
  }

  private orderFor(epoch: number): Uint32Array {
    if (!this.shuffle) return Uint32Array.from({ length: this.windows.count }, (_, i) => i);
    return permutation(this.windows.count, (this.seed * 1000003 + epoch) >>> 0);
  }

  restore(state: LoaderState): void {
    this.state = { ...state };
    this.order = this.orderFor(state.epoch);
  }

  /** The next B windows as flat ids/targets (B·T each); wraps into the next epoch. */
  next(): { ids: Int32Array; targets: Int32Array; windows: number[] } {
    const T = this.windows.seq;
    const ids = new Int32Array(this.B * T);
    const targets = new Int32Array(this.B * T);
    const used: number[] = [];
    for (let b = 0; b < this.B; b++) {
      if (this.state.cursor >= this.order.length) {
        this.state = { epoch: this.state.epoch + 1, cursor: 0 };
        this.order = this.orderFor(this.state.epoch);
      }
      const w = this.order[this.state.cursor++]!;
      used.push(w);
      ids.set(this.windows.inputs(w), b * T);
      targets.set(this.windows.targets(w), b * T);
    }
    return { ids, targets, windows: used };
  }
}

export interface StepResult {
  step: number;
  lr: number;
  /** Mean loss of the step's micro-batches, when read back. */
  loss: number | null;
  ms: number;
}

export class Trainer {
  /** Optimizer steps completed. */
  step = 0;

  /**
   * `waitLabel`: names this run's waits (runs interleaved in one process, as the demo's, keep apart).
   * `boundary`: the cache that feeds a graph built with cachedBoundary.
   */
  constructor(readonly graph: TrainingGraph, readonly schedule: Schedule, readonly maxGradNorm: number, readonly waitLabel = 'train-step', readonly boundary: BoundaryCache | null = null) {
    if (!!graph.shape.cachedBoundary !== !!boundary) throw new Error('a graph built with cachedBoundary needs a boundary cache, and only it');
  }

  async trainStep(loader: BatchLoader, readLoss: boolean): Promise<StepResult> {
    const g = this.graph;
    const rt = g.rt;
    const t0 = performance.now();
    const lr = learningRate(this.schedule, this.step);
    g.optimizer.setStep(this.step + 1, lr, { accumulation: g.shape.accum, maxGradNorm: this.maxGradNorm });
    for (let micro = 0; micro < g.shape.accum; micro++) {
      const batch = loader.next();
      // queue.writeBuffer is ordered with submits: each micro-batch sees its own ids, no wait needed.
      g.setBatch(batch.ids, batch.targets);
      if (this.boundary) g.setBoundary(await this.boundary.batch(batch.ids, batch.windows));
      rt.steps.submit(`micro ${micro}`, micro === 0 ? [...g.zeroItems, ...g.microItems[micro]!] : g.microItems[micro]!);
    }
    rt.steps.submit('update', g.updateItems);
    await rt.steps.waiter.wait(this.waitLabel);
    rt.steps.throwDeviceErrors('train step');
    this.step++;
    let loss: number | null = null;
    if (readLoss) {
      const l = await rt.memory.readFloat32(g.stepLosses, 0, g.shape.accum);
      loss = l.reduce((a, b) => a + b, 0) / l.length;
    }
    return { step: this.step, lr, loss, ms: performance.now() - t0 };
  }
}
