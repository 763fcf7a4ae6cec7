// Rotary position embedding program (kernels/rope.wgsl): Hugging Face's rotate-half RoPE
// (apply_rotary_pos_emb) applied in place to the q and k heads of a fused qkv buffer
// [B·T, (nHead + 2·nKvHead)·headDim] (v untouched), and its backward (the rotation by −θ) in place
// over dqkv. The inverse frequencies are a [headDim/2] f32 buffer the host uploads once:
// ropeInvFreq computes them as transformers does (default, and Llama 3's rope_scaling).
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** Invocations per workgroup wanted (one (row, frequency) pair each; any power of two works). */
export const ROPE_WG = 64;

/** ROPE_WG, lowered to what the device allows. */
export function ropeWG(rt: Runtime): number {
  return fitWorkgroup(rt.gpu.limits, ROPE_WG);
}

/** Llama 3.x's `rope_scaling` (config.json), the only scaling supported. */
export interface RopeScalingLlama3 {
  rope_type: 'llama3';
  factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}

export interface RopeConfig {
  headDim: number;
  /** config.rope_theta (10000 Llama 2, 500000 Llama 3, 1000000 Qwen2, 10000 Gemma 2). */
  ropeTheta: number;
  ropeScaling?: RopeScalingLlama3 | null;
}

const f32 = Math.fround;

/**
 * The [headDim/2] inverse frequencies, as transformers' `_compute_default_rope_parameters` and
 * `_compute_llama3_parameters` compute them on the CPU in float32: every tensor operation is
 * emulated with one float32 rounding (Math.fround of the float64 result, exact for + − × ÷), scalars
 * cast to float32 first, `scalar / tensor` as torch's `tensor.reciprocal() * scalar`. The one
 * non-basic step, `base ** (2i/d)`, is rounded correctly here, while torch's float32 pow (Sleef, ≤ 1
 * ulp) may differ from it by one ulp: the result is HF's to within an ulp or two of float32.
 * attention_factor is 1 for both types (cos/sin unscaled).
 */
export function ropeInvFreq(cfg: RopeConfig): Float32Array {
  const d = cfg.headDim;
  if (!(Number.isInteger(d) && d >= 2 && d % 2 === 0)) throw new Error(`ropeInvFreq: headDim must be an even integer ≥ 2 (${d})`);
  if (!(Number.isFinite(cfg.ropeTheta) && cfg.ropeTheta > 1)) throw new Error(`ropeInvFreq: ropeTheta must be a number > 1 (${cfg.ropeTheta})`);
  const half = d / 2;
  const base = f32(cfg.ropeTheta);
  // inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const e = f32((2 * i) / d);
    const pw = f32(Math.pow(base, e));
    inv[i] = f32(1 / pw);
  }
  const s = cfg.ropeScaling;
  if (!s) return inv;
  if (s.rope_type !== 'llama3') throw new Error(`ropeInvFreq: rope_scaling type '${String((s as { rope_type?: unknown }).rope_type)}' is not supported (only 'llama3')`);
  for (const k of ['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'] as const) {
    if (!(Number.isFinite(s[k]) && s[k] > 0)) throw new Error(`ropeInvFreq: rope_scaling.${k} must be a positive number (${s[k]})`);
  }
  if (!(s.high_freq_factor > s.low_freq_factor)) throw new Error(`ropeInvFreq: rope_scaling.high_freq_factor (${s.high_freq_factor}) must exceed low_freq_factor (${s.low_freq_factor})`);
  const factor = f32(s.factor);
  const low = f32(s.low_freq_factor);
  const old = f32(s.original_max_position_embeddings);
  // Python floats, compared against float32 tensors as float32.
  const lowFreqWavelen = f32(s.original_max_position_embeddings / s.low_freq_factor);
  const highFreqWavelen = f32(s.original_max_position_embeddings / s.high_freq_factor);
  const span = f32(s.high_freq_factor - s.low_freq_factor);
  const twoPi = f32(2 * Math.PI);
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const f = inv[i]!;
    const wavelen = f32(f32(1 / f) * twoPi); // 2 * math.pi / inv_freq
    const invLlama = wavelen > lowFreqWavelen ? f32(f / factor) : f;
    // smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    const smooth = f32(f32(f32(f32(1 / wavelen) * old) - low) / span);
    // smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    const smoothed = f32(f32(f32(f32(1 - smooth) * invLlama) / factor) + f32(smooth * invLlama));
    const medium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    out[i] = medium ? smoothed : invLlama;
  }
  return out;
}

export interface RopeShape {
  /** [headDim/2] f32, from ropeInvFreq. */
  invFreq: BufferBinding;
  B: number;
  T: number;
  nHead: number;
  nKvHead: number;
  /** Even. */
  headDim: number;
  /** Invocations per workgroup (power of two ≤ 256); default ropeWG(rt). */
  wg?: number;
}

export interface RopeForwardArgs extends RopeShape {
  /** [B·T, (nHead + 2·nKvHead)·headDim]; q and k rotated in place, v untouched. */
  qkv: BufferBinding;
}

export interface RopeBackwardArgs extends RopeShape {
  /** Gradient of the rotated qkv, same layout; dq and dk rotated back in place, dv untouched. */
  dqkv: BufferBinding;
}

function bindingBytes(b: BufferBinding): number {
  if ('buffer' in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
  return b.size;
}

function check(name: string, a: RopeShape, buf: BufferBinding, bufName: string): void {
  for (const k of ['B', 'T', 'nHead', 'nKvHead', 'headDim'] as const) {
    if (!(Number.isInteger(a[k]) && a[k] > 0)) throw new Error(`${name}: ${k} must be a positive integer (${k}=${a[k]})`);
  }
  if (a.headDim % 2 !== 0) throw new Error(`${name}: headDim must be even (${a.headDim})`);
  const need = 4 * a.B * a.T * (a.nHead + 2 * a.nKvHead) * a.headDim;
  if (bindingBytes(buf) < need) throw new Error(`${name}: ${bufName} holds ${bindingBytes(buf)} bytes, needs ${need}`);
  if (bindingBytes(a.invFreq) < 2 * a.headDim) throw new Error(`${name}: invFreq holds ${bindingBytes(a.invFreq)} bytes, needs ${2 * a.headDim} (headDim/2 f32)`);
  const pairs = a.B * a.T * (a.headDim / 2);
  if (pairs >= 2 ** 32) throw new Error(`${name}: ${pairs} (row, frequency) pairs exceed u32`);
}

async function rope(rt: Runtime, entry: 'forward' | 'backward', a: RopeShape, buffers: Record<string, BufferBinding>): Promise<Dispatch> {
  const wg = a.wg ?? ropeWG(rt);
  if (!(Number.isInteger(wg) && wg >= 1 && wg <= 256 && (wg & (wg - 1)) === 0)) throw new Error(`rope ${entry}: wg must be a power of two ≤ 256 (${wg})`);
  const kernel = await rt.kernels.kernel('rope', entry, { WG: wg });
  const rows = a.B * a.T;
  const bound = rt.kernels.bind(kernel, { ...buffers, inv_freq: a.invFreq }, { rows, T: a.T, nHead: a.nHead, nKvHead: a.nKvHead, headDim: a.headDim });
  return { bound, workgroups: grid(Math.ceil((rows * (a.headDim / 2)) / wg)) };
}

/** Rotates q and k of every row by its position (r % T), in place. */
export async function ropeForward(rt: Runtime, args: RopeForwardArgs): Promise<Dispatch> {
  check('ropeForward', args, args.qkv, 'qkv');
  return rope(rt, 'forward', args, { qkv: args.qkv });
}

/** dq, dk ← rotation by −θ of dq, dk (the transpose of the forward), in place; dv untouched. */
export async function ropeBackward(rt: Runtime, args: RopeBackwardArgs): Promise<Dispatch> {
  check('ropeBackward', args, args.dqkv, 'dqkv');
  return rope(rt, 'backward', args, { dqkv: args.dqkv });
}
