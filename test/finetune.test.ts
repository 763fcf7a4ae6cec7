// `semfreeze finetune` end to end (CLI child processes on gpt2-tiny and its real-English train.txt):
// the loss falls, --freeze limits, exact resume (also of a killed run), NaN handling, frozen tensors
// bit-identical in the saved Hugging Face checkpoint, no temp leftovers next to the output.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSafetensors, type SafetensorsFile } from '../src/io/safetensors.ts';
import { parseConfig, type ModelConfig } from '../src/model/config.ts';
import { canonicalName, hfName, isTrainable, paramSpecs } from '../src/model/params.ts';
import { describeRun, removeDir, runCli, stdoutJson, tempDir, userErrorLine, type CliResult } from './util/cli.ts';
import { FIXTURES, fixture } from './util/fixtures.ts';

const TINY = join(FIXTURES, 'gpt2-tiny');
const TEXT = join(TINY, 'train.txt');
const f = fixture('gpt2-tiny');
const N = f.config.nLayer; // 2

let tmp: string;
beforeAll(() => { tmp = tempDir('finetune'); });
afterAll(() => removeDir(tmp));

/** A fresh parent directory per run, so a listing shows exactly what a run left next to its output. */
function outDir(name: string): string {
  const parent = join(tmp, name);
  mkdirSync(parent, { recursive: true });
  return join(parent, 'ckpt');
}

const finetune = (args: string[], opts: Parameters<typeof runCli>[1] = {}) => runCli(['finetune', '--model', TINY, ...args], { timeoutMs: 300_000, ...opts });

function ok(r: CliResult): CliResult {
  expect(r.code, describeRun(r)).toBe(0);
  return r;
}

interface Checkpoint {
  config: ModelConfig;
  model: SafetensorsFile;
  modelBytes: Buffer;
  optimizerBytes: Buffer;
  state: { step: number; freeze: number | null; loader: unknown };
  log: { step: number; loss?: number; lr: number }[];
}

function readCheckpoint(dir: string): Checkpoint {
  const modelBytes = readFileSync(join(dir, 'model.safetensors'));
  return {
    config: parseConfig(readFileSync(join(dir, 'config.json'), 'utf8'), join(dir, 'config.json')),
    model: parseSafetensors(new Uint8Array(modelBytes), join(dir, 'model.safetensors')),
    modelBytes,
    optimizerBytes: readFileSync(join(dir, 'optimizer.safetensors')),
    state: JSON.parse(readFileSync(join(dir, 'train-state.json'), 'utf8')),
    log: JSON.parse(readFileSync(join(dir, 'train-log.json'), 'utf8')),
  };
}

function nonFinite(st: SafetensorsFile): number {
  let bad = 0;
  for (const name of st.tensors.keys()) for (const v of st.getFloat32(name)) if (!Number.isFinite(v)) bad++;
  return bad;
}

const sameBytes = (a: SafetensorsFile, b: SafetensorsFile, name: string) => Buffer.from(a.getBytes(name)).equals(Buffer.from(b.getBytes(name)));

async function evalLoss(model: string): Promise<number> {
  const r = ok(await runCli(['eval', '--model', model, '--data', TEXT, '--seq', '32', '--batch', '8', '--max-windows', '120', '--json']));
  return stdoutJson<{ loss: number }>(r).loss;
}

// (a) The two 30-step runs are shared by the loss, checkpoint-format, frozen-tensor and leftover tests.
const TRAIN = ['--data', TEXT, '--steps', '30', '--batch', '4', '--seq', '32', '--lr', '3e-3', '--no-shuffle', '--log-every', '10'];
let trained: Promise<{ freeze1: string; none: string; runs: CliResult[] }> | null = null;
function trainedRuns() {
  trained ??= (async () => {
    const freeze1 = outDir('freeze1');
    const none = outDir('none');
    const runs = await Promise.all([finetune([...TRAIN, '--freeze', '1', '--out', freeze1]), finetune([...TRAIN, '--freeze', 'none', '--out', none, '--json'])]);
    runs.forEach(ok);
    return { freeze1, none, runs };
  })();
  return trained;
}

describe('finetune on real text', () => {
  it('the loss falls: eval of the checkpoints (--freeze 1 and none) is clearly below the original model', async () => {
    const { freeze1, none, runs } = await trainedRuns();
    const [base, l1, lNone] = await Promise.all([evalLoss(TINY), evalLoss(freeze1), evalLoss(none)]);
    // The random model sits near ln(512) ≈ 6.24; 30 AdamW steps on these 120 windows bring it down by ~0.3.
    expect(base).toBeGreaterThan(6);
    expect(l1, `--freeze 1: ${l1} vs original ${base}`).toBeLessThan(base - 0.15);
    expect(lNone, `--freeze none: ${lNone} vs original ${base}`).toBeLessThan(base - 0.15);
    // --json prints the train log: 30 steps, losses read every 10.
    const j = stdoutJson<{ freeze: number | null; steps: number; log: { step: number; loss?: number }[] }>(runs[1]!);
    expect(j.freeze).toBeNull();
    expect(j.steps).toBe(30);
    expect(j.log.map((e) => e.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(j.log.filter((e) => e.loss !== undefined).map((e) => e.step)).toEqual([10, 20, 30]);
  });

  it('the checkpoint is a Hugging Face GPT2LMHeadModel directory (names, shapes, F32, config, tokenizer)', async () => {
    const { freeze1 } = await trainedRuns();
    const c = readCheckpoint(freeze1);
    expect(c.config).toEqual(f.config);
    const raw = JSON.parse(readFileSync(join(freeze1, 'config.json'), 'utf8'));
    expect(raw.architectures).toEqual(['GPT2LMHeadModel']);
    expect(raw.model_type).toBe('gpt2');
    expect(c.model.metadata.format).toBe('pt');
    const specs = paramSpecs(f.config);
    expect([...c.model.tensors.keys()].sort()).toEqual(specs.map((s) => hfName(s.name)).sort());
    for (const s of specs) {
      const t = c.model.tensors.get(hfName(s.name))!;
      expect(t.dtype).toBe('F32');
      expect(t.shape).toEqual(s.shape);
    }
    expect(readFileSync(join(freeze1, 'tokenizer.json'), 'utf8')).toBe(readFileSync(join(TINY, 'tokenizer.json'), 'utf8'));
    expect(c.state.step).toBe(30);
    expect(c.state.freeze).toBe(1);
    expect(nonFinite(c.model)).toBe(0);
  });

  // Regression (was a bug) (src/model/config.ts configToJson, used by src/cli/checkpoint.ts): the checkpoint's
  // config.json drops bos_token_id/eos_token_id (511 in gpt2-tiny), so transformers falls back to
  // GPT-2's 50256, outside this vocabulary (it warns on load; generate() would never stop on EOS).
  it('the checkpoint keeps the input config.json bos_token_id / eos_token_id', async () => {
    const { freeze1 } = await trainedRuns();
    const orig = JSON.parse(readFileSync(join(TINY, 'config.json'), 'utf8'));
    const saved = JSON.parse(readFileSync(join(freeze1, 'config.json'), 'utf8'));
    expect(orig.bos_token_id).toBe(511);
    expect(saved.bos_token_id).toBe(orig.bos_token_id);
    expect(saved.eos_token_id).toBe(orig.eos_token_id);
  });

  it('frozen tensors are bit-identical to the input model, trainable ones changed', async () => {
    const { freeze1, none } = await trainedRuns();
    const c1 = readCheckpoint(freeze1).model;
    const cn = readCheckpoint(none).model;
    let frozen = 0;
    for (const name of c1.tensors.keys()) {
      const spec = paramSpecs(f.config).find((s) => s.name === canonicalName(name))!;
      if (isTrainable(spec, 1)) expect(sameBytes(c1, f.model, name), `${name} (trainable at --freeze 1) changed`).toBe(false);
      else {
        frozen++;
        expect(sameBytes(c1, f.model, name), `${name} (frozen at --freeze 1) unchanged`).toBe(true);
      }
      expect(sameBytes(cn, f.model, name), `${name} changed at --freeze none`).toBe(false);
    }
    expect(frozen).toBe(2 + 12); // wte, wpe, block 0
  });

  it('no temp directories are left next to the output (also with --save-every)', async () => {
    const { freeze1, none } = await trainedRuns();
    const every = outDir('save-every');
    ok(await finetune(['--data', TEXT, '--steps', '4', '--batch', '2', '--seq', '16', '--freeze', '1', '--save-every', '1', '--out', every]));
    for (const out of [freeze1, none, every]) {
      expect(readdirSync(join(out, '..')), out).toEqual(['ckpt']);
      expect(readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors', 'optimizer.safetensors', 'tokenizer.json', 'train-log.json', 'train-state.json']);
    }
    expect(readCheckpoint(every).state.step).toBe(4);
  });
});

describe('--eval', () => {
  it('logs the held-out loss every --eval-every steps: the same number `semfreeze eval` gives for the checkpoint', async () => {
    const out = outDir('eval');
    const r = ok(await finetune(['--data', TEXT, '--eval', TEXT, '--eval-every', '2', '--eval-windows', '10', '--freeze', '1', '--steps', '4', '--batch', '4', '--seq', '32', '--lr', '3e-3', '--out', out, '--json']));
    const log = stdoutJson<{ log: { step: number; evalLoss?: number }[] }>(r).log;
    expect(log.filter((e) => e.evalLoss !== undefined).map((e) => e.step)).toEqual([2, 4]);
    const ev = ok(await runCli(['eval', '--model', out, '--data', TEXT, '--seq', '32', '--batch', '4', '--max-windows', '10', '--json']));
    expect(log.at(-1)!.evalLoss!).toBeCloseTo(stdoutJson<{ loss: number }>(ev).loss, 5);
    expect(log[1]!.evalLoss).not.toBe(log[3]!.evalLoss);
  });
});

describe('--out', () => {
  // Regression (was a bug) (src/cli/checkpoint.ts writeCheckpoint: `rename(dir, old)` then `rm(old, { recursive: true })`):
  // an existing --out directory is replaced wholesale, so any other files in it are deleted without a
  // word (e.g. `--out ~/models` or `--out` = the --model directory). It should refuse a directory that
  it('an existing directory that is not a checkpoint is refused or its other files kept', async () => {
    const out = outDir('foreign');
    mkdirSync(out);
    writeFileSync(join(out, 'notes.txt'), 'not yours');
    const r = await finetune(['--data', TEXT, '--seq', '16', '--batch', '2', '--steps', '1', '--freeze', '1', '--out', out]);
    if (r.code === 0) expect(existsSync(join(out, 'notes.txt')), 'notes.txt survived').toBe(true);
    else {
      userErrorLine(r);
      expect(readFileSync(join(out, 'notes.txt'), 'utf8')).toBe('not yours');
    }
  });
});

describe('--freeze', () => {
  it(`K > N is an error naming N (${N}); a non-number is an error`, async () => {
    const [big, word] = await Promise.all([
      finetune(['--data', TEXT, '--seq', '16', '--steps', '1', '--freeze', String(N + 1), '--out', outDir('k-too-big')]),
      finetune(['--data', TEXT, '--seq', '16', '--steps', '1', '--freeze', 'half', '--out', outDir('k-word')]),
    ]);
    const line = userErrorLine(big);
    expect(line).toContain(`--freeze ${N + 1}`);
    expect(line).toContain(`only ${N} blocks`);
    expect(userErrorLine(word)).toContain("got 'half'");
    expect(existsSync(join(tmp, 'k-too-big', 'ckpt'))).toBe(false);
  });

  it('auto either works or gives one clear error', async () => {
    const out = outDir('auto');
    const r = await finetune(['--data', TEXT, '--seq', '16', '--batch', '2', '--steps', '1', '--freeze', 'auto', '--out', out]);
    if (r.code === 0) {
      const c = readCheckpoint(out);
      expect(c.state.freeze === null || (Number.isInteger(c.state.freeze) && c.state.freeze >= 0 && c.state.freeze <= N), describeRun(r)).toBe(true);
    } else {
      expect(userErrorLine(r)).toMatch(/--freeze auto/);
    }
  });

  it(`K = N trains only ln_f`, async () => {
    const out = outDir('k-max');
    ok(await finetune(['--data', TEXT, '--seq', '16', '--batch', '2', '--steps', '2', '--lr', '1e-2', '--freeze', String(N), '--out', out]));
    const c = readCheckpoint(out).model;
    for (const name of c.tensors.keys()) expect(sameBytes(c, f.model, name), name).toBe(!name.includes('ln_f'));
  });
});

describe('resume', () => {
  const OPTS = ['--data', TEXT, '--batch', '4', '--seq', '32', '--lr', '3e-3', '--freeze', '1', '--seed', '5'];
  const losses = (c: Checkpoint) => c.log.map((e) => [e.step, e.loss, e.lr]);

  // The GPU (lavapipe) is deterministic here: the resumed and straight runs agree bit for bit.
  it('3 steps, then --resume to 6, equals a straight 6-step run (constant schedule): same bytes, same losses', async () => {
    const a = outDir('resume-a');
    const b = outDir('resume-b');
    const opts = [...OPTS, '--schedule', 'constant'];
    const [first, straight] = await Promise.all([finetune([...opts, '--steps', '3', '--out', a]), finetune([...opts, '--steps', '6', '--out', b])]);
    ok(first);
    ok(straight);
    expect(readCheckpoint(a).state.step).toBe(3);
    const resumed = ok(await finetune([...opts, '--steps', '6', '--resume', a, '--out', a]));
    expect(resumed.stderr).toContain(`resuming ${a} at step 3`);
    const ca = readCheckpoint(a);
    const cb = readCheckpoint(b);
    expect(ca.state.step).toBe(6);
    expect(ca.state.loader).toEqual(cb.state.loader);
    expect(losses(ca)).toEqual(losses(cb));
    expect(ca.log.every((e) => Number.isFinite(e.loss))).toBe(true);
    expect(ca.modelBytes.equals(cb.modelBytes), 'model.safetensors identical').toBe(true);
    expect(ca.optimizerBytes.equals(cb.optimizerBytes), 'optimizer.safetensors identical').toBe(true);
  });

  it('a run killed after a --save-every checkpoint resumes exactly (cosine schedule, shuffled data)', async () => {
    const a = outDir('killed-a');
    const b = outDir('killed-b');
    const opts = [...OPTS, '--steps', '9', '--save-every', '3'];
    const straight = finetune([...opts, '--out', b]);
    let poll: ReturnType<typeof setInterval> | undefined;
    const killed = await finetune([...opts, '--out', a], {
      onSpawn: (child) => {
        poll = setInterval(() => {
          if (existsSync(join(a, 'train-state.json'))) {
            child.kill('SIGKILL');
            clearInterval(poll);
          }
        }, 5);
      },
    });
    clearInterval(poll);
    expect(killed.signal, `the run was to be killed after its first checkpoint\n${describeRun(killed)}`).toBe('SIGKILL');
    const at = readCheckpoint(a).state.step;
    expect([3, 6]).toContain(at);
    ok(await finetune([...opts, '--resume', a, '--out', a]));
    ok(await straight);
    const ca = readCheckpoint(a);
    const cb = readCheckpoint(b);
    expect(ca.state.step).toBe(9);
    expect(losses(ca)).toEqual(losses(cb));
    expect(ca.modelBytes.equals(cb.modelBytes), 'model.safetensors identical').toBe(true);
  });
});

describe('a NaN/inf loss', () => {
  // SGD at lr 1e6 without clipping: step 2's loss is ~4e9, step 3's is NaN.
  const ABSURD = ['--data', TEXT, '--batch', '4', '--seq', '32', '--freeze', 'none', '--optimizer', 'sgd', '--lr', '1e6', '--clip', '0', '--steps', '10'];
  const nanMessage = (line: string, out: string) => {
    expect(line).toMatch(/(the loss|weight \S+) became (NaN|Infinity|-Infinity) (at|after) step \d+/);
    expect(line).toContain(out);
    expect(line).toMatch(/last good checkpoint/);
  };

  let preexisting: Promise<{ out: string; before: Buffer; r: CliResult }> | null = null;
  const runOverPreexisting = () => (preexisting ??= (async () => {
    const out = outDir('nan-pre');
    // A good checkpoint from an earlier run (--out only replaces semfreeze checkpoints).
    const first = await finetune(['--model', TINY, '--data', join(TINY, 'train.txt'), '--freeze', '1', '--steps', '1', '--batch', '2', '--seq', '16', '--out', out]);
    expect(first.code, describeRun(first)).toBe(0);
    const before = readFileSync(join(out, 'model.safetensors'));
    return { out, before, r: await finetune([...ABSURD, '--out', out, '--overwrite']) };
  })());

  let everyStep: Promise<{ out: string; r: CliResult }> | null = null;
  const runSaveEvery = () => (everyStep ??= (async () => {
    const out = outDir('nan-every');
    return { out, r: await finetune([...ABSURD, '--save-every', '1', '--out', out]) };
  })());

  it('stops the run with a clear message and exit code 1; a checkpoint from before is kept unchanged', async () => {
    const { out, before, r } = await runOverPreexisting();
    expect(r.code, describeRun(r)).toBe(1);
    const line = r.messages.find((l) => l.startsWith('semfreeze: '));
    expect(line, describeRun(r)).toBeDefined();
    nanMessage(line!, out);
    expect(readFileSync(join(out, 'model.safetensors')).equals(before), 'model.safetensors untouched').toBe(true);
    expect(readdirSync(join(out, '..'))).toEqual(['ckpt']);
  });

  it('with --save-every 1: stops, and the checkpoint directory left behind parses and is from an earlier step', async () => {
    const { out, r } = await runSaveEvery();
    expect(r.code, describeRun(r)).toBe(1);
    const line = r.messages.find((l) => l.startsWith('semfreeze: '))!;
    nanMessage(line, out);
    const failedAt = Number(/(?:at|after) step (\d+)/.exec(line)![1]);
    const c = readCheckpoint(out);
    expect(c.config).toEqual(f.config);
    expect(c.model.tensors.size).toBe(paramSpecs(f.config).length);
    expect(c.state.step).toBeLessThanOrEqual(failedAt);
    expect(c.log.every((e) => e.loss === undefined || Number.isFinite(e.loss))).toBe(true);
  });

  // Regression (was a bug) (src/cli/finetune.ts, saveCheckpoint in the step loop): a checkpoint is saved right after
  // an update whose result is unchecked; the loss check only sees the loss *before* each update. The
  // "last good checkpoint" kept after the error then holds the weights that produced the NaN
  it('with --save-every 1 the kept checkpoint has finite weights', async () => {
    const { out } = await runSaveEvery();
    expect(nonFinite(readCheckpoint(out).model)).toBe(0);
  });

  // Regression (was a bug) (src/cli/finetune.ts: `throw new Error(\`the loss became ...\`)`): a plain Error, so
  // bin/semfreeze.ts prints it as an unexpected exception ("semfreeze: error: ...") with a stack trace.
  it('the NaN error is one line without a stack trace', async () => {
    const { r } = await runOverPreexisting();
    userErrorLine(r);
  });
});
