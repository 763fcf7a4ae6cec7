// Logit soft-capping program (kernels/softcap.wgsl): Gemma2's y = c·tanh(x/c) in place over the
// first V columns of a [rows, ld] matrix, and its backward in place over the gradient.
//
// Backward design. The fused cross-entropy (crossEntropyFused, in place) overwrites the capped
// logits y with dlogits, so the softcap backward that follows it cannot read y. The forward
// therefore saves dy/dx = 1 − tanh²(x/c) into a `deriv` buffer [rows, V] (computed from x, accurate
// even where it is tiny); the backward multiplies dlogits by it in place. Cost: rows·V·4 bytes, as
// much as the logits chunk itself (one row chunk of the LM head, reused by every chunk: head →
// softcapForward(deriv) → crossEntropyFused → softcapBackward(deriv) → head backward).
// A caller that keeps y (cross-entropy writing dlogits to a separate buffer) passes `y` instead
// and needs no deriv buffer: dx = dy·(1 − (y/c)²), exact up to y's float32 rounding (see the kernel).
import { fitWorkgroup, type BufferBinding } from '../gpu/kernels.ts';
import { grid, type Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';

/** Invocations per workgroup wanted (any power of two works: one element per invocation). */
export const SOFTCAP_WG = 256;

export function softcapWG(rt: Runtime): number {
  return fitWorkgroup(rt.gpu.limits, SOFTCAP_WG);
}

/** Bytes of the deriv buffer softcapForward writes for rows × V logits. */
export function softcapDerivBytes(rows: number, V: number): number {
  return rows * V * 4;
}

interface SoftcapShape {
  rows: number;
  /** Columns that are capped (the vocabulary). */
  V: number;
  /** Row stride in elements (default V); columns V..ld are left untouched. */
  ld?: number;
  /** The cap c (Gemma2's final_logit_softcapping, 30.0). */
  cap: number;
}

export interface SoftcapForwardArgs extends SoftcapShape {
  /** [rows, ld] f32: x, replaced by y = c·tanh(x/c). */
  logits: BufferBinding;
  /** f32 [rows, V] (dense): receives dy/dx for softcapBackward. Omit when no backward follows. */
  deriv?: BufferBinding;
}

export interface SoftcapBackwardArgs extends SoftcapShape {
  /** [rows, ld] f32: dy, replaced by dx. */
  dlogits: BufferBinding;
  /** The deriv buffer softcapForward wrote (give this or y). */
  deriv?: BufferBinding;
  /** The capped logits y [rows, ld], distinct from dlogits (give this or deriv). */
  y?: BufferBinding;
}

function bindingBytes(b: BufferBinding): number {
  if ('buffer' in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
  return b.size;
}

function bufferOf(b: BufferBinding): GPUBuffer {
  return 'buffer' in b ? b.buffer : b;
}

function check(name: string, a: SoftcapShape): number {
  const ld = a.ld ?? a.V;
  for (const [k, v] of Object.entries({ rows: a.rows, V: a.V, ld })) {
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`${name}: ${k} must be a positive integer (${k}=${v})`);
  }
  if (ld < a.V) throw new Error(`${name}: ld ${ld} < V ${a.V}`);
  if (a.rows * ld > 0xffffffff) throw new Error(`${name}: rows·ld = ${a.rows * ld} exceeds the kernel's u32 indexing`);
  if (!(Number.isFinite(a.cap) && a.cap > 0)) throw new Error(`${name}: cap must be a positive finite number (cap=${a.cap})`);
  return ld;
}

function checkBytes(rt: Runtime, name: string, what: string, b: BufferBinding, elems: number): void {
  const have = bindingBytes(b);
  if (have < elems * 4) throw new Error(`${name}: ${what} binding has ${have} bytes, needs ${elems * 4}`);
  const max = rt.gpu.limits.maxStorageBufferBindingSize;
  if (max !== undefined && have > max) throw new Error(`${name}: ${what} binding has ${have} bytes, over the device's maxStorageBufferBindingSize ${max} (bind a byte range, or dispatch in row chunks)`);
}

/** logits[:, :V] ← cap·tanh(logits/cap) in place; with `deriv`, also deriv ← 1 − tanh²(logits/cap). */
export async function softcapForward(rt: Runtime, args: SoftcapForwardArgs): Promise<Dispatch[]> {
  const name = 'softcapForward';
  const ld = check(name, args);
  const { rows, V } = args;
  checkBytes(rt, name, 'logits', args.logits, (rows - 1) * ld + V);
  const buffers: Record<string, BufferBinding> = { logits: args.logits };
  if (args.deriv) {
    checkBytes(rt, name, 'deriv', args.deriv, rows * V);
    if (bufferOf(args.deriv) === bufferOf(args.logits)) throw new Error(`${name}: deriv must be distinct from logits`);
    buffers.deriv = args.deriv;
  }
  const wg = softcapWG(rt);
  const kernel = await rt.kernels.kernel('softcap', args.deriv ? 'forward_deriv' : 'forward', { WG: wg });
  const bound = rt.kernels.bind(kernel, buffers, { rows, V, ld, c: args.cap });
  return [{ bound, workgroups: grid(Math.ceil((rows * V) / wg)) }];
}

/** dlogits[:, :V] ← dlogits · dy/dx in place, dy/dx from `deriv` (softcapForward's) or from the capped logits `y`. */
export async function softcapBackward(rt: Runtime, args: SoftcapBackwardArgs): Promise<Dispatch[]> {
  const name = 'softcapBackward';
  const ld = check(name, args);
  const { rows, V } = args;
  if (!args.deriv === !args.y) throw new Error(`${name}: give exactly one of deriv (from softcapForward) and y (the capped logits)`);
  checkBytes(rt, name, 'dlogits', args.dlogits, (rows - 1) * ld + V);
  const wg = softcapWG(rt);
  let entry: string;
  let buffers: Record<string, BufferBinding>;
  if (args.deriv) {
    checkBytes(rt, name, 'deriv', args.deriv, rows * V);
    if (bufferOf(args.deriv) === bufferOf(args.dlogits)) throw new Error(`${name}: deriv must be distinct from dlogits`);
    entry = 'backward';
    buffers = { dlogits: args.dlogits, deriv: args.deriv };
  } else {
    checkBytes(rt, name, 'y', args.y!, (rows - 1) * ld + V);
    if (bufferOf(args.y!) === bufferOf(args.dlogits)) {
      throw new Error(`${name}: y must be distinct from dlogits (the in-place cross-entropy overwrites y: save deriv in softcapForward instead)`);
    }
    entry = 'backward_from_y';
    buffers = { dlogits: args.dlogits, y: args.y! };
  }
  const kernel = await rt.kernels.kernel('softcap', entry, { WG: wg });
  const bound = rt.kernels.bind(kernel, buffers, { rows, V, ld, c: args.cap });
  return [{ bound, workgroups: grid(Math.ceil((rows * V) / wg)) }];
}
