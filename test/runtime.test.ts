// The runtime's error paths: no adapter, a WGSL compile error (file:line), a missing entry point,
// a wrong override name, a missing binding; and buffer bookkeeping.
import { describe, expect, it } from 'vitest';
import { Runtime } from '../src/gpu/runtime.ts';
import { NoAdapterError } from '../src/gpu/device.ts';
import { KernelRegistry } from '../src/gpu/kernels.ts';
import { nodePlatform } from '../src/platform/node.ts';
import type { Platform } from '../src/platform/types.ts';
import { runtime } from './util/gpu.ts';

const BROKEN = `
struct P { n: u32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  x[g.x] = undefined_thing + 1.0;
}`;

const GOOD = `
override SCALE: f32 = 2.0;
struct P { n: u32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < p.n) { x[g.x] = x[g.x] * SCALE; }
}`;

function platformWith(sources: Record<string, string>): Platform {
  return { ...nodePlatform, kernelSource: async (name: string) => sources[name] ?? nodePlatform.kernelSource(name) };
}

describe('runtime errors', () => {
  it('no adapter: one message that says how to fix it', async () => {
    const none: Platform = { ...nodePlatform, gpu: () => ({ requestAdapter: async () => null }) as unknown as GPU };
    const err = await Runtime.open(none).catch((e: Error) => e);
    expect(err).toBeInstanceOf(NoAdapterError);
    expect((err as Error).message).toMatch(/npm run setup/);
  });

  it('a WGSL compile error names the kernel file, line and column', async () => {
    const rt0 = await runtime();
    const kernels = new KernelRegistry(rt0.gpu, platformWith({ broken: BROKEN }), rt0.memory);
    const err = await kernels.kernel('broken', 'main').catch((e: Error) => e);
    expect((err as Error).name).toBe('KernelCompileError');
    expect((err as Error).message).toMatch(/^kernels\/broken\.wgsl:5:\d+: error: .*undefined_thing/);
  });

  it('unknown entry point, unknown override and missing buffer are named', async () => {
    const rt0 = await runtime();
    const kernels = new KernelRegistry(rt0.gpu, platformWith({ good: GOOD }), rt0.memory);
    await expect(kernels.kernel('good', 'nope')).rejects.toThrow(/kernels\/good\.wgsl: no compute entry point 'nope' \(has: main\)/);
    await expect(kernels.kernel('good', 'main', { SCALEE: 1 })).rejects.toThrow(/no override constant 'SCALEE'/);
    const k = await kernels.kernel('good', 'main', { SCALE: 3 });
    expect(() => kernels.bind(k, {}, { n: 4 })).toThrow(/needs a buffer for 'x'/);
    expect(() => kernels.bind(k, { x: rt0.dummy }, { m: 4 })).toThrow(/no value given for uniform p\.n|has no member 'm'/);
    // And it runs: x *= 3 for the first n elements only.
    const buf = rt0.memory.upload('t.x', new Float32Array([1, 2, 3, 4, 5]));
    const bound = kernels.bind(k, { x: buf }, { n: 4 });
    await rt0.steps.run('scale', [{ bound, workgroups: [1] }]);
    expect(Array.from(await rt0.memory.readFloat32(buf, 0, 5))).toEqual([3, 6, 9, 12, 5]);
    rt0.memory.destroy(buf);
  });

  it('tracks live bytes by name and releases buffers allocated after a mark', async () => {
    const rt0 = await runtime();
    const before = rt0.memory.liveBytes;
    const mark = rt0.memory.mark();
    rt0.memory.storage('grad.test', 1000);
    rt0.memory.storage('act.test', 10);
    expect(rt0.memory.liveBytes - before).toBe(1000 + 12);
    expect(rt0.memory.breakdown().grad).toBeGreaterThanOrEqual(1000);
    rt0.memory.releaseSince(mark);
    expect(rt0.memory.liveBytes).toBe(before);
  });
});
