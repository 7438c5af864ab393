// The air-gap routine against a running server: a node misses, the operator runs `sluice import` in another
// process, and the very next requests are served — tags and every digest — without restarting sluice.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { freePort } from '../helpers/registry.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';

describe('sluice import into a running server', () => {
  let dir: string;
  let layout: LayoutDescription;
  let sluice: SluiceProcess;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-live-'));
    layout = await buildLayout(join(dir, 'layout'));
    const adminPort = await freePort();
    const yaml = sluiceConfigYaml(join(dir, 'data'), {
      allowlist: layout.images.map((i) => i.ref),
      extra: { admin: { listen: `127.0.0.1:${adminPort}` } },
    });
    sluice = await startSluiceProcess(yaml);
  });
  afterAll(async () => {
    await sluice?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves what was imported on the next request', async () => {
    const image = layout.images.find((i) => i.kind === 'oci-index');
    if (!image) throw new Error('layout has no index');
    const [, ...path] = image.ref.split('/');
    const [name, tag] = path.join('/').split(':') as [string, string];
    const host = image.ref.split('/')[0] ?? '';
    const layer = image.blobs[image.blobs.length - 1];
    if (!layer) throw new Error('image has no blobs');

    const before = await fetch(`${sluice.url}/v2/${name}/manifests/${tag}?ns=${host}`, { method: 'HEAD' });
    expect(before.status).toBe(404);
    // The rule's tag was never stored and the window is closed: the store cannot place the digest, so a miss.
    const miss = await fetch(`${sluice.url}/v2/${name}/blobs/${layer.digest}?ns=${host}`);
    expect(miss.status).toBe(404);
    expect(await miss.text()).toMatch(/BLOB_UNKNOWN.*not cached; upstream access closed/);

    const imported = await runSluice(['import', join(dir, 'layout'), '--config', sluice.configFile]);
    expect(imported.code, imported.stderr).toBe(0);

    const after = await fetch(`${sluice.url}/v2/${name}/manifests/${tag}?ns=${host}`, { method: 'HEAD' });
    expect(after.status).toBe(200);
    expect(after.headers.get('docker-content-digest')).toBe(image.digest);
    const blob = await fetch(`${sluice.url}/v2/${name}/blobs/${layer.digest}?ns=${host}`);
    expect(blob.status).toBe(200);
    expect(Number(blob.headers.get('content-length'))).toBe(layer.size);
    await blob.arrayBuffer();
  });
});
