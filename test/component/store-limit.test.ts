// storage.maxBytes as an alarm: ingests that would pass it are refused with 507 INSUFFICIENT_STORAGE (an OCI
// error body, nothing committed), the status and the metrics say the store is full, and nothing is evicted.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { MiniUpstream, type MiniImage } from '../helpers/mini-upstream.js';
import { sample } from '../helpers/metrics-text.js';
import { MediaType, seededBytes } from '../kit/oci.js';

describe('storage.maxBytes', () => {
  let up: MiniUpstream;
  let s: InProcessSluice;
  let image: MiniImage;
  let token: string;

  beforeAll(async () => {
    up = await new MiniUpstream().start();
    image = up.addImage('team/app', '1', [seededBytes(4096, 'small-layer'), seededBytes(64 * 1024, 'big-layer')]);
    const maxBytes = image.manifest.length + image.config.body.length + 4096;
    s = await startSluice({
      windows: 'always',
      upstreams: { 'ghcr.io': { url: up.url } },
      allowlist: ['ghcr.io/team/app:1'],
      extra: { storage: { path: './data', maxBytes } },
    });
    token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
  });
  afterAll(async () => {
    await s?.close();
    await up?.stop();
  });

  const get = (path: string): Promise<Response> => fetch(`${s.url}/v2/ghcr.io/team/app/${path}`, { headers: { accept: MediaType.ociManifest } });
  const admin = async (url: string): Promise<string> =>
    (await s.app.admin.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } })).body;

  it('refuses a blob that would not fit with 507, commits nothing, and still takes what fits', async () => {
    expect((await get('manifests/1')).status).toBe(200);
    const big = await get(`blobs/${image.layers[1]?.digest ?? ''}`);
    expect(big.status).toBe(507);
    const body = (await big.json()) as { errors: Array<{ code: string; message: string }> };
    expect(body.errors[0]?.code).toBe('INSUFFICIENT_STORAGE');
    expect(body.errors[0]?.message).toContain('storage.maxBytes');
    expect(await s.app.store.stat(image.layers[1]?.digest ?? '')).toBeUndefined();
    expect((await get(`blobs/${image.config.digest}`)).status).toBe(200);
    expect(Buffer.from(await (await get(`blobs/${image.layers[0]?.digest ?? ''}`)).arrayBuffer()).equals(image.layers[0]?.body ?? Buffer.alloc(0))).toBe(true);
  });

  it('once full: status and metrics say so, new ingests are refused, stored content is still served', async () => {
    const status = JSON.parse(await admin('/api/v1/status')) as { store: { full: boolean; maxBytes: number; sizeBytes: number } };
    expect(status.store).toMatchObject({ full: true, maxBytes: s.app.config.storageMaxBytes, sizeBytes: s.app.config.storageMaxBytes });
    const metrics = await admin('/metrics');
    expect(sample(metrics, 'sluice_store_full')).toBe(1);
    expect(sample(metrics, 'sluice_store_max_bytes')).toBe(s.app.config.storageMaxBytes);
    expect(sample(metrics, 'sluice_ingest_failures_total{reason="no_space"}')).toBe(1);
    expect((await get(`blobs/${image.layers[1]?.digest ?? ''}`)).status).toBe(507);
    expect((await get('manifests/1')).status).toBe(200);
    expect(sample(await admin('/metrics'), 'sluice_store_blobs')).toBe(3);
  });
});
