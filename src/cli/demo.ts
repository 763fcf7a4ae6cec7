// `semfreeze demo` (what `npm start` runs): the main job end to end on a real model and real data.
//   1. SALF analysis of the fine-tuning data: deviation per latent space, gain per block, boundary K;
//   2. two fine-tunes from the same weights, same batches, same steps: the truncated backward at K
//      and full fine-tuning, their steps interleaved so that machine noise hits both alike;
//   3. held-out loss before and after, ms per step and GPU memory side by side, the measured step
//      saving next to the cost model's prediction; the Figure-2 SVG and a loss-curve SVG.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { windows } from '../data/tokens.ts';
import { predictedSaving } from '../analysis/cost.ts';
import { GpuWeights, hostParams, readModelDir } from '../model/weights.ts';
import { nodePlatform, packageRoot, writeFileAtomic } from '../platform/node.ts';
import { WindowEvaluator } from '../train/evaluate.ts';
import { TrainingGraph } from '../train/graph.ts';
import { makeSchedule } from '../train/schedule.ts';
import { BatchLoader, Trainer } from '../train/trainer.ts';
import { renderLineChart } from '../util/linechart.ts';
import { median } from '../util/stats.ts';
import { analyzeCommand } from './analyze.ts';
import { ProgressLine, UserError, formatEta, openRuntime, printJson, progress } from './common.ts';
import { buildData } from './data.ts';
import { loadTokens } from './model.ts';

export const DEMO_MODEL = join(packageRoot, 'models', 'semfreeze-base');
export const DEMO_DATA_DIR = join(packageRoot, 'data');

export interface DemoOptions {
  model?: string;
  data?: string;
  eval?: string;
  freeze?: string;
  steps: number;
  batch: number;
  seq?: number;
  lr: number;
  evalWindows: number;
  analysisWindows: number;
  out: string;
  seed: number;
  json?: boolean;
}

interface Run {
  name: string;
  freeze: number | null;
  weights: GpuWeights;
  graph: TrainingGraph;
  trainer: Trainer;
  loader: BatchLoader;
  evaluator: WindowEvaluator;
  gpuBytes: number;
  losses: { x: number; y: number }[];
  ms: number[];
  evalBefore?: number;
  evalAfter?: number;
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** The default demo data (the code corpus) is built on first use; given files must exist. */
async function demoFiles(o: DemoOptions): Promise<{ data: string; evalData: string }> {
  const data = o.data ?? join(DEMO_DATA_DIR, 'code', 'train.txt');
  const evalData = o.eval ?? (o.data ? o.data : join(DEMO_DATA_DIR, 'code', 'heldout.txt'));
  if (!o.data && !(existsSync(data) && existsSync(evalData))) {
    progress(`building the demo data (TypeScript's lib.*.d.ts declaration files) into ${join(DEMO_DATA_DIR, 'code')}`);
    await buildData(['code'], DEMO_DATA_DIR);
  }
  for (const f of [data, evalData]) if (!existsSync(f)) throw new UserError(`${f}: no such file`);
  return { data, evalData };
}

export async function demoCommand(o: DemoOptions) {
  const model = o.model ?? DEMO_MODEL;
  if (!existsSync(join(model, 'config.json'))) throw new UserError(`${model}: no model here (config.json missing)${o.model ? '' : '; the shipped base model should be in models/semfreeze-base'}`);
  const { data, evalData } = await demoFiles(o);
  const files = await readModelDir(nodePlatform, model);
  const cfg = files.config;
  const T = o.seq ?? Math.min(128, cfg.nPositions);
  if (T > cfg.nPositions) throw new UserError(`--seq ${T} exceeds the model's context n_positions = ${cfg.nPositions}`);
  progress(`semfreeze demo: where to fine-tune ${model} for ${data}, then fine-tune only there`);

  // 1. Where to fine-tune.
  const plot = join(o.out, 'analysis.svg');
  let K: number;
  let analysis: Awaited<ReturnType<typeof analyzeCommand>> | null = null;
  if (o.freeze === undefined || o.freeze === 'auto') {
    progress('\n== 1. SALF analysis ==');
    analysis = await analyzeCommand({ model, data, seq: T, batch: o.batch, maxWindows: o.analysisWindows, plot, reportTo: o.json ? 'none' : 'stdout' });
    K = analysis.report.boundary.freeze;
  } else {
    K = Number(o.freeze);
    if (!Number.isInteger(K) || K < 0 || K > cfg.nLayer) throw new UserError(`--freeze must be auto or 0..${cfg.nLayer}, got '${o.freeze}'`);
  }
  if (K === 0) progress('note: the analysis chose K = 0 (only the embeddings frozen)');

  // 2. Two runs from the same weights on the same batches.
  progress(`\n== 2. Fine-tuning twice for ${o.steps} steps: frozen below block ${K} (truncated backward) and full ==`);
  const ids = await loadTokens(data, files);
  const held = windows(await loadTokens(evalData, files), T, evalData);
  const train = windows(ids, T, data);
  const rt = await openRuntime();
  const params = await hostParams(files);
  const graphFor = (weights: GpuWeights, freeze: number | null) => TrainingGraph.build(rt, weights, { B: o.batch, T, freeze, accum: 1 }, { kind: 'adamw', weightDecay: 0, maxGradNorm: 1 });
  // GPU memory of each run alone (weights + training graph + shared workspaces), as a run of its
  // own would hold it; then both are built again for the interleaved steps.
  const aloneBytes = async (freeze: number | null) => {
    const mark = rt.memory.mark();
    const before = rt.memory.liveBytes;
    await graphFor(GpuWeights.upload(rt, cfg, params), freeze);
    const bytes = rt.memory.liveBytes - before;
    rt.memory.releaseSince(mark);
    return bytes;
  };
  // Both measured before either run is built: a live run's shared workspaces would go uncounted.
  const bytesAlone = new Map<number | null, number>();
  for (const f of [K, null]) bytesAlone.set(f, await aloneBytes(f));
  const build = async (name: string, freeze: number | null): Promise<Run> => {
    const gpuBytes = bytesAlone.get(freeze)!;
    const weights = GpuWeights.upload(rt, cfg, params);
    const graph = await graphFor(weights, freeze);
    const schedule = makeSchedule({ kind: 'constant', lr: o.lr, warmup: 0, totalSteps: o.steps });
    const trainer = new Trainer(graph, schedule, 1, `train-step ${name}`);
    const evaluator = await WindowEvaluator.build(rt, weights, held, o.batch);
    return { name, freeze, weights, graph, trainer, loader: new BatchLoader(train, o.batch, true, o.seed), evaluator, gpuBytes, losses: [], ms: [] };
  };
  const runs = [await build(`frozen below ${K}`, K), await build('full fine-tuning', null)];
  const evalBefore = await runs[0]!.evaluator.loss(o.evalWindows);
  for (const r of runs) r.evalBefore = evalBefore;
  progress(`held-out loss before fine-tuning: ${evalBefore.toFixed(4)} (${Math.min(o.evalWindows, held.count)} windows of ${evalData})`);

  const bar = new ProgressLine();
  const t0 = performance.now();
  for (let s = 0; s < o.steps; s++) {
    // Alternate which run goes first, so neither always follows the other's step.
    const order = s % 2 === 0 ? runs : [...runs].reverse();
    for (const r of order) {
      const res = await r.trainer.trainStep(r.loader, true);
      if (!Number.isFinite(res.loss)) throw new UserError(`${r.name}: the loss became ${res.loss} at step ${res.step}; try a lower --lr`);
      r.losses.push({ x: res.step, y: res.loss! });
      if (s > 0) r.ms.push(res.ms); // step 1 includes first-use costs
    }
    const el = (performance.now() - t0) / 1000;
    bar.update(`step ${s + 1}/${o.steps}  loss ${runs.map((r) => r.losses.at(-1)!.y.toFixed(3)).join(' / ')}  ${runs.map((r) => `${(r.ms.at(-1) ?? 0).toFixed(0)}`).join(' / ')} ms  ETA ${formatEta((el / (s + 1)) * (o.steps - s - 1))}`, s + 1 === o.steps);
  }
  bar.done();
  for (const r of runs) r.evalAfter = await r.evaluator.loss(o.evalWindows);

  // 3. Side by side.
  const [cut, full] = runs as [Run, Run];
  const msCut = median(cut.ms);
  const msFull = median(full.ms);
  const measured = 1 - msCut / msFull;
  const predicted = predictedSaving(cfg, o.batch, T, K);
  const lossSvg = join(o.out, 'loss.svg');
  await writeFileAtomic(lossSvg, renderLineChart(runs.map((r) => ({ name: `${r.name} (train)`, points: r.losses })), { title: `Fine-tuning ${cfg.nLayer}×${cfg.nEmbd} on ${data.split('/').slice(-2).join('/')}: frozen below ${K} vs full`, xLabel: 'step', yLabel: 'training loss' }));
  const result = {
    model,
    data,
    evalData,
    freeze: K,
    steps: o.steps,
    batch: o.batch,
    seq: T,
    lr: o.lr,
    heldOutLoss: { before: evalBefore, frozen: cut.evalAfter!, full: full.evalAfter! },
    msPerStep: { frozen: msCut, full: msFull },
    gpuBytes: { frozen: cut.gpuBytes, full: full.gpuBytes },
    stepSaving: { measured, predicted: predicted.stepSaving, ratio: predicted.stepSaving > 0 ? measured / predicted.stepSaving : null },
    memorySaving: { measured: 1 - cut.gpuBytes / full.gpuBytes, predicted: predicted.memorySaving },
    seconds: (performance.now() - t0) / 1000,
    analysis: analysis ? { deviations: analysis.report.latentSpaces.map((l) => l.deviation), gains: analysis.report.blocks.map((b) => b.gain), strategy: analysis.report.strategy.name } : null,
    files: { analysisSvg: analysis ? plot : null, lossSvg },
  };
  if (o.json) {
    printJson(result);
  } else {
    const w = 22;
    const row = (label: string, a: string, b: string) => `${label.padEnd(26)}${a.padStart(w)}${b.padStart(w)}\n`;
    let t = '\n== 3. Result ==\n';
    t += row('', `frozen below ${K}`, 'full fine-tuning');
    t += row('trainable blocks', `${cfg.nLayer - K} of ${cfg.nLayer}`, `${cfg.nLayer} + embeddings`);
    t += row('held-out loss before', evalBefore.toFixed(4), evalBefore.toFixed(4));
    t += row(`held-out loss after ${o.steps}`, cut.evalAfter!.toFixed(4), full.evalAfter!.toFixed(4));
    t += row('ms per step (median)', msCut.toFixed(0), msFull.toFixed(0));
    t += row('GPU memory', mib(cut.gpuBytes), mib(full.gpuBytes));
    t += `step time saved: ${(100 * measured).toFixed(1)}% measured vs ${(100 * predicted.stepSaving).toFixed(1)}% predicted by the cost model (${result.stepSaving.ratio === null ? '-' : `${(100 * result.stepSaving.ratio).toFixed(0)}%`} of the prediction)\n`;
    t += `GPU memory saved: ${(100 * result.memorySaving.measured).toFixed(1)}% measured vs ${(100 * predicted.memorySaving).toFixed(1)}% predicted\n`;
    t += `figures: ${analysis ? `${plot} (deviations, gains, boundary), ` : ''}${lossSvg} (training loss of both runs)\n`;
    process.stdout.write(t);
  }
  for (const r of runs) r.weights.destroy(rt);
  return result;
}
