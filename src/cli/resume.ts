// What a checkpoint remembers about the run that made it, so that --resume continues that run and
// nothing else: absolute paths, and the model's and the data's size and content hash.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UserError } from './common.ts';

export interface FileFingerprint {
  /** Absolute path when it was recorded (informative: a moved file with the same bytes matches). */
  path: string;
  bytes: number;
  sha256: string;
}

export interface RunFingerprint {
  model: FileFingerprint;
  data: FileFingerprint;
  /** --freeze as given when the run started (none, K or auto). */
  freeze: string;
}

async function hashFiles(paths: string[]): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  for (const p of paths) {
    bytes += statSync(p).size;
    for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  }
  return { bytes, sha256: h.digest('hex') };
}

/** The files that make a model directory's weights: config.json and the (possibly sharded) safetensors. */
function modelFiles(dir: string): string[] {
  if (!existsSync(join(dir, 'config.json'))) throw new UserError(`--model ${dir}: no config.json there`);
  const index = join(dir, 'model.safetensors.index.json');
  if (!existsSync(index)) return [join(dir, 'config.json'), join(dir, 'model.safetensors')].filter(existsSync);
  let shards: string[] = [];
  try {
    const map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
    shards = [...new Set(Object.values(map))].sort().map((f) => join(dir, f));
  } catch {
    // an unreadable index is reported by the model loader; its bytes still identify it
  }
  return [join(dir, 'config.json'), index, ...shards].filter(existsSync);
}

export const fingerprintFile = async (path: string): Promise<FileFingerprint> => ({ path: resolve(path), ...(await hashFiles([path])) });
export const fingerprintModel = async (dir: string): Promise<FileFingerprint> => ({ path: resolve(dir), ...(await hashFiles(modelFiles(dir))) });

const size = (n: number) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${n} bytes`);

/** How the run given now differs from the saved one, one phrase per difference (empty: the same run). */
export function runDifferences(saved: RunFingerprint, now: RunFingerprint, savedFreeze: number | null): string[] {
  const out: string[] = [];
  if (saved.model.sha256 !== now.model.sha256) out.push(`--model ${now.model.path} is not the model the run started from (${saved.model.path}: ${size(saved.model.bytes)}, now ${size(now.model.bytes)}, different content)`);
  if (saved.data.sha256 !== now.data.sha256) {
    const how = saved.data.bytes !== now.data.bytes ? `${size(saved.data.bytes)} then, ${size(now.data.bytes)} now` : 'same size, different content';
    out.push(`--data ${now.data.path} is not the run's data (${saved.data.path}; ${how})`);
  }
  const sameFreeze = now.freeze === saved.freeze || (now.freeze !== 'auto' && now.freeze === String(savedFreeze ?? 'none'));
  if (!sameFreeze) out.push(`--freeze ${now.freeze}, but the run used --freeze ${saved.freeze}${saved.freeze === 'auto' ? ` (K = ${savedFreeze})` : ''}`);
  return out;
}
