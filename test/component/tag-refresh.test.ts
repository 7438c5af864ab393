// Re-resolving a known tag costs one HEAD upstream (Docker Hub counts GETs against pull limits); the manifest
// is fetched again only when the tag has moved. Each app below starts with a cold tag cache on the same store.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { sluiceConfigDoc } from '../helpers/sluice.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const manifest = (n: number): Buffer => Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: OCI_MANIFEST,
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(Buffer.from(`c${n}`)), size: 2 },
  layers: [],
}));

describe('tag re-resolution', () => {
  let server: Server;
  let url: string;
  let dir: string;
  let current = manifest(1);
  const seen: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-tagref-'));
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      const body = req.url === '/v2/library/app/manifests/1.0' ? current
        : [manifest(1), manifest(2)].find((m) => req.url === `/v2/library/app/manifests/${sha(m)}`);
      if (!body) {
        res.statusCode = 404;
        res.end();
        return;
      }
      res.setHeader('content-type', OCI_MANIFEST);
      res.setHeader('docker-content-digest', sha(body));
      res.setHeader('content-length', String(body.length));
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function resolveOnce(): Promise<string | null> {
    const config = validateConfig(sluiceConfigDoc(join(dir, 'data'), {
      windows: 'always',
      allowlist: ['docker.io/library/app:1.0'],
      upstreams: { 'docker.io': { url } },
    }), join(dir, 'sluice.yaml'));
    const app = await buildApp(config);
    try {
      const res = await app.registry.inject({ method: 'HEAD', url: '/v2/library/app/manifests/1.0?ns=docker.io' });
      expect(res.statusCode).toBe(200);
      return String(res.headers['docker-content-digest']);
    } finally {
      await app.close();
    }
  }

  it('first sight: one GET; unchanged: one HEAD; moved: HEAD then GET', async () => {
    expect(await resolveOnce()).toBe(sha(manifest(1)));
    expect(seen.filter((s) => s.includes('/manifests/'))).toEqual(['GET /v2/library/app/manifests/1.0']);

    seen.length = 0;
    expect(await resolveOnce()).toBe(sha(manifest(1)));
    expect(seen.filter((s) => s.includes('/manifests/'))).toEqual(['HEAD /v2/library/app/manifests/1.0']);

    seen.length = 0;
    current = manifest(2);
    expect(await resolveOnce()).toBe(sha(manifest(2)));
    expect(seen.filter((s) => s.includes('/manifests/'))).toEqual([
      'HEAD /v2/library/app/manifests/1.0',
      'GET /v2/library/app/manifests/1.0',
    ]);
  });
});
