// The Python the interop tests use (the repository's .venv, or $SEMFREEZE_PYTHON alone when set: a
// missing path skips them), if it can import `modules`; null otherwise (CI has none).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export function findPython(modules: string): string | null {
  const candidates = process.env.SEMFREEZE_PYTHON ? [process.env.SEMFREEZE_PYTHON] : [new URL('../../.venv/bin/python', import.meta.url).pathname];
  return candidates.find((p) => existsSync(p) && spawnSync(p, ['-c', `import ${modules}`], { stdio: 'ignore' }).status === 0) ?? null;
}
