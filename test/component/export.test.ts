// `sluice export` and `sluice import` of its bundles, as real CLI processes on real stores: round trips in every
// format (same digests, media types and tags), signature tags and referrers carried along, incremental bundles,
// incomplete images, corrupt and truncated bundles, and archives that try to write outside their folder.
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportBundle, type ExportOptions } from '../../src/jobs/exporter.js';
import { exportRules } from '../../src/jobs/export-plan.js';
import { importPath } from '../../src/jobs/importer.js';
import { readReceipt } from '../../src/jobs/receipt.js';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { layoutBlobDigests, readBundleIndex, writeArtifact, writeIndex, writeSmallImage, type SmallImage } from '../helpers/bundles.js';
import { tempDir } from '../helpers/clients.js';
import { buildLayout, corruptBlob, splitRef, type LayoutDescription } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml } from '../helpers/sluice.js';
import { sha256 } from '../kit/oci.js';

interface Receipt {
  blobs: Array<{ digest: string; sizeBytes: number }>;
  assumed: string[];
  images: Array<{ ref: string; digest: string; missing: string[] }>;
  sizeBytes: number;
  checksum: { value: string; of: string };
}

describe('sluice export / import of bundles', () => {
  let dir: string;
  let layout: LayoutDescription;
  let extras: SmallImage[];
  const allRefs = (): string[] => [...layout.images.map((i) => i.ref)];
  const wanted = (): Set<string> => new Set([...layout.images.flatMap((i) => i.blobs.map((b) => b.digest)), ...extras.flatMap((e) => e.blobs.map((b) => b.digest))]);

  /** A config in its own folder with its own store; returns the config path. */
  async function site(name: string, allowlist: string[] = []): Promise<string> {
    const d = join(dir, name);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'sluice.yaml'), sluiceConfigYaml('./data', { allowlist }));
    return join(d, 'sluice.yaml');
  }
  const sluice = async (config: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    runSluice([...args, '--config', config], { timeoutMs: 60_000 });
  const ok = async (config: string, ...args: string[]): Promise<string> => {
    const r = await sluice(config, ...args);
    expect(r.code, `sluice ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const receipt = async (bundle: string): Promise<Receipt> => JSON.parse(await readFile(`${bundle}.receipt.json`, 'utf8')) as Receipt;
  const storeOf = (config: string): Promise<Store> => openStore({ storage: join(config, '..', 'data') });

  let source: string;

  /** `sluice export` in this process (the CLI is exercised by the first and the last test). */
  async function exp(config: string, out: string, rules: string[], more: Partial<ExportOptions> & { sinceFile?: string } = {}): Promise<string> {
    const store = await storeOf(config);
    try {
      const format = out.endsWith('.tar.zst') ? 'tar.zst' : out.endsWith('.tar') ? 'tar' : 'dir';
      const since = more.sinceFile ? await readReceipt(more.sinceFile) : undefined;
      const r = await exportBundle(store, { out, format, rules: exportRules(rules), explicitRules: true, since, ...more });
      return r.receipt.since ? `left out (already in ${r.receipt.since.bundle})` : '';
    } finally {
      await store.close();
    }
  }
  /** `sluice import` in this process, answering in the CLI's words. */
  async function imp(config: string, path: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const store = await storeOf(config);
    try {
      const r = await importPath(store, path);
      const stdout = r.imported.map((i) => `imported ${i.ref} ${i.digest}\n`).join('');
      const stderr = [...r.warnings.map((w) => `warning: ${w}`), ...r.failed.map((f) => `failed ${f.ref}: ${f.reason}`)].join('\n');
      return { code: r.failed.length > 0 ? 1 : 0, stdout, stderr };
    } catch (e) {
      return { code: 1, stdout: '', stderr: (e as Error).message };
    }
  }

  beforeAll(async () => {
    dir = await tempDir('export');
    layout = await buildLayout(join(dir, 'layout'));
    const pause = layout.images.find((i) => i.ref === 'registry.k8s.io/pause:3.10')!;
    const subject = { mediaType: pause.mediaType, digest: pause.digest, size: pause.size };
    const hex = pause.digest.slice(7);
    extras = [
      await writeArtifact(join(dir, 'extras'), `registry.k8s.io/pause:sha256-${hex}.sig`, subject, 'sig', false),
    ];
    extras.push(await writeArtifact(join(dir, 'extras'), 'registry.k8s.io/pause@', subject, 'referrer', true));
    extras[1]!.ref = `registry.k8s.io/pause@${extras[1]!.top.digest}`;
    await writeIndex(join(dir, 'extras'), extras);
    source = await site('source', allRefs());
    expect((await imp(source, layout.dir)).code).toBe(0);
    expect((await imp(source, join(dir, 'extras'))).code).toBe(0);
  }, 60_000);

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Every tag, manifest (bytes and media type) and blob of the source is in `config`'s store, the same. */
  async function sameAsSource(config: string): Promise<void> {
    const [a, b] = [await storeOf(source), await storeOf(config)];
    try {
      for (const img of layout.images) {
        const { host, name, tag } = splitRef(img.ref);
        expect(await b.getTag(host, name, tag), img.ref).toBe(img.digest);
      }
      const hex = layout.images.find((i) => i.ref.endsWith('pause:3.10'))!.digest.slice(7);
      expect(await b.getTag('registry.k8s.io', 'pause', `sha256-${hex}.sig`)).toBe(extras[0]!.top.digest);
      expect((await b.referrers('registry.k8s.io', 'pause', `sha256:${hex}`)).map((d) => d.digest)).toEqual([extras[1]!.top.digest]);
      for (const digest of wanted()) {
        const bytes = await b.readBlob(digest);
        expect(bytes && sha256(bytes), digest).toBe(digest);
        const m = await a.getManifest(digest);
        if (m) expect((await b.getManifest(digest))?.mediaType, digest).toBe(m.mediaType);
      }
    } finally {
      await a.close();
      await b.close();
    }
  }

  it('writes dir, tar and tar.zst bundles of the allowlist with signatures and referrers, and each imports into an empty store', async () => {
    for (const out of ['full', 'full.tar', 'full.tar.zst']) {
      const bundle = join(dir, out);
      const stdout = await ok(source, 'export', bundle);
      expect(stdout).toContain(`receipt ${bundle}.receipt.json`);
      const r = await receipt(bundle);
      expect(new Set(r.blobs.map((b) => b.digest)), out).toEqual(wanted());
      expect(r.assumed).toEqual([]);
      expect(r.images.map((i) => i.ref).sort()).toEqual([...allRefs(), ...extras.map((e) => e.ref)].sort());
      if (out !== 'full') expect(r.checksum.value).toBe(sha256(await readFile(bundle)));
      const target = await site(`target-${out}`);
      const res = out === 'full.tar.zst' ? await sluice(target, 'import', bundle) : await imp(target, bundle);
      expect(res.code, res.stderr).toBe(0);
      const imported = res.stdout;
      for (const img of layout.images) expect(imported).toContain(`imported ${img.ref} ${img.digest}`);
      await sameAsSource(target);
    }
    const index = await readBundleIndex(join(dir, 'full'));
    expect(index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']).sort()).toEqual(
      [...allRefs(), ...extras.map((e) => e.ref)].sort(),
    );
    expect(await layoutBlobDigests(join(dir, 'full'))).toEqual([...wanted()].sort());
  }, 60_000);

  it('an incremental bundle holds only the changed image\'s new blobs and imports on top of the first', async () => {
    const first = join(dir, 'week1.tar');
    await exp(source, first, ['registry.k8s.io/**', 'docker.io/library/busybox:1.36']);
    const changed = await writeSmallImage(join(dir, 'pause-v2'), 'registry.k8s.io/pause:3.10', 'pause v2');
    await writeIndex(join(dir, 'pause-v2'), [changed]);
    expect((await imp(source, join(dir, 'pause-v2'))).code).toBe(0);
    const second = join(dir, 'week2.tar');
    const out = await exp(source, second, ['registry.k8s.io/**', 'docker.io/library/busybox:1.36'], { sinceFile: `${first}.receipt.json` });
    expect(out).toMatch(/left out \(already in week1\.tar\)/);
    const r = await receipt(second);
    expect(r.blobs.map((b) => b.digest).sort()).toEqual(changed.blobs.map((b) => b.digest).sort());
    expect(r.sizeBytes).toBe(changed.blobs.reduce((n, b) => n + b.size, 0));
    expect((await stat(second)).size).toBeLessThan(r.sizeBytes + 16 * 1024);

    const target = await site('incremental');
    expect((await imp(target, first)).code).toBe(0);
    const again = await imp(target, second);
    expect(again.code, again.stderr).toBe(0);
    const imported = again.stdout;
    expect(imported).toContain(`imported registry.k8s.io/pause:3.10 ${changed.top.digest}`);
    const b = await storeOf(target);
    try {
      expect(await b.getTag('registry.k8s.io', 'pause', '3.10')).toBe(changed.top.digest);
      expect(await b.getTag('registry.k8s.io', 'coredns/coredns', 'v1.11.3')).toBe(layout.images.find((i) => i.kind === 'docker-list')!.digest);
    } finally {
      await b.close();
    }
    // On a store without the first bundle, the images that need its blobs are refused whole, naming them.
    const empty = await site('incremental-alone');
    const alone = await imp(empty, second);
    expect(alone.code).toBe(1);
    expect(alone.stdout).toContain(`imported registry.k8s.io/pause:3.10 ${changed.top.digest}`);
    const busybox = layout.images.find((i) => i.kind === 'docker-manifest')!;
    expect(alone.stderr).toContain(`failed ${busybox.ref}: `);
    expect(alone.stderr).toContain(busybox.digest);
    const s = await storeOf(empty);
    try {
      expect(await s.getTag('docker.io', 'library/busybox', '1.36')).toBeUndefined();
    } finally {
      await s.close();
    }
  }, 60_000);

  it('a bundle cannot claim stored blobs of another repository by leaving them out (they must be this image\'s own)', async () => {
    const target = await site('claim');
    const base = join(dir, 'claim-base.tar');
    await exp(source, base, ['docker.io/library/busybox:1.36']);
    expect((await imp(target, base)).code).toBe(0);
    // The busybox bundle re-labelled as another repository, its layers left out as an increment would.
    const forged = join(dir, 'forged');
    await exp(source, forged, ['docker.io/library/busybox:1.36']);
    const indexFile = join(forged, 'index.json');
    const index = JSON.parse(await readFile(indexFile, 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> };
    for (const m of index.manifests) if (m.annotations) m.annotations['org.opencontainers.image.ref.name'] = 'docker.io/evil/app:v1';
    await writeFile(indexFile, JSON.stringify(index));
    const busybox = layout.images.find((i) => i.kind === 'docker-manifest')!;
    const layers = (await layoutBlobDigests(forged)).filter((d) => d !== busybox.digest);
    for (const d of layers) await rm(join(forged, 'blobs', 'sha256', d.slice(7)), { force: true });
    const got = await imp(target, forged);
    expect(got.code).toBe(1);
    expect(got.stderr).toMatch(/failed docker\.io\/evil\/app:v1: .*only for other repositories/);
    const s = await storeOf(target);
    try {
      expect(await s.getTag('docker.io', 'evil/app', 'v1')).toBeUndefined();
      for (const d of layers) expect(await s.isBlobLinked('docker.io', 'evil/app', d)).toBe(false);
    } finally {
      await s.close();
    }
  }, 60_000);

  it('an image incomplete in the store is refused (naming what is missing) unless --partial or --platform leaves it out', async () => {
    const partialSite = await site('partial', allRefs());
    expect((await imp(partialSite, layout.dir)).code).toBe(0);
    const kubelet = layout.images.find((i) => i.kind === 'oci-index')!;
    const arm64 = kubelet.platforms!.find((p) => p.arch === 'arm64')!.digest;
    const s = await storeOf(partialSite);
    const armManifest = JSON.parse((await s.readBlob(arm64))!.toString()) as { layers: Array<{ digest: string }> };
    const gone = armManifest.layers.at(-1)!.digest;
    expect(await s.blobs.delete(gone)).toBe(true);
    await s.close();
    const refused = await sluice(partialSite, 'export', join(dir, 'partial.tar'));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`${kubelet.ref}: 1 missing: ${gone}`);
    await expect(stat(join(dir, 'partial.tar'))).rejects.toThrow();

    await exp(partialSite, join(dir, 'amd64.tar'), [kubelet.ref], { platforms: ['linux/amd64'] });
    const amd = await receipt(join(dir, 'amd64.tar'));
    expect(amd.blobs.map((b) => b.digest)).not.toContain(arm64);
    const target = await site('amd64-only');
    expect((await imp(target, join(dir, 'amd64.tar'))).stdout).toContain(`imported ${kubelet.ref}`);

    const partial = await sluice(partialSite, 'export', join(dir, 'partial.tar'), '--partial');
    expect(partial.code, partial.stderr).toBe(0);
    expect(partial.stderr).toContain(gone);
    expect((await receipt(join(dir, 'partial.tar'))).images.find((i) => i.ref === kubelet.ref)!.missing).toEqual([gone]);
  }, 60_000);

  it('a corrupt blob or a truncated archive imports nothing of the images it belongs to and names the blob', async () => {
    const bundle = join(dir, 'corrupt');
    await exp(source, bundle, allRefs());
    const kubelet = layout.images.find((i) => i.kind === 'oci-index')!;
    const bad = kubelet.blobs.at(-1)!;
    await corruptBlob(bundle, bad.digest);
    const target = await site('corrupt-target');
    const r = await imp(target, bundle);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`failed ${kubelet.ref}: blob ${bad.digest} is corrupt`);
    for (const img of layout.images.filter((i) => i !== kubelet)) expect(r.stdout).toContain(`imported ${img.ref}`);
    const s = await storeOf(target);
    expect(await s.getTag('ghcr.io', 'siderolabs/kubelet', 'v1.34.0')).toBeUndefined();
    await s.close();

    for (const out of ['cut.tar', 'cut.tar.zst']) {
      const cut = join(dir, out);
      await exp(source, cut, [kubelet.ref]);
      await truncate(cut, Math.floor((await stat(cut)).size * 0.6));
      const t = await site(`cut-${out}`);
      const res = await imp(t, cut);
      expect(res.code, res.stderr).toBe(1);
      expect(res.stdout).not.toContain('imported');
      expect(res.stderr).toMatch(/hashes to .* but its receipt/);
      expect(res.stderr).toMatch(/cut short|neither in the bundle nor in the store/);
      expect(res.stderr).toContain('sha256:');
      const st = await storeOf(t);
      expect(await st.getTag('ghcr.io', 'siderolabs/kubelet', 'v1.34.0')).toBeUndefined();
      expect((await st.usage()).blobs).toBe(0);
      await st.close();
    }
  }, 60_000);

  it('a tar with an absolute path, "..", a symlink or a hard link is refused whole', async () => {
    const cases: Array<[string, Parameters<tar.Pack['entry']>[0]]> = [
      ['absolute', { name: '/etc/passwd-sluice', size: 1 }],
      ['dotdot', { name: '../escape', size: 1 }],
      ['nested-dotdot', { name: 'blobs/../../escape', size: 1 }],
      ['symlink', { name: 'blobs/sha256/x', type: 'symlink', linkname: '/etc/passwd' }],
      ['hardlink', { name: 'oci-layout2', type: 'link', linkname: 'index.json' }],
    ];
    for (const [label, header] of cases) {
      const file = join(dir, `evil-${label}.tar`);
      const pack = tar.pack();
      const done = pipeline(pack, createWriteStream(file));
      pack.entry({ name: 'index.json' }, await readFile(join(layout.dir, 'index.json')));
      if (header.size) pack.entry(header, 'x');
      else pack.entry(header, '');
      pack.finalize();
      await done;
      const t = await site(`evil-${label}`);
      const r = await imp(t, file);
      expect(r.code, label).toBe(1);
      expect(r.stderr, label).toMatch(/refused and nothing of it is imported/);
      expect(r.stdout, label).not.toContain('imported');
    }
  }, 60_000);

  it('usage errors: an unknown format, a bad platform, a --since that is no receipt, an existing OUT', async () => {
    await writeFile(join(dir, 'not-a-receipt.json'), '{"kind":"other"}');
    const [format, platform, since, exists, unknown] = await Promise.all([
      sluice(source, 'export', join(dir, 'x'), '--format', 'zip'),
      sluice(source, 'export', join(dir, 'x'), '--platform', 'amd64'),
      sluice(source, 'export', join(dir, 'x'), '--since', join(dir, 'not-a-receipt.json')),
      sluice(source, 'export', join(dir, 'full')),
      sluice(source, 'export', join(dir, 'y'), 'ghcr.io/nope/nope:v1'),
    ]);
    expect(format.code).toBe(2);
    expect(platform.code).toBe(2);
    expect(since.code).toBe(2);
    expect(since.stderr).toContain('not a sluice export receipt');
    expect(exists.code).toBe(1);
    expect(exists.stderr).toContain('already exists');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('not in the store: ghcr.io/nope/nope:v1');
  }, 60_000);
});
