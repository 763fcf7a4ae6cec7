// The experiment plan and its resumable execution. Per task: a learning rate chosen once on full
// fine-tuning against the validation split (carved from the training file), SALF's analyses (one per
// deviation metric), a gradient probe per seed (full fine-tuning steps with per-block gradient norms,
// for AutoFreeze and Auto-RGN), and the oracle: fine-tuning at every boundary (none, 0..N) with the same
// steps, learning rate, data order and seeds, measured on the held-out file. Every finished job is
// stored under its key at once, so a stopped run resumes where it stopped.
import type { Boundary } from '../analysis/cost.ts';
import { analyze } from '../analysis/analyze.ts';
import { DEVIATION_METRICS } from '../analysis/types.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { loadModel } from '../model/load.ts';
import { readModelDir } from '../model/weights.ts';
import type { Platform } from '../platform/types.ts';
import { UserError } from '../util/errors.ts';
import { fineTuneRun, type GradientProbe, type RunRecord, type RunSettings } from './runs.ts';
import { TASKS, loadTaskData, type TaskData, type TaskName } from './tasks.ts';

export interface ExperimentSettings {
  mode: 'full' | 'quick';
  tasks: TaskName[];
  seeds: number[];
  steps: number;
  batch: number;
  seq: number;
  warmup: number;
  /** Learning rates tried on full fine-tuning (validation split, first seed); the best is kept. */
  lrGrid: number[];
  /** 'all' = none and 0..N; 'coarse' = none, N/2 and N. */
  boundaries: 'all' | 'coarse';
  /** Held-out windows (LM) or examples (classification) per evaluation. */
  evalMax: number;
  /** Full fine-tuning steps of the gradient probe. */
  probeSteps: number;
  /** The analysis: LM windows analysed and classification examples sampled. */
  analysisWindows: number;
  analysisSamples: number;
}

export const FULL_SETTINGS: ExperimentSettings = {
  mode: 'full', tasks: ['code', 'spam', 'genre'], seeds: [1, 2, 3], steps: 100, batch: 4, seq: 128, warmup: 10,
  lrGrid: [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], boundaries: 'all', evalMax: 400, probeSteps: 10, analysisWindows: 256, analysisSamples: 512,
};

/** A tiny version for the test suite: same code paths, minutes → seconds. */
export const QUICK_SETTINGS: ExperimentSettings = {
  mode: 'quick', tasks: ['code', 'spam'], seeds: [1, 2], steps: 3, batch: 2, seq: 32, warmup: 0,
  lrGrid: [3e-4, 1e-3], boundaries: 'coarse', evalMax: 8, probeSteps: 4, analysisWindows: 8, analysisSamples: 16,
};

/** Where results live: JSON by key (the CLI keeps one file per key). */
export interface ExperimentStore {
  get(key: string): Promise<unknown | null>;
  put(key: string, value: unknown): Promise<void>;
}

export interface LrChoice {
  task: string;
  tried: { lr: number; score: number; record: RunRecord }[];
  lr: number;
}

export interface AnalysisRecord {
  task: string;
  deviation: string;
  deviations: number[];
  dataSize: number;
  /** The analysis's own choice, with the default gain strategy of the commit that made the record. */
  freeze: number;
  seconds: number;
}

export interface ProbeRecord {
  task: string;
  seed: number;
  probe: GradientProbe;
  record: RunRecord;
}

export interface ExperimentHooks {
  onNote?: (line: string) => void;
  /** Before each job: its key, how many are done and how many there are. */
  onJob?: (key: string, done: number, total: number) => void;
  onStep?: (step: number, loss: number | undefined) => void;
}

export const boundaryKey = (K: Boundary) => (K === 'none' ? 'none' : `K${K}`);

export function boundariesFor(s: ExperimentSettings, N: number): Boundary[] {
  return s.boundaries === 'all' ? ['none', ...Array.from({ length: N + 1 }, (_, k) => k)] : ['none', Math.floor(N / 2), N];
}

/** The keys of every job, in execution order (what the runner and the report agree on). */
export function jobKeys(s: ExperimentSettings, N: number): string[] {
  const keys: string[] = [];
  for (const t of s.tasks) for (const lr of s.lrGrid) keys.push(`lr/${t}-${lr}`);
  // The contrastive deviation contrasts label tokens: classification only.
  for (const t of s.tasks) for (const m of DEVIATION_METRICS) if (m !== 'contrastive' || TASKS[t].kind === 'classification') keys.push(`analysis/${t}-${m}`);
  for (const seed of s.seeds) {
    for (const t of s.tasks) keys.push(`probe/${t}-s${seed}`);
    for (const t of s.tasks) for (const K of boundariesFor(s, N)) keys.push(`oracle/${t}-${boundaryKey(K)}-s${seed}`);
  }
  return keys;
}

export async function runExperiment(platform: Platform, rt: Runtime, modelDir: string, dataDir: string, s: ExperimentSettings, store: ExperimentStore, hooks: ExperimentHooks = {}): Promise<{ ran: number; skipped: number }> {
  const note = hooks.onNote ?? (() => {});
  const saved = await store.get('settings');
  if (saved && JSON.stringify((saved as { settings: unknown }).settings) !== JSON.stringify(s)) {
    throw new UserError(`the results there were made with other settings (${JSON.stringify((saved as { settings: unknown }).settings)}); use another --out or remove them`);
  }
  // Config and tokenizer only: each run loads (and uploads) the weights itself.
  const files = await readModelDir(platform, modelDir);
  await files.weights.close();
  const N = files.config.nLayer;
  const keys = jobKeys(s, N);
  const data = new Map<TaskName, TaskData>();
  const taskData = async (t: TaskName) => {
    let d = data.get(t);
    if (!d) {
      d = await loadTaskData(platform, files, dataDir, TASKS[t], s.seq);
      data.set(t, d);
      note(`${t}: ${d.train.count} training windows, ${d.validation.count} validation, ${d.test.count} held out, T = ${d.seq}`);
    }
    return d;
  };
  const settingsFor = (lr: number, steps = s.steps): RunSettings => ({ steps, batch: s.batch, lr, warmup: Math.min(s.warmup, steps - 1), evalMax: s.evalMax });
  const chosenLr = async (t: TaskName): Promise<number> => {
    const tried: LrChoice['tried'] = [];
    for (const lr of s.lrGrid) {
      const r = (await store.get(`lr/${t}-${lr}`)) as RunRecord | null;
      if (!r) throw new Error(`lr/${t}-${lr} missing`);
      tried.push({ lr, score: r.score, record: r });
    }
    return tried.reduce((best, x) => (x.score > best.score ? x : best)).lr;
  };

  let ran = 0;
  let skipped = 0;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    if ((await store.get(key)) !== null) {
      skipped++;
      continue;
    }
    if (ran === 0 && !saved) await store.put('settings', { settings: s, model: modelDir, nLayer: N });
    hooks.onJob?.(key, i, keys.length);
    const [kind, rest] = key.split('/') as [string, string];
    const t = rest.split('-')[0] as TaskName;
    const d = await taskData(t);
    if (kind === 'lr') {
      const lr = Number(rest.slice(t.length + 1));
      const { record } = await fineTuneRun(platform, rt, modelDir, d, { boundary: 'none', seed: s.seeds[0]!, split: 'validation', settings: settingsFor(lr), onStep: hooks.onStep });
      await store.put(key, record);
    } else if (kind === 'analysis') {
      const metric = rest.slice(t.length + 1);
      const t0 = platform.now();
      const m = await loadModel(platform, rt, modelDir);
      try {
        const task = TASKS[t];
        const res = await analyze(platform, rt, m, {
          model: modelDir, data: d.trainPath, seq: s.seq, batch: s.batch, deviation: metric, seed: 1,
          ...(task.kind === 'lm' ? { maxWindows: s.analysisWindows } : { labels: task.labels!, samples: s.analysisSamples }),
        });
        const rec: AnalysisRecord = {
          task: t, deviation: metric, deviations: res.report.latentSpaces.map((l) => l.deviation), dataSize: res.data.dataSize,
          freeze: res.report.boundary.freeze, seconds: (platform.now() - t0) / 1000,
        };
        await store.put(key, rec);
      } finally {
        m.weights.destroy(rt);
      }
    } else if (kind === 'probe') {
      const seed = Number(/-s(\d+)$/.exec(rest)![1]);
      const lr = await chosenLr(t);
      const { record, probe } = await fineTuneRun(platform, rt, modelDir, d, { boundary: 'none', seed, split: 'test', settings: settingsFor(lr, s.probeSteps), probe: true, onStep: hooks.onStep });
      const rec: ProbeRecord = { task: t, seed, probe: probe!, record };
      await store.put(key, rec);
    } else {
      const m = /^(\w+)-(none|K\d+)-s(\d+)$/.exec(rest)!;
      const K: Boundary = m[2] === 'none' ? 'none' : Number(m[2]!.slice(1));
      const lr = await chosenLr(t);
      const { record } = await fineTuneRun(platform, rt, modelDir, d, { boundary: K, seed: Number(m[3]), split: 'test', settings: settingsFor(lr), onStep: hooks.onStep });
      await store.put(key, record);
    }
    ran++;
  }
  return { ran, skipped };
}
