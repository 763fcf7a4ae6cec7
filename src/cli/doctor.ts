// `semfreeze doctor`: what WebGPU adapter this machine gives us and how fast a matmul runs on it.
import type { Runtime } from '../gpu/runtime.ts';
import { matmul, matmulFlops } from '../ops/matmul.ts';
import { openRuntime, printJson } from './common.ts';

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

export async function doctor(opts: { json?: boolean; size?: number }): Promise<void> {
  const rt = await openRuntime();
  const g = rt.gpu;
  const n = opts.size ?? 1024;
  const gflops = await quickMatmulGflops(rt, n);
  const limits: Record<string, number> = {};
  for (const k of SHOWN_LIMITS) if (k in g.limits) limits[k] = g.limits[k]!;
  const report = {
    adapter: g.info,
    features: [...g.features].sort(),
    limits,
    matmul: { shape: `${n}x${n}x${n}`, gflops: Number(gflops.toFixed(2)), timing: g.hasTimestamps ? 'gpu timestamps' : 'wall clock' },
  };
  if (opts.json) {
    printJson(report);
    return;
  }
  const size = (x: number) => (x >= 2 ** 20 ? `${(x / 2 ** 20).toFixed(0)} MiB` : `${(x / 1024).toFixed(0)} KiB`);
  const lines = [
    `adapter       ${g.info.vendor} / ${g.info.architecture}${g.info.isSoftware && g.info.architecture !== 'software' ? ' (software)' : ''}`,
    `description   ${g.info.description}`,
    `backend       ${g.info.backend}`,
    `features      ${report.features.join(', ') || '(none)'}`,
    ...Object.entries(limits).map(([k, v]) => `${k.padEnd(36)}${/Size$/.test(k) ? size(v) : v}`.replace(/^/, 'limit ')),
    `matmul        ${report.matmul.shape} f32: ${gflops.toFixed(1)} GFLOP/s (${report.matmul.timing})`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
