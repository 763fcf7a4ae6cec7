import { describe, expect, it } from 'vitest';
import { renderAnalysisSvg } from '../src/analysis/plot.ts';
import { buildReport, renderReportText, reportToJson } from '../src/analysis/report.ts';
import { registerGainStrategy } from '../src/analysis/gain.ts';
import { gpt2Config } from './util/config.ts';


/** Minimal well-formedness check: tags balance, attributes quoted, no stray '<' or '&' in text. */
function checkXml(s: string): void {
  const stack: string[] = [];
  const re = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) {
    const text = s.slice(last, m.index);
    expect(text, `text before <${m[2]}>`).not.toMatch(/[<>]|&(?!amp;|lt;|gt;|quot;)/);
    last = re.lastIndex;
    const [, close, name, , self] = m;
    if (close) expect(stack.pop(), `closing </${name}>`).toBe(name);
    else if (!self) stack.push(name);
  }
  expect(s.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
}

const count = (s: string, re: RegExp) => (s.match(re) ?? []).length;

describe('plot', () => {
  it('well-formed SVG with N+1 deviation bars, N gain bars and the boundary marker', () => {
    const D = [0.9, 0.85, 0.7, 0.65, 0.3, 0.28, 0.25];
    const G = [0.05, 0.15, -0.05, 0.35, 0.02, -0.03];
    const svg = renderAnalysisSvg({ deviations: D, gains: G, freeze: 4, eof: 4, title: 'GPT-2 <tiny> & co', metric: 'cosine', strategy: 'g0' });
    checkXml(svg);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg" width="800" height="400"')).toBe(true);
    expect(count(svg, /class="dev-bar[" ]/g)).toBe(7);
    expect(count(svg, /class="gain-bar[" ]/g)).toBe(6);
    expect(count(svg, /id="boundary"/g)).toBe(1);
    expect(count(svg, /class="gain-bar[^"]*chosen/g)).toBe(1);
    // frozen: spaces 0..4 and blocks 1..4 greyed
    expect(count(svg, /class="dev-bar frozen"/g)).toBe(5);
    expect(count(svg, /class="gain-bar frozen/g)).toBe(4);
    expect(svg).toContain('GPT-2 &lt;tiny&gt; &amp; co');
    expect(svg).toContain('--freeze 4 (eof = 4)');
    expect(svg).toMatch(/deviation D_k \(cosine\)/);
    expect(svg).toMatch(/gain G_k/);
    // negative gains are drawn below the zero axis: their rect starts at the axis
    const rects = [...svg.matchAll(/class="gain-bar[^"]*" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"/g)].map((m) => [+m[1], +m[2]]);
    expect(rects[2][0]).toBeCloseTo(rects[0][0] + rects[0][1], 1);
  });

  it('edge cases: K = 0, K = N, N = 1, all-zero and non-finite gains stay well-formed', () => {
    for (const [D, G, K] of [
      [[1, 0.5], [0.5], 0],
      [[1, 0.5], [0.5], 1],
      [[1, 1, 1, 1], [0, 0, 0], 3],
      [[1, 0.9, 0.8], [-Infinity, 0.1], 2],
    ] as [number[], number[], number][]) {
      const svg = renderAnalysisSvg({ deviations: D, gains: G, freeze: K });
      checkXml(svg);
      expect(count(svg, /class="dev-bar[" ]/g)).toBe(D.length);
      expect(count(svg, /class="gain-bar[" ]/g)).toBe(G.length);
      expect(svg).not.toMatch(/NaN|Infinity/);
    }
    expect(() => renderAnalysisSvg({ deviations: [1, 2], gains: [1, 2], freeze: 0 })).toThrow(/need N\+1 and N/);
    expect(() => renderAnalysisSvg({ deviations: [1, 2], gains: [1], freeze: 2 })).toThrow(/outside 0..1/);
  });

  it('many blocks (N = 48) stay readable and well-formed', () => {
    const D = Array.from({ length: 49 }, (_, k) => 1 / (k + 1));
    const G = Array.from({ length: 48 }, (_, k) => Math.sin(k));
    const svg = renderAnalysisSvg({ deviations: D, gains: G, freeze: 20, eof: 17 });
    checkXml(svg);
    expect(count(svg, /class="gain-bar[" ]/g)).toBe(48);
    expect(svg).toContain('budget applied');
  });
});

describe('report', () => {
  const cfg = gpt2Config({ nLayer: 4, nEmbd: 64, nHead: 4, vocabSize: 500, nPositions: 64 });
  const D = { metric: 'cosine' as const, deviations: [0.95, 0.9, 0.6, 0.55, 0.5], positions: 128, stderr: [0.01, 0.01, 0.02, 0.02, 0.02] };

  it('assembles deviations, gains, eof, K, budget and cost; JSON round-trips', () => {
    const r = buildReport({ deviations: D, strategy: 'g0', budget: '1', cost: { config: cfg, batch: 4, seqLen: 64 }, model: 'tiny', finalNormApplied: true });
    expect(r.format).toBe('semfreeze.analysis/1');
    expect(r.nLayer).toBe(4);
    expect(r.latentSpaces).toHaveLength(5);
    expect(r.blocks.map((b) => b.block)).toEqual([1, 2, 3, 4]);
    expect(r.blocks.map((b) => b.cliBlock)).toEqual([0, 1, 2, 3]);
    expect(r.boundary.eof).toBe(2); // g0: the largest reduction is block 2 (0.9 → 0.6)
    expect(r.boundary.freezeFromEof).toBe(2);
    expect(r.boundary.freeze).toBe(3); // budget 1 trainable block
    expect(r.boundary.budget?.effect).toBe('capped');
    expect(r.blocks.filter((b) => b.chosen).map((b) => b.block)).toEqual([2]);
    expect(r.blocks.map((b) => b.frozen)).toEqual([true, true, true, false]);
    expect(r.cost!.atK.boundary).toBe(3);
    expect(r.cost!.full.boundary).toBe('none');
    expect(r.cost!.stepRatio).toBeLessThan(1);
    expect(JSON.parse(reportToJson(r))).toEqual(r);
    const text = renderReportText(r);
    expect(count(text, /<== eof/g)).toBe(1);
    expect(text).toMatch(/^ {2}2 .*<== eof \(max gain\)$/m);
    expect(text).toMatch(/budget 1 block\(s\): at most 1 trainable block\(s\); capped: --freeze 2 → 3/);
    expect(text).toMatch(/boundary --freeze 3: blocks 0..2 frozen \(paper 1..3\), block 3 trainable \(paper 4\)/);
    expect(text).toMatch(/backward FLOPs .*\(saving \d/);
    expect(text).toMatch(/step FLOPs .*\(saving \d/);
    expect(text).toMatch(/memory total .*\(saving \d/);
    expect(text).toMatch(/rule of thumb/);
  });

  it('the default strategy is g0; g1 reports its fit; plain arrays work without cost', () => {
    expect(buildReport({ deviations: [1, 0.8, 0.55, 0.45, 0.4, 0.38], metric: 'lens' }).strategy.name).toBe('g0');
    const r = buildReport({ deviations: [1, 0.8, 0.55, 0.45, 0.4, 0.38], metric: 'lens', strategy: 'g1' });
    expect(r.strategy.name).toBe('g1');
    expect(r.cost).toBeNull();
    expect(r.positions).toBeNull();
    const text = renderReportText(r);
    expect(text).toMatch(/fit D̂_k = A·k\^\(−α\) \+ E: A = .*α = .*E = /);
    expect(text).not.toMatch(/predicted cost/);
  });

  it('g2 through the report takes p from the cost config; non-finite gains become null', () => {
    const r = buildReport({ deviations: D, strategy: 'g2', gainContext: { dataSize: 1e5 }, cost: { config: cfg, batch: 1, seqLen: 16 } });
    expect(r.strategy.name).toBe('g2');
    expect(renderReportText(r)).toMatch(/parameters: A = .*p = \d+, D_f = 100000/);
    registerGainStrategy({ name: 'test-neg-inf', description: '', compute: () => ({ strategy: 'test-neg-inf', gains: [-Infinity, 1, 0, -Infinity], details: { x: NaN } }) });
    const s = buildReport({ deviations: D, strategy: 'test-neg-inf' });
    expect(s.blocks[0].gain).toBeNull();
    expect(s.boundary.eof).toBe(2);
    expect((s.strategy.details as Record<string, unknown>).x).toBeNull();
    expect(JSON.parse(reportToJson(s))).toEqual(s);
    expect(renderReportText(s)).toMatch(/^ {2}1 .*—/m);
  });

  it('errors: config N mismatch', () => {
    expect(() => buildReport({ deviations: [1, 0.5, 0.2], strategy: 'g0', cost: { config: cfg, batch: 1, seqLen: 8 } })).toThrow(/N = 2 but the config has nLayer 4/);
  });
});
