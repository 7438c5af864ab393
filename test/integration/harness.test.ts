// Proves the integration helpers against the real parts: generated layout → docker-registry (skopeo
// push) → skopeo and a private containerd pulling back, digests identical to the layout's.
import { createReadStream } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { skopeoCopyAll, startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, corruptBlob, sha256, splitRef, writeTar, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';

const ok = requireBinaries(['docker-registry', 'skopeo', 'containerd', 'ctr'], 'test/integration/harness.test.ts');

describe.skipIf(!ok)('integration harness (real docker-registry, skopeo, containerd)', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  let containerd: Containerd | undefined;
  const image = (ref: string): TestImage => {
    const found = layout.images.find((i) => i.ref === ref);
    if (!found) throw new Error(`no ${ref} in layout`);
    return found;
  };

  beforeAll(async () => {
    work = await tempDir('harness');
    layout = await buildLayout(join(work, 'layout'));
    registry = await startRegistry();
    await pushLayout(layout.dir, layout, registry.hostPort);
  });

  afterAll(async () => {
    await containerd?.stop();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('the layout has the four kinds, full refs, and every described blob on disk with its digest', async () => {
    expect(layout.images.map((i) => i.kind).sort()).toEqual(['docker-list', 'docker-manifest', 'oci-index', 'oci-manifest']);
    expect(image('ghcr.io/siderolabs/kubelet:v1.34.0').platforms?.map((p) => p.arch)).toEqual(['amd64', 'arm64']);
    const again = await buildLayout(join(work, 'layout-again'));
    expect(again.images.map((i) => i.digest)).toEqual(layout.images.map((i) => i.digest));
    const onDisk = new Set(await readdir(join(layout.dir, 'blobs', 'sha256')));
    for (const b of layout.images.flatMap((i) => i.blobs)) expect(onDisk.has(b.digest.slice(7)), b.digest).toBe(true);
  });

  test('skopeo pulls every image back from docker-registry with identical digests and blobs', async () => {
    for (const img of layout.images) {
      const { name, tag } = splitRef(img.ref);
      const dest = join(work, 'skopeo', name.replace(/\//g, '_'));
      const r = await skopeoCopyAll(`docker://${registry.hostPort}/${name}:${tag}`, dest);
      expect(r.code, r.stderr).toBe(0);
      expect(await verifyDirDigests(dest)).toBe(img.digest);
      const files = (await readdir(dest)).filter((f) => /^[0-9a-f]{64}/.test(f)).map((f) => 'sha256:' + f.slice(0, 64));
      expect(new Set([img.digest, ...files])).toEqual(new Set(img.blobs.map((b) => b.digest)));
    }
  });

  test('verifyDirDigests rejects a corrupted file', async () => {
    const img = image('registry.k8s.io/pause:3.10');
    const dest = join(work, 'skopeo-corrupt');
    expect((await skopeoCopyAll(`docker://${registry.hostPort}/pause:3.10`, dest)).code).toBe(0);
    const layer = img.blobs[img.blobs.length - 1]!;
    const file = join(dest, layer.digest.slice(7));
    const bytes = await readFile(file);
    bytes[0] = bytes[0]! ^ 1;
    await writeFile(file, bytes);
    await expect(verifyDirDigests(dest)).rejects.toThrow(/digest mismatch/);
  });

  test('containerd pulls through hosts.toml for docker.io, ghcr.io and _default, with ?ns= ignored by the registry', async () => {
    containerd = await startContainerd();
    const hosts = join(work, 'certs.d');
    for (const host of ['docker.io', 'ghcr.io', '_default']) await writeHostsToml(hosts, host, registry.hostPort);
    for (const img of layout.images) {
      const r = await containerd.pull(img.ref, hosts);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(await containerd.imageDigest(img.ref)).toBe(img.digest);
    }
    const content = new Set(await containerd.contentDigests());
    // Only the host platform (amd64) is fetched from an index: the arm64 manifest must be absent.
    const kubelet = image('ghcr.io/siderolabs/kubelet:v1.34.0');
    const amd64 = kubelet.platforms?.find((p) => p.arch === 'amd64')?.digest;
    const arm64 = kubelet.platforms?.find((p) => p.arch === 'arm64')?.digest;
    expect(content.has(kubelet.digest)).toBe(true);
    expect(content.has(amd64 ?? '')).toBe(true);
    expect(content.has(arm64 ?? '')).toBe(false);
    for (const b of image('docker.io/library/busybox:1.36').blobs) expect(content.has(b.digest), b.digest).toBe(true);

    await containerd.rmi('registry.k8s.io/pause:3.10');
    expect(await containerd.imageDigest('registry.k8s.io/pause:3.10')).toBeUndefined();
    expect(new Set(await containerd.contentDigests()).has(image('registry.k8s.io/pause:3.10').digest)).toBe(false);
  });

  test('containerd reports failure for a tag the registry lacks (fallback server is a dead loopback port)', async () => {
    containerd ??= await startContainerd();
    const hosts = join(work, 'certs.d');
    const r = await containerd.pull('docker.io/library/busybox:does-not-exist', hosts);
    expect(r.code).not.toBe(0);
    // The mirror's 404 sends containerd to `server`, which refuses: the fallback stayed on loopback.
    expect(r.stderr).toMatch(/StatusNotFound/);
    expect(r.stderr).toMatch(/127\.0\.0\.1:9\/v2\/library\/busybox\/manifests\/does-not-exist\?ns=docker\.io.*connection refused/);
  });

  test('writeTar archives the layout and corruptBlob breaks exactly one blob', async () => {
    const tarPath = join(work, 'layout.tar');
    await writeTar(layout.dir, tarPath);
    const names: string[] = [];
    const extract = tar.extract();
    const done = new Promise<void>((resolve, reject) => {
      extract.on('entry', (header, stream, next) => {
        names.push(header.name);
        stream.on('end', () => next());
        stream.resume();
      });
      extract.on('finish', resolve);
      extract.on('error', reject);
    });
    createReadStream(tarPath).pipe(extract);
    await done;
    expect(names).toContain('oci-layout');
    expect(names).toContain('index.json');
    const blobs = layout.images.flatMap((i) => i.blobs);
    for (const b of blobs) expect(names).toContain(`blobs/sha256/${b.digest.slice(7)}`);

    const victim = image('registry.k8s.io/pause:3.10').blobs[1]!;
    const path = join(layout.dir, 'blobs', 'sha256', victim.digest.slice(7));
    await corruptBlob(layout.dir, victim.digest);
    const bytes = await readFile(path);
    expect(bytes.length).toBe(victim.size);
    expect(sha256(bytes)).not.toBe(victim.digest);
  });

  test('a registry with htpasswd answers 401 anonymously and serves pushed images to the right user', async () => {
    const creds = { user: 'sluice', pass: 's3cret' };
    const authed = await startRegistry({ htpasswd: creds });
    try {
      expect((await fetch(`${authed.url}/v2/`)).status).toBe(401);
      const small = await buildLayout(join(work, 'layout-auth'));
      const pause = { ...small, images: small.images.filter((i) => i.ref === 'registry.k8s.io/pause:3.10') };
      await pushLayout(small.dir, pause, authed.hostPort, creds);
      const dest = join(work, 'skopeo-auth');
      const anon = await skopeoCopyAll(`docker://${authed.hostPort}/pause:3.10`, join(work, 'skopeo-anon'));
      expect(anon.code).not.toBe(0);
      const r = await skopeoCopyAll(`docker://${authed.hostPort}/pause:3.10`, dest, { creds });
      expect(r.code, r.stderr).toBe(0);
      expect(await verifyDirDigests(dest)).toBe(pause.images[0]!.digest);
    } finally {
      await authed.stop();
    }
  });
});
