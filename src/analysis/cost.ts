// The cost model of method.md section 6, exact for GPT-2 and the Llama family (Llama, Qwen2, Gemma2)
// under the counting rules below. The per-block structure is read from the model spec
// (src/model/spec.ts), the description the forward and the training graph are built from, so what is
// counted is what the training step computes.
//
// Notation: N blocks, C = nEmbd, H = nHead query heads, Hkv = key/value heads (H for GPT-2), hd = head
// width (GPT-2: hs = C/H; the family: head_dim), qW = H·hd, kvW = Hkv·hd, F = nInner, V = vocab
// (cfg.vocabSize, or options.vocab for a padded head), M = B·T tokens per step. A boundary K ∈ 0..N
// freezes the embeddings and blocks 0..K−1 (CLI `--freeze K`; paper's eof = K); blocks K..N−1, the final
// norm and an untied head train. Boundary 'none' is full fine-tuning: embeddings (and with them a tied
// head) train too. Term names: ln1/ln2 are each sublayer's (pre-)norm whatever Hugging Face calls it,
// lnf the final norm; GPT-2's projections are qkv/attproj/fc/fcproj, the family's q_proj, k_proj,
// v_proj, o_proj, gate_proj, up_proj, down_proj.
//
// FLOP counting rules:
//  - A matmul [m×k]·[k×n] is 2·m·k·n. A bias add or residual add is 1 per output element. Projections
//    that fill one fused row (q|k|v, gate|up) are counted each on its own; their dX products summed into
//    one gradient are one matmul over the fused width, so nothing extra is counted for the sum.
//  - Attention (per batch row and query head): QKᵀ and P·V cost 2·hd per (query, key) pair; the scale
//    and softmax cost ATTN_SCALE + SOFTMAX_FWD per pair. `attention: 'causal'` (default) counts only the
//    unmasked pairs (a kernel that skips the masked part): T(T+1)/2, or with a sliding window w < T
//    (query t sees keys t−w+1..t) Σ_t min(t+1, w) = w(w+1)/2 + (T−w)·w; 'full' counts T² pairs.
//    Grouped-query attention changes no per-pair cost: every query head still does its QKᵀ, P·V, dQ,
//    dK and dV products (the kv heads' gradients are sums over their query heads, inside those products).
//  - Elementwise constants (FLOP_CONSTANTS, per element): LayerNorm forward 8 (mean 1, variance 3:
//    sub/mul/add, normalise 2, scale+shift 2); LayerNorm backward dX 10 (dx̂ = dy·γ 1, recompute x̂ 2,
//    Σdx̂ 1, Σdx̂·x̂ 2, combine 4) and dW 3 (dβ 1, dγ 2); RMSNorm forward 4 (Σx² 2, ·rstd 1, ·w 1),
//    backward dX 7 (dx̂ = dy·w 1, recompute x̂ = x·rstd 1, Σdx̂·x̂ 2, combine rstd·(dx̂ − x̂·mean) 3) and
//    dW 2 (dy·x̂ 1, Σ 1); Gemma's RMSNorm scales by (1 + w): 1 more (rmsNormPlusOne) in the forward and
//    in dX (the kernel adds the 1 per element); GELU (tanh) forward 9 (x³ 2, ·0.044715 1, +x 1,
//    ·√(2/π) 1, tanh 1, +1 1, ·x 1, ·0.5 1), backward 18 (recompute the tanh 6, sech² 2, du/dx 3,
//    derivative 6, ·dout 1); SwiGLU silu(g)·u forward 6 (σ(g) = 1/(1+e^−g) 4, ·g 1, ·u 1), backward 12
//    (recompute σ 4, silu' = σ·(1 + g·(1−σ)) 4, dg = dout·u·silu' 2, du = dout·(g·σ) 2); GeGLU
//    gelu(g)·u forward 10 (GELU 9, ·u 1), backward 23 (GELU backward 18 with dout·u 1 for its dout,
//    du = dout·gelu(g) 4: gelu from the recomputed tanh 3, ·dout 1); rotary embeddings forward 3 per
//    rotated element of q and k (x·cos, x_pair·sin, ±), backward 3 (the rotation by −θ); v is not
//    rotated, and the angles' cos/sin (per position and frequency, shared by all heads and rows) are
//    not counted, like the per-row terms; soft-capping c·tanh(x/c) forward 3 (÷c, tanh, ·c); attention
//    soft-capping backward 4 per pair (t = s/c 1, t² 1, 1 − t² 1, ·dS 1); final logit soft-capping in
//    training 5 per logit forward (3, plus the sech² = 1 − t² the backward multiplies by: 2) and 1
//    backward (·sech²); the embedding scale (Gemma: √C; none when 1) 1 per element forward and 1 in the embedding
//    backward (dwte += scale·dout); softmax forward 5 (max, sub, exp, sum, normalise), backward 4
//    (P·dP, Σ, sub, ·P) plus the scale 1; cross-entropy forward 5 per logit (the softmax), backward 2 per
//    logit (p − onehot, ·1/M); AdamW 16 per trainable parameter (m 3, v 4, bias corrections 2,
//    √+eps 2, divide 1, weight decay 2, lr step 2; weight decay counted on every parameter). Per-row
//    terms (1/d, rsqrt, log) and the embedding lookup (a gather) are 0; gradient clipping is not counted.
//  - Backward split: dX = activation-gradient work (everything that propagates d/d(activation)),
//    dW = parameter-gradient work (weight matmuls, bias sums, norm dγ/dβ/dw, embedding scatter-adds).
//  - A post-norm (Gemma2: after the attention and after the MLP, before each residual add) is a norm
//    forward, and in the backward its dX (into the projection's output gradient; no residual merge) and dW.
//  - The final norm always trains, so the loss backward, the final soft-cap's backward, the head's dX
//    (2·M·V·C) and lnf's dW are always paid; the head's dW only when the head trains (untied, or tied
//    with the embeddings trainable).
//  - The lowest trainable block (K < N, boundary not 'none') needs every gradient inside it (ln1's dW
//    needs d(ln1 out), so even the q/k/v dX matmuls and the rotary backward are paid) but NOT its input's
//    dX: ln1's dX and the residual merge into the block input are skipped. Below the boundary: nothing.
//  - Forward is the same for every boundary (the frozen prefix still runs forward; caching the boundary
//    hidden states across epochs is not modelled).
//
// Memory (bytes; 4 per float32/int32):
//  - weights: every parameter (frozen ones too); gradients: 1 float per trainable parameter; AdamW state:
//    2 floats per trainable parameter.
//  - stored activations (what the backward must keep: ModelForward's BlockActs), per trainable block, in
//    floats: ln1 out M·C and its statistics (LayerNorm mean+rstd 2·M; RMSNorm rstd M); qkv
//    M·(H + 2·Hkv)·hd (GPT-2 3·M·C; stored after the rotary embedding, which keeps nothing of its own);
//    attention probs B·H·T² (this model's rule for every family, stored as the full square even when
//    causal or windowed; the flash kernel keeps B·H·T row statistics instead, plus, for short
//    sequences, two B·H·T² squares of backward scratch shared by all layers); attention out
//    (pre-projection) M·qW; [post-norm: the output projection's result M·C and its rstd M]; residual
//    after attention M·C; ln2 out M·C and its statistics; the MLP's projection row (GPT-2: fc out
//    (pre-GELU) M·F; gated: gate|up M·2F) and its activation M·F; [post-norm: the down projection's
//    result M·C and its rstd M]; block output (residual) M·C;
//    not kept without post-norms: the projections' outputs before their residual adds (not needed by
//    the backward);
//    plus the boundary hidden state M·C (input of the lowest trainable block; the final norm's input
//    when K = N; the embedding output for K = 0 / 'none');
//    plus the top: lnf statistics, lnf out M·C only when the head trains (its dW reads it),
//    probabilities M·V, with final soft-capping its derivative sech² over one logits row chunk
//    rowChunk·V (the training graph's bwd.softcap_deriv; rowChunk as ModelForward's headRowChunk, or
//    options.logitsRowChunk), targets M int32; plus, for 'none', the input token ids M int32 (embedding
//    backward). The frozen prefix runs in a reused scratch buffer that is not counted.
//
// LoRA (options.lora: rank r, targeted modules; finetune --lora, src/model/lora.ts): every weight is
// frozen and only the adapters A [r, in] and B [out, r] of the targeted projections of blocks K..N−1
// train ('none' = K = 0: the embeddings stay frozen). Per adapted projection with `in` inputs and
// `out` outputs:
//  - forward: u = x·Aᵀ 2·M·in·r, u·(alpha/r) M·r, y += u·Bᵀ 2·M·r·out + M·out (the add into y);
//  - backward dX: du = dy·B 2·M·out·r, du·(alpha/r) M·r, and, where the layer's input gradient is
//    needed, dx += du·A 2·M·r·in + M·in (the merge into the base dX); dW: dB = dyᵀ·u 2·M·out·r,
//    dA = duᵀ·x 2·M·r·in (accumulation over micro-batches not counted, as for the base dW);
//  - the base projections' dX (2·M·out·in) and every norm's and the final norm's dX are still paid
//    through blocks N−1..K (the dX chain the adapters need), attention and rotary backward included;
//    no base dW, bias, norm, head or embedding gradient at all; the head's dX 2·M·V·C is paid;
//  - the lowest trainable block needs no d(ln1 out) (ln1 does not train), so its q/k/v (GPT-2: qkv)
//    base dX products, their adapters' dx and ln1's dX are skipped, and of the rest of its dX chain
//    only what its own adapters read (src/model/lora.ts loraChainNeeds; the training graph skips the
//    same): the output projection's dX and the attention/rotary backward only for q/k/v adapters; the
//    MLP norm's dX, its merge and the up projections' dX only for attention adapters; down's dX and
//    the activation backward only for those or gate/up adapters;
//  - optimizer: AdamW 16 per adapter parameter; trainable parameters Σ r·(in + out);
//  - memory: weights = every base parameter plus the adapters; gradients 1 and AdamW state 2 floats per
//    adapter parameter; stored activations as at boundary K (lnf out not stored: the head does not
//    train; no input ids) plus each adapted projection's u, M·r floats.
// ratioToFull compares with full fine-tuning of the weights ('none' without LoRA).

import { headSize, kvHeads, type ModelConfig } from '../model/config.ts';
import { modelSpec, type NormKind, type ProjSpec } from '../model/spec.ts';
import { loraChainNeeds, loraModules, loraTargetNames } from '../model/lora.ts';
import { AnalysisError } from './types.ts';

export const FLOP_CONSTANTS = {
  layerNormFwd: 8,
  layerNormBwdDX: 10,
  layerNormBwdDW: 3,
  rmsNormFwd: 4,
  rmsNormBwdDX: 7,
  rmsNormBwdDW: 2,
  rmsNormPlusOne: 1,
  geluFwd: 9,
  geluBwd: 18,
  swigluFwd: 6,
  swigluBwd: 12,
  gegluFwd: 10,
  gegluBwd: 23,
  ropeFwd: 3,
  ropeBwd: 3,
  softcapFwd: 3,
  softcapDeriv: 2,
  softcapBwd: 1,
  attnSoftcapBwd: 4,
  embedScale: 1,
  attnScale: 1,
  softmaxFwd: 5,
  softmaxBwd: 4,
  crossEntropyFwd: 5,
  crossEntropyBwd: 2,
  adamw: 16,
} as const;

const BYTES = 4;

export interface CostOptions {
  /** 'causal' (default): count the T(T+1)/2 unmasked query-key pairs; 'full': T². */
  attention?: 'causal' | 'full';
  /** Vocabulary rows of the head/embedding (e.g. padded to a multiple of 128). Default cfg.vocabSize. */
  vocab?: number;
  /**
   * Rows of the streamed logits chunk, for the final soft-cap's stored derivative [rowChunk, V].
   * Default: what ModelForward's headRowChunk picks (logitsRowChunk).
   */
  logitsRowChunk?: number;
  /**
   * The boundary activation cache's steady state (finetune --cache-boundary, after its first epoch):
   * the embedding and the frozen blocks' forward are not run; the step starts at block K.
   */
  cachedBoundary?: boolean;
  /** LoRA adapters instead of the weights (see the header): rank r on these block-relative targets (default all). */
  lora?: { r: number; targets?: string[] };
}

/** The base weights adapted at boundary K under options.lora (empty without it). */
function loraAdapted(cfg: ModelConfig, K: Boundary, opts: CostOptions): Map<string, { inputs: number; outputs: number }> {
  const out = new Map<string, { inputs: number; outputs: number }>();
  if (!opts.lora) return out;
  const { r } = opts.lora;
  if (!Number.isInteger(r) || r < 1) throw new AnalysisError(`cost: LoRA rank must be a positive integer, got ${r}`);
  for (const m of loraModules(cfg, { r, alpha: r, targets: opts.lora.targets ?? loraTargetNames(cfg) }, K === 'none' ? 0 : K)) out.set(m.weight, { inputs: m.inputs, outputs: m.outputs });
  return out;
}

/** K = number of frozen blocks (0..N), or 'none' = full fine-tuning including embeddings. */
export type Boundary = number | 'none';

export type CostPhase = 'forward' | 'backwardDX' | 'backwardDW' | 'optimizer';

export interface CostTerm {
  /** e.g. 'block3.fc.dW', 'head.dX', 'optimizer'. Blocks are 0-based here (as the CLI). */
  name: string;
  phase: CostPhase;
  flops: number;
}

export interface ActivationTerm {
  name: string;
  /** Elements (floats or int32). */
  elements: number;
  bytes: number;
}

export interface ParameterCounts {
  /** Parameters of one block (its norms, attention and MLP projections; weights and biases). */
  block: number;
  blocks: number;
  wte: number;
  /** Learned position table (GPT-2); 0 for the Llama family (rotary positions). */
  wpe: number;
  /** Final norm: LayerNorm γ and β (2C) or RMSNorm weight (C). */
  lnF: number;
  /** Separate head weight: 0 when tied. */
  head: number;
  total: number;
}

export interface FlopBreakdown {
  forward: number;
  backwardDX: number;
  backwardDW: number;
  backward: number;
  optimizer: number;
  total: number;
}

export interface MemoryBreakdown {
  /** All parameters (frozen included). */
  weightBytes: number;
  trainableParams: number;
  trainableWeightBytes: number;
  gradientBytes: number;
  adamStateBytes: number;
  activationBytes: number;
  /** weights + gradients + AdamW state + activations. */
  totalBytes: number;
}

export interface CostRow {
  boundary: Boundary;
  /** Blocks that train (N − K; N for 'none'). */
  trainableBlocks: number;
  embeddingsTrainable: boolean;
  headTrainable: boolean;
  flops: FlopBreakdown;
  memory: MemoryBreakdown;
  /** Relative to full fine-tuning ('none'). */
  ratioToFull: { backward: number; step: number; memory: number };
}

export interface CostTable {
  nLayer: number;
  batch: number;
  seqLen: number;
  tokensPerStep: number;
  attention: 'causal' | 'full';
  vocab: number;
  params: ParameterCounts;
  /** K = 0..N, then 'none' (last). */
  rows: CostRow[];
  full: CostRow;
}

export interface PredictedSaving {
  freeze: number;
  trainableBlocks: number;
  /** cost(K) / cost(full); saving = 1 − ratio. */
  backwardRatio: number;
  stepRatio: number;
  memoryRatio: number;
  backwardSaving: number;
  stepSaving: number;
  memorySaving: number;
  /** The section-6 rule of thumb (1 + 2·(N−K)/N)/3, for comparison. */
  ruleOfThumbStepRatio: number;
  atK: CostRow;
  full: CostRow;
}

function checkShape(cfg: ModelConfig, B: number, T: number, opts: CostOptions): void {
  for (const [k, v] of [['nLayer', cfg.nLayer], ['nEmbd', cfg.nEmbd], ['nHead', cfg.nHead], ['nInner', cfg.nInner], ['vocabSize', cfg.vocabSize], ['nPositions', cfg.nPositions], ['batch', B], ['seqLen', T]] as const) {
    if (!Number.isInteger(v) || v <= 0) throw new AnalysisError(`cost: ${k} must be a positive integer, got ${v}`);
  }
  if (cfg.arch) {
    const { nKvHead, headDim } = cfg.arch;
    if (!Number.isInteger(nKvHead) || nKvHead <= 0 || cfg.nHead % nKvHead !== 0) throw new AnalysisError(`cost: nHead ${cfg.nHead} is not a multiple of nKvHead ${nKvHead}`);
    if (!Number.isInteger(headDim) || headDim <= 0) throw new AnalysisError(`cost: headDim must be a positive integer, got ${headDim}`);
  } else if (cfg.nEmbd % cfg.nHead !== 0) throw new AnalysisError(`cost: nEmbd ${cfg.nEmbd} is not divisible by nHead ${cfg.nHead}`);
  if (T > cfg.nPositions) throw new AnalysisError(`cost: seqLen ${T} exceeds nPositions ${cfg.nPositions}`);
  if (opts.vocab !== undefined && (!Number.isInteger(opts.vocab) || opts.vocab < cfg.vocabSize)) {
    throw new AnalysisError(`cost: options.vocab ${opts.vocab} must be an integer ≥ vocabSize ${cfg.vocabSize}`);
  }
  if (opts.logitsRowChunk !== undefined && (!Number.isInteger(opts.logitsRowChunk) || opts.logitsRowChunk <= 0)) {
    throw new AnalysisError(`cost: options.logitsRowChunk must be a positive integer, got ${opts.logitsRowChunk}`);
  }
}

function checkBoundary(cfg: ModelConfig, K: Boundary): void {
  if (K === 'none') return;
  if (!Number.isInteger(K) || K < 0 || K > cfg.nLayer) throw new AnalysisError(`cost: boundary K must be an integer in 0..${cfg.nLayer} or 'none', got ${K}`);
}

/**
 * Parameters of one block. GPT-2: 4C (two LayerNorms) + 3C²+3C (qkv) + C²+C (proj) + CF+F (fc) + FC+C
 * (proj). The family: 2C norm weights (4C with post-norms) + C·qW + 2·C·kvW (q, k, v) [+ qW + 2kvW
 * biases] + qW·C (o) [+ C] + 3·C·F (gate, up, down) [+ 2F + C biases].
 */
export function blockParamCount(cfg: ModelConfig): number {
  const C = cfg.nEmbd;
  const F = cfg.nInner;
  const a = cfg.arch;
  if (!a) return 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C);
  const qW = cfg.nHead * headSize(cfg);
  const kvW = kvHeads(cfg) * headSize(cfg);
  return (a.postNorms ? 4 : 2) * C +
    (C * qW + 2 * C * kvW) + (a.qkvBias ? qW + 2 * kvW : 0) +
    qW * C + (a.oBias ? C : 0) +
    3 * C * F + (a.mlpBias ? 2 * F + C : 0);
}

export function parameterCounts(cfg: ModelConfig, opts: CostOptions = {}): ParameterCounts {
  const C = cfg.nEmbd;
  const V = opts.vocab ?? cfg.vocabSize;
  const block = blockParamCount(cfg);
  const blocks = cfg.nLayer * block;
  const wte = V * C;
  // The family has rotary positions (no table) and an RMSNorm (a weight, no bias) at the top.
  const wpe = cfg.arch ? 0 : cfg.nPositions * C;
  const lnF = cfg.arch ? C : 2 * C;
  const head = cfg.tiedHead ? 0 : V * C;
  return { block, blocks, wte, wpe, lnF, head, total: blocks + wte + wpe + lnF + head };
}

/** Trainable parameters at boundary K. */
export function trainableParams(cfg: ModelConfig, K: Boundary, opts: CostOptions = {}): number {
  checkBoundary(cfg, K);
  if (opts.lora) return [...loraAdapted(cfg, K, opts).values()].reduce((s, m) => s + opts.lora!.r * (m.inputs + m.outputs), 0);
  const p = parameterCounts(cfg, opts);
  const nTrain = K === 'none' ? cfg.nLayer : cfg.nLayer - K;
  return nTrain * p.block + p.lnF + p.head + (K === 'none' ? p.wte + p.wpe : 0);
}

/** Per-element FLOPs of a norm: forward, backward dX, backward dW. */
function normFlops(kind: NormKind): { fwd: number; dX: number; dW: number } {
  const K0 = FLOP_CONSTANTS;
  if (kind === 'layernorm') return { fwd: K0.layerNormFwd, dX: K0.layerNormBwdDX, dW: K0.layerNormBwdDW };
  const plusOne = kind === 'rmsnorm1p' ? K0.rmsNormPlusOne : 0;
  return { fwd: K0.rmsNormFwd + plusOne, dX: K0.rmsNormBwdDX + plusOne, dW: K0.rmsNormBwdDW };
}

/** Floats per row of a norm's saved statistics: LayerNorm mean and rstd, RMSNorm rstd. */
function normStats(kind: NormKind): { name: string; perRow: number } {
  return kind === 'layernorm' ? { name: 'mean+rstd', perRow: 2 } : { name: 'rstd', perRow: 1 };
}

/** Unmasked (query, key) pairs of one batch row and head: causal, limited to `window` keys when 0 < window < T. */
export function causalPairs(T: number, window = 0): number {
  if (!(window > 0) || window >= T) return (T * (T + 1)) / 2;
  return (window * (window + 1)) / 2 + (T - window) * window;
}

/**
 * Rows of the streamed logits chunk, as ModelForward's headRowChunk computes it for a training graph
 * (keepLogits off): logits rows of ⌈V/4⌉·4 floats under min(maxStorageBufferBindingSize, 64 MiB) — 64 MiB
 * on every WebGPU device (the binding limit is at least 128 MiB) — in multiples of 64 rows when one fits,
 * else of the rows that keep a row chunk of the final norm's output 256-byte aligned.
 */
export function logitsRowChunk(C: number, V: number, rows: number): number {
  const perRow = Math.ceil(V / 4) * 4 * 4;
  let align = 1;
  while ((align * C * 4) % 256 !== 0 && align < 64) align *= 2;
  const r = Math.floor((64 * 2 ** 20) / perRow);
  if (r >= rows) return rows;
  const step = r >= 64 ? 64 : align;
  return Math.min(rows, Math.max(align, Math.floor(r / step) * step));
}

/** A projection's term name: GPT-2's legacy names, the family's Hugging Face module names (q_proj, …). */
function projName(cfg: ModelConfig, p: ProjSpec, gpt2: string): string {
  return cfg.arch ? p.weight.split('.').at(-2)! : gpt2;
}

/** Every FLOP term of one training step at boundary K, itemised. */
export function costTerms(cfg: ModelConfig, B: number, T: number, K: Boundary, opts: CostOptions = {}): CostTerm[] {
  checkShape(cfg, B, T, opts);
  checkBoundary(cfg, K);
  const spec = modelSpec(cfg);
  const N = cfg.nLayer;
  const C = cfg.nEmbd;
  const F = cfg.nInner;
  const V = opts.vocab ?? cfg.vocabSize;
  const M = B * T;
  const full = opts.attention === 'full';
  const K0 = FLOP_CONSTANTS;
  const terms: CostTerm[] = [];
  const add = (name: string, phase: CostPhase, flops: number) => terms.push({ name, phase, flops });
  const e = spec.embedding;
  const lnf = normFlops(spec.finalNorm.kind);
  const finalCap = spec.finalSoftcap > 0;
  const gluFwd = { gelu: K0.geluFwd, swiglu: K0.swigluFwd, geglu: K0.gegluFwd } as const;
  const gluBwd = { gelu: K0.geluBwd, swiglu: K0.swigluBwd, geglu: K0.gegluBwd } as const;
  /** Query-key pairs of a block's attention over the batch and its query heads. */
  const pairsOf = (l: number) => {
    const at = spec.blocks[l]!.attention.body;
    return B * at.nHead * (full ? T * T : causalPairs(T, at.window));
  };
  const names = (l: number) => {
    const bl = spec.blocks[l]!;
    return {
      qkv: bl.attention.body.qkv.map((p) => ({ p, n: projName(cfg, p, 'qkv') })),
      o: { p: bl.attention.body.o, n: projName(cfg, bl.attention.body.o, 'attproj') },
      up: bl.mlp.body.up.map((p) => ({ p, n: projName(cfg, p, 'fc') })),
      down: { p: bl.mlp.body.down, n: projName(cfg, bl.mlp.body.down, 'fcproj') },
      act: bl.mlp.body.kind === 'gelu' ? 'gelu' : 'glu',
    };
  };

  const adapted = loraAdapted(cfg, K, opts);
  const lora = !!opts.lora;
  const r = opts.lora?.r ?? 0;

  // Forward (the same for every boundary; LoRA adds its adapters' products).
  if (e.positions) add('embed.add', 'forward', M * C);
  if (e.scale !== 1) add('embed.scale', 'forward', K0.embedScale * M * C);
  for (let l = 0; l < N; l++) {
    const b = `block${l}`;
    const bl = spec.blocks[l]!;
    const at = bl.attention.body;
    const ml = bl.mlp.body;
    const nm = names(l);
    const pairs = pairsOf(l);
    const hd = at.headDim;
    const proj = (n: string, p: ProjSpec) => {
      add(`${b}.${n}`, 'forward', 2 * M * p.inputs * p.outputs);
      if (p.bias) add(`${b}.${n}.bias`, 'forward', M * p.outputs);
      if (adapted.has(p.weight)) add(`${b}.${n}.lora`, 'forward', 2 * M * p.inputs * r + M * r + 2 * M * r * p.outputs + M * p.outputs);
    };
    add(`${b}.ln1`, 'forward', normFlops(bl.attention.norm.kind).fwd * M * C);
    for (const { p, n } of nm.qkv) proj(n, p);
    if (at.rope) add(`${b}.rope`, 'forward', K0.ropeFwd * M * (at.nHead + at.nKvHead) * hd);
    add(`${b}.attn.qk`, 'forward', 2 * pairs * hd);
    if (at.softcap > 0) add(`${b}.attn.softcap`, 'forward', K0.softcapFwd * pairs);
    add(`${b}.attn.softmax`, 'forward', (K0.attnScale + K0.softmaxFwd) * pairs);
    add(`${b}.attn.pv`, 'forward', 2 * pairs * hd);
    proj(nm.o.n, nm.o.p);
    if (bl.attention.postNorm) add(`${b}.attn.postnorm`, 'forward', normFlops(bl.attention.postNorm.kind).fwd * M * C);
    add(`${b}.residual1`, 'forward', M * C);
    add(`${b}.ln2`, 'forward', normFlops(bl.mlp.norm.kind).fwd * M * C);
    for (const { p, n } of nm.up) proj(n, p);
    add(`${b}.${nm.act}`, 'forward', gluFwd[ml.kind] * M * F);
    proj(nm.down.n, nm.down.p);
    if (bl.mlp.postNorm) add(`${b}.mlp.postnorm`, 'forward', normFlops(bl.mlp.postNorm.kind).fwd * M * C);
    add(`${b}.residual2`, 'forward', M * C);
  }
  add('lnf', 'forward', lnf.fwd * M * C);
  add('head', 'forward', 2 * M * C * V);
  if (finalCap) add('logits.softcap', 'forward', (K0.softcapFwd + K0.softcapDeriv) * M * V);
  add('loss', 'forward', K0.crossEntropyFwd * M * V);

  // Backward.
  // LoRA: the embeddings never train, so 'none' is K = 0.
  const none = K === 'none' && !lora;
  const lowest = K === 'none' ? 0 : K;
  const headTrains = !lora && (!cfg.tiedHead || none);
  add('loss.dX', 'backwardDX', K0.crossEntropyBwd * M * V);
  if (finalCap) add('logits.softcap.dX', 'backwardDX', K0.softcapBwd * M * V);
  add('head.dX', 'backwardDX', 2 * M * V * C);
  if (headTrains) add('head.dW', 'backwardDW', 2 * M * V * C);
  if (!lora) add('lnf.dW', 'backwardDW', lnf.dW * M * C);
  if (lowest < N) add('lnf.dX', 'backwardDX', lnf.dX * M * C);
  for (let l = N - 1; l >= lowest; l--) {
    const b = `block${l}`;
    const bl = spec.blocks[l]!;
    const at = bl.attention.body;
    const ml = bl.mlp.body;
    const nm = names(l);
    const pairs = pairsOf(l);
    const hd = at.headDim;
    const needsInputDX = none || l > lowest;
    // LoRA at the lowest block: ln1 does not train, so nothing needs d(ln1 out), and only the parts of
    // the dX chain the block's own adapters read are paid (loraChainNeeds, as the training graph).
    const needsLn1DX = !lora || needsInputDX;
    const need = lora && !needsInputDX ? loraChainNeeds((w) => adapted.has(w), bl) : { qkv: true, attn: true, up: true };
    const projBwd = (n: string, p: ProjSpec, needDX = true) => {
      if (needDX) add(`${b}.${n}.dX`, 'backwardDX', 2 * M * p.outputs * p.inputs);
      if (!lora) {
        add(`${b}.${n}.dW`, 'backwardDW', 2 * M * p.inputs * p.outputs);
        if (p.bias) add(`${b}.${n}.db`, 'backwardDW', M * p.outputs);
      }
      if (adapted.has(p.weight)) {
        add(`${b}.${n}.lora.dX`, 'backwardDX', 2 * M * p.outputs * r + M * r + (needDX ? 2 * M * r * p.inputs + M * p.inputs : 0));
        add(`${b}.${n}.lora.dW`, 'backwardDW', 2 * M * p.outputs * r + 2 * M * r * p.inputs);
      }
    };
    const normDW = (n: string, kind: NormKind) => {
      if (!lora) add(`${b}.${n}.dW`, 'backwardDW', normFlops(kind).dW * M * C);
    };
    const postNormBwd = (n: string, kind: NormKind) => {
      add(`${b}.${n}.dX`, 'backwardDX', normFlops(kind).dX * M * C);
      normDW(n, kind);
    };
    if (bl.mlp.postNorm) postNormBwd('mlp.postnorm', bl.mlp.postNorm.kind);
    projBwd(nm.down.n, nm.down.p, need.up);
    if (need.up) {
      add(`${b}.${nm.act}.dX`, 'backwardDX', gluBwd[ml.kind] * M * F);
      for (const { p, n } of nm.up) projBwd(n, p, need.attn);
    }
    if (need.attn) {
      add(`${b}.ln2.dX`, 'backwardDX', normFlops(bl.mlp.norm.kind).dX * M * C);
      add(`${b}.residual1.merge`, 'backwardDX', M * C);
    }
    normDW('ln2', bl.mlp.norm.kind);
    if (need.attn) {
      if (bl.attention.postNorm) postNormBwd('attn.postnorm', bl.attention.postNorm.kind);
      projBwd(nm.o.n, nm.o.p, need.qkv);
    }
    if (need.qkv) {
      add(`${b}.attn.dP`, 'backwardDX', 2 * pairs * hd);
      add(`${b}.attn.dV`, 'backwardDX', 2 * pairs * hd);
      add(`${b}.attn.softmax.dX`, 'backwardDX', (K0.softmaxBwd + K0.attnScale) * pairs);
      if (at.softcap > 0) add(`${b}.attn.softcap.dX`, 'backwardDX', K0.attnSoftcapBwd * pairs);
      add(`${b}.attn.dQ`, 'backwardDX', 2 * pairs * hd);
      add(`${b}.attn.dK`, 'backwardDX', 2 * pairs * hd);
      if (at.rope) add(`${b}.rope.dX`, 'backwardDX', K0.ropeBwd * M * (at.nHead + at.nKvHead) * hd);
      for (const { p, n } of nm.qkv) projBwd(n, p, needsLn1DX);
    }
    normDW('ln1', bl.attention.norm.kind);
    if (needsInputDX) {
      add(`${b}.ln1.dX`, 'backwardDX', normFlops(bl.attention.norm.kind).dX * M * C);
      add(`${b}.residual0.merge`, 'backwardDX', M * C);
    }
  }
  if (none) {
    add('wte.dW', 'backwardDW', M * C);
    if (e.scale !== 1) add('wte.dW.scale', 'backwardDW', K0.embedScale * M * C);
    if (e.positions) add('wpe.dW', 'backwardDW', M * C);
  }

  add('optimizer', 'optimizer', K0.adamw * trainableParams(cfg, K, opts));
  if (opts.cachedBoundary && K !== 'none') {
    const prefix = (t: CostTerm) => t.phase === 'forward' && (t.name.startsWith('embed') || Number(/^block(\d+)\./.exec(t.name)?.[1] ?? Infinity) < K);
    return terms.filter((t) => !prefix(t));
  }
  return terms;
}

/** Stored activations at boundary K, itemised (see the header for the list). */
export function activationTerms(cfg: ModelConfig, B: number, T: number, K: Boundary, opts: CostOptions = {}): ActivationTerm[] {
  checkShape(cfg, B, T, opts);
  checkBoundary(cfg, K);
  const spec = modelSpec(cfg);
  const N = cfg.nLayer;
  const C = cfg.nEmbd;
  const F = cfg.nInner;
  const V = opts.vocab ?? cfg.vocabSize;
  const M = B * T;
  const lora = !!opts.lora;
  const none = K === 'none' && !lora;
  const lowest = K === 'none' ? 0 : K;
  const adapted = loraAdapted(cfg, K, opts);
  const out: ActivationTerm[] = [];
  const add = (name: string, elements: number) => out.push({ name, elements, bytes: BYTES * elements });
  const stats = (name: string, kind: NormKind) => {
    const s = normStats(kind);
    add(`${name}.${s.name}`, s.perRow * M);
  };
  if (none) add('input ids (int32)', M);
  add('boundary hidden state', M * C);
  for (let l = lowest; l < N; l++) {
    const b = `block${l}`;
    const bl = spec.blocks[l]!;
    const gated = bl.mlp.body.kind !== 'gelu';
    add(`${b}.ln1.out`, M * C);
    stats(`${b}.ln1`, bl.attention.norm.kind);
    add(`${b}.qkv`, M * spec.qkvWidth);
    add(`${b}.attn.probs`, B * bl.attention.body.nHead * T * T);
    add(`${b}.attn.out`, M * spec.attnWidth);
    if (bl.attention.postNorm) {
      add(`${b}.attn.proj.out`, M * C);
      stats(`${b}.attn.postnorm`, bl.attention.postNorm.kind);
    }
    add(`${b}.residual1`, M * C);
    add(`${b}.ln2.out`, M * C);
    stats(`${b}.ln2`, bl.mlp.norm.kind);
    add(gated ? `${b}.gate|up.out` : `${b}.fc.out`, M * spec.upWidth);
    add(gated ? `${b}.glu.out` : `${b}.gelu.out`, M * F);
    if (bl.mlp.postNorm) {
      add(`${b}.mlp.proj.out`, M * C);
      stats(`${b}.mlp.postnorm`, bl.mlp.postNorm.kind);
    }
    add(`${b}.residual2`, M * C);
    for (const p of [...bl.attention.body.qkv, bl.attention.body.o, ...bl.mlp.body.up, bl.mlp.body.down]) {
      if (adapted.has(p.weight)) add(`${b}.${p.weight.slice(bl.prefix.length + 1, -'.weight'.length)}.lora.u`, M * opts.lora!.r);
    }
  }
  stats('lnf', spec.finalNorm.kind);
  if (!lora && (!cfg.tiedHead || none)) add('lnf.out', M * C);
  add('probs', M * V);
  if (spec.finalSoftcap > 0) add('logits.softcap.deriv', (opts.logitsRowChunk ?? logitsRowChunk(C, V, M)) * V);
  add('targets (int32)', M);
  return out;
}

function sumPhase(terms: CostTerm[], phase: CostPhase): number {
  let s = 0;
  for (const t of terms) if (t.phase === phase) s += t.flops;
  return s;
}

/** A cost row before its ratios to full fine-tuning are known. */
type RawRow = Omit<CostRow, 'ratioToFull'>;

function rawRow(cfg: ModelConfig, B: number, T: number, K: Boundary, opts: CostOptions): RawRow {
  const terms = costTerms(cfg, B, T, K, opts);
  const forward = sumPhase(terms, 'forward');
  const backwardDX = sumPhase(terms, 'backwardDX');
  const backwardDW = sumPhase(terms, 'backwardDW');
  const optimizer = sumPhase(terms, 'optimizer');
  const backward = backwardDX + backwardDW;
  const P = trainableParams(cfg, K, opts);
  // LoRA: the adapters are parameters too, beside the frozen base.
  const weightBytes = BYTES * (parameterCounts(cfg, opts).total + (opts.lora ? P : 0));
  let activationBytes = 0;
  for (const a of activationTerms(cfg, B, T, K, opts)) activationBytes += a.bytes;
  const memory: MemoryBreakdown = {
    weightBytes,
    trainableParams: P,
    trainableWeightBytes: BYTES * P,
    gradientBytes: BYTES * P,
    adamStateBytes: 2 * BYTES * P,
    activationBytes,
    totalBytes: weightBytes + BYTES * P + 2 * BYTES * P + activationBytes,
  };
  return {
    boundary: K,
    trainableBlocks: K === 'none' ? cfg.nLayer : cfg.nLayer - K,
    embeddingsTrainable: K === 'none' && !opts.lora,
    headTrainable: !opts.lora && (!cfg.tiedHead || K === 'none'),
    flops: { forward, backwardDX, backwardDW, backward, optimizer, total: forward + backward + optimizer },
    memory,
  };
}

function withRatios(r: RawRow, full: RawRow): CostRow {
  return {
    ...r,
    ratioToFull: {
      backward: r.flops.backward / full.flops.backward,
      step: r.flops.total / full.flops.total,
      memory: r.memory.totalBytes / full.memory.totalBytes,
    },
  };
}

/** Cost of one step at boundary K (ratios against 'none': full fine-tuning of the weights, also under LoRA). */
export function stepCost(cfg: ModelConfig, B: number, T: number, K: Boundary, opts: CostOptions = {}): CostRow {
  return withRatios(rawRow(cfg, B, T, K, opts), rawRow(cfg, B, T, 'none', { ...opts, lora: undefined }));
}

/** Rows for K = 0..N, then 'none' (full fine-tuning, the reference of every ratio). */
export function costTable(cfg: ModelConfig, B: number, T: number, opts: CostOptions = {}): CostTable {
  checkShape(cfg, B, T, opts);
  const fullRaw = rawRow(cfg, B, T, 'none', { ...opts, lora: undefined });
  const rows: CostRow[] = [];
  for (let K = 0; K <= cfg.nLayer; K++) rows.push(withRatios(rawRow(cfg, B, T, K, opts), fullRaw));
  const full = withRatios(fullRaw, fullRaw);
  rows.push(full);
  return {
    nLayer: cfg.nLayer,
    batch: B,
    seqLen: T,
    tokensPerStep: B * T,
    attention: opts.attention ?? 'causal',
    vocab: opts.vocab ?? cfg.vocabSize,
    params: parameterCounts(cfg, opts),
    rows,
    full,
  };
}

/** Backward FLOPs, step FLOPs and memory at `--freeze K`, relative to full fine-tuning. */
export function predictedSaving(cfg: ModelConfig, B: number, T: number, K: number, opts: CostOptions = {}): PredictedSaving {
  checkBoundary(cfg, K);
  const atK = stepCost(cfg, B, T, K, opts);
  const full = stepCost(cfg, B, T, 'none', { ...opts, lora: undefined });
  const N = cfg.nLayer;
  return {
    freeze: K,
    trainableBlocks: N - K,
    backwardRatio: atK.ratioToFull.backward,
    stepRatio: atK.ratioToFull.step,
    memoryRatio: atK.ratioToFull.memory,
    backwardSaving: 1 - atK.ratioToFull.backward,
    stepSaving: 1 - atK.ratioToFull.step,
    memorySaving: 1 - atK.ratioToFull.memory,
    ruleOfThumbStepRatio: (1 + (2 * (N - K)) / N) / 3,
    atK,
    full,
  };
}
