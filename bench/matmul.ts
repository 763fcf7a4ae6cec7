// Matmul GFLOP/s on this adapter: median over repeated runs, timed with GPU timestamps when the
// adapter has them (wall time otherwise). `tsx bench/matmul.ts [--reps N] [--json FILE]`
import { Runtime } from '../src/gpu/runtime.ts';
import { nodePlatform } from '../src/platform/node.ts';
import { matmul, matmulEntry, matmulFlops, type MatmulForm } from '../src/ops/matmul.ts';
import { arg, emit, machine, median } from './util.ts';

const SHAPES: { name: string; M: number; N: number; K: number; form: MatmulForm }[] = [
  { name: '256³', M: 256, N: 256, K: 256, form: 'nn' },
  { name: '1024³', M: 1024, N: 1024, K: 1024, form: 'nn' },
  { name: '2048³', M: 2048, N: 2048, K: 2048, form: 'nn' },
  { name: '[1024×768]·[768×3072] (MLP up)', M: 1024, N: 3072, K: 768, form: 'nn' },
  { name: '[512×256]·[256×4096] (head-like)', M: 512, N: 4096, K: 256, form: 'nn' },
  { name: '1024³ A·Bᵀ (dX)', M: 1024, N: 1024, K: 1024, form: 'nt' },
  { name: '1024³ Aᵀ·B (dW)', M: 1024, N: 1024, K: 1024, form: 'tn' },
];

export async function benchMatmul(rt: Runtime, M: number, N: number, K: number, form: MatmulForm, reps: number): Promise<{ ms: number; gflops: number; timing: 'gpu' | 'wall' }> {
  const mem = rt.memory;
  const a = mem.upload('bench.a', new Float32Array(M * K).map(() => Math.random() - 0.5));
  const b = mem.upload('bench.b', new Float32Array(K * N).map(() => Math.random() - 0.5));
  const c = mem.storage('bench.c', M * N * 4);
  const d = await matmul(rt, { form, M, N, K, a, b, c });
  await rt.steps.run('warmup', d);
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = await rt.steps.run(`matmul ${M}x${N}x${K}`, d, { timestamps: true });
    times.push(t.gpuMs ?? t.wallMs);
  }
  for (const x of [a, b, c]) mem.destroy(x);
  const ms = median(times);
  return { ms, gflops: matmulFlops(M, N, K) / (ms * 1e6), timing: rt.gpu.hasTimestamps ? 'gpu' : 'wall' };
}

async function main() {
  const reps = arg('--reps', 7);
  const rt = await Runtime.open(nodePlatform);
  const results = [];
  for (const s of SHAPES) {
    const r = await benchMatmul(rt, s.M, s.N, s.K, s.form, reps);
    const entry = matmulEntry({ form: s.form, M: s.M, N: s.N, K: s.K, a: rt.dummy, b: rt.dummy, c: rt.dummy });
    process.stderr.write(`${s.name.padEnd(36)} ${entry.padEnd(8)} ${r.ms.toFixed(2).padStart(9)} ms ${r.gflops.toFixed(1).padStart(7)} GFLOP/s\n`);
    results.push({ ...s, entry, reps, medianMs: r.ms, gflops: r.gflops, timing: r.timing });
  }
  emit({ benchmark: 'matmul', date: new Date().toISOString(), machine: machine(rt), results });
  rt.destroy();
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
