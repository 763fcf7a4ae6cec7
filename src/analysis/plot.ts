// SVG in the spirit of the paper's Figure 2: deviation per latent space 0..N (top panel), gain per block
// 1..N (bottom panel, negative gains below the zero axis), the freeze boundary as a vertical line with a
// label, the frozen part greyed. A plain string; no dependencies, no DOM.
//
// Element classes (stable, for tests and styling): rect.dev-bar (N+1), rect.gain-bar (N), the chosen
// (eof) gain bar also has class "chosen", bars of frozen parts "frozen"; g#boundary holds the marker.

import { AnalysisError } from './types.ts';

export interface PlotInput {
  /** D_0..D_N. */
  deviations: readonly number[];
  /** gains[k − 1] = G_k, k = 1..N. */
  gains: readonly number[];
  /** K: blocks 0..K−1 (paper 1..K) frozen. */
  freeze: number;
  /** Paper's eof (block with the max gain), highlighted; defaults to K. */
  eof?: number;
  title?: string;
  metric?: string;
  strategy?: string;
}

export interface PlotOptions {
  width?: number;
  height?: number;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Compact number for labels. */
function fmt(v: number): string {
  if (!Number.isFinite(v)) return v > 0 ? '∞' : v < 0 ? '−∞' : 'NaN';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
  return String(+v.toPrecision(3));
}

const n2 = (v: number) => String(Math.round(v * 100) / 100);

const COLORS = {
  dev: '#4c78a8',
  gainPos: '#54a24b',
  gainNeg: '#e45756',
  chosen: '#f58518',
  frozenBar: '#a0a0a0',
  frozenBg: '#ececec',
  axis: '#333333',
  boundary: '#222222',
};

export function renderAnalysisSvg(input: PlotInput, opts: PlotOptions = {}): string {
  const D = input.deviations;
  const G = input.gains;
  const N = G.length;
  if (D.length !== N + 1) throw new AnalysisError(`plot: ${D.length} deviations but ${N} gains (need N+1 and N)`);
  if (N < 1) throw new AnalysisError('plot: need N ≥ 1');
  const K = input.freeze;
  if (!Number.isInteger(K) || K < 0 || K > N) throw new AnalysisError(`plot: freeze ${K} is outside 0..${N}`);
  const eof = input.eof ?? K;
  const W = opts.width ?? 800;
  const H = opts.height ?? 400;

  const left = 78;
  const right = 24;
  const plotW = W - left - right;
  const top1 = 48;
  const h1 = (H - 110) * 0.45;
  const top2 = top1 + h1 + 34;
  const h2 = H - top2 - 46;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  const title = input.title ?? `Deviation per latent space and gain per block${input.strategy ? ` (${input.strategy})` : ''}`;
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);

  // ---- deviation panel: N+1 slots
  const slot1 = plotW / (N + 1);
  const finiteD = D.filter((v) => Number.isFinite(v));
  const dMax = Math.max(0, ...finiteD);
  const dMin = Math.min(0, ...finiteD);
  const dSpan = dMax - dMin || 1;
  const y1 = (v: number) => top1 + h1 - ((v - dMin) / dSpan) * h1;
  const frozenW1 = (K + 1) * slot1;
  out.push(`<rect class="frozen-region" x="${n2(left)}" y="${n2(top1)}" width="${n2(frozenW1)}" height="${n2(h1)}" fill="${COLORS.frozenBg}"/>`);
  const tickEvery = Math.max(1, Math.ceil((N + 1) / 25));
  for (let k = 0; k <= N; k++) {
    const v = D[k];
    const x = left + k * slot1 + slot1 * 0.15;
    const bw = slot1 * 0.7;
    const fin = Number.isFinite(v);
    const yTop = fin ? Math.min(y1(v), y1(0)) : y1(0);
    const hgt = fin ? Math.abs(y1(v) - y1(0)) : 0;
    const frozen = k <= K;
    out.push(
      `<rect class="dev-bar${frozen ? ' frozen' : ''}" x="${n2(x)}" y="${n2(yTop)}" width="${n2(bw)}" height="${n2(hgt)}" fill="${frozen ? COLORS.frozenBar : COLORS.dev}"><title>${esc(`D_${k} = ${fmt(v)}`)}</title></rect>`,
    );
    if (k % tickEvery === 0 || k === N) out.push(`<text x="${n2(left + (k + 0.5) * slot1)}" y="${n2(top1 + h1 + 13)}" text-anchor="middle">${k}</text>`);
  }
  out.push(`<line x1="${left}" y1="${n2(y1(0))}" x2="${left + plotW}" y2="${n2(y1(0))}" stroke="${COLORS.axis}"/>`);
  out.push(`<line x1="${left}" y1="${n2(top1)}" x2="${left}" y2="${n2(top1 + h1)}" stroke="${COLORS.axis}"/>`);
  out.push(`<text x="${left - 4}" y="${n2(top1 + 4)}" text-anchor="end">${esc(fmt(dMax))}</text>`);
  out.push(`<text x="${left - 4}" y="${n2(top1 + h1 + 4)}" text-anchor="end">${esc(fmt(dMin))}</text>`);
  const devLabel = `deviation D_k${input.metric ? ` (${input.metric})` : ''}`;
  out.push(`<text transform="translate(16 ${n2(top1 + h1 / 2)}) rotate(-90)" text-anchor="middle">${esc(devLabel)}</text>`);
  out.push(`<text x="${n2(left + plotW)}" y="${n2(top1 + h1 + 26)}" text-anchor="end">latent space k (0 = embeddings, k = after block k)</text>`);

  // ---- gain panel: N slots
  const slot2 = plotW / N;
  const finiteG = G.filter((v) => Number.isFinite(v));
  const gMax = Math.max(0, ...finiteG);
  const gMin = Math.min(0, ...finiteG);
  const gSpan = gMax - gMin || 1;
  const y2 = (v: number) => top2 + h2 - ((v - gMin) / gSpan) * h2;
  out.push(`<rect class="frozen-region" x="${n2(left)}" y="${n2(top2)}" width="${n2(K * slot2)}" height="${n2(h2)}" fill="${COLORS.frozenBg}"/>`);
  const tickEvery2 = Math.max(1, Math.ceil(N / 25));
  for (let k = 1; k <= N; k++) {
    const v = G[k - 1];
    const x = left + (k - 1) * slot2 + slot2 * 0.15;
    const bw = slot2 * 0.7;
    const fin = Number.isFinite(v);
    const yTop = fin ? Math.min(y2(v), y2(0)) : y2(0);
    const hgt = fin ? Math.abs(y2(v) - y2(0)) : 0;
    const frozen = k <= K;
    const chosen = k === eof;
    const fill = chosen ? COLORS.chosen : frozen ? COLORS.frozenBar : fin && v < 0 ? COLORS.gainNeg : COLORS.gainPos;
    const cls = `gain-bar${frozen ? ' frozen' : ''}${chosen ? ' chosen' : ''}${fin ? '' : ' nonfinite'}`;
    out.push(`<rect class="${cls}" x="${n2(x)}" y="${n2(yTop)}" width="${n2(bw)}" height="${n2(hgt)}" fill="${fill}"${chosen ? ` stroke="${COLORS.boundary}"` : ''}><title>${esc(`G_${k} = ${fmt(v)}`)}</title></rect>`);
    if (!fin) out.push(`<text x="${n2(x + bw / 2)}" y="${n2(y2(0) + 12)}" text-anchor="middle">${esc(fmt(v))}</text>`);
    if ((k - 1) % tickEvery2 === 0 || k === N) out.push(`<text x="${n2(left + (k - 0.5) * slot2)}" y="${n2(top2 + h2 + 13)}" text-anchor="middle">${k}</text>`);
  }
  out.push(`<line x1="${left}" y1="${n2(y2(0))}" x2="${left + plotW}" y2="${n2(y2(0))}" stroke="${COLORS.axis}"/>`);
  out.push(`<line x1="${left}" y1="${n2(top2)}" x2="${left}" y2="${n2(top2 + h2)}" stroke="${COLORS.axis}"/>`);
  out.push(`<text x="${left - 4}" y="${n2(top2 + 4)}" text-anchor="end">${esc(fmt(gMax))}</text>`);
  out.push(`<text x="${left - 4}" y="${n2(y2(0) + 4)}" text-anchor="end">0</text>`);
  if (gMin < 0) out.push(`<text x="${left - 4}" y="${n2(top2 + h2 + 4)}" text-anchor="end">${esc(fmt(gMin))}</text>`);
  out.push(`<text transform="translate(16 ${n2(top2 + h2 / 2)}) rotate(-90)" text-anchor="middle">${esc('gain G_k')}</text>`);
  out.push(`<text x="${n2(left + plotW)}" y="${n2(top2 + h2 + 28)}" text-anchor="end">block k (paper numbering 1..N; CLI block k−1)</text>`);

  // ---- boundary: after latent space K (top) and after block K (bottom)
  const bx1 = left + (K + 1) * slot1;
  const bx2 = left + K * slot2;
  out.push(`<g id="boundary" class="boundary">`);
  out.push(`<line x1="${n2(bx1)}" y1="${n2(top1 - 4)}" x2="${n2(bx1)}" y2="${n2(top1 + h1)}" stroke="${COLORS.boundary}" stroke-width="2" stroke-dasharray="5,3"/>`);
  out.push(`<line x1="${n2(bx1)}" y1="${n2(top1 + h1)}" x2="${n2(bx2)}" y2="${n2(top2)}" stroke="${COLORS.boundary}" stroke-width="1" stroke-dasharray="2,3"/>`);
  out.push(`<line x1="${n2(bx2)}" y1="${n2(top2)}" x2="${n2(bx2)}" y2="${n2(top2 + h2 + 4)}" stroke="${COLORS.boundary}" stroke-width="2" stroke-dasharray="5,3"/>`);
  const label = `--freeze ${K} (eof = ${eof}${eof !== K ? ', budget applied' : ''}): frozen ← | → fine-tuned`;
  const anchorLeft = bx1 > left + plotW * 0.6;
  out.push(`<text x="${n2(bx1 + (anchorLeft ? -6 : 6))}" y="${n2(top1 - 7)}" text-anchor="${anchorLeft ? 'end' : 'start'}" font-weight="bold">${esc(label)}</text>`);
  out.push(`</g>`);
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}
