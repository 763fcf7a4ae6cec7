// The hardware-GPU matmul path end to end: a runtime opened with `matmul: 'tiled'` (the path `auto`
// starts from on hardware GPUs) runs every product through the tiled kernel, and the whole model
// still matches transformers + torch autograd at full fine-tuning: GPT-2 (odd sizes, the head in
// vocabulary chunks) and the Llama, Qwen2 and Gemma2 fixtures.
import { describe, expect, it } from 'vitest';
import { Runtime } from '../src/gpu/runtime.ts';
import { matmulPathFor } from '../src/ops/matmul.ts';
import { hfName, isTrainable } from '../src/model/params.ts';
import { nodePlatform } from '../src/platform/node.ts';
import { fixture } from './util/fixtures.ts';
import { buildGraph, gradients } from './util/train.ts';
import { relError, runtime } from './util/gpu.ts';

let tiled: Promise<Runtime> | null = null;
const tiledRuntime = () => (tiled ??= Runtime.open(nodePlatform, { matmul: 'tiled' }));

describe('matmul path by adapter', () => {
  it('software adapters take the transposes into tn; the option overrides the choice', async () => {
    const rt = await runtime();
    expect(rt.gpu.info.isSoftware).toBe(true);
    expect(await matmulPathFor(rt)).toBe('transpose');
    expect(await matmulPathFor(await tiledRuntime())).toBe('tiled');
  });
});

describe.each(['gpt2-odd', 'llama-gqa', 'qwen2-bias', 'gemma2-softcap'])('%s on the tiled matmul path', (name) => {
  it('loss and the gradient of every tensor at --freeze none match torch autograd (1e-3)', async () => {
    const f = fixture(name);
    const rt = await tiledRuntime();
    const { weights, graph } = await buildGraph(rt, f, null, undefined, name.startsWith('gpt2') ? 64 : undefined);
    // Every product of the graph is the tiled kernel: no transposes are dispatched.
    const labels = [...graph.zeroItems, ...graph.microItems[0]!].flatMap((d) => ('bound' in d ? [d.bound.kernel.key] : []));
    expect(labels.some((k) => k.startsWith('matmul:tiled')), 'tiled matmuls').toBe(true);
    expect(labels.filter((k) => k.startsWith('transpose:') || k.startsWith('matmul:tn')), 'transposes / tn').toEqual([]);
    const loss = await gradients(graph);
    expect(Math.abs(loss - f.ref.getFloat32('loss')[0]!) / f.ref.getFloat32('loss')[0]!).toBeLessThan(1e-4);
    for (const spec of weights.specs.filter((s) => isTrainable(s, null))) {
      const got = await rt.memory.readFloat32(graph.grads.get(spec.name)!, 0, spec.numel);
      expect(relError(got, f.ref.getFloat32(`grad.${hfName(spec.name, f.config)}`)), spec.name).toBeLessThan(1e-3);
    }
    weights.destroy(rt);
  });
});
