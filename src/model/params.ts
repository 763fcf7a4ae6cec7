// The parameter layout of a model, computed once from its config: every tensor with its Hugging Face
// name, shape, role and block. Loading, freezing, the optimizer (which tensors decay), checkpoints and
// the cost model all read this one list. GPT-2 (GPT2LMHeadModel names without `transformer.`) and the
// Llama family (LlamaForCausalLM / Qwen2 / Gemma2 names without `model.`; nn.Linear weights [out, in]).
import { headSize, kvHeads, type ModelConfig } from './config.ts';

export type ParamRole = 'embedding' | 'matrix' | 'bias' | 'norm';

export interface ParamSpec {
  /** Hugging Face name without the `transformer.` prefix, e.g. `h.0.attn.c_attn.weight`. */
  name: string;
  shape: number[];
  numel: number;
  role: ParamRole;
  /** Block index 0..N−1; −1 for the embeddings, N for ln_f and an untied head. */
  block: number;
}

export function paramSpecs(cfg: ModelConfig): ParamSpec[] {
  return cfg.arch ? decoderParamSpecs(cfg) : gpt2ParamSpecs(cfg);
}

/** Llama, Qwen2, Gemma2: `embed_tokens`, `layers.l.*`, `norm`, an untied `lm_head`. */
function decoderParamSpecs(cfg: ModelConfig): ParamSpec[] {
  const a = cfg.arch!;
  const C = cfg.nEmbd;
  const I = cfg.nInner;
  const q = cfg.nHead * headSize(cfg);
  const kv = kvHeads(cfg) * headSize(cfg);
  const specs: ParamSpec[] = [];
  const add = (name: string, shape: number[], role: ParamRole, block: number) =>
    specs.push({ name, shape, numel: shape.reduce((x, y) => x * y, 1), role, block });
  add('embed_tokens.weight', [cfg.vocabSize, C], 'embedding', -1);
  for (let l = 0; l < cfg.nLayer; l++) {
    const h = `layers.${l}`;
    add(`${h}.input_layernorm.weight`, [C], 'norm', l);
    for (const [p, n] of [['q', q], ['k', kv], ['v', kv]] as const) {
      add(`${h}.self_attn.${p}_proj.weight`, [n, C], 'matrix', l);
      if (a.qkvBias) add(`${h}.self_attn.${p}_proj.bias`, [n], 'bias', l);
    }
    add(`${h}.self_attn.o_proj.weight`, [C, q], 'matrix', l);
    if (a.oBias) add(`${h}.self_attn.o_proj.bias`, [C], 'bias', l);
    add(`${h}.post_attention_layernorm.weight`, [C], 'norm', l);
    if (a.postNorms) {
      add(`${h}.pre_feedforward_layernorm.weight`, [C], 'norm', l);
      add(`${h}.post_feedforward_layernorm.weight`, [C], 'norm', l);
    }
    for (const [p, shape] of [['gate', [I, C]], ['up', [I, C]], ['down', [C, I]]] as const) {
      add(`${h}.mlp.${p}_proj.weight`, [...shape], 'matrix', l);
      if (a.mlpBias) add(`${h}.mlp.${p}_proj.bias`, [shape[0]], 'bias', l);
    }
  }
  add('norm.weight', [C], 'norm', cfg.nLayer);
  if (!cfg.tiedHead) add('lm_head.weight', [cfg.vocabSize, C], 'matrix', cfg.nLayer);
  return specs;
}

function gpt2ParamSpecs(cfg: ModelConfig): ParamSpec[] {
  const C = cfg.nEmbd;
  const H = cfg.nInner;
  const specs: ParamSpec[] = [];
  const add = (name: string, shape: number[], role: ParamRole, block: number) =>
    specs.push({ name, shape, numel: shape.reduce((a, b) => a * b, 1), role, block });
  add('wte.weight', [cfg.vocabSize, C], 'embedding', -1);
  add('wpe.weight', [cfg.nPositions, C], 'embedding', -1);
  for (let l = 0; l < cfg.nLayer; l++) {
    const h = `h.${l}`;
    add(`${h}.ln_1.weight`, [C], 'norm', l);
    add(`${h}.ln_1.bias`, [C], 'norm', l);
    add(`${h}.attn.c_attn.weight`, [C, 3 * C], 'matrix', l);
    add(`${h}.attn.c_attn.bias`, [3 * C], 'bias', l);
    add(`${h}.attn.c_proj.weight`, [C, C], 'matrix', l);
    add(`${h}.attn.c_proj.bias`, [C], 'bias', l);
    add(`${h}.ln_2.weight`, [C], 'norm', l);
    add(`${h}.ln_2.bias`, [C], 'norm', l);
    add(`${h}.mlp.c_fc.weight`, [C, H], 'matrix', l);
    add(`${h}.mlp.c_fc.bias`, [H], 'bias', l);
    add(`${h}.mlp.c_proj.weight`, [H, C], 'matrix', l);
    add(`${h}.mlp.c_proj.bias`, [C], 'bias', l);
  }
  add('ln_f.weight', [C], 'norm', cfg.nLayer);
  add('ln_f.bias', [C], 'norm', cfg.nLayer);
  if (!cfg.tiedHead) add('lm_head.weight', [cfg.vocabSize, C], 'matrix', cfg.nLayer);
  return specs;
}

export function paramCount(cfg: ModelConfig): number {
  return paramSpecs(cfg).reduce((s, p) => s + p.numel, 0);
}

/** AdamW decays matrices and embeddings, never biases or norm gains/biases. */
export function decays(spec: ParamSpec): boolean {
  return spec.role === 'matrix' || spec.role === 'embedding';
}

/**
 * Freeze boundary K (0 ≤ K ≤ N) or full fine-tuning (null): which tensors train.
 * With K: embeddings and blocks 0..K−1 frozen; blocks K..N−1, ln_f and an untied head train;
 * a tied head follows the (frozen) embedding.
 */
export function isTrainable(spec: ParamSpec, freeze: number | null): boolean {
  if (freeze === null) return true;
  return spec.block >= freeze && spec.block >= 0;
}

/** The prefix HF's *ForCausalLM puts before the base model's tensors. */
export function hfPrefix(cfg?: Pick<ModelConfig, 'modelType'>): string {
  return !cfg || cfg.modelType === 'gpt2' ? 'transformer.' : 'model.';
}

/** Strip the base-model prefix (`transformer.` for GPT-2, `model.` for the Llama family). */
export function canonicalName(name: string, cfg?: Pick<ModelConfig, 'modelType'>): string {
  const prefix = hfPrefix(cfg);
  return name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

/** The name HF writes in a *ForCausalLM checkpoint. */
export function hfName(name: string, cfg?: Pick<ModelConfig, 'modelType'>): string {
  return name === 'lm_head.weight' ? name : `${hfPrefix(cfg)}${name}`;
}

/** The token embedding's name (also the tied head). */
export function embeddingName(cfg: Pick<ModelConfig, 'arch'>): string {
  return cfg.arch ? 'embed_tokens.weight' : 'wte.weight';
}

/** The block prefix of block l's tensors. */
export function blockPrefix(cfg: Pick<ModelConfig, 'arch'>, l: number): string {
  return cfg.arch ? `layers.${l}` : `h.${l}`;
}
