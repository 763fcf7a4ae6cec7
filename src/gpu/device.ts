// Acquire a WebGPU device with the adapter's larger limits and the optional features we use.
import type { Platform } from '../platform/types.ts';

export class NoAdapterError extends Error {
  constructor(help: string) {
    super(help);
    this.name = 'NoAdapterError';
  }
}

/** Limits we raise to what the adapter allows (the defaults are far below lavapipe's and real GPUs'). */
const RAISED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupsPerDimension',
  'maxUniformBufferBindingSize',
  'maxBindGroups',
] as const;

const KNOWN_FEATURES = ['shader-f16', 'timestamp-query', 'subgroups', 'float32-filterable', 'bgra8unorm-storage', 'depth-clip-control', 'indirect-first-instance', 'rg11b10ufloat-renderable', 'float32-blendable', 'texture-compression-bc', 'dual-source-blending', 'clip-distances'];

const OPTIONAL_FEATURES: GPUFeatureName[] = ['shader-f16', 'timestamp-query', 'subgroups' as GPUFeatureName];

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Backend the adapter runs on, when the platform tells (Dawn adds it to the description). */
  backend: string;
  isSoftware: boolean;
}

export interface GpuDevice {
  device: GPUDevice;
  adapter: GPUAdapter;
  info: AdapterSummary;
  features: Set<string>;
  limits: Record<string, number>;
  hasTimestamps: boolean;
  /** Everything async the device reports goes here; the step runner checks it after each wait. */
  errors: string[];
}

/** What an adapter says about itself (GPUAdapterInfo, or a copy of it from another context). */
export interface AdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  /** GPUAdapterInfo.isFallbackAdapter (newer browsers and Dawn), or the older GPUAdapter.isFallbackAdapter. */
  isFallbackAdapter?: boolean;
}

/**
 * Backend and software-ness from the adapter's info. Dawn (Node) fills in a description, e.g.
 * lavapipe's `{vendor 'mesa', architecture 'software', description 'llvmpipe: Mesa 25.0.7 …'}`;
 * browsers report little: Chromium's SwiftShader is `{vendor 'google', architecture 'swiftshader',
 * device '', description '', isFallbackAdapter true}`.
 */
export function summarizeAdapter(i: AdapterInfoLike): AdapterSummary {
  const vendor = i.vendor ?? '';
  const architecture = i.architecture ?? '';
  const device = i.device ?? '';
  const description = i.description ?? '';
  const all = `${vendor} ${architecture} ${device} ${description}`;
  const swiftshader = /swiftshader/i.test(all);
  const mesaSoftware = /llvmpipe|lavapipe|softpipe/i.test(all);
  const backend = swiftshader
    ? 'vulkan (swiftshader)'
    : /vulkan/i.test(description) || mesaSoftware
      ? 'vulkan'
      : /metal/i.test(description)
        ? 'metal'
        : /d3d12/i.test(description)
          ? 'd3d12'
          : /d3d11/i.test(description)
            ? 'd3d11'
            : /opengl|\bgles\b/i.test(description)
              ? 'opengl'
              : 'unknown';
  const isSoftware =
    i.isFallbackAdapter === true ||
    /^(software|swiftshader|llvmpipe|lavapipe)$/i.test(architecture) ||
    swiftshader ||
    mesaSoftware ||
    /microsoft basic render|\bwarp\b/i.test(description);
  return { vendor, architecture, device, description, backend, isSoftware };
}

function summarize(adapter: GPUAdapter): AdapterSummary {
  const a = adapter as GPUAdapter & { info?: GPUAdapterInfo & { isFallbackAdapter?: boolean }; isFallbackAdapter?: boolean };
  const i = a.info ?? ({} as GPUAdapterInfo & { isFallbackAdapter?: boolean });
  return summarizeAdapter({
    vendor: i.vendor,
    architecture: i.architecture,
    device: i.device,
    description: i.description,
    isFallbackAdapter: i.isFallbackAdapter ?? a.isFallbackAdapter,
  });
}

export interface OpenOptions {
  label?: string;
  /**
   * Lower the limits the runtime plans with (never above the device's): tests use a small
   * maxStorageBufferBindingSize to exercise the paths that split tensors, cheaply. The device itself
   * keeps its real limits; every size check and split reads GpuDevice.limits.
   */
  capLimits?: Record<string, number>;
  /**
   * The matmul path `auto` takes (ops/matmul.ts matmulPathFor): `transpose` (transposes into the tn
   * kernel, the fast one on software adapters), `tiled` (workgroup-memory tiles, for hardware GPUs)
   * or `tune` (time both on this adapter, even a software one, unless the tuning store has the
   * answer). Default: transposes on software adapters, the faster one (timed once per adapter,
   * then kept) on hardware GPUs. Benchmarks set it to compare the two on one adapter.
   */
  matmul?: 'transpose' | 'tiled' | 'tune';
}

export async function openDevice(platform: Platform, opts: OpenOptions = {}): Promise<GpuDevice> {
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await platform.gpu().requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    throw new NoAdapterError(`${platform.adapterHelp()}\n(requestAdapter failed: ${(e as Error).message})`);
  }
  if (!adapter) throw new NoAdapterError(platform.adapterHelp());

  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number>)[name];
    if (typeof v === 'number') requiredLimits[name] = v;
  }
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter!.features.has(f));
  const device = await adapter.requestDevice({ label: opts.label ?? 'semfreeze', requiredLimits, requiredFeatures });
  const errors: string[] = [];
  device.addEventListener('uncapturederror', (ev) => {
    errors.push((ev as GPUUncapturedErrorEvent).error.message);
  });
  void device.lost.then((info) => {
    if (info.reason !== 'destroyed') errors.push(`device lost: ${info.message}`);
  });
  const limits: Record<string, number> = {};
  for (const key in device.limits) {
    const v = (device.limits as unknown as Record<string, number>)[key];
    if (typeof v === 'number') limits[key] = v;
  }
  for (const [key, cap] of Object.entries(opts.capLimits ?? {})) if (key in limits) limits[key] = Math.min(limits[key]!, cap);
  // Dawn's GPUSupportedFeatures is not iterable: ask for each name we know.
  const features = new Set<string>(KNOWN_FEATURES.filter((f) => device.features.has(f)));
  return { device, adapter, info: summarize(adapter), features, limits, hasTimestamps: features.has('timestamp-query'), errors };
}
