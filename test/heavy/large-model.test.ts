// A whole model over 2 GiB loads (readFile fails above 2 GiB): gpt2-tiny with its vocabulary grown
// to 8.8M rows, so the token embedding alone is 2.25 GB. The file is sparse (the new rows are a
// hole of zeros), so it costs no disk writes; loading it reads and holds ~2.2 GB of float32 once.
import { closeSync, openSync, readFileSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { hostParams, readModelDir } from '../../src/model/weights.ts';
import { nodePlatform } from '../../src/platform/node.ts';
import { copyModel, removeDir, splitSafetensors, joinSafetensors } from '../util/cli.ts';
import { FIXTURES, fixture } from '../util/fixtures.ts';

const TINY = join(FIXTURES, 'gpt2-tiny');
const VOCAB = 8_800_000;
const C = 64;
const dirs: string[] = [];
afterAll(() => dirs.forEach(removeDir));

it(`a ${((VOCAB * C * 4) / 2 ** 30).toFixed(2)} GiB embedding in a > 2 GiB model.safetensors loads, values intact`, async () => {
  const dir = copyModel(TINY, 'large-model');
  dirs.push(dir);
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ ...JSON.parse(readFileSync(config, 'utf8')), vocab_size: VOCAB }));

  // Every other tensor first (bytes copied), the grown wte last: its first 512 rows are tiny's.
  const { header, data } = splitSafetensors(new Uint8Array(readFileSync(join(TINY, 'model.safetensors'))));
  const h = header as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const wte = h['transformer.wte.weight']!;
  const parts: [Uint8Array, number][] = [];
  let at = 0;
  for (const [name, t] of Object.entries(h)) {
    if (name === '__metadata__' || name === 'transformer.wte.weight') continue;
    const bytes = data.subarray(t.data_offsets[0], t.data_offsets[1]);
    t.data_offsets = [at, at + bytes.length];
    parts.push([bytes, at]);
    at += bytes.length;
  }
  const oldWte = data.subarray(wte.data_offsets[0], wte.data_offsets[1]);
  const wteBytes = VOCAB * C * 4;
  h['transformer.wte.weight'] = { dtype: 'F32', shape: [VOCAB, C], data_offsets: [at, at + wteBytes] };
  parts.push([oldWte, at]);
  const head = joinSafetensors(h, new Uint8Array(0));
  const path = join(dir, 'model.safetensors');
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, head, 0, head.length, 0);
    for (const [bytes, offset] of parts) writeSync(fd, bytes, 0, bytes.length, head.length + offset);
    ftruncateSync(fd, head.length + at + wteBytes);
  } finally {
    closeSync(fd);
  }

  const params = await hostParams(await readModelDir(nodePlatform, dir));
  const ref = fixture('gpt2-tiny').model;
  const big = params.get('wte.weight')!;
  expect(big.length).toBe(VOCAB * C);
  expect(big.subarray(0, 512 * C)).toEqual(ref.getFloat32('transformer.wte.weight'));
  const bits = new Uint32Array(big.buffer, big.byteOffset + 512 * C * 4);
  expect(bits.findIndex((v) => v !== 0)).toBe(-1);
  expect(params.get('h.1.mlp.c_proj.weight')).toEqual(ref.getFloat32('transformer.h.1.mlp.c_proj.weight'));
  expect(params.get('ln_f.bias')).toEqual(ref.getFloat32('transformer.ln_f.bias'));
});
