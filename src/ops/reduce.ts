// Reduction program (kernels/reduce.wgsl), deterministic (fixed order, no atomics):
// - column sums of a [rows, N] matrix (dbias = Σ_rows dy), two-pass through a caller-owned scratch
//   buffer, optionally accumulating;
// - sums of squares of flat buffers into per-workgroup slots, and the final fixed-order sum of all
//   slots (the global gradient norm: every tensor writes its own slots, one pass sums them).
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** Columns per workgroup of the column sum. */
export const COLSUM_WG = 64;
const COLSUM_TARGET_WORKGROUPS = 512;
const COLSUM_MIN_ROW_CHUNK = 16;
/** Elements summed by one workgroup of sumSquaresPartial (= one slot), on every adapter. */
export const SUMSQ_BLOCK = 4096;

/**
 * Invocations per workgroup of the sum-of-squares kernels. lavapipe runs a workgroup on one thread,
 * 8 lanes wide, and pays for every barrier of the tree: 8 is ~10x faster than 256 there.
 */
export function sumsqWG(rt: Runtime): number {
  return fitWorkgroup(rt.gpu.limits, rt.gpu.info.isSoftware ? 8 : 256);
}

function bindingBytes(b: BufferBinding): number {
  if ('buffer' in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
  return b.size;
}

function positive(name: string, dims: Record<string, number>): void {
  for (const [k, v] of Object.entries(dims)) {
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`${name}: ${k} must be a positive integer (${k}=${v})`);
  }
}

function nonNegative(name: string, dims: Record<string, number>): void {
  for (const [k, v] of Object.entries(dims)) {
    if (!(Number.isInteger(v) && v >= 0)) throw new Error(`${name}: ${k} must be a non-negative integer (${k}=${v})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Column sum
// ---------------------------------------------------------------------------------------------

/**
 * How a two-pass column reduction (column sums here, layernorm's dγ/dβ) splits its rows into
 * chunks for the partial pass: enough workgroups to fill the device, fixed by the shape so results
 * are reproducible. `colsPerWorkgroup` columns are handled by one partial workgroup.
 */
export function rowChunkPlan(rows: number, cols: number, colsPerWorkgroup: number): { rowChunk: number; nChunks: number } {
  const colGroups = Math.ceil(cols / colsPerWorkgroup);
  const want = Math.max(1, Math.ceil(COLSUM_TARGET_WORKGROUPS / colGroups));
  const rowChunk = Math.max(COLSUM_MIN_ROW_CHUNK, Math.ceil(rows / want));
  return { rowChunk, nChunks: Math.ceil(rows / rowChunk) };
}

/** How the column sum splits its rows (see rowChunkPlan). */
export function columnSumPlan(rows: number, N: number): { rowChunk: number; nChunks: number } {
  return rowChunkPlan(rows, N, COLSUM_WG);
}

/** f32 elements of scratch columnSum needs (0: a single chunk, no scratch needed). */
export function columnSumScratchElems(rows: number, N: number): number {
  const { nChunks } = columnSumPlan(rows, N);
  return nChunks > 1 ? nChunks * N : 0;
}

/**
 * f32 elements of one scratch shared by column sums of several widths over the same rows: the
 * largest need, which is not always the widest one's (a narrower sum splits into more chunks).
 */
export function columnSumScratchElemsFor(rows: number, widths: readonly number[]): number {
  return Math.max(0, ...widths.map((N) => columnSumScratchElems(rows, N)));
}

export function columnSumScratchBytes(rows: number, N: number): number {
  return 4 * columnSumScratchElems(rows, N);
}

export interface ColumnSumArgs {
  rows: number;
  N: number;
  /** [rows, ld] from element `off`. */
  inp: BufferBinding;
  ld?: number;
  off?: number;
  /** [N] */
  out: BufferBinding;
  /** At least columnSumScratchElems(rows, N) f32 (may be omitted when that is 0). */
  scratch?: BufferBinding;
  /** out += Σ … instead of out = Σ … */
  accumulate?: boolean;
}

/** out[n] (+)= Σ_rows inp[row, n]: one dispatch (single chunk) or two (partials, fixed-order sum). */
export async function columnSum(rt: Runtime, args: ColumnSumArgs): Promise<Dispatch[]> {
  const { rows, N } = args;
  const ld = args.ld ?? N;
  const off = args.off ?? 0;
  positive('columnSum', { rows, N, ld });
  nonNegative('columnSum', { off });
  if (ld < N) throw new Error(`columnSum: ld ${ld} < N ${N}`);
  const { rowChunk, nChunks } = columnSumPlan(rows, N);
  const colGroups = Math.ceil(N / COLSUM_WG);
  if (colGroups > 65535 || nChunks > 65535) throw new Error(`columnSum: ${rows}x${N} needs ${colGroups}x${nChunks} workgroups, over 65535 per dimension`);
  const uniforms = { rows, N, ld, off, rowChunk, nChunks };
  const accumulate = !!args.accumulate;
  if (nChunks === 1) {
    const k = await rt.kernels.kernel('reduce', 'colsum_partial', { WG: COLSUM_WG, DIRECT: true, ACCUMULATE: accumulate });
    const b = rt.kernels.bind(k, { inp: args.inp, out: args.out, scratch: rt.dummy }, uniforms);
    return [{ bound: b, workgroups: [colGroups, 1] }];
  }
  const need = nChunks * N * 4;
  if (!args.scratch || bindingBytes(args.scratch) < need) {
    throw new Error(`columnSum: scratch holds ${args.scratch ? bindingBytes(args.scratch) : 0} bytes, needs ${need} (columnSumScratchBytes)`);
  }
  const k1 = await rt.kernels.kernel('reduce', 'colsum_partial', { WG: COLSUM_WG, DIRECT: false });
  const k2 = await rt.kernels.kernel('reduce', 'colsum_final', { WG: COLSUM_WG, ACCUMULATE: accumulate });
  const b1 = rt.kernels.bind(k1, { inp: args.inp, out: rt.dummy, scratch: args.scratch }, uniforms);
  const b2 = rt.kernels.bind(k2, { scratch: args.scratch, out: args.out }, uniforms);
  return [
    { bound: b1, workgroups: [colGroups, nChunks] },
    { bound: b2, workgroups: [colGroups] },
  ];
}

// ---------------------------------------------------------------------------------------------
// Sum of squares into slots, and the final sum
// ---------------------------------------------------------------------------------------------

/** Slots (partials) sumSquaresPartial writes for n elements. */
export function sumsqSlots(n: number): number {
  return Math.ceil(n / SUMSQ_BLOCK);
}

export interface SumSquaresArgs {
  /** Flat f32 data: n elements from element `off`. */
  x: BufferBinding;
  n: number;
  off?: number;
  /** f32 slots; this tensor writes partials[slotOff .. slotOff + sumsqSlots(n)). */
  partials: BufferBinding;
  slotOff: number;
  /** Invocations per workgroup (power of two dividing SUMSQ_BLOCK); default sumsqWG(rt). */
  wg?: number;
}

/** partials[slotOff + w] = Σ x² over block w (SUMSQ_BLOCK elements) of the tensor. */
export async function sumSquaresPartial(rt: Runtime, args: SumSquaresArgs): Promise<Dispatch> {
  positive('sumSquaresPartial', { n: args.n });
  nonNegative('sumSquaresPartial', { off: args.off ?? 0, slotOff: args.slotOff });
  const slots = sumsqSlots(args.n);
  const k = await rt.kernels.kernel('reduce', 'sumsq_partial', { SQ_WG: checkWG('sumSquaresPartial', args.wg ?? sumsqWG(rt)) });
  const b = rt.kernels.bind(k, { x: args.x, partials: args.partials }, { n: args.n, off: args.off ?? 0, slotOff: args.slotOff });
  return { bound: b, workgroups: grid(slots) };
}

export interface SumSlotsArgs {
  partials: BufferBinding;
  /** Sum partials[off .. off + count). */
  count: number;
  off?: number;
  /** total[outIdx] = the sum (or its square root). */
  total: BufferBinding;
  outIdx?: number;
  /** Write √sum (e.g. the global gradient norm). */
  sqrt?: boolean;
  /** Invocations (power of two ≤ 256); default sumsqWG(rt). */
  wg?: number;
}

/** total[outIdx] = Σ partials[off .. off+count) (√ with sqrt), one workgroup, fixed order. */
export async function sumSlots(rt: Runtime, args: SumSlotsArgs): Promise<Dispatch> {
  positive('sumSlots', { count: args.count });
  const k = await rt.kernels.kernel('reduce', 'sum_slots', { SQ_WG: checkWG('sumSlots', args.wg ?? sumsqWG(rt)), SQRT: !!args.sqrt });
  const b = rt.kernels.bind(k, { partials: args.partials, total: args.total }, { count: args.count, off: args.off ?? 0, outIdx: args.outIdx ?? 0 });
  return { bound: b, workgroups: [1] };
}

function checkWG(name: string, wg: number): number {
  if (!(Number.isInteger(wg) && wg >= 1 && wg <= 256 && (wg & (wg - 1)) === 0)) throw new Error(`${name}: wg must be a power of two ≤ 256 (${wg})`);
  return wg;
}
