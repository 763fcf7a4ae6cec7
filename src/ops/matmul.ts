// Matmul program: picks the vec4 entry point when the layout allows it, else the generic one.
import type { BufferBinding } from '../gpu/kernels.ts';
import type { Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** nn: A[M,K]·B[K,N]; nt: A[M,K]·B[N,K]ᵀ; tn: A[K,M]ᵀ·B[K,N]. */
export type MatmulForm = 'nn' | 'nt' | 'tn';

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
  /** C += op(A)·op(B) instead of C = … (gradient accumulation). */
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
  /** Force the scalar entry point (tests use it to check both paths). */
  generic?: boolean;
}

export const MATMUL_WG: readonly [number, number] = [8, 8];

export function matmulEntry(args: MatmulArgs): 'nn' | 'nt' | 'tn' | 'generic' {
  const { form, M, K } = args;
  const lda = args.lda ?? (form === 'tn' ? M : K);
  const ldb = args.ldb ?? (form === 'nt' ? K : args.N);
  const aligned = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  if (args.generic) return 'generic';
  const offs = aligned(args.aOff ?? 0, args.bOff ?? 0, lda, ldb);
  if (!offs) return 'generic';
  if (form === 'nn' && aligned(K)) return 'nn';
  if (form === 'nt' && aligned(K)) return 'nt';
  if (form === 'tn') return 'tn';
  return 'generic';
}

/** Build the dispatch for C = op(A)·op(B) (+bias): once per shape, reused every step. */
export async function matmul(rt: Runtime, args: MatmulArgs): Promise<Dispatch> {
  const { form, M, N, K } = args;
  if (!(M > 0 && N > 0 && K > 0)) throw new Error(`matmul: dimensions must be positive (M=${M}, N=${N}, K=${K})`);
  const entry = matmulEntry(args);
  const overrides: Record<string, number | boolean> = { HAS_BIAS: !!args.bias, ACCUMULATE: !!args.accumulate, WG_X: MATMUL_WG[0], WG_Y: MATMUL_WG[1] };
  if (entry === 'generic') {
    overrides.TRANS_A = form === 'tn';
    overrides.TRANS_B = form === 'nt';
  }
  const kernel = await rt.kernels.kernel('matmul', entry, overrides);
  const lda = args.lda ?? (form === 'tn' ? M : K);
  const ldb = args.ldb ?? (form === 'nt' ? K : N);
  const bound = rt.kernels.bind(
    kernel,
    entry === 'generic' ? { a: args.a, b: args.b, c: args.c, bias: args.bias ?? rt.dummy } : { a4: args.a, b4: args.b, c: args.c, bias: args.bias ?? rt.dummy },
    { M, N, K, lda, ldb, ldc: args.ldc ?? N, aOff: args.aOff ?? 0, bOff: args.bOff ?? 0, cOff: args.cOff ?? 0, biasOff: args.biasOff ?? 0 },
  );
  return { bound, workgroups: [Math.ceil(N / (8 * MATMUL_WG[0])), Math.ceil(M / (4 * MATMUL_WG[1]))] };
}

export function matmulFlops(M: number, N: number, K: number): number {
  return 2 * M * N * K;
}
