// Matmul program. On lavapipe the tn kernel (A stored [K, M]) is the fastest form by ~2×: a k-step's
// 8 rows of A are two vec4 loads uniform across the workgroup, so only B's loads vary by lane. So nn and nt products transpose
// their operands into a workspace first (a memory pass of (M+N)·K, small next to 2·M·N·K) and run
// tn; the results are bit-identical to the direct kernels (same summation order). The direct nn/nt
// kernels and the scalar `generic` one remain for tests and unaligned layouts.
// Hardware GPUs have the `tiled` kernel (workgroup-memory tiles, 256 invocations: the shape GPUs
// want and lavapipe does not): there `auto` times both paths once per adapter (matmulPathFor).
import type { BufferBinding } from '../gpu/kernels.ts';
import type { Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { median } from '../util/stats.ts';

/** nn: A[M,K]·B[K,N]; nt: A[M,K]·B[N,K]ᵀ; tn: A[K,M]ᵀ·B[K,N]. */
export type MatmulForm = 'nn' | 'nt' | 'tn';

/**
 * How to run a product: `auto` (matmulPathFor: transposes into tn on software adapters, the faster
 * of the two paths on hardware GPUs), `transpose` (transposes into tn on any adapter), the direct
 * kernels, scalar loads, or the tiled kernel.
 */
export type MatmulStrategy = 'auto' | 'transpose' | 'direct' | 'generic' | 'tiled';

export interface MatmulArgs {
  form: MatmulForm;
  M: number;
  N: number;
  K: number;
  a: BufferBinding;
  b: BufferBinding;
  c: BufferBinding;
  /** Added to every row of C (length N). */
  bias?: BufferBinding;
  /** C += op(A)·op(B) instead of C = … (gradient accumulation, fused residual adds). */
  accumulate?: boolean;
  /** Leading dimensions (row strides) in elements; default: the dense ones. */
  lda?: number;
  ldb?: number;
  ldc?: number;
  /** Element offsets into each binding. */
  aOff?: number;
  bOff?: number;
  cOff?: number;
  biasOff?: number;
  strategy?: MatmulStrategy;
}

/** Workgroup shape and rows × columns of C per invocation, per entry point. */
const TILES: Record<'nn' | 'nt' | 'tn' | 'generic' | 'tiled', { wg: [number, number]; rows: number; cols: number }> = {
  nn: { wg: [8, 8], rows: 4, cols: 8 },
  nt: { wg: [8, 8], rows: 4, cols: 8 },
  // 8×8 per invocation and one row of invocations: the A loads are uniform across the workgroup.
  tn: { wg: [8, 1], rows: 8, cols: 8 },
  generic: { wg: [8, 8], rows: 4, cols: 8 },
  // 16×16 invocations of 4×4 (rows and columns 16 apart): 64×64 of C per workgroup (WGSL: TILE_*).
  tiled: { wg: [16, 16], rows: 4, cols: 4 },
};

export type MatmulPath = 'transpose' | 'tiled';

const chosen = new WeakMap<Runtime, Promise<MatmulPath>>();

/**
 * The path `auto` takes on this runtime, decided once per runtime: the caller's choice if any; on
 * software adapters the transposes into tn (BENCHMARKS.md: 4–6× the tiled kernel on lavapipe); on
 * hardware GPUs the faster of the two on this adapter, timed once (timeMatmulPaths) and kept in the
 * platform's tuning store under the adapter's identity (matmulTuningKey), so later runs only read it.
 * OpenOptions.matmul 'tune' measures on any adapter.
 */
export function matmulPathFor(rt: Runtime): Promise<MatmulPath> {
  let p = chosen.get(rt);
  if (!p) {
    p = choosePath(rt);
    chosen.set(rt, p);
  }
  return p;
}

async function choosePath(rt: Runtime): Promise<MatmulPath> {
  const pref = rt.matmulPreference;
  if (pref === 'transpose' || pref === 'tiled') return pref;
  if (pref !== 'tune' && rt.gpu.info.isSoftware) return 'transpose';
  const key = matmulTuningKey(rt);
  const kept = await rt.platform.tuning.get(key);
  if (kept === 'transpose' || kept === 'tiled') return kept;
  const t = await timeMatmulPaths(rt);
  const path: MatmulPath = t.tiled < t.transpose ? 'tiled' : 'transpose';
  await rt.platform.tuning.set(key, path);
  return path;
}

/** The tuning store's key for this adapter's matmul path: its identity as the adapter reports it. */
export function matmulTuningKey(rt: Runtime): string {
  const i = rt.gpu.info;
  return `matmul-path/v1/${[i.vendor, i.architecture, i.device, i.description, i.backend].join('|')}`;
}

/**
 * Median ms of an n³ nn product on each path (GPU timestamps when the adapter has them, else wall
 * time), the two run in turn after a warm-up each. About a second on a GPU; the tuning that uses it
 * runs once per adapter.
 */
export async function timeMatmulPaths(rt: Runtime, n = 512, reps = 3): Promise<Record<MatmulPath, number>> {
  const mem = rt.memory;
  const a = mem.storage('tune.a', n * n * 4);
  const b = mem.storage('tune.b', n * n * 4);
  const c = mem.storage('tune.c', n * n * 4);
  try {
    const paths: MatmulPath[] = ['transpose', 'tiled'];
    const lists = await Promise.all(paths.map((strategy) => matmul(rt, { form: 'nn', M: n, N: n, K: n, a, b, c, strategy })));
    for (const d of lists) await rt.steps.run('matmul-tune warm-up', d);
    const ms: number[][] = paths.map(() => []);
    for (let r = 0; r < reps; r++) {
      for (const [i, d] of lists.entries()) {
        const t = await rt.steps.run(`matmul-tune ${paths[i]}`, d, { timestamps: true });
        ms[i]!.push(t.gpuMs ?? t.wallMs);
      }
    }
    return { transpose: median(ms[0]!), tiled: median(ms[1]!) };
  } finally {
    for (const x of [a, b, c]) mem.destroy(x);
  }
}
const TRANSPOSE_WG = 8;
/** Workgroups per grid dimension (65535 in WebGPU); larger products run as several row blocks. */
const maxWorkgroups = (rt: Runtime) => rt.gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535;

const aligned = (...xs: number[]) => xs.every((x) => x % 4 === 0);
const roundUp4 = (x: number) => Math.ceil(x / 4) * 4;

function leading(args: MatmulArgs): { lda: number; ldb: number } {
  const { form, M, N, K } = args;
  return { lda: args.lda ?? (form === 'tn' ? M : K), ldb: args.ldb ?? (form === 'nt' ? K : N) };
}

/** The entry point of the direct (untransposed) path for these arguments. */
export function matmulEntry(args: MatmulArgs): 'nn' | 'nt' | 'tn' | 'generic' | 'tiled' {
  const { form, K } = args;
  const { lda, ldb } = leading(args);
  if (args.strategy === 'generic') return 'generic';
  if (args.strategy === 'tiled') return 'tiled';
  if (!aligned(args.aOff ?? 0, args.bOff ?? 0, lda, ldb)) return 'generic';
  if (form === 'tn') return 'tn';
  return aligned(K) ? form : 'generic';
}

/** Whether the product runs as transpose(s) + tn, and which operands get transposed. */
export function matmulPlan(args: MatmulArgs): { transposeA: boolean; transposeB: boolean } | null {
  const strategy = args.strategy ?? 'transpose';
  if (strategy !== 'transpose' || args.form === 'tn') return null;
  const { ldb } = leading(args);
  // nn keeps B [K, N] as tn's B: its rows must be vec4-aligned.
  if (args.form === 'nn' && !aligned(args.bOff ?? 0, ldb)) return null;
  return { transposeA: true, transposeB: args.form === 'nt' };
}

/** Workspace bytes a product needs for its transposed operands. */
export function matmulWorkspaceBytes(args: MatmulArgs): { a: number; b: number } {
  const plan = matmulPlan(args);
  if (!plan) return { a: 0, b: 0 };
  return { a: args.K * roundUp4(args.M) * 4, b: plan.transposeB ? args.K * roundUp4(args.N) * 4 : 0 };
}

interface Block {
  r0: number;
  rows: number;
  c0: number;
  cols: number;
  /** Workgroups [x over columns, y over rows]. */
  workgroups: readonly [number, number];
}

/**
 * A rows × cols grid of `perRow` × `perCol` elements per workgroup, cut into blocks of at most
 * `maxWorkgroups` workgroups per dimension (one block for any ordinary shape). Block starts are
 * multiples of maxWorkgroups·per…, so vec4-aligned offsets stay aligned.
 */
function blocks(rows: number, perRow: number, cols: number, perCol: number, maxWorkgroups: number): Block[] {
  const rowStep = maxWorkgroups * perRow;
  const colStep = maxWorkgroups * perCol;
  const out: Block[] = [];
  for (let r0 = 0; r0 < rows; r0 += rowStep) {
    for (let c0 = 0; c0 < cols; c0 += colStep) {
      const r = Math.min(rowStep, rows - r0);
      const c = Math.min(colStep, cols - c0);
      out.push({ r0, rows: r, c0, cols: c, workgroups: [Math.ceil(c / perCol), Math.ceil(r / perRow)] });
    }
  }
  return out;
}

/**
 * out[outOff + c·ldo + r] = inp[inOff + r·ldi + c]: rows × cols → cols × rows. One dispatch, or
 * one per block past 65535 workgroups per dimension.
 */
export async function transpose(rt: Runtime, a: { inp: BufferBinding; out: BufferBinding; rows: number; cols: number; ldi?: number; ldo?: number; inOff?: number }): Promise<Dispatch[]> {
  const ldi = a.ldi ?? a.cols;
  const ldo = a.ldo ?? a.rows;
  // vec4 loads and stores when every dimension, stride and offset is a multiple of 4 (block starts
  // are multiples of maxWorkgroups·32, so they keep that).
  const v4 = aligned(a.rows, a.cols, ldi, ldo, a.inOff ?? 0);
  const kernel = await rt.kernels.kernel('transpose', v4 ? 'transpose4' : 'transpose');
  const tile = 4 * TRANSPOSE_WG;
  return blocks(a.rows, tile, a.cols, tile, maxWorkgroups(rt)).map((k) => ({
    bound: rt.kernels.bind(kernel, v4 ? { inp4: a.inp, out4: a.out } : { inp: a.inp, out: a.out }, { rows: k.rows, cols: k.cols, ldi, ldo, inOff: (a.inOff ?? 0) + k.r0 * ldi + k.c0, outOff: k.c0 * ldo + k.r0 }),
    workgroups: k.workgroups,
  }));
}

/** One dispatch, or one per block of C past 65535 workgroups per dimension (offsets stay vec4-aligned). */
async function direct(rt: Runtime, args: MatmulArgs): Promise<Dispatch[]> {
  const { form, M, N, K } = args;
  const entry = matmulEntry(args);
  const tile = TILES[entry];
  const overrides: Record<string, number | boolean> = { HAS_BIAS: !!args.bias, ACCUMULATE: !!args.accumulate, WG_X: tile.wg[0], WG_Y: tile.wg[1] };
  if (entry === 'generic' || entry === 'tiled') {
    overrides.TRANS_A = form === 'tn';
    overrides.TRANS_B = form === 'nt';
  }
  const kernel = await rt.kernels.kernel('matmul', entry, overrides);
  const { lda, ldb } = leading(args);
  const ldc = args.ldc ?? N;
  const buffers: Record<string, BufferBinding> = entry === 'generic' || entry === 'tiled' ? { a: args.a, b: args.b, c: args.c, bias: args.bias ?? rt.dummy } : { a4: args.a, b4: args.b, c: args.c, bias: args.bias ?? rt.dummy };
  // Row m of C is column m of A in tn, row m of A otherwise; column n of C is row n of B in nt.
  const aRowStride = form === 'tn' ? 1 : lda;
  const bColStride = form === 'nt' ? ldb : 1;
  return blocks(M, tile.rows * tile.wg[1], N, tile.cols * tile.wg[0], maxWorkgroups(rt)).map((k) => ({
    bound: rt.kernels.bind(kernel, buffers, {
      M: k.rows, N: k.cols, K, lda, ldb, ldc,
      aOff: (args.aOff ?? 0) + k.r0 * aRowStride, bOff: (args.bOff ?? 0) + k.c0 * bColStride,
      cOff: (args.cOff ?? 0) + k.r0 * ldc + k.c0, biasOff: (args.biasOff ?? 0) + k.c0,
    }),
    workgroups: k.workgroups,
  }));
}

/**
 * Dispatches for C = op(A)·op(B) (+bias) (+C), built once per shape and reused every step. The
 * transposed operands live in runtime workspaces shared by every product: a product's dispatches
 * run back to back, so one product's transposes never overlap another's.
 */
export async function matmul(rt: Runtime, args: MatmulArgs): Promise<Dispatch[]> {
  const { M, N, K } = args;
  if (!(M > 0 && N > 0 && K > 0)) throw new Error(`matmul: dimensions must be positive (M=${M}, N=${N}, K=${K})`);
  if ((args.strategy ?? 'auto') === 'auto') args = { ...args, strategy: await matmulPathFor(rt) };
  const plan = matmulPlan(args);
  if (!plan) return direct(rt, args);
  const { lda, ldb } = leading(args);
  const ws = matmulWorkspaceBytes(args);
  const out: Dispatch[] = [];
  const at = rt.workspace('matmul.a', ws.a);
  const ldAt = roundUp4(M);
  out.push(...await transpose(rt, { inp: args.a, out: at, rows: M, cols: K, ldi: lda, ldo: ldAt, inOff: args.aOff }));
  let b = args.b;
  let ldB = ldb;
  let bOff = args.bOff ?? 0;
  if (plan.transposeB) {
    b = rt.workspace('matmul.b', ws.b);
    ldB = roundUp4(N);
    bOff = 0;
    out.push(...await transpose(rt, { inp: args.b, out: b, rows: N, cols: K, ldi: ldb, ldo: ldB, inOff: args.bOff }));
  }
  out.push(...await direct(rt, { ...args, form: 'tn', a: at, lda: ldAt, aOff: 0, b, ldb: ldB, bOff, strategy: 'direct' }));
  return out;
}

export function matmulFlops(M: number, N: number, K: number): number {
  return 2 * M * N * K;
}
