// What WebGPU adapter a runtime runs on and how fast a matmul runs there (the CLI's `semfreeze doctor`,
// the page's adapter line).
import type { Runtime } from '../gpu/runtime.ts';
import { matmul, matmulFlops, matmulPathFor, type MatmulPath } from './matmul.ts';

const SHOWN_LIMITS = ['maxStorageBufferBindingSize', 'maxBufferSize', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupsPerDimension'];

/** A quick matmul figure: n³ in the layout the model uses most, median of a few GPU-timed runs. */
export async function quickMatmulGflops(rt: Runtime, n = 1024, reps = 5): Promise<number> {
  const mem = rt.memory;
  const a = mem.upload('doctor.a', new Float32Array(n * n).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5));
  const b = mem.upload('doctor.b', new Float32Array(n * n).map((_, i) => ((i * 104729) % 1000) / 1000 - 0.5));
  const c = mem.storage('doctor.c', n * n * 4);
  try {
    const d = await matmul(rt, { form: 'nn', M: n, N: n, K: n, a, b, c });
    await rt.steps.run('doctor warmup', d);
    const times: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t = await rt.steps.run('doctor matmul', d, { timestamps: true });
      times.push(t.gpuMs ?? t.wallMs);
    }
    times.sort((x, y) => x - y);
    return matmulFlops(n, n, n) / (times[Math.floor(reps / 2)]! * 1e6);
  } finally {
    for (const x of [a, b, c]) mem.destroy(x);
  }
}

export interface AdapterReport {
  adapter: Runtime['gpu']['info'];
  features: string[];
  limits: Record<string, number>;
  /** `path`: the one `auto` takes here (matmulPathFor: by adapter kind, or timed once per GPU and kept). */
  matmul: { shape: string; gflops: number; timing: string; path: MatmulPath };
}

export async function adapterReport(rt: Runtime, n = 1024): Promise<AdapterReport> {
  const g = rt.gpu;
  const gflops = await quickMatmulGflops(rt, n);
  const path = await matmulPathFor(rt);
  const limits: Record<string, number> = {};
  for (const k of SHOWN_LIMITS) if (k in g.limits) limits[k] = g.limits[k]!;
  return {
    adapter: g.info,
    features: [...g.features].sort(),
    limits,
    matmul: { shape: `${n}x${n}x${n}`, gflops: Number(gflops.toFixed(2)), timing: g.hasTimestamps ? 'gpu timestamps' : 'wall clock', path },
  };
}
