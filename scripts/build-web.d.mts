// Types of scripts/build-web.mjs (plain Node ESM, imported by the tests).
import type { Metafile } from 'esbuild';

export declare const repoRoot: string;
export declare const DEFAULT_ENTRY_POINTS: Readonly<Record<string, string>>;
export declare class WebBuildError extends Error {}
export declare function readKernels(root?: string): Record<string, string>;
export declare function findNodeImports(code: string): string[];
export interface BuildWebOptions {
  /** Output folder, relative to the repository root unless absolute (default web/dist). */
  outdir?: string;
  minify?: boolean;
  /** Output name (without .js) → source file (default { semfreeze: 'src/browser.ts', main: 'web/main.ts' }). */
  entryPoints?: Record<string, string>;
  /** Files copied into outdir as they are (default web/index.html and web/*.css). */
  copy?: string[];
  /** Repository root (where kernels/ is). */
  root?: string;
}
export declare function buildWeb(opts?: BuildWebOptions): Promise<{ outdir: string; files: string[]; metafile: Metafile }>;
