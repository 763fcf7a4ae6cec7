// One object that owns the device and everything built on it: memory, kernels, step runner.
import type { Platform } from '../platform/types.ts';
import { openDevice, type GpuDevice } from './device.ts';
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
  ) {
    this.dummy = memory.storage('dummy', 16);
  }

  /** A tiny buffer bound where a kernel's optional input is absent (e.g. no bias). */
  readonly dummy: GPUBuffer;

  static async open(platform: Platform): Promise<Runtime> {
    const gpu = await openDevice(platform);
    const memory = new GpuMemory(gpu.device);
    return new Runtime(platform, gpu, memory, new KernelRegistry(gpu, platform, memory), new StepRunner(gpu));
  }

  get device(): GPUDevice {
    return this.gpu.device;
  }

  destroy(): void {
    this.memory.destroyAll();
    this.gpu.device.destroy();
  }
}
