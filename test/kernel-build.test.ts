// Issue 8 item 16: pipelines are compiled when built (not silently at the first step), and every build
// is reported through KernelRegistry.onBuild, which the CLI turns into cold-start progress.
import { describe, expect, it } from 'vitest';
import { KernelRegistry, type KernelBuildEvent } from '../src/gpu/kernels.ts';
import { runtime } from './util/gpu.ts';

describe('KernelRegistry.onBuild', () => {
  it('reports each pipeline once, with its build time; the warm-up dispatch raises no GPU error', async () => {
    const rt = await runtime();
    const reg = new KernelRegistry(rt.gpu, rt.platform, rt.memory);
    const events: KernelBuildEvent[] = [];
    reg.onBuild = (e) => events.push(e);
    await reg.kernel('gelu', 'forward4', { WG: 256 });
    await reg.kernel('gelu', 'forward4', { WG: 256 }); // cached: no second event
    await reg.kernel('layernorm', 'forward', { WG: 8 });
    expect(events.map((e) => [e.key, e.built])).toEqual([['gelu:forward4:WG=256', 1], ['layernorm:forward:WG=8', 2]]);
    expect(events.every((e) => e.ms > 0)).toBe(true);
    expect(reg.buildMs).toBeCloseTo(events[0]!.ms + events[1]!.ms, 6);
    await rt.device.queue.onSubmittedWorkDone();
    expect(rt.gpu.errors).toEqual([]);
  });
});
