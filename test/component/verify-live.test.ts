// `sluice verify --repair` next to a running server: a blob that rotted on disk is found, quarantined, and the
// server — which had it in memory — stops serving it at once (outside a window: 404 "not cached").
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { freePort } from '../helpers/registry.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';

describe('verify --repair against a running server', () => {
  let dir: string;
  let layout: LayoutDescription;
  let sluice: SluiceProcess;
  const storage = (): string => join(dir, 'data');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-verify-live-'));
    layout = await buildLayout(join(dir, 'layout'));
    const yaml = sluiceConfigYaml(storage(), {
      allowlist: layout.images.map((i) => i.ref),
      extra: { admin: { listen: `127.0.0.1:${await freePort()}` } },
    });
    sluice = await startSluiceProcess(yaml);
    const imported = await runSluice(['import', join(dir, 'layout'), '--config', sluice.configFile]);
    expect(imported.code, imported.stderr).toBe(0);
  });
  afterAll(async () => {
    await sluice?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('finds the rotten blob, quarantines it, and the server stops serving it', async () => {
    const image = layout.images.find((i) => i.kind === 'oci-manifest');
    if (!image) throw new Error('layout has no single manifest');
    const host = image.ref.split('/')[0] ?? '';
    const name = image.ref.slice(host.length + 1).split(':')[0] ?? '';
    const small = image.blobs.filter((b) => !b.mediaType.includes('manifest')).sort((x, y) => x.size - y.size)[0];
    if (!small) throw new Error('image has no blobs');
    const url = `${sluice.url}/v2/${name}/blobs/${small.digest}?ns=${host}`;
    expect((await fetch(url)).status).toBe(200); // now in the server's memory

    const file = join(storage(), 'blobs', 'sha256', small.digest.slice(7, 9), small.digest.slice(7));
    const bytes = Buffer.from(await readFile(file));
    bytes[0] = (bytes[0] ?? 0) ^ 0xff;
    await writeFile(file, bytes);

    const found = await runSluice(['verify', '--config', sluice.configFile]);
    expect(found.code).toBe(1);
    expect(found.stdout).toContain(`CORRUPT ${small.digest}`);

    const repaired = await runSluice(['verify', '--repair', '--config', sluice.configFile]);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(repaired.stdout).toContain('quarantined to');

    const after = await fetch(url);
    expect(after.status).toBe(404);
    expect(((await after.json()) as { errors: Array<{ message: string }> }).errors[0]?.message).toMatch(/not cached; upstream access closed/);
  });
});
