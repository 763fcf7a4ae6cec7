// Forward tokens/s and training-step time and GPU memory at several freeze boundaries, next to the
// analytic figures of the cost model (method.md §6). Random weights in the benchmark configs' shapes.
// The boundaries' training steps are timed interleaved (round-robin), so machine noise hits all alike.
// Configs: a small GPT-2, GPT-2 small's shape, and SmolLM2-135M's Llama shape (GQA 9/3 heads, SwiGLU,
// RMSNorm, rotary, 30 blocks) at a short sequence so that it stays feasible in software WebGPU.
//   tsx bench/model.ts [--config small|gpt2|smollm2|all] [--reps N] [--boundaries none,0,10,…] [--shape B,T] [--matmul transpose|tiled] [--json FILE]
// --shape sets the training step's and the forward's batch and sequence (GPU-sized runs: bench/gpu.sh);
// --matmul overrides the adapter's matmul path (ops/matmul.ts matmulPathFor) to compare the two.
import { Runtime } from '../src/gpu/runtime.ts';
import { matmulPathFor } from '../src/ops/matmul.ts';
import { nodePlatform } from '../src/platform/node.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { Gpt2Forward } from '../src/model/forward.ts';
import { GpuWeights } from '../src/model/weights.ts';
import { gpt2SmallConfig, randomParams, smolLM2_135MConfig } from '../src/model/random.ts';
import { paramCount } from '../src/model/params.ts';
import { TrainingGraph } from '../src/train/graph.ts';
import type { StepItem } from '../src/gpu/step.ts';
import { predictedSaving, stepCost } from '../src/analysis/cost.ts';
import { arg, emit, machine, median } from './util.ts';

interface BenchConfig {
  name: string;
  cfg: ModelConfig;
  forward: { B: number; T: number }[];
  train: { B: number; T: number };
  /** Freeze boundaries to time (null = full fine-tuning); default none, 0, N/2, N−1. */
  boundaries?: (number | null)[];
}

const SMALL: BenchConfig = {
  name: 'small (6×256, vocab 8192)',
  cfg: { modelType: 'gpt2', nLayer: 6, nEmbd: 256, nHead: 4, nInner: 1024, vocabSize: 8192, nPositions: 256, layerNormEpsilon: 1e-5, activation: 'gelu_tanh', tiedHead: true },
  forward: [{ B: 4, T: 128 }, { B: 1, T: 256 }],
  train: { B: 4, T: 128 },
};
const GPT2: BenchConfig = {
  name: 'GPT-2 small shape (12×768, vocab 50257)',
  cfg: gpt2SmallConfig(),
  forward: [{ B: 1, T: 256 }],
  train: { B: 1, T: 128 },
};
const SMOLLM2: BenchConfig = {
  name: 'SmolLM2-135M shape (Llama: 30×576, 9 heads / 3 kv, head_dim 64, SwiGLU 1536, vocab 49152)',
  cfg: smolLM2_135MConfig(),
  forward: [{ B: 1, T: 128 }],
  train: { B: 1, T: 128 },
  boundaries: [null, 0, 10, 20, 29, 30],
};

async function timeItems(run: () => Promise<number>, reps: number): Promise<number> {
  await run(); // warm-up: pipelines, first-touch of memory
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) ms.push(await run());
  return median(ms);
}

async function benchConfig(rt: Runtime, bc: BenchConfig, reps: number) {
  const { cfg } = bc;
  const log = (s: string) => process.stderr.write(`${s}\n`);
  log(`${bc.name}: ${(paramCount(cfg) / 1e6).toFixed(1)}M parameters`);
  const mark = rt.memory.mark();
  const weights = GpuWeights.upload(rt, cfg, randomParams(cfg, 7));
  const forward = [];
  for (const { B, T } of bc.forward) {
    const m = rt.memory.mark();
    const f = await Gpt2Forward.build(rt, weights, { B, T, saveFrom: cfg.nLayer, trace: { kind: 'none' }, loss: true, keepLogits: false });
    f.setBatch(Array.from({ length: B * T }, (_, i) => (i * 7919) % cfg.vocabSize), Array.from({ length: B * T }, (_, i) => (i * 104729) % cfg.vocabSize));
    const ms = await timeItems(async () => (await rt.steps.run('forward', f.items, { timestamps: true })).gpuMs!, reps);
    const tps = (B * T) / (ms / 1000);
    log(`  forward B=${B} T=${T}: ${ms.toFixed(0)} ms, ${tps.toFixed(0)} tokens/s`);
    forward.push({ B, T, medianMs: ms, tokensPerSecond: tps });
    rt.memory.releaseSince(m);
  }

  const { B, T } = bc.train;
  const N = cfg.nLayer;
  const boundaries: (number | null)[] = boundaryArg() ?? bc.boundaries ?? [null, 0, Math.floor(N / 2), N - 1];
  if (boundaries[0] !== null) throw new Error('--boundaries must start with none (the reference of every saving)');
  const weightBytes = rt.memory.liveBytes;
  const ids = Array.from({ length: B * T }, (_, i) => (i * 7919) % cfg.vocabSize);
  const targets = Array.from({ length: B * T }, (_, i) => (i * 104729) % cfg.vocabSize);
  const build = (K: number | null) => TrainingGraph.build(rt, weights, { B, T, freeze: K, accum: 1 }, { kind: 'adamw', weightDecay: 0.1, maxGradNorm: 1 });
  // Memory: each graph alone on top of the weights (what a run at that boundary holds).
  const memory: { bytes: number; byKind: Record<string, number> }[] = [];
  for (const K of boundaries) {
    const m = rt.memory.mark();
    await build(K);
    memory.push({ bytes: rt.memory.liveBytes, byKind: rt.memory.breakdown() });
    rt.memory.releaseSince(m);
  }
  // Time: all graphs built, their steps interleaved round-robin so machine noise hits all alike.
  const m = rt.memory.mark();
  const graphs: { g: TrainingGraph; items: StepItem[]; t: number; ms: number[] }[] = [];
  for (const K of boundaries) {
    const g = await build(K);
    g.setBatch(ids, targets);
    graphs.push({ g, items: [...g.zeroItems, ...g.microItems[0]!, ...g.updateItems], t: 0, ms: [] as number[] });
  }
  for (let r = 0; r <= reps; r++) {
    for (const x of graphs) {
      x.g.setBatch(ids, targets);
      x.g.optimizer.setStep(++x.t, 1e-5, { accumulation: 1, maxGradNorm: 1 });
      const ms = (await rt.steps.run('train-step', x.items, { timestamps: true })).gpuMs!;
      if (r > 0) x.ms.push(ms); // the first round is the warm-up
    }
  }
  rt.memory.releaseSince(m);
  const train = boundaries.map((K, i) => {
    const ms = median(graphs[i]!.ms);
    const analytic = stepCost(cfg, B, T, K ?? 'none');
    log(`  train B=${B} T=${T} freeze ${K ?? 'none'}: ${ms.toFixed(0)} ms/step, ${(memory[i]!.bytes / 2 ** 20).toFixed(1)} MiB on the GPU`);
    return { freeze: K === null ? 'none' : K, medianMs: ms, stepsMs: graphs[i]!.ms, gpuBytes: memory[i]!.bytes, gpuBytesAboveWeights: memory[i]!.bytes - weightBytes, byKind: memory[i]!.byKind, analytic: { stepFlops: analytic.flops.total, backwardFlops: analytic.flops.backward, memoryBytes: analytic.memory.totalBytes } };
  });
  const full = train[0]!;
  for (const r of train) {
    const K = r.freeze === 'none' ? null : (r.freeze as number);
    const measuredStepSaving = 1 - r.medianMs / full.medianMs;
    const measuredMemorySaving = 1 - r.gpuBytes / full.gpuBytes;
    const p = K === null ? null : predictedSaving(cfg, B, T, K);
    Object.assign(r, {
      measuredStepSaving,
      measuredMemorySaving,
      analyticStepSaving: p ? p.stepSaving : 0,
      analyticMemorySaving: p ? p.memorySaving : 0,
      stepSavingVsAnalytic: p && p.stepSaving > 0 ? measuredStepSaving / p.stepSaving : null,
    });
  }
  rt.memory.releaseSince(mark);
  return { config: bc.name, shape: cfg, parameters: paramCount(cfg), forward, train: { B, T, rows: train } };
}

/** --boundaries none,0,10,…: the freeze boundaries to time, full fine-tuning first. */
function boundaryArg(): (number | null)[] | null {
  const i = process.argv.indexOf('--boundaries');
  if (i < 0) return null;
  return process.argv[i + 1]!.split(',').map((x) => (x === 'none' ? null : Number(x)));
}

/** --shape B,T: one batch shape for the forward and the training step. */
function shapeArg(): { B: number; T: number } | null {
  const i = process.argv.indexOf('--shape');
  if (i < 0) return null;
  const [B, T] = (process.argv[i + 1] ?? '').split(',').map(Number);
  if (!Number.isInteger(B) || !Number.isInteger(T) || B! < 1 || T! < 1) throw new Error(`--shape: expected B,T (e.g. 8,512), got '${process.argv[i + 1]}'`);
  return { B: B!, T: T! };
}

async function main() {
  const which = process.argv.includes('--config') ? process.argv[process.argv.indexOf('--config') + 1] : 'small';
  const reps = arg('--reps', 3);
  const mi = process.argv.indexOf('--matmul');
  const matmulOpt = mi >= 0 ? process.argv[mi + 1] : undefined;
  if (matmulOpt !== undefined && matmulOpt !== 'transpose' && matmulOpt !== 'tiled') throw new Error(`--matmul: expected transpose or tiled, got '${matmulOpt}'`);
  const rt = await Runtime.open(nodePlatform, { matmul: matmulOpt });
  const chosen = which === 'all' ? [SMALL, GPT2, SMOLLM2] : which === 'gpt2' ? [GPT2] : which === 'smollm2' ? [SMOLLM2] : [SMALL];
  const shape = shapeArg();
  const configs = shape ? chosen.map((c) => ({ ...c, forward: [shape], train: shape })) : chosen;
  const results = [];
  for (const c of configs) results.push(await benchConfig(rt, c, reps));
  emit({ benchmark: 'model', date: new Date().toISOString(), machine: machine(rt), matmulPath: await matmulPathFor(rt), reps, results });
  rt.destroy();
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
