// The whole GPT-2 forward against Hugging Face transformers (fixtures from test/fixtures/make_fixtures.py):
// logits, every hidden state and the loss within 1e-4 relative.
import { describe, expect, it } from 'vitest';
import { Gpt2Forward } from '../src/model/forward.ts';
import { GpuWeights, hostParams } from '../src/model/weights.ts';
import { FIXTURE_MODELS, fixture } from './util/fixtures.ts';
import { relError, runtime } from './util/gpu.ts';

describe.each(FIXTURE_MODELS)('GPT-2 forward matches transformers: %s', (name) => {
  // The default runs the head in one vocabulary chunk for these models; 64-row chunks exercise the
  // chunked path GPT-2's 50257-token head takes (the last chunk partial).
  it.each([undefined, 64])('logits, hidden states (trace) and loss, head chunk rows %s', async (chunkRows) => {
    const rt = await runtime();
    const f = fixture(name);
    const cfg = f.config;
    const weights = GpuWeights.upload(rt, cfg, await hostParams({ config: cfg, weights: f.model }));
    const headChunkBytes = chunkRows ? chunkRows * cfg.nEmbd * 4 : undefined;
    const fwd = await Gpt2Forward.build(rt, weights, { B: f.B, T: f.T, saveFrom: cfg.nLayer, trace: { kind: 'all' }, loss: true, keepLogits: true, headChunkBytes });
    if (chunkRows) expect(fwd.headRows).toBe(chunkRows);
    fwd.setBatch(f.inputIds, f.targets);
    await fwd.run();
    const rows = f.B * f.T;
    const C = cfg.nEmbd;
    const logits = await rt.memory.readFloat32(fwd.logits, 0, rows * cfg.vocabSize);
    expect(relError(logits, f.ref.getFloat32('logits')), 'logits').toBeLessThan(1e-4);
    for (let k = 0; k < cfg.nLayer; k++) {
      const h = await rt.memory.readFloat32(fwd.trace!, k * fwd.traceSlotElems, rows * C);
      expect(relError(h, f.ref.getFloat32(`hidden_states.${k}`)), `hidden_states.${k}`).toBeLessThan(1e-4);
    }
    const last = await rt.memory.readFloat32(fwd.trace!, cfg.nLayer * fwd.traceSlotElems, rows * C);
    expect(relError(last, f.ref.getFloat32(`residual.${cfg.nLayer}`)), 'residual before ln_f').toBeLessThan(1e-4);
    const lnf = await rt.memory.readFloat32(fwd.lnf, 0, rows * C);
    expect(relError(lnf, f.ref.getFloat32(`hidden_states.${cfg.nLayer}`)), `hidden_states.${cfg.nLayer} (after ln_f)`).toBeLessThan(1e-4);
    const loss = await fwd.readLoss();
    const refLoss = f.ref.getFloat32('loss')[0]!;
    expect(Math.abs(loss - refLoss) / refLoss, `loss ${loss} vs ${refLoss}`).toBeLessThan(1e-4);
  });
});
