// Issue 10: the page's scriptable contract in headless Chromium (SwiftShader's WebGPU) against the CLI
// in Node on the same model and data: the analysis JSON (deviations, gains, boundary) and the first
// fine-tune losses must agree, and a bad query must end in state "error" with the message in #result.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { buildWeb } from '../scripts/build-web.mjs';
import { serveWeb } from '../scripts/serve-web.mjs';
import { analyzeCommand } from '../src/cli/analyze.ts';
import { FINETUNE_DEFAULTS, finetuneCommand } from '../src/cli/finetune.ts';
import { autoFreeze } from '../src/cli/analyze.ts';
import { buildData } from '../src/cli/data.ts';
import { launchChromium, openPage } from './util/browser.ts';

const MODEL = 'test/fixtures/gpt2-odd';
const DATA = `${MODEL}/train.txt`;
const SEQ = 32;

/** ‖a − b‖ / ‖b‖ (the suite's bound for every kernel and model comparison). */
function relErr(a: number[], b: number[]): number {
  expect(a.length).toBe(b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

interface AnalysisJson {
  latentSpaces: { k: number; deviation: number }[];
  blocks: { block: number; gain: number }[];
  boundary: { freeze: number; eof: number; maxGain: number };
  positions: number;
  cost: { atK: { stepFlops: number } };
}

let browser: Browser;
let server: { url: string; close(): Promise<void> };
const out = mkdtempSync(join(tmpdir(), 'semfreeze-web-'));

beforeAll(async () => {
  await buildWeb({ outdir: join(out, 'dist') });
  server = await serveWeb({ distDir: join(out, 'dist') });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
  rmSync(out, { recursive: true, force: true });
});

const pageUrl = (query: Record<string, string | number>) => `${server.url}?${new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]))}`;

describe('the page gives the CLI\'s results', () => {
  it('analysis: the same deviations, gains and boundary as `semfreeze analyze --json`', async () => {
    for (const [query, cli] of [
      [{ 'max-windows': 8 }, { maxWindows: 8 }],
      [{ samples: 300, seed: 7, deviation: 'lens', gain: 'g2' }, { samples: 300, seed: 7, deviation: 'lens', gain: 'g2' }],
    ] as const) {
      const page = await openPage(browser, pageUrl({ model: `/${MODEL}`, data: `/${DATA}`, seq: SEQ, ...query }), { timeoutMs: 300_000 });
      expect(page.state, page.result + page.console.join('\n')).toBe('done');
      const web = JSON.parse(page.result) as AnalysisJson;
      const node = (await analyzeCommand({ model: MODEL, data: DATA, seq: SEQ, json: true, ...cli })).json as AnalysisJson;
      expect(web.positions).toBe(node.positions);
      expect(web.latentSpaces.map((l) => l.k)).toEqual(node.latentSpaces.map((l) => l.k));
      expect(relErr(web.latentSpaces.map((l) => l.deviation), node.latentSpaces.map((l) => l.deviation))).toBeLessThan(1e-4);
      // Gains are differences of deviations, so they are compared as a vector against its own scale.
      expect(relErr(web.blocks.map((b) => b.gain), node.blocks.map((b) => b.gain))).toBeLessThan(1e-3);
      const { maxGain: webMax, ...webBoundary } = web.boundary;
      const { maxGain: nodeMax, ...nodeBoundary } = node.boundary;
      expect(webBoundary).toEqual(nodeBoundary);
      expect(Math.abs(webMax - nodeMax) / Math.abs(nodeMax)).toBeLessThan(1e-3);
      expect(web.cost.atK.stepFlops).toBe(node.cost.atK.stepFlops);
    }
  });

  it('fine-tune with freeze=auto: the same boundary and first losses as `semfreeze finetune --json`', async () => {
    const steps = 4;
    const page = await openPage(browser, pageUrl({ model: `/${MODEL}`, data: `/${DATA}`, seq: SEQ, 'max-windows': 4, finetune: steps, freeze: 'auto', lr: 1e-3 }), { timeoutMs: 300_000 });
    expect(page.state, page.result + page.console.join('\n')).toBe('done');
    const web = JSON.parse(page.result) as { freeze: number; steps: number; log: { step: number; loss: number }[] };
    const node = await finetuneCommand({ ...FINETUNE_DEFAULTS, model: MODEL, data: DATA, seq: SEQ, steps, freeze: 'auto', lr: 1e-3, out: join(out, 'ft'), autoFreeze, json: true });
    expect(web.steps).toBe(steps);
    expect(web.freeze).toBe(node.freeze);
    expect(web.log.map((e) => e.step)).toEqual(node.log.map((e) => e.step));
    for (let i = 0; i < steps; i++) expect(Math.abs(web.log[i]!.loss - node.log[i]!.loss!) / Math.abs(node.log[i]!.loss!)).toBeLessThan(1e-4);
    // The run trained: the loss moved (a page that skipped the updates would repeat the first loss).
    expect(web.log[steps - 1]!.loss).not.toBe(web.log[0]!.loss);
  });

  it('a bad query ends in state "error" with one clear message in #result', async () => {
    for (const [query, message] of [
      [{ model: `/${MODEL}`, data: `/${DATA}`, sq: 8 }, /unknown query parameter 'sq'/],
      [{ model: `/${MODEL}`, data: `/${DATA}`, seq: 'x' }, /seq must be an integer/],
      [{ model: '/test/fixtures/no-such-model', data: `/${DATA}` }, /no-such-model\/config\.json: .*HTTP 404/],
      [{ model: `/${MODEL}`, data: `/${DATA}`, seq: SEQ, finetune: 1, freeze: 9 }, /--freeze 9: the model has only 3 blocks/],
    ] as const) {
      const page = await openPage(browser, pageUrl(query), { timeoutMs: 300_000 });
      expect(page.state, page.result).toBe('error');
      expect((JSON.parse(page.result) as { error: string }).error).toMatch(message);
    }
  });
});

// The example runs the base model (about 45 s in SwiftShader): with `npm run test:heavy`; the check
// that it is the README's code runs always.
describe('embedding the core (the README\'s example)', () => {
  it('web/example.html is the README\'s example', () => {
    const script = (text: string) => /<script type="module">\n([\s\S]*?)<\/script>/.exec(text)?.[1];
    expect(script(readFileSync('web/example.html', 'utf8'))).toBeTruthy();
    expect(script(readFileSync('README.md', 'utf8'))).toBe(script(readFileSync('web/example.html', 'utf8')));
  });

  it.skipIf(process.env.SEMFREEZE_HEAVY !== '1')('web/example.html is the README\'s example, and it runs: analysis, then 10 fine-tune steps on the base model', async () => {
    const script = (text: string) => /<script type="module">\n([\s\S]*?)<\/script>/.exec(text)?.[1];
    const readme = readFileSync('README.md', 'utf8');
    const example = readFileSync('web/example.html', 'utf8');
    expect(script(example)).toBeTruthy();
    expect(script(readme)).toBe(script(example));
    // Its data: the code corpus, as `npm run web` builds it.
    if (!existsSync('data/code/train.txt')) await buildData(['code'], 'data');
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      await page.goto(`${server.url}example.html`);
      await page.waitForFunction(() => /step 10 loss/.test(document.querySelector('#out')?.textContent ?? ''), undefined, { timeout: 300_000, polling: 250 }).catch((e) => {
        throw new Error(`${(e as Error).message}\npage errors: ${errors.join('\n')}`);
      });
      const text = (await page.textContent('#out')) ?? '';
      expect(text).toMatch(/^freeze K = \d+\n/);
      const losses = [...text.matchAll(/step (\d+) loss ([\d.]+) /g)].map((m) => Number(m[2]));
      expect(losses).toHaveLength(10);
      for (const l of losses) expect(l).toBeGreaterThan(0);
      expect(await page.locator('#chart svg').count()).toBe(1);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
