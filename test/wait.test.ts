// Waiting for the GPU without busy-polling. dawn.node polls for finished work by re-queuing a native
// callback with the global setImmediate while any WebGPU promise is pending (a hot loop that takes a
// core from lavapipe); src/platform/dawn-poll.ts paces those callbacks. These tests check the pacing on
// a simulated poll loop (counts and latency), that JavaScript's own setImmediate is untouched, and, on
// the real device, that Dawn still polls through the global (so the pacing still applies) and that a
// long wait then makes far fewer polls than unpaced.
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_PACING, paceDawnPolling, unpaceDawnPolling } from '../src/platform/dawn-poll.ts';
import { runtime } from './util/gpu.ts';

/** A Dawn-like poller: a native (bound) callback re-queued through the global setImmediate until `doneAt`. */
function simulatedWait(doneAt: number): Promise<{ ticks: number; lateMs: number }> {
  return new Promise((resolve) => {
    let ticks = 0;
    const tick = function (this: null) {
      ticks++;
      const now = performance.now();
      if (now >= doneAt) resolve({ ticks, lateMs: now - doneAt });
      else globalThis.setImmediate(bound);
    };
    const bound = tick.bind(null); // a bound function prints as native code, like Dawn's callback
    globalThis.setImmediate(bound);
  });
}

/** Counts native callbacks scheduled through the global setImmediate, beneath the pacing wrapper. */
function withTickCounter<T>(paced: boolean, fn: () => Promise<T>): Promise<{ result: T; ticks: number }> {
  unpaceDawnPolling();
  const real = globalThis.setImmediate;
  let ticks = 0;
  const counting = ((cb: (...a: unknown[]) => void, ...args: unknown[]) => {
    if (Function.prototype.toString.call(cb).endsWith('{ [native code] }')) ticks++;
    return real(cb, ...args);
  }) as typeof setImmediate;
  globalThis.setImmediate = counting;
  if (paced) paceDawnPolling();
  return fn().then(
    (result) => ({ result, ticks }),
  ).finally(() => {
    unpaceDawnPolling();
    globalThis.setImmediate = real;
    paceDawnPolling();
  });
}

afterAll(() => paceDawnPolling());

describe('dawn polling pacing', () => {
  it('turns a hot poll loop into about one poll per pollMs, and still notices completion promptly', async () => {
    const unpaced = await withTickCounter(false, () => simulatedWait(performance.now() + 80));
    const paced = await withTickCounter(true, () => simulatedWait(performance.now() + 80));
    // Unpaced, an 80 ms wait polls thousands of times; paced, ~80 / pollMs times (timers run late under load).
    expect(unpaced.ticks).toBeGreaterThan(1000);
    expect(paced.ticks).toBeLessThan(80 / DEFAULT_PACING.pollMs + 60);
    expect(paced.ticks).toBeGreaterThan(1);
    // Noticed within a poll or two (bound loose: timers fire late on a loaded machine).
    expect(paced.result.lateMs).toBeLessThan(60);
  });

  it('runs the first ticks of a short wait at once', async () => {
    const t0 = performance.now();
    const { result } = await withTickCounter(true, () => simulatedWait(performance.now() + 0.05));
    expect(result.lateMs).toBeLessThan(DEFAULT_PACING.pollMs);
    expect(performance.now() - t0).toBeLessThan(50);
  });

  it('leaves JavaScript callbacks to setImmediate alone', async () => {
    paceDawnPolling();
    const order: string[] = [];
    await new Promise<void>((resolve) => {
      setTimeout(() => { order.push('timer'); resolve(); }, 1);
      globalThis.setImmediate(() => order.push('immediate'));
    });
    expect(order[0]).toBe('immediate');
  });

  it('paces the real device: a long GPU wait polls far less than unpaced', async () => {
    const rt = await runtime();
    const d = rt.gpu.device;
    const code = `@group(0) @binding(0) var<storage, read_write> x: array<f32>;
      @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
        var s = x[g.x];
        for (var i = 0u; i < 40000u; i++) { s = s * 1.0001 + 0.5; }
        x[g.x] = s;
      }`;
    const buf = d.createBuffer({ size: 64 * 256 * 4, usage: GPUBufferUsage.STORAGE });
    const pipeline = await d.createComputePipelineAsync({ layout: 'auto', compute: { module: d.createShaderModule({ code }), entryPoint: 'main' } });
    const bind = d.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: buf } }] });
    const submitAndWait = async () => {
      const enc = d.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bind);
      pass.dispatchWorkgroups(256);
      pass.end();
      d.queue.submit([enc.finish()]);
      const t0 = performance.now();
      await d.queue.onSubmittedWorkDone();
      return performance.now() - t0;
    };
    await submitAndWait();
    const unpaced = await withTickCounter(false, submitAndWait);
    const paced = await withTickCounter(true, submitAndWait);
    // Dawn still polls through the global setImmediate (else the pacing would do nothing) ...
    expect(unpaced.ticks).toBeGreaterThan(2 * unpaced.result);
    // ... and paced, about once per pollMs.
    expect(paced.ticks).toBeLessThan(paced.result / DEFAULT_PACING.pollMs + 60);
    buf.destroy();
  });
});
