// Waiting for the GPU. dawn.node busy-polls while a WebGPU promise is pending, which on a 2-core
// machine steals ~40% of the software GPU's compute; the Node platform paces that polling
// (src/platform/dawn-poll.ts), and browsers do not busy-poll, so a wait is a plain await: no sleep to
// estimate, nothing to oversleep, and a run's first steps wait as briefly as its later ones.

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Awaits the queue and times it; `label` names the kind of submission in the last-times table. */
export class GpuWaiter {
  /** The last wait's wall ms per label (for progress and diagnostics). */
  readonly lastMs = new Map<string, number>();

  constructor(private readonly device: GPUDevice) {}

  async wait(label: string): Promise<number> {
    const t0 = performance.now();
    await this.device.queue.onSubmittedWorkDone();
    const ms = performance.now() - t0;
    this.lastMs.set(label, ms);
    return ms;
  }
}
