// semfreeze in a web page: the library bundle (web/dist/semfreeze.js, built by `npm run build:web`).
// The same core as the CLI (analysis, truncated fine-tuning, Hugging Face files), on navigator.gpu,
// with every kernel inside the bundle. Models and data are URLs (or files the user picked, registered
// under a name with `files`).
//
//   import { openSemfreeze } from './semfreeze.js';
//   const sf = await openSemfreeze();
//   const model = await sf.loadModel('/models/semfreeze-base');
//   const { report, outcome } = await sf.analyze(model, { data: '/data/code/train.txt', seq: 64 });
//   document.querySelector('#chart').innerHTML = outcome.svg();
//   const run = await sf.finetune(model, { data: '/data/code/train.txt', freeze: report.boundary.freeze, steps: 20, seq: 64 });
//   await run.run({ onStep: (e) => console.log(e.step, e.loss) });
//   const files = await run.modelFiles(); // config.json, model.safetensors, tokenizer.json
import kernels from 'semfreeze:kernels';
import { analyze, autoFreezeOptions, type AnalyzeHooks, type AnalyzeOptions, type AnalyzeResult } from './analysis/analyze.ts';
import { windows } from './data/tokens.ts';
import { Runtime } from './gpu/runtime.ts';
import { loadModel, loadTokens, type LoadedModel } from './model/load.ts';
import { adapterReport } from './ops/speed.ts';
import { browserPlatform, type BrowserPlatform } from './platform/browser.ts';
import { FINETUNE_DEFAULTS, FinetuneRun, type FinetuneSpec } from './train/finetune.ts';
import type { NoteSink } from './train/shapes.ts';
import { UserError } from './util/errors.ts';

export { analyze, checkAnalyzeOptions, autoFreezeOptions, DEFAULT_ANALYZE_BATCH, DEFAULT_LM_SEQ, type AnalyzeOptions, type AnalyzeResult } from './analysis/analyze.ts';
export { renderReportText, type AnalysisReport } from './analysis/report.ts';
export { windows } from './data/tokens.ts';
export { Runtime } from './gpu/runtime.ts';
export { describeModel, loadModel, loadTokens, type LoadedModel } from './model/load.ts';
export { hfModelFiles, type HfFile } from './model/save.ts';
export { adapterReport } from './ops/speed.ts';
export { browserPlatform, type BrowserPlatform } from './platform/browser.ts';
export { FINETUNE_DEFAULTS, FinetuneRun, describeFreeze, parseFreeze, type FinetuneSpec, type TrainLogEntry } from './train/finetune.ts';
export { evaluateWindows } from './train/evaluate.ts';
export { UserError } from './util/errors.ts';

/** Every kernel name in the bundle. */
export const KERNEL_NAMES: readonly string[] = Object.keys(kernels).sort();

export interface FinetuneOptions extends Partial<Omit<FinetuneSpec, 'freeze' | 'steps' | 'seq'>> {
  /** Training data (URL or registered file name): .txt, .json token ids or llm.c .bin. */
  data: string;
  /** Held-out data for the held-out loss (optional). */
  eval?: string;
  /** Blocks 0..K−1 and the embeddings frozen; null = nothing; 'auto' = the SALF analysis of `data`. */
  freeze: number | null | 'auto';
  steps: number;
  seq: number;
}

export interface Semfreeze {
  platform: BrowserPlatform;
  rt: Runtime;
  /** A Hugging Face model directory: its URL (config.json, model.safetensors, tokenizer.json inside). */
  loadModel(dir: string): Promise<LoadedModel>;
  /** The SALF analysis (the JSON of `semfreeze analyze --json` is `result.json`). */
  analyze(model: LoadedModel, o: Omit<AnalyzeOptions, 'model'> & { model?: string }, hooks?: AnalyzeHooks): Promise<AnalyzeResult>;
  /** A fine-tune run, built and ready: call `run()` on it (the model's weights train in place). */
  finetune(model: LoadedModel, o: FinetuneOptions, hooks?: { onNote?: NoteSink }): Promise<FinetuneRun>;
  adapter(): ReturnType<typeof adapterReport>;
}

/** Open WebGPU (navigator.gpu) with the bundled kernels. */
export async function openSemfreeze(o: { files?: ReadonlyMap<string, Blob> } = {}): Promise<Semfreeze> {
  const platform = browserPlatform({ kernels, files: o.files });
  const rt = await Runtime.open(platform);
  const sf: Semfreeze = {
    platform,
    rt,
    loadModel: (dir) => loadModel(platform, rt, dir),
    analyze: (model, a, hooks) => analyze(platform, rt, model, { ...a, model: a.model ?? model.files.dir }, hooks),
    async finetune(model, f, hooks = {}) {
      const cfg = model.files.config;
      let freeze = f.freeze;
      if (freeze === 'auto') {
        const batch = f.batch ?? FINETUNE_DEFAULTS.batch;
        const r = await sf.analyze(model, autoFreezeOptions({ model: model.files.dir, data: f.data, seq: f.seq, batch }), { onNote: hooks.onNote });
        freeze = r.report.boundary.freeze;
        hooks.onNote?.(`freeze auto: the analysis chose K = ${freeze}`);
      }
      if (freeze !== null && !(Number.isInteger(freeze) && freeze >= 0 && freeze <= cfg.nLayer)) throw new UserError(`freeze must be none, auto or a block count 0..${cfg.nLayer}, got '${freeze}'`);
      const train = windows(await loadTokens(platform, f.data, model.files), f.seq, f.data);
      const heldOut = f.eval ? windows(await loadTokens(platform, f.eval, model.files), f.seq, f.eval) : null;
      const spec: FinetuneSpec = { ...FINETUNE_DEFAULTS, ...definedOnly(f), freeze, steps: f.steps, seq: f.seq };
      return FinetuneRun.build(rt, model, train, heldOut, spec, { onNote: hooks.onNote, now: platform.now });
    },
    adapter: () => adapterReport(rt),
  };
  return sf;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
