// Every import source goes through the one pipeline: a blob a Talos cache leaves out is taken from the store only
// if the image's own repository already holds it (the rule export bundles always had), never from another's.
import { cp, mkdir, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { importPath } from '../../src/jobs/importer.js';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../helpers/clients.js';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { buildFlatCache } from '../helpers/talos-cache.js';
import { hexOf } from '../kit/oci.js';

const PAUSE = 'registry.k8s.io/pause:3.10';

describe('Talos cache blobs from the store', () => {
  let work: string;
  let layout: LayoutDescription;
  let cache: string;
  let layer: string;
  let n = 0;

  beforeAll(async () => {
    work = await tempDir('import-sources');
    layout = await buildLayout(join(work, 'layout'));
    cache = join(work, 'flat');
    await buildFlatCache(cache, layout, 'docker.io/library/busybox:1.36');
    const pause = layout.images.find((i) => i.ref === PAUSE)!;
    layer = pause.blobs[pause.blobs.length - 1]!.digest;
    await unlink(join(cache, 'blob', `sha256-${hexOf(layer)}`));
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** A layout of the pause image alone, imported into `store` as `ref`. */
  async function storePause(store: Store, ref: string): Promise<void> {
    const dir = join(work, `pause-${++n}`);
    await cp(layout.dir, dir, { recursive: true });
    const pause = layout.images.find((i) => i.ref === PAUSE)!;
    await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: pause.mediaType, digest: pause.digest, size: pause.size }] }));
    const r = await importPath(store, dir, { as: ref });
    expect(r.failed).toEqual([]);
  }

  async function withStore<T>(use: (store: Store) => Promise<T>): Promise<T> {
    const root = join(work, `store-${++n}`);
    await mkdir(root);
    const store = await openStore({ storage: root });
    try {
      return await use(store);
    } finally {
      await store.close();
    }
  }

  test('a blob the cache leaves out is taken from the store when the same repository holds it', async () => {
    await withStore(async (store) => {
      await storePause(store, PAUSE);
      const r = await importPath(store, cache);
      expect(r.failed).toEqual([]);
      expect(r.imported.map((i) => i.ref)).toContain(PAUSE);
      expect(await store.isBlobLinked('registry.k8s.io', 'pause', layer)).toBe(true);
    });
  });

  test('a blob the cache leaves out that only another repository holds refuses the image', async () => {
    await withStore(async (store) => {
      await storePause(store, 'ghcr.io/elsewhere/pause:1');
      const r = await importPath(store, cache);
      const failed = r.failed.find((f) => f.ref === PAUSE);
      expect(failed?.reason).toMatch(/not in the Talos cache, and the store holds them only for other repositories/);
      expect(failed?.reason).toContain(layer);
      expect(await store.getTag('registry.k8s.io', 'pause', '3.10')).toBeUndefined();
    });
  });

  test('a blob in neither the cache nor the store refuses the image, naming it', async () => {
    await withStore(async (store) => {
      const r = await importPath(store, cache);
      expect(r.failed.find((f) => f.ref === PAUSE)?.reason).toMatch(new RegExp(`neither in the Talos cache nor in the store.*${layer}`));
      expect(r.imported.map((i) => i.ref)).not.toContain(PAUSE);
    });
  });
});
