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
    const slept = est > 2;
    if (slept) await sleep(est * 0.9);
    const t1 = performance.now();
    await this.device.queue.onSubmittedWorkDone();
    const t2 = performance.now();
    const ms = t2 - t0;
    // If the queue was already idle when the sleep ended, we overslept and `ms` is the sleep, not
    // the GPU: shrink the estimate quickly (a slow first run, e.g. pipeline compiles, must not make
    // every later wait oversleep). Otherwise the measured time is the GPU's; follow it.
    // An await on an idle queue still takes 0.8–4 ms here, while after an accurate sleep about 10%
    // of the step (plus that await) remains: a remainder under half of that 10%, plus 1 ms, means
    // "overslept". (A fixed 0.5 ms threshold never fired: the estimate then shrank ~5% a step.)
    const overslept = slept && t2 - t1 < 0.05 * est + 1;
    const prev = this.estimates.get(label);
    this.estimates.set(label, overslept ? est * 0.5 : prev === undefined ? ms : 0.5 * prev + 0.5 * ms);
    return ms;
  }
}
