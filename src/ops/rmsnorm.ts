// RMSNorm program (kernels/rmsnorm.wgsl), Hugging Face's LlamaRMSNorm (y = x·rsqrt(mean(x²) + eps)·w,
// Llama, Qwen2) or Gemma2RMSNorm (y = …·(1 + w), `plusOne`): forward with or without the saved rstd,
// backward dx (optionally accumulating into the residual stream's gradient), and deterministic
// two-pass dweight (optionally accumulating across micro-batches) through a caller-owned scratch
// buffer. Shaped like src/ops/layernorm.ts.
import type { BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { rowChunkPlan } from './reduce.ts';
import { laneDispatch, normRowLayout } from './rows.ts';

/** Columns per workgroup in the dweight kernels. */
export const RMSNORM_CW = 64;
/** LlamaRMSNorm's and Gemma2RMSNorm's default eps (configs give rms_norm_eps; Llama 2 uses 1e-5). */
export const RMSNORM_DEFAULT_EPS = 1e-6;

export interface RmsnormForwardArgs {
  rows: number;
  C: number;
  /** x [rows, C] */
  inp: BufferBinding;
  /** [C] */
  weight: BufferBinding;
  /** [rows, C]; must not be the same buffer as inp. */
  out: BufferBinding;
  /** [rows]: give it to save 1/sqrt(mean(x²) + eps) for the backward. */
  rstd?: BufferBinding;
  /** Default RMSNORM_DEFAULT_EPS (1e-6); pass the config's rms_norm_eps. */
  eps?: number;
  /** Gemma: scale by (1 + weight) instead of weight. */
  plusOne?: boolean;
  /** Invocations per row (power of two ≤ 256), or 'lane' (one row per invocation); default normRowLayout(rt). */
  wg?: number | 'lane';
}

function checkShape(name: string, rows: number, C: number): void {
  if (!(Number.isInteger(rows) && Number.isInteger(C) && rows > 0 && C > 0)) {
    throw new Error(`${name}: rows and C must be positive integers (rows=${rows}, C=${C})`);
  }
}

/** out = x·rstd·weight (or ·(1 + weight)) row-wise; saves rstd when given. */
export async function rmsnormForward(rt: Runtime, args: RmsnormForwardArgs): Promise<Dispatch> {
  const { rows, C } = args;
  checkShape('rmsnormForward', rows, C);
  const save = !!args.rstd;
  const layout = args.wg ?? normRowLayout(rt);
  if (layout === 'lane') {
    return laneDispatch(rt, {
      file: 'rmsnorm', entry: (v4) => `forward_lane${v4 ? '4' : ''}${save ? '' : '_nostats'}`, overrides: { PLUS_ONE: !!args.plusOne }, rows, C,
      rowBuffers: { inp: args.inp, weight: args.weight, out: args.out },
      others: save ? { rstd: args.rstd! } : {}, uniforms: { rows, C, eps: args.eps ?? RMSNORM_DEFAULT_EPS },
    });
  }
  const kernel = await rt.kernels.kernel('rmsnorm', save ? 'forward' : 'forward_nostats', {
    WG: checkWG('rmsnormForward', layout),
    PLUS_ONE: !!args.plusOne,
  });
  const buffers: Record<string, BufferBinding> = { inp: args.inp, weight: args.weight, out: args.out };
  if (save) buffers.rstd = args.rstd!;
  const bound = rt.kernels.bind(kernel, buffers, { rows, C, eps: args.eps ?? RMSNORM_DEFAULT_EPS });
  return { bound, workgroups: grid(rows) };
}

export interface RmsnormBackwardDxArgs {
  rows: number;
  C: number;
  /** Gradient of the RMSNorm output [rows, C]. */
  dout: BufferBinding;
  /** The forward's input x [rows, C]. */
  inp: BufferBinding;
  weight: BufferBinding;
  /** Saved by rmsnormForward. */
  rstd: BufferBinding;
  /** [rows, C]; distinct from dout. */
  dx: BufferBinding;
  /** dx += … (the residual stream's gradient) instead of dx = … */
  accumulate?: boolean;
  /** Gemma's (1 + weight); must match the forward. */
  plusOne?: boolean;
  /** Invocations per row (power of two ≤ 256), or 'lane'; default normRowLayout(rt). */
  wg?: number | 'lane';
}

export async function rmsnormBackwardDx(rt: Runtime, args: RmsnormBackwardDxArgs): Promise<Dispatch> {
  const { rows, C } = args;
  checkShape('rmsnormBackwardDx', rows, C);
  const layout = args.wg ?? normRowLayout(rt);
  if (layout === 'lane') {
    return laneDispatch(rt, {
      file: 'rmsnorm', entry: (v4) => `backward_dx_lane${v4 ? '4' : ''}`, overrides: { ACCUMULATE: !!args.accumulate, PLUS_ONE: !!args.plusOne }, rows, C,
      rowBuffers: { dout: args.dout, inp: args.inp, weight: args.weight, dx: args.dx },
      others: { rstd: args.rstd }, uniforms: { rows, C, eps: 0 },
    });
  }
  const kernel = await rt.kernels.kernel('rmsnorm', 'backward_dx', {
    WG: checkWG('rmsnormBackwardDx', layout),
    ACCUMULATE: !!args.accumulate,
    PLUS_ONE: !!args.plusOne,
  });
  const bound = rt.kernels.bind(
    kernel,
    { dout: args.dout, inp: args.inp, weight: args.weight, rstd: args.rstd, dx: args.dx },
    { rows, C, eps: 0 },
  );
  return { bound, workgroups: grid(rows) };
}

/** How the dweight partial pass splits the rows: fixed by the shape (so results are reproducible). */
export function rmsnormParamChunks(rows: number, C: number): { rowChunk: number; nChunks: number } {
  return rowChunkPlan(rows, C, RMSNORM_CW);
}

/** Elements (f32) of the scratch buffer rmsnormBackwardParams needs for this shape: [nChunks, C]. */
export function rmsnormScratchElems(rows: number, C: number): number {
  return C * rmsnormParamChunks(rows, C).nChunks;
}

export function rmsnormScratchBytes(rows: number, C: number): number {
  return 4 * rmsnormScratchElems(rows, C);
}

export interface RmsnormBackwardParamsArgs {
  rows: number;
  C: number;
  dout: BufferBinding;
  inp: BufferBinding;
  rstd: BufferBinding;
  /** [C] */
  dweight: BufferBinding;
  /** At least rmsnormScratchElems(rows, C) f32; may be shared by ops that never run concurrently. */
  scratch: BufferBinding;
  /** dweight += … (micro-batches) instead of = … */
  accumulate?: boolean;
}

/**
 * dweight = Σ_rows dout⊙x·rstd without dx (the lowest trainable block's norm, whose input gradient
 * nobody needs). Two dispatches: per-row-chunk partials into scratch, then the fixed-order sum.
 * The same for LlamaRMSNorm and Gemma2RMSNorm (d(1 + w)/dw = 1).
 */
export async function rmsnormBackwardParams(rt: Runtime, args: RmsnormBackwardParamsArgs): Promise<Dispatch[]> {
  const { rows, C } = args;
  checkShape('rmsnormBackwardParams', rows, C);
  const { rowChunk, nChunks } = rmsnormParamChunks(rows, C);
  checkScratch('rmsnormBackwardParams', args.scratch, rmsnormScratchElems(rows, C));
  if (nChunks > 65535) throw new Error(`rmsnormBackwardParams: ${rows} rows need ${nChunks} chunks, over 65535`);
  const uniforms = { rows, C, rowChunk, nChunks };
  const k1 = await rt.kernels.kernel('rmsnorm', 'backward_params_partial', { CW: RMSNORM_CW });
  const k2 = await rt.kernels.kernel('rmsnorm', 'backward_params_final', { CW: RMSNORM_CW, ACCUMULATE: !!args.accumulate });
  const b1 = rt.kernels.bind(k1, { dout: args.dout, inp: args.inp, rstd: args.rstd, scratch: args.scratch }, uniforms);
  const b2 = rt.kernels.bind(k2, { scratch: args.scratch, dweight: args.dweight }, uniforms);
  const colGroups = Math.ceil(C / RMSNORM_CW);
  return [
    { bound: b1, workgroups: [colGroups, nChunks] },
    { bound: b2, workgroups: [colGroups] },
  ];
}

export type RmsnormBackwardArgs = RmsnormBackwardDxArgs & Omit<RmsnormBackwardParamsArgs, 'accumulate'> & {
  /** Accumulate into dweight (micro-batches). `accumulate` applies to dx. */
  accumulateParams?: boolean;
};

/** The whole backward: dx, then dweight (three dispatches). */
export async function rmsnormBackward(rt: Runtime, args: RmsnormBackwardArgs): Promise<Dispatch[]> {
  const dx = await rmsnormBackwardDx(rt, args);
  const params = await rmsnormBackwardParams(rt, { ...args, accumulate: args.accumulateParams });
  return [dx, ...params];
}

function bindingBytes(b: BufferBinding): number {
  if ('buffer' in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
  return b.size;
}

function checkScratch(name: string, scratch: BufferBinding, elems: number): void {
  const have = bindingBytes(scratch);
  if (have < elems * 4) throw new Error(`${name}: scratch holds ${have} bytes, needs ${elems * 4}`);
}

function checkWG(name: string, wg: number): number {
  if (!(Number.isInteger(wg) && wg >= 1 && wg <= 256 && (wg & (wg - 1)) === 0)) throw new Error(`${name}: wg must be a power of two ≤ 256 (${wg})`);
  return wg;
}
