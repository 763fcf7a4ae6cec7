// One experiment run: load the pretrained model fresh, fine-tune it at one boundary with the shared
// settings (steps, learning rate, data order from the seed), then measure held-out quality, ms/step,
// GPU memory and the cost model's figures. Optionally reads per-block gradient norms after each step
// (the probe the gradient-based baselines decide from). Every buffer is released afterwards.
import { stepCost, type Boundary } from '../analysis/cost.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { loadModel } from '../model/load.ts';
import { paramSpecs } from '../model/params.ts';
import type { Platform } from '../platform/types.ts';
import { FINETUNE_DEFAULTS, FinetuneRun, type FinetuneSpec } from '../train/finetune.ts';
import { median } from '../util/stats.ts';
import { quality, qualityScore, type Quality } from './quality.ts';
import type { TaskData } from './tasks.ts';

export interface RunSettings {
  steps: number;
  batch: number;
  lr: number;
  warmup: number;
  /** Held-out windows (LM) or examples (classification) evaluated. */
  evalMax: number;
}

export interface RunRecord {
  task: string;
  boundary: Boundary;
  seed: number;
  lr: number;
  steps: number;
  batch: number;
  seq: number;
  split: 'validation' | 'test';
  quality: Quality;
  /** Higher is better: −loss (LM) or macro-F1 (classification). */
  score: number;
  /** Training loss every 10 steps (and the last). */
  losses: { step: number; loss: number }[];
  /** Median wall ms per step, the first step (pipeline compiles) left out. */
  msPerStep: number;
  /** GPU memory the training graph held (weights, activations, gradients, optimizer state, scratch). */
  gpuBytes: number;
  trainableParameters: number;
  analytic: { backwardFlops: number; stepFlops: number; memoryBytes: number; backwardFraction: number };
  seconds: number;
}

/** Per-block gradient norms ‖g_l‖ after each probe step, with the blocks' weight norms ‖θ_l‖ before training. */
export interface GradientProbe {
  gradNorms: number[][];
  weightNorms: number[];
}

function sumSquares(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return s;
}

export async function fineTuneRun(
  platform: Platform,
  rt: Runtime,
  modelDir: string,
  data: TaskData,
  o: { boundary: Boundary; seed: number; split: 'validation' | 'test'; settings: RunSettings; probe?: boolean; onStep?: (step: number, loss: number | undefined) => void },
): Promise<{ record: RunRecord; probe: GradientProbe | null }> {
  const t0 = platform.now();
  const mark = rt.memory.mark();
  try {
    const model = await loadModel(platform, rt, modelDir);
    const cfg = model.files.config;
    const N = cfg.nLayer;
    const freeze = o.boundary === 'none' ? null : o.boundary;
    const s = o.settings;
    const spec: FinetuneSpec = {
      ...FINETUNE_DEFAULTS,
      freeze, steps: s.steps, batch: s.batch, seq: data.seq, lr: s.lr, warmup: s.warmup, seed: o.seed,
      evalEvery: s.steps + 1, logEvery: 10, saveEvery: 0,
    };
    const run = await FinetuneRun.build(rt, model, data.train, null, spec);
    let probe: GradientProbe | null = null;
    const blockOf = new Map(paramSpecs(cfg).map((p) => [p.name, p.block]));
    if (o.probe) {
      const params = await model.weights.download(rt);
      const w = new Array<number>(N).fill(0);
      for (const [name, x] of params) {
        const b = blockOf.get(name) ?? -1;
        if (b >= 0 && b < N) w[b]! += sumSquares(x);
      }
      probe = { gradNorms: [], weightNorms: w.map(Math.sqrt) };
    }
    await run.run({
      onStep: async (entry) => {
        o.onStep?.(entry.step, entry.loss);
        if (!probe) return;
        const g = new Array<number>(N).fill(0);
        for (const [name, buf] of run.graph.grads) {
          const b = blockOf.get(name) ?? -1;
          if (b >= 0 && b < N) g[b]! += sumSquares(await rt.memory.readFloat32(buf));
        }
        probe.gradNorms.push(g.map(Math.sqrt));
      },
    });
    const evalData = o.split === 'test' ? data.test : data.validation;
    const q = await quality(rt, model.weights, evalData, s.batch * 2, s.evalMax);
    const cost = stepCost(cfg, run.fit.B * run.fit.accum, data.seq, o.boundary);
    const full = stepCost(cfg, run.fit.B * run.fit.accum, data.seq, 'none');
    const mem = run.graph.memoryBreakdown();
    const record: RunRecord = {
      task: data.task.name,
      boundary: o.boundary,
      seed: o.seed,
      lr: s.lr,
      steps: s.steps,
      batch: s.batch,
      seq: data.seq,
      split: o.split,
      quality: q,
      score: qualityScore(q),
      losses: run.log.filter((e) => e.loss !== undefined).map((e) => ({ step: e.step, loss: e.loss! })),
      msPerStep: median(run.log.slice(1).map((e) => e.ms)),
      gpuBytes: Object.values(mem).reduce((a, b) => a + b, 0),
      trainableParameters: run.trainableParameters(),
      analytic: {
        backwardFlops: cost.flops.backward,
        stepFlops: cost.flops.total,
        memoryBytes: cost.memory.totalBytes,
        backwardFraction: cost.flops.backward / full.flops.backward,
      },
      seconds: (platform.now() - t0) / 1000,
    };
    return { record, probe };
  } finally {
    rt.memory.releaseSince(mark);
  }
}
