// Shared test helpers: one runtime per test file, fresh random data, CPU-side float64 math.
import { expect } from 'vitest';
import { Runtime } from '../../src/gpu/runtime.ts';
import { mulberry32, relError as refRelError } from '../reference/ops.ts';
import { nodePlatform } from '../../src/platform/node.ts';
import { Gpt2Forward } from '../../src/model/forward.ts';
import { GpuWeights, hostParams, readModelDir } from '../../src/model/weights.ts';
import type { Fixture } from './fixtures.ts';

let rt: Promise<Runtime> | null = null;

export function runtime(): Promise<Runtime> {
  rt ??= Runtime.open(nodePlatform);
  return rt;
}

/** Logits of the model in DIR (loaded as the CLI loads it) on fixture f's input ids. */
export async function modelDirLogits(dir: string, f: Fixture): Promise<Float32Array> {
  const rt = await runtime();
  const files = await readModelDir(nodePlatform, dir);
  const weights = GpuWeights.upload(rt, files.config, await hostParams(files));
  const fwd = await Gpt2Forward.build(rt, weights, { B: f.B, T: f.T, saveFrom: files.config.nLayer, trace: { kind: 'none' }, loss: false, keepLogits: true });
  fwd.setBatch(f.inputIds);
  await fwd.run();
  const out = await rt.memory.readFloat32(fwd.logits, 0, f.B * f.T * files.config.vocabSize);
  weights.destroy(rt);
  return out;
}

/** Seeded RNG (mulberry32); tests log the seed so a failure can be replayed. */
export const rng = mulberry32;

export function freshSeed(): number {
  return (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0;
}

export function randomArray(n: number, next: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 2 - 1) * scale;
  return out;
}

/** ‖out − ref‖₂ / ‖ref‖₂ in float64. */
export function relError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) throw new Error(`length mismatch: ${out.length} vs ${ref.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = out[i]! - ref[i]!;
    num += d * d;
    den += ref[i]! * ref[i]!;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** Fill a buffer with NaN so that an output element the kernel forgets to write shows up. */
export function poison(n: number): Float32Array {
  return new Float32Array(n).fill(Number.NaN);
}

// Kernel-test assertions: every output element written, ‖out − ref‖/‖ref‖ within a bound.

export function f32(a: Float64Array): Float32Array {
  return Float32Array.from(a);
}

export function f64(a: Float32Array): Float64Array {
  return Float64Array.from(a);
}

export function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

export function expectWritten(seed: number, name: string, a: Float32Array): void {
  const i = a.findIndex((v) => !Number.isFinite(v));
  expect(i, `seed ${seed}: ${name}[${i}] not written (or not finite)`).toBe(-1);
}

export function expectRel(seed: number, name: string, out: ArrayLike<number>, ref: ArrayLike<number>, tol: number): void {
  const e = refRelError(out, ref);
  expect(e, `seed ${seed}: ${name} relative error ${e.toExponential(3)} > ${tol}`).toBeLessThanOrEqual(tol);
}
