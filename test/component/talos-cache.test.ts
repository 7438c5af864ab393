// `sluice import` of Talos image caches (talosctl images cache-create): the flat tree and the OCI form, built from
// cache.go's facts, imported into a store: the chosen platform, signature tags, a digest-only image and a
// `host_port_` registry arrive byte-exact; absent platforms are named; corrupt bytes and unsafe tar entries are refused.
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { importPath, type ImportResult } from '../../src/jobs/importer.js';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../helpers/clients.js';
import { buildLayout, sha256, type LayoutDescription } from '../helpers/images.js';
import { buildFlatCache, tarTree, wrapAsOciCache, type TalosCache } from '../helpers/talos-cache.js';
import { hexOf } from '../kit/oci.js';

const DIGEST_ONLY = 'docker.io/library/busybox:1.36';
const PORT_COPY = { 'registry.k8s.io/pause:3.10': 'registry.lan:5000/team/pause:3.10' };

describe('Talos image cache import', () => {
  let work: string;
  let layout: LayoutDescription;
  let cache: TalosCache;
  let ociDir: string;

  beforeAll(async () => {
    work = await tempDir('talos-cache');
    layout = await buildLayout(join(work, 'layout'));
    cache = await buildFlatCache(join(work, 'flat'), layout, DIGEST_ONLY, PORT_COPY);
    await tarTree(cache.dir, join(work, 'layer.tar.gz'));
    ociDir = join(work, 'oci');
    await wrapAsOciCache(join(work, 'layer.tar.gz'), ociDir);
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function importInto(path: string): Promise<{ store: Store; result: ImportResult; root: string }> {
    const root = join(work, `store-${Math.random().toString(36).slice(2)}`);
    const store = await openStore({ storage: root });
    const result = await importPath(store, path);
    return { store, result, root };
  }

  async function expectCacheImported(store: Store, result: ImportResult): Promise<void> {
    expect(result.failed).toEqual([]);
    const byRef = new Map(result.imported.map((i) => [i.ref, i]));
    for (const img of cache.images) {
      const got = byRef.get(img.ref);
      expect(got, img.ref).toBeDefined();
      expect(got!.digest).toBe(img.digest);
      expect(got!.missing ?? []).toEqual(img.missing);
      if (img.tag) expect(await store.getTag(img.host, img.name, img.tag)).toBe(img.digest);
      for (const d of img.digests) {
        const m = await store.getManifest(d);
        if (m) expect(sha256(m.body)).toBe(d);
        else expect((await store.stat(d))?.sizeBytes, d).toBeGreaterThan(0);
        expect(await store.isBlobLinked(img.host, img.name, d) || await store.isManifestLinked(img.host, img.name, d), d).toBe(true);
      }
    }
    for (const sig of cache.signatures) {
      const [repo, tag] = [sig.ref.slice(0, sig.ref.lastIndexOf(':')), sig.ref.slice(sig.ref.lastIndexOf(':') + 1)];
      const host = repo.split('/')[0]!;
      expect(await store.getTag(host, repo.slice(host.length + 1), tag), sig.ref).toBe(sig.digest);
      for (const d of sig.digests) expect(await store.stat(d), d).toBeDefined();
    }
  }

  test('the fixture is what cache.go writes: blob/sha256-<hex>, reference/, digest/, host_port_', async () => {
    expect((await readdir(join(cache.dir, 'manifests'))).sort()).toEqual(['docker.io', 'ghcr.io', 'registry.k8s.io', 'registry.lan_5000_']);
    expect(await readdir(join(cache.dir, 'manifests', 'docker.io', 'library', 'busybox'))).toEqual(['digest']);
    const kubelet = cache.images.find((i) => i.ref.startsWith('ghcr.io'))!;
    expect(kubelet.missing).toEqual(['linux/arm64/v8']);
    expect((await readdir(join(cache.dir, 'blob'))).every((f) => /^sha256-[a-f0-9]{64}$/.test(f))).toBe(true);
  });

  test('--layout flat: every image with its chosen platform, signatures, the digest-only image and host:port', async () => {
    const { store, result } = await importInto(cache.dir);
    try {
      expect(result.talosCache).toBe('flat');
      await expectCacheImported(store, result);
      expect(result.imported.map((i) => i.ref)).toContain(`docker.io/library/busybox@${layout.images.find((i) => i.ref === DIGEST_ONLY)!.digest}`);
      expect(result.imported.map((i) => i.ref)).toContain('registry.lan:5000/team/pause:3.10');
      // The arm64 manifest is named as absent and was not invented.
      const arm = layout.images.find((i) => i.ref.startsWith('ghcr.io'))!.platforms!.find((p) => p.arch === 'arm64')!.digest;
      expect(await store.getManifest(arm)).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  test('--layout oci: the one unnamed image is unpacked and its tree imported the same way', async () => {
    const { store, result } = await importInto(ociDir);
    try {
      expect(result.talosCache).toBe('oci');
      await expectCacheImported(store, result);
    } finally {
      await store.close();
    }
  });

  test('a corrupt blob fails its image only, naming the blob; the others import', async () => {
    const broken = join(work, 'broken');
    const copy = await buildFlatCache(broken, layout, DIGEST_ONLY);
    const pause = copy.images.find((i) => i.ref === 'registry.k8s.io/pause:3.10')!;
    const layer = pause.digests[pause.digests.length - 1]!;
    const file = join(broken, 'blob', `sha256-${hexOf(layer)}`);
    const bytes = await readFile(file);
    bytes[bytes.length >> 1] ^= 0xff;
    await writeFile(file, bytes);
    const { store, result } = await importInto(broken);
    try {
      expect(result.failed).toEqual([{ ref: pause.ref, reason: expect.stringContaining(`blob ${layer} is corrupt`) as string }]);
      expect(await store.getTag('registry.k8s.io', 'pause', '3.10')).toBeUndefined();
      expect(result.imported.map((i) => i.ref)).toContain('ghcr.io/siderolabs/kubelet:v1.34.0');
    } finally {
      await store.close();
    }
  });

  test.each([
    ['../escape', { name: '../escape', type: 'file' as const, body: 'x' }, /climbs out/],
    ['an absolute path', { name: '/etc/evil', type: 'file' as const, body: 'x' }, /absolute path/],
    ['a symlink', { name: 'manifests/link', type: 'symlink' as const, linkname: '/etc/passwd' }, /a symlink/],
    ['a hard link', { name: 'blob/sha256-' + 'a'.repeat(64), type: 'link' as const, linkname: '/etc/passwd' }, /a link/],
    ['a file outside the tree', { name: 'etc/passwd', type: 'file' as const, body: 'x' }, /not part of a Talos image cache.*--as REF/],
  ])('a cache layer holding %s is refused, naming the entry, and nothing is imported or written outside', async (_n, entry, message) => {
    const dir = join(work, `bad-${Math.random().toString(36).slice(2)}`);
    await mkdir(dir);
    await tarTree(cache.dir, join(dir, 'layer.tar.gz'), { extra: [entry] });
    await wrapAsOciCache(join(dir, 'layer.tar.gz'), join(dir, 'oci'));
    const root = join(dir, 'store');
    const store = await openStore({ storage: root });
    try {
      await expect(importPath(store, join(dir, 'oci'))).rejects.toThrow(message);
      expect(await store.repositories()).toEqual([]);
      expect((await readdir(dir)).sort()).toEqual(['layer.tar.gz', 'oci', 'store']);
    } finally {
      await store.close();
    }
  });
});
