// verify re-hashes every blob on disk: a flipped byte is found, --repair quarantines it (the store then
// treats it as a miss), tags pointing at absent manifests and manifests missing blobs are reported.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { verifyStore } from '../../src/jobs/verify.js';
import { blobFile } from '../helpers/fs-store.js';
import { MediaType, sha256 } from '../kit/oci.js';

describe('verifyStore', () => {
  let dir: string;
  let store: Store;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-verify-'));
    store = await openStore({ storage: dir });
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a clean store reports nothing', async () => {
    await store.putBlob(Buffer.from('a'));
    await store.putBlob(Buffer.from('b'));
    const r = await verifyStore(store);
    expect(r.blobsChecked).toBe(2);
    expect(r.corrupt).toEqual([]);
  });

  test('finds a corrupted blob and --repair quarantines it', async () => {
    const good = Buffer.from('good bytes');
    const bad = Buffer.from('bytes that will rot');
    await store.putBlob(good);
    await store.putBlob(bad);
    const path = blobFile(store, sha256(bad));
    const rotten = Buffer.from(await readFile(path));
    rotten[3] = (rotten[3] ?? 0) ^ 0xff;
    await writeFile(path, rotten);

    const found = await verifyStore(store);
    expect(found.corrupt.map((c) => c.digest)).toEqual([sha256(bad)]);
    expect(found.corrupt[0]?.computed).toBe(sha256(rotten));
    expect(await store.stat(sha256(bad))).toBeDefined();

    const repaired = await verifyStore(store, { repair: true });
    expect(repaired.corrupt[0]?.quarantinedTo).toContain(join(dir, 'quarantine'));
    expect(await store.stat(sha256(bad))).toBeUndefined();
    expect(await store.stat(sha256(good))).toBeDefined();
    expect((await verifyStore(store)).corrupt).toEqual([]);
  });

  test('reports dangling tags and manifests whose blobs are absent', async () => {
    const config = Buffer.from('{}');
    await store.putBlob(config);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length },
      layers: [{ mediaType: MediaType.ociLayer, digest: sha256('absent layer'), size: 12 }],
    }));
    const m = await store.putManifest(manifest, MediaType.ociManifest);
    await store.linkManifest('ghcr.io', 'x/y', m);
    await store.setTag('ghcr.io', 'x/y', 'v1', m.digest);
    await store.setTag('ghcr.io', 'x/y', 'v2', sha256('no such manifest'));
    const r = await verifyStore(store);
    expect(r.danglingTags).toEqual([{ host: 'ghcr.io', name: 'x/y', tag: 'v2', digest: sha256('no such manifest') }]);
    expect(r.incomplete).toEqual([{ host: 'ghcr.io', name: 'x/y', manifest: m.digest, missing: [sha256('absent layer')] }]);
  });
});
