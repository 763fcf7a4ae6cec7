// Reading the Hugging Face fixtures (test/fixtures/<name>/) produced by make_fixtures.py.
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSafetensors, type SafetensorsFile } from '../../src/io/safetensors.ts';
import { parseConfig, type ModelConfig } from '../../src/model/config.ts';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
export const FIXTURE_MODELS = ['gpt2-tiny', 'gpt2-odd', 'gpt2-deep'] as const;

export interface Fixture {
  name: string;
  dir: string;
  config: ModelConfig;
  model: SafetensorsFile;
  ref: SafetensorsFile;
  B: number;
  T: number;
  inputIds: Int32Array;
  targets: Int32Array;
}

const cache = new Map<string, Fixture>();

export function fixture(name: string): Fixture {
  const hit = cache.get(name);
  if (hit) return hit;
  const dir = join(FIXTURES, name);
  const read = (f: string) => new Uint8Array(readFileSync(join(dir, f)));
  const config = parseConfig(readFileSync(join(dir, 'config.json'), 'utf8'), join(dir, 'config.json'));
  const model = parseSafetensors(read('model.safetensors'), `${name}/model.safetensors`);
  const ref = parseSafetensors(read('reference.safetensors'), `${name}/reference.safetensors`);
  const shape = ref.tensors.get('input_ids')!.shape;
  const f: Fixture = { name, dir, config, model, ref, B: shape[0]!, T: shape[1]!, inputIds: ref.getInt32('input_ids'), targets: ref.getInt32('targets') };
  cache.set(name, f);
  return f;
}
