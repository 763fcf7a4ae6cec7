// Types of scripts/serve-web.mjs (plain Node ESM, imported by the tests).
export declare const repoRoot: string;
export declare const REPO_MOUNTS: [string, string][];
export declare const CONTENT_TYPES: Record<string, string>;
export declare function contentType(path: string): string;
export declare function parseRange(header: string | undefined, size: number): null | 'unsatisfiable' | { start: number; end: number };
export declare function routePath(rawPath: string, opts: { root: string; distDir: string }): number | { base: string; rel: string };
export interface ServeWebOptions {
  /** 0 (the default): any free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Repository root: models/, test/fixtures/ and data/ are served from it. */
  root?: string;
  /** The built page (default <root>/web/dist). */
  distDir?: string;
}
export declare function serveWeb(opts?: ServeWebOptions): Promise<{ url: string; port: number; close(): Promise<void> }>;
