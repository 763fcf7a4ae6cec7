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

function summarize(adapter: GPUAdapter): AdapterSummary {
  const i = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info ?? ({} as GPUAdapterInfo);
  const description = i.description ?? '';
  const backend = /vulkan/i.test(description) ? 'vulkan' : /llvmpipe|lavapipe/i.test(description) ? 'vulkan' : /metal/i.test(description) ? 'metal' : /d3d12/i.test(description) ? 'd3d12' : /swiftshader/i.test(i.vendor ?? '') ? 'vulkan (swiftshader)' : 'unknown';
  return {
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    device: i.device ?? '',
    description,
    backend,
    isSoftware: (i.architecture ?? '') === 'software' || /llvmpipe|swiftshader/i.test(description + (i.vendor ?? '')),
  };
}

export interface OpenOptions {
  label?: string;
  /**
   * Lower the limits the runtime plans with (never above the device's): tests use a small
   * maxStorageBufferBindingSize to exercise the paths that split tensors, cheaply. The device itself
   * keeps its real limits; every size check and split reads GpuDevice.limits.
   */
  capLimits?: Record<string, number>;
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
