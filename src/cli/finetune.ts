// `semfreeze finetune`: fine-tune the blocks above the freeze boundary, save a Hugging Face checkpoint.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { windows } from '../data/tokens.ts';
import { GpuWeights, hostParams, readModelDir } from '../model/weights.ts';
import { nodePlatform } from '../platform/node.ts';
import { FinetuneRun, describeFreeze, loraSettings, parseFreeze, type FinetuneSpec, type LoraSpec, type TrainLogEntry } from '../train/finetune.ts';
import type { LoraSettings } from '../model/lora.ts';
import type { LoaderState } from '../train/trainer.ts';
import { CHECKPOINT_FILES, CheckpointWriteError, checkpointStep, claimOutputDir, readResumeState, recoverCheckpoint, writeCheckpoint, type ResumeState } from './checkpoint.ts';
import { ProgressLine, UserError, formatEta, openRuntime, printJson, progress } from './common.ts';
import { acquireLock } from './lock.ts';
import { loadTokens } from './model.ts';
import { assertNotInput, fsReason, realPath } from './paths.ts';
import { fingerprintFile, fingerprintModel, runDifferences, type RunFingerprint } from './resume.ts';
import { openBoundaryStore } from './boundary-disk.ts';
import type { BoundaryStore } from '../train/boundary.ts';

/** The core's run settings (src/train/finetune.ts), with --freeze as given (none, auto or K), and the CLI's own. */
export interface FinetuneOptions extends Omit<FinetuneSpec, 'freeze' | 'lora'> {
  /** --lora R: train rank-R LoRA adapters on blocks K..N−1 instead of their weights. */
  lora?: number;
  /** --lora-alpha (default 2R). */
  loraAlpha?: number;
  /** --lora-targets: comma list of a block's linear layers (default all). */
  loraTargets?: string;
  /** --merge: save the base model with the adapters merged in instead of a PEFT adapter directory. */
  merge?: boolean;
  model: string;
  data: string;
  eval?: string;
  freeze: string;
  out: string;
  resume?: string;
  /** Replace the semfreeze checkpoint already in --out (without it that is refused). */
  overwrite?: boolean;
  /** Resume although the model, data or --freeze differ from the saved run's. */
  forceResume?: boolean;
  json?: boolean;
  /** Cache the boundary hidden states ('memory' or 'disk') and run only blocks K..N−1 after the first epoch. */
  cacheBoundary?: string;
  /** The cache's precision: f32 (bit-identical training) or f16. */
  cacheDtype?: string;
  /** Resolves --freeze auto (the SALF analysis); absent = not available. */
  autoFreeze?: (ctx: { model: string; data: string; seq: number; batch: number }) => Promise<number>;
}

export { parseFreeze, type TrainLogEntry } from '../train/finetune.ts';
export { FINETUNE_DEFAULTS } from '../train/finetune.ts';

/**
 * On --resume, the batch shape, data order and optimizer come from the saved run (that is what
 * makes the continuation exact); a differing value given now is reported, not used. --steps,
 * --out and the logging/eval cadence may change.
 */
function resumedOptions(o: FinetuneOptions, saved: Partial<FinetuneOptions> | undefined): FinetuneOptions {
  if (!saved) return o;
  const fixed = ['batch', 'seq', 'accum', 'optimizer', 'weightDecay', 'clip', 'lr', 'warmup', 'schedule', 'seed', 'shuffle', 'lora', 'loraAlpha', 'loraTargets'] as const;
  const out = { ...o };
  for (const k of fixed) {
    if (saved[k] === undefined) continue;
    if (saved[k] !== o[k]) progress(`--resume: keeping the saved run's ${k} = ${JSON.stringify(saved[k])} (given: ${JSON.stringify(o[k])})`);
    (out as Record<string, unknown>)[k] = saved[k];
  }
  return out;
}

/** The checkpoint to resume, recovered first if a crash interrupted its last save. */
async function readResume(dir: string, locked: boolean): Promise<ResumeState> {
  if (!existsSync(dir)) throw new UserError(`--resume ${dir}: no such directory`);
  if (locked) return readResumeState(dir);
  const lock = acquireLock('--resume', dir);
  try {
    for (const note of await recoverCheckpoint(dir)) progress(note);
    return await readResumeState(dir);
  } finally {
    lock.release();
  }
}

export async function finetuneCommand(o: FinetuneOptions): Promise<{ log: TrainLogEntry[]; freeze: number | null }> {
  // The files first, before the model loads: --out is none of the inputs, can be written, is ours alone.
  const resumingOut = o.resume !== undefined && realPath(o.resume) === realPath(o.out);
  assertNotInput('--out', o.out, [
    { flag: '--model', path: o.model, dir: true },
    { flag: '--data', path: o.data },
    ...(o.eval ? [{ flag: '--eval', path: o.eval }] : []),
    ...(o.resume && !resumingOut ? [{ flag: '--resume', path: o.resume, dir: true }] : []),
  ], 'dir', CHECKPOINT_FILES);
  const output = await claimOutputDir(o.out, { resumingIt: resumingOut, overwrite: o.overwrite === true });
  try {
    return await finetune(o, resumingOut);
  } finally {
    await output.release();
  }
}

async function finetune(o: FinetuneOptions, resumingOut: boolean): Promise<{ log: TrainLogEntry[]; freeze: number | null }> {
  const resume = o.resume ? await readResume(o.resume, resumingOut) : null;
  const savedStep = resume ? (resume.state.step as number) : null;
  if (savedStep !== null && o.steps < savedStep) throw new UserError(`--steps ${o.steps}: the checkpoint in ${o.resume} is already at step ${savedStep}; give --steps ${savedStep} or more`);
  if (o.lora === undefined && (o.loraAlpha !== undefined || o.loraTargets !== undefined || o.merge)) throw new UserError(`${o.loraAlpha !== undefined ? '--lora-alpha' : o.loraTargets !== undefined ? '--lora-targets' : '--merge'} needs --lora R`);
  // A LoRA run's checkpoint holds adapters (or a merged model), not the weights to continue from: its base is --model.
  const savedLora = resume ? ((resume.state.lora ?? null) as LoraSettings | null) : null;
  const files = await readModelDir(nodePlatform, resume && !savedLora ? o.resume! : o.model);
  const cfg = files.config;
  if (o.seq > cfg.nPositions) throw new UserError(`--seq ${o.seq} exceeds the model's context n_positions = ${cfg.nPositions}`);
  if (resume) o = resumedOptions(o, resume.state.args as Partial<FinetuneOptions> | undefined);
  const lora: LoraSpec | null = o.lora !== undefined ? { r: o.lora, alpha: o.loraAlpha, targets: o.loraTargets } : null;
  try {
    if (lora) loraSettings(lora, cfg); // refuse a bad rank, alpha or target before anything else
    if (resume && (savedLora === null) !== (lora === null)) {
      throw new UserError(`--resume ${o.resume}: the saved run trained ${savedLora ? `LoRA adapters (--lora ${savedLora.r})` : 'the weights (no --lora)'}; ${lora ? '--lora' : 'a run without --lora'} cannot continue it`);
    }
  } catch (e) {
    await files.weights.close();
    throw e;
  }
  const ids = await loadTokens(o.data, files);
  const fingerprint: RunFingerprint = { model: await fingerprintModel(o.model), data: await fingerprintFile(o.data), freeze: o.freeze };
  if (resume) {
    const saved = resume.state.fingerprint as RunFingerprint | undefined;
    if (!saved) progress(`--resume ${o.resume}: saved by an earlier semfreeze without a record of its model and data; they are not checked`);
    else {
      const differences = runDifferences(saved, fingerprint, resume.state.freeze as number | null);
      if (differences.length > 0 && !o.forceResume) throw new UserError(`--resume ${o.resume}: not the same run: ${differences.join('; ')}. Give the run's own model, data and --freeze, or --force-resume to continue anyway`);
      for (const d of differences) progress(`--force-resume: continuing although ${d}${d.startsWith('--freeze') ? '; keeping the saved boundary' : ''}`);
      fingerprint.freeze = saved.freeze;
    }
  }
  let freezeArg = resume ? String((resume.state.freeze as number | null) ?? 'none') : o.freeze;
  let freeze = parseFreeze(freezeArg, cfg.nLayer);
  if (freeze === 'auto') {
    if (!o.autoFreeze) throw new UserError('--freeze auto: the SALF analysis is not available in this build');
    freeze = await o.autoFreeze({ model: o.model, data: o.data, seq: o.seq, batch: o.batch });
    freezeArg = String(freeze);
    progress(`--freeze auto: the analysis chose K = ${freeze} (blocks 0..${freeze - 1} and the embeddings frozen)`);
  }
  const win = windows(ids, o.seq, o.data);
  const evalWin = o.eval ? windows(await loadTokens(o.eval, files), o.seq, o.eval) : null;

  if (o.cacheBoundary !== undefined && freeze === null) throw new UserError('--cache-boundary needs a freeze boundary: with --freeze none nothing is frozen to cache');
  const boundaryStore = o.cacheBoundary !== undefined ? await openBoundaryStore(o.cacheBoundary, o.cacheDtype ?? 'f32', { windows: win.count, T: o.seq, C: cfg.nEmbd, dir: o.out, say: progress }) : undefined;
  try {
    return await train(o, { files, win, evalWin, freeze, freezeArg, resume, fingerprint, boundaryStore, lora });
  } finally {
    await boundaryStore?.close();
  }
}

interface Prepared {
  files: Awaited<ReturnType<typeof readModelDir>>;
  win: ReturnType<typeof windows>;
  evalWin: ReturnType<typeof windows> | null;
  freeze: number | null;
  freezeArg: string;
  resume: ResumeState | null;
  fingerprint: RunFingerprint;
  boundaryStore: BoundaryStore | undefined;
  lora: LoraSpec | null;
}

async function train(o: FinetuneOptions, p: Prepared): Promise<{ log: TrainLogEntry[]; freeze: number | null }> {
  const { files, win, evalWin, freeze, freezeArg, resume, fingerprint } = p;
  const cfg = files.config;
  const rt = await openRuntime();
  const model = { files, weights: GpuWeights.upload(rt, cfg, await hostParams(files)), seconds: 0 };
  const run = await FinetuneRun.build(rt, model, win, evalWin, { ...o, freeze, lora: p.lora }, { onNote: (line) => progress(line), boundaryStore: p.boundaryStore, kept: `the last good checkpoint (if any) in ${o.out} is kept` });
  if (resume) {
    run.restore({ step: resume.state.step as number, loader: resume.state.loader as LoaderState, optimizer: resume.optimizer, log: resume.log as TrainLogEntry[] });
    progress(`resuming ${o.resume} at step ${run.step}`);
  }
  const fmt = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  progress(`fine-tuning ${describeFreeze(freeze, cfg.nLayer, run.lora?.settings)}: ${run.trainableParameters().toLocaleString()} trainable parameters`);
  progress(run.describe());

  // Saved with absolute paths, so that a resume from another working directory finds them.
  const absolutePaths = { model: resolve(o.model), data: resolve(o.data), out: resolve(o.out), eval: o.eval && resolve(o.eval), resume: o.resume && resolve(o.resume) };
  let lastSaved = checkpointStep(o.out);
  // LoRA: a PEFT adapter directory (plus tokenizer.json), or with --merge the merged Hugging Face model.
  const loraFiles = async () => o.merge ? run.modelFiles() : [...await run.adapterFiles(absolutePaths.model), ...(files.tokenizerJson ? [{ name: 'tokenizer.json', data: files.tokenizerJson }] : [])];
  const saveCheckpoint = async () => {
    const params = run.lora ? new Map<string, Float32Array>() : await run.params();
    const modelFiles = run.lora ? await loraFiles() : undefined;
    try {
      await writeCheckpoint(o.out, {
        config: cfg,
        configJson: files.configJson,
        params,
        modelFiles,
        tokenizerJson: files.tokenizerJson,
        optimizer: await run.stateTensors(),
        state: { step: run.step, freeze, lora: run.lora?.settings ?? null, loader: run.loader.state, args: { ...o, ...absolutePaths, autoFreeze: undefined, overwrite: undefined, forceResume: undefined, freeze: freezeArg }, fingerprint },
        log: run.log,
      });
      lastSaved = run.step;
    } catch (e) {
      if (!(e instanceof CheckpointWriteError)) throw e;
      const free = e.availableBytes();
      throw new UserError(`--out ${o.out}: cannot save the checkpoint of step ${run.step}: ${fsReason(e.cause)}; ${lastSaved !== null ? `the checkpoint of step ${lastSaved} there is kept` : 'there is no earlier checkpoint'}. A save needs ${fmt(e.neededBytes)} free there${free !== null ? ` (${fmt(free)} available now)` : ''}`);
    }
  };

  const bar = new ProgressLine(0);
  await run.run({
    onStep: (entry, eta) => {
      if (entry.loss === undefined && entry.evalLoss === undefined) return;
      bar.update(`step ${entry.step}/${o.steps}  loss ${entry.loss?.toFixed(4) ?? '-'}${entry.evalLoss !== undefined ? `  eval ${entry.evalLoss.toFixed(4)}` : ''}  lr ${entry.lr.toExponential(2)}  ${entry.tokensPerSecond.toFixed(0)} tok/s  ETA ${formatEta(eta)}`, true);
    },
    onSave: () => saveCheckpoint(),
  });
  bar.done();
  if (run.trainer.boundary) progress(`boundary cache: ${run.trainer.boundary.store.size} of ${win.count} windows stored; the frozen prefix ran for ${run.trainer.boundary.fills} batch(es), the rest started at block ${freeze}`);
  await saveCheckpoint();
  const what = run.lora && !o.merge
    ? 'a PEFT LoRA adapter: adapter_config.json, adapter_model.safetensors; load with peft.PeftModel.from_pretrained(base, dir)'
    : `Hugging Face format${run.lora ? ', the adapters merged' : ''}: config.json, model.safetensors`;
  progress(`saved ${o.out} (${what}${files.tokenizerJson ? ', tokenizer.json' : ''}; plus optimizer.safetensors, train-state.json, train-log.json)`);
  if (o.json) printJson(run.json());
  return { log: run.log, freeze };
}
