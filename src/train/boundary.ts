// The boundary activation cache: with blocks 0..K−1 and the embeddings frozen, the hidden state
// entering block K is a fixed function of each training window. It is computed once per window (the
// first time a batch uses it: the first epoch) by a prefix-only forward, kept in a store (memory here;
// the CLI adds a disk store), and from then on a training step runs only blocks K..N−1, forward and
// backward. Stored as f32 the states are bit-identical to the ones the uncached step computes (the
// same kernels on the same rows), so losses and weights are too; f16 halves the store.
import type { Runtime } from '../gpu/runtime.ts';
import { ModelForward } from '../model/forward.ts';
import type { GpuWeights } from '../model/weights.ts';
import { float32ToHalf, halfToFloat32 } from '../util/f16.ts';

export type BoundaryDtype = 'f32' | 'f16';

/** Where the boundary states live: one [T, C] state per training window. */
export interface BoundaryStore {
  readonly dtype: BoundaryDtype;
  has(window: number): boolean;
  /** The state of `window` into `into` (T·C floats). */
  read(window: number, into: Float32Array): Promise<void>;
  /** Keep the state of `window` (T·C floats). */
  write(window: number, state: Float32Array): Promise<void>;
  /** Windows stored so far. */
  readonly size: number;
  close(): Promise<void>;
}

/** Bytes a store of `windows` states of T × C takes. */
export function boundaryCacheBytes(windows: number, T: number, C: number, dtype: BoundaryDtype): number {
  return windows * T * C * (dtype === 'f32' ? 4 : 2);
}

export class MemoryBoundaryStore implements BoundaryStore {
  private readonly states = new Map<number, Float32Array | Uint16Array>();
  constructor(readonly dtype: BoundaryDtype) {}
  get size(): number {
    return this.states.size;
  }
  has(window: number): boolean {
    return this.states.has(window);
  }
  async read(window: number, into: Float32Array): Promise<void> {
    const s = this.states.get(window);
    if (!s) throw new Error(`boundary cache: window ${window} is not stored`);
    if (s instanceof Float32Array) into.set(s);
    else halfToFloat32(s, into);
  }
  async write(window: number, state: Float32Array): Promise<void> {
    if (this.dtype === 'f32') this.states.set(window, state.slice());
    else {
      const h = new Uint16Array(state.length);
      float32ToHalf(state, h);
      this.states.set(window, h);
    }
  }
  async close(): Promise<void> {
    this.states.clear();
  }
}

/** Fills and serves the boundary states of a training run's batches. */
export class BoundaryCache {
  private readonly states: Float32Array;
  /** Prefix forwards run (batches whose windows were not all stored yet). */
  fills = 0;

  private constructor(readonly rt: Runtime, readonly prefix: ModelForward, readonly store: BoundaryStore) {
    this.states = new Float32Array(prefix.rows * prefix.cfg.nEmbd);
  }

  /** K: the freeze boundary; B, T: the training micro-batch shape. */
  static async build(rt: Runtime, weights: GpuWeights, K: number, B: number, T: number, store: BoundaryStore): Promise<BoundaryCache> {
    const prefix = await ModelForward.build(rt, weights, { B, T, saveFrom: weights.cfg.nLayer, endBlock: K, trace: { kind: 'none' }, loss: false, keepLogits: false });
    return new BoundaryCache(rt, prefix, store);
  }

  /**
   * The boundary states [B·T, C] of a batch (its ids and window indices): from the store when every
   * window is there, else computed by the prefix forward and stored. The returned array is reused.
   */
  async batch(ids: Int32Array, windows: readonly number[]): Promise<Float32Array> {
    const TC = this.prefix.opts.T * this.prefix.cfg.nEmbd;
    if (windows.every((w) => this.store.has(w))) {
      for (const [b, w] of windows.entries()) await this.store.read(w, this.states.subarray(b * TC, (b + 1) * TC));
      return this.states;
    }
    this.prefix.setBatch(ids);
    await this.prefix.run('boundary-prefix');
    this.fills++;
    const x = await this.rt.memory.readFloat32(this.prefix.x, 0, this.states.length);
    this.states.set(x);
    for (const [b, w] of windows.entries()) if (!this.store.has(w)) await this.store.write(w, this.states.subarray(b * TC, (b + 1) * TC));
    // An f16 store must give the step what later epochs will read back: the rounded states.
    if (this.store.dtype === 'f16') for (const [b, w] of windows.entries()) await this.store.read(w, this.states.subarray(b * TC, (b + 1) * TC));
    return this.states;
  }

  destroy(): void {
    this.prefix.destroy();
  }
}
