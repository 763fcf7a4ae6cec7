// The parameter layout of a GPT-2 model, computed once from its config: every tensor with its
// Hugging Face name, shape, role and block. Loading, freezing, the optimizer (which tensors decay),
// checkpoints and the cost model all read this one list.
import type { ModelConfig } from './config.ts';

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

/** Strip the `transformer.` prefix HF uses inside GPT2LMHeadModel checkpoints. */
export function canonicalName(name: string): string {
  return name.startsWith('transformer.') ? name.slice('transformer.'.length) : name;
}

/** The name HF writes in a GPT2LMHeadModel checkpoint. */
export function hfName(name: string): string {
  return name === 'lm_head.weight' ? name : `transformer.${name}`;
}
