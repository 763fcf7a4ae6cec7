// GELU program (kernels/gelu.wgsl): GPT-2's tanh GELU forward and backward, elementwise.
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** Invocations per workgroup wanted (any power of two works: one element per invocation); see geluWG. */
export const GELU_WG = 256;

/** GELU_WG, lowered to what the device allows. */
export function geluWG(rt: Runtime): number {
  return fitWorkgroup(rt.gpu.limits, GELU_WG);
}

export interface GeluForwardArgs {
  /** Number of elements. */
  n: number;
  inp: BufferBinding;
  /** Distinct from inp. */
  out: BufferBinding;
  /** Force the scalar entry point even when n % 4 == 0 (tests). */
  scalar?: boolean;
}

export interface GeluBackwardArgs {
  n: number;
  /** Gradient of the GELU output. */
  dout: BufferBinding;
  /** The forward's input. */
  inp: BufferBinding;
  /** dinp = dout·gelu'(inp), distinct from dout and inp; omit to overwrite dout in place. */
  dinp?: BufferBinding;
  scalar?: boolean;
}

function checkN(name: string, n: number): void {
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`${name}: n must be a positive integer (n=${n})`);
}

/** Workgroups for n elements, one per invocation (vec4: n/4 invocations). */
function workgroups(n: number, vec4: boolean, wg: number): [number, number] {
  return grid(Math.ceil((vec4 ? n / 4 : n) / wg));
}

/** out = gelu(inp). Uses vec4 loads when n % 4 == 0. */
export async function geluForward(rt: Runtime, args: GeluForwardArgs): Promise<Dispatch> {
  checkN('geluForward', args.n);
  const vec4 = args.n % 4 === 0 && !args.scalar;
  const wg = geluWG(rt);
  const kernel = await rt.kernels.kernel('gelu', vec4 ? 'forward4' : 'forward', { WG: wg });
  const bound = rt.kernels.bind(kernel, vec4 ? { inp4: args.inp, out4: args.out } : { inp: args.inp, out: args.out }, { n: args.n });
  return { bound, workgroups: workgroups(args.n, vec4, wg) };
}

/** dinp = dout · gelu'(inp) (in place over dout when dinp is omitted). Uses vec4 loads when n % 4 == 0. */
export async function geluBackward(rt: Runtime, args: GeluBackwardArgs): Promise<Dispatch> {
  checkN('geluBackward', args.n);
  const vec4 = args.n % 4 === 0 && !args.scalar;
  const inplace = !args.dinp;
  const entry = (inplace ? 'backward_inplace' : 'backward') + (vec4 ? '4' : '');
  const wg = geluWG(rt);
  const kernel = await rt.kernels.kernel('gelu', entry, { WG: wg });
  let buffers: Record<string, BufferBinding>;
  if (inplace) buffers = vec4 ? { inp4: args.inp, dinp4: args.dout } : { inp: args.inp, dinp: args.dout };
  else buffers = vec4 ? { dout4: args.dout, inp4: args.inp, dinp4: args.dinp! } : { dout: args.dout, inp: args.inp, dinp: args.dinp! };
  const bound = rt.kernels.bind(kernel, buffers, { n: args.n });
  return { bound, workgroups: workgroups(args.n, vec4, wg) };
}
