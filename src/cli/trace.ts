// `semfreeze trace`: run the forward once and write every latent space and the logits (src/analysis/trace.ts).
import { serializeSafetensors } from '../io/safetensors.ts';
import { TRACE_CONVENTION, traceTensors } from '../analysis/trace.ts';
import { writeFileAtomic } from '../platform/node.ts';
import { loadModel, promptIds } from './model.ts';
import { progress } from './common.ts';
import { assertNotInput, assertWritableFile } from './paths.ts';

export async function traceCommand(o: { model: string; tokens?: string; text?: string; out: string }): Promise<void> {
  assertNotInput('--out', o.out, [{ flag: '--model', path: o.model, dir: true }], 'file');
  await assertWritableFile('--out', o.out);
  const { rt, files, weights } = await loadModel(o.model);
  const ids = promptIds(o, files);
  const cfg = files.config;
  const tensors = await traceTensors(rt, weights, ids);
  await writeFileAtomic(o.out, serializeSafetensors(tensors, { model: o.model, format: 'semfreeze-trace', convention: TRACE_CONVENTION }));
  progress(`wrote ${o.out}: hidden_states.0..${cfg.nLayer} [${ids.length}, ${cfg.nEmbd}], residual.final, logits [${ids.length}, ${cfg.vocabSize}]`);
}
