// One description of a model's computation, from its config: the embedding, every block's two
// sublayers (norm → body → optional post-norm → residual add) with their parameters by Hugging Face
// name, the final norm and the head. The forward (src/model/forward.ts) and the training graph's
// backward and truncation (src/train/graph.ts) are both built from this, so GPT-2 and the Llama family
// (Llama, Qwen2, Gemma2) share one graph builder; a new family is a new description here.
import { headSize, kvHeads, type ModelConfig } from './config.ts';
import { blockPrefix, embeddingName } from './params.ts';

export type NormKind = 'layernorm' | 'rmsnorm' | 'rmsnorm1p';

export interface NormSpec {
  kind: NormKind;
  weight: string;
  /** LayerNorm only. */
  bias?: string;
}

/**
 * A linear map x·W (+ b) from `inputs` to `outputs` columns. GPT-2's Conv1D stores W as [in, out]
 * ('in_out'); nn.Linear as [out, in] ('out_in'). Several projections can fill column ranges of one
 * fused output (q, k and v into one qkv row; gate and up into one [gate | up] row).
 */
export interface ProjSpec {
  weight: string;
  bias?: string;
  layout: 'in_out' | 'out_in';
  inputs: number;
  outputs: number;
  /** First column of the fused output this projection writes. */
  outOffset: number;
}

export interface AttentionSpec {
  /** Into the fused row [q heads | k heads | v heads], of width (nHead + 2·nKvHead)·headDim. */
  qkv: ProjSpec[];
  o: ProjSpec;
  nHead: number;
  nKvHead: number;
  headDim: number;
  /** Rotary embeddings on q and k (the Llama family); GPT-2 has learned positions instead. */
  rope: boolean;
  scale: number;
  /** Score soft-capping c (0 = off). */
  softcap: number;
  /** Keys per query for a sliding layer (0 = full causal attention). */
  window: number;
}

export interface MlpSpec {
  /** 'gelu': GPT-2's fc → gelu → proj; 'swiglu' / 'geglu': act(gate)·up → down. */
  kind: 'gelu' | 'swiglu' | 'geglu';
  /** Into one row: GPT-2 [fc] (width H); gated [gate | up] (width 2H). */
  up: ProjSpec[];
  down: ProjSpec;
  hidden: number;
}

export interface SublayerSpec<Body> {
  norm: NormSpec;
  body: Body;
  /** Gemma2: a norm on the body's output before the residual add. */
  postNorm?: NormSpec;
}

export interface BlockSpec {
  prefix: string;
  attention: SublayerSpec<AttentionSpec>;
  mlp: SublayerSpec<MlpSpec>;
}

export interface ModelSpec {
  embedding: { tokens: string; positions?: string; scale: number };
  blocks: BlockSpec[];
  finalNorm: NormSpec;
  /** Final logit soft-capping c (0 = off). */
  finalSoftcap: number;
  eps: number;
  /** Width of the fused qkv row. */
  qkvWidth: number;
  /** Width of the attention output (nHead·headDim). */
  attnWidth: number;
  /** Width of the MLP's fused up row (H, or 2H when gated). */
  upWidth: number;
}

const linear = (weight: string, bias: string | undefined, inputs: number, outputs: number, outOffset = 0): ProjSpec => ({ weight, bias, layout: 'out_in', inputs, outputs, outOffset });

export function modelSpec(cfg: ModelConfig): ModelSpec {
  const C = cfg.nEmbd;
  const H = cfg.nInner;
  const a = cfg.arch;
  const nHead = cfg.nHead;
  const nKvHead = kvHeads(cfg);
  const hd = headSize(cfg);
  const qW = nHead * hd;
  const kvW = nKvHead * hd;
  const blocks: BlockSpec[] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = blockPrefix(cfg, l);
    if (!a) {
      const ln = (n: string): NormSpec => ({ kind: 'layernorm', weight: `${p}.${n}.weight`, bias: `${p}.${n}.bias` });
      const conv = (n: string, inputs: number, outputs: number): ProjSpec => ({ weight: `${p}.${n}.weight`, bias: `${p}.${n}.bias`, layout: 'in_out', inputs, outputs, outOffset: 0 });
      blocks.push({
        prefix: p,
        attention: { norm: ln('ln_1'), body: { qkv: [conv('attn.c_attn', C, 3 * C)], o: conv('attn.c_proj', C, C), nHead, nKvHead, headDim: hd, rope: false, scale: 1 / Math.sqrt(hd), softcap: 0, window: 0 } },
        mlp: { norm: ln('ln_2'), body: { kind: 'gelu', up: [conv('mlp.c_fc', C, H)], down: conv('mlp.c_proj', H, C), hidden: H } },
      });
      continue;
    }
    const rms = (n: string): NormSpec => ({ kind: a.norm, weight: `${p}.${n}.weight` });
    const qkvBias = (n: string) => (a.qkvBias ? `${p}.self_attn.${n}_proj.bias` : undefined);
    const mlpBias = (n: string) => (a.mlpBias ? `${p}.mlp.${n}_proj.bias` : undefined);
    const attention: AttentionSpec = {
      qkv: [
        linear(`${p}.self_attn.q_proj.weight`, qkvBias('q'), C, qW, 0),
        linear(`${p}.self_attn.k_proj.weight`, qkvBias('k'), C, kvW, qW),
        linear(`${p}.self_attn.v_proj.weight`, qkvBias('v'), C, kvW, qW + kvW),
      ],
      o: linear(`${p}.self_attn.o_proj.weight`, a.oBias ? `${p}.self_attn.o_proj.bias` : undefined, qW, C),
      nHead,
      nKvHead,
      headDim: hd,
      rope: true,
      scale: a.attnScale,
      softcap: a.attnSoftcap,
      window: a.layerTypes[l] === 'sliding' ? a.slidingWindow : 0,
    };
    const mlp: MlpSpec = {
      kind: cfg.activation === 'silu' ? 'swiglu' : 'geglu',
      up: [linear(`${p}.mlp.gate_proj.weight`, mlpBias('gate'), C, H, 0), linear(`${p}.mlp.up_proj.weight`, mlpBias('up'), C, H, H)],
      down: linear(`${p}.mlp.down_proj.weight`, mlpBias('down'), H, C),
      hidden: H,
    };
    // Gemma2: post_attention_layernorm is the attention's post-norm, pre_feedforward_layernorm the
    // MLP's norm; Llama/Qwen2: post_attention_layernorm is the MLP's (pre-)norm.
    blocks.push(a.postNorms
      ? { prefix: p, attention: { norm: rms('input_layernorm'), body: attention, postNorm: rms('post_attention_layernorm') }, mlp: { norm: rms('pre_feedforward_layernorm'), body: mlp, postNorm: rms('post_feedforward_layernorm') } }
      : { prefix: p, attention: { norm: rms('input_layernorm'), body: attention }, mlp: { norm: rms('post_attention_layernorm'), body: mlp } });
  }
  return {
    embedding: { tokens: embeddingName(cfg), positions: a ? undefined : 'wpe.weight', scale: a?.embedScale ?? 1 },
    blocks,
    finalNorm: a ? { kind: a.norm, weight: 'norm.weight' } : { kind: 'layernorm', weight: 'ln_f.weight', bias: 'ln_f.bias' },
    finalSoftcap: a?.finalSoftcap ?? 0,
    eps: cfg.layerNormEpsilon,
    qkvWidth: qW + 2 * kvW,
    attnWidth: qW,
    upWidth: a ? 2 * H : H,
  };
}
