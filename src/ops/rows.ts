// How the row kernels of the norms (layernorm.wgsl, rmsnorm.wgsl) map rows to invocations on this
// adapter, and the dispatch of their one-row-per-invocation ('lane') entry points.
import { fitWorkgroup, type BufferBinding, type OverrideValues } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/**
 * Invocations per row in the workgroup-per-row kernels (forward, backward dx). lavapipe runs a
 * workgroup on one CPU thread, 8 lanes wide, and every barrier switches between its 8-lane groups:
 * one 8-invocation workgroup per row is 2-3x faster there than 64. Hardware adapters get 64.
 */
export function normRowWG(rt: Runtime): number {
  return fitWorkgroup(rt.gpu.limits, rt.gpu.info.isSoftware ? 8 : 64);
}

/**
 * How the row kernels map rows to invocations by default: software adapters (CPU SIMD) run one row
 * per invocation with no barriers ('lane', ~3x faster than 8 per row there); hardware adapters a
 * workgroup of normRowWG per row.
 */
export function normRowLayout(rt: Runtime): number | 'lane' {
  return rt.gpu.info.isSoftware ? 'lane' : normRowWG(rt);
}

/** Rows per workgroup in the lane kernels. */
const LANE_ROWS = 8;

const byteOffset = (b: BufferBinding): number => ('buffer' in b ? b.offset ?? 0 : 0);

/**
 * One lane-kernel dispatch over `rows` rows of C columns. `rowBuffers` are the [rows, C] and [C]
 * bindings: when C % 4 = 0 and each is 16-byte aligned the vec4 entry (`entry(true)`) runs and they
 * bind as `<name>4`; `others` (per-row statistics) bind as named.
 */
export async function laneDispatch(rt: Runtime, a: {
  file: string; entry: (vec4: boolean) => string; overrides?: OverrideValues; rows: number; C: number;
  rowBuffers: Record<string, BufferBinding>; others: Record<string, BufferBinding>; uniforms: Record<string, number>;
}): Promise<Dispatch> {
  const v4 = a.C % 4 === 0 && Object.values(a.rowBuffers).every((b) => byteOffset(b) % 16 === 0);
  const kernel = await rt.kernels.kernel(a.file, a.entry(v4), { RW: LANE_ROWS, ...a.overrides });
  const buffers: Record<string, BufferBinding> = { ...a.others };
  for (const [name, b] of Object.entries(a.rowBuffers)) buffers[v4 ? `${name}4` : name] = b;
  return { bound: rt.kernels.bind(kernel, buffers, a.uniforms), workgroups: grid(Math.ceil(a.rows / LANE_ROWS)) };
}
