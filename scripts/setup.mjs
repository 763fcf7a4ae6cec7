#!/usr/bin/env node
// `npm run setup`: install npm dependencies, then make sure a WebGPU adapter exists.
// On Debian 12 without one (no GPU), install Mesa's lavapipe from bookworm-backports
// (bookworm's own Mesa 22.3 is rejected by Dawn). Then make sure Debian's chromium is there for the
// browser tests (installed as root with apt-get, else the command is printed; never fatal), and
// the Python venv .venv for the interop tests (from pip's package index; never fatal).
// Idempotent: a second run takes seconds.
// Plain Node, no dependencies: it runs before node_modules exists.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, writeFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { delimiter, join, dirname } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const log = (msg) => process.stderr.write(`setup: ${msg}\n`);

function run(cmd, args, opts = {}) {
  log(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts });
  if (r.status !== 0) throw new Error(`setup: '${cmd} ${args.join(' ')}' failed (exit ${r.status})`);
}

function npmDependencies() {
  const lock = join(root, 'package-lock.json');
  const marker = join(root, 'node_modules', '.package-lock.json');
  // Already installed and consistent with package.json: nothing to do (keeps a second run to seconds).
  if (existsSync(marker) && existsSync(lock) && readFileSync(marker, 'utf8').length > 0) {
    const r = spawnSync('npm', ['ls', '--depth=0', '--silent'], { cwd: root, stdio: 'ignore' });
    if (r.status === 0) { log('npm dependencies present'); return; }
  }
  run('npm', existsSync(lock) ? ['ci', '--no-audit', '--no-fund'] : ['install', '--no-audit', '--no-fund']);
}

/** Ask Dawn for an adapter in a child process (a failed Dawn start must not take setup down). */
function probeAdapter() {
  const probe = `
    import { create, globals } from 'webgpu';
    Object.assign(globalThis, globals);
    const gpu = create([]);
    const a = await gpu.requestAdapter();
    if (!a) { console.log('NONE'); process.exit(0); }
    const i = a.info ?? {};
    console.log('ADAPTER ' + [i.vendor, i.architecture, i.description].filter(Boolean).join(' / '));
    process.exit(0);`;
  const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? mkdtempSync(join(tmpdir(), 'xdg-')) };
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { cwd: root, env, encoding: 'utf8', timeout: 60_000 });
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('ADAPTER '));
  return line ? line.slice('ADAPTER '.length) : null;
}

function debianCodename() {
  try {
    const os = readFileSync('/etc/os-release', 'utf8');
    return /^VERSION_CODENAME=(\w+)/m.exec(os)?.[1] ?? null;
  } catch { return null; }
}

/** Find the machine's own Debian source (URI + keyring) so backports comes from the same mirror. */
function debianSource(codename) {
  const dir = '/etc/apt/sources.list.d';
  for (const f of existsSync(dir) ? readdirSync(dir) : []) {
    if (!f.endsWith('.sources')) continue;
    const text = readFileSync(join(dir, f), 'utf8');
    for (const stanza of text.split(/\n\s*\n/)) {
      const suites = /^Suites:\s*(.+)$/m.exec(stanza)?.[1].split(/\s+/) ?? [];
      const uri = /^URIs:\s*(\S+)/m.exec(stanza)?.[1];
      if (uri && suites.includes(codename) && !uri.includes('security')) {
        return { uri, keyring: /^Signed-By:\s*(\S+)/m.exec(stanza)?.[1] ?? '/usr/share/keyrings/debian-archive-keyring.gpg' };
      }
    }
  }
  if (existsSync('/etc/apt/sources.list')) {
    const m = new RegExp(`^deb\\s+(?:\\[[^\\]]*\\]\\s+)?(\\S+)\\s+${codename}\\s`, 'm').exec(readFileSync('/etc/apt/sources.list', 'utf8'));
    if (m) return { uri: m[1], keyring: '/usr/share/keyrings/debian-archive-keyring.gpg' };
  }
  return { uri: 'http://deb.debian.org/debian', keyring: '/usr/share/keyrings/debian-archive-keyring.gpg' };
}

const FIX_BOOKWORM = [
  '# as root, on Debian 12 (bookworm):',
  "printf 'Types: deb\\nURIs: http://deb.debian.org/debian\\nSuites: bookworm-backports\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > /etc/apt/sources.list.d/semfreeze-backports.sources",
  'apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1',
].join('\n');
const FIX_GENERIC = 'Install a Vulkan driver for your GPU, or Mesa\'s software driver lavapipe (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1; it must be Mesa 24 or newer).';

function installLavapipe() {
  const codename = debianCodename();
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const hasApt = existsSync('/usr/bin/apt-get');
  if (!hasApt || !isRoot) {
    log('no WebGPU adapter, and setup cannot install one here (needs root and apt-get). Run:');
    console.error(codename === 'bookworm' ? FIX_BOOKWORM : FIX_GENERIC);
    process.exit(1);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (codename === 'bookworm') {
    const { uri, keyring } = debianSource(codename);
    const file = '/etc/apt/sources.list.d/semfreeze-backports.sources';
    const stanza = `Types: deb\nURIs: ${uri}\nSuites: bookworm-backports\nComponents: main\nSigned-By: ${keyring}\n`;
    if (!existsSync(file) || readFileSync(file, 'utf8') !== stanza) {
      log(`adding ${file} (${uri} bookworm-backports)`);
      writeFileSync(file, stanza);
    }
    run('apt-get', ['update', '-q'], { env });
    run('apt-get', ['install', '-y', '-q', '--no-install-recommends', '-t', 'bookworm-backports', 'mesa-vulkan-drivers', 'libvulkan1'], { env });
  } else {
    run('apt-get', ['update', '-q'], { env });
    run('apt-get', ['install', '-y', '-q', '--no-install-recommends', 'mesa-vulkan-drivers', 'libvulkan1'], { env });
  }
}

/** The Chromium the browser tests use: $SEMFREEZE_CHROMIUM, /usr/bin/chromium, or chromium(-browser) on PATH. */
function findChromium() {
  const candidates = [process.env.SEMFREEZE_CHROMIUM, '/usr/bin/chromium'];
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) candidates.push(join(dir, 'chromium'), join(dir, 'chromium-browser'));
  for (const c of candidates) {
    if (!c) continue;
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch { /* next */ }
  }
  return null;
}

function chromiumVersion(path) {
  const r = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  return (r.stdout ?? '').trim().split('\n')[0] || `unknown version (${path} --version: exit ${r.status})`;
}

const CHROMIUM_FIX = '# as root, on Debian/Ubuntu:\napt-get install -y --no-install-recommends chromium   # (apt-get update first if apt has no package lists)';

/**
 * The browser tests (test/web-infra.test.ts) run the bundle in headless Chromium with SwiftShader
 * WebGPU. Install Debian's chromium when it is missing and setup can (root, apt-get); otherwise say
 * the command and go on: the tests skip without it. Never fails setup, never downloads a browser any
 * other way.
 */
function ensureChromium() {
  let found = findChromium();
  if (found) { log(`Chromium for the browser tests: ${chromiumVersion(found)} (${found})`); return; }
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || !existsSync('/usr/bin/apt-get')) {
    log('no Chromium for the browser tests (they will be skipped); to install it:');
    console.error(CHROMIUM_FIX);
    return;
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => {
    log('$ apt-get install -y --no-install-recommends chromium');
    return spawnSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', 'chromium'], { stdio: ['ignore', 'inherit', 'pipe'], env, encoding: 'utf8' });
  };
  let r = install();
  if (r.status !== 0) {
    process.stderr.write(r.stderr ?? '');
    // "Unable to locate package" / "has no installation candidate": apt has no (fresh) package lists.
    if (/Unable to locate package|no installation candidate|Failed to fetch|404/i.test(r.stderr ?? '')) {
      log('$ apt-get update -q');
      const u = spawnSync('apt-get', ['update', '-q'], { stdio: 'inherit', env });
      if (u.status === 0) r = install();
    }
  }
  if (r.status !== 0) process.stderr.write(r.stderr ?? '');
  found = findChromium();
  if (found) log(`Chromium for the browser tests: ${chromiumVersion(found)} (${found})`);
  else {
    log('could not install Chromium (the browser tests will be skipped); to install it:');
    console.error(CHROMIUM_FIX);
  }
}

/** What the Python interop tests import (test/util/python.ts finds .venv/bin/python). */
const VENV_PACKAGES = ['torch', 'transformers', 'safetensors', 'peft', 'tokenizers', 'accelerate'];

function venvVersions(python) {
  const r = spawnSync(python, ['-c', `import ${VENV_PACKAGES.join(', ')}, sys; print('python ' + sys.version.split()[0] + ', ' + ', '.join(m.__name__ + ' ' + m.__version__ for m in (${VENV_PACKAGES.join(', ')})))`], { encoding: 'utf8', timeout: 120_000 });
  return r.status === 0 ? r.stdout.trim() : null;
}

function findOnPath(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch { /* next */ }
  }
  return null;
}

/**
 * The Python venv the interop tests use (.venv: torch, transformers, peft, ...: the families against
 * transformers, the tokenizers library, the plan export with Trainer, PEFT and LLaMA-Factory's selection
 * logic). Created when missing, completed when a package is missing, from the package index pip is set
 * up with (an offline mirror); an existing .venv is never removed or replaced. Never fatal: without
 * python3, its venv module or the packages, the Python tests are skipped, and setup says so.
 */
function ensurePythonVenv() {
  const venv = join(root, '.venv');
  const python = join(venv, 'bin', 'python');
  const skip = (why) => log(`${why}; the Python interop tests will be skipped`);
  if (existsSync(python)) {
    const v = venvVersions(python);
    if (v) { log(`Python venv for the interop tests: .venv (${v})`); return; }
  } else if (existsSync(venv)) {
    skip('.venv exists but has no bin/python (remove it and run setup again to build it)');
    return;
  } else {
    const python3 = findOnPath('python3');
    if (!python3) { skip('no python3 on PATH for the Python venv'); return; }
    log('$ python3 -m venv .venv');
    const r = spawnSync(python3, ['-m', 'venv', venv], { cwd: root, stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
    if (r.status !== 0) {
      process.stderr.write(r.stderr ?? '');
      rmSync(venv, { recursive: true, force: true }); // ours, half made
      skip('python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)');
      return;
    }
  }
  const args = ['-m', 'pip', 'install', '--retries', '0', '--timeout', '2', ...VENV_PACKAGES];
  log(`$ .venv/bin/pip install --retries 0 --timeout 2 ${VENV_PACKAGES.join(' ')}`);
  const t0 = Date.now();
  const r = spawnSync(python, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  const v = r.status === 0 ? venvVersions(python) : null;
  if (v) log(`Python venv for the interop tests: .venv (${v}; installed in ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  else skip(`pip could not install ${VENV_PACKAGES.join(', ')} into .venv (exit ${r.status}; is the package index reachable?)`);
}

npmDependencies();
let adapter = probeAdapter();
if (!adapter) {
  log('no WebGPU adapter found; installing the software Vulkan driver (Mesa lavapipe)');
  installLavapipe();
  adapter = probeAdapter();
}
if (!adapter) {
  log('still no WebGPU adapter after installing lavapipe. Check `vulkaninfo --summary`, then:');
  console.error(debianCodename() === 'bookworm' ? FIX_BOOKWORM : FIX_GENERIC);
  process.exit(1);
}
log(`WebGPU adapter: ${adapter}`);
ensureChromium();
ensurePythonVenv();
log('ready: `npm start` runs the demo, `npm run web` serves the page, `npm test` runs the tests');
