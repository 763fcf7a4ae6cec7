// Kernel registry: WGSL from kernels/*.wgsl, bind group layouts from wgsl_reflect's reflection,
// one compute pipeline per (kernel file, entry point, override constants), built once and cached.
// A kernel is bound to named buffers once per model/batch shape; the bound kernel is then
// dispatched every step without creating anything.
import { WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import type { Platform } from '../platform/types.ts';
import type { GpuDevice } from './device.ts';
import type { GpuMemory } from './memory.ts';

export class KernelCompileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KernelCompileError';
  }
}

/** One pipeline built (and compiled by the driver): what the CLI needs to show cold-start progress. */
export interface KernelBuildEvent {
  key: string;
  /** Wall time of this pipeline's creation and first (empty) dispatch. */
  ms: number;
  /** Pipelines built so far by this registry. */
  built: number;
  /** Total ms spent building them. */
  totalMs: number;
}

export type OverrideValues = Record<string, number | boolean>;

/** The device limits a kernel's shape is checked against (GpuDevice.limits has them all). */
export interface ComputeLimits {
  maxComputeInvocationsPerWorkgroup?: number;
  maxComputeWorkgroupSizeX?: number;
  maxComputeWorkgroupSizeY?: number;
  maxComputeWorkgroupSizeZ?: number;
  maxStorageBuffersPerShaderStage?: number;
}

/** WebGPU's guaranteed minimums, used where a limits object lacks an entry. */
const DEFAULT_COMPUTE_LIMITS: Required<ComputeLimits> = {
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxStorageBuffersPerShaderStage: 8,
};

function limitOf(limits: ComputeLimits, name: keyof ComputeLimits): number {
  const v = limits[name];
  return typeof v === 'number' && v > 0 ? v : DEFAULT_COMPUTE_LIMITS[name];
}

/**
 * The largest power of two ≤ min(wanted, maxComputeInvocationsPerWorkgroup, maxComputeWorkgroupSizeX):
 * a 1-D workgroup size for kernels whose correctness allows any power of two.
 */
export function fitWorkgroup(limits: ComputeLimits, wanted: number): number {
  if (!(Number.isFinite(wanted) && wanted >= 1)) throw new RangeError(`fitWorkgroup: wanted must be ≥ 1 (${wanted})`);
  const cap = Math.min(wanted, limitOf(limits, 'maxComputeInvocationsPerWorkgroup'), limitOf(limits, 'maxComputeWorkgroupSizeX'));
  let wg = 1;
  while (wg * 2 <= cap) wg *= 2;
  return wg;
}

/**
 * Throws KernelCompileError when a kernel's workgroup size or storage-buffer count exceeds the
 * device's limits (the driver's own error would not say which value or limit).
 */
export function checkKernelLimits(what: string, workgroupSize: readonly [number, number, number], storageBuffers: number, limits: ComputeLimits): void {
  const [x, y, z] = workgroupSize;
  const fail = (value: string, limit: keyof ComputeLimits) => {
    throw new KernelCompileError(`${what}: ${value} exceeds the device's ${limit} (${limitOf(limits, limit)})`);
  };
  if (!workgroupSize.every((d) => Number.isInteger(d) && d >= 1)) throw new KernelCompileError(`${what}: workgroup size (${x}, ${y}, ${z}) must be positive integers`);
  if (x > limitOf(limits, 'maxComputeWorkgroupSizeX')) fail(`workgroup size x = ${x}`, 'maxComputeWorkgroupSizeX');
  if (y > limitOf(limits, 'maxComputeWorkgroupSizeY')) fail(`workgroup size y = ${y}`, 'maxComputeWorkgroupSizeY');
  if (z > limitOf(limits, 'maxComputeWorkgroupSizeZ')) fail(`workgroup size z = ${z}`, 'maxComputeWorkgroupSizeZ');
  if (x * y * z > limitOf(limits, 'maxComputeInvocationsPerWorkgroup')) fail(`workgroup size ${x}×${y}×${z} = ${x * y * z} invocations`, 'maxComputeInvocationsPerWorkgroup');
  if (storageBuffers > limitOf(limits, 'maxStorageBuffersPerShaderStage')) fail(`${storageBuffers} storage buffers`, 'maxStorageBuffersPerShaderStage');
}

/**
 * The workgroup size of an entry point with its override constants applied: wgsl_reflect gives the
 * size with the overrides' defaults, and the attribute's own text (a literal or an override name)
 * per dimension.
 */
export function resolveWorkgroupSize(
  reflected: readonly number[] | null | undefined,
  attributeValue: string | string[] | null | undefined,
  overrides: OverrideValues,
): [number, number, number] {
  const size: [number, number, number] = [reflected?.[0] ?? 1, reflected?.[1] ?? 1, reflected?.[2] ?? 1];
  const dims = attributeValue == null ? [] : Array.isArray(attributeValue) ? attributeValue : [attributeValue];
  dims.slice(0, 3).forEach((d, i) => {
    const name = typeof d === 'string' ? d.trim() : '';
    const v = overrides[name];
    if (v !== undefined) size[i] = Number(v);
  });
  return size;
}

/** A buffer, or a byte range of one (for tensors bound as several ranges). */
export type BufferBinding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

interface UniformMember { name: string; offset: number; type: 'u32' | 'i32' | 'f32' }

interface ResourceInfo {
  name: string;
  group: number;
  binding: number;
  kind: GPUBufferBindingType;
  /** For uniform structs: the members, so values can be written by name. */
  members?: UniformMember[];
  uniformSize?: number;
}

interface ShaderModuleInfo {
  module: GPUShaderModule;
  reflect: WgslReflect;
}

export class Kernel {
  constructor(
    readonly key: string,
    readonly file: string,
    readonly entry: string,
    readonly pipeline: GPUComputePipeline,
    readonly layouts: GPUBindGroupLayout[],
    readonly resources: ResourceInfo[],
    readonly workgroupSize: [number, number, number],
  ) {}
}

/** A kernel bound to its buffers and uniform values: ready to dispatch, reused every step. */
export class BoundKernel {
  constructor(
    readonly kernel: Kernel,
    readonly bindGroups: GPUBindGroup[],
    /** One uniform buffer per uniform variable, by variable name. */
    readonly uniformBuffers: Map<string, { buffer: GPUBuffer; info: ResourceInfo; data: ArrayBuffer }>,
    private readonly device: GPUDevice,
  ) {}

  /** Change uniform values (written to the GPU with the next submit; use between steps, not inside one). */
  setUniforms(values: Record<string, number>, variable?: string): void {
    for (const [name, u] of this.uniformBuffers) {
      if (variable && name !== variable) continue;
      writeUniformValues(u.info, u.data, values, this.kernel.file, false);
      this.device.queue.writeBuffer(u.buffer, 0, u.data);
    }
  }
}

function writeUniformValues(info: ResourceInfo, data: ArrayBuffer, values: Record<string, number>, file: string, requireAll: boolean): void {
  const view = new DataView(data);
  for (const m of info.members ?? []) {
    const v = values[m.name];
    if (v === undefined) {
      if (requireAll) throw new Error(`kernels/${file}.wgsl: no value given for uniform ${info.name}.${m.name}`);
      continue;
    }
    if (m.type === 'f32') view.setFloat32(m.offset, v, true);
    else if (m.type === 'i32') view.setInt32(m.offset, v, true);
    else view.setUint32(m.offset, v >>> 0, true);
  }
  for (const k of Object.keys(values)) {
    if (requireAll && !(info.members ?? []).some((m) => m.name === k)) {
      throw new Error(`kernels/${file}.wgsl: uniform ${info.name} has no member '${k}'`);
    }
  }
}

function bufferKind(resourceType: number, access: string): GPUBufferBindingType {
  if (resourceType === 0) return 'uniform';
  return access === 'read' ? 'read-only-storage' : 'storage';
}

export class KernelRegistry {
  private readonly modules = new Map<string, Promise<ShaderModuleInfo>>();
  private readonly kernels = new Map<string, Promise<Kernel>>();
  private readonly layoutCache = new Map<string, GPUBindGroupLayout>();
  /** Told after every pipeline is built; set by the CLI (this module never writes to the console). */
  onBuild: ((e: KernelBuildEvent) => void) | null = null;
  private built = 0;
  /** Total ms spent building (and compiling) pipelines: time an ETA must not extrapolate from. */
  buildMs = 0;
  private warmUpBuffers: { uniform: GPUBuffer[]; storage: GPUBuffer[]; indirect: GPUBuffer | null } = { uniform: [], storage: [], indirect: null };

  constructor(
    readonly gpu: GpuDevice,
    private readonly platform: Platform,
    private readonly memory: GpuMemory,
  ) {}

  get device(): GPUDevice {
    return this.gpu.device;
  }

  private module(file: string): Promise<ShaderModuleInfo> {
    let m = this.modules.get(file);
    if (!m) {
      m = this.compileModule(file);
      this.modules.set(file, m);
    }
    return m;
  }

  private async compileModule(file: string): Promise<ShaderModuleInfo> {
    const code = await this.platform.kernelSource(file);
    const device = this.device;
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ label: file, code });
    const info = await module.getCompilationInfo();
    const scopeError = await device.popErrorScope();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length > 0) {
      throw new KernelCompileError(errors.map((m) => `kernels/${file}.wgsl:${m.lineNum}:${m.linePos}: error: ${m.message}`).join('\n'));
    }
    if (scopeError) throw new KernelCompileError(`kernels/${file}.wgsl: ${scopeError.message}`);
    let reflect: WgslReflect;
    try {
      reflect = new WgslReflect(code);
    } catch (e) {
      throw new KernelCompileError(`kernels/${file}.wgsl: reflection failed: ${(e as Error).message}`);
    }
    return { module, reflect };
  }

  /** The pipeline for one entry point with its override constants; compiled once, then cached. */
  kernel(file: string, entry: string, overrides: OverrideValues = {}): Promise<Kernel> {
    const key = `${file}:${entry}:${Object.keys(overrides).sort().map((k) => `${k}=${Number(overrides[k])}`).join(',')}`;
    let k = this.kernels.get(key);
    if (!k) {
      k = this.buildKernel(key, file, entry, overrides);
      this.kernels.set(key, k);
      k.catch(() => this.kernels.delete(key));
    }
    return k;
  }

  private async buildKernel(key: string, file: string, entry: string, overrides: OverrideValues): Promise<Kernel> {
    const { module, reflect } = await this.module(file);
    const fn = reflect.entry.compute.find((f) => f.name === entry);
    if (!fn) throw new KernelCompileError(`kernels/${file}.wgsl: no compute entry point '${entry}' (has: ${reflect.entry.compute.map((f) => f.name).join(', ')})`);
    const resources: ResourceInfo[] = fn.resources.map((v) => {
      const kind = bufferKind(v.resourceType as number, v.access);
      const r: ResourceInfo = { name: v.name, group: v.group, binding: v.binding, kind };
      if (kind === 'uniform') {
        r.members = (v.members ?? []).map((m) => {
          const t = m.type.name;
          if (t !== 'u32' && t !== 'i32' && t !== 'f32') throw new KernelCompileError(`kernels/${file}.wgsl: uniform ${v.name}.${m.name} has type ${t}; only scalar u32/i32/f32 members are supported`);
          return { name: m.name, offset: m.offset, type: t };
        });
        r.uniformSize = Math.max(16, Math.ceil(v.size / 16) * 16);
      }
      return r;
    });
    // Module-level list: the per-entry one misses overrides read inside called functions.
    const known = new Set(reflect.overrides.map((o) => o.name));
    for (const name of Object.keys(overrides)) {
      if (!known.has(name)) throw new KernelCompileError(`kernels/${file}.wgsl: no override constant '${name}'`);
    }
    const groups = Math.max(0, ...resources.map((r) => r.group + 1));
    const layouts: GPUBindGroupLayout[] = [];
    for (let g = 0; g < groups; g++) {
      const entries: GPUBindGroupLayoutEntry[] = resources
        .filter((r) => r.group === g)
        .sort((a, b) => a.binding - b.binding)
        .map((r) => ({ binding: r.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: r.kind } }));
      const sig = JSON.stringify(entries.map((e) => [e.binding, e.buffer!.type]));
      let layout = this.layoutCache.get(sig);
      if (!layout) {
        layout = this.device.createBindGroupLayout({ label: `${file}:${entry}:g${g}`, entries });
        this.layoutCache.set(sig, layout);
      }
      layouts.push(layout);
    }
    const constants: Record<string, number> = {};
    for (const [k, v] of Object.entries(overrides)) constants[k] = Number(v);
    const wgAttribute = fn.attributes?.find((a) => a.name === 'workgroup_size')?.value as string | string[] | null | undefined;
    const wg = resolveWorkgroupSize(fn.workgroupSize, wgAttribute, overrides);
    checkKernelLimits(`kernels/${file}.wgsl: entry '${entry}'`, wg, resources.filter((r) => r.kind !== 'uniform').length, this.gpu.limits);
    const t0 = performance.now();
    let pipeline: GPUComputePipeline;
    try {
      pipeline = await this.device.createComputePipelineAsync({
        label: key,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: layouts }),
        compute: { module, entryPoint: entry, constants },
      });
    } catch (e) {
      throw new KernelCompileError(`kernels/${file}.wgsl: pipeline '${entry}' failed: ${(e as Error).message}`);
    }
    const kernel = new Kernel(key, file, entry, pipeline, layouts, resources, wg);
    await this.compileNow(kernel);
    const ms = performance.now() - t0;
    this.built++;
    this.buildMs += ms;
    this.onBuild?.({ key, ms, built: this.built, totalMs: this.buildMs });
    return kernel;
  }

  /**
   * Make the driver compile the pipeline now, at build time, where it can be timed and reported:
   * lavapipe (llvmpipe) compiles a compute shader only at its first dispatch, so on a cold shader
   * cache the first step would otherwise spend tens of seconds silently compiling every kernel (and
   * the first step's time, and every ETA from it, would be wrong). An indirect dispatch of zero
   * workgroups compiles without running anything; its bindings are small placeholder buffers.
   */
  private async compileNow(kernel: Kernel): Promise<void> {
    const d = this.device;
    const pool = this.warmUpBuffers;
    const placeholder = (kind: GPUBufferBindingType, i: number, bytes: number): GPUBuffer => {
      const list = kind === 'uniform' ? pool.uniform : pool.storage;
      const cur = list[i];
      if (cur && cur.size >= bytes) return cur;
      cur?.destroy();
      const size = Math.max(bytes, 1024);
      return (list[i] = d.createBuffer({ label: `kernel-warm-up.${kind}.${i}`, size, usage: kind === 'uniform' ? GPUBufferUsage.UNIFORM : GPUBufferUsage.STORAGE }));
    };
    pool.indirect ??= d.createBuffer({ label: 'kernel-warm-up.indirect', size: 16, usage: GPUBufferUsage.INDIRECT });
    d.pushErrorScope('validation');
    const enc = d.createCommandEncoder({ label: `warm-up ${kernel.key}` });
    const pass = enc.beginComputePass();
    pass.setPipeline(kernel.pipeline);
    let u = 0;
    let st = 0;
    for (let g = 0; g < kernel.layouts.length; g++) {
      const entries = kernel.resources
        .filter((r) => r.group === g)
        .map((r) => ({ binding: r.binding, resource: { buffer: r.kind === 'uniform' ? placeholder('uniform', u++, r.uniformSize!) : placeholder('storage', st++, 1024) } }));
      pass.setBindGroup(g, d.createBindGroup({ layout: kernel.layouts[g]!, entries }));
    }
    pass.dispatchWorkgroupsIndirect(pool.indirect, 0);
    pass.end();
    d.queue.submit([enc.finish()]);
    // Best effort: a kernel whose placeholder bindings are too small is simply compiled at its first real use.
    await d.popErrorScope();
    await d.queue.onSubmittedWorkDone();
  }

  /**
   * Bind a kernel to buffers by the names its WGSL gives them, and fill its uniform structs by
   * member name. Done once per shape; the result is dispatched every step.
   */
  bind(kernel: Kernel, buffers: Record<string, BufferBinding>, uniforms: Record<string, number> = {}): BoundKernel {
    const uniformBuffers = new Map<string, { buffer: GPUBuffer; info: ResourceInfo; data: ArrayBuffer }>();
    const bindGroups: GPUBindGroup[] = [];
    for (let g = 0; g < kernel.layouts.length; g++) {
      const entries: GPUBindGroupEntry[] = [];
      for (const r of kernel.resources.filter((x) => x.group === g)) {
        if (r.kind === 'uniform') {
          const data = new ArrayBuffer(r.uniformSize!);
          writeUniformValues(r, data, uniforms, kernel.file, true);
          const buffer = this.memory.uniform(`uniform.${kernel.key}:${r.name}`, data);
          uniformBuffers.set(r.name, { buffer, info: r, data });
          entries.push({ binding: r.binding, resource: { buffer } });
          continue;
        }
        const b = buffers[r.name];
        if (!b) throw new Error(`kernels/${kernel.file}.wgsl: entry '${kernel.entry}' needs a buffer for '${r.name}'`);
        entries.push({ binding: r.binding, resource: 'buffer' in b ? { buffer: b.buffer, offset: b.offset ?? 0, size: b.size } : { buffer: b } });
      }
      bindGroups.push(this.device.createBindGroup({ label: `${kernel.key}:g${g}`, layout: kernel.layouts[g]!, entries }));
    }
    return new BoundKernel(kernel, bindGroups, uniformBuffers, this.device);
  }
}
