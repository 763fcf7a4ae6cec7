// Cross-entropy program (kernels/crossentropy.wgsl): per-row losses, the fused loss + dlogits
// backward (in place over the logits by default), and a deterministic one-workgroup sum of the
// per-row losses into one scalar.
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** Target value of an ignored row (loss 0, gradient 0). */
export const CE_IGNORE = 0xffffffff;
/** Invocations per row wanted (the kernel takes any power of two ≤ 256), lowered to the device's limits. */
export const CE_WG = 64;
/** Invocations of the one loss_sum workgroup wanted (any power of two ≤ 256). */
export const CE_SUM_WG = 256;

export interface CrossEntropyArgs {
  /** Rows in this dispatch (a chunk of the batch, or all of it). */
  rows: number;
  /** Vocabulary size (columns that take part in the softmax). */
  V: number;
  /** Row stride of the logits in elements (default V; > V for a padded vocabulary). */
  ld?: number;
  /** First row of this chunk within targets/losses (default 0). */
  rowOff?: number;
  /** [rows, ld] f32. */
  logits: BufferBinding;
  /** u32 [rowOff + rows]: target ids < V, or CE_IGNORE. */
  targets: BufferBinding;
  /** f32 [rowOff + rows]: written at rowOff + r. */
  losses: BufferBinding;
}

export interface CrossEntropyFusedArgs extends CrossEntropyArgs {
  /** dloss of every row: 1/totalRows for the mean over the batch (across micro-batches). */
  scale: number;
  /** Write the gradient here; omit to overwrite the logits in place (the main use). */
  dlogits?: BufferBinding;
}

function check(name: string, a: CrossEntropyArgs): { ld: number; rowOff: number } {
  const ld = a.ld ?? a.V;
  const rowOff = a.rowOff ?? 0;
  for (const [k, v] of Object.entries({ rows: a.rows, V: a.V, ld })) {
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`${name}: ${k} must be a positive integer (${k}=${v})`);
  }
  if (ld < a.V) throw new Error(`${name}: ld ${ld} < V ${a.V}`);
  if (!(Number.isInteger(rowOff) && rowOff >= 0)) throw new Error(`${name}: rowOff must be a non-negative integer (${rowOff})`);
  return { ld, rowOff };
}

/** Throws unless every target is an integer < V or CE_IGNORE (the kernels trust the targets). */
export function validateTargets(targets: ArrayLike<number>, V: number): void {
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i]!;
    if (t === CE_IGNORE) continue;
    if (!(Number.isInteger(t) && t >= 0 && t < V)) throw new Error(`cross-entropy: target ${t} at row ${i} outside [0, ${V}) (ignored rows use 0xFFFFFFFF)`);
  }
}

/** losses[rowOff + r] = −log softmax(logits[r])[target] (0 for ignored rows). Logits untouched. */
export async function crossEntropyForward(rt: Runtime, args: CrossEntropyArgs): Promise<Dispatch> {
  const { ld, rowOff } = check('crossEntropyForward', args);
  const kernel = await rt.kernels.kernel('crossentropy', 'forward', { WG: fitWorkgroup(rt.gpu.limits, CE_WG) });
  const bound = rt.kernels.bind(kernel, { logits: args.logits, targets: args.targets, losses: args.losses }, { rows: args.rows, V: args.V, ld, rowOff, scale: 0 });
  return { bound, workgroups: grid(args.rows) };
}

/**
 * Losses as crossEntropyForward, and dlogits = scale·(softmax − onehot(target)) (0 for ignored rows
 * and for padded columns V ≤ j < ld), in place over the logits unless `dlogits` is given.
 * Change the scale between steps with `dispatch.bound.setUniforms({ scale })`.
 */
export async function crossEntropyFused(rt: Runtime, args: CrossEntropyFusedArgs): Promise<Dispatch> {
  const { ld, rowOff } = check('crossEntropyFused', args);
  if (!Number.isFinite(args.scale)) throw new Error(`crossEntropyFused: scale must be finite (${args.scale})`);
  const inplace = !args.dlogits;
  const kernel = await rt.kernels.kernel('crossentropy', 'fused', { WG: fitWorkgroup(rt.gpu.limits, CE_WG), INPLACE: inplace });
  const bound = rt.kernels.bind(
    kernel,
    { logits: args.logits, targets: args.targets, losses: args.losses, dlogits: args.dlogits ?? rt.dummy },
    { rows: args.rows, V: args.V, ld, rowOff, scale: args.scale },
  );
  return { bound, workgroups: grid(args.rows) };
}

export interface CrossEntropyLossSumArgs {
  /** Per-row losses. */
  losses: BufferBinding;
  /** How many losses to sum, from `off` (default 0). */
  n: number;
  off?: number;
  /** f32 output; total[outIdx] is written. */
  total: BufferBinding;
  outIdx?: number;
  /** Multiplies the sum: 1/totalRows gives the mean loss. */
  scale: number;
  /** total[outIdx] += scale·Σ (micro-batches) instead of = … */
  accumulate?: boolean;
}

/** total[outIdx] (+)= scale·Σ losses[off..off+n), summed in a fixed order by one workgroup. */
export async function crossEntropyLossSum(rt: Runtime, args: CrossEntropyLossSumArgs): Promise<Dispatch> {
  if (!(Number.isInteger(args.n) && args.n > 0)) throw new Error(`crossEntropyLossSum: n must be a positive integer (${args.n})`);
  const kernel = await rt.kernels.kernel('crossentropy', 'loss_sum', { WG: fitWorkgroup(rt.gpu.limits, CE_SUM_WG), ACCUMULATE: !!args.accumulate });
  const bound = rt.kernels.bind(kernel, { losses: args.losses, total: args.total }, { n: args.n, off: args.off ?? 0, outIdx: args.outIdx ?? 0, scale: args.scale });
  return { bound, workgroups: [1] };
}
