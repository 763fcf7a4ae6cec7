// Issue 10: kernels are checked against the device's limits when their pipeline is built (workgroup
// size after override constants, storage buffers per stage), and the ops whose kernels take any power
// of two pick their workgroup size with fitWorkgroup, so a device with smaller limits (a browser's
// adapter can have fewer invocations per workgroup than Dawn's lavapipe) still runs them.
import { afterAll, describe, expect, it } from 'vitest';
import { checkKernelLimits, fitWorkgroup, KernelCompileError, KernelRegistry, resolveWorkgroupSize } from '../src/gpu/kernels.ts';
import { Runtime } from '../src/gpu/runtime.ts';
import { geluForward } from '../src/ops/gelu.ts';
import { residualAdd } from '../src/ops/residual.ts';
import { crossEntropyForward } from '../src/ops/crossentropy.ts';
import { nodePlatform } from '../src/platform/node.ts';
import { geluForward as refGeluForward, mulberry32, randn } from './reference/ops.ts';
import { expectRel, f32, f64, poison, runtime } from './util/gpu.ts';

describe('fitWorkgroup', () => {
  const limits = { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256 };
  it('gives the largest power of two ≤ the wanted size and both limits', () => {
    expect(fitWorkgroup(limits, 256)).toBe(256);
    expect(fitWorkgroup(limits, 1024)).toBe(256);
    expect(fitWorkgroup(limits, 100)).toBe(64);
    expect(fitWorkgroup(limits, 1)).toBe(1);
    expect(fitWorkgroup({ maxComputeInvocationsPerWorkgroup: 96, maxComputeWorkgroupSizeX: 1024 }, 256)).toBe(64);
    expect(fitWorkgroup({ maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupSizeX: 128 }, 256)).toBe(128);
    expect(fitWorkgroup({ maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupSizeX: 1024 }, 512)).toBe(512);
  });
  it("uses WebGPU's guaranteed minimums (256) for missing limits, and refuses a wanted size below 1", () => {
    expect(fitWorkgroup({}, 1024)).toBe(256);
    expect(() => fitWorkgroup(limits, 0)).toThrow(/wanted must be ≥ 1/);
    expect(() => fitWorkgroup(limits, Number.NaN)).toThrow(RangeError);
  });
});

describe('checkKernelLimits / resolveWorkgroupSize', () => {
  const limits = { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256, maxComputeWorkgroupSizeY: 256, maxComputeWorkgroupSizeZ: 64, maxStorageBuffersPerShaderStage: 8 };
  it('passes sizes within every limit', () => {
    expect(() => checkKernelLimits('k', [256, 1, 1], 8, limits)).not.toThrow();
    expect(() => checkKernelLimits('k', [16, 16, 1], 0, limits)).not.toThrow();
  });
  it('names the kernel, the value and the limit', () => {
    expect(() => checkKernelLimits('kernels/x.wgsl: entry \'f\'', [512, 1, 1], 1, limits)).toThrow(/kernels\/x\.wgsl: entry 'f': workgroup size x = 512 exceeds the device's maxComputeWorkgroupSizeX \(256\)/);
    expect(() => checkKernelLimits('k', [1, 1, 65], 1, limits)).toThrow(/z = 65 exceeds the device's maxComputeWorkgroupSizeZ \(64\)/);
    expect(() => checkKernelLimits('k', [32, 16, 1], 1, limits)).toThrow(/32×16×1 = 512 invocations exceeds the device's maxComputeInvocationsPerWorkgroup \(256\)/);
    expect(() => checkKernelLimits('k', [64, 1, 1], 9, limits)).toThrow(/9 storage buffers exceeds the device's maxStorageBuffersPerShaderStage \(8\)/);
    expect(() => checkKernelLimits('k', [64, 1, 1], 9, limits)).toThrow(KernelCompileError);
  });
  it('applies override constants named in @workgroup_size to the reflected defaults', () => {
    expect(resolveWorkgroupSize([256, 1, 1], 'WG', { WG: 32 })).toEqual([32, 1, 1]);
    expect(resolveWorkgroupSize([8, 8, 1], ['WG_X', 'WG_Y'], { WG_Y: 4 })).toEqual([8, 4, 1]);
    expect(resolveWorkgroupSize([64, 1, 1], '64', { WG: 8 })).toEqual([64, 1, 1]);
    expect(resolveWorkgroupSize(null, null, {})).toEqual([1, 1, 1]);
  });
});

describe('KernelRegistry checks a pipeline against the device limits', () => {
  /** A registry on the shared device that plans with lowered limits. */
  async function registry(caps: Record<string, number>): Promise<KernelRegistry> {
    const rt = await runtime();
    return new KernelRegistry({ ...rt.gpu, limits: { ...rt.gpu.limits, ...caps } }, rt.platform, rt.memory);
  }

  it('workgroup size after overrides: gelu WG=256 on a 64-invocation device is refused, WG=64 builds', async () => {
    const reg = await registry({ maxComputeInvocationsPerWorkgroup: 64 });
    const err = await reg.kernel('gelu', 'forward', { WG: 256 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KernelCompileError);
    expect((err as Error).message).toMatch(/kernels\/gelu\.wgsl: entry 'forward': workgroup size 256×1×1 = 256 invocations exceeds the device's maxComputeInvocationsPerWorkgroup \(64\)/);
    const k = await reg.kernel('gelu', 'forward', { WG: 64 });
    expect(k.workgroupSize).toEqual([64, 1, 1]);
  });

  it('2-D sizes from two overrides: matmul 16×16 on a 128-invocation device is refused, 32×4 where x ≤ 16', async () => {
    const reg = await registry({ maxComputeInvocationsPerWorkgroup: 128, maxComputeWorkgroupSizeX: 16 });
    await expect(reg.kernel('matmul', 'nn', { WG_X: 16, WG_Y: 16 })).rejects.toThrow(/kernels\/matmul\.wgsl: entry 'nn': workgroup size 16×16×1 = 256 invocations exceeds the device's maxComputeInvocationsPerWorkgroup \(128\)/);
    await expect(reg.kernel('matmul', 'nn', { WG_X: 32, WG_Y: 4 })).rejects.toThrow(/workgroup size x = 32 exceeds the device's maxComputeWorkgroupSizeX \(16\)/);
    expect((await reg.kernel('matmul', 'nn', { WG_X: 16, WG_Y: 8 })).workgroupSize).toEqual([16, 8, 1]);
  });

  it('storage buffers: gelu backward (3) on a device with 2 per stage is refused', async () => {
    const reg = await registry({ maxStorageBuffersPerShaderStage: 2 });
    await expect(reg.kernel('gelu', 'backward', { WG: 64 })).rejects.toThrow(/kernels\/gelu\.wgsl: entry 'backward': 3 storage buffers exceeds the device's maxStorageBuffersPerShaderStage \(2\)/);
    await expect(reg.kernel('gelu', 'forward', { WG: 64 })).resolves.toBeDefined();
  });

  it("a kernel's recorded workgroupSize is the one its overrides give", async () => {
    const rt = await runtime();
    const k = await rt.kernels.kernel('layernorm', 'forward', { WG: 16 });
    expect(k.workgroupSize).toEqual([16, 1, 1]);
  });
});

describe('ops fit their workgroups to the device (capLimits maxComputeInvocationsPerWorkgroup 32)', () => {
  let capped: Promise<Runtime> | null = null;
  const cappedRuntime = () => (capped ??= Runtime.open(nodePlatform, { capLimits: { maxComputeInvocationsPerWorkgroup: 32 } }));
  afterAll(async () => {
    if (capped) (await capped).destroy();
  });

  it('gelu forward (vec4 and scalar) and residual add run with 32-invocation workgroups and stay exact', async () => {
    const rt = await cappedRuntime();
    for (const n of [4096, 1001]) {
      const x = f32(randn(n, mulberry32(n), 3));
      const y = f32(randn(n, mulberry32(n + 1)));
      const bx = rt.memory.upload('t.x', x);
      const by = rt.memory.upload('t.y', y);
      const bg = rt.memory.upload('t.gelu', poison(n));
      const bs = rt.memory.upload('t.sum', poison(n));
      const g = await geluForward(rt, { n, inp: bx, out: bg });
      const s = await residualAdd(rt, { n, a: bx, b: by, out: bs });
      expect(g.bound.kernel.workgroupSize).toEqual([32, 1, 1]);
      expect(s.bound.kernel.workgroupSize).toEqual([32, 1, 1]);
      expect(g.workgroups[0] * (g.workgroups[1] ?? 1)).toBe(Math.ceil((n % 4 === 0 ? n / 4 : n) / 32));
      await rt.steps.run('capped', [g, s]);
      expectRel(n, 'gelu (WG 32)', await rt.memory.readFloat32(bg), refGeluForward(f64(x)), 1e-5);
      const sum = await rt.memory.readFloat32(bs);
      expect(Array.from(sum)).toEqual(Array.from(x, (v, i) => Math.fround(v + y[i]!)));
      for (const b of [bx, by, bg, bs]) rt.memory.destroy(b);
    }
    expect(rt.gpu.errors).toEqual([]);
  });

  it('cross-entropy builds with WG 32 instead of 64', async () => {
    const rt = await cappedRuntime();
    const rows = 3;
    const V = 50;
    const logits = rt.memory.upload('t.logits', f32(randn(rows * V, mulberry32(7))));
    const targets = rt.memory.upload('t.targets', new Uint32Array([1, 2, 3]));
    const losses = rt.memory.upload('t.losses', poison(rows));
    const d = await crossEntropyForward(rt, { rows, V, logits, targets, losses });
    expect(d.bound.kernel.workgroupSize).toEqual([32, 1, 1]);
    await rt.steps.run('capped ce', [d]);
    expect(Array.from(await rt.memory.readFloat32(losses)).every((l) => Number.isFinite(l) && l > 0)).toBe(true);
    for (const b of [logits, targets, losses]) rt.memory.destroy(b);
  });
});
