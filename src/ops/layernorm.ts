// LayerNorm program (kernels/layernorm.wgsl): forward with or without saved statistics, backward dx
// (optionally accumulating into the residual stream's gradient), and deterministic two-pass
// dgamma/dbeta (optionally accumulating across micro-batches) through a caller-owned scratch buffer.
import type { BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { rowChunkPlan } from './reduce.ts';
import { laneDispatch, normRowLayout } from './rows.ts';

/** Columns per workgroup in the dgamma/dbeta kernels. */
export const LAYERNORM_CW = 64;

export interface LayernormForwardArgs {
  rows: number;
  C: number;
  /** x [rows, C] */
  inp: BufferBinding;
  /** [C] */
  gamma: BufferBinding;
  /** [C] */
  beta: BufferBinding;
  /** [rows, C]; must not be the same buffer as inp. */
  out: BufferBinding;
  /** [rows] each; give both to save the statistics for the backward, or neither. */
  mean?: BufferBinding;
  rstd?: BufferBinding;
  /** Default 1e-5 (GPT-2). */
  eps?: number;
  /** Invocations per row (power of two ≤ 256), or 'lane' (one row per invocation); default normRowLayout(rt). */
  wg?: number | 'lane';
}

function checkShape(name: string, rows: number, C: number): void {
  if (!(Number.isInteger(rows) && Number.isInteger(C) && rows > 0 && C > 0)) {
    throw new Error(`${name}: rows and C must be positive integers (rows=${rows}, C=${C})`);
  }
}

/** out = LayerNorm(inp)·gamma + beta row-wise; saves mean/rstd when given. */
export async function layernormForward(rt: Runtime, args: LayernormForwardArgs): Promise<Dispatch> {
  const { rows, C } = args;
  checkShape('layernormForward', rows, C);
  if (!!args.mean !== !!args.rstd) throw new Error('layernormForward: give both mean and rstd, or neither');
  const save = !!args.mean;
  const layout = args.wg ?? normRowLayout(rt);
  if (layout === 'lane') {
    return laneDispatch(rt, {
      file: 'layernorm', entry: (v4) => `forward_lane${v4 ? '4' : ''}${save ? '' : '_nostats'}`, rows, C,
      rowBuffers: { inp: args.inp, gamma: args.gamma, beta: args.beta, out: args.out },
      others: save ? { mean: args.mean!, rstd: args.rstd! } : {}, uniforms: { rows, C, eps: args.eps ?? 1e-5 },
    });
  }
  const kernel = await rt.kernels.kernel('layernorm', save ? 'forward' : 'forward_nostats', { WG: checkWG('layernormForward', layout) });
  const buffers: Record<string, BufferBinding> = { inp: args.inp, gamma: args.gamma, beta: args.beta, out: args.out };
  if (save) {
    buffers.mean = args.mean!;
    buffers.rstd = args.rstd!;
  }
  const bound = rt.kernels.bind(kernel, buffers, { rows, C, eps: args.eps ?? 1e-5 });
  return { bound, workgroups: grid(rows) };
}

export interface LayernormBackwardDxArgs {
  rows: number;
  C: number;
  /** Gradient of the LayerNorm output [rows, C]. */
  dout: BufferBinding;
  /** The forward's input x [rows, C]. */
  inp: BufferBinding;
  gamma: BufferBinding;
  /** Saved by layernormForward. */
  mean: BufferBinding;
  rstd: BufferBinding;
  /** [rows, C]; distinct from dout. */
  dx: BufferBinding;
  /** dx += … (the residual stream's gradient) instead of dx = … */
  accumulate?: boolean;
  /** Invocations per row (power of two ≤ 256), or 'lane'; default normRowLayout(rt). */
  wg?: number | 'lane';
}

export async function layernormBackwardDx(rt: Runtime, args: LayernormBackwardDxArgs): Promise<Dispatch> {
  const { rows, C } = args;
  checkShape('layernormBackwardDx', rows, C);
  const layout = args.wg ?? normRowLayout(rt);
  if (layout === 'lane') {
    return laneDispatch(rt, {
      file: 'layernorm', entry: (v4) => `backward_dx_lane${v4 ? '4' : ''}`, overrides: { ACCUMULATE: !!args.accumulate }, rows, C,
      rowBuffers: { dout: args.dout, inp: args.inp, gamma: args.gamma, dx: args.dx },
      others: { mean: args.mean, rstd: args.rstd }, uniforms: { rows, C, eps: 0 },
    });
  }
  const kernel = await rt.kernels.kernel('layernorm', 'backward_dx', { WG: checkWG('layernormBackwardDx', layout), ACCUMULATE: !!args.accumulate });
  const bound = rt.kernels.bind(
    kernel,
    { dout: args.dout, inp: args.inp, gamma: args.gamma, mean: args.mean, rstd: args.rstd, dx: args.dx },
    { rows, C, eps: 0 },
  );
  return { bound, workgroups: grid(rows) };
}

/** How the dgamma/dbeta partial pass splits the rows: fixed by the shape (so results are reproducible). */
export function layernormParamChunks(rows: number, C: number): { rowChunk: number; nChunks: number } {
  return rowChunkPlan(rows, C, LAYERNORM_CW);
}

/** Elements (f32) of the scratch buffer layernormBackwardParams needs for this shape. */
export function layernormScratchElems(rows: number, C: number): number {
  return 2 * C * layernormParamChunks(rows, C).nChunks;
}

export function layernormScratchBytes(rows: number, C: number): number {
  return 4 * layernormScratchElems(rows, C);
}

export interface LayernormBackwardParamsArgs {
  rows: number;
  C: number;
  dout: BufferBinding;
  inp: BufferBinding;
  mean: BufferBinding;
  rstd: BufferBinding;
  /** [C] each. */
  dgamma: BufferBinding;
  dbeta: BufferBinding;
  /** At least layernormScratchElems(rows, C) f32; may be shared by ops that never run concurrently. */
  scratch: BufferBinding;
  /** dgamma += …, dbeta += … (micro-batches) instead of = … */
  accumulate?: boolean;
}

/** Two dispatches: per-row-chunk partials into scratch, then the fixed-order sum into dgamma/dbeta. */
export async function layernormBackwardParams(rt: Runtime, args: LayernormBackwardParamsArgs): Promise<Dispatch[]> {
  const { rows, C } = args;
  checkShape('layernormBackwardParams', rows, C);
  const { rowChunk, nChunks } = layernormParamChunks(rows, C);
  checkScratch('layernormBackwardParams', args.scratch, layernormScratchElems(rows, C));
  const uniforms = { rows, C, rowChunk, nChunks };
  const k1 = await rt.kernels.kernel('layernorm', 'backward_params_partial', { CW: LAYERNORM_CW });
  const k2 = await rt.kernels.kernel('layernorm', 'backward_params_final', { CW: LAYERNORM_CW, ACCUMULATE: !!args.accumulate });
  const b1 = rt.kernels.bind(k1, { dout: args.dout, inp: args.inp, mean: args.mean, rstd: args.rstd, scratch: args.scratch }, uniforms);
  const b2 = rt.kernels.bind(k2, { scratch: args.scratch, dgamma: args.dgamma, dbeta: args.dbeta }, uniforms);
  const colGroups = Math.ceil(C / LAYERNORM_CW);
  if (nChunks > 65535) throw new Error(`layernormBackwardParams: ${rows} rows need ${nChunks} chunks, over 65535`);
  return [
    { bound: b1, workgroups: [colGroups, nChunks] },
    { bound: b2, workgroups: [colGroups] },
  ];
}

export type LayernormBackwardArgs = LayernormBackwardDxArgs & Omit<LayernormBackwardParamsArgs, 'accumulate'> & {
  /** Accumulate into dgamma/dbeta (micro-batches). `accumulate` applies to dx. */
  accumulateParams?: boolean;
};

/** The whole backward: dx, then dgamma/dbeta (three dispatches). */
export async function layernormBackward(rt: Runtime, args: LayernormBackwardArgs): Promise<Dispatch[]> {
  const dx = await layernormBackwardDx(rt, args);
  const params = await layernormBackwardParams(rt, { ...args, accumulate: args.accumulateParams });
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
