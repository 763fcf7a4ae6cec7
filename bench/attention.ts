// Attention forward/backward time on this adapter next to the matmuls of the same GPT-2 layer:
// median over repeated runs, GPU timestamps when the adapter has them (wall time otherwise). The
// backward runs both ways where the stored squares fit (p and dS stored by its first pass, and
// recomputed), interleaved run by run.
// `tsx bench/attention.ts [--reps N] [--quick] [--all] [--json FILE]`
// --all adds grouped-query / Gemma2-style shapes (head size 256, sliding window, softcap); their
// pipelines take minutes to compile on a cold Mesa shader cache.
import { Runtime } from '../src/gpu/runtime.ts';
import { nodePlatform } from '../src/platform/node.ts';
import type { Dispatch } from '../src/gpu/step.ts';
import { attentionBackward, attentionBufferBytes, attentionDims, attentionForward, attentionForwardFlops, attentionLanes, attentionStoresProbabilities, type AttentionShape } from '../src/ops/attention.ts';
import { benchMatmul } from './matmul.ts';
import { arg, emit, machine, median } from './util.ts';

const SHAPES: (AttentionShape & { name: string })[] = [
  { name: 'B=4 T=128 C=128 h=4', B: 4, T: 128, C: 128, nHead: 4 },
  { name: 'B=4 T=256 C=768 h=12', B: 4, T: 256, C: 768, nHead: 12 },
  { name: 'B=1 T=1024 C=768 h=12', B: 1, T: 1024, C: 768, nHead: 12 },
];
/** With --all: Qwen2-0.5B's attention (14 query heads on 2 kv heads of 64), Gemma2-2B's (8 on 4 of 256, softcap 50) with and without a 256-key window. */
const MORE_SHAPES: (AttentionShape & { name: string })[] = [
  { name: 'B=1 T=1024 h=14/2 hd=64', B: 1, T: 1024, C: 896, nHead: 14, nKvHead: 2 },
  { name: 'B=1 T=1024 h=8/4 hd=256 cap', B: 1, T: 1024, C: 2304, nHead: 8, nKvHead: 4, headDim: 256, softcap: 50, scale: 256 ** -0.5 },
  { name: 'B=1 T=1024 h=8/4 hd=256 cap w=256', B: 1, T: 1024, C: 2304, nHead: 8, nKvHead: 4, headDim: 256, softcap: 50, scale: 256 ** -0.5, window: 256 },
];

async function time(rt: Runtime, label: string, items: Dispatch[], reps: number): Promise<number> {
  return (await timeInterleaved(rt, [[label, items]], reps))[0]!;
}

/** Median ms of each item list, the lists run in turn within each repetition. */
async function timeInterleaved(rt: Runtime, lists: [string, Dispatch[]][], reps: number): Promise<number[]> {
  for (const [label, items] of lists) await rt.steps.run(`${label} warmup`, items);
  const ts: number[][] = lists.map(() => []);
  for (let r = 0; r < reps; r++) {
    for (const [n, [label, items]] of lists.entries()) {
      const t = await rt.steps.run(label, items, { timestamps: true });
      ts[n]!.push(t.gpuMs ?? t.wallMs);
    }
  }
  return ts.map(median);
}

async function main() {
  const reps = arg('--reps', 5);
  const quick = process.argv.includes('--quick');
  const rt = await Runtime.open(nodePlatform);
  const mem = rt.memory;
  const results = [];
  const all = process.argv.includes('--all');
  for (const s of all ? [...SHAPES, ...MORE_SHAPES] : SHAPES) {
    const { B, T, C, nHead } = s;
    const gpt2 = SHAPES.includes(s);
    const { qkvWidth, outWidth } = attentionDims(s);
    const rnd = (n: number) => new Float32Array(n).map(() => Math.random() * 2 - 1);
    const stores = attentionStoresProbabilities(s);
    const sizes = attentionBufferBytes(s);
    const qkv = mem.upload('bench.qkv', rnd(B * T * qkvWidth));
    const out = mem.storage('bench.out', B * T * outWidth * 4);
    const stats = mem.storage('bench.stats', sizes.statsBytes);
    const dout = mem.upload('bench.dout', rnd(B * T * outWidth));
    const dqkv = mem.storage('bench.dqkv', B * T * qkvWidth * 4);
    const scratch = mem.storage('bench.scratch', sizes.scratchBytes);
    let t0 = performance.now();
    const fwd = await attentionForward(rt, { ...s, qkv, out, stats, save: true });
    const fwdOnly = await attentionForward(rt, { ...s, qkv, out, save: false });
    const bwd = await attentionBackward(rt, { ...s, dout, qkv, stats, out, dqkv, scratch });
    const bwdRecompute = stores ? await attentionBackward(rt, { ...s, dout, qkv, stats, out, dqkv, scratch, storeProbabilities: false }) : bwd;
    const buildMs = performance.now() - t0;
    t0 = performance.now();
    const fwdMs = await time(rt, 'attention forward', fwd, reps);
    const fwdOnlyMs = quick ? NaN : await time(rt, 'attention forward-only', fwdOnly, reps);
    const lists: [string, Dispatch[]][] = [['attention backward_q', [bwd[0]!]], ['attention backward_kv', [bwd[1]!]]];
    if (stores) lists.push(['attention backward_q recompute', [bwdRecompute[0]!]], ['attention backward_kv recompute', [bwdRecompute[1]!]]);
    const [bwdQMs, bwdKvMs, recQMs, recKvMs] = await timeInterleaved(rt, lists, reps) as [number, number, number?, number?];
    for (const b of [qkv, out, stats, dout, dqkv, scratch]) mem.destroy(b);
    const gf = attentionForwardFlops(s) / 1e9;
    // The same layer's matmuls (forward): c_attn, attn c_proj, mlp c_fc, mlp c_proj.
    const M = B * T;
    const mm: Record<string, number> = {};
    if (!quick && gpt2) {
      const mmMs = async (m: number, n: number, k: number) => (await benchMatmul(rt, m, n, k, 'nn', reps))[0]!.ms;
      mm.c_attn = await mmMs(M, 3 * C, C);
      mm.attn_proj = await mmMs(M, C, C);
      mm.c_fc = await mmMs(M, 4 * C, C);
      mm.mlp_proj = await mmMs(M, C, 4 * C);
    }
    const rec = recQMs !== undefined && recKvMs !== undefined ? `  recomputing ${(recQMs + recKvMs).toFixed(1)} ms (q ${recQMs.toFixed(1)} + kv ${recKvMs.toFixed(1)})` : '';
    const line = `${s.name.padEnd(gpt2 ? 24 : 34)} fwd ${fwdMs.toFixed(1)} ms (${(gf / (fwdMs / 1e3)).toFixed(1)} GFLOP/s causal)  fwd-only ${fwdOnlyMs.toFixed(1)}  bwd${stores ? ' stored' : ''} ${(bwdQMs + bwdKvMs).toFixed(1)} ms (q ${bwdQMs.toFixed(1)} + kv ${bwdKvMs.toFixed(1)})${rec}  build ${buildMs.toFixed(0)} ms`;
    process.stderr.write(line + '\n');
    if (!quick && gpt2) process.stderr.write(`${''.padEnd(24)} matmuls: ${Object.entries(mm).map(([k, v]) => `${k} ${v.toFixed(1)}`).join('  ')} ms\n`);
    results.push({ ...s, wg: attentionLanes(rt), reps, forwardMs: fwdMs, forwardOnlyMs: fwdOnlyMs, backwardQMs: bwdQMs, backwardKvMs: bwdKvMs, storesProbabilities: stores, recomputeBackwardQMs: recQMs, recomputeBackwardKvMs: recKvMs, forwardGflops: gf / (fwdMs / 1e3), buildMs, matmulMs: gpt2 && !quick ? mm : undefined, statsBytes: sizes.statsBytes, scratchBytes: sizes.scratchBytes, probsBytesIfStored: 4 * B * nHead * T * T });
  }
  emit({ benchmark: 'attention', date: new Date().toISOString(), machine: machine(rt), timing: rt.gpu.hasTimestamps ? 'gpu' : 'wall', results });
  rt.destroy();
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
