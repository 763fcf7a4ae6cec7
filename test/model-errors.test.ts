// Bad input gets one clear error line naming the file and the problem, exit code 1, no stack trace:
// the CLI (`eval`, `trace`, `generate`, `finetune`) on temp copies of gpt2-tiny that we corrupt.
// Also: F16 and BF16 checkpoints load and give logits close to the F32 model's (in-process).
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readModelDir } from '../src/model/weights.ts';
import { nodePlatform } from '../src/platform/node.ts';
import { copyModel, describeRun, editSafetensors, joinSafetensors, removeDir, runCli, splitSafetensors, stdoutJson, tempDir, userErrorLine } from './util/cli.ts';
import { FIXTURES, FIXTURE_MODELS, fixture } from './util/fixtures.ts';
import { modelDirLogits, relError } from './util/gpu.ts';

const TINY = join(FIXTURES, 'gpt2-tiny');
// gpt2-tiny: n_layer 2, n_embd 64, vocab 512, n_positions 64.
const V = 512;
const NPOS = 64;

const dirs: string[] = [];
const model = (prefix: string, opts: { tokenizer?: boolean } = {}) => {
  const d = copyModel(TINY, prefix, opts);
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach(removeDir));

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
/** Edit the header of DIR/model.safetensors (data section unchanged). */
const editHeader = (dir: string, edit: (h: Header) => void) =>
  editSafetensors(dir, (bytes) => {
    const { header, data } = splitSafetensors(bytes);
    edit(header as Header);
    return joinSafetensors(header, data);
  });

/** The CLI on a model directory; returns the one error line (after checking exit code, one line, no stack). */
async function traceError(dir: string, tokens = '1,2,3'): Promise<string> {
  return userErrorLine(await runCli(['trace', '--model', dir, '--tokens', tokens, '--out', join(dir, 'trace.safetensors')]));
}

// Every case spawns one short CLI process; they run concurrently to keep the file fast.
describe.concurrent('one clear error for a bad model directory', () => {
  it('a missing tensor is named', async () => {
    const d = model('missing-tensor');
    // Drop the tensor and its bytes (a gap left in the data section is an error of its own).
    editSafetensors(d, (bytes) => {
      const { header, data } = splitSafetensors(bytes);
      const h = header as Header;
      const [begin, end] = h['transformer.h.1.mlp.c_fc.bias']!.data_offsets;
      delete h['transformer.h.1.mlp.c_fc.bias'];
      for (const t of Object.values(h)) if (t.data_offsets && t.data_offsets[0] >= end) t.data_offsets = [t.data_offsets[0] - (end - begin), t.data_offsets[1] - (end - begin)];
      return joinSafetensors(h, Buffer.concat([data.subarray(0, begin), data.subarray(end)]));
    });
    const line = await traceError(d);
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toMatch(/missing tensor 'h\.1\.mlp\.c_fc\.bias'/);
  });

  it('a tensor with the wrong shape is named with both shapes', async () => {
    const d = model('wrong-shape');
    // Same byte count, so only the shape check can catch it.
    editHeader(d, (h) => { h['transformer.h.0.attn.c_proj.bias']!.shape = [2, 32]; });
    const line = await traceError(d);
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toContain('h.0.attn.c_proj.bias');
    expect(line).toContain('[2, 32]');
    expect(line).toContain('[64]');
  });

  it('a truncated model.safetensors', async () => {
    const d = model('truncated');
    editSafetensors(d, (b) => b.subarray(0, Math.floor(b.length * 0.6)));
    const line = await userErrorLine(await runCli(['eval', '--model', d, '--data', join(d, 'train.txt'), '--seq', '8', '--max-windows', '1']));
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toMatch(/outside the data section|truncated/);
  });

  it('a file shorter than the 8-byte length prefix', async () => {
    const d = model('tiny-file');
    editSafetensors(d, (b) => b.subarray(0, 5));
    const line = await traceError(d);
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toMatch(/5 bytes/);
  });

  it('a header length beyond the file', async () => {
    const d = model('header-length');
    editSafetensors(d, (b) => {
      const out = b.slice();
      new DataView(out.buffer).setBigUint64(0, BigInt(b.length), true);
      return out;
    });
    const line = await traceError(d);
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toMatch(/header length \d+ extends beyond the file/);
  });

  it('data offsets outside the data section', async () => {
    const d = model('offsets');
    let total = 0;
    editHeader(d, (h) => {
      for (const [k, e] of Object.entries(h)) if (k !== '__metadata__') total = Math.max(total, e.data_offsets[1]);
      const e = h['transformer.wpe.weight']!;
      e.data_offsets = [e.data_offsets[0] + total, e.data_offsets[1] + total];
    });
    const line = await traceError(d);
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toContain('transformer.wpe.weight');
    expect(line).toMatch(/outside the data section/);
  });

  it('an unknown dtype', async () => {
    const d = model('dtype');
    editHeader(d, (h) => { h['transformer.ln_f.bias']!.dtype = 'F12'; });
    const line = await traceError(d);
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toContain('transformer.ln_f.bias');
    expect(line).toMatch(/unknown dtype "F12"/);
  });

  it('a known dtype that is not a float (I32 weights)', async () => {
    const d = model('int-dtype');
    editHeader(d, (h) => { h['transformer.ln_f.weight']!.dtype = 'I32'; });
    const line = await traceError(d);
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toContain('transformer.ln_f.weight');
    expect(line).toContain('I32');
  });

  // Regression (was a bug) (src/cli/eval.ts: `throw new Error(\`the loss is not finite ...\`)`): a plain Error, printed as
  // "semfreeze: error: ..." with a stack trace, and it names neither the model file nor the tensor.
  it('NaN weights give one clear error (eval)', async () => {
    const d = model('nan-weights');
    editSafetensors(d, (b) => {
      const { header, data } = splitSafetensors(b);
      const e = (header as Header)['transformer.ln_f.weight']!;
      const copy = data.slice();
      new DataView(copy.buffer).setFloat32(e.data_offsets[0], Number.NaN, true);
      return joinSafetensors(header, copy);
    });
    const line = userErrorLine(await runCli(['eval', '--model', d, '--data', join(d, 'train.txt'), '--seq', '8', '--max-windows', '2']));
    expect(line).toMatch(/not finite|NaN/);
  });

  it('invalid config.json', async () => {
    const d = model('bad-config');
    writeFileSync(join(d, 'config.json'), '{"n_layer": 2, "n_embd": 64,');
    const line = await traceError(d);
    expect(line).toContain(join(d, 'config.json'));
    expect(line).toMatch(/not valid JSON/);
  });

  it('config.json without n_layer', async () => {
    const d = model('config-field');
    writeFileSync(join(d, 'config.json'), JSON.stringify({ model_type: 'gpt2', n_embd: 64, n_head: 4, vocab_size: V, n_positions: NPOS }));
    const line = await traceError(d);
    expect(line).toContain(join(d, 'config.json'));
    expect(line).toContain("missing 'n_layer'");
  });

  it('an unreadable config.json (a directory)', async () => {
    const d = model('config-dir');
    rmSync(join(d, 'config.json'));
    mkdirSync(join(d, 'config.json'));
    const line = await traceError(d);
    expect(line).toContain(join(d, 'config.json'));
    expect(line).toMatch(/cannot read/);
  });

  it('a missing model directory', async () => {
    const parent = tempDir('no-model');
    dirs.push(parent);
    const d = join(parent, 'does-not-exist');
    const line = await traceError(d);
    expect(line).toContain(d);
    expect(line).toMatch(/no such file/);
  });

  it('a model directory without model.safetensors', async () => {
    const d = model('no-weights');
    rmSync(join(d, 'model.safetensors'));
    const line = await traceError(d);
    expect(line).toContain(join(d, 'model.safetensors'));
    expect(line).toMatch(/no such file/);
  });

  it('an invalid tokenizer.json', async () => {
    const d = model('bad-tokenizer');
    writeFileSync(join(d, 'tokenizer.json'), '{"model": ');
    const line = await traceError(d);
    expect(line).toContain(join(d, 'tokenizer.json'));
    expect(line).toMatch(/not valid JSON/);
  });

  it('a .txt data file with a model lacking tokenizer.json', async () => {
    const d = model('no-tokenizer', { tokenizer: false });
    const data = join(d, 'train.txt');
    const line = await userErrorLine(await runCli(['eval', '--model', d, '--data', data, '--seq', '8', '--max-windows', '1']));
    expect(line).toContain(data);
    expect(line).toContain('tokenizer.json');
  });
});

describe.concurrent('one clear error for bad tokens and lengths', () => {
  it(`a token id ≥ vocab_size in --tokens (trace, generate)`, async () => {
    const line = await traceError(TINY, `1,2,${V}`);
    expect(line).toContain(`token id ${V}`);
    expect(line).toContain(`vocab_size ${V}`);
    const gen = userErrorLine(await runCli(['generate', '--model', TINY, '--tokens', `${V + 7},1`, '--max-tokens', '2', '--json']));
    expect(gen).toContain(`token id ${V + 7}`);
  });

  it('a negative or non-numeric token in --tokens', async () => {
    expect(await traceError(TINY, '1,-1,2')).toContain("'-1' is not a token id");
    expect(await traceError(TINY, '1,x')).toContain("'x' is not a token id");
  });

  it('a token id ≥ vocab_size in a data file (eval, finetune)', async () => {
    const d = tempDir('bad-ids');
    dirs.push(d);
    const data = join(d, 'ids.json');
    writeFileSync(data, JSON.stringify([...Array.from({ length: 40 }, (_, i) => i), V + 3]));
    const line = userErrorLine(await runCli(['eval', '--model', TINY, '--data', data, '--seq', '8']));
    expect(line).toContain(data);
    expect(line).toContain(`token id ${V + 3} at position 40`);
    const ft = userErrorLine(await runCli(['finetune', '--model', TINY, '--data', data, '--seq', '8', '--freeze', '1', '--steps', '1', '--out', join(d, 'out')]));
    expect(ft).toContain(`token id ${V + 3}`);
  });

  it('--seq longer than n_positions (eval, finetune)', async () => {
    const d = tempDir('long-seq');
    dirs.push(d);
    const line = userErrorLine(await runCli(['eval', '--model', TINY, '--data', join(TINY, 'train.txt'), '--seq', String(NPOS + 1)]));
    expect(line).toContain(`--seq ${NPOS + 1}`);
    expect(line).toContain(`n_positions = ${NPOS}`);
    const ft = userErrorLine(await runCli(['finetune', '--model', TINY, '--data', join(TINY, 'train.txt'), '--seq', String(NPOS + 1), '--freeze', '1', '--steps', '1', '--out', join(d, 'out')]));
    expect(ft).toContain(`n_positions = ${NPOS}`);
  });

  it('a --tokens list longer than n_positions (trace), and a prompt that fills the context (generate)', async () => {
    const ids = Array.from({ length: NPOS + 1 }, (_, i) => i % V).join(',');
    const line = await traceError(TINY, ids);
    expect(line).toContain(`${NPOS + 1} tokens`);
    expect(line).toContain(`n_positions = ${NPOS}`);
    const full = Array.from({ length: NPOS }, (_, i) => i).join(',');
    const gen = userErrorLine(await runCli(['generate', '--model', TINY, '--tokens', full, '--max-tokens', '3', '--json']));
    expect(gen).toMatch(/no room to generate/);
  });

  // One behaviour for text (src/util/utf8.ts): invalid UTF-8 becomes U+FFFD in a .txt just as in a
  // .jsonl or tokenizer training data. Was: eval refused the .txt ("is not valid UTF-8 text").
  it('invalid UTF-8 in a .txt data file is read as U+FFFD (eval runs)', async () => {
    const d = tempDir('bad-utf8');
    dirs.push(d);
    const txt = join(d, 'bad.txt');
    writeFileSync(txt, Buffer.concat([readFileSync(join(TINY, 'train.txt')).subarray(0, 400), Buffer.from([0xe9, 0xff]), Buffer.from(' the end\n')]));
    const r = await runCli(['eval', '--model', TINY, '--data', txt, '--seq', '8', '--max-windows', '2', '--json']);
    expect(r.code, describeRun(r)).toBe(0);
    expect(Number.isFinite(stdoutJson<{ loss: number }>(r).loss)).toBe(true);
  });

  it('data too short for one window', async () => {
    const d = tempDir('short-data');
    dirs.push(d);
    const data = join(d, 'ids.json');
    writeFileSync(data, '[1, 2, 3]');
    const line = userErrorLine(await runCli(['eval', '--model', TINY, '--data', data, '--seq', '8']));
    expect(line).toContain(data);
    expect(line).toMatch(/too few for one window/);
  });
});

describe.each(FIXTURE_MODELS)('F16 and BF16 checkpoints: %s', (name) => {
  const f = fixture(name);

  const logitsOf = (dir: string) => modelDirLogits(dir, f);

  // Measured relative logits errors: about 5e-4 (F16) and 4-5e-3 (BF16) on all three fixtures.
  it.each([
    ['f16', 2e-3],
    ['bf16', 2e-2],
  ])('model.%s.safetensors copied to model.safetensors gives logits within %s (relative) of F32', async (dtype, tol) => {
    const d = copyModel(f.dir, `dtype-${name}-${dtype}`);
    dirs.push(d);
    copyFileSync(join(f.dir, `model.${dtype}.safetensors`), join(d, 'model.safetensors'));
    const files = await readModelDir(nodePlatform, d);
    const want = dtype === 'f16' ? 'F16' : 'BF16';
    expect([...files.weights.tensors.values()].every((t) => t.dtype === want), `all tensors are ${want}`).toBe(true);
    const ref = await logitsOf(f.dir);
    expect(relError(ref, f.ref.getFloat32('logits')), 'F32 vs transformers').toBeLessThan(1e-4);
    const half = await logitsOf(d);
    const err = relError(half, ref);
    expect(err, `${dtype} logits vs F32`).toBeLessThan(tol);
    // Rounding the weights must show: identical logits would mean the half file was not what we read.
    expect(err).toBeGreaterThan(0);
  });
});
