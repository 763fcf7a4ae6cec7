// What the SALF analysis costs next to what it saves: the wall time of a full analysis over S sequences
// (Gram + Cholesky + bases + forward with trace + GPU deviation reductions + gains/boundary/report)
// against the time of ONE fine-tuning step (TrainingGraph + Trainer, AdamW) on the same model and batch
// shape, both full fine-tuning and at the K the analysis picks. Random GPT-2-shaped model (seeded);
// timings are wall clock (the analysis is host + GPU, so GPU timestamps would not cover it).
// `tsx bench/analysis.ts [--layers 6] [--embd 256] [--heads 4] [--vocab 8192] [--seq 64] [--batch 8]
//  [--sequences 256] [--steps 3] [--metric cosine] [--json FILE]`
import { Runtime } from '../src/gpu/runtime.ts';
import { nodePlatform } from '../src/platform/node.ts';
import { parseConfig } from '../src/model/config.ts';
import { paramSpecs, paramCount } from '../src/model/params.ts';
import { GpuWeights } from '../src/model/weights.ts';
import { windows } from '../src/data/tokens.ts';
import { prepareLmData, runAnalysis } from '../src/analysis/run.ts';
import { mulberry32 } from '../src/util/random.ts';
import type { DeviationMetric } from '../src/analysis/types.ts';
import { TrainingGraph } from '../src/train/graph.ts';
import { BatchLoader, Trainer } from '../src/train/trainer.ts';
import { makeSchedule } from '../src/train/schedule.ts';
import { arg, emit, machine, median } from './util.ts';

function randomWeights(cfg: ReturnType<typeof parseConfig>, seed: number): Map<string, Float32Array> {
  const rnd = mulberry32(seed);
  const out = new Map<string, Float32Array>();
  for (const s of paramSpecs(cfg)) {
    const a = new Float32Array(s.numel);
    if (s.role === 'norm') a.fill(s.name.endsWith('.weight') ? 1 : 0);
    else if (s.role === 'bias') a.fill(0);
    else {
      // Uniform with std 0.02 (GPT-2's init scale).
      const r = 0.02 * Math.sqrt(3);
      for (let i = 0; i < a.length; i++) a[i] = (rnd() * 2 - 1) * r;
    }
    out.set(s.name, a);
  }
  return out;
}

async function trainStepTimes(rt: Runtime, weights: GpuWeights, freeze: number | null, B: number, win: ReturnType<typeof windows>, steps: number): Promise<{ ms: number[]; buildMs: number }> {
  const t0 = performance.now();
  const graph = await TrainingGraph.build(rt, weights, { B, T: win.seq, freeze, accum: 1 }, { kind: 'adamw', weightDecay: 0.01, maxGradNorm: 1 });
  const buildMs = performance.now() - t0;
  const trainer = new Trainer(graph, makeSchedule({ kind: 'constant', lr: 1e-5 }), 1);
  const loader = new BatchLoader(win, B, true, 1);
  await trainer.trainStep(loader, true); // warm-up: pipelines, first-use allocations, waiter estimate
  const ms: number[] = [];
  for (let s = 0; s < steps; s++) ms.push((await trainer.trainStep(loader, true)).ms);
  return { ms, buildMs };
}

async function main() {
  const layers = arg('--layers', 6);
  const embd = arg('--embd', 256);
  const heads = arg('--heads', 4);
  const vocab = arg('--vocab', 8192);
  const seq = arg('--seq', 64);
  const B = arg('--batch', 8);
  const sequences = arg('--sequences', 256);
  const steps = arg('--steps', 3);
  const mi = process.argv.indexOf('--metric');
  const metric = (mi >= 0 ? process.argv[mi + 1] : 'cosine') as DeviationMetric;
  const cfg = parseConfig(JSON.stringify({ model_type: 'gpt2', n_layer: layers, n_embd: embd, n_head: heads, vocab_size: vocab, n_positions: Math.max(seq, 128), layer_norm_epsilon: 1e-5, activation_function: 'gelu_new', tie_word_embeddings: true }), 'bench');
  const rt = await Runtime.open(nodePlatform);
  const weights = GpuWeights.upload(rt, cfg, randomWeights(cfg, 1));
  const rnd = mulberry32(2);
  const ids = Int32Array.from({ length: sequences * (seq + 1) }, () => Math.floor(rnd() * vocab));
  const win = windows(ids, seq, 'random tokens');
  const data = prepareLmData(win);
  process.stderr.write(`model: ${layers} blocks × ${embd}, ${heads} heads, vocab ${vocab} (${(paramCount(cfg) / 1e6).toFixed(2)} M parameters); ${sequences} sequences × ${seq} tokens = ${data.positions} positions, batch ${B}, metric ${metric}\n`);

  const analyse = async () => {
    const t0 = performance.now();
    const o = await runAnalysis(rt, weights, data, { metric, finalNorm: true, batch: B });
    return { seconds: (performance.now() - t0) / 1000, o };
  };
  // Cold: kernel compilation, GPU Gram, Cholesky, every basis solved. Warm: the per-model caches hit.
  const cold = await analyse();
  const warm = await analyse();
  const K = warm.o.report.boundary.freeze;
  process.stderr.write(`analysis: cold ${cold.seconds.toFixed(2)} s, warm ${warm.seconds.toFixed(2)} s (${(data.positions / warm.seconds).toFixed(0)} positions/s); K = ${K}\n`);
  process.stderr.write(`  cold breakdown: gram ${cold.o.stats.gramSeconds.toFixed(2)} s, cholesky ${cold.o.stats.choleskySeconds.toFixed(2)} s, ${cold.o.stats.basisTokens} bases ${cold.o.stats.basisSeconds.toFixed(2)} s, forward ${cold.o.stats.forwardSeconds.toFixed(2)} s, reduce ${cold.o.stats.reduceSeconds.toFixed(2)} s\n`);

  const full = await trainStepTimes(rt, weights, null, B, win, steps);
  const fullMs = median(full.ms);
  process.stderr.write(`one fine-tuning step (full, B ${B} × T ${seq}): ${fullMs.toFixed(1)} ms (median of ${steps}; graph build ${full.buildMs.toFixed(0)} ms)\n`);
  const atK = await trainStepTimes(rt, weights, K, B, win, steps);
  const kMs = median(atK.ms);
  process.stderr.write(`one fine-tuning step at --freeze ${K}: ${kMs.toFixed(1)} ms\n`);

  const ratioWarm = (warm.seconds * 1000) / fullMs;
  const ratioCold = (cold.seconds * 1000) / fullMs;
  const savedPerStep = fullMs - kMs;
  const breakEven = savedPerStep > 0 ? (cold.seconds * 1000) / savedPerStep : Infinity;
  process.stderr.write(`ratio: analysis = ${ratioCold.toFixed(1)} full steps cold, ${ratioWarm.toFixed(1)} warm; freezing at K = ${K} saves ${savedPerStep.toFixed(1)} ms/step → pays for the (cold) analysis after ${breakEven.toFixed(0)} steps\n`);

  emit({
    benchmark: 'analysis',
    date: new Date().toISOString(),
    machine: machine(rt),
    model: { nLayer: cfg.nLayer, nEmbd: cfg.nEmbd, nHead: cfg.nHead, vocab: cfg.vocabSize, params: paramCount(cfg), weights: 'random (seeded)' },
    shape: { sequences, seq, batch: B, positions: data.positions, metric },
    analysis: {
      coldSeconds: cold.seconds,
      warmSeconds: warm.seconds,
      positionsPerSecondWarm: data.positions / warm.seconds,
      cold: cold.o.stats,
      warm: warm.o.stats,
      freeze: K,
      predictedStepRatio: warm.o.report.cost?.stepRatio ?? null,
    },
    trainStep: { fullMs, fullStepsMs: full.ms, atKMs: kMs, atKStepsMs: atK.ms, measuredStepRatio: kMs / fullMs },
    ratio: { analysisOverFullStepCold: ratioCold, analysisOverFullStepWarm: ratioWarm, breakEvenStepsCold: breakEven },
  });
  rt.destroy();
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
