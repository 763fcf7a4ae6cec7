// The trace of one prompt as tensors (what `semfreeze trace` writes as safetensors): every latent
// space, the residual stream before ln_f, and the logits.
import type { Runtime } from '../gpu/runtime.ts';
import type { TensorToWrite } from '../io/safetensors.ts';
import { fitForwardBatch } from '../train/shapes.ts';
import { Gpt2Forward } from '../model/forward.ts';
import type { GpuWeights } from '../model/weights.ts';

/** The metadata a trace file carries about its tensors' convention. */
export const TRACE_CONVENTION = 'hidden_states.N is after ln_f (Hugging Face output_hidden_states); residual.final is before it';

export async function traceTensors(rt: Runtime, weights: GpuWeights, ids: number[]): Promise<TensorToWrite[]> {
  const cfg = weights.cfg;
  const T = ids.length;
  const C = cfg.nEmbd;
  fitForwardBatch(rt, cfg, { B: 1, T, kind: 'logits' }, { batch: 'batch', seq: 'prompt length' });
  const fwd = await Gpt2Forward.build(rt, weights, { B: 1, T, saveFrom: cfg.nLayer, trace: { kind: 'all' }, loss: false, keepLogits: true });
  try {
    fwd.setBatch(ids);
    await fwd.run('trace');
    const tensors: TensorToWrite[] = [];
    // HF's output_hidden_states: spaces 0..N−1 are the raw residual stream, the last is after ln_f.
    for (let k = 0; k < cfg.nLayer; k++) {
      const data = await rt.memory.readFloat32(fwd.trace!, k * fwd.traceSlotElems, T * C);
      tensors.push({ name: `hidden_states.${k}`, dtype: 'F32', shape: [T, C], data });
    }
    tensors.push({ name: `hidden_states.${cfg.nLayer}`, dtype: 'F32', shape: [T, C], data: await rt.memory.readFloat32(fwd.lnf, 0, T * C) });
    tensors.push({ name: 'residual.final', dtype: 'F32', shape: [T, C], data: await rt.memory.readFloat32(fwd.trace!, cfg.nLayer * fwd.traceSlotElems, T * C) });
    tensors.push({ name: 'logits', dtype: 'F32', shape: [T, cfg.vocabSize], data: await rt.memory.readFloat32(fwd.logits, 0, T * cfg.vocabSize) });
    tensors.push({ name: 'input_ids', dtype: 'I32', shape: [T], data: Int32Array.from(ids) });
    return tensors;
  } finally {
    fwd.destroy();
  }
}
