// The cost model of method.md section 6, exact for a GPT-2 shape under the counting rules below.
//
// Notation: N blocks, C = nEmbd, H = nHead, hs = C/H, F = nInner, V = vocab (cfg.vocabSize, or
// options.vocab for a padded head), M = B·T tokens per step. A boundary K ∈ 0..N freezes the embeddings
// and blocks 0..K−1 (CLI `--freeze K`; paper's eof = K); blocks K..N−1, the final norm ln_f and an untied
// head train. Boundary 'none' is full fine-tuning: embeddings (and with them a tied head) train too.
//
// FLOP counting rules:
//  - A matmul [m×k]·[k×n] is 2·m·k·n. A bias add or residual add is 1 per output element.
//  - Attention (per batch row and head): QKᵀ and P·V cost 2·hs per (query, key) pair; the scale and
//    softmax cost ATTN_SCALE + SOFTMAX_FWD per pair. `attention: 'causal'` (default) counts only the
//    T(T+1)/2 unmasked pairs (a kernel that skips the masked part); 'full' counts T² pairs.
//  - Elementwise constants (FLOP_CONSTANTS, per element): LayerNorm forward 8 (mean 1, variance 3:
//    sub/mul/add, normalise 2, scale+shift 2); LayerNorm backward dX 10 (dx̂ = dy·γ 1, recompute x̂ 2,
//    Σdx̂ 1, Σdx̂·x̂ 2, combine 4) and dW 3 (dβ 1, dγ 2); GELU (tanh) forward 9 (x³ 2, ·0.044715 1, +x 1,
//    ·√(2/π) 1, tanh 1, +1 1, ·x 1, ·0.5 1), backward 18 (recompute the tanh 6, sech² 2, du/dx 3,
//    derivative 6, ·dout 1); softmax forward 5 (max, sub, exp, sum, normalise), backward 4
//    (P·dP, Σ, sub, ·P) plus the scale 1; cross-entropy forward 5 per logit (the softmax), backward 2 per
//    logit (p − onehot, ·1/M); AdamW 16 per trainable parameter (m 3, v 4, bias corrections 2,
//    √+eps 2, divide 1, weight decay 2, lr step 2; weight decay counted on every parameter). Per-row
//    terms (1/d, rsqrt, log) and the embedding lookup (a gather) are 0; gradient clipping is not counted.
//  - Backward split: dX = activation-gradient work (everything that propagates d/d(activation)),
//    dW = parameter-gradient work (weight matmuls, bias sums, LayerNorm dγ/dβ, embedding scatter-adds).
//  - ln_f always trains, so the loss backward, the head's dX (2·M·V·C) and ln_f's dW are always paid;
//    the head's dW only when the head trains (untied, or tied with the embeddings trainable).
//  - The lowest trainable block (K < N, boundary not 'none') needs every gradient inside it (ln1's dγ/dβ
//    need d(ln1 out), so even the qkv dX matmul is paid) but NOT its input's dX: ln1's dX and the residual
//    merge into the block input are skipped. Below the boundary: nothing.
//  - Forward is the same for every boundary (the frozen prefix still runs forward; caching the boundary
//    hidden states across epochs is not modelled).
//
// Memory (bytes; 4 per float32/int32):
//  - weights: every parameter (frozen ones too); gradients: 1 float per trainable parameter; AdamW state:
//    2 floats per trainable parameter.
//  - stored activations (what the backward must keep), per trainable block, in floats:
//      ln1 out M·C, ln1 mean+rstd 2·M, qkv 3·M·C, attention probs B·H·T² (stored as the full square even
//      when causal), attention out (pre-projection) M·C, residual after attention M·C, ln2 out M·C,
//      ln2 mean+rstd 2·M, fc out (pre-GELU) M·F, GELU out M·F, block output (residual) M·C;
//    not kept: the projections' outputs before their residual adds (not needed by the backward);
//    plus the boundary hidden state M·C (input of the lowest trainable block; the ln_f input when K = N;
//    the embedding output for K = 0 / 'none');
//    plus the top: ln_f mean+rstd 2·M, ln_f out M·C only when the head trains (its dW reads it),
//    probabilities M·V, targets M int32; plus, for 'none', the input token ids M int32 (embedding backward).
//    The frozen prefix runs in a reused scratch buffer that is not counted.

import type { ModelConfig } from '../model/config.ts';
import { AnalysisError } from './types.ts';

export const FLOP_CONSTANTS = {
  layerNormFwd: 8,
  layerNormBwdDX: 10,
  layerNormBwdDW: 3,
  geluFwd: 9,
  geluBwd: 18,
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
  /** Parameters of one block (ln1, attn qkv+proj, ln2, mlp fc+proj; weights and biases). */
  block: number;
  blocks: number;
  wte: number;
  wpe: number;
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
  if (cfg.nEmbd % cfg.nHead !== 0) throw new AnalysisError(`cost: nEmbd ${cfg.nEmbd} is not divisible by nHead ${cfg.nHead}`);
  if (T > cfg.nPositions) throw new AnalysisError(`cost: seqLen ${T} exceeds nPositions ${cfg.nPositions}`);
  if (opts.vocab !== undefined && (!Number.isInteger(opts.vocab) || opts.vocab < cfg.vocabSize)) {
    throw new AnalysisError(`cost: options.vocab ${opts.vocab} must be an integer ≥ vocabSize ${cfg.vocabSize}`);
  }
}

function checkBoundary(cfg: ModelConfig, K: Boundary): void {
  if (K === 'none') return;
  if (!Number.isInteger(K) || K < 0 || K > cfg.nLayer) throw new AnalysisError(`cost: boundary K must be an integer in 0..${cfg.nLayer} or 'none', got ${K}`);
}

/** Parameters of one GPT-2 block: 4C (two LayerNorms) + 3C²+3C (qkv) + C²+C (proj) + CF+F (fc) + FC+C (proj). */
export function blockParamCount(cfg: ModelConfig): number {
  const C = cfg.nEmbd;
  const F = cfg.nInner;
  return 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C);
}

export function parameterCounts(cfg: ModelConfig, opts: CostOptions = {}): ParameterCounts {
  const C = cfg.nEmbd;
  const V = opts.vocab ?? cfg.vocabSize;
  const block = blockParamCount(cfg);
  const blocks = cfg.nLayer * block;
  const wte = V * C;
  const wpe = cfg.nPositions * C;
  const lnF = 2 * C;
  const head = cfg.tiedHead ? 0 : V * C;
  return { block, blocks, wte, wpe, lnF, head, total: blocks + wte + wpe + lnF + head };
}

/** Trainable parameters at boundary K. */
export function trainableParams(cfg: ModelConfig, K: Boundary, opts: CostOptions = {}): number {
  checkBoundary(cfg, K);
  const p = parameterCounts(cfg, opts);
  const nTrain = K === 'none' ? cfg.nLayer : cfg.nLayer - K;
  return nTrain * p.block + p.lnF + p.head + (K === 'none' ? p.wte + p.wpe : 0);
}

/** Every FLOP term of one training step at boundary K, itemised. */
export function costTerms(cfg: ModelConfig, B: number, T: number, K: Boundary, opts: CostOptions = {}): CostTerm[] {
  checkShape(cfg, B, T, opts);
  checkBoundary(cfg, K);
  const N = cfg.nLayer;
  const C = cfg.nEmbd;
  const H = cfg.nHead;
  const hs = C / H;
  const F = cfg.nInner;
  const V = opts.vocab ?? cfg.vocabSize;
  const M = B * T;
  const full = opts.attention === 'full';
  const pairs = B * H * (full ? T * T : (T * (T + 1)) / 2);
  const K0 = FLOP_CONSTANTS;
  const terms: CostTerm[] = [];
  const add = (name: string, phase: CostPhase, flops: number) => terms.push({ name, phase, flops });

  // Forward (same for every boundary).
  add('embed.add', 'forward', M * C);
  for (let l = 0; l < N; l++) {
    const b = `block${l}`;
    add(`${b}.ln1`, 'forward', K0.layerNormFwd * M * C);
    add(`${b}.qkv`, 'forward', 2 * M * C * 3 * C);
    add(`${b}.qkv.bias`, 'forward', M * 3 * C);
    add(`${b}.attn.qk`, 'forward', 2 * pairs * hs);
    add(`${b}.attn.softmax`, 'forward', (K0.attnScale + K0.softmaxFwd) * pairs);
    add(`${b}.attn.pv`, 'forward', 2 * pairs * hs);
    add(`${b}.attproj`, 'forward', 2 * M * C * C);
    add(`${b}.attproj.bias`, 'forward', M * C);
    add(`${b}.residual1`, 'forward', M * C);
    add(`${b}.ln2`, 'forward', K0.layerNormFwd * M * C);
    add(`${b}.fc`, 'forward', 2 * M * C * F);
    add(`${b}.fc.bias`, 'forward', M * F);
    add(`${b}.gelu`, 'forward', K0.geluFwd * M * F);
    add(`${b}.fcproj`, 'forward', 2 * M * F * C);
    add(`${b}.fcproj.bias`, 'forward', M * C);
    add(`${b}.residual2`, 'forward', M * C);
  }
  add('lnf', 'forward', K0.layerNormFwd * M * C);
  add('head', 'forward', 2 * M * C * V);
  add('loss', 'forward', K0.crossEntropyFwd * M * V);

  // Backward.
  const none = K === 'none';
  const lowest = none ? 0 : K;
  const headTrains = !cfg.tiedHead || none;
  add('loss.dX', 'backwardDX', K0.crossEntropyBwd * M * V);
  add('head.dX', 'backwardDX', 2 * M * V * C);
  if (headTrains) add('head.dW', 'backwardDW', 2 * M * V * C);
  add('lnf.dW', 'backwardDW', K0.layerNormBwdDW * M * C);
  if (lowest < N) add('lnf.dX', 'backwardDX', K0.layerNormBwdDX * M * C);
  for (let l = N - 1; l >= lowest; l--) {
    const b = `block${l}`;
    const needsInputDX = none || l > lowest;
    add(`${b}.fcproj.dX`, 'backwardDX', 2 * M * F * C);
    add(`${b}.fcproj.dW`, 'backwardDW', 2 * M * F * C);
    add(`${b}.fcproj.db`, 'backwardDW', M * C);
    add(`${b}.gelu.dX`, 'backwardDX', K0.geluBwd * M * F);
    add(`${b}.fc.dX`, 'backwardDX', 2 * M * C * F);
    add(`${b}.fc.dW`, 'backwardDW', 2 * M * C * F);
    add(`${b}.fc.db`, 'backwardDW', M * F);
    add(`${b}.ln2.dX`, 'backwardDX', K0.layerNormBwdDX * M * C);
    add(`${b}.ln2.dW`, 'backwardDW', K0.layerNormBwdDW * M * C);
    add(`${b}.residual1.merge`, 'backwardDX', M * C);
    add(`${b}.attproj.dX`, 'backwardDX', 2 * M * C * C);
    add(`${b}.attproj.dW`, 'backwardDW', 2 * M * C * C);
    add(`${b}.attproj.db`, 'backwardDW', M * C);
    add(`${b}.attn.dP`, 'backwardDX', 2 * pairs * hs);
    add(`${b}.attn.dV`, 'backwardDX', 2 * pairs * hs);
    add(`${b}.attn.softmax.dX`, 'backwardDX', (K0.softmaxBwd + K0.attnScale) * pairs);
    add(`${b}.attn.dQ`, 'backwardDX', 2 * pairs * hs);
    add(`${b}.attn.dK`, 'backwardDX', 2 * pairs * hs);
    add(`${b}.qkv.dX`, 'backwardDX', 2 * M * 3 * C * C);
    add(`${b}.qkv.dW`, 'backwardDW', 2 * M * C * 3 * C);
    add(`${b}.qkv.db`, 'backwardDW', M * 3 * C);
    add(`${b}.ln1.dW`, 'backwardDW', K0.layerNormBwdDW * M * C);
    if (needsInputDX) {
      add(`${b}.ln1.dX`, 'backwardDX', K0.layerNormBwdDX * M * C);
      add(`${b}.residual0.merge`, 'backwardDX', M * C);
    }
  }
  if (none) {
    add('wte.dW', 'backwardDW', M * C);
    add('wpe.dW', 'backwardDW', M * C);
  }

  add('optimizer', 'optimizer', K0.adamw * trainableParams(cfg, K, opts));
  return terms;
}

/** Stored activations at boundary K, itemised (see the header for the list). */
export function activationTerms(cfg: ModelConfig, B: number, T: number, K: Boundary, opts: CostOptions = {}): ActivationTerm[] {
  checkShape(cfg, B, T, opts);
  checkBoundary(cfg, K);
  const N = cfg.nLayer;
  const C = cfg.nEmbd;
  const H = cfg.nHead;
  const F = cfg.nInner;
  const V = opts.vocab ?? cfg.vocabSize;
  const M = B * T;
  const none = K === 'none';
  const lowest = none ? 0 : K;
  const out: ActivationTerm[] = [];
  const add = (name: string, elements: number) => out.push({ name, elements, bytes: BYTES * elements });
  if (none) add('input ids (int32)', M);
  add('boundary hidden state', M * C);
  for (let l = lowest; l < N; l++) {
    const b = `block${l}`;
    add(`${b}.ln1.out`, M * C);
    add(`${b}.ln1.mean+rstd`, 2 * M);
    add(`${b}.qkv`, 3 * M * C);
    add(`${b}.attn.probs`, B * H * T * T);
    add(`${b}.attn.out`, M * C);
    add(`${b}.residual1`, M * C);
    add(`${b}.ln2.out`, M * C);
    add(`${b}.ln2.mean+rstd`, 2 * M);
    add(`${b}.fc.out`, M * F);
    add(`${b}.gelu.out`, M * F);
    add(`${b}.residual2`, M * C);
  }
  add('lnf.mean+rstd', 2 * M);
  if (!cfg.tiedHead || none) add('lnf.out', M * C);
  add('probs', M * V);
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
  const weightBytes = BYTES * parameterCounts(cfg, opts).total;
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
    embeddingsTrainable: K === 'none',
    headTrainable: !cfg.tiedHead || K === 'none',
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

/** Cost of one step at boundary K (ratios against 'none'). */
export function stepCost(cfg: ModelConfig, B: number, T: number, K: Boundary, opts: CostOptions = {}): CostRow {
  return withRatios(rawRow(cfg, B, T, K, opts), rawRow(cfg, B, T, 'none', opts));
}

/** Rows for K = 0..N, then 'none' (full fine-tuning, the reference of every ratio). */
export function costTable(cfg: ModelConfig, B: number, T: number, opts: CostOptions = {}): CostTable {
  checkShape(cfg, B, T, opts);
  const fullRaw = rawRow(cfg, B, T, 'none', opts);
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
  const full = stepCost(cfg, B, T, 'none', opts);
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
