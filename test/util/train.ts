// Training a fixture's fixed batch through the TrainingGraph (shared by the GPT-2 and family tests).
import type { Runtime } from '../../src/gpu/runtime.ts';
import { GpuWeights, hostParams } from '../../src/model/weights.ts';
import { TrainingGraph } from '../../src/train/graph.ts';
import type { OptimizerOptions } from '../../src/train/optimizer.ts';
import type { Fixture } from './fixtures.ts';

/** The fixture's weights on the GPU and a graph at `freeze` with its batch uploaded. */
export async function buildGraph(rt: Runtime, f: Fixture, freeze: number | null, optim: OptimizerOptions = { kind: 'adamw', weightDecay: 0.1 }, headChunkRows?: number) {
  const weights = GpuWeights.upload(rt, f.config, await hostParams({ config: f.config, weights: f.model }));
  const headChunkBytes = headChunkRows ? headChunkRows * f.config.nEmbd * 4 : undefined;
  const graph = await TrainingGraph.build(rt, weights, { B: f.B, T: f.T, freeze, accum: 1, headChunkBytes }, optim);
  graph.setBatch(f.inputIds, f.targets);
  return { weights, graph };
}

/** One forward + backward (no update); returns the loss. */
export async function gradients(graph: TrainingGraph): Promise<number> {
  const rt = graph.rt;
  await rt.steps.run('grad', [...graph.zeroItems, ...graph.microItems[0]!]);
  return (await rt.memory.readFloat32(graph.stepLosses, 0, 1))[0]!;
}

/** n optimizer steps on the fixture's fixed batch at a constant learning rate; the loss before each. */
export async function trainSteps(graph: TrainingGraph, n: number, lr: number, maxGradNorm = 0): Promise<number[]> {
  const rt = graph.rt;
  const losses: number[] = [];
  for (let t = 1; t <= n; t++) {
    graph.optimizer.setStep(t, lr, { accumulation: 1, maxGradNorm });
    await rt.steps.run('step', [...graph.zeroItems, ...graph.microItems[0]!, ...graph.updateItems]);
    losses.push((await rt.memory.readFloat32(graph.stepLosses, 0, 1))[0]!);
  }
  return losses;
}
