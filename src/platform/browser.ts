// Browser platform: navigator.gpu, files and kernels over fetch.
import type { Platform } from './types.ts';

export function browserPlatform(kernelBaseUrl = './kernels/'): Platform {
  const fetchBytes = async (url: string) => {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  };
  return {
    name: 'browser',
    gpu() {
      const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
      if (!gpu) throw new Error('This browser has no WebGPU (navigator.gpu is missing).');
      return gpu;
    },
    async kernelSource(name: string) {
      return new TextDecoder().decode(await fetchBytes(`${kernelBaseUrl}${name}.wgsl`));
    },
    readBytes: fetchBytes,
    adapterHelp() {
      return 'No WebGPU adapter: enable WebGPU in this browser (Chromium: --enable-unsafe-webgpu).';
    },
  };
}
