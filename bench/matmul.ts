// Matmul GFLOP/s on this adapter: median over repeated runs, timed with GPU timestamps when the
// adapter has them (wall time otherwise), for both paths: transposes into tn (software adapters'
// `auto`) and the tiled kernel (hardware GPUs' `auto`). `tsx bench/matmul.ts [--reps N] [--json FILE]`
import { Runtime } from '../src/gpu/runtime.ts';
import { nodePlatform } from '../src/platform/node.ts';
import { matmul, matmulEntry, matmulFlops, matmulPathFor, matmulPlan, type MatmulForm, type MatmulStrategy } from '../src/ops/matmul.ts';
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

/** Median GPU ms per product for each strategy, the strategies' runs interleaved (fair under noise). */
export async function benchMatmul(rt: Runtime, M: number, N: number, K: number, form: MatmulForm, reps: number, strategies: MatmulStrategy[] = ['auto']): Promise<{ strategy: MatmulStrategy; ms: number; gflops: number }[]> {
  const mem = rt.memory;
  const a = mem.upload('bench.a', new Float32Array(M * K).map(() => Math.random() - 0.5));
  const b = mem.upload('bench.b', new Float32Array(K * N).map(() => Math.random() - 0.5));
  const c = mem.storage('bench.c', M * N * 4);
  const ds = [];
  for (const strategy of strategies) {
    const d = await matmul(rt, { form, M, N, K, a, b, c, strategy });
    await rt.steps.run('warmup', d);
    ds.push(d);
  }
  const times: number[][] = strategies.map(() => []);
  for (let r = 0; r < reps; r++) {
    for (let i = 0; i < ds.length; i++) {
      const t = await rt.steps.run(`matmul ${M}x${N}x${K}`, ds[i]!, { timestamps: true });
      times[i]!.push(t.gpuMs ?? t.wallMs);
    }
  }
  for (const x of [a, b, c]) mem.destroy(x);
  return strategies.map((strategy, i) => {
    const ms = median(times[i]!);
    return { strategy, ms, gflops: matmulFlops(M, N, K) / (ms * 1e6) };
  });
}

async function main() {
  const reps = arg('--reps', 7);
  const rt = await Runtime.open(nodePlatform);
  const results = [];
  for (const s of SHAPES) {
    const args = { form: s.form, M: s.M, N: s.N, K: s.K, a: rt.dummy, b: rt.dummy, c: rt.dummy };
    const plan = matmulPlan(args);
    const path = plan ? `transpose${plan.transposeB ? ' A,B' : ' A'} + tn` : matmulEntry(args);
    // The transposing path, the tiled (hardware-GPU) kernel and, where the transposes apply, the direct kernel.
    const strategies: MatmulStrategy[] = plan ? ['transpose', 'tiled', 'direct'] : ['transpose', 'tiled'];
    const rs = await benchMatmul(rt, s.M, s.N, s.K, s.form, reps, strategies);
    const [best, tiled, direct] = rs;
    process.stderr.write(`${s.name.padEnd(36)} ${path.padEnd(18)} ${best!.ms.toFixed(2).padStart(9)} ms ${best!.gflops.toFixed(1).padStart(6)} GFLOP/s   (tiled ${tiled!.gflops.toFixed(1)}${direct ? `, direct ${s.form} ${direct.gflops.toFixed(1)}` : ''})\n`);
    results.push({
      ...s, path, reps, medianMs: best!.ms, gflops: best!.gflops,
      tiled: { medianMs: tiled!.ms, gflops: tiled!.gflops },
      direct: direct ? { entry: matmulEntry(args), medianMs: direct.ms, gflops: direct.gflops } : null,
      timing: rt.gpu.hasTimestamps ? 'gpu timestamps' : 'wall clock',
    });
  }
  // What `auto` runs on this adapter (ops/matmul.ts matmulPathFor).
  const autoPath = await matmulPathFor(rt);
  emit({ benchmark: 'matmul', date: new Date().toISOString(), machine: machine(rt), autoPath, results });
  rt.destroy();
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
