// In-place scaling (kernels/scale.wgsl): x[off .. off+n) *= s. LoRA multiplies its rank-r
// intermediate by alpha/r with it (src/ops/lora.ts); the scale is a uniform, one pipeline for all.
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

export const SCALE_WG = 256;

export interface ScaleArgs {
  /** Read and written in place. */
  x: BufferBinding;
  n: number;
  s: number;
  /** Element offset into x. */
  off?: number;
}

export async function scaleInPlace(rt: Runtime, args: ScaleArgs): Promise<Dispatch> {
  const { n, s } = args;
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`scale: n must be a positive integer (n=${n})`);
  if (!Number.isFinite(s)) throw new Error(`scale: s must be finite (s=${s})`);
  const wg = fitWorkgroup(rt.gpu.limits, SCALE_WG);
  const kernel = await rt.kernels.kernel('scale', 'scale', { WG: wg });
  const bound = rt.kernels.bind(kernel, { x: args.x }, { n, off: args.off ?? 0, s });
  return { bound, workgroups: grid(Math.ceil(n / wg)) };
}
