// Residual program (kernels/residual.wgsl): out = a + b (the residual connection; with accumulate,
// out += a + b), and acc += b (adding a gradient into an accumulator: the backward of a residual is
// the identity into both branches, so gradients from several paths are summed with this).
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** Invocations per workgroup wanted (any power of two works: one element per invocation); see residualWG. */
export const RESIDUAL_WG = 256;

/** RESIDUAL_WG, lowered to what the device allows. */
export function residualWG(rt: Runtime): number {
  return fitWorkgroup(rt.gpu.limits, RESIDUAL_WG);
}

export interface ResidualAddArgs {
  /** Number of elements. */
  n: number;
  a: BufferBinding;
  b: BufferBinding;
  /** Distinct from a and b (for acc += b use residualAccumulate). */
  out: BufferBinding;
  /** out += a + b instead of out = a + b. */
  accumulate?: boolean;
  /** Force the scalar entry point even when n % 4 == 0 (tests). */
  scalar?: boolean;
}

export interface ResidualAccumulateArgs {
  n: number;
  /** Read and written: acc += b. */
  acc: BufferBinding;
  /** Distinct from acc. */
  b: BufferBinding;
  scalar?: boolean;
}

function checkN(name: string, n: number): void {
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`${name}: n must be a positive integer (n=${n})`);
}

function workgroups(n: number, vec4: boolean, wg: number): [number, number] {
  return grid(Math.ceil((vec4 ? n / 4 : n) / wg));
}

/** out (+)= a + b. Uses vec4 loads when n % 4 == 0. */
export async function residualAdd(rt: Runtime, args: ResidualAddArgs): Promise<Dispatch> {
  checkN('residualAdd', args.n);
  const vec4 = args.n % 4 === 0 && !args.scalar;
  const wg = residualWG(rt);
  const kernel = await rt.kernels.kernel('residual', vec4 ? 'add4' : 'add', { WG: wg, ACCUMULATE: !!args.accumulate });
  const bound = rt.kernels.bind(kernel, vec4 ? { a4: args.a, b4: args.b, out4: args.out } : { a: args.a, b: args.b, out: args.out }, { n: args.n });
  return { bound, workgroups: workgroups(args.n, vec4, wg) };
}

/** acc += b (gradient accumulation). Uses vec4 loads when n % 4 == 0. */
export async function residualAccumulate(rt: Runtime, args: ResidualAccumulateArgs): Promise<Dispatch> {
  checkN('residualAccumulate', args.n);
  const vec4 = args.n % 4 === 0 && !args.scalar;
  const wg = residualWG(rt);
  const kernel = await rt.kernels.kernel('residual', vec4 ? 'add_inplace4' : 'add_inplace', { WG: wg });
  const bound = rt.kernels.bind(kernel, vec4 ? { b4: args.b, out4: args.acc } : { b: args.b, out: args.acc }, { n: args.n });
  return { bound, workgroups: workgroups(args.n, vec4, wg) };
}
