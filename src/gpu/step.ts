// Encode many dispatches into one command buffer and one submit, wait without busy-polling, and
// time on the GPU with timestamp queries when the adapter has them.
import type { GpuDevice } from './device.ts';
import type { BoundKernel } from './kernels.ts';
import { GpuWaiter } from './wait.ts';

export interface Dispatch {
  bound: BoundKernel;
  workgroups: readonly [number, number?, number?];
}

/** A buffer-to-buffer copy inside the step (e.g. saving the boundary hidden state). */
export interface Copy {
  copy: { src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; bytes: number };
}

export type StepItem = Dispatch | Copy;

export interface StepTiming {
  /** Wall time of the whole call: encoding, submit and the wait, ms. */
  wallMs: number;
  /** GPU time between the first pass's start and the last pass's end, ms (timestamp queries). */
  gpuMs?: number;
  /** With profiling: GPU ms per dispatch, in order. */
  perDispatchMs?: number[];
}

const MAX_WORKGROUPS = 65535;

/** A 2-D grid for n workgroups (WebGPU caps each dimension at 65535). Kernels linearize x + y·nx. */
export function grid(n: number): [number, number] {
  if (n <= MAX_WORKGROUPS) return [Math.max(1, n), 1];
  const y = Math.ceil(n / MAX_WORKGROUPS);
  return [Math.ceil(n / y), y];
}

export class StepRunner {
  readonly waiter: GpuWaiter;
  private querySet: GPUQuerySet | null = null;
  private queryCapacity = 0;
  private resolveBuffer: GPUBuffer | null = null;
  private readBuffer: GPUBuffer | null = null;

  constructor(readonly gpu: GpuDevice) {
    this.waiter = new GpuWaiter(gpu.device);
  }

  private ensureQueries(count: number): void {
    if (this.querySet && this.queryCapacity >= count) return;
    this.querySet?.destroy();
    this.resolveBuffer?.destroy();
    this.readBuffer?.destroy();
    const cap = Math.max(2, count);
    const d = this.gpu.device;
    this.querySet = d.createQuerySet({ type: 'timestamp', count: cap });
    this.resolveBuffer = d.createBuffer({ size: cap * 8, usage: 0x200 | 0x4 }); // QUERY_RESOLVE | COPY_SRC
    this.readBuffer = d.createBuffer({ size: cap * 8, usage: 0x1 | 0x8 }); // MAP_READ | COPY_DST
    this.queryCapacity = cap;
  }

  /** Record items into an encoder: consecutive dispatches share one compute pass. */
  record(enc: GPUCommandEncoder, items: readonly StepItem[], profile = false): number {
    let pass: GPUComputePassEncoder | null = null;
    let passes = 0;
    const timed = profile && this.querySet !== null;
    for (const item of items) {
      if ('copy' in item) {
        pass?.end();
        pass = null;
        const c = item.copy;
        enc.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.bytes);
        continue;
      }
      if (!pass || timed) {
        pass?.end();
        pass = enc.beginComputePass(timed ? { timestampWrites: { querySet: this.querySet!, beginningOfPassWriteIndex: 2 * passes, endOfPassWriteIndex: 2 * passes + 1 } } : {});
        passes++;
      }
      const b = item.bound;
      pass.setPipeline(b.kernel.pipeline);
      for (let g = 0; g < b.bindGroups.length; g++) pass.setBindGroup(g, b.bindGroups[g]!);
      pass.dispatchWorkgroups(item.workgroups[0], item.workgroups[1] ?? 1, item.workgroups[2] ?? 1);
    }
    pass?.end();
    return passes;
  }

  /** Submit items as one command buffer and wait for them. */
  async run(label: string, items: readonly StepItem[], opts: { profile?: boolean; timestamps?: boolean } = {}): Promise<StepTiming> {
    const t0 = performance.now();
    const d = this.gpu.device;
    const useTs = this.gpu.hasTimestamps && (opts.timestamps || opts.profile);
    const nDispatch = items.filter((i) => 'bound' in i).length;
    if (useTs) this.ensureQueries(opts.profile ? 2 * nDispatch : 2);
    const enc = d.createCommandEncoder({ label });
    let queries = 0;
    if (useTs && !opts.profile) {
      // Bracket the whole step: one empty timed pass at each end.
      const q = this.querySet!;
      enc.beginComputePass({ timestampWrites: { querySet: q, beginningOfPassWriteIndex: 0 } }).end();
      this.record(enc, items, false);
      enc.beginComputePass({ timestampWrites: { querySet: q, endOfPassWriteIndex: 1 } }).end();
      queries = 2;
    } else {
      queries = 2 * this.record(enc, items, !!useTs);
    }
    if (useTs && queries > 0) {
      enc.resolveQuerySet(this.querySet!, 0, queries, this.resolveBuffer!, 0);
      enc.copyBufferToBuffer(this.resolveBuffer!, 0, this.readBuffer!, 0, queries * 8);
    }
    d.queue.submit([enc.finish()]);
    await this.waiter.wait(label);
    const wallMs = performance.now() - t0;
    this.throwDeviceErrors(label);
    if (!useTs || queries === 0) return { wallMs };
    await this.readBuffer!.mapAsync(1, 0, queries * 8);
    const ts = new BigInt64Array(this.readBuffer!.getMappedRange(0, queries * 8).slice(0));
    this.readBuffer!.unmap();
    const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;
    if (!opts.profile) return { wallMs, gpuMs: ms(ts[0]!, ts[1]!) };
    const perDispatchMs: number[] = [];
    for (let i = 0; i < queries / 2; i++) perDispatchMs.push(ms(ts[2 * i]!, ts[2 * i + 1]!));
    return { wallMs, gpuMs: ms(ts[0]!, ts[queries - 1]!), perDispatchMs };
  }

  /** Submit without waiting (the caller waits later, e.g. several steps in flight). */
  submit(label: string, items: readonly StepItem[]): void {
    const enc = this.gpu.device.createCommandEncoder({ label });
    this.record(enc, items);
    this.gpu.device.queue.submit([enc.finish()]);
  }

  throwDeviceErrors(label: string): void {
    if (this.gpu.errors.length > 0) {
      const msgs = this.gpu.errors.splice(0);
      throw new Error(`GPU error during '${label}': ${msgs.join('; ')}`);
    }
  }
}
