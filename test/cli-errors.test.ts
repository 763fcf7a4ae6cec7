// Issue 8, items 11, 12, 15: every user mistake is one `semfreeze: ...` line, found before the model
// loads; stack traces only with --debug; --json keeps stdout JSON in failure; --version; Dawn's start-up
// noise never reaches the user; non-finite weights are refused at load; a padded vocabulary generates
// only ids the tokenizer can decode. Each case spawns one short CLI process; they run concurrently.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { reportError } from '../src/cli/common.ts';
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from '../src/io/safetensors.ts';
import { copyModel, describeRun, editSafetensors, joinSafetensors, REPO, removeDir, runCli, splitSafetensors, stdoutJson, tempDir, userErrorLine, type CliResult } from './util/cli.ts';
import { FIXTURES } from './util/fixtures.ts';

const execFileAsync = promisify(execFile);
const TINY = join(FIXTURES, 'gpt2-tiny');
const TEXT = join(TINY, 'train.txt');
const dirs: string[] = [];
const keep = (d: string) => (dirs.push(d), d);
afterAll(() => dirs.forEach(removeDir));

/** The error is the only thing semfreeze said: nothing was loaded before it (no "model ...: loaded" line). */
function firstLineError(r: CliResult): string {
  const line = userErrorLine(r);
  expect(r.messages, describeRun(r)).toEqual([line]);
  return line;
}

const FT = ['finetune', '--model', TINY, '--data', TEXT, '--freeze', '1', '--steps', '2', '--seq', '8', '--batch', '2'];
const ftOut = () => join(keep(tempDir('ft-flags')), 'out');

describe.concurrent('flag mistakes: one line naming the flag, before the model loads', () => {
  const cases: [string, string[], RegExp][] = [
    ['--seq in hex', ['eval', '--model', TINY, '--data', TEXT, '--seq', '0x10'], /^semfreeze: --seq must be an integer ≥ 1, got '0x10'$/],
    ['--seq over the context (eval)', ['eval', '--model', TINY, '--data', TEXT, '--seq', '65'], /^semfreeze: --seq 65 exceeds the model's context n_positions = 64$/],
    ['--seq over the context (analyze)', ['analyze', '--model', TINY, '--data', TEXT, '--seq', '100'], /--seq 100 exceeds/],
    ['--batch 0', ['eval', '--model', TINY, '--data', TEXT, '--seq', '8', '--batch', '0'], /--batch must be an integer ≥ 1/],
    ['--steps 1e3', [...FT.slice(0, 7), '--steps', '1e3', '--seq', '8'], /--steps must be an integer/],
    ['a negative --lr', [...FT, '--lr', '-1e-3'], /^semfreeze: --lr must be > 0, got '-1e-3'$/],
    ['--lr NaN', [...FT, '--lr', 'NaN'], /--lr must be a number > 0/],
    ["--lr ''", [...FT, '--lr', ''], /--lr must be a number > 0, got ''/],
    ['a negative --clip', [...FT, '--clip', '-1'], /--clip must be ≥ 0/],
    ['a negative --weight-decay', [...FT, '--weight-decay', '-0.1'], /--weight-decay must be ≥ 0/],
    ['--warmup over --steps', [...FT, '--warmup', '5'], /--warmup 5 exceeds --steps 2/],
    ["--freeze ''", ['finetune', '--model', TINY, '--data', TEXT, '--freeze', '', '--steps', '2', '--seq', '8'], /--freeze must be none, auto or a block count 0\.\.2, got ''/],
    ['--freeze 0x1', ['finetune', '--model', TINY, '--data', TEXT, '--freeze', '0x1', '--steps', '2', '--seq', '8'], /--freeze must be none, auto or a block count/],
    ['--seq over the context (finetune)', ['finetune', '--model', TINY, '--data', TEXT, '--freeze', '1', '--steps', '2', '--seq', '65'], /--seq 65 exceeds/],
    ['--budget 0', ['analyze', '--model', TINY, '--data', TEXT, '--budget', '0'], /^semfreeze: --budget 0: at least 1 block must stay trainable/],
    ['a negative --temperature', ['generate', '--model', TINY, '--tokens', '1,2', '--temperature', '-0.5'], /--temperature must be ≥ 0, got '-0.5'/],
    ['an unknown option', ['eval', '--model', TINY, '--data', TEXT, '--seq', '8', '--bogus'], /^semfreeze: unknown option '--bogus'/],
    ['a missing required option', ['eval', '--model', TINY, '--seq', '8'], /^semfreeze: required option '--data <file>' not specified/],
  ];
  for (const [name, args, re] of cases) {
    it(name, async () => {
      const withOut = args[0] === 'finetune' ? [...args, '--out', ftOut()] : args;
      expect(firstLineError(await runCli(withOut))).toMatch(re);
    });
  }
});

describe.concurrent('a corrupt checkpoint to --resume names the file (before the model loads)', () => {
  const checkpoint = (files: Record<string, string | Uint8Array>) => {
    const d = keep(copyModel(TINY, 'resume', {}));
    const good = { 'train-state.json': JSON.stringify({ step: 1, freeze: 1, loader: { epoch: 0, cursor: 2 }, args: {} }), 'train-log.json': '[]' };
    for (const [f, content] of Object.entries({ ...good, ...files })) writeFileSync(join(d, f), content);
    return d;
  };
  const optimizer = (value: number) => {
    const tensors: TensorToWrite[] = [
      { name: 'optim.step', dtype: 'F32', shape: [1], data: Float32Array.of(1) },
      { name: 'optim.m.ln_f.weight', dtype: 'F32', shape: [64], data: new Float32Array(64).fill(value) },
    ];
    const parts = serializeSafetensors(tensors);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) (out.set(p, o), (o += p.length));
    return out;
  };
  const resume = (dir: string) => runCli([...FT, '--out', ftOut(), '--resume', dir]);

  it('train-state.json that is not JSON', async () => {
    const d = checkpoint({ 'train-state.json': '{"step": 3, "fre', 'optimizer.safetensors': optimizer(0) });
    expect(firstLineError(await resume(d))).toMatch(new RegExp(`^semfreeze: ${join(d, 'train-state.json')}: not valid JSON`));
  });
  it('train-state.json with a step that is not a count', async () => {
    const d = checkpoint({ 'train-state.json': '{"step": "three", "freeze": 1, "loader": {"epoch": 0, "cursor": 0}}', 'optimizer.safetensors': optimizer(0) });
    expect(firstLineError(await resume(d))).toContain(`${join(d, 'train-state.json')}: 'step' must be an integer`);
  });
  it('optimizer.safetensors with NaN moments', async () => {
    const d = checkpoint({ 'optimizer.safetensors': optimizer(Number.NaN) });
    expect(firstLineError(await resume(d))).toContain(`${join(d, 'optimizer.safetensors')}: tensor 'optim.m.ln_f.weight' holds a non-finite value`);
  });
  it('a truncated optimizer.safetensors', async () => {
    const d = checkpoint({ 'optimizer.safetensors': optimizer(0).subarray(0, 40) });
    expect(firstLineError(await resume(d))).toContain(join(d, 'optimizer.safetensors'));
  });
});

describe.concurrent('--debug, --json, --version', () => {
  const BAD_SEQ = ['eval', '--model', TINY, '--data', TEXT, '--seq', '0x10'];

  it('--debug (anywhere on the line) or SEMFREEZE_DEBUG adds the stack trace; without them there is none', async () => {
    const [plain, debug, env] = await Promise.all([runCli(BAD_SEQ), runCli([...BAD_SEQ, '--debug']), runCli(BAD_SEQ, { env: { SEMFREEZE_DEBUG: '1' } })]);
    userErrorLine(plain);
    for (const r of [debug, env]) {
      expect(r.code, describeRun(r)).toBe(1);
      expect(r.stderr).toContain("semfreeze: --seq must be an integer ≥ 1, got '0x10'");
      expect(r.stderr).toMatch(/^\s+at /m);
    }
  });

  it('with --json a failure is {"error": ...} on stdout too (and the line on stderr)', async () => {
    const [ours, commanders] = await Promise.all([runCli([...BAD_SEQ, '--json']), runCli(['eval', '--model', TINY, '--seq', '8', '--json'])]);
    expect(stdoutJson(ours)).toEqual({ error: "--seq must be an integer ≥ 1, got '0x10'" });
    expect(ours.messages).toEqual(["semfreeze: --seq must be an integer ≥ 1, got '0x10'"]);
    expect(ours.code).toBe(1);
    expect(stdoutJson(commanders).error).toMatch(/required option '--data <file>'/);
    expect(commanders.code).toBe(1);
  });

  it('--version prints package.json\'s version', async () => {
    const r = await runCli(['--version']);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout.trim()).toBe((JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version);
  });
});

describe('an unexpected exception', () => {
  it('is one line with a hint to rerun with --debug; the stack only with --debug', () => {
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      const bug = new TypeError("Cannot read properties of undefined (reading 'x')");
      expect(reportError(bug, { debug: false, json: true })).toBe(1);
      const lines = err.mock.calls.map((c) => String(c[0])).join('').split('\n').filter(Boolean);
      expect(lines).toEqual(["semfreeze: error: Cannot read properties of undefined (reading 'x') (an internal error: rerun with --debug for the stack trace)"]);
      expect(JSON.parse(String(out.mock.calls[0]![0]))).toEqual({ error: "Cannot read properties of undefined (reading 'x')" });
      err.mockClear();
      reportError(bug, { debug: true, json: false });
      expect(err.mock.calls.map((c) => String(c[0])).join('')).toMatch(/^\s+at /m);
    } finally {
      err.mockRestore();
      out.mockRestore();
    }
  });
});

/** Rewrite DIR/model.safetensors with `edit` applied to the host tensors (shapes may change). */
function rewriteModel(dir: string, edit: (t: Map<string, { shape: number[]; data: Float32Array }>) => void): void {
  const path = join(dir, 'model.safetensors');
  const st = parseSafetensors(new Uint8Array(readFileSync(path)), path);
  const tensors = new Map([...st.tensors.entries()].map(([name, info]) => [name, { shape: [...info.shape], data: st.getFloat32(name) }]));
  edit(tensors);
  const parts = serializeSafetensors([...tensors].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape, data: t.data })));
  writeFileSync(path, Buffer.concat(parts));
}

describe.concurrent('weights', () => {
  const withNonFinite = (value: number) => {
    const d = keep(copyModel(TINY, 'nonfinite'));
    editSafetensors(d, (b) => {
      const { header, data } = splitSafetensors(b);
      const e = (header as Record<string, { data_offsets: [number, number] }>)['transformer.h.1.mlp.c_proj.weight']!;
      const copy = data.slice();
      new DataView(copy.buffer).setFloat32(e.data_offsets[0] + 4 * 37, value, true);
      return joinSafetensors(header, copy);
    });
    return d;
  };

  // Regression: generate printed "!!!!" and exited 0; trace wrote NaN hidden states silently.
  it('NaN or ∞ in a tensor is refused at load by generate and trace, naming the file and tensor', async () => {
    const nan = withNonFinite(Number.NaN);
    const inf = withNonFinite(Number.POSITIVE_INFINITY);
    const [g, t] = await Promise.all([
      runCli(['generate', '--model', nan, '--tokens', '1,2,3', '--max-tokens', '4']),
      runCli(['trace', '--model', inf, '--tokens', '1,2,3', '--out', join(inf, 'trace.safetensors')]),
    ]);
    expect(userErrorLine(g)).toBe(`semfreeze: ${join(nan, 'model.safetensors')}: tensor 'transformer.h.1.mlp.c_proj.weight' holds a non-finite value (NaN at index 37); the model's weights are broken`);
    expect(userErrorLine(t)).toContain(`${join(inf, 'model.safetensors')}: tensor 'transformer.h.1.mlp.c_proj.weight' holds a non-finite value (Infinity at index 37)`);
  });

  it('a vocabulary padded past the tokenizer: generate never picks an id it cannot decode, and says so once', async () => {
    const d = keep(copyModel(TINY, 'padded'));
    const PAD = 16;
    const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(d, 'config.json'), JSON.stringify({ ...cfg, vocab_size: 512 + PAD }));
    rewriteModel(d, (t) => {
      const wte = t.get('transformer.wte.weight') ?? t.get('wte.weight')!;
      const grown = new Float32Array((512 + PAD) * 64);
      grown.set(wte.data);
      // Large ±rows: with a tied head, one of these padding ids has by far the largest logit.
      for (let i = 512 * 64; i < grown.length; i++) grown[i] = ((i * 2654435761) >>> 0) % 2 === 0 ? 40 : -40;
      wte.data = grown;
      wte.shape = [512 + PAD, 64];
    });
    const [greedy, sampled] = await Promise.all([
      runCli(['generate', '--model', d, '--tokens', '1,2,3', '--max-tokens', '6', '--json']),
      runCli(['generate', '--model', d, '--prompt', 'The', '--max-tokens', '6', '--temperature', '5', '--seed', '3']),
    ]);
    const j = stdoutJson<{ generated: number[]; text: string }>(greedy);
    expect(j.generated).toHaveLength(6);
    expect(j.generated.every((id) => id < 512), JSON.stringify(j.generated)).toBe(true);
    expect(typeof j.text).toBe('string');
    expect(sampled.code, describeRun(sampled)).toBe(0);
    for (const r of [greedy, sampled]) {
      const notes = r.messages.filter((l) => /never generated/.test(l));
      expect(notes, describeRun(r)).toEqual([`note: ${PAD} of the model's ${512 + PAD} token ids have no text in its tokenizer (vocabulary 512; padded?): they are never generated`]);
    }
  });
});

describe('output hygiene', () => {
  // Regression: Dawn printed two "artificially reduced" warnings on every start. They are filtered when
  // stderr is a terminal or a pipe (a shell pipe here: Node's own child pipes are sockets, which
  // src/platform/node.ts cannot reopen, so runCli's output is not the case to test).
  it("Dawn's start-up warnings never reach stderr through a pipe; --json success is JSON on stdout", async () => {
    const out = join(keep(tempDir('hygiene')), 'stdout.json');
    const args = ['generate', '--model', TINY, '--tokens', '1,2,3', '--max-tokens', '2', '--json'];
    // sh: the CLI's stderr goes through a real pipe into cat, whose output we read; stdout to a file.
    const { stdout: stderr } = await execFileAsync('/bin/sh', ['-c', `"$0" --import tsx bin/semfreeze.ts "$@" 2>&1 >"${out}" | cat`, process.execPath, ...args], {
      cwd: REPO,
    });
    expect(stderr).not.toMatch(/artificially reduced|Loader Message/);
    expect((JSON.parse(readFileSync(out, 'utf8')) as { generated: number[] }).generated).toHaveLength(2);
  });
});

describe('analyze', () => {
  // Regression: a singular Gram matrix was regularised without a word.
  it('a head of rank < d: the Gram matrix is regularised automatically, and the user is told', async () => {
    const d = keep(copyModel(TINY, 'rank-deficient'));
    rewriteModel(d, (t) => {
      const wte = (t.get('transformer.wte.weight') ?? t.get('wte.weight'))!.data;
      for (let v = 0; v < 512; v++) wte[v * 64 + 5] = 0; // dimension 5 unused by every token
    });
    const r = await runCli(['analyze', '--model', d, '--data', TEXT, '--seq', '32', '--max-windows', '2', '--json']);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.messages.some((l) => /Gram matrix .* singular .* regularised automatically/.test(l)), describeRun(r)).toBe(true);
    expect(stdoutJson<{ analysis: { gramRidge: number } }>(r).analysis.gramRidge).toBeGreaterThan(0);
  });
});
