// Issue 8 item 16 on a cold shader cache (a fresh MESA_SHADER_CACHE_DIR): the first run says it is
// compiling kernels, and the eval loop's speed (and so its ETA) excludes the compilation. Before, the
// first run was 20–50 s of silence and the eval reported ~3 tok/s. Slow: minutes on 2 cores.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeRun, removeDir, runCli, stdoutJson, tempDir } from '../util/cli.ts';
import { FIXTURES } from '../util/fixtures.ts';

const TINY = join(FIXTURES, 'gpt2-tiny');
const cache = tempDir('mesa-cache');
afterAll(() => removeDir(cache));

describe('cold start', () => {
  it('says "compiling kernels (first run only)", and the eval speed excludes compiling', async () => {
    const r = await runCli(['eval', '--model', TINY, '--data', join(TINY, 'train.txt'), '--seq', '32', '--max-windows', '8', '--json'], {
      env: { MESA_SHADER_CACHE_DIR: cache },
      timeoutMs: 900_000,
    });
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.messages.some((l) => l.startsWith('compiling kernels (first run only) …')), describeRun(r)).toBe(true);
    // 256 tokens: even on a loaded 2-core machine the loop runs at hundreds of tokens/s once compiled.
    expect(stdoutJson<{ tokensPerSecond: number }>(r).tokensPerSecond).toBeGreaterThan(50);
  }, 900_000);
});
