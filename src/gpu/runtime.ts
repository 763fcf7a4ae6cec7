// One object that owns the device and everything built on it: memory, kernels, step runner.
import type { Platform } from '../platform/types.ts';
import { openDevice, type GpuDevice, type OpenOptions } from './device.ts';
import { KernelRegistry } from './kernels.ts';
import { GpuMemory } from './memory.ts';
import { StepRunner } from './step.ts';

export class Runtime {
  private constructor(
    readonly platform: Platform,
    readonly gpu: GpuDevice,
    readonly memory: GpuMemory,
    readonly kernels: KernelRegistry,
    readonly steps: StepRunner,
    /** OpenOptions.matmul: the matmul path chosen by the caller, else undefined (by the adapter). */
    readonly matmulPreference?: 'transpose' | 'tiled' | 'tune',
  ) {
    this.dummy = memory.storage('dummy', 16);
  }

  /** A tiny buffer bound where a kernel's optional input is absent (e.g. no bias). */
  readonly dummy: GPUBuffer;
  private readonly workspaces = new Map<string, GPUBuffer>();

  /**
   * A scratch buffer shared by every dispatch that names it (e.g. matmul's transposed operands):
   * safe because a step's dispatches run in order and each user writes before it reads. A request
   * larger than the current one allocates a bigger buffer at build time; dispatches built earlier
   * keep the smaller one.
   */
  workspace(name: string, bytes: number): GPUBuffer {
    const cur = this.workspaces.get(name);
    if (cur && cur.size >= bytes && this.memory.isLive(cur)) return cur;
    const b = this.memory.storage(`workspace.${name}`, bytes);
    this.workspaces.set(name, b);
    return b;
  }

  static async open(platform: Platform, opts: OpenOptions = {}): Promise<Runtime> {
    const gpu = await openDevice(platform, opts);
    const memory = new GpuMemory(gpu.device, gpu.limits.maxBufferSize);
    return new Runtime(platform, gpu, memory, new KernelRegistry(gpu, platform, memory), new StepRunner(gpu), opts.matmul);
  }

  get device(): GPUDevice {
    return this.gpu.device;
  }

  destroy(): void {
    this.memory.destroyAll();
    this.gpu.device.destroy();
  }
}
