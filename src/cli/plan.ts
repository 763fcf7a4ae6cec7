// `semfreeze plan`: the freeze plan for cluster tools (Hugging Face Trainer / Accelerate / DeepSpeed /
// FSDP through scripts/semfreeze_plan.py, LLaMA-Factory, PEFT). The CLI shell around the core
// (src/analysis/plan.ts): flags checked before anything heavy, the SALF analysis for --freeze auto (the
// same as `finetune --freeze auto`, with analyze's flags), the weights' names checked against config.json
// from the file headers for --freeze K (no GPU), --out written atomically, progress on stderr.
import { existsSync, statSync } from 'node:fs';
import { AUTO_FREEZE_MAX_WINDOWS, DEFAULT_ANALYZE_BATCH, DEFAULT_LM_SEQ, autoFreezeOptions, checkAnalyzeOptions, type AnalyzeOptions } from '../analysis/analyze.ts';
import { DEFAULT_GAIN_STRATEGY } from '../analysis/gain.ts';
import { buildPlan, parsePlanFormat, planAnalysis, renderPlan, type FreezePlan, type LoraOptions, type PlanFormat } from '../analysis/plan.ts';
import { resolveLoraTargets } from '../model/lora.ts';
import { readModelDir } from '../model/weights.ts';
import { nodePlatform, writeFileAtomic } from '../platform/node.ts';
import { analyzeCommand } from './analyze.ts';
import { UserError, packageVersion, printJson, progress } from './common.ts';
import { assertNotInput, assertWritableFile } from './paths.ts';
import { checkFreezeSyntax, checkSeq, modelConfig } from './validate.ts';

/** The analysis flags (as `semfreeze analyze` takes them); they apply to --freeze auto only. */
const ANALYSIS_FLAGS = { samples: '--samples', seed: '--seed', maxWindows: '--max-windows', deviation: '--deviation', gain: '--gain', budget: '--budget', pad: '--pad', finalNorm: '--final-norm', labels: '--labels' } as const;

export interface PlanOptions extends Pick<AnalyzeOptions, keyof typeof ANALYSIS_FLAGS> {
  model: string;
  data?: string;
  /** auto (default), none or K. */
  freeze?: string;
  out: string;
  format?: string;
  /** Sequences per forward of the analysis and the B of the predicted cost (default 8). */
  batch?: number;
  /** Tokens per sequence (default min(128, context) for language-model data). */
  seq?: number;
  /** --format peft: LoRA rank (default 8), alpha (default 2R) and targets (default all), as finetune --lora. */
  lora?: number;
  loraAlpha?: number;
  loraTargets?: string;
  json?: boolean;
}

export interface PlanResult {
  plan: FreezePlan;
  format: PlanFormat;
  text: string;
}

export async function planCommand(o: PlanOptions): Promise<PlanResult> {
  const format = parsePlanFormat(o.format ?? 'json');
  const cfg = await modelConfig(o.model);
  const freezeText = o.freeze ?? 'auto';
  checkFreezeSyntax(freezeText, cfg.nLayer);
  checkSeq(o.seq, cfg);
  const auto = freezeText === 'auto';
  const lora: LoraOptions = { r: o.lora, alpha: o.loraAlpha, targets: o.loraTargets };
  if (format !== 'peft') {
    const given = o.lora !== undefined ? '--lora' : o.loraAlpha !== undefined ? '--lora-alpha' : o.loraTargets !== undefined ? '--lora-targets' : null;
    if (given) throw new UserError(`${given} applies to --format peft, not --format ${format}`);
  } else {
    resolveLoraTargets(o.loraTargets, cfg); // a bad target fails before the analysis
  }
  let analysisOptions: AnalyzeOptions | null = null;
  if (auto) {
    if (o.data === undefined) throw new UserError('--freeze auto needs --data: the fine-tuning data the SALF analysis reads (or give --freeze K)');
    // finetune --freeze auto's analysis (at most AUTO_FREEZE_MAX_WINDOWS windows), with analyze's flags on top.
    const given = Object.fromEntries(Object.keys(ANALYSIS_FLAGS).filter((k) => o[k as keyof typeof ANALYSIS_FLAGS] !== undefined).map((k) => [k, o[k as keyof typeof ANALYSIS_FLAGS]]));
    // seq: as analyze (undefined = min(128, context) for language-model data, the longest prompt for classification).
    analysisOptions = { ...autoFreezeOptions({ model: o.model, data: o.data, seq: o.seq ?? 0, batch: o.batch ?? DEFAULT_ANALYZE_BATCH }), seq: o.seq, ...given };
    checkAnalyzeOptions(analysisOptions);
  } else {
    for (const [k, flag] of Object.entries(ANALYSIS_FLAGS)) {
      if (o[k as keyof typeof ANALYSIS_FLAGS] !== undefined) throw new UserError(`${flag} is an analysis flag and applies to --freeze auto; with --freeze ${freezeText} no analysis runs`);
    }
    if (o.data !== undefined && !(existsSync(o.data) && statSync(o.data).isFile())) throw new UserError(`${o.data}: ${existsSync(o.data) ? 'is a directory, expected a data file' : 'no such file'}`);
  }
  const inputs = [{ flag: '--model', path: o.model, dir: true }, ...(o.data !== undefined ? [{ flag: '--data', path: o.data }] : [])];
  assertNotInput('--out', o.out, inputs, 'file');
  await assertWritableFile('--out', o.out);

  const base = { config: cfg, modelPath: o.model, generator: `semfreeze ${packageVersion()}`, data: o.data ?? null };
  let plan: FreezePlan;
  if (analysisOptions) {
    progress(`--freeze auto: SALF analysis of ${o.data} (deviation ${analysisOptions.deviation ?? 'cosine'}, gain ${analysisOptions.gain ?? DEFAULT_GAIN_STRATEGY}, at most ${analysisOptions.maxWindows ?? AUTO_FREEZE_MAX_WINDOWS} windows)`);
    const r = await analyzeCommand({ ...analysisOptions, reportTo: o.json ? 'none' : 'stderr' });
    const batch = analysisOptions.batch ?? DEFAULT_ANALYZE_BATCH;
    const analysis = planAnalysis(r.report, { data: o.data!, kind: r.data.kind, description: r.data.description, seq: r.data.T, batch, samples: o.samples, seed: o.seed, maxWindows: analysisOptions.maxWindows });
    plan = buildPlan({ ...base, freeze: r.report.boundary.freeze, source: 'analysis', batch, seq: r.data.T, analysis });
  } else {
    // No analysis: the names are checked against the weights' headers (nothing is read onto a GPU).
    const files = await readModelDir(nodePlatform, o.model);
    await files.weights.close();
    plan = buildPlan({ ...base, freeze: freezeText === 'none' ? null : Number(freezeText), source: 'flag', batch: o.batch ?? DEFAULT_ANALYZE_BATCH, seq: o.seq ?? Math.min(DEFAULT_LM_SEQ, cfg.nPositions) });
  }
  const text = renderPlan(plan, format, cfg, lora);
  await writeFileAtomic(o.out, text);
  const b = plan.boundary;
  const p = plan.parameters;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const summary = [
    `plan: --freeze ${b.freeze}${b.source === 'analysis' ? ' (SALF analysis)' : ''}: ${b.description}`,
    ...b.notes.map((n) => `note: ${n}`),
    `trainable: ${p.trainable.length} tensors, ${p.trainableCount.toLocaleString('en-US')} parameters; frozen: ${p.frozen.length} tensors, ${p.frozenCount.toLocaleString('en-US')} parameters`,
    `predicted saving at batch ${plan.cost.batch} × ${plan.cost.seqLen}: backward ${pct(plan.cost.backwardSaving)}, step ${pct(plan.cost.stepSaving)}, memory ${pct(plan.cost.memorySaving)}`,
    `wrote ${o.out} (${format})`,
  ];
  if (o.json) {
    for (const line of summary) progress(line);
    printJson(plan);
  } else {
    process.stdout.write(`${summary.join('\n')}\n`);
  }
  return { plan, format, text };
}
