// Manifest pulls from upstream: concurrent pulls of one uncached manifest cost one upstream GET; an odd digest
// inside a manifest (a sha512 layer) does not break the repository. And a store whose temp folder was removed
// under it heals itself on the next write.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType, sha256 } from '../kit/oci.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { spoolDir } from '../helpers/fs-store.js';

const config = Buffer.from('{"os":"linux"}');
const manifest = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: MediaType.ociManifest,
  config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length },
  layers: [{ mediaType: MediaType.ociLayerTar, digest: `sha512:${'ab'.repeat(64)}`, size: 10 }],
}));
const digest = sha256(manifest);

const up = new MiniUpstream();
let sluice: InProcessSluice;

beforeAll(async () => {
  await up.start();
  up.putBlob('x/app', config);
  up.putManifest('x/app', 'v1', manifest);
  sluice = await startSluice({ windows: 'always', allowlist: ['ghcr.io/x/app:v1'], upstreams: { 'ghcr.io': { url: up.url } } });
});
afterAll(async () => {
  await sluice?.close();
  await up.stop();
});

describe('manifest pulls from upstream', () => {
  it('20 concurrent GETs of an uncached manifest by digest make one upstream GET', async () => {
    const pinned = await startSluice({ windows: 'always', allowlist: [`ghcr.io/x/app@${digest}`], upstreams: { 'ghcr.io': { url: up.url } } });
    const path = `/v2/x/app/manifests/${digest}`;
    let release: () => void = () => undefined;
    try {
      up.reset();
      up.holdBefore.set(`GET ${path}`, new Promise<void>((r) => (release = r)));
      const gets = Array.from({ length: 20 }, () => fetch(`${pinned.url}${path}?ns=ghcr.io`));
      // The upstream answers the first only once it has been asked.
      await up.asked(path);
      release();
      for (const r of await Promise.all(gets)) {
        expect(r.status).toBe(200);
        expect(r.headers.get('docker-content-digest')).toBe(digest);
      }
      expect(up.seen).toEqual([`GET ${path}`]);
    } finally {
      release();
      await pinned.close();
    }
  });

  it('a manifest listing a sha512 layer does not make the repository unservable', async () => {
    expect((await fetch(`${sluice.url}/v2/x/app/manifests/v1?ns=ghcr.io`)).status).toBe(200);
    const cfg = await fetch(`${sluice.url}/v2/x/app/blobs/${sha256(config)}?ns=ghcr.io`);
    expect(cfg.status).toBe(200);
    expect(Buffer.from(await cfg.arrayBuffer()).equals(config)).toBe(true);
    const byDigest = await fetch(`${sluice.url}/v2/x/app/manifests/${digest}?ns=ghcr.io`);
    expect(byDigest.status).toBe(200);
  });
});

describe('the store spool', () => {
  it('a temp folder removed behind the store is re-created on the next write', async () => {
    await rm(spoolDir(sluice.app.store), { recursive: true, force: true });
    const info = await sluice.app.store.putBlob(Buffer.from('after the folder went away'));
    expect(info.sizeBytes).toBe(26);
    await sluice.app.store.setTag('ghcr.io', 'x/app', 'v2', info.digest);
  });
});
