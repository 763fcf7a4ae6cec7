// The boundary activation cache (issue 12): after the first epoch a step runs only blocks K..N−1.
// With f32 states the losses and weights are bit-identical to the uncached run; f16 states stay close.
// The fill happens once per window (prefix forwards only in the first epoch).
import { describe, expect, it } from 'vitest';
import { windows } from '../src/data/tokens.ts';
import { GpuWeights, hostParams } from '../src/model/weights.ts';
import { boundaryCacheBytes, MemoryBoundaryStore } from '../src/train/boundary.ts';
import { FINETUNE_DEFAULTS, FinetuneRun } from '../src/train/finetune.ts';
import { float32ToHalfBits, halfToFloat32 } from '../src/util/f16.ts';
import { fixture } from './util/fixtures.ts';
import { runtime } from './util/gpu.ts';
import { mulberry32 } from './reference/ops.ts';

async function run(name: string, K: number, store: MemoryBoundaryStore | undefined, steps: number) {
  const rt = await runtime();
  const f = fixture(name);
  const T = 16;
  const rnd = mulberry32(11);
  const ids = Int32Array.from({ length: 10 * T + 1 }, () => Math.floor(rnd() * f.config.vocabSize));
  const model = { files: { config: f.config } as never, weights: GpuWeights.upload(rt, f.config, await hostParams({ config: f.config, weights: f.model })), seconds: 0 };
  const win = windows(ids, T, 'ids');
  const r = await FinetuneRun.build(rt, model, win, null, { ...FINETUNE_DEFAULTS, freeze: K, steps, seq: T, batch: 4, lr: 1e-3, logEvery: 1 }, { boundaryStore: store });
  const log = await r.run();
  const params = await model.weights.download(rt);
  model.weights.destroy(rt);
  return { losses: log.map((e) => e.loss!), params, fills: (r.trainer.boundary?.fills ?? 0), windows: win.count };
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

describe('boundary activation cache', () => {
  it.each([
    ['gpt2-odd', 2],
    ['llama-gqa', 1],
    ['gemma2-softcap', 2],
  ] as const)('%s at K=%i: f32 cache gives bit-identical losses and weights over 3 epochs; prefix runs only in the first', async (name, K) => {
    const steps = 8; // 9 windows, batches of 4: epochs of 2¼ steps
    const plain = await run(name, K, undefined, steps);
    const store = new MemoryBoundaryStore('f32');
    const cached = await run(name, K, store, steps);
    expect(cached.losses).toEqual(plain.losses);
    for (const [n, v] of plain.params) expect(bits(cached.params.get(n)!), n).toEqual(bits(v));
    expect(cached.windows).toBe(9);
    expect(store.size).toBe(9);
    // The prefix runs only for batches holding a window not stored yet: the first epoch's 3 batches,
    // and at most one more (a batch straddling epochs takes windows of the next epoch's order).
    expect(cached.fills).toBeLessThanOrEqual(4);
    expect(cached.fills).toBeGreaterThanOrEqual(3);

    const half = await run(name, K, new MemoryBoundaryStore('f16'), steps);
    for (let i = 0; i < steps; i++) expect(Math.abs(half.losses[i]! - plain.losses[i]!) / plain.losses[i]!, `f16 step ${i}`).toBeLessThan(1e-2);
  });

  it('cache size is windows × T × C × (4 or 2) bytes', () => {
    expect(boundaryCacheBytes(1000, 128, 768, 'f32')).toBe(1000 * 128 * 768 * 4);
    expect(boundaryCacheBytes(1000, 128, 768, 'f16')).toBe(1000 * 128 * 768 * 2);
  });

  it('float32 → half rounds to nearest even, like the hardware (checked on every half through the table)', () => {
    const out = new Float32Array(1);
    for (let h = 0; h < 65536; h++) {
      halfToFloat32(Uint16Array.of(h), out);
      if (Number.isNaN(out[0])) continue;
      expect(float32ToHalfBits(out[0]!), `half ${h.toString(16)}`).toBe(h === 0x8000 ? 0x8000 : h);
    }
    // Midpoints round to even; beyond the largest half is Infinity; tiny values flush to signed zero.
    expect(float32ToHalfBits(1 + 2 ** -11)).toBe(0x3c00);
    expect(float32ToHalfBits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(float32ToHalfBits(70000)).toBe(0x7c00);
    expect(float32ToHalfBits(-1e-10)).toBe(0x8000);
    expect(float32ToHalfBits(2 ** -24)).toBe(1);
    expect(float32ToHalfBits(3 * 2 ** -25)).toBe(2);
  });
});

describe('finetune --cache-boundary (CLI)', () => {
  it('disk and memory, f32: the saved model is byte-identical to the uncached run; the cache file is removed', async () => {
    const { mkdtempSync, readFileSync, readdirSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { finetuneCommand } = await import('../src/cli/finetune.ts');
    const dir = mkdtempSync(join(tmpdir(), 'semfreeze-cache-cli-'));
    const data = join(dir, 'ids.json');
    const rnd = mulberry32(5);
    writeFileSync(data, JSON.stringify(Array.from({ length: 6 * 17 }, () => Math.floor(rnd() * 1000))));
    const base = { ...FINETUNE_DEFAULTS, model: 'test/fixtures/gpt2-odd', data, seq: 16, batch: 2, steps: 9, lr: 1e-3, freeze: '2' };
    await finetuneCommand({ ...base, out: join(dir, 'plain') });
    await finetuneCommand({ ...base, out: join(dir, 'disk'), cacheBoundary: 'disk' });
    await finetuneCommand({ ...base, out: join(dir, 'mem'), cacheBoundary: 'memory' });
    const plain = readFileSync(join(dir, 'plain', 'model.safetensors'));
    expect(readFileSync(join(dir, 'disk', 'model.safetensors')).equals(plain)).toBe(true);
    expect(readFileSync(join(dir, 'mem', 'model.safetensors')).equals(plain)).toBe(true);
    expect(readdirSync(join(dir, 'disk')).filter((f) => f.includes('boundary'))).toEqual([]);
    await expect(finetuneCommand({ ...base, freeze: 'none', out: join(dir, 'none'), cacheBoundary: 'memory' })).rejects.toThrow(/--cache-boundary needs a freeze boundary/);
    await expect(finetuneCommand({ ...base, out: join(dir, 'bad'), cacheBoundary: 'cloud' })).rejects.toThrow(/--cache-boundary must be memory or disk/);
  });
});
