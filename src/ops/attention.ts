// Causal multi-head self-attention program (kernels/attention.wgsl): flash-style forward that saves
// only a per-row logsumexp, and a two-pass deterministic backward that recomputes the scores.
import type { BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

export interface AttentionShape {
  B: number;
  T: number;
  C: number;
  nHead: number;
}

export interface AttentionForwardArgs extends AttentionShape {
  /** [B, T, 3C]: c_attn output (q | k | v). */
  qkv: BufferBinding;
  /** [B, T, C]: heads concatenated (c_proj input). Overwritten. */
  out: BufferBinding;
  /** [B, nHead, T] f32 per-row logsumexp for the backward; required when `save`. */
  stats?: BufferBinding;
  /** Save stats for a backward; false = forward-only (frozen prefix, inference, traces). */
  save: boolean;
}

export interface AttentionBackwardArgs extends AttentionShape {
  /** [B, T, C]: gradient of the attention output. */
  dout: BufferBinding;
  /** [B, T, 3C]: the forward's input. */
  qkv: BufferBinding;
  /** [B, nHead, T]: written by the forward with `save: true`. */
  stats: BufferBinding;
  /**
   * [B, T, C]: the forward's output, for D_i = dO_i·O_i. Optional: without it the backward gets D
   * from one extra sweep over the keys (about 2/3 more work in its first pass).
   */
  out?: BufferBinding;
  /** [B, T, 3C]: overwritten with the gradient of qkv. */
  dqkv: BufferBinding;
  /** attentionBufferBytes(shape).scratchBytes: per-row D, transient (may be shared by all layers). */
  scratch: BufferBinding;
}

/** Lanes per workgroup: one lavapipe SIMD vector (see kernels/attention.wgsl). */
export const ATTENTION_WG = 8;
/**
 * Rows per workgroup tile of each entry point: WG lanes × the rows each lane owns, written out in
 * the WGSL (forward 8, backward_q 4, backward_kv 4). Keep in sync with kernels/attention.wgsl.
 */
export const ATTENTION_TILE_ROWS = { forward: 8 * ATTENTION_WG, backward_q: 4 * ATTENTION_WG, backward_kv: 4 * ATTENTION_WG } as const;
/** Largest head size the kernels hold in registers (MAXD4 · 4 in the WGSL). */
export const ATTENTION_MAX_HEAD = 128;

/**
 * Bytes of the buffers attention needs besides its inputs and outputs, for one layer's shape:
 * `statsBytes` is saved by a training forward until that layer's backward (one f32 per row);
 * `scratchBytes` is used only during a backward and can be shared by all layers.
 * A forward-only pass needs neither.
 */
export function attentionBufferBytes(shape: AttentionShape): { statsBytes: number; scratchBytes: number } {
  checkShape('attentionBufferBytes', shape);
  const rows = shape.B * shape.nHead * shape.T;
  return { statsBytes: 4 * rows, scratchBytes: 4 * rows };
}

function checkShape(what: string, s: AttentionShape): number {
  const { B, T, C, nHead } = s;
  for (const [k, v] of Object.entries({ B, T, C, nHead })) {
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`${what}: ${k} must be a positive integer (got ${v})`);
  }
  if (C % nHead !== 0) throw new Error(`${what}: C ${C} is not divisible by nHead ${nHead}`);
  const hs = C / nHead;
  if (hs > ATTENTION_MAX_HEAD) throw new Error(`${what}: head size ${hs} over the supported ${ATTENTION_MAX_HEAD}`);
  if (B * T * 3 * C >= 2 ** 32) throw new Error(`${what}: qkv of ${B}x${T}x${3 * C} elements overflows u32 indexing`);
  return hs;
}

function bindingBytes(b: BufferBinding): number | undefined {
  if ('buffer' in b) return b.size ?? (b.buffer.size - (b.offset ?? 0));
  return (b as GPUBuffer).size;
}

function checkSize(what: string, name: string, b: BufferBinding, elems: number): void {
  const have = bindingBytes(b);
  if (have !== undefined && have < elems * 4) throw new Error(`${what}: '${name}' has ${have} bytes, needs ${elems * 4}`);
}

function uniforms(s: AttentionShape, hs: number): Record<string, number> {
  return { B: s.B, T: s.T, C: s.C, nHead: s.nHead, scale: 1 / Math.sqrt(hs) };
}

function workgroups(s: AttentionShape, entry: keyof typeof ATTENTION_TILE_ROWS): readonly [number, number] {
  return grid(s.B * s.nHead * Math.ceil(s.T / ATTENTION_TILE_ROWS[entry]));
}

/** One dispatch: out = softmax(mask(q·kᵀ/√hs))·v per head; stats saved when `save`. */
export async function attentionForward(rt: Runtime, args: AttentionForwardArgs): Promise<Dispatch[]> {
  const hs = checkShape('attentionForward', args);
  const { B, T, C, nHead } = args;
  if (args.save && !args.stats) throw new Error('attentionForward: save: true needs a stats buffer (attentionBufferBytes().statsBytes)');
  checkSize('attentionForward', 'qkv', args.qkv, B * T * 3 * C);
  checkSize('attentionForward', 'out', args.out, B * T * C);
  if (args.save) checkSize('attentionForward', 'stats', args.stats!, B * nHead * T);
  const kernel = await rt.kernels.kernel('attention', 'forward', { HS: hs, WG: ATTENTION_WG, SAVE_STATS: args.save });
  const bound = rt.kernels.bind(kernel, { qkv: args.qkv, out: args.out, stats: args.save ? args.stats! : rt.dummy }, uniforms(args, hs));
  return [{ bound, workgroups: workgroups(args, 'forward') }];
}

/** Two dispatches: dq (and D into scratch), then dk and dv. dqkv is overwritten. */
export async function attentionBackward(rt: Runtime, args: AttentionBackwardArgs): Promise<Dispatch[]> {
  const hs = checkShape('attentionBackward', args);
  const { B, T, C, nHead } = args;
  checkSize('attentionBackward', 'dout', args.dout, B * T * C);
  checkSize('attentionBackward', 'qkv', args.qkv, B * T * 3 * C);
  checkSize('attentionBackward', 'stats', args.stats, B * nHead * T);
  checkSize('attentionBackward', 'dqkv', args.dqkv, B * T * 3 * C);
  checkSize('attentionBackward', 'scratch', args.scratch, B * nHead * T);
  if (args.out) checkSize('attentionBackward', 'out', args.out, B * T * C);
  const hasOut = !!args.out;
  const [kq, kkv] = await Promise.all([
    rt.kernels.kernel('attention', 'backward_q', { HS: hs, WG: ATTENTION_WG, HAS_OUT: hasOut }),
    rt.kernels.kernel('attention', 'backward_kv', { HS: hs, WG: ATTENTION_WG }),
  ]);
  const u = uniforms(args, hs);
  const q = rt.kernels.bind(kq, { qkv: args.qkv, dout: args.dout, lse: args.stats, fout: args.out ?? rt.dummy, dqkv: args.dqkv, dsum: args.scratch }, u);
  const kv = rt.kernels.bind(kkv, { qkv: args.qkv, dout: args.dout, lse: args.stats, dqkv: args.dqkv, dsum: args.scratch }, u);
  return [{ bound: q, workgroups: workgroups(args, 'backward_q') }, { bound: kv, workgroups: workgroups(args, 'backward_kv') }];
}

/** Multiply-adds ×2 of the causal forward (scores and p·v over the j ≤ i pairs), for GFLOP/s. */
export function attentionForwardFlops(s: AttentionShape): number {
  const pairs = s.B * s.nHead * (s.T * (s.T + 1)) / 2;
  return 2 * 2 * pairs * (s.C / s.nHead);
}
