// Fine-tuning above a freeze boundary as one object for every shell (the CLI's `semfreeze finetune`,
// the browser page, embedding code): the training graph with its truncated backward, the optimizer,
// schedule, data order and held-out loss, stepped by `run` with a hook per step. Where checkpoints go
// is the shell's business: `run` calls `onSave` and `modelFiles()` gives the Hugging Face files.
import type { TokenWindows } from '../data/tokens.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { firstNonFinite } from '../model/errors.ts';
import type { LoadedModel } from '../model/load.ts';
import { hfModelFiles, type HfFile } from '../model/save.ts';
import { UserError } from '../util/errors.ts';
import type { TensorToWrite } from '../io/safetensors.ts';
import { WindowEvaluator } from './evaluate.ts';
import { TrainingGraph } from './graph.ts';
import type { OptimizerKind } from './optimizer.ts';
import { describeSchedule, makeSchedule, type Schedule, type ScheduleKind } from './schedule.ts';
import { fitTraining, type NoteSink } from './shapes.ts';
import { BatchLoader, Trainer, type LoaderState } from './trainer.ts';
import { BoundaryCache, type BoundaryStore } from './boundary.ts';
import { LoraAdapters, initialLoraTensors, loraModules, mergeLora, peftAdapterFiles, resolveLoraTargets, checkLoraSettings, type LoraSettings } from '../model/lora.ts';

/**
 * LoRA on the trainable suffix: rank r, lora_alpha (default 2r: an update scale alpha/r of 2), and the
 * targeted linear layers (src/model/lora.ts resolveLoraTargets; default all of a block's).
 */
export interface LoraSpec {
  r: number;
  alpha?: number;
  targets?: string;
}

/** The LoRA settings a spec gives for this model (alpha defaulted, targets resolved), checked. */
export function loraSettings(l: LoraSpec, cfg: LoadedModel['files']['config']): LoraSettings {
  const s = { r: l.r, alpha: l.alpha ?? 2 * l.r, targets: resolveLoraTargets(l.targets, cfg) };
  checkLoraSettings(s);
  return s;
}

export interface FinetuneSpec {
  /** Blocks 0..K−1 and the embeddings frozen; null = nothing frozen. */
  freeze: number | null;
  steps: number;
  batch: number;
  seq: number;
  lr: number;
  optimizer: OptimizerKind;
  weightDecay: number;
  clip: number;
  warmup: number;
  schedule: ScheduleKind;
  accum: number;
  seed: number;
  shuffle: boolean;
  evalEvery: number;
  evalWindows: number;
  logEvery: number;
  saveEvery: number;
  /** Train LoRA adapters on blocks K..N−1 instead of their weights (null/absent: the weights). */
  lora?: LoraSpec | null;
}

/** The defaults of `semfreeze finetune` (and of the page). */
export const FINETUNE_DEFAULTS: Omit<FinetuneSpec, 'freeze' | 'steps' | 'seq' | 'lora'> = {
  batch: 4, lr: 1e-4, optimizer: 'adamw', weightDecay: 0, clip: 1, warmup: 0, schedule: 'cosine',
  accum: 1, seed: 1, shuffle: true, evalEvery: 50, evalWindows: 16, logEvery: 1, saveEvery: 0,
};

export interface TrainLogEntry {
  step: number;
  loss?: number;
  evalLoss?: number;
  lr: number;
  ms: number;
  tokensPerSecond: number;
}

/** `--freeze` text: none, auto, or a block count 0..nLayer. */
export function parseFreeze(text: string, nLayer: number): number | null | 'auto' {
  if (text === 'none') return null;
  if (text === 'auto') return 'auto';
  const k = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(k) || k < 0) throw new UserError(`--freeze must be none, auto or a block count 0..${nLayer}, got '${text}'`);
  if (k > nLayer) throw new UserError(`--freeze ${k}: the model has only ${nLayer} blocks (0 ≤ K ≤ ${nLayer})`);
  return k;
}

/** One line saying what trains. */
export function describeFreeze(freeze: number | null, nLayer: number, lora?: LoraSettings | null): string {
  if (lora) return `LoRA adapters (r ${lora.r}, alpha ${lora.alpha}) on ${lora.targets.join(', ')} of blocks ${freeze ?? 0}..${nLayer - 1}; every weight frozen`;
  return freeze === null ? 'all weights (--freeze none)' : `blocks ${freeze}..${nLayer - 1} (embeddings and blocks 0..${freeze - 1} frozen)`;
}

export interface FinetuneHooks {
  /** After every step, with its log entry (loss only on logging steps); `eta` in seconds. */
  onStep?: (entry: TrainLogEntry, eta: number) => void | Promise<void>;
  /** Every saveEvery steps (not after the last: the shell saves the final model itself). */
  onSave?: (step: number) => Promise<void>;
  /** Checked before each step: true stops the run after the step in flight. */
  shouldStop?: () => boolean;
}

/** Prefix of the adapters' values in a checkpoint's optimizer state (what a resume restores them from). */
export const LORA_STATE_PREFIX = 'lora.';

/** What a run that stops on a non-finite loss or weight leaves behind (said in the error). */
const NOTHING_KEPT = 'nothing of this run is saved';

export class FinetuneRun {
  readonly log: TrainLogEntry[] = [];

  private constructor(
    readonly rt: Runtime,
    readonly model: LoadedModel,
    readonly spec: FinetuneSpec,
    readonly graph: TrainingGraph,
    readonly trainer: Trainer,
    readonly loader: BatchLoader,
    readonly schedule: Schedule,
    readonly evaluator: WindowEvaluator | null,
    /** The micro-batch size and accumulation the graph was built with. */
    readonly fit: { B: number; accum: number },
    private readonly now: () => number,
    /** Said when the run stops on a non-finite value: what the user still has (e.g. the last checkpoint). */
    private readonly kept: string,
    /** The adapters being trained (LoRA mode), else null. */
    readonly lora: LoraAdapters | null,
  ) {}

  /** Build the graph for `model` (its weights are trained in place) over `train`, held-out loss on `heldOut`. */
  /**
   * `boundaryStore`: cache the boundary hidden state of every training window there (the first time it
   * is used) and run only blocks K..N−1 from then on; needs a freeze boundary.
   */
  /** `loraTensors`: start the adapters from these values (by PEFT name) instead of PEFT's initialisation. */
  static async build(rt: Runtime, model: LoadedModel, train: TokenWindows, heldOut: TokenWindows | null, spec: FinetuneSpec, o: { onNote?: NoteSink; now?: () => number; boundaryStore?: BoundaryStore; kept?: string; loraTensors?: Map<string, Float32Array> } = {}): Promise<FinetuneRun> {
    const cfg = model.files.config;
    if (spec.seq > cfg.nPositions) throw new UserError(`--seq ${spec.seq} exceeds the model's context n_positions = ${cfg.nPositions}`);
    if (spec.freeze !== null && (spec.freeze < 0 || spec.freeze > cfg.nLayer)) throw new UserError(`--freeze ${spec.freeze}: the model has only ${cfg.nLayer} blocks (0 ≤ K ≤ ${cfg.nLayer})`);
    const fit = fitTraining(rt, cfg, { B: spec.batch, T: spec.seq, accum: spec.accum, freeze: spec.freeze }, o.onNote);
    const cached = o.boundaryStore !== undefined;
    if (cached && spec.freeze === null) throw new UserError('--cache-boundary needs a freeze boundary: with --freeze none nothing is frozen to cache');
    let lora: LoraAdapters | null = null;
    if (spec.lora) {
      const settings = loraSettings(spec.lora, cfg);
      const K = spec.freeze ?? 0;
      if (K >= cfg.nLayer) throw new UserError(`--lora with --freeze ${K}: every block is frozen, there is no layer to adapt (give K < ${cfg.nLayer})`);
      lora = LoraAdapters.upload(rt, cfg, settings, K, o.loraTensors ?? initialLoraTensors(loraModules(cfg, settings, K), settings.r, spec.seed));
    }
    const graph = await TrainingGraph.build(rt, model.weights, { B: fit.B, T: spec.seq, freeze: spec.freeze, accum: fit.accum, cachedBoundary: cached, lora: lora ?? undefined }, { kind: spec.optimizer, weightDecay: spec.weightDecay, maxGradNorm: spec.clip });
    const schedule = makeSchedule({ kind: spec.schedule, lr: spec.lr, warmup: spec.warmup, totalSteps: spec.steps });
    const boundary = cached ? await BoundaryCache.build(rt, model.weights, spec.freeze!, fit.B, spec.seq, o.boundaryStore!) : null;
    const trainer = new Trainer(graph, schedule, spec.clip, 'train-step', boundary);
    const loader = new BatchLoader(train, fit.B, spec.shuffle, spec.seed);
    // The same held-out loss as pretrain and demo: mean over every token of the first evalWindows windows.
    const evaluator = heldOut ? await WindowEvaluator.build(rt, model.weights, heldOut, fit.B, lora ?? undefined) : null;
    return new FinetuneRun(rt, model, spec, graph, trainer, loader, schedule, evaluator, fit, o.now ?? (() => performance.now()), o.kept ?? NOTHING_KEPT, lora);
  }

  get step(): number {
    return this.trainer.step;
  }

  /** Continue a saved run: its step, data position, optimizer moments and log. */
  restore(saved: { step: number; loader: LoaderState; optimizer: { name: string; data: Float32Array | Int32Array }[]; log: TrainLogEntry[] }): void {
    this.graph.optimizer.loadStateTensors(saved.optimizer as { name: string; data: Float32Array }[]);
    if (this.lora) {
      // The adapters themselves travel with the optimizer state as `lora.<PEFT name>`.
      const values = new Map<string, Float32Array>();
      for (const t of saved.optimizer) if (t.name.startsWith(LORA_STATE_PREFIX) && t.data instanceof Float32Array) values.set(t.name.slice(LORA_STATE_PREFIX.length), t.data);
      this.lora.write(this.rt, values);
    }
    this.trainer.step = saved.step;
    this.loader.restore(saved.loader);
    this.log.splice(0, this.log.length, ...saved.log);
  }

  trainableParameters(): number {
    return this.graph.optimizer.tensors.reduce((s, t) => s + t.n, 0);
  }

  /** Optimizer state for a checkpoint, plus the adapters' values (`lora.<PEFT name>`) in LoRA mode. */
  async stateTensors(): Promise<TensorToWrite[]> {
    const out = await this.graph.optimizer.stateTensors();
    if (this.lora) {
      const values = await this.adapterTensors();
      for (const m of this.lora.modules) {
        for (const [name, x] of [[m.aName, [this.lora.r, m.inputs]], [m.bName, [m.outputs, this.lora.r]]] as const) {
          const data = values.get(name)!;
          out.push({ name: `${LORA_STATE_PREFIX}${name}`, dtype: 'F32', shape: [...x], data });
        }
      }
    }
    return out;
  }

  /** The adapters now (LoRA mode), checked as params() checks the weights. */
  async adapterTensors(): Promise<Map<string, Float32Array>> {
    if (!this.lora) throw new Error('not a LoRA run');
    const t = await this.lora.download(this.rt);
    for (const [name, x] of t) {
      const bad = firstNonFinite(x);
      if (bad >= 0) throw new UserError(`adapter ${name}[${bad}] became ${x[bad]} after step ${this.trainer.step}: stopping without saving; ${this.kept}. Try a lower --lr or --clip 1.`);
    }
    return t;
  }

  /** The adapters as a PEFT directory's files (adapter_config.json, adapter_model.safetensors). */
  async adapterFiles(baseModel: string | null = null): Promise<{ name: 'adapter_config.json' | 'adapter_model.safetensors'; data: string | Uint8Array | Uint8Array[] }[]> {
    const l = this.lora!;
    return peftAdapterFiles(this.model.files.config, l.settings, l.fromBlock, await this.adapterTensors(), baseModel);
  }

  /** One line on GPU memory, optimizer, schedule and data. */
  describe(): string {
    const fmt = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    const mem = this.graph.memoryBreakdown();
    return `GPU memory: ${Object.entries(mem).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}; ${this.spec.optimizer}, ${describeSchedule(this.schedule)}, ${this.loader.windows.count} windows of ${this.spec.seq}`;
  }

  /** Mean held-out loss over the first evalWindows windows (null without held-out data). */
  evalLoss(): Promise<number> | null {
    return this.evaluator ? this.evaluator.loss(this.spec.evalWindows) : null;
  }

  /** Train up to spec.steps (from where a restored run stands). Throws UserError when the loss stops being finite. */
  async run(hooks: FinetuneHooks = {}): Promise<TrainLogEntry[]> {
    const s = this.spec;
    const tokensPerStep = s.batch * s.seq * s.accum;
    const t0 = this.now();
    const startStep = this.trainer.step;
    while (this.trainer.step < s.steps && !hooks.shouldStop?.()) {
      const logNow = (this.trainer.step + 1) % s.logEvery === 0 || this.trainer.step + 1 === s.steps;
      const r = await this.trainer.trainStep(this.loader, logNow);
      const entry: TrainLogEntry = { step: r.step, lr: r.lr, ms: r.ms, tokensPerSecond: tokensPerStep / (r.ms / 1000) };
      if (r.loss !== null) {
        if (!Number.isFinite(r.loss)) throw new UserError(`the loss became ${r.loss} at step ${r.step}: stopping; ${this.kept}. Try a lower --lr or --clip 1.`);
        entry.loss = r.loss;
      }
      if (this.evaluator && (r.step % s.evalEvery === 0 || r.step === s.steps)) entry.evalLoss = await this.evaluator.loss(s.evalWindows);
      this.log.push(entry);
      const elapsed = (this.now() - t0) / 1000;
      await hooks.onStep?.(entry, (elapsed / (r.step - startStep)) * (s.steps - r.step));
      if (hooks.onSave && s.saveEvery > 0 && r.step % s.saveEvery === 0 && r.step < s.steps) await hooks.onSave(r.step);
    }
    return this.log;
  }

  /**
   * The weights now, checked: the loss is checked before each update, the weights after it here, so
   * a step that blew up never replaces a good save.
   */
  async params(): Promise<Map<string, Float32Array>> {
    const params = await this.model.weights.download(this.rt);
    for (const [name, x] of params) {
      const bad = firstNonFinite(x);
      if (bad >= 0) throw new UserError(`weight ${name}[${bad}] became ${x[bad]} after step ${this.trainer.step}: stopping without saving; ${this.kept}. Try a lower --lr or --clip 1.`);
    }
    return params;
  }

  /**
   * The fine-tuned model as Hugging Face files (config.json, model.safetensors, tokenizer.json); in
   * LoRA mode with the adapters merged into the base weights.
   */
  async modelFiles(): Promise<HfFile[]> {
    const f = this.model.files;
    return hfModelFiles({ config: f.config, configJson: f.configJson, params: await this.mergedParams(), tokenizerJson: f.tokenizerJson });
  }

  /** The weights, with the adapters merged in (LoRA mode; PEFT's merge_and_unload) or as trained. */
  async mergedParams(): Promise<Map<string, Float32Array>> {
    const params = await this.params();
    if (!this.lora) return params;
    return mergeLora(this.model.files.config, this.lora.settings, this.lora.fromBlock, params, await this.adapterTensors());
  }

  /** The object `semfreeze finetune --json` prints. */
  json(): { freeze: number | null; steps: number; log: TrainLogEntry[]; lora?: LoraSettings } {
    return { freeze: this.spec.freeze, steps: this.trainer.step, log: this.log, ...(this.lora ? { lora: this.lora.settings } : {}) };
  }
}
