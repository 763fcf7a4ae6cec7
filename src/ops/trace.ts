// Trace capture program (kernels/trace.wgsl): copy chosen rows of the residual stream into a slot.
import type { BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

export interface TraceGatherArgs {
  /** Residual stream [rows, C]. */
  x: BufferBinding;
  /** u32: [count, row indices…] (count ≤ capacity), written per batch. */
  rows: BufferBinding;
  trace: BufferBinding;
  C: number;
  /** Element offset of this latent space's slot in `trace`. */
  slotOffset: number;
  capacity: number;
}

export async function traceGather(rt: Runtime, a: TraceGatherArgs): Promise<Dispatch> {
  const k = await rt.kernels.kernel('trace', 'gather');
  const bound = rt.kernels.bind(k, { x: a.x, rows: a.rows, trace: a.trace }, { C: a.C, slotOff: a.slotOffset, capacity: a.capacity });
  // Positions on y, continuing on z past 65535 workgroups per dimension.
  const [y, z] = grid(Math.max(1, a.capacity));
  return { bound, workgroups: [Math.min(4, Math.ceil(a.C / 64)), y, z] };
}
