// DIR/config.json alone: cheap enough to check the user's flags against the model (context length,
// block count) before the weights are read.
import type { Platform } from '../platform/types.ts';
import { decodeText } from '../util/utf8.ts';
import { parseConfig, type ModelConfig } from './config.ts';
import { ModelLoadError } from './errors.ts';

export const modelFile = (dir: string, file: string) => (dir.endsWith('/') ? dir + file : `${dir}/${file}`);

export async function readModelConfig(platform: Platform, dir: string): Promise<{ config: ModelConfig; configJson: string }> {
  const configPath = modelFile(dir, 'config.json');
  let configJson: string;
  try {
    configJson = decodeText(await platform.readBytes(configPath));
  } catch (e) {
    throw new ModelLoadError(`${configPath}: cannot read the model's config (${(e as Error).message.replace(`${configPath}: `, '')})`);
  }
  return { config: parseConfig(configJson, configPath), configJson };
}
