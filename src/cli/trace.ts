// `semfreeze trace`: run the forward once and write every latent space and the logits.
import { serializeSafetensors, type TensorToWrite } from '../io/safetensors.ts';
import { Gpt2Forward } from '../model/forward.ts';
import { writeFileAtomic } from '../platform/node.ts';
import { loadModel, promptIds } from './model.ts';
import { progress } from './common.ts';
import { fitForwardBatch } from './shapes.ts';
import { assertNotInput, assertWritableFile } from './paths.ts';

export async function traceCommand(o: { model: string; tokens?: string; text?: string; out: string }): Promise<void> {
  assertNotInput('--out', o.out, [{ flag: '--model', path: o.model, dir: true }], 'file');
  await assertWritableFile('--out', o.out);
  const { rt, files, weights } = await loadModel(o.model);
  const ids = promptIds(o, files);
  const cfg = files.config;
  const T = ids.length;
  const C = cfg.nEmbd;
  fitForwardBatch(rt, cfg, { B: 1, T, kind: 'logits' }, { batch: 'batch', seq: 'prompt length' });
  const fwd = await Gpt2Forward.build(rt, weights, { B: 1, T, saveFrom: cfg.nLayer, trace: { kind: 'all' }, loss: false, keepLogits: true });
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
  await writeFileAtomic(o.out, serializeSafetensors(tensors, { model: o.model, format: 'semfreeze-trace', convention: 'hidden_states.N is after ln_f (Hugging Face output_hidden_states); residual.final is before it' }));
  progress(`wrote ${o.out}: hidden_states.0..${cfg.nLayer} [${T}, ${C}], residual.final, logits [${T}, ${cfg.vocabSize}]`);
}
