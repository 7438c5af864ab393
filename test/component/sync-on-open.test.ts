// syncOnOpen: opening upstream access (here an operator's manual window) starts a sync of the allowlist by
// itself; the image is then complete in the store and serves after the window closes again.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
const layer = Buffer.alloc(300_000, 7);
const manifest = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
  layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
}));

describe('syncOnOpen', () => {
  let server: Server;
  let sluice: InProcessSluice;
  const seen: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      const path = req.url ?? '';
      const blobs = new Map([[sha(config), config], [sha(layer), layer]]);
      if (path === '/v2/siderolabs/etcd/manifests/v3.6.4' || path === `/v2/siderolabs/etcd/manifests/${sha(manifest)}`) {
        res.setHeader('content-type', 'application/vnd.oci.image.manifest.v1+json');
        res.setHeader('docker-content-digest', sha(manifest));
        res.end(manifest);
        return;
      }
      const blob = blobs.get(path.split('/blobs/')[1] ?? '');
      if (blob) {
        res.setHeader('content-length', String(blob.length));
        res.end(blob);
        return;
      }
      res.statusCode = 404;
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    sluice = await startSluice({
      windows: 'never',
      allowlist: ['ghcr.io/siderolabs/etcd:v3.6.4'],
      upstreams: { 'ghcr.io': { url } },
      extra: { syncOnOpen: true },
    });
  });
  afterAll(async () => {
    await sluice?.close();
    server?.close();
  });

  it('opening a window syncs the allowlist without being asked', async () => {
    expect(sluice.app.syncer.current).toBeUndefined();
    sluice.app.window.open(60_000, 'maintenance', 'test');
    const running = sluice.app.syncer.current;
    expect(running).toBeDefined();
    const report = await running;
    expect(report?.fetched).toEqual(['ghcr.io/siderolabs/etcd:v3.6.4']);
    expect(report?.failed).toEqual([]);
    expect(seen).toContain(`GET /v2/siderolabs/etcd/blobs/${sha(layer)}`);

    sluice.app.window.close();
    seen.length = 0;
    const res = await fetch(`${sluice.url}/v2/siderolabs/etcd/blobs/${sha(layer)}?ns=ghcr.io`);
    expect(res.status).toBe(200);
    expect(sha(Buffer.from(await res.arrayBuffer()))).toBe(sha(layer));
    expect(seen).toEqual([]);
  });
});
