// Causal self-attention program (kernels/attention.wgsl): flash-style forward that saves only a
// per-row logsumexp, and a two-pass deterministic backward that recomputes the scores.
// GPT-2's multi-head attention by default; grouped-query attention (Llama, Qwen2), a head size
// independent of C, a sliding window, logit soft-capping and a caller's scale (Gemma2) as options.
import type { BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

export interface AttentionShape {
  B: number;
  T: number;
  /** Model width: the head size defaults to C / nHead (GPT-2). Unused when headDim is given. */
  C: number;
  /** Query heads. */
  nHead: number;
  /** Key/value heads (grouped-query attention; nHead % nKvHead == 0). Default nHead (GPT-2). */
  nKvHead?: number;
  /** Head size, 1..ATTENTION_MAX_HEAD. Default C / nHead (GPT-2). */
  headDim?: number;
  /**
   * Sliding window (HF's sliding_window): query i sees keys j with i − window < j ≤ i, at most
   * `window` keys. 0 or absent: unlimited (plain causal).
   */
  window?: number;
  /** Attention logit soft-capping (Gemma2's attn_logit_softcapping): s = c·tanh(s/c). 0 or absent: off. */
  softcap?: number;
  /** Scale of q·k (Gemma2: query_pre_attn_scalar^−½). Default 1/√headDim. */
  scale?: number;
}

/** The layout an AttentionShape implies (see attentionDims). */
export interface AttentionDims {
  /** Head size. */
  hd: number;
  nKvHead: number;
  /** Width of a qkv (and dqkv) row: (nHead + 2·nKvHead)·hd = [q heads | k heads | v heads]. */
  qkvWidth: number;
  /** Width of an out (and dout) row: nHead·hd. */
  outWidth: number;
  /** The window in effect: 0 when absent or ≥ T (then it masks nothing). */
  window: number;
  softcap: number;
  scale: number;
}

export interface AttentionForwardArgs extends AttentionShape {
  /** [B, T, qkvWidth] (GPT-2: [B, T, 3C], c_attn's output q | k | v). */
  qkv: BufferBinding;
  /** [B, T, outWidth] (GPT-2: [B, T, C]): heads concatenated (c_proj / o_proj input). Overwritten. */
  out: BufferBinding;
  /** [B, nHead, T] f32 per-row logsumexp for the backward; required when `save`. */
  stats?: BufferBinding;
  /** Save stats for a backward; false = forward-only (frozen prefix, inference, traces). */
  save: boolean;
  /** Lanes per workgroup; default attentionLanes(rt) (8 on software adapters, 32 on hardware GPUs). */
  lanes?: number;
}

export interface AttentionBackwardArgs extends AttentionShape {
  /** [B, T, outWidth]: gradient of the attention output. */
  dout: BufferBinding;
  /** [B, T, qkvWidth]: the forward's input. */
  qkv: BufferBinding;
  /** [B, nHead, T]: written by the forward with `save: true`. */
  stats: BufferBinding;
  /**
   * [B, T, outWidth]: the forward's output, for D_i = dO_i·O_i. Optional: without it the backward
   * gets D from one extra sweep over the keys (about 2/3 more work in its first pass).
   */
  out?: BufferBinding;
  /** [B, T, qkvWidth]: overwritten with the gradient of qkv (dk, dv summed over each kv head's group). */
  dqkv: BufferBinding;
  /** attentionBufferBytes(shape).scratchBytes: per-row D (and the stored squares), transient (may be shared by all layers). */
  scratch: BufferBinding;
  /**
   * Store p_ij and dS_ij in the scratch in the first pass and read them in the second instead of
   * recomputing them; default attentionStoresProbabilities(shape). The scratch must be sized with
   * the same choice.
   */
  storeProbabilities?: boolean;
  /** Lanes per workgroup; default attentionLanes(rt) (8 on software adapters, 32 on hardware GPUs). */
  lanes?: number;
}

/** Lanes per workgroup on software adapters: one lavapipe SIMD vector (see kernels/attention.wgsl). */
export const ATTENTION_WG = 8;
/** Lanes per workgroup on hardware GPUs: one warp (NVIDIA, Apple, Intel SIMD32), half an AMD wave64. */
export const ATTENTION_WG_HARDWARE = 32;
/**
 * Rows each lane owns in each entry point, written out in the WGSL (forward 8, backward_q 4,
 * backward_kv 4): a workgroup's tile is lanes × these rows. Keep in sync with kernels/attention.wgsl.
 */
export const ATTENTION_ROWS_PER_LANE = { forward: 8, backward_q: 4, backward_kv: 4, backward_kv_stored: 4 } as const;

/** Lanes per workgroup the kernels run with on this adapter (8 on software adapters, 32 on GPUs). */
export function attentionLanes(rt: Runtime): number {
  return rt.gpu.info.isSoftware ? ATTENTION_WG : ATTENTION_WG_HARDWARE;
}

function lanesOf(rt: Runtime, what: string, lanes: number | undefined): number {
  const wg = lanes ?? attentionLanes(rt);
  const max = rt.gpu.limits.maxComputeInvocationsPerWorkgroup ?? 256;
  if (!(Number.isInteger(wg) && wg >= 1 && wg <= Math.min(max, 256))) throw new Error(`${what}: lanes must be an integer in 1..${Math.min(max, 256)} (got ${wg})`);
  return wg;
}
/**
 * Largest pair of stored squares (p and dS, 2·B·nHead·T² floats) the backward keeps by default:
 * 32 MiB covers B=4, T=256 with 12 heads (24 MiB); longer sequences recompute.
 */
export const ATTENTION_STORE_LIMIT_BYTES = 32 * 2 ** 20;
/**
 * Largest head size the kernels hold in private rows (MAXD4 · 4 in the WGSL): 256 covers GPT-2
 * (64), Llama / Qwen2 (64–128) and Gemma2 (256). With a cold Mesa shader cache on 2 cores each
 * pipeline compiles in ~4 s at head size 128 or 256 and ~5–40 s at 24–64 (measured); the disk
 * cache keeps them.
 */
export const ATTENTION_MAX_HEAD = 256;

/** Head size, kv heads, row widths, and the effective window / softcap / scale of a shape (validated). */
export function attentionDims(s: AttentionShape): AttentionDims {
  return checkShape('attentionDims', s);
}

/**
 * Bytes of the buffers attention needs besides its inputs and outputs, for one layer's shape:
 * `statsBytes` is saved by a training forward until that layer's backward (one f32 per row);
 * `scratchBytes` is used only during a backward and can be shared by all layers.
 * A forward-only pass needs neither.
 */
export function attentionBufferBytes(shape: AttentionShape, opts: { storeProbabilities?: boolean } = {}): { statsBytes: number; scratchBytes: number } {
  checkShape('attentionBufferBytes', shape);
  const rows = shape.B * shape.nHead * shape.T;
  const store = opts.storeProbabilities ?? attentionStoresProbabilities(shape);
  return { statsBytes: 4 * rows, scratchBytes: 4 * rows + (store ? storedBytes(shape) : 0) };
}

/** Bytes of the two stored squares, p and dS: 2·B·nHead·T² floats. */
function storedBytes(s: AttentionShape): number {
  return 2 * 4 * s.B * s.nHead * s.T * s.T;
}

/**
 * Whether the backward stores p and dS by default (its second pass then does about half the
 * work): when the squares fit ATTENTION_STORE_LIMIT_BYTES.
 */
export function attentionStoresProbabilities(shape: AttentionShape): boolean {
  checkShape('attentionStoresProbabilities', shape);
  return storedBytes(shape) <= ATTENTION_STORE_LIMIT_BYTES;
}

function checkShape(what: string, s: AttentionShape): AttentionDims {
  const { B, T, C, nHead } = s;
  for (const [k, v] of Object.entries({ B, T, C, nHead })) {
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`${what}: ${k} must be a positive integer (got ${v})`);
  }
  const nKvHead = s.nKvHead ?? nHead;
  if (!(Number.isInteger(nKvHead) && nKvHead > 0)) throw new Error(`${what}: nKvHead must be a positive integer (got ${nKvHead})`);
  if (nHead % nKvHead !== 0) throw new Error(`${what}: nHead ${nHead} is not a multiple of nKvHead ${nKvHead}`);
  let hd: number;
  if (s.headDim === undefined) {
    if (C % nHead !== 0) throw new Error(`${what}: C ${C} is not divisible by nHead ${nHead} (give headDim)`);
    hd = C / nHead;
  } else {
    hd = s.headDim;
    if (!(Number.isInteger(hd) && hd > 0)) throw new Error(`${what}: headDim must be a positive integer (got ${hd})`);
  }
  if (hd > ATTENTION_MAX_HEAD) throw new Error(`${what}: head size ${hd} over the supported ${ATTENTION_MAX_HEAD} (the kernels keep rows of ≤ ${ATTENTION_MAX_HEAD} floats in registers)`);
  const window = s.window ?? 0;
  if (!(Number.isInteger(window) && window >= 0)) throw new Error(`${what}: window must be a non-negative integer (got ${window}; 0 = unlimited)`);
  const softcap = s.softcap ?? 0;
  if (!(Number.isFinite(softcap) && softcap >= 0)) throw new Error(`${what}: softcap must be ≥ 0 (got ${softcap}; 0 = off)`);
  const scale = s.scale ?? 1 / Math.sqrt(hd);
  if (!(Number.isFinite(scale) && scale > 0)) throw new Error(`${what}: scale must be a positive number (got ${scale})`);
  const qkvWidth = (nHead + 2 * nKvHead) * hd;
  if (B * T * qkvWidth >= 2 ** 32) throw new Error(`${what}: qkv of ${B}x${T}x${qkvWidth} elements overflows u32 indexing`);
  return { hd, nKvHead, qkvWidth, outWidth: nHead * hd, window: window < T ? window : 0, softcap, scale };
}

function bindingBytes(b: BufferBinding): number | undefined {
  if ('buffer' in b) return b.size ?? (b.buffer.size - (b.offset ?? 0));
  return (b as GPUBuffer).size;
}

function checkSize(what: string, name: string, b: BufferBinding, elems: number): void {
  const have = bindingBytes(b);
  if (have !== undefined && have < elems * 4) throw new Error(`${what}: '${name}' has ${have} bytes, needs ${elems * 4}`);
}

function uniforms(s: AttentionShape, d: AttentionDims): Record<string, number> {
  return {
    B: s.B, T: s.T, nHead: s.nHead, nKv: d.nKvHead, W: d.qkvWidth, Cq: d.outWidth,
    scale: d.scale,
    qscale: d.softcap > 0 ? d.scale / d.softcap : d.scale * Math.LOG2E,
    capL: d.softcap * Math.LOG2E,
    window: d.window,
  };
}

/**
 * Override constants shared by the three entry points. Features that are off compile away: with
 * GQA, WINDOWED and SOFTCAP false (GPT-2) the kernels are GPT-2's plain causal multi-head ones.
 */
function variant(s: AttentionShape, d: AttentionDims, lanes: number): Record<string, number | boolean> {
  return { HS: d.hd, WG: lanes, GQA: d.nKvHead < s.nHead, WINDOWED: d.window > 0, SOFTCAP: d.softcap > 0 };
}

function workgroups(s: AttentionShape, heads: number, entry: keyof typeof ATTENTION_ROWS_PER_LANE, lanes: number): readonly [number, number] {
  return grid(s.B * heads * Math.ceil(s.T / (ATTENTION_ROWS_PER_LANE[entry] * lanes)));
}

/** One dispatch: out = softmax(mask(softcap(scale·q·kᵀ)))·v per query head; stats saved when `save`. */
export async function attentionForward(rt: Runtime, args: AttentionForwardArgs): Promise<Dispatch[]> {
  const d = checkShape('attentionForward', args);
  const { B, T, nHead } = args;
  if (args.save && !args.stats) throw new Error('attentionForward: save: true needs a stats buffer (attentionBufferBytes().statsBytes)');
  checkSize('attentionForward', 'qkv', args.qkv, B * T * d.qkvWidth);
  checkSize('attentionForward', 'out', args.out, B * T * d.outWidth);
  if (args.save) checkSize('attentionForward', 'stats', args.stats!, B * nHead * T);
  const lanes = lanesOf(rt, 'attentionForward', args.lanes);
  const kernel = await rt.kernels.kernel('attention', 'forward', { ...variant(args, d, lanes), SAVE_STATS: args.save });
  const bound = rt.kernels.bind(kernel, { qkv: args.qkv, out: args.out, stats: args.save ? args.stats! : rt.dummy }, uniforms(args, d));
  return [{ bound, workgroups: workgroups(args, nHead, 'forward', lanes) }];
}

/** Two dispatches: dq (and D into scratch), then dk and dv. dqkv is overwritten. */
export async function attentionBackward(rt: Runtime, args: AttentionBackwardArgs): Promise<Dispatch[]> {
  const d = checkShape('attentionBackward', args);
  const { B, T, nHead } = args;
  checkSize('attentionBackward', 'dout', args.dout, B * T * d.outWidth);
  checkSize('attentionBackward', 'qkv', args.qkv, B * T * d.qkvWidth);
  checkSize('attentionBackward', 'stats', args.stats, B * nHead * T);
  checkSize('attentionBackward', 'dqkv', args.dqkv, B * T * d.qkvWidth);
  const store = args.storeProbabilities ?? attentionStoresProbabilities(args);
  const scratchElems = attentionBufferBytes(args, { storeProbabilities: store }).scratchBytes / 4;
  if (scratchElems >= 2 ** 32) throw new Error(`attentionBackward: stored squares of ${B}x${nHead}x${T}x${T} overflow u32 indexing (storeProbabilities: false)`);
  checkSize('attentionBackward', 'scratch', args.scratch, scratchElems);
  if (args.out) checkSize('attentionBackward', 'out', args.out, B * T * d.outWidth);
  const hasOut = !!args.out;
  const kvEntry = store ? 'backward_kv_stored' : 'backward_kv';
  const lanes = lanesOf(rt, 'attentionBackward', args.lanes);
  const [kq, kkv] = await Promise.all([
    rt.kernels.kernel('attention', 'backward_q', { ...variant(args, d, lanes), HAS_OUT: hasOut, STORE_P: store }),
    rt.kernels.kernel('attention', kvEntry, variant(args, d, lanes)),
  ]);
  const u = uniforms(args, d);
  const q = rt.kernels.bind(kq, { qkv: args.qkv, dout: args.dout, lse: args.stats, fout: args.out ?? rt.dummy, dqkv: args.dqkv, dsum: args.scratch }, u);
  const kv = rt.kernels.bind(kkv, { qkv: args.qkv, dout: args.dout, lse: args.stats, dqkv: args.dqkv, dsum: args.scratch }, u);
  return [{ bound: q, workgroups: workgroups(args, nHead, 'backward_q', lanes) }, { bound: kv, workgroups: workgroups(args, d.nKvHead, kvEntry, lanes) }];
}

/** Query–key pairs one head computes: Σ_i min(i + 1, window) (all j ≤ i without a window). */
function visiblePairs(T: number, window: number): number {
  if (window <= 0 || window >= T) return (T * (T + 1)) / 2;
  return (window * (window + 1)) / 2 + (T - window) * window;
}

/** Multiply-adds ×2 of the causal forward (scores and p·v over the visible pairs), for GFLOP/s. */
export function attentionForwardFlops(s: AttentionShape): number {
  const d = checkShape('attentionForwardFlops', s);
  const pairs = s.B * s.nHead * visiblePairs(s.T, d.window);
  return 2 * 2 * pairs * d.hd;
}
