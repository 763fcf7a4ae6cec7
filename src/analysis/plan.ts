// The freeze plan handed to cluster tools (`semfreeze plan`, issue 14): the boundary, the analysis that
// chose it, the cost model's predicted saving, and the exact Hugging Face parameter names to train and to
// freeze, as one JSON object (format semfreeze.plan/1), plus two renderings of the same plan in other
// tools' own formats: a LLaMA-Factory freeze-tuning YAML fragment and a PEFT LoRA config restricted to
// the trainable blocks. Platform-free: config + boundary (+ analysis) in, objects and text out.
//
// Names are those of `model.named_parameters()` of the Hugging Face *ForCausalLM class (which are also
// the checkpoint's names): paramSpecs + hfName, the list loading, freezing and checkpoints use. A tied
// LM head is the embedding's own tensor: named_parameters() lists it once, under the embedding's name,
// so it is frozen whenever the embeddings are.
//
// LLaMA-Factory's freeze tuning (src/llamafactory/model/adapter.py, _setup_freeze_tuning, read at
// commit ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30) selects a parameter when one of its selectors is a
// substring of the name: ".{i}." for every trainable layer i (the last `freeze_trainable_layers` layers
// when positive, with freeze_trainable_modules "all"), and each `freeze_extra_modules` entry, which must
// be the second-to-last dotted part of a parameter outside the layers ("ln_f", "norm", "lm_head", …).
// GPT-2's "ln_f" selects only the final norm, so a GPT-2 plan is expressed exactly. The Llama family's
// final norm is `model.norm`, and "norm" is also a substring of every layer's input_layernorm /
// post_attention_layernorm (Gemma 2: pre/post_feedforward_layernorm): selecting it would train the norms
// of the frozen blocks and carry the backward down to block 0. The fragment therefore leaves the final
// norm frozen and says so in a comment line `# semfreeze-frozen-here: model.norm.weight`, which
// scripts/check_llamafactory_yaml.py reads.
import { MODEL_TYPES, type ModelConfig, type ModelType } from '../model/config.ts';
import { checkLoraSettings, resolveLoraTargets } from '../model/lora.ts';
import { embeddingName, hfName, hfPrefix, isTrainable, paramSpecs } from '../model/params.ts';
import { UserError } from '../util/errors.ts';
import type { BoundaryDecision } from './boundary.ts';
import { stepCost } from './cost.ts';
import type { AnalysisReport } from './report.ts';
import { jsonSafe } from './report.ts';

export const PLAN_FORMAT = 'semfreeze.plan/1';
export const PLAN_FORMATS = ['json', 'llamafactory', 'peft'] as const;
export type PlanFormat = (typeof PLAN_FORMATS)[number];

/** The Hugging Face class of each model_type (the plan names the class its names belong to). */
export const HF_CLASSES: Record<ModelType, string> = {
  gpt2: 'GPT2LMHeadModel',
  llama: 'LlamaForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  gemma2: 'Gemma2ForCausalLM',
};

/** The analysis behind a `--freeze auto` plan, as the plan keeps it. */
export interface PlanAnalysis {
  data: string;
  kind: 'lm' | 'classification';
  description: string;
  metric: string | null;
  finalNormApplied: boolean | null;
  positions: number | null;
  seq: number;
  batch: number;
  samples: number | null;
  seed: number | null;
  maxWindows: number | null;
  strategy: AnalysisReport['strategy'];
  /** D_0..D_N: the deviation of every latent space (k = 0 after the embeddings, k after block k). */
  latentSpaces: AnalysisReport['latentSpaces'];
  /** G per block (cliBlock is the 0-based block index of --freeze; block the paper's 1-based one). */
  blocks: AnalysisReport['blocks'];
  boundary: BoundaryDecision;
}

export interface PlanCostSide {
  trainableParams: number;
  forwardFlops: number;
  backwardFlops: number;
  optimizerFlops: number;
  stepFlops: number;
  gradientBytes: number;
  adamStateBytes: number;
  activationBytes: number;
  totalBytes: number;
}

export interface PlanCost {
  batch: number;
  seqLen: number;
  atBoundary: PlanCostSide;
  full: PlanCostSide;
  /** 1 − cost(K)/cost(full fine-tuning); 0 for 'none'. */
  backwardSaving: number;
  stepSaving: number;
  memorySaving: number;
  /** The step saving once the boundary hidden states are cached (finetune --cache-boundary); null for 'none'. */
  cachedStepSaving: number | null;
}

export interface FreezePlan {
  format: typeof PLAN_FORMAT;
  /** e.g. "semfreeze 0.1.0". */
  generator: string;
  model: {
    /** The model directory as given. */
    path: string;
    /** 'gpt2' (transformer.h.{i}) or 'llama' (the Llama family's model.layers.{i}: llama, qwen2, gemma2). */
    family: 'gpt2' | 'llama';
    modelType: ModelType;
    architecture: string;
    nLayer: number;
    nEmbd: number;
    vocabSize: number;
    tiedHead: boolean;
    parameters: number;
  };
  /** Where things are, by Hugging Face name (modules without `.weight`, parameters with it). */
  names: {
    baseModel: string;
    /** The module of block i, with {i} for its index. */
    layerPattern: string;
    embeddings: string[];
    embeddingModules: string[];
    finalNorm: string[];
    finalNormModule: string;
    /** The LM head's own parameter; null when it is tied to the token embedding. */
    head: string | null;
    headModule: string;
    /** The parameter a tied head is (named_parameters() lists it only under this name). */
    headTiedTo: string | null;
  };
  boundary: {
    /** K: embeddings and blocks 0..K−1 frozen; 'none': full fine-tuning. */
    freeze: number | 'none';
    /** 'analysis' (SALF, --freeze auto) or 'flag' (--freeze K / none). */
    source: 'analysis' | 'flag';
    frozenBlocks: number[];
    trainableBlocks: number[];
    embeddingsTrainable: boolean;
    finalNormTrainable: boolean;
    headTrainable: boolean;
    description: string;
    notes: string[];
  };
  parameters: {
    trainable: string[];
    frozen: string[];
    trainableCount: number;
    frozenCount: number;
  };
  /** The fine-tuning data the plan is for (null when none was given). */
  data: string | null;
  analysis: PlanAnalysis | null;
  cost: PlanCost;
}

export interface PlanInput {
  config: ModelConfig;
  modelPath: string;
  /** K, or null for full fine-tuning. */
  freeze: number | null;
  source: 'analysis' | 'flag';
  /** Batch and sequence length of the predicted cost. */
  batch: number;
  seq: number;
  data?: string | null;
  analysis?: PlanAnalysis | null;
  generator: string;
}

function costSide(r: ReturnType<typeof stepCost>): PlanCostSide {
  return {
    trainableParams: r.memory.trainableParams,
    forwardFlops: r.flops.forward,
    backwardFlops: r.flops.backward,
    optimizerFlops: r.flops.optimizer,
    stepFlops: r.flops.total,
    gradientBytes: r.memory.gradientBytes,
    adamStateBytes: r.memory.adamStateBytes,
    activationBytes: r.memory.activationBytes,
    totalBytes: r.memory.totalBytes,
  };
}

/** One line saying what trains at boundary K (null: full fine-tuning). */
export function describePlanBoundary(K: number | null, N: number, tiedHead: boolean): string {
  if (K === null) return 'full fine-tuning: every parameter trains';
  const blocks = (a: number, b: number) => (a === b ? `block ${a}` : `blocks ${a}..${b}`);
  const frozen = K === 0 ? 'the embeddings frozen' : `the embeddings and ${blocks(0, K - 1)} frozen`;
  const parts = [...(K < N ? [blocks(K, N - 1)] : []), 'the final norm', ...(tiedHead ? [] : ['the LM head'])];
  const list = parts.length === 1 ? parts[0]! : `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)!}`;
  return `${frozen}; ${list} train${parts.length === 1 ? 's' : ''}`;
}

const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);

/** The plan for boundary `freeze` of the model `config` describes. */
export function buildPlan(p: PlanInput): FreezePlan {
  const cfg = p.config;
  const N = cfg.nLayer;
  if (!MODEL_TYPES.includes(cfg.modelType)) throw new UserError(`model_type '${cfg.modelType}' has no plan (supported: ${MODEL_TYPES.join(', ')})`);
  if (p.freeze !== null && (!Number.isInteger(p.freeze) || p.freeze < 0 || p.freeze > N)) throw new UserError(`--freeze ${p.freeze}: the model has ${N} blocks (0 ≤ K ≤ ${N})`);
  const K = p.freeze;
  const specs = paramSpecs(cfg);
  const trainable: string[] = [];
  const frozen: string[] = [];
  let trainableCount = 0;
  let frozenCount = 0;
  for (const s of specs) {
    const name = hfName(s.name, cfg);
    if (isTrainable(s, K)) {
      trainable.push(name);
      trainableCount += s.numel;
    } else {
      frozen.push(name);
      frozenCount += s.numel;
    }
  }
  const gpt2 = cfg.modelType === 'gpt2';
  const base = hfPrefix(cfg).slice(0, -1);
  const embeddings = specs.filter((s) => s.block === -1).map((s) => hfName(s.name, cfg));
  const finalNorm = specs.filter((s) => s.block === N && s.name !== 'lm_head.weight').map((s) => hfName(s.name, cfg));
  const embedding = hfName(embeddingName(cfg), cfg);
  const full = K === null;
  const notes: string[] = [];
  if (cfg.tiedHead) {
    notes.push(full
      ? `the LM head is tied to ${embedding} (one tensor, listed under that name) and trains with it`
      : `the LM head is tied to ${embedding} (one tensor, listed under that name): with the embeddings frozen it is frozen too`);
  }
  if (!full && K === N) notes.push('every block is frozen: only the final norm' + (cfg.tiedHead ? '' : ' and the LM head') + ' train');

  const atK = stepCost(cfg, p.batch, p.seq, full ? 'none' : K);
  const fullCost = stepCost(cfg, p.batch, p.seq, 'none');
  const cached = full ? null : 1 - stepCost(cfg, p.batch, p.seq, K, { cachedBoundary: true }).flops.total / fullCost.flops.total;

  const plan: FreezePlan = {
    format: PLAN_FORMAT,
    generator: p.generator,
    model: {
      path: p.modelPath,
      family: gpt2 ? 'gpt2' : 'llama',
      modelType: cfg.modelType,
      architecture: HF_CLASSES[cfg.modelType],
      nLayer: N,
      nEmbd: cfg.nEmbd,
      vocabSize: cfg.vocabSize,
      tiedHead: cfg.tiedHead,
      parameters: trainableCount + frozenCount,
    },
    names: {
      baseModel: base,
      layerPattern: `${base}.${gpt2 ? 'h' : 'layers'}.{i}`,
      embeddings,
      embeddingModules: embeddings.map((n) => n.replace(/\.weight$/, '')),
      finalNorm,
      finalNormModule: `${base}.${gpt2 ? 'ln_f' : 'norm'}`,
      head: cfg.tiedHead ? null : 'lm_head.weight',
      headModule: 'lm_head',
      headTiedTo: cfg.tiedHead ? embedding : null,
    },
    boundary: {
      freeze: full ? 'none' : K,
      source: p.source,
      frozenBlocks: full ? [] : range(0, K),
      trainableBlocks: full ? range(0, N) : range(K, N),
      embeddingsTrainable: full,
      finalNormTrainable: true,
      headTrainable: full || !cfg.tiedHead,
      description: describePlanBoundary(K, N, cfg.tiedHead),
      notes,
    },
    parameters: { trainable, frozen, trainableCount, frozenCount },
    data: p.data ?? p.analysis?.data ?? null,
    analysis: p.analysis ?? null,
    cost: {
      batch: p.batch,
      seqLen: p.seq,
      atBoundary: costSide(atK),
      full: costSide(fullCost),
      backwardSaving: 1 - atK.ratioToFull.backward,
      stepSaving: 1 - atK.ratioToFull.step,
      memorySaving: 1 - atK.ratioToFull.memory,
      cachedStepSaving: cached,
    },
  };
  return jsonSafe(plan) as FreezePlan;
}

/** The analysis summary a plan keeps, from the report of `analyze()` and the options it ran with. */
export function planAnalysis(report: AnalysisReport, run: { data: string; kind: 'lm' | 'classification'; description: string; seq: number; batch: number; samples?: number; seed?: number; maxWindows?: number }): PlanAnalysis {
  return {
    data: run.data,
    kind: run.kind,
    description: run.description,
    metric: report.metric,
    finalNormApplied: report.finalNormApplied,
    positions: report.positions,
    seq: run.seq,
    batch: run.batch,
    samples: run.samples ?? null,
    seed: run.seed ?? null,
    maxWindows: run.kind === 'lm' ? (run.maxWindows ?? null) : null,
    strategy: report.strategy,
    latentSpaces: report.latentSpaces,
    blocks: report.blocks,
    boundary: report.boundary,
  };
}

export function renderPlanJson(plan: FreezePlan): string {
  return `${JSON.stringify(plan, null, 2)}\n`;
}

/** LLaMA-Factory's FinetuningArguments keys for the plan, and what they cannot express. */
export interface LlamaFactoryArgs {
  args: Record<string, string | number | null>;
  /** Parameters the plan trains that this configuration leaves frozen (see the header). */
  frozenHere: string[];
}

export function llamaFactoryArgs(plan: FreezePlan): LlamaFactoryArgs {
  const { boundary: b, model: m, names } = plan;
  if (b.freeze === 'none') return { args: { finetuning_type: 'full' }, frozenHere: [] };
  // The second-to-last dotted part of a name, as _setup_freeze_tuning collects non-hidden modules.
  const moduleOf = (name: string) => name.split('.').at(-2)!;
  const extras: string[] = [];
  const frozenHere: string[] = [];
  if (m.family === 'gpt2') extras.push(moduleOf(names.finalNorm[0]!)); // "ln_f": a substring of ln_f's names only
  else frozenHere.push(...names.finalNorm); // "norm" would also select every layer's norms
  if (names.head) extras.push(moduleOf(names.head)); // "lm_head"
  if (b.trainableBlocks.length === 0 && extras.length === 0) {
    throw new UserError(`--format llamafactory: at --freeze ${b.freeze} the plan trains only ${frozenHere.join(', ')}, which LLaMA-Factory's freeze tuning cannot select without also training every block's norms; use --format json with scripts/semfreeze_plan.py, or a smaller K`);
  }
  return {
    args: {
      finetuning_type: 'freeze',
      freeze_trainable_layers: b.trainableBlocks.length,
      freeze_trainable_modules: 'all',
      freeze_extra_modules: extras.length > 0 ? extras.join(',') : null,
    },
    frozenHere,
  };
}

/** A YAML fragment with LLaMA-Factory's freeze-tuning keys for the plan, commented. */
export function renderLlamaFactory(plan: FreezePlan): string {
  const { args, frozenHere } = llamaFactoryArgs(plan);
  const { boundary: b, model: m, names } = plan;
  const lines = [
    `# LLaMA-Factory fine-tuning keys for a semfreeze plan (${PLAN_FORMAT}, ${plan.generator}).`,
    `# model: ${m.path} (${m.modelType}, ${m.architecture}, ${m.nLayer} blocks)`,
    `# boundary: --freeze ${b.freeze}${b.source === 'analysis' ? ` (SALF analysis of ${plan.analysis?.data ?? plan.data})` : ''}: ${b.description}`,
  ];
  for (const n of b.notes) lines.push(`# ${n}`);
  if (b.freeze !== 'none') {
    lines.push(
      `# freeze_trainable_layers: the last ${b.trainableBlocks.length} of ${m.nLayer} layers (${names.layerPattern.replace('{i}', b.trainableBlocks.length > 0 ? `${b.trainableBlocks[0]}..${b.trainableBlocks.at(-1)}` : '-')})`,
    );
    if (args.freeze_extra_modules) lines.push(`# freeze_extra_modules: ${String(args.freeze_extra_modules).split(',').map((x) => `'${x}'`).join(', ')} (a substring of ${[...(m.family === 'gpt2' ? names.finalNorm : []), ...(names.head ? [names.head] : [])].join(', ')} and of nothing else)`);
  }
  if (frozenHere.length > 0) {
    lines.push(
      `# Not expressible: LLaMA-Factory selects freeze_extra_modules by substring, and '${frozenHere[0]!.split('.').at(-2)}' is also in every`,
      '# layer\'s norm names, so selecting the final norm would train the frozen blocks\' norms as well (and carry the',
      '# backward down to block 0). This configuration leaves it frozen; the plan trains it:',
      `# semfreeze-frozen-here: ${frozenHere.join(',')}`,
    );
  }
  lines.push('# Merge into a LLaMA-Factory training config (model_name_or_path, stage, dataset, ... are yours).');
  for (const [k, v] of Object.entries(args)) lines.push(`${k}: ${v === null ? 'null' : v}`);
  return `${lines.join('\n')}\n`;
}

export interface LoraOptions {
  /** Rank (default 8). */
  r?: number;
  /** lora_alpha (default 2r, as finetune --lora). */
  alpha?: number;
  /** A block's linear layers, as finetune --lora-targets takes them (default all). */
  targets?: string;
}

/**
 * A PEFT LoraConfig (adapter_config.json fields) with adapters on the trainable blocks only: the
 * block's linear layers (src/model/lora.ts, the names finetune --lora uses: GPT-2 attn.c_attn,
 * attn.c_proj, mlp.c_fc, mlp.c_proj; the Llama family self_attn.q_proj, …, mlp.down_proj) in
 * target_modules, PEFT matching each as a dotted suffix of a module name, and the blocks in
 * layers_to_transform. Only the adapters train, as in PEFT's default and finetune --lora: base weights,
 * norms and the head stay frozen.
 */
export function peftConfig(plan: FreezePlan, config: ModelConfig, o: LoraOptions = {}): Record<string, unknown> {
  const b = plan.boundary;
  if (b.trainableBlocks.length === 0) throw new UserError(`--format peft: at --freeze ${b.freeze} no block trains, so there is no block to put LoRA adapters on; choose K < ${plan.model.nLayer}`);
  const r = o.r ?? 8;
  const alpha = o.alpha ?? 2 * r;
  checkLoraSettings({ r, alpha, targets: [] });
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: plan.model.path,
    r,
    lora_alpha: alpha,
    lora_dropout: 0.0,
    bias: 'none',
    target_modules: resolveLoraTargets(o.targets, config),
    // 'none' (full fine-tuning): adapters on every block.
    layers_to_transform: b.freeze === 'none' ? null : b.trainableBlocks,
    layers_pattern: b.freeze === 'none' ? null : plan.model.family === 'gpt2' ? 'h' : 'layers',
    // GPT-2's projections are Conv1D, weights stored [in, out].
    fan_in_fan_out: plan.model.family === 'gpt2',
    init_lora_weights: true,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    inference_mode: false,
  };
}

export function renderPeft(plan: FreezePlan, config: ModelConfig, o: LoraOptions = {}): string {
  return `${JSON.stringify(peftConfig(plan, config, o), null, 2)}\n`;
}

export function renderPlan(plan: FreezePlan, format: PlanFormat, config: ModelConfig, lora: LoraOptions = {}): string {
  if (format === 'json') return renderPlanJson(plan);
  if (format === 'llamafactory') return renderLlamaFactory(plan);
  return renderPeft(plan, config, lora);
}

export function parsePlanFormat(text: string): PlanFormat {
  if (!(PLAN_FORMATS as readonly string[]).includes(text)) throw new UserError(`--format must be one of ${PLAN_FORMATS.join(', ')}, got '${text}'`);
  return text as PlanFormat;
}
