// What start-up loads, read from a real process (not timed: the figures are bench case 5's). `sluice serve` with the
// default filesystem store must not load what only some configs need (the S3 SDK, pg, sigstore, tar and zstd, bcrypt,
// undici before the first upstream request, Ajv before the first admin request, prom-client's default metrics before
// the first scrape), and `sluice --help` nothing of the server at all.
import { access, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import module from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runSluice, sluiceConfigYaml, startSluiceProcess } from '../helpers/sluice.js';

const BUNDLE_DIR = join(REPO_ROOT, 'dist', 'bundle');

// Preloaded with --import: every module resolved through the ESM loader (a hook, on its own thread) and, at exit,
// every CommonJS module in require's cache, one path or URL a line into $SLUICE_TEST_LOADED.
const HOOKS = `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.SLUICE_TEST_LOADED, r.url + '\\n');
  return r;
}
`;
const PRELOAD = `import { register, createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
register('./hooks.mjs', import.meta.url);
const require = createRequire(import.meta.url);
process.on('exit', () => appendFileSync(process.env.SLUICE_TEST_LOADED, Object.keys(require.cache).join('\\n') + '\\n'));
`;

/** Only some configs (or commands) need these; a plain fs-store server must start without them. */
// Ajv is loaded by fastify's compilers only when a route first validates (fast-json-stringify itself is not listed:
// fastify's error serializer requires part of it at start). prom-client's default metrics (and @opentelemetry/api,
// which they require) and its Summary (tdigest) are loaded with the first scrape (src/metrics/prom.ts).
const NOT_AT_START = [
  '@aws-sdk/client-s3', 'pg', '@sigstore/verify', '@sigstore/bundle', 'tar-stream', 'zstd-napi', 'bcryptjs', 'undici',
  'ajv', '@fastify/ajv-compiler', '@fastify/fast-json-stringify-compiler', '@opentelemetry/api', 'tdigest',
];

const hasCompileCache = typeof (module as { enableCompileCache?: unknown }).enableCompileCache === 'function';

/**
 * The packages loaded: from node_modules by path, and those inlined in the files of the bundle (dist/bundle/, see
 * src/release/cli-bundle.ts) that were loaded, which name each module they hold in a `// node_modules/PKG/…` line.
 */
async function packagesIn(list: string): Promise<Set<string>> {
  const found = new Set<string>();
  for (const m of list.matchAll(/\/node_modules\/((?:@[^/]+\/)?[^/]+)\//g)) if (m[1]) found.add(m[1]);
  for (const file of bundleFilesIn(list)) {
    for (const m of (await readFile(file, 'utf8')).matchAll(/^\/\/ (?:\.\.\/)*node_modules\/((?:@[^/]+\/)?[^/]+)\//gm)) if (m[1]) found.add(m[1]);
  }
  return found;
}

function bundleFilesIn(list: string): string[] {
  const files = new Set<string>();
  for (const line of list.split('\n')) {
    const path = line.startsWith('file:') ? fileURLToPath(line) : line;
    if (path.startsWith(BUNDLE_DIR)) files.add(path);
  }
  return [...files];
}

describe('what start-up loads', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let loadedFile: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-startup-'));
    await writeFile(join(dir, 'hooks.mjs'), HOOKS);
    await writeFile(join(dir, 'preload.mjs'), PRELOAD);
    loadedFile = join(dir, 'loaded.txt');
    const preload = `--import=${pathToFileURL(join(dir, 'preload.mjs')).href}`;
    env = { ...process.env, SLUICE_TEST_LOADED: loadedFile, NODE_OPTIONS: [process.env.NODE_OPTIONS, preload].filter(Boolean).join(' ') };
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('serve on the default filesystem store loads fastify but none of the S3 SDK, pg, sigstore, tar, zstd, bcrypt, undici, Ajv or the default metrics', async () => {
    await rm(loadedFile, { force: true });
    const storage = join(dir, 'store');
    const s = await startSluiceProcess(sluiceConfigYaml(storage), { dir, env });
    expect((await fetch(`${s.url}/v2/`)).status).toBe(200);
    expect(await s.stop()).toBe(0);
    const list = await readFile(loadedFile, 'utf8');
    const loaded = await packagesIn(list);
    // The list is real: what serve does need is in it, from the bundle (fastify, yaml) or node_modules (prom-client).
    expect(bundleFilesIn(list).length).toBeGreaterThan(0);
    expect(loaded).toContain('fastify');
    expect(loaded).toContain('yaml');
    expect(loaded).toContain('prom-client');
    expect(NOT_AT_START.filter((p) => loaded.has(p))).toEqual([]);
    // Node's compile cache lives beside the store where Node has one (≥ 22.1), and nowhere on Node 20.
    const cache = join(storage, 'node-compile-cache');
    if (hasCompileCache) expect((await readdir(cache)).length).toBeGreaterThan(0);
    else await expect(access(cache)).rejects.toThrow();
  });

  it('--help loads no command handler: neither the server (fastify) nor the config parser (yaml) nor the store (lowdb)', async () => {
    await rm(loadedFile, { force: true });
    const r = await runSluice(['--help'], { env });
    expect(r.code).toBe(0);
    const list = await readFile(loadedFile, 'utf8');
    expect(list).toContain('/dist/bundle/cli/cli.mjs');
    const loaded = await packagesIn(list);
    expect(['fastify', 'yaml', 'lowdb', ...NOT_AT_START].filter((p) => loaded.has(p))).toEqual([]);
  });
});
