// The boundary cache on disk (finetune --cache-boundary disk): one file of fixed-size slots, a slot per
// training window in the order they are first used; removed when the run ends. The memory store is
// the core's (src/train/boundary.ts); this one is the CLI's because only Node has files.
import { statfsSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { freemem } from 'node:os';
import { MemoryBoundaryStore, boundaryCacheBytes, type BoundaryDtype, type BoundaryStore } from '../train/boundary.ts';
import { float32ToHalf, halfToFloat32 } from '../util/f16.ts';
import { UserError } from '../util/errors.ts';

export class DiskBoundaryStore implements BoundaryStore {
  private readonly slots = new Map<number, number>();
  private readonly bytesPerWindow: number;

  private constructor(readonly path: string, private readonly fh: FileHandle, readonly dtype: BoundaryDtype, private readonly elems: number) {
    this.bytesPerWindow = elems * (dtype === 'f32' ? 4 : 2);
  }

  static async create(path: string, dtype: BoundaryDtype, elemsPerWindow: number): Promise<DiskBoundaryStore> {
    const fh = await open(path, 'w+', 0o600);
    return new DiskBoundaryStore(path, fh, dtype, elemsPerWindow);
  }

  get size(): number {
    return this.slots.size;
  }

  has(window: number): boolean {
    return this.slots.has(window);
  }

  async read(window: number, into: Float32Array): Promise<void> {
    const slot = this.slots.get(window);
    if (slot === undefined) throw new Error(`boundary cache: window ${window} is not stored`);
    const pos = slot * this.bytesPerWindow;
    if (this.dtype === 'f32') {
      await this.fh.read(new Uint8Array(into.buffer, into.byteOffset, this.bytesPerWindow), 0, this.bytesPerWindow, pos);
    } else {
      const h = new Uint16Array(this.elems);
      await this.fh.read(new Uint8Array(h.buffer), 0, this.bytesPerWindow, pos);
      halfToFloat32(h, into);
    }
  }

  async write(window: number, state: Float32Array): Promise<void> {
    const slot = this.slots.size;
    let bytes: Uint8Array;
    if (this.dtype === 'f32') bytes = new Uint8Array(state.buffer, state.byteOffset, this.bytesPerWindow);
    else {
      const h = new Uint16Array(this.elems);
      float32ToHalf(state, h);
      bytes = new Uint8Array(h.buffer);
    }
    try {
      await this.fh.write(bytes, 0, bytes.length, slot * this.bytesPerWindow);
    } catch (e) {
      throw new UserError(`--cache-boundary disk: cannot write ${this.path} (${(e as Error).message}); free space there, or use --cache-boundary memory`);
    }
    this.slots.set(window, slot);
  }

  async close(): Promise<void> {
    await this.fh.close();
    await rm(this.path, { force: true });
  }
}

const fmt = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);

/**
 * The store for `--cache-boundary memory|disk`, its size said up front and checked against free
 * memory (leaving a quarter of it) or free disk space where the file goes.
 */
export async function openBoundaryStore(kind: string, dtype: string, o: { windows: number; T: number; C: number; dir: string; say: (line: string) => void }): Promise<BoundaryStore> {
  if (dtype !== 'f32' && dtype !== 'f16') throw new UserError(`--cache-dtype must be f32 or f16, got '${dtype}'`);
  const need = boundaryCacheBytes(o.windows, o.T, o.C, dtype);
  if (kind === 'memory') {
    const free = freemem();
    if (need > free * 0.75) throw new UserError(`--cache-boundary memory: ${o.windows} windows × ${o.T} × ${o.C} ${dtype} need ${fmt(need)}, more than this machine can spare (${fmt(free)} free); use --cache-boundary disk, --cache-dtype f16, or less data`);
    o.say(`boundary cache: ${o.windows} windows × ${o.T} × ${o.C} ${dtype} = ${fmt(need)} in memory (filled during the first epoch)`);
    return new MemoryBoundaryStore(dtype);
  }
  if (kind === 'disk') {
    let free: number | null = null;
    try {
      const s = statfsSync(o.dir);
      free = s.bavail * s.bsize;
    } catch {
      free = null;
    }
    if (free !== null && need > free) throw new UserError(`--cache-boundary disk: ${fmt(need)} needed in ${o.dir}, only ${fmt(free)} free there; use --cache-dtype f16 or free space`);
    const path = `${o.dir}/.semfreeze-boundary-${process.pid}.bin`;
    o.say(`boundary cache: ${o.windows} windows × ${o.T} × ${o.C} ${dtype} = ${fmt(need)} on disk in ${path} (removed at the end)`);
    return DiskBoundaryStore.create(path, dtype, o.T * o.C);
  }
  throw new UserError(`--cache-boundary must be memory or disk, got '${kind}'`);
}
