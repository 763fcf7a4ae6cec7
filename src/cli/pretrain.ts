// `semfreeze pretrain`: a GPT-2-architecture model trained from scratch on the project's own kernels
// and training loop (the TrainingGraph + Trainer that finetune uses, with nothing frozen), with
// progress, held-out loss, periodic atomic checkpoints and resume.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseTokenFile, tokenFileKind, windows, type TokenWindows } from '../data/tokens.ts';
import { parseConfig, type ModelConfig } from '../model/config.ts';
import { paramCount } from '../model/params.ts';
import { randomParams } from '../model/random.ts';
import { GpuWeights, hostParams, readModelDir } from '../model/weights.ts';
import { nodePlatform, readBytes, readText } from '../platform/node.ts';
import { Tokenizer } from '../tokenizer/bpe.ts';
import { WindowEvaluator } from '../train/evaluate.ts';
import { firstNonFinite } from '../model/errors.ts';
import { TrainingGraph } from '../train/graph.ts';
import { makeSchedule, describeSchedule } from '../train/schedule.ts';
import { BatchLoader, Trainer, type LoaderState } from '../train/trainer.ts';
import { readResumeState, writeCheckpoint } from './checkpoint.ts';
import { ProgressLine, UserError, formatEta, openRuntime, printJson, progress } from './common.ts';

/** Named model shapes; `vocab_size` comes from the tokenizer. */
export const PRESETS: Record<string, Omit<ModelConfig, 'vocabSize'>> = {
  // The shipped base model: GPT-2 small's depth (12 blocks) at a width this machine can pretrain.
  base: { modelType: 'gpt2', nLayer: 12, nEmbd: 128, nHead: 4, nInner: 512, nPositions: 128, layerNormEpsilon: 1e-5, activation: 'gelu_tanh', tiedHead: true },
  // For tests and smoke runs: seconds per hundred steps.
  tiny: { modelType: 'gpt2', nLayer: 2, nEmbd: 32, nHead: 2, nInner: 128, nPositions: 32, layerNormEpsilon: 1e-5, activation: 'gelu_tanh', tiedHead: true },
};

export interface PretrainOptions {
  config: string;
  tokenizer: string;
  data: string[];
  evalData?: string;
  out: string;
  steps: number;
  batch: number;
  seq?: number;
  lr: number;
  minLrRatio: number;
  warmup: number;
  weightDecay: number;
  clip: number;
  seed: number;
  evalEvery: number;
  evalWindows: number;
  saveEvery: number;
  logEvery: number;
  resume?: boolean;
  json?: boolean;
}

export interface PretrainLogEntry {
  step: number;
  loss?: number;
  evalLoss?: number;
  lr: number;
  ms: number;
  tokens: number;
  seconds: number;
}

async function modelConfig(spec: string, vocabSize: number): Promise<{ cfg: ModelConfig; source: string }> {
  const preset = PRESETS[spec];
  if (preset) return { cfg: { ...preset, vocabSize }, source: `preset '${spec}'` };
  if (!spec.endsWith('.json')) throw new UserError(`--config: '${spec}' is neither a preset (${Object.keys(PRESETS).join(', ')}) nor a .json file`);
  const cfg = parseConfig(await readText(spec), spec);
  if (cfg.vocabSize < vocabSize) throw new UserError(`${spec}: vocab_size ${cfg.vocabSize} is smaller than the tokenizer's ${vocabSize} ids`);
  return { cfg, source: spec };
}

/** bos/eos ids for config.json (transformers otherwise assumes GPT-2's 50256). */
function specialTokenConfig(tokenizer: Tokenizer): string | null {
  const eot = tokenizer.tokenToId('<|endoftext|>');
  return eot === undefined ? null : JSON.stringify({ bos_token_id: eot, eos_token_id: eot });
}

/** Token ids of every --data file (text is encoded with the tokenizer), concatenated. */
async function loadCorpus(paths: string[], tokenizer: Tokenizer): Promise<Int32Array> {
  const parts: Int32Array[] = [];
  for (const p of paths) {
    const t0 = performance.now();
    parts.push(parseTokenFile(await readBytes(p), p, tokenFileKind(p), tokenizer));
    progress(`data ${p}: ${parts.at(-1)!.length.toLocaleString()} tokens (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  const all = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return all;
}

export async function pretrainCommand(o: PretrainOptions): Promise<{ log: PretrainLogEntry[] }> {
  const resuming = o.resume === true && existsSync(join(o.out, 'train-state.json'));
  const tokenizerJson = await readText(o.tokenizer);
  let json: unknown;
  try {
    json = JSON.parse(tokenizerJson);
  } catch (e) {
    throw new UserError(`${o.tokenizer}: not valid JSON (${(e as Error).message})`);
  }
  const tokenizer = Tokenizer.fromJSON(json, o.tokenizer);
  const resume = resuming ? await readResumeState(o.out) : null;
  const files = resuming ? await readModelDir(nodePlatform, o.out) : null;
  const { cfg, source } = files ? { cfg: files.config, source: `${o.out} (resumed)` } : await modelConfig(o.config, tokenizer.vocabSize);
  const T = o.seq ?? cfg.nPositions;
  if (T > cfg.nPositions) throw new UserError(`--seq ${T} exceeds the model's context n_positions = ${cfg.nPositions}`);

  const ids = await loadCorpus(o.data, tokenizer);
  const train = windows(ids, T, o.data.join(', '));
  const held: TokenWindows | null = o.evalData ? windows(await loadCorpus([o.evalData], tokenizer), T, o.evalData) : null;
  const bad = ids.findIndex((id) => id >= cfg.vocabSize);
  if (bad >= 0) throw new UserError(`${o.data.join(', ')}: token id ${ids[bad]} ≥ vocab_size ${cfg.vocabSize}`);

  const rt = await openRuntime();
  const params = files ? await hostParams(files) : randomParams(cfg, o.seed, 0.02, { scaleResidualProjections: true });
  const weights = GpuWeights.upload(rt, cfg, params);
  const graph = await TrainingGraph.build(rt, weights, { B: o.batch, T, freeze: null, accum: 1 }, { kind: 'adamw', weightDecay: o.weightDecay, maxGradNorm: o.clip });
  const schedule = makeSchedule({ kind: 'cosine', lr: o.lr, warmup: o.warmup, totalSteps: o.steps, minLr: o.lr * o.minLrRatio });
  const trainer = new Trainer(graph, schedule, o.clip);
  const loader = new BatchLoader(train, o.batch, true, o.seed);
  const evaluator = held ? await WindowEvaluator.build(rt, weights, held, o.batch) : null;
  let log: PretrainLogEntry[] = [];
  let secondsBefore = 0;
  if (resume) {
    graph.optimizer.loadStateTensors(resume.optimizer as { name: string; data: Float32Array }[]);
    trainer.step = resume.state.step as number;
    loader.restore(resume.state.loader as LoaderState);
    log = resume.log as PretrainLogEntry[];
    secondsBefore = log.at(-1)?.seconds ?? 0;
    if (trainer.step >= o.steps) throw new UserError(`${o.out} is already at step ${trainer.step} of --steps ${o.steps}; give a larger --steps to continue`);
    progress(`resuming ${o.out} at step ${trainer.step}`);
  }
  progress(`pretraining ${source}: ${cfg.nLayer} blocks × ${cfg.nEmbd}, ${cfg.nHead} heads, vocab ${cfg.vocabSize}, context ${cfg.nPositions}; ${paramCount(cfg).toLocaleString()} parameters`);
  progress(`${train.count.toLocaleString()} windows of ${T} tokens (${(train.count * (T + 1)).toLocaleString()} tokens); batch ${o.batch}; adamw, ${describeSchedule(schedule)}`);

  const tokensPerStep = o.batch * T;
  const save = async () => {
    const params = await weights.download(rt);
    for (const [name, x] of params) {
      const i = firstNonFinite(x);
      if (i >= 0) throw new UserError(`weight ${name}[${i}] became ${x[i]} at step ${trainer.step}: not saved; the last checkpoint in ${o.out} is kept. Try a lower --lr.`);
    }
    await writeCheckpoint(o.out, {
      config: cfg,
      configJson: files?.configJson ?? specialTokenConfig(tokenizer),
      params,
      tokenizerJson,
      optimizer: await graph.optimizer.stateTensors(),
      state: { kind: 'pretrain', step: trainer.step, freeze: null, loader: loader.state, args: { ...o, resume: undefined } },
      log,
    });
  };

  const bar = new ProgressLine(0);
  const t0 = performance.now();
  const startStep = trainer.step;
  let lastEval: number | undefined;
  while (trainer.step < o.steps) {
    const logNow = (trainer.step + 1) % o.logEvery === 0 || trainer.step + 1 === o.steps;
    const r = await trainer.trainStep(loader, logNow);
    const seconds = secondsBefore + (performance.now() - t0) / 1000;
    const entry: PretrainLogEntry = { step: r.step, lr: r.lr, ms: r.ms, tokens: r.step * tokensPerStep, seconds };
    if (r.loss !== null) {
      if (!Number.isFinite(r.loss)) throw new UserError(`the loss became ${r.loss} at step ${r.step}: stopping; the last checkpoint in ${o.out} is kept. Try a lower --lr.`);
      entry.loss = r.loss;
    }
    if (evaluator && (r.step % o.evalEvery === 0 || r.step === o.steps)) entry.evalLoss = lastEval = await evaluator.loss(o.evalWindows);
    if (r.loss !== null || entry.evalLoss !== undefined) log.push(entry);
    const done = r.step - startStep;
    const elapsed = (performance.now() - t0) / 1000;
    if (r.loss !== null) {
      bar.update(`step ${r.step}/${o.steps}  loss ${r.loss.toFixed(4)}${lastEval !== undefined ? `  held-out ${lastEval.toFixed(4)}` : ''}  lr ${r.lr.toExponential(2)}  ${(tokensPerStep / (r.ms / 1000)).toFixed(0)} tok/s  ETA ${formatEta((elapsed / done) * (o.steps - r.step))}`, true);
    }
    if (o.saveEvery > 0 && r.step % o.saveEvery === 0 && r.step < o.steps) await save();
  }
  bar.done();
  await save();
  progress(`saved ${o.out} (Hugging Face GPT-2 directory + optimizer state; continue with --resume and a larger --steps)`);
  if (o.json) printJson({ steps: trainer.step, log });
  return { log };
}
