// `semfreeze pretrain` end to end on the tiny preset (seconds): the loss falls on real text, the
// output is a model directory every other command loads, and --resume continues where it stopped.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/model/config.ts';
import { describeRun, removeDir, runCli, stdoutJson, tempDir, userErrorLine } from './util/cli.ts';
import { FIXTURES } from './util/fixtures.ts';

const TINY = join(FIXTURES, 'gpt2-tiny');
const base = ['pretrain', '--config', 'tiny', '--tokenizer', join(TINY, 'tokenizer.json'), '--data', join(TINY, 'train.txt'), '--eval-data', join(TINY, 'train.txt'), '--batch', '4', '--seq', '32', '--lr', '3e-3', '--warmup', '5', '--log-every', '5', '--eval-every', '20', '--eval-windows', '8'];

interface Log { log: { step: number; loss?: number; evalLoss?: number; tokens: number }[] }

let dir: string;
beforeAll(() => { dir = tempDir('pretrain'); });
afterAll(() => removeDir(dir));

describe('semfreeze pretrain', () => {
  it('trains from scratch: the loss falls, the model loads, --resume continues', async () => {
    const out = join(dir, 'm');
    const a = await runCli([...base, '--steps', '40', '--save-every', '20', '--out', out, '--json'], { timeoutMs: 300_000 });
    expect(a.code, describeRun(a)).toBe(0);
    const log = stdoutJson<Log>(a).log;
    const losses = log.filter((e) => e.loss !== undefined).map((e) => e.loss!);
    expect(losses[0]).toBeGreaterThan(5.5); // ≈ ln 512 at the start
    expect(losses.at(-1)!).toBeLessThan(losses[0]! - 0.5);
    expect(log.at(-1)!.evalLoss).toBeLessThan(losses[0]!);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'train-log.json']) expect(existsSync(join(out, f))).toBe(true);
    const cfg = parseConfig(readFileSync(join(out, 'config.json'), 'utf8'));
    expect([cfg.nLayer, cfg.nEmbd, cfg.vocabSize, cfg.nPositions]).toEqual([2, 32, 512, 32]);

    const ev = await runCli(['eval', '--model', out, '--data', join(TINY, 'train.txt'), '--seq', '32', '--max-windows', '8', '--json']);
    expect(ev.code, describeRun(ev)).toBe(0);
    expect(stdoutJson<{ loss: number }>(ev).loss).toBeLessThan(losses[0]!);

    const b = await runCli([...base, '--steps', '50', '--out', out, '--resume', '--json'], { timeoutMs: 300_000 });
    expect(b.code, describeRun(b)).toBe(0);
    expect(b.stderr).toMatch(/resuming .* at step 40/);
    const steps = stdoutJson<Log>(b).log.map((e) => e.step);
    expect(steps.filter((s) => s > 40)).toEqual([45, 50]);
    expect(steps.filter((s) => s <= 40)).toEqual(log.map((e) => e.step));

    const done = await runCli([...base, '--steps', '50', '--out', out, '--resume']);
    expect(userErrorLine(done)).toMatch(/already at step 50/);
  });

  it('refuses an unknown preset with the list of presets', async () => {
    const r = await runCli([...base, '--config', 'huge', '--out', join(dir, 'x')]);
    expect(userErrorLine(r)).toMatch(/'huge' is neither a preset \(base, tiny\)/);
  });
});
