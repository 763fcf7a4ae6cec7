// `semfreeze doctor`: what WebGPU adapter this machine gives us and how fast a matmul runs on it.
import { adapterReport } from '../ops/speed.ts';
import { openRuntime, printJson } from './common.ts';

export async function doctor(opts: { json?: boolean; size?: number }): Promise<void> {
  const rt = await openRuntime();
  const g = rt.gpu;
  const report = await adapterReport(rt, opts.size ?? 1024);
  const { limits } = report;
  const gflops = report.matmul.gflops;
  if (opts.json) {
    printJson(report);
    return;
  }
  const size = (x: number) => (x >= 2 ** 20 ? `${(x / 2 ** 20).toFixed(0)} MiB` : `${(x / 1024).toFixed(0)} KiB`);
  const lines = [
    `adapter       ${g.info.vendor} / ${g.info.architecture}${g.info.isSoftware && g.info.architecture !== 'software' ? ' (software)' : ''}`,
    `description   ${g.info.description}`,
    `backend       ${g.info.backend}`,
    `features      ${report.features.join(', ') || '(none)'}`,
    ...Object.entries(limits).map(([k, v]) => `${k.padEnd(36)}${/Size$/.test(k) ? size(v) : v}`.replace(/^/, 'limit ')),
    `matmul        ${report.matmul.shape} f32: ${gflops.toFixed(1)} GFLOP/s (${report.matmul.timing}; ${report.matmul.path === 'tiled' ? 'tiled kernel' : 'transposes into tn'})`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
