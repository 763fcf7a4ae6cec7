// Shared test helpers: one runtime per test file, fresh random data, CPU-side float64 math.
import { Runtime } from '../../src/gpu/runtime.ts';
import { nodePlatform } from '../../src/platform/node.ts';

let rt: Promise<Runtime> | null = null;

export function runtime(): Promise<Runtime> {
  rt ??= Runtime.open(nodePlatform);
  return rt;
}

/** Seeded RNG (mulberry32); tests log the seed so a failure can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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
