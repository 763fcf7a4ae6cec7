// Loading models of any size strictly: safetensors read by ranges (files over 2 GiB), sharded
// checkpoints (model.safetensors.index.json), and config.json checked against the weights present
// before anything is allocated. In-process (readModelDir), except one CLI run for the one-line error.
import { readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseSafetensors, SafetensorsReader, serializeSafetensors, type RangedFile, type TensorToWrite } from '../src/io/safetensors.ts';
import { ConfigError } from '../src/model/config.ts';
import { hostParams, readModelDir, SHARD_INDEX } from '../src/model/weights.ts';
import { browserPlatform } from '../src/platform/browser.ts';
import { nodePlatform, openFile } from '../src/platform/node.ts';
import { copyModel, removeDir, runCli, splitSafetensors, joinSafetensors, tempDir, userErrorLine } from './util/cli.ts';
import { FIXTURES, fixture } from './util/fixtures.ts';
import { modelDirLogits } from './util/gpu.ts';

const ODD = join(FIXTURES, 'gpt2-odd');
const TINY = join(FIXTURES, 'gpt2-tiny');

/** Bitwise equality of float arrays (vitest's toEqual is far too slow on millions of elements). */
function expectSame(a: Float32Array | undefined, b: Float32Array, what = ''): void {
  expect(a, what).toBeDefined();
  expect(a!.length, what).toBe(b.length);
  const bytes = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  const first = a!.findIndex((v, i) => !Object.is(v, b[i]));
  expect(Buffer.compare(bytes(a!), bytes(b)), `${what}: first difference at ${first}: ${a![first]} vs ${b[first]}`).toBe(0);
}

const concat = (chunks: Uint8Array[]) => {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  chunks.reduce((at, c) => (out.set(c, at), at + c.length), 0);
  return out;
};

const dirs: string[] = [];
const temp = (prefix: string) => {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
};
const model = (fixtureDir: string, prefix: string) => {
  const d = copyModel(fixtureDir, prefix);
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach(removeDir));

/** The error readModelDir (+ hostParams) throws for DIR, as its message. */
async function loadError(dir: string): Promise<string> {
  try {
    await hostParams(await readModelDir(nodePlatform, dir));
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`${dir} loaded without an error`);
}

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
const tinyWeights = () => splitSafetensors(new Uint8Array(readFileSync(join(TINY, 'model.safetensors'))));

describe('files over 2 GiB are read by ranges, never whole', () => {
  const GIB = 2 ** 30;

  /** gpt2-tiny's weights followed by one more F32 tensor of `hugeBytes` zeros: a sparse file, nothing written past the real data. */
  function sparseModel(hugeBytes: number): { dir: string; path: string } {
    const dir = model(TINY, 'huge');
    const path = join(dir, 'model.safetensors');
    const { header, data } = tinyWeights();
    const h = header as Header;
    h['transformer.zz.huge'] = { dtype: 'F32', shape: [hugeBytes / 4], data_offsets: [data.length, data.length + hugeBytes] };
    writeFileSync(path, joinSafetensors(h, data));
    truncateSync(path, readFileSync(path).length + hugeBytes);
    return { dir, path };
  }

  it('a 2.5 GiB file: the header parses and tensors before and after the 2 GiB mark read back', async () => {
    const { path } = sparseModel(2.5 * GIB);
    const reader = await SafetensorsReader.open(path, () => openFile(path));
    const ref = fixture('gpt2-tiny').model;
    expect(reader.tensors.get('transformer.zz.huge')!.byteOffset + 2.5 * GIB).toBeGreaterThan(2.5 * GIB);
    for (const name of ['transformer.wte.weight', 'transformer.ln_f.bias']) {
      expectSame(await reader.readFloat32(name), ref.getFloat32(name), name);
    }
    await reader.close();
  });

  // Was: readFile → "cannot read (File size (…) is greater than 2 GiB)". Now the header is read
  // alone and the extra tensor is what is reported.
  it('readModelDir opens a 2.5 GiB model.safetensors (and names the tensor the config does not describe)', async () => {
    const { dir, path } = sparseModel(2.5 * GIB);
    const message = await loadError(dir);
    expect(message).toContain(path);
    expect(message).toContain("'transformer.zz.huge' is not a parameter");
    expect(message).toContain(join(dir, 'config.json'));
  });
});

describe('SafetensorsReader reads each tensor\'s byte range, converting in chunks', () => {
  /** An in-memory RangedFile that records every read. */
  function recordingFile(bytes: Uint8Array) {
    const reads: [number, number][] = [];
    const file: RangedFile = {
      size: bytes.length,
      async read(position, into) {
        reads.push([position, into.length]);
        into.set(bytes.subarray(position, position + into.length));
      },
      close: async () => {},
    };
    return { file, reads };
  }

  it('F32/F16/BF16/F64 fixtures read exactly as the in-memory parser reads them, into the given array', async () => {
    for (const kind of ['model.safetensors', 'model.f16.safetensors', 'model.bf16.safetensors']) {
      const bytes = new Uint8Array(readFileSync(join(TINY, kind)));
      const mem = parseSafetensors(bytes, kind);
      const { file } = recordingFile(bytes);
      const reader = await SafetensorsReader.open(kind, async () => file);
      for (const name of mem.tensors.keys()) {
        const into = new Float32Array(mem.getFloat32(name).length);
        expect(await reader.readFloat32(name, into)).toBe(into);
        expectSame(into, mem.getFloat32(name), `${kind} ${name}`);
      }
    }
    const f64 = concat(serializeSafetensors([{ name: 'w', dtype: 'F32', shape: [3], data: Float32Array.from([1, 2, 3]) }]));
    const { file } = recordingFile(f64);
    const reader = await SafetensorsReader.open('x', async () => file);
    await expect(reader.readFloat32('w', new Float32Array(2))).rejects.toThrow(/'w' has 3 elements, the destination 2/);
  });

  it('a BF16 tensor over the 16 MiB chunk: chunked reads of its range only, values exact', async () => {
    const n = 9_000_001; // 18 MB of BF16: one full 16 MiB chunk and a partial one
    const bits = new Uint16Array(n);
    for (let i = 0; i < n; i++) bits[i] = (i * 2654435761) >>> 16;
    bits[n - 1] = 0x3f80; // 1.0 at the very end
    const header = { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'BF16', shape: [n], data_offsets: [4, 4 + 2 * n] } };
    const json = new TextEncoder().encode(JSON.stringify(header));
    const head = new Uint8Array(8);
    new DataView(head.buffer).setUint32(0, json.length, true);
    const bytes = concat([head, json, new Uint8Array(Float32Array.from([7]).buffer), new Uint8Array(bits.buffer)]);
    const { file, reads } = recordingFile(bytes);
    const reader = await SafetensorsReader.open('big', async () => file);
    const headerReads = reads.length;
    const values = await reader.readFloat32('b');
    expect(values[n - 1]).toBe(1);
    expectSame(values, parseSafetensors(bytes, 'big').getFloat32('b'), 'b');
    const dataReads = reads.slice(headerReads);
    expect(dataReads.length).toBe(2);
    expect(Math.max(...dataReads.map(([, len]) => len))).toBe(16 << 20);
    expect(dataReads.reduce((s, [, len]) => s + len, 0)).toBe(2 * n);
    expect(dataReads[0]![0]).toBe(8 + json.length + 4);
  });

  it('after close(), a read reopens the file; a file that shrank meanwhile is an error', async () => {
    const bytes = new Uint8Array(readFileSync(join(TINY, 'model.safetensors')));
    let current = bytes;
    const reader = await SafetensorsReader.open('m', async () => recordingFile(current).file);
    await reader.close();
    expect((await reader.readFloat32('transformer.ln_f.bias')).length).toBe(64);
    await reader.close();
    current = bytes.subarray(0, 1000);
    await expect(reader.readFloat32('transformer.ln_f.bias')).rejects.toThrow(/m: is now 1000 bytes, shorter than when it was opened/);
  });

  it('browser openFile: HTTP Range requests, or Blob.slice for files the page holds', async () => {
    const bytes = new Uint8Array(readFileSync(join(TINY, 'model.f16.safetensors')));
    const ranges: string[] = [];
    const realFetch = globalThis.fetch;
    globalThis.fetch = (async (_url: string, init?: { headers?: Record<string, string> }) => {
      const range = init?.headers?.Range ?? '';
      ranges.push(range);
      const [, first, last] = /^bytes=(\d+)-(\d+)$/.exec(range)!.map(Number) as [number, number, number];
      return new Response(bytes.slice(first, last + 1), { status: 206, headers: { 'Content-Range': `bytes ${first}-${last}/${bytes.length}` } });
    }) as typeof fetch;
    try {
      const ref = parseSafetensors(bytes, 'm');
      for (const platform of [browserPlatform(), browserPlatform({ files: new Map([['m', new Blob([bytes])]]) })]) {
        const reader = await SafetensorsReader.open('m', () => platform.openFile('m'));
        expectSame(await reader.readFloat32('transformer.h.0.mlp.c_fc.weight'), ref.getFloat32('transformer.h.0.mlp.c_fc.weight'));
      }
      // Only the Range path fetched: the probe, the prefix, the header and the one tensor.
      expect(ranges.length).toBe(4);
      expect(ranges[0]).toBe('bytes=0-0');
    } finally {
      globalThis.fetch = realFetch;
    }
  });

  it('node openFile: missing file and directory name the path', async () => {
    const d = temp('open');
    await expect(openFile(join(d, 'nope'))).rejects.toThrow(`${join(d, 'nope')}: no such file`);
    await expect(openFile(d)).rejects.toThrow(`${d}: is a directory`);
  });
});

describe('sharded checkpoints (model.safetensors.index.json)', () => {
  /** gpt2-odd's tensors dealt round-robin into `count` shards written by our own writer, plus the index. */
  function shardedOdd(prefix: string, count = 3, editIndex?: (weightMap: Record<string, string>) => void): string {
    const dir = model(ODD, prefix);
    rmSync(join(dir, 'model.safetensors'));
    const src = fixture('gpt2-odd').model;
    const names = [...src.tensors.keys()].sort();
    const files = Array.from({ length: count }, (_, i) => `model-0000${i + 1}-of-0000${count}.safetensors`);
    const shards: TensorToWrite[][] = files.map(() => []);
    const weightMap: Record<string, string> = {};
    names.forEach((name, i) => {
      shards[i % count]!.push({ name, dtype: 'F32', shape: src.tensors.get(name)!.shape, data: src.getFloat32(name) });
      weightMap[name] = files[i % count]!;
    });
    files.forEach((f, i) => writeFileSync(join(dir, f), concat(serializeSafetensors(shards[i]!, { format: 'pt' }))));
    editIndex?.(weightMap);
    writeFileSync(join(dir, SHARD_INDEX), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
    return dir;
  }

  it('3 shards give the same parameters and the same logits as the single file', async () => {
    const dir = shardedOdd('sharded');
    const files = await readModelDir(nodePlatform, dir);
    expect(files.weights.source).toBe(join(dir, SHARD_INDEX));
    expect(files.weights.fileOf('transformer.wte.weight')).toMatch(/model-0000\d-of-00003\.safetensors$/);
    const sharded = await hostParams(files);
    const single = await hostParams(await readModelDir(nodePlatform, ODD));
    expect([...sharded.keys()]).toEqual([...single.keys()]);
    for (const [name, values] of single) expectSame(sharded.get(name), values, name);
    const [a, b] = [await modelDirLogits(dir, fixture('gpt2-odd')), await modelDirLogits(ODD, fixture('gpt2-odd'))];
    expectSame(a, b, 'logits');
  });

  it('a shard the index names is missing: the index and the shard are named', async () => {
    const dir = shardedOdd('shard-missing');
    rmSync(join(dir, 'model-00002-of-00003.safetensors'));
    const message = await loadError(dir);
    expect(message).toContain(join(dir, SHARD_INDEX));
    expect(message).toContain(`weight_map names model-00002-of-00003.safetensors: ${join(dir, 'model-00002-of-00003.safetensors')}: no such file`);
  });

  it('a tensor the index lists that no shard holds', async () => {
    const dir = shardedOdd('shard-ghost', 3, (m) => { m['transformer.h.9.ln_1.weight'] = 'model-00001-of-00003.safetensors'; });
    const message = await loadError(dir);
    expect(message).toContain(join(dir, SHARD_INDEX));
    expect(message).toContain("weight_map puts tensor 'transformer.h.9.ln_1.weight' in model-00001-of-00003.safetensors, but no shard holds it");
  });

  it('a tensor in two shards names both', async () => {
    const dir = shardedOdd('shard-twice', 2);
    const [one, two] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'].map((f) => join(dir, f));
    // Give shard 2 a copy of one of shard 1's tensors.
    const s1 = parseSafetensors(new Uint8Array(readFileSync(one!)), one!);
    const s2 = parseSafetensors(new Uint8Array(readFileSync(two!)), two!);
    const moved = [...s1.tensors.keys()][0]!;
    const all = [...s2.tensors.keys(), moved].map((name) => {
      const src = name === moved ? s1 : s2;
      return { name, dtype: 'F32' as const, shape: src.tensors.get(name)!.shape, data: src.getFloat32(name) };
    });
    writeFileSync(two!, concat(serializeSafetensors(all)));
    const message = await loadError(dir);
    expect(message).toContain(join(dir, SHARD_INDEX));
    expect(message).toContain(`tensor '${moved}' is in two shards`);
    expect(message).toContain(one!);
    expect(message).toContain(two!);
  });

  it('the index and a shard disagree on where a tensor is; a shard tensor the index does not list', async () => {
    const misplaced = shardedOdd('shard-misplaced', 3, (m) => { m['transformer.wpe.weight'] = m['transformer.wpe.weight'] === 'model-00001-of-00003.safetensors' ? 'model-00002-of-00003.safetensors' : 'model-00001-of-00003.safetensors'; });
    expect(await loadError(misplaced)).toMatch(/weight_map puts tensor 'transformer\.wpe\.weight' in model-0000\d-of-00003\.safetensors, but it is in .*model-0000\d-of-00003\.safetensors/);
    const unlisted = shardedOdd('shard-unlisted', 3, (m) => { delete m['transformer.ln_f.bias']; });
    expect(await loadError(unlisted)).toMatch(/model-0000\d-of-00003\.safetensors holds tensor 'transformer\.ln_f\.bias', which weight_map does not list/);
  });

  it('a malformed index: not JSON, no weight_map, a path outside the model directory', async () => {
    const dir = shardedOdd('shard-index');
    const index = join(dir, SHARD_INDEX);
    writeFileSync(index, '{"weight_map": ');
    expect(await loadError(dir)).toMatch(new RegExp(`^${index}: not valid JSON`));
    writeFileSync(index, '{"metadata": {}}');
    expect(await loadError(dir)).toContain(`${index}: expected {"weight_map"`);
    writeFileSync(index, JSON.stringify({ weight_map: { 'transformer.wte.weight': '../model.safetensors' } }));
    expect(await loadError(dir)).toContain(`${index}: weight_map entry 'transformer.wte.weight' names "../model.safetensors", not a file name in the model directory`);
  });

  it('neither model.safetensors nor an index: the error says both', async () => {
    const dir = model(TINY, 'no-weights');
    rmSync(join(dir, 'model.safetensors'));
    expect(await loadError(dir)).toBe(`${join(dir, 'model.safetensors')}: no such file (nor is there a ${SHARD_INDEX} for a sharded checkpoint)`);
  });
});

describe('config.json must describe the weights present', () => {
  const editConfig = (dir: string, edit: Record<string, unknown>) => {
    const path = join(dir, 'config.json');
    writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), ...edit }));
  };
  const editWeights = (dir: string, edit: (h: Header, data: Uint8Array) => Uint8Array) => {
    const path = join(dir, 'model.safetensors');
    const { header, data } = splitSafetensors(new Uint8Array(readFileSync(path)));
    const newData = edit(header as Header, data);
    writeFileSync(path, joinSafetensors(header, newData));
  };
  /** Append a tensor of `shape` (zeros) to the data section. */
  const appendTensor = (name: string, shape: number[]) => (h: Header, data: Uint8Array) => {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    h[name] = { dtype: 'F32', shape, data_offsets: [data.length, data.length + bytes] };
    const out = new Uint8Array(data.length + bytes);
    out.set(data);
    return out;
  };

  // Was: n_layer 1 silently loaded the first block of a 2-block model.
  it('n_layer 1 over 2-block weights names the config value and the weights file', async () => {
    const dir = model(TINY, 'n-layer-1');
    editConfig(dir, { n_layer: 1 });
    const message = await loadError(dir);
    expect(message).toBe(`${join(dir, 'model.safetensors')}: has 2 blocks (h.0..h.1) (e.g. 'transformer.h.1.attn.c_attn.bias') but ${join(dir, 'config.json')} says n_layer 1`);
  });

  it('n_layer 3 over 2-block weights', async () => {
    const dir = model(TINY, 'n-layer-3');
    editConfig(dir, { n_layer: 3 });
    expect(await loadError(dir)).toBe(`${join(dir, 'model.safetensors')}: has 2 blocks (h.0..h.1) but ${join(dir, 'config.json')} says n_layer 3 (no 'h.2.ln_1.weight')`);
  });

  it('extra tensors: a third block, an unknown tensor, an LM head the tied config would ignore', async () => {
    const third = model(TINY, 'extra-block');
    editWeights(third, appendTensor('transformer.h.2.ln_1.weight', [64]));
    expect(await loadError(third)).toContain("has 3 blocks (h.0..h.2) (e.g. 'transformer.h.2.ln_1.weight') but");
    const unknown = model(TINY, 'extra-unknown');
    editWeights(unknown, appendTensor('transformer.score.weight', [2, 64]));
    expect(await loadError(unknown)).toBe(`${join(unknown, 'model.safetensors')}: tensor 'transformer.score.weight' is not a parameter of the GPT-2 that ${join(unknown, 'config.json')} describes (n_layer 2); semfreeze will not ignore weights silently`);
    const head = model(TINY, 'extra-head');
    editWeights(head, appendTensor('lm_head.weight', [512, 64]));
    expect(await loadError(head)).toContain(`has 'lm_head.weight' but ${join(head, 'config.json')} ties the LM head to wte.weight (tie_word_embeddings true)`);
  });

  it('the same parameter with and without the transformer. prefix', async () => {
    const dir = model(TINY, 'twins');
    editWeights(dir, appendTensor('ln_f.bias', [64]));
    expect(await loadError(dir)).toContain("holds both 'transformer.ln_f.bias' and 'ln_f.bias'");
  });

  it('causal-mask buffers older transformers saved (h.N.attn.bias, masked_bias) are accepted', async () => {
    const dir = model(TINY, 'mask-buffers');
    editWeights(dir, (h, data) => appendTensor('transformer.h.1.attn.masked_bias', [1])(h, appendTensor('transformer.h.0.attn.bias', [1, 1, 4, 4])(h, data)));
    const params = await hostParams(await readModelDir(nodePlatform, dir));
    expectSame(params.get('wte.weight'), fixture('gpt2-tiny').model.getFloat32('transformer.wte.weight'));
  });

  const beyond = (key: string, value: number, limit: number) => `'${key}' ${value} is beyond any GPT-2-style model (at most ${limit}); a corrupt config?`;
  it.each([
    ['n_layer', 1e9, beyond('n_layer', 1e9, 4096)],
    ['n_embd', 0, "'n_embd' must be a positive integer, got 0"],
    ['vocab_size', 2 ** 40, beyond('vocab_size', 2 ** 40, 2 ** 24)],
    ['n_positions', 2 ** 31, beyond('n_positions', 2 ** 31, 2 ** 20)],
    ['n_inner', 1e8, beyond('n_inner', 1e8, 2 ** 20)],
    ['n_head', 5, 'n_embd 64 is not divisible by n_head 5'],
  ])('absurd %s = %s is a one-line config error before any allocation', async (key, value, problem) => {
    const dir = model(TINY, `absurd-${key}`);
    editConfig(dir, { [key]: value });
    const error = await readModelDir(nodePlatform, dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe(`${join(dir, 'config.json')}: ${problem}`);
  });

  it('the CLI prints one line for config/weights disagreement', async () => {
    const dir = model(TINY, 'cli-n-layer');
    editConfig(dir, { n_layer: 1 });
    const line = userErrorLine(await runCli(['trace', '--model', dir, '--tokens', '1,2', '--out', join(temp('cli-out'), 't.safetensors')]));
    expect(line).toContain(join(dir, 'config.json'));
    expect(line).toContain(join(dir, 'model.safetensors'));
    expect(line).toContain('n_layer 1');
  });
});
