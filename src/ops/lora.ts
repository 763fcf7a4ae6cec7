// LoRA on one linear layer, composed from the matmul kernels (kernels/matmul.wgsl, ACCUMULATE) and
// an in-place scale (kernels/scale.wgsl); no kernel of its own. PEFT's convention (peft.tuners.lora):
//   y = x·W (+ b) + s·(x·Aᵀ)·Bᵀ,   A [r, in] (lora_A.weight), B [out, r] (lora_B.weight), s = alpha/r.
// Forward (after the base projection has written y): u = x·Aᵀ [rows, r]; u *= s; y[:, off..] += u·Bᵀ.
// The scaled u is kept for the backward. Backward, with dy the columns [off, off + out) of the
// output gradient (row stride ldy):
//   du = dy·B [rows, r];  dB += dyᵀ·u  (u already holds s·x·Aᵀ);  du *= s;
//   dA += duᵀ·x;  dx (+)= du·A        (skipped when the layer's input gradient is not needed).
// dA and dB accumulate (micro-batches; the caller zeroes them per optimizer step).
import type { BufferBinding } from '../gpu/kernels.ts';
import type { Dispatch } from '../gpu/step.ts';
import type { Runtime } from '../gpu/runtime.ts';
import { matmul } from './matmul.ts';
import { scaleInPlace } from './scale.ts';

export interface LoraShape {
  rows: number;
  inputs: number;
  outputs: number;
  r: number;
  /** alpha / r. */
  scale: number;
}

export interface LoraForwardArgs extends LoraShape {
  /** Layer input [rows, inputs] (dense). */
  x: BufferBinding;
  A: BufferBinding;
  B: BufferBinding;
  /** [rows, r]: receives s·x·Aᵀ (kept for the backward). */
  u: BufferBinding;
  /** The layer's output, accumulated into: columns [yOff, yOff + outputs) of rows of stride ldy. */
  y: BufferBinding;
  ldy?: number;
  yOff?: number;
}

export interface LoraBackwardArgs extends LoraShape {
  x: BufferBinding;
  A: BufferBinding;
  B: BufferBinding;
  /** The forward's u (s·x·Aᵀ). */
  u: BufferBinding;
  /** Output gradient: columns [dyOff, dyOff + outputs) of rows of stride ldy. */
  dy: BufferBinding;
  ldy?: number;
  dyOff?: number;
  /** Scratch [rows, r]. */
  du: BufferBinding;
  dA: BufferBinding;
  dB: BufferBinding;
  /** Input gradient [rows, inputs], accumulated into (dx += du·A); omit when not needed. */
  dx?: BufferBinding;
  /** dx = du·A instead of +=. */
  overwriteDx?: boolean;
}

function check(name: string, a: LoraShape): void {
  for (const [k, v] of Object.entries({ rows: a.rows, inputs: a.inputs, outputs: a.outputs, r: a.r })) {
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`${name}: ${k} must be a positive integer (${k}=${v})`);
  }
  if (!Number.isFinite(a.scale)) throw new Error(`${name}: scale must be finite (scale=${a.scale})`);
}

export async function loraForward(rt: Runtime, a: LoraForwardArgs): Promise<Dispatch[]> {
  check('loraForward', a);
  const { rows, inputs, outputs, r } = a;
  return [
    ...await matmul(rt, { form: 'nt', M: rows, N: r, K: inputs, a: a.x, b: a.A, c: a.u }),
    await scaleInPlace(rt, { x: a.u, n: rows * r, s: a.scale }),
    ...await matmul(rt, { form: 'nt', M: rows, N: outputs, K: r, a: a.u, b: a.B, c: a.y, ldc: a.ldy ?? outputs, cOff: a.yOff ?? 0, accumulate: true }),
  ];
}

export async function loraBackward(rt: Runtime, a: LoraBackwardArgs): Promise<Dispatch[]> {
  check('loraBackward', a);
  const { rows, inputs, outputs, r } = a;
  const ldy = a.ldy ?? outputs;
  const dyOff = a.dyOff ?? 0;
  const out: Dispatch[] = [
    // du = dy·B: [rows, out]·[out, r].
    ...await matmul(rt, { form: 'nn', M: rows, N: r, K: outputs, a: a.dy, lda: ldy, aOff: dyOff, b: a.B, c: a.du }),
    // dB [out, r] += dyᵀ·u.
    ...await matmul(rt, { form: 'tn', M: outputs, N: r, K: rows, a: a.dy, lda: ldy, aOff: dyOff, b: a.u, c: a.dB, accumulate: true }),
    await scaleInPlace(rt, { x: a.du, n: rows * r, s: a.scale }),
    // dA [r, in] += duᵀ·x.
    ...await matmul(rt, { form: 'tn', M: r, N: inputs, K: rows, a: a.du, b: a.x, c: a.dA, accumulate: true }),
  ];
  if (a.dx) out.push(...await matmul(rt, { form: 'nn', M: rows, N: inputs, K: r, a: a.du, b: a.A, c: a.dx, accumulate: !a.overwriteDx }));
  return out;
}
