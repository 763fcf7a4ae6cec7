// Per-adapter tuning: the platform's tuning store (Node: a JSON file in the user's cache directory)
// and the matmul path chosen by timing both paths once per adapter, then read back.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Runtime } from '../src/gpu/runtime.ts';
import { matmulPathFor, matmulTuningKey, timeMatmulPaths } from '../src/ops/matmul.ts';
import { nodePlatform, nodeTuningStore, tuningFilePath } from '../src/platform/node.ts';
import { memoryTuningStore } from '../src/platform/types.ts';
import { runtime } from './util/gpu.ts';

describe('node tuning store', () => {
  const saved = process.env.SEMFREEZE_CACHE_DIR;
  afterEach(() => {
    if (saved === undefined) delete process.env.SEMFREEZE_CACHE_DIR;
    else process.env.SEMFREEZE_CACHE_DIR = saved;
  });

  it('keeps values in one JSON file under SEMFREEZE_CACHE_DIR; a corrupt or missing file reads as empty', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'semfreeze-tuning-'));
    process.env.SEMFREEZE_CACHE_DIR = join(dir, 'nested');
    expect(tuningFilePath()).toBe(join(dir, 'nested', 'tuning.json'));
    expect(await nodeTuningStore.get('a')).toBeNull();
    await nodeTuningStore.set('a', 'tiled');
    await nodeTuningStore.set('b', 'transpose');
    expect(await nodeTuningStore.get('a')).toBe('tiled');
    expect(JSON.parse(readFileSync(tuningFilePath(), 'utf8'))).toEqual({ a: 'tiled', b: 'transpose' });
    writeFileSync(tuningFilePath(), '{ not json');
    expect(await nodeTuningStore.get('a')).toBeNull();
    await nodeTuningStore.set('a', 'transpose');
    expect(JSON.parse(readFileSync(tuningFilePath(), 'utf8'))).toEqual({ a: 'transpose' });
  });
});

describe('matmul path by measurement', () => {
  it('software adapters take the transposes without measuring', async () => {
    const rt = await runtime();
    expect(await matmulPathFor(rt)).toBe('transpose');
  });

  it("'tune' times both paths once, keeps the faster under the adapter's key, and a later runtime reads it", async () => {
    const store = memoryTuningStore();
    const platform = { ...nodePlatform, tuning: store };
    const rt = await Runtime.open(platform, { matmul: 'tune' });
    const t = await timeMatmulPaths(rt, 64, 1);
    expect(t.transpose).toBeGreaterThan(0);
    expect(t.tiled).toBeGreaterThan(0);
    // On lavapipe the tiled kernel runs at a fifth of the transposing path's rate (BENCHMARKS.md).
    expect(await matmulPathFor(rt)).toBe('transpose');
    expect(await matmulPathFor(rt)).toBe('transpose');
    const key = matmulTuningKey(rt);
    expect(key).toMatch(/^matmul-path\/v1\/mesa\|/);
    expect([...store.entries]).toEqual([[key, 'transpose']]);
    rt.destroy();
    // A kept answer is read, not measured again: the measurement would say 'transpose'.
    store.entries.set(key, 'tiled');
    const again = await Runtime.open(platform, { matmul: 'tune' });
    expect(await matmulPathFor(again)).toBe('tiled');
    again.destroy();
  });
});
