// `sluice export --format talos-cache-flat|talos-cache-oci` checked against what siderolabs/talos
// pkg/imager/cache/cache.go writes (Generate, processImage, processImageAllPlatforms, processCosignSignature,
// cacheImage, rewriteRegistry; pkg/imager/filemap for the layer; go-containerregistry for the wrapping image):
// the same files byte for byte as the cache.go-derived fixture, the chosen platforms only, `host_port_`, the cosign
// tag cache-create picks, the oci form's one unnamed image and single layer, `--since`, and round trips through import.
import { cp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { exportBundle, IncompleteExportError, type ExportOptions } from '../../src/jobs/exporter.js';
import { exportRules } from '../../src/jobs/export-plan.js';
import { importPath } from '../../src/jobs/importer.js';
import { readReceipt } from '../../src/jobs/receipt.js';
import type { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { writeArtifact, writeIndex, writeSmallImage } from '../helpers/bundles.js';
import { tempDir } from '../helpers/clients.js';
import { buildLayout, splitRef, type LayoutDescription } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml } from '../helpers/sluice.js';
import { buildFlatCache, registryDir, type TalosCache } from '../helpers/talos-cache.js';
import { blobPath, hexOf, MediaType, sha256, writeJsonBlob, writeLayoutIndex } from '../kit/oci.js';

const DIGEST_ONLY = 'docker.io/library/busybox:1.36';
const PORT_COPY = { 'registry.k8s.io/pause:3.10': 'registry.lan:5000/team/pause:3.10' };

/** Every file under `dir` (relative path → sha256 of its bytes) and every folder (relative path + '/'). */
async function readTree(dir: string, sub = ''): Promise<{ files: Map<string, string>; dirs: Set<string> }> {
  const out = { files: new Map<string, string>(), dirs: new Set<string>() };
  for (const e of await readdir(join(dir, sub), { withFileTypes: true })) {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    if (e.isDirectory()) {
      out.dirs.add(`${rel}/`);
      const inner = await readTree(dir, rel);
      for (const [k, v] of inner.files) out.files.set(k, v);
      for (const d of inner.dirs) out.dirs.add(d);
    } else {
      out.files.set(rel, sha256(await readFile(join(dir, rel))));
    }
  }
  return out;
}

const sorted = (m: Map<string, string>): Array<[string, string]> => [...m].sort(([a], [b]) => (a < b ? -1 : 1));

interface Doc {
  manifests?: Array<{ digest: string; platform?: { os: string; architecture: string; variant?: string } }>;
  config?: { digest: string };
  layers?: Array<{ digest: string }>;
}

/**
 * What cache.go writes for one image, path → digest of the bytes, derived from its code: processImage writes
 * `reference/<tag>` (tagged refs) and `digest/sha256-<top>`, then cacheImage of the platform image rmt.Image()
 * picks (the first index child whose platform satisfies --platform) — its manifest under digest/, its config and
 * layers under blob/. For `--platform all`, processImageAllPlatforms caches every child.
 */
async function cacheGoFiles(layoutDir: string, ref: string, top: string, platforms: string[] | 'all', digestOnly = false): Promise<Map<string, string>> {
  const read = async (d: string): Promise<Doc> => JSON.parse(await readFile(blobPath(layoutDir, d), 'utf8')) as Doc;
  const { host, name, tag } = splitRef(ref);
  const repo = `manifests/${registryDir(host)}/${name}`;
  const out = new Map<string, string>();
  if (!digestOnly) out.set(`${repo}/reference/${tag}`, top);
  out.set(`${repo}/digest/sha256-${hexOf(top)}`, top);
  const doc = await read(top);
  const satisfies = (p: { os: string; architecture: string; variant?: string }, want: string): boolean => {
    const [os, arch, variant] = want.split('/');
    return p.os === os && p.architecture === arch && (variant === undefined || p.variant === variant);
  };
  const children = !doc.manifests
    ? [top]
    : platforms === 'all'
      ? doc.manifests.map((m) => m.digest)
      : platforms.map((p) => doc.manifests!.find((m) => m.platform && satisfies(m.platform, p))!.digest);
  for (const child of children) {
    out.set(`${repo}/digest/sha256-${hexOf(child)}`, child);
    const c = await read(child);
    for (const b of [c.config!, ...(c.layers ?? [])]) out.set(`blob/sha256-${hexOf(b.digest)}`, b.digest);
  }
  return out;
}

describe('sluice export of Talos image caches', () => {
  let work: string;
  let layout: LayoutDescription;
  let cache: TalosCache;
  let source: Store;
  let n = 0;
  const fresh = (name: string): string => join(work, `${name}-${n++}`);
  const cacheRules = (): string[] => cache.images.map((i) => i.ref);

  async function exp(out: string, rules: string[], more: Partial<ExportOptions> = {}): Promise<Awaited<ReturnType<typeof exportBundle>>> {
    return exportBundle(source, { out, format: 'talos-cache-flat', rules: exportRules(rules), explicitRules: true, platforms: ['linux/amd64'], ...more });
  }

  beforeAll(async () => {
    work = await tempDir('talos-cache-export');
    layout = await buildLayout(join(work, 'layout'));
    cache = await buildFlatCache(join(work, 'fixture'), layout, DIGEST_ONLY, PORT_COPY);
    source = await openStore({ storage: join(work, 'source') });
    // Every platform (the layout), and what the fixture adds: its signature tags and the host:port copy.
    for (const path of [layout.dir, cache.dir]) expect((await importPath(source, path)).failed).toEqual([]);
  }, 60_000);

  afterAll(async () => {
    await source?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('talos-cache-flat for linux/amd64 is the fixture cache.go writes for the same images, file for file and byte for byte', async () => {
    const out = fresh('flat');
    await exp(out, cacheRules());
    const [got, want] = [await readTree(out), await readTree(cache.dir)];
    expect(sorted(got.files)).toEqual(sorted(want.files));
    // `host:port` is written `host_port_` (rewriteRegistry); the digest-only image has an empty reference/ (MkdirAll).
    expect(got.dirs.has('manifests/registry.lan_5000_/team/pause/reference/')).toBe(true);
    expect(await readdir(join(out, 'manifests', 'docker.io', 'library', 'busybox', 'reference'))).toEqual([]);
    expect(got.dirs.has('blob/')).toBe(true);
  });

  test('each tag file is the bytes of a digest/ file of the same repository, as the cache registry resolves tags', async () => {
    const out = fresh('flat');
    await exp(out, cacheRules());
    for (const img of cache.images.filter((i) => i.tag !== undefined)) {
      const repo = join(out, 'manifests', registryDir(img.host), img.name);
      const tagBytes = await readFile(join(repo, 'reference', img.tag!));
      expect(sha256(tagBytes), img.ref).toBe(img.digest);
      expect(sha256(await readFile(join(repo, 'digest', `sha256-${hexOf(sha256(tagBytes))}`))), img.ref).toBe(img.digest);
    }
  });

  test.each([
    [['linux/arm64']],
    [['linux/amd64', 'linux/arm64']],
    [[]],
  ])('--platform %j: only those platforms\' children (none = every child, as --platform all)', async (platforms: string[]) => {
    const out = fresh('platforms');
    const refs = layout.images.map((i) => i.ref);
    await exp(out, refs, { platforms });
    const want = new Map<string, string>();
    for (const img of layout.images) {
      for (const [k, v] of await cacheGoFiles(layout.dir, img.ref, img.digest, platforms.length === 0 ? 'all' : platforms)) want.set(k, v);
    }
    const got = await readTree(out);
    // The fixture's signatures ride along (cosign-signatures): they are checked on their own below.
    const signatureFiles = new Set(cache.signatures.flatMap((s) => {
      const { host, name, tag } = splitRef(s.ref);
      const repo = `manifests/${registryDir(host)}/${name}`;
      return [`${repo}/reference/${tag}`, ...s.digests.map((d, i) => (i === 0 ? `${repo}/digest/sha256-${hexOf(d)}` : `blob/sha256-${hexOf(d)}`))];
    }));
    const gotImages = new Map([...got.files].filter(([k]) => !signatureFiles.has(k)));
    expect(sorted(gotImages)).toEqual(sorted(want));
  });

  test('a platform the index does not have is refused naming image and platform (cache-create fails); --partial writes the rest', async () => {
    const out = fresh('absent');
    const kubelet = 'ghcr.io/siderolabs/kubelet:v1.34.0';
    const err = await exp(out, [kubelet], { platforms: ['linux/s390x'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncompleteExportError);
    expect((err as Error).message).toContain(`${kubelet}: 1 missing: linux/s390x (the index has no such platform)`);
    expect(await stat(out).catch(() => undefined)).toBeUndefined();
    const partial = await exp(out, [kubelet], { platforms: ['linux/s390x'], partial: true });
    expect(partial.receipt.images[0]!.missing).toEqual(['linux/s390x (the index has no such platform)']);
  });

  test('cosign signatures: the `.sig` tag is taken over the bare sha256-<hex> tag, as processCosignSignature takes the first it finds', async () => {
    const kubelet = layout.images.find((i) => i.ref.startsWith('ghcr.io/siderolabs/kubelet'))!;
    const extra = join(work, 'bare-sig');
    const bare = await writeArtifact(extra, `ghcr.io/siderolabs/kubelet:sha256-${hexOf(kubelet.digest)}`, { mediaType: kubelet.mediaType, digest: kubelet.digest, size: kubelet.size }, 'bare', false);
    await writeIndex(extra, [bare]);
    const other = await openStore({ storage: join(work, 'with-bare-sig') });
    try {
      for (const path of [layout.dir, cache.dir, extra]) expect((await importPath(other, path)).failed).toEqual([]);
      const out = fresh('sigs');
      await exportBundle(other, { out, format: 'talos-cache-flat', rules: exportRules([kubelet.ref]), explicitRules: true, platforms: ['linux/amd64'] });
      const tags = await readdir(join(out, 'manifests', 'ghcr.io', 'siderolabs', 'kubelet', 'reference'));
      expect(tags.sort()).toEqual([`sha256-${hexOf(kubelet.digest)}.sig`, 'v1.34.0']);
      const got = await readTree(out);
      expect(got.files.has(`manifests/ghcr.io/siderolabs/kubelet/digest/sha256-${hexOf(bare.top.digest)}`)).toBe(false);
    } finally {
      await other.close();
    }
  });

  test('a rule selecting a signature tag takes its index even with --platform (an index of artifacts lacks no platform)', async () => {
    const pause = layout.images.find((i) => i.ref === 'registry.k8s.io/pause:3.10')!;
    const extra = join(work, 'sig-index');
    const art = await writeArtifact(extra, 'unused', { mediaType: pause.mediaType, digest: pause.digest, size: pause.size }, 'in-index', false);
    const index = await writeJsonBlob(extra, { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [art.top] }, MediaType.ociIndex);
    await writeLayoutIndex(extra, [{ ref: `registry.k8s.io/pause:sha256-${hexOf(pause.digest)}`, top: index }]);
    const other = await openStore({ storage: join(work, 'with-sig-index') });
    try {
      for (const path of [layout.dir, extra]) expect((await importPath(other, path)).failed).toEqual([]);
      const out = fresh('sig-index');
      const r = await exportBundle(other, { out, format: 'talos-cache-flat', rules: exportRules(['registry.k8s.io/pause:sha256-*']), explicitRules: true, platforms: ['linux/amd64'] });
      expect(r.receipt.images.map((i) => [i.ref, i.missing])).toEqual([[`registry.k8s.io/pause:sha256-${hexOf(pause.digest)}`, []]]);
      const got = await readTree(out);
      for (const d of [index.digest, art.top.digest]) expect(got.files.get(`manifests/registry.k8s.io/pause/digest/sha256-${hexOf(d)}`), d).toBe(d);
    } finally {
      await other.close();
    }
  });

  test('talos-cache-oci: one image with no ref.name, its single gzip layer a tar of the flat tree; index, manifest and config as cache.go writes them', async () => {
    const out = fresh('oci');
    await exp(out, cacheRules(), { format: 'talos-cache-oci', platforms: ['linux/amd64'] });
    expect(await readFile(join(out, 'oci-layout'), 'utf8')).toBe('{\n    "imageLayoutVersion": "1.0.0"\n}');
    const indexText = await readFile(join(out, 'index.json'), 'utf8');
    const index = JSON.parse(indexText) as { schemaVersion: number; mediaType: string; manifests: Array<Record<string, unknown>> };
    expect(indexText).toBe(JSON.stringify(index, null, 3)); // layout.Write: json.MarshalIndent(index, "", "   ")
    expect(index.schemaVersion).toBe(2);
    expect(index.mediaType).toBe(MediaType.ociIndex);
    expect(index.manifests).toHaveLength(1);
    const entry = index.manifests[0] as { mediaType: string; size: number; digest: string; platform: unknown; annotations?: unknown };
    expect(Object.keys(entry)).toEqual(['mediaType', 'size', 'digest', 'platform']);
    expect(entry.mediaType).toBe(MediaType.ociManifest);
    expect(entry.platform).toEqual({ architecture: 'amd64', os: 'linux' });
    const blob = async (d: string): Promise<Buffer> => {
      const b = await readFile(blobPath(out, d));
      expect(sha256(b), d).toBe(d);
      return b;
    };
    const manifestBytes = await blob(entry.digest);
    expect(manifestBytes.length).toBe(entry.size);
    const manifest = JSON.parse(manifestBytes.toString('utf8')) as { schemaVersion: number; mediaType: string; config: { mediaType: string; digest: string; size: number }; layers: Array<{ mediaType: string; digest: string; size: number }> };
    expect(Object.keys(manifest)).toEqual(['schemaVersion', 'mediaType', 'config', 'layers']);
    expect(manifest.mediaType).toBe(MediaType.ociManifest);
    expect(manifest.config.mediaType).toBe(MediaType.ociConfig);
    expect(manifest.layers).toHaveLength(1);
    expect(manifest.layers[0]!.mediaType).toBe(MediaType.ociLayer);
    const layerGz = await blob(manifest.layers[0]!.digest);
    expect(layerGz.length).toBe(manifest.layers[0]!.size);
    const layerTar = gunzipSync(layerGz);
    const config = JSON.parse((await blob(manifest.config.digest)).toString('utf8')) as Record<string, unknown>;
    expect(Object.keys(config)).toEqual(['architecture', 'created', 'history', 'os', 'rootfs', 'config']);
    expect(config).toMatchObject({ architecture: '', os: '', config: {}, history: [{ created: '0001-01-01T00:00:00Z' }], rootfs: { type: 'layers', diff_ids: [sha256(layerTar)] } });
    expect(Number.isNaN(Date.parse(String(config.created)))).toBe(false);
    expect((await readdir(join(out, 'blobs', 'sha256'))).sort()).toEqual([entry.digest, manifest.config.digest, manifest.layers[0]!.digest].map(hexOf).sort());

    // The layer as filemap.Layer writes it: every folder and file, sorted by path, folders 0755, files 0644.
    const entries: Array<{ name: string; type: string; mode: number }> = [];
    const unpacked = fresh('unpacked');
    const ex = tar.extract();
    const done = (async () => {
      for await (const e of ex) {
        const name = e.header.name.replace(/\/$/, '');
        entries.push({ name, type: e.header.type ?? '', mode: e.header.mode ?? 0 });
        if (e.header.type === 'directory') await mkdir(join(unpacked, name), { recursive: true });
        else await writeFile(join(unpacked, name), await streamBytes(e));
      }
    })();
    ex.end(layerTar);
    await done;
    const names = entries.map((e) => e.name);
    expect(names).toEqual([...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    expect(names.every((name) => /^(blob|manifests)(\/|$)/.test(name))).toBe(true);
    for (const e of entries) expect(e.mode, e.name).toBe(e.type === 'directory' ? 0o755 : 0o644);
    expect(sorted((await readTree(unpacked)).files)).toEqual(sorted((await readTree(cache.dir)).files));
  });

  test('talos-cache-oci puts the first --platform on its index entry (the imager picks linux/<its arch>)', async () => {
    const out = fresh('oci-arm');
    await exp(out, ['registry.k8s.io/coredns/coredns:v1.11.3'], { format: 'talos-cache-oci', platforms: ['linux/arm64', 'linux/amd64'] });
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ platform: unknown }> };
    expect(index.manifests[0]!.platform).toEqual({ architecture: 'arm64', os: 'linux' });
  });

  test('sluice import of each form into an empty store gives the same tags and digests (round trip)', async () => {
    for (const format of ['talos-cache-flat', 'talos-cache-oci'] as const) {
      const out = fresh(format);
      await exp(out, cacheRules(), { format });
      const target = await openStore({ storage: fresh('target') });
      try {
        const r = await importPath(target, out);
        expect(r.failed, format).toEqual([]);
        expect(r.talosCache).toBe(format === 'talos-cache-flat' ? 'flat' : 'oci');
        for (const img of cache.images) {
          expect(r.imported.find((i) => i.ref === img.ref)?.digest, `${format} ${img.ref}`).toBe(img.digest);
          if (img.tag) expect(await target.getTag(img.host, img.name, img.tag)).toBe(img.digest);
          for (const d of img.digests) expect((await target.stat(d))?.sizeBytes, `${format} ${d}`).toBe((await source.stat(d))?.sizeBytes);
        }
        for (const sig of cache.signatures) {
          const { host, name, tag } = splitRef(sig.ref);
          expect(await target.getTag(host, name, tag), sig.ref).toBe(sig.digest);
        }
      } finally {
        await target.close();
      }
    }
  });

  test('--since: a flat increment leaves out the digest/ and blob/ files the receipt lists, keeps every tag file, and laid over the first equals a full export', async () => {
    const first = fresh('week1');
    await exp(first, cacheRules());
    const added = join(work, 'added');
    const small = await writeSmallImage(added, 'ghcr.io/siderolabs/extra:v1', 'extra');
    await writeIndex(added, [small]);
    expect((await importPath(source, added)).failed).toEqual([]);
    const rules = [...cacheRules(), small.ref];
    const second = fresh('week2');
    const inc = await exp(second, rules, { since: await readReceipt(`${first}.receipt.json`) });
    const got = await readTree(second);
    const blobAndDigestFiles = [...got.files.keys()].filter((k) => !k.includes('/reference/'));
    expect(new Set(blobAndDigestFiles.map((k) => got.files.get(k)))).toEqual(new Set(small.blobs.map((b) => b.digest)));
    expect([...got.files.keys()].filter((k) => k.includes('/reference/')).length).toBe(cache.images.filter((i) => i.tag).length + cache.signatures.length + 1);
    expect(inc.receipt.assumed.length).toBeGreaterThan(0);
    const merged = fresh('merged');
    await cp(first, merged, { recursive: true });
    await cp(second, merged, { recursive: true, force: true });
    const full = fresh('full');
    await exp(full, rules);
    expect(sorted((await readTree(merged)).files)).toEqual(sorted((await readTree(full)).files));
  });

  test('--since with talos-cache-oci is refused: the imager takes the cache whole', async () => {
    const first = fresh('base');
    await exp(first, cacheRules());
    const err = await exp(fresh('oci-since'), cacheRules(), { format: 'talos-cache-oci', since: await readReceipt(`${first}.receipt.json`) }).then(() => new Error('resolved'), (e: unknown) => e as Error);
    expect(err.message).toContain('talos-cache-oci export cannot be incremental');
  });

  test('a blob that rotted in the store ends the export, naming it, and nothing appears at OUT (both forms)', async () => {
    const root = join(work, 'rotten');
    const store = await openStore({ storage: root });
    try {
      expect((await importPath(store, layout.dir)).failed).toEqual([]);
      const pause = layout.images.find((i) => i.ref === 'registry.k8s.io/pause:3.10')!;
      const layer = pause.blobs[pause.blobs.length - 1]!;
      const file = join(root, 'blobs', 'sha256', hexOf(layer.digest).slice(0, 2), hexOf(layer.digest));
      const bytes = await readFile(file);
      bytes[0] = bytes[0]! ^ 0xff;
      await writeFile(file, bytes);
      for (const format of ['talos-cache-flat', 'talos-cache-oci'] as const) {
        const out = fresh(`rotten-${format}`);
        const err = await exportBundle(store, { out, format, rules: exportRules([pause.ref]), explicitRules: true, platforms: ['linux/amd64'] }).then(() => new Error('resolved'), (e: unknown) => e as Error);
        expect(err.message, format).toContain(`blob ${layer.digest} of ${pause.ref} is corrupt in the store`);
        expect(await stat(out).catch(() => undefined), format).toBeUndefined();
        expect((await readdir(work)).filter((f) => f.includes('.partial-')), format).toEqual([]);
      }
    } finally {
      await store.close();
    }
  });

  test('the CLI: --format talos-cache-flat writes and names the cache-serve command; a .tar OUT or --since with talos-cache-oci is a usage error', async () => {
    const site = join(work, 'cli');
    await mkdir(site, { recursive: true });
    await writeFile(join(site, 'sluice.yaml'), sluiceConfigYaml('./data', { allowlist: cacheRules() }));
    const config = join(site, 'sluice.yaml');
    expect((await runSluice(['import', cache.dir, '--config', config])).code).toBe(0);
    const out = join(site, 'cache');
    const ok = await runSluice(['export', out, '--format', 'talos-cache-flat', '--platform', 'linux/amd64', '--config', config]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`talosctl image cache-serve --image-cache-path ${out}`);
    expect(sorted((await readTree(out)).files)).toEqual(sorted((await readTree(cache.dir)).files));
    const tarOut = await runSluice(['export', join(site, 'c.tar'), '--format', 'talos-cache-oci', '--config', config]);
    expect(tarOut.code).toBe(2);
    expect(tarOut.stderr).toContain('writes a folder');
    const since = await runSluice(['export', join(site, 'c2'), '--format', 'talos-cache-oci', '--since', `${out}.receipt.json`, '--config', config]);
    expect(since.code).toBe(2);
    expect(since.stderr).toContain('cannot be incremental');
  }, 60_000);
});

async function streamBytes(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
