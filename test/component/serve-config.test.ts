// `sluice serve` with a broken config: exit code 2 and every problem with its key path, before anything listens.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/registry.js';
import { runSluice } from '../helpers/sluice.js';

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

describe('sluice serve with an invalid config', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-badcfg-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exits 2 listing every problem, and never listens', async () => {
    const port = await freePort();
    const file = join(dir, 'sluice.yaml');
    await writeFile(file, [
      `listen: 127.0.0.1:${port}`,
      'storage: ./data',
      'defaultUpstream: nowhere.example',
      'upstreams: { docker.io: { url: "ftp://registry-1.docker.io" } }',
      'windows: [{ start: "02:00", end: "06:00", timezone: Mars/Base }]',
      'allowlist: ["UPPER/case"]',
    ].join('\n'));
    const r = await runSluice(['serve', '--config', file], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    for (const key of ['defaultUpstream:', 'upstreams.docker.io.url:', 'windows[0].timezone:', 'allowlist[0]:']) {
      expect(r.stderr).toContain(key);
    }
    expect(await listening(port)).toBe(false);
  });

  it('a corrupt allowlist file stops start-up with exit 2 instead of serving with an empty list', async () => {
    const port = await freePort();
    const file = join(dir, 'ok.yaml');
    await writeFile(file, `listen: 127.0.0.1:${port}\nstorage: ./store\nupstreams: { docker.io: { url: "http://127.0.0.1:9" } }\nadmin: { listen: "127.0.0.1:0" }\n`);
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, 'store'), { recursive: true });
    await writeFile(join(dir, 'store', 'allowlist.json'), '{"version":1,"rules":[{"rule":"ghcr.io/x:1"');
    const r = await runSluice(['serve', '--config', file], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('allowlist.json');
    expect(await listening(port)).toBe(false);
  });
});
