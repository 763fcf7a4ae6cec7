// Headless Chromium for the browser tests: WebGPU through SwiftShader (Chromium's CPU Vulkan), so
// they run on a machine without a GPU. `npm run setup` installs Debian's chromium; SEMFREEZE_CHROMIUM
// points at another binary.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The Chromium to test with: $SEMFREEZE_CHROMIUM, else /usr/bin/chromium, else chromium or chromium-browser on PATH; null if none. */
export function chromiumPath(): string | null {
  const env = process.env.SEMFREEZE_CHROMIUM;
  if (env) return executable(env) ? env : null;
  if (executable('/usr/bin/chromium')) return '/usr/bin/chromium';
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    for (const name of ['chromium', 'chromium-browser']) {
      const p = join(dir, name);
      if (executable(p)) return p;
    }
  }
  return null;
}

/** Chromium's flags for WebGPU on SwiftShader (its CPU Vulkan); --no-sandbox where running as root. */
export function chromiumArgs(): string[] {
  const args = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];
  if (process.getuid?.() === 0) args.push('--no-sandbox');
  return args;
}

/** A headless Chromium with WebGPU (SwiftShader). Throws if no Chromium is installed. */
export async function launchChromium(): Promise<Browser> {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error('no Chromium found (set SEMFREEZE_CHROMIUM, or run `npm run setup` to install Debian\'s chromium)');
  return chromium.launch({ executablePath, headless: true, args: chromiumArgs() });
}

export interface PageOutcome {
  /** document.body.dataset.state at the end: 'done' or 'error'. */
  state: string;
  /** textContent of #result. */
  result: string;
  /** Console messages and page errors, in order ('[type] text', '[pageerror] ...'). */
  console: string[];
}

/**
 * Open `url` in a new page and wait until the page sets document.body.dataset.state to 'done' or
 * 'error'. A timeout (or a page that never gets there) throws with everything the page printed.
 */
export async function openPage(browser: Browser, url: string, { timeoutMs = 60_000 }: { timeoutMs?: number } = {}): Promise<PageOutcome> {
  const page = await browser.newPage();
  const log: string[] = [];
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.stack ?? e.message}`));
  page.on('requestfailed', (r) => log.push(`[requestfailed] ${r.url()}: ${r.failure()?.errorText ?? ''}`));
  try {
    await page.goto(url, { timeout: timeoutMs });
    try {
      await page.waitForFunction(() => ['done', 'error'].includes(document.body?.dataset.state ?? ''), undefined, { timeout: timeoutMs, polling: 100 });
    } catch (e) {
      const state = await page.evaluate(() => document.body?.dataset.state ?? '(no body)').catch(() => '(page gone)');
      throw new Error(`${url}: the page did not finish within ${timeoutMs} ms (state ${state}): ${(e as Error).message}\npage console:\n${log.join('\n') || '(nothing)'}`);
    }
    const { state, result } = await page.evaluate(() => ({ state: document.body.dataset.state ?? '', result: document.getElementById('result')?.textContent ?? '' }));
    return { state, result, console: log };
  } finally {
    await page.close();
  }
}
