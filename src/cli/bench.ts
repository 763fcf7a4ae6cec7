// `semfreeze bench savings`: what freezing at each boundary saves on this machine, measured next to
// the cost model. One training graph per boundary, all built first (each one's GPU memory measured
// alone), then timed in rounds with the boundaries' order rotated every round so that machine noise
// hits all alike. Per boundary: median wall ms and GPU ms per step, GPU memory, the analytic step FLOPs
// and memory, and measured / analytic saving (each frozen step timed between two full ones:
// pairedSaving). With --cache-boundary each frozen boundary's step starts at block K (the boundary
// activation cache's steady state) and the analytic figure drops the prefix.
import { stepCost, type Boundary } from '../analysis/cost.ts';
import type { StepItem } from '../gpu/step.ts';
import { ModelForward } from '../model/forward.ts';
import { TrainingGraph } from '../train/graph.ts';
import { renderLineChart } from '../util/linechart.ts';
import { median } from '../util/stats.ts';
import { writeFileAtomic } from '../platform/node.ts';
import { ProgressLine, UserError, machineInfo, printJson, progress } from './common.ts';
import { loadModel } from './model.ts';
import { fitTraining } from '../train/shapes.ts';
import { LoraAdapters, initialLoraTensors, loraModules, loraTargetNames } from '../model/lora.ts';
import { assertNotInput, assertWritableFile } from './paths.ts';

export interface BenchSavingsOptions {
  model: string;
  batch: number;
  seq?: number;
  /** 'all', or a comma list of 'none' and block counts. */
  boundaries: string;
  rounds: number;
  cacheBoundary?: boolean;
  json?: boolean;
  plot?: string;
  /** After the timed rounds, one step per boundary with a timestamp per dispatch: GPU ms by kernel family. */
  profile?: boolean;
  /** Rank-R LoRA adapters (alpha 2R, every linear layer) on blocks K..N−1 at every boundary but 'none', which stays full fine-tuning (the reference). */
  lora?: number;
}

/** GPU ms of one step's dispatches, summed by kernel family (file:entry). */
export interface KernelFamilyTime {
  kernel: string;
  dispatches: number;
  ms: number;
}

export interface BoundaryMeasurement {
  boundary: Boundary;
  wallMs: number;
  gpuMs: number | null;
  gpuBytes: number;
  analyticFlops: number;
  analyticBytes: number;
  /** pairedSaving of the wall and GPU times (each frozen step against the full steps around it); null for 'none'. */
  measuredSaving: number | null;
  measuredGpuSaving: number | null;
  analyticSaving: number | null;
  /** measured / analytic saving (wall). */
  ratio: number | null;
  /** With --profile: the step's GPU time by kernel family, largest first (passes timed one by one). */
  profile?: KernelFamilyTime[];
  /** The timed wall-ms pairs behind measuredSaving, in order (absent for 'none'). */
  wallPairs?: Pair[];
}

/** Sum a profiled step's per-dispatch times by kernel file:entry. */
export function kernelFamilyTimes(items: readonly StepItem[], perDispatchMs: readonly number[]): KernelFamilyTime[] {
  const sums = new Map<string, KernelFamilyTime>();
  let i = 0;
  for (const item of items) {
    if (!('bound' in item)) continue;
    const k = item.bound.kernel;
    const name = `${k.file}:${k.entry}`;
    const e = sums.get(name) ?? { kernel: name, dispatches: 0, ms: 0 };
    e.dispatches++;
    e.ms += perDispatchMs[i++] ?? 0;
    sums.set(name, e);
  }
  return [...sums.values()].sort((a, b) => b.ms - a.ms);
}

export function parseBoundaries(text: string, N: number): Boundary[] {
  if (text === 'all') return ['none', ...Array.from({ length: N + 1 }, (_, k) => k)];
  const out: Boundary[] = [];
  for (const part of text.split(',').map((s) => s.trim())) {
    if (part === 'none') out.push('none');
    else if (/^\d+$/.test(part) && Number(part) <= N) out.push(Number(part));
    else throw new UserError(`--boundaries: '${part}' is not none or a block count 0..${N}`);
  }
  if (!out.includes('none')) out.unshift('none');
  return [...new Set(out)];
}

/** One frozen boundary's step time and the full fine-tuning steps timed just before and after it. */
export interface Pair {
  t: number;
  before: number;
  after: number;
}

/** One pair's saving: 1 − t / mean(before, after). */
export function pairSaving(x: Pair): number {
  return 1 - (2 * x.t) / (x.before + x.after);
}

/**
 * A boundary's step saving from its timed pairs: the median of their pairSaving. Each pair lies
 * within about a second, so a slow spell of a noisy machine (seconds) slows both sides alike and
 * cancels, where a ratio of two medians taken over minutes would carry it. null without samples.
 */
export function pairedSaving(pairs: readonly Pair[]): number | null {
  if (pairs.length === 0) return null;
  return median(pairs.map(pairSaving));
}

/** The analytic step FLOPs at K, without the frozen prefix's forward when its boundary is cached. */
function analyticFlops(cfg: Parameters<typeof stepCost>[0], B: number, T: number, K: Boundary, cached: boolean, lora?: { r: number }): number {
  return stepCost(cfg, B, T, K, { cachedBoundary: cached, lora }).flops.total;
}

export async function benchSavingsCommand(o: BenchSavingsOptions): Promise<BoundaryMeasurement[]> {
  if (o.plot) {
    assertNotInput('--plot', o.plot, [{ flag: '--model', path: o.model, dir: true }], 'file');
    await assertWritableFile('--plot', o.plot);
  }
  const { rt, files, weights } = await loadModel(o.model, { quiet: o.json });
  const cfg = files.config;
  const N = cfg.nLayer;
  const T = o.seq ?? Math.min(128, cfg.nPositions);
  if (T > cfg.nPositions) throw new UserError(`--seq ${T} exceeds the model's context n_positions = ${cfg.nPositions}`);
  const boundaries = parseBoundaries(o.boundaries, N).filter((K) => !(o.lora !== undefined && o.boundaries === 'all' && K === N));
  const cached = o.cacheBoundary === true;
  // LoRA at each boundary K < N; 'none' stays full fine-tuning of the weights, the reference.
  const loraAt = (K: Boundary) => (o.lora !== undefined && K !== 'none' ? { r: o.lora } : undefined);
  if (o.lora !== undefined && boundaries.includes(N)) throw new UserError(`--lora: boundary ${N} freezes every block, there is nothing to adapt; leave it out of --boundaries`);
  const V = cfg.vocabSize;
  const ids = Array.from({ length: o.batch * T }, (_, i) => (i * 7919) % V);
  const targets = Array.from({ length: o.batch * T }, (_, i) => (i * 104729 + 1) % V);

  // Build every graph; its memory is what it allocated beyond the weights (measured as it is built).
  const mark = rt.memory.mark();
  const base = rt.memory.liveBytes;
  const graphs: { K: Boundary; graph: TrainingGraph; bytes: number; items: StepItem[] }[] = [];
  let boundaryState: Float32Array | null = null;
  for (const K of boundaries) {
    const freeze = K === 'none' ? null : K;
    const fit = fitTraining(rt, cfg, { B: o.batch, T, accum: 1, freeze }, (line) => progress(line));
    if (fit.accum !== 1) throw new UserError(`--batch ${o.batch} does not fit this adapter at --seq ${T}; use --batch ${fit.B}`);
    const before = rt.memory.liveBytes;
    const l = loraAt(K);
    const settings = l ? { r: l.r, alpha: 2 * l.r, targets: loraTargetNames(cfg) } : null;
    const lora = settings ? LoraAdapters.upload(rt, cfg, settings, freeze!, initialLoraTensors(loraModules(cfg, settings, freeze!), l!.r, 1)) : undefined;
    const graph = await TrainingGraph.build(rt, weights, { B: o.batch, T, freeze, accum: 1, cachedBoundary: cached && freeze !== null, lora }, { kind: 'adamw' });
    graph.setBatch(ids, targets);
    if (cached && freeze !== null) {
      // A realistic boundary state: the prefix's output on the same batch.
      const prefix = await ModelForward.build(rt, weights, { B: o.batch, T, saveFrom: N, endBlock: freeze, trace: { kind: 'none' }, loss: false, keepLogits: false });
      prefix.setBatch(ids);
      await prefix.run('bench-prefix');
      boundaryState = await rt.memory.readFloat32(prefix.x, 0, o.batch * T * cfg.nEmbd);
      prefix.destroy();
      graph.setBoundary(boundaryState);
    }
    graph.optimizer.setStep(1, 0, { accumulation: 1, maxGradNorm: 0 }); // lr 0: the weights stay put
    graphs.push({ K, graph, bytes: rt.memory.liveBytes - before, items: [...graph.zeroItems, ...graph.microItems[0]!, ...graph.updateItems] });
  }
  if (!o.json) progress(`bench savings: ${graphs.length} boundaries × ${o.rounds} rounds at B ${o.batch}, T ${T}${cached ? ', boundary cached' : ''}${o.lora !== undefined ? `, LoRA r ${o.lora} at every boundary but none` : ''}; GPU memory beyond the weights: ${((rt.memory.liveBytes - base) / 2 ** 20).toFixed(1)} MiB for all graphs`);

  const wall = new Map<Boundary, number[]>(boundaries.map((K) => [K, []]));
  const gpu = new Map<Boundary, number[]>(boundaries.map((K) => [K, []]));
  // Each frozen boundary's step runs between two full fine-tuning steps, and its saving is taken
  // against their mean (pairedSaving): the pair lies within about a second, shorter than the slow
  // spells of a noisy machine, which then cancel.
  const pairs = new Map<Boundary, { wall: Pair[]; gpu: Pair[] }>(boundaries.map((K) => [K, { wall: [], gpu: [] }]));
  const full = graphs.find((g) => g.K === 'none')!;
  const others = graphs.filter((g) => g.K !== 'none');
  const bar = new ProgressLine();
  const timed = async (g: (typeof graphs)[number], record: boolean) => {
    const t = await rt.steps.run(`bench-${g.K}`, g.items, { timestamps: true });
    if (record) {
      wall.get(g.K)!.push(t.wallMs);
      if (t.gpuMs !== undefined) gpu.get(g.K)!.push(t.gpuMs);
    }
    return t;
  };
  // A warm-up round (pipelines, first touch), then timed rounds with the order rotated.
  for (let round = -1; round < o.rounds; round++) {
    const record = round >= 0;
    let before = await timed(full, record);
    for (let i = 0; i < others.length; i++) {
      const g = others[(i + Math.max(0, round)) % others.length]!;
      const t = await timed(g, record);
      const after = await timed(full, record);
      if (record) {
        pairs.get(g.K)!.wall.push({ t: t.wallMs, before: before.wallMs, after: after.wallMs });
        if (t.gpuMs !== undefined && before.gpuMs !== undefined && after.gpuMs !== undefined) pairs.get(g.K)!.gpu.push({ t: t.gpuMs, before: before.gpuMs, after: after.gpuMs });
      }
      before = after;
    }
    if (!o.json && round >= 0) bar.update(`round ${round + 1}/${o.rounds}`, round + 1 === o.rounds);
  }
  if (!o.json) bar.done();

  const profiles = new Map<Boundary, KernelFamilyTime[]>();
  if (o.profile) {
    if (!rt.gpu.hasTimestamps) throw new UserError('--profile needs timestamp queries, which this adapter does not offer');
    for (const g of graphs) {
      const t = await rt.steps.run(`bench-profile-${g.K}`, g.items, { profile: true });
      profiles.set(g.K, kernelFamilyTimes(g.items, t.perDispatchMs ?? []));
    }
  }

  const fullWall = median(wall.get('none')!);
  const saving = (which: 'wall' | 'gpu', K: Boundary) => (K === 'none' ? null : pairedSaving(pairs.get(K)![which]));
  const fullFlops = analyticFlops(cfg, o.batch, T, 'none', false);
  const rows: BoundaryMeasurement[] = graphs.map(({ K, bytes }) => {
    const w = median(wall.get(K)!);
    const g = gpu.get(K)!.length ? median(gpu.get(K)!) : null;
    const flops = analyticFlops(cfg, o.batch, T, K, cached, loraAt(K));
    const analyticSaving = K === 'none' ? null : 1 - flops / fullFlops;
    const measuredSaving = saving('wall', K);
    return {
      boundary: K,
      wallMs: w,
      gpuMs: g,
      gpuBytes: bytes,
      analyticFlops: flops,
      analyticBytes: stepCost(cfg, o.batch, T, K, { lora: loraAt(K) }).memory.totalBytes,
      measuredSaving,
      measuredGpuSaving: saving('gpu', K),
      analyticSaving,
      ratio: measuredSaving !== null && analyticSaving !== null && analyticSaving > 0 ? measuredSaving / analyticSaving : null,
      ...(profiles.has(K) ? { profile: profiles.get(K)! } : {}),
      ...(K === 'none' ? {} : { wallPairs: pairs.get(K)!.wall }),
    };
  });
  rt.memory.releaseSince(mark);
  weights.destroy(rt);

  if (o.plot) {
    const k = (r: BoundaryMeasurement) => (r.boundary === 'none' ? -1 : r.boundary);
    const sorted = [...rows].sort((a, b) => k(a) - k(b));
    const time = renderLineChart([
      { name: 'wall ms/step', points: sorted.map((r) => ({ x: k(r), y: r.wallMs })) },
      ...(sorted.every((r) => r.gpuMs !== null) ? [{ name: 'GPU ms/step', points: sorted.map((r) => ({ x: k(r), y: r.gpuMs! })) }] : []),
      { name: 'analytic (scaled to full)', dashed: true, points: sorted.map((r) => ({ x: k(r), y: (fullWall * r.analyticFlops) / fullFlops })) },
    ], { title: `step time per boundary (−1 = none)${cached ? ', boundary cached' : ''}`, xLabel: 'freeze boundary K', yLabel: 'ms per step' });
    const mem = renderLineChart([
      { name: 'GPU memory (MiB)', points: sorted.map((r) => ({ x: k(r), y: r.gpuBytes / 2 ** 20 })) },
      { name: 'analytic (MiB)', dashed: true, points: sorted.map((r) => ({ x: k(r), y: r.analyticBytes / 2 ** 20 })) },
    ], { title: 'memory per boundary', xLabel: 'freeze boundary K', yLabel: 'MiB' });
    const h = (svg: string) => Number(/height="(\d+)"/.exec(svg)?.[1] ?? 400);
    const w = (svg: string) => Number(/width="(\d+)"/.exec(svg)?.[1] ?? 640);
    await writeFileAtomic(o.plot, `<svg xmlns="http://www.w3.org/2000/svg" width="${Math.max(w(time), w(mem))}" height="${h(time) + h(mem)}">\n<g>${time}</g>\n<g transform="translate(0 ${h(time)})">${mem}</g>\n</svg>\n`);
    if (!o.json) progress(`wrote ${o.plot}`);
  }

  if (o.json) {
    const machine = machineInfo(rt);
    const command = `semfreeze bench savings ${process.argv.slice(process.argv.indexOf('savings') + 1).join(' ')}`.trim();
    printJson({ date: new Date().toISOString(), command, machine, model: o.model, batch: o.batch, seq: T, rounds: o.rounds, cacheBoundary: cached, ...(o.lora !== undefined ? { lora: o.lora } : {}), adapter: rt.gpu.info, rows });
  }
  else {
    const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);
    const lines = ['boundary  wall ms  GPU ms  GPU MiB  saving (wall / GPU / analytic)  measured/analytic'];
    for (const r of rows) {
      lines.push(`${String(r.boundary).padStart(8)}  ${r.wallMs.toFixed(1).padStart(7)}  ${(r.gpuMs?.toFixed(1) ?? '-').padStart(6)}  ${(r.gpuBytes / 2 ** 20).toFixed(1).padStart(7)}  ${`${pct(r.measuredSaving)} / ${pct(r.measuredGpuSaving)} / ${pct(r.analyticSaving)}`.padEnd(30)}  ${r.ratio === null ? '-' : r.ratio.toFixed(2)}`);
    }
    for (const r of rows) {
      if (!r.profile) continue;
      const total = r.profile.reduce((a, p) => a + p.ms, 0);
      lines.push('', `GPU time by kernel at --freeze ${r.boundary} (one profiled step, each dispatch its own timed pass: ${total.toFixed(1)} ms)`);
      for (const p of r.profile) lines.push(`  ${p.kernel.padEnd(34)} ${String(p.dispatches).padStart(5)} dispatches ${p.ms.toFixed(1).padStart(8)} ms ${(100 * p.ms / total).toFixed(1).padStart(5)}%`);
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return rows;
}
