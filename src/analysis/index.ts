// Host-side analysis of SALF (method.md sections 2-6). Platform-agnostic: no fs, runs in a browser too.
export * from './types.ts';
export * from './cholesky.ts';
export * from './deviation.ts';
export * from './cost.ts';
export * from './gain.ts';
export * from './boundary.ts';
export * from './plot.ts';
export * from './report.ts';
