// Waiting for the GPU without busy-polling: dawn.node spins the JS thread at 100% while any WebGPU
// promise is pending, which on a 2-core machine steals ~40% of the software GPU's compute. So we
// sleep for most of the expected time first, and only then await the queue.

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Learns how long a named kind of submission takes and sleeps ~90% of that before awaiting. */
export class GpuWaiter {
  private readonly estimates = new Map<string, number>();

  constructor(private readonly device: GPUDevice) {}

  async wait(label: string, hintMs?: number): Promise<number> {
    const t0 = performance.now();
    const est = hintMs ?? this.estimates.get(label) ?? 0;
    if (est > 2) await sleep(est * 0.9);
    await this.device.queue.onSubmittedWorkDone();
    const ms = performance.now() - t0;
    const prev = this.estimates.get(label);
    // Track the minimum-ish: a long outlier must not make every later wait oversleep.
    this.estimates.set(label, prev === undefined ? ms : Math.min(ms, 0.7 * prev + 0.3 * ms));
    return ms;
  }
}
