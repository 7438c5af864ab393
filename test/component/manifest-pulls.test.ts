// Regressions found in review: an odd digest inside a manifest must not break a repository; concurrent pulls of
// one uncached manifest cost one upstream GET; a store whose temp folder was removed under it heals itself.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { spoolDir } from '../helpers/fs-store.js';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const OCI = 'application/vnd.oci.image.manifest.v1+json';
const config = Buffer.from('{"os":"linux"}');
const manifest = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: OCI,
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
  layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha512:${'ab'.repeat(64)}`, size: 10 }],
}));

describe('review fixes', () => {
  let upstream: Server;
  let sluice: InProcessSluice;
  const seen: string[] = [];
  let release: () => void = () => undefined;
  let held: Promise<void> = Promise.resolve();

  beforeAll(async () => {
    upstream = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      const answer = (): void => {
        if (req.url?.includes('/manifests/')) {
          res.setHeader('content-type', OCI);
          res.setHeader('docker-content-digest', sha(manifest));
          res.end(manifest);
        } else if (req.url?.endsWith(sha(config))) res.end(config);
        else {
          res.statusCode = 404;
          res.end();
        }
      };
      void held.then(answer);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    sluice = await startSluice({
      windows: 'always',
      allowlist: ['ghcr.io/x/app:v1'],
      upstreams: { 'ghcr.io': { url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` } },
    });
  });
  afterAll(async () => {
    await sluice?.close();
    upstream?.close();
  });

  it('20 concurrent GETs of an uncached manifest by digest make one upstream GET', async () => {
    const pinned = await startSluice({
      windows: 'always',
      allowlist: [`ghcr.io/x/app@${sha(manifest)}`],
      upstreams: { 'ghcr.io': { url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` } },
    });
    try {
      seen.length = 0;
      held = new Promise<void>((r) => (release = r));
      const gets = Array.from({ length: 20 }, () => fetch(`${pinned.url}/v2/x/app/manifests/${sha(manifest)}?ns=ghcr.io`));
      // Let all 20 reach sluice before the upstream answers the first.
      while (seen.length === 0) await new Promise((r) => setImmediate(r));
      release();
      for (const r of await Promise.all(gets)) {
        expect(r.status).toBe(200);
        expect(r.headers.get('docker-content-digest')).toBe(sha(manifest));
      }
      expect(seen).toEqual([`GET /v2/x/app/manifests/${sha(manifest)}`]);
    } finally {
      held = Promise.resolve();
      await pinned.close();
    }
  });

  it('a manifest listing a sha512 layer does not make the repository unservable', async () => {
    expect((await fetch(`${sluice.url}/v2/x/app/manifests/v1?ns=ghcr.io`)).status).toBe(200);
    const cfg = await fetch(`${sluice.url}/v2/x/app/blobs/${sha(config)}?ns=ghcr.io`);
    expect(cfg.status).toBe(200);
    expect(Buffer.from(await cfg.arrayBuffer()).equals(config)).toBe(true);
    const byDigest = await fetch(`${sluice.url}/v2/x/app/manifests/${sha(manifest)}?ns=ghcr.io`);
    expect(byDigest.status).toBe(200);
  });

  it('a temp folder removed behind the store is re-created on the next write', async () => {
    await rm(spoolDir(sluice.app.store), { recursive: true, force: true });
    const info = await sluice.app.store.putBlob(Buffer.from('after the folder went away'));
    expect(info.sizeBytes).toBe(26);
    await sluice.app.store.setTag('ghcr.io', 'x/app', 'v2', info.digest);
  });
});
