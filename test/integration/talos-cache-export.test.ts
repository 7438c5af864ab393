// Talos image caches written by sluice from a store filled the real way: a real docker-registry upstream holds the
// test images and a cosign-style `.sig` tag, the real `sluice sync` fetches them, the real `sluice export
// --format talos-cache-flat|talos-cache-oci` writes the caches; each is imported by the real `sluice import` into an
// empty store and real containerd pulls every image through it with the upstream's digests.
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries, run } from '../helpers/binaries.js';
import { startContainerd, tempDir, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, splitRef, type LayoutDescription } from '../helpers/images.js';
import { headManifest, pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { registryDir } from '../helpers/talos-cache.js';
import { hexOf, MediaType, mkLayoutDir, sha256, writeBlob, writeJsonBlob, writeLayoutIndex } from '../kit/oci.js';

const ok = requireBinaries(['docker-registry', 'skopeo', 'containerd', 'ctr'], 'test/integration/talos-cache-export.test.ts');
const FORMATS = ['talos-cache-flat', 'talos-cache-oci'] as const;

describe.skipIf(!ok)('Talos image caches exported by sluice, imported and pulled by containerd (real registry, sluice, ctr)', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  let containerd: Containerd | undefined;
  const servers: Record<string, SluiceProcess> = {};
  let signature: { ref: string; digest: string };

  beforeAll(async () => {
    work = await tempDir('talos-cache-export-int');
    layout = await buildLayout(join(work, 'layout'));
    registry = await startRegistry();
    await pushLayout(layout.dir, layout, registry.hostPort);
    // A cosign-style signature of the kubelet index under its `.sig` tag, pushed as cosign would.
    const kubelet = layout.images.find((i) => i.ref.startsWith('ghcr.io/'))!;
    const sigDir = join(work, 'sig');
    await mkLayoutDir(sigDir);
    const payload = await writeBlob(sigDir, Buffer.from(JSON.stringify({ critical: { image: { 'docker-manifest-digest': kubelet.digest }, type: 'cosign container image signature' } })), 'application/vnd.dev.cosign.simplesigning.v1+json');
    const config = await writeJsonBlob(sigDir, { architecture: '', os: '', config: {}, rootfs: { type: 'layers', diff_ids: [payload.digest] } }, MediaType.ociConfig);
    const top = await writeJsonBlob(sigDir, { schemaVersion: 2, mediaType: MediaType.ociManifest, config, layers: [{ ...payload, annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ==' } }] }, MediaType.ociManifest);
    signature = { ref: `ghcr.io/siderolabs/kubelet:sha256-${hexOf(kubelet.digest)}.sig`, digest: top.digest };
    await writeLayoutIndex(sigDir, [{ ref: signature.ref, top }]);
    await run('skopeo', ['copy', '--quiet', '--insecure-policy', '--preserve-digests', '--dest-tls-verify=false', `oci:${sigDir}:${signature.ref}`, `docker://${registry.hostPort}/siderolabs/kubelet:sha256-${hexOf(kubelet.digest)}.sig`]);
    expect(await headManifest(registry.hostPort, 'siderolabs/kubelet', `sha256-${hexOf(kubelet.digest)}.sig`)).toBe(top.digest);

    const upstreams = Object.fromEntries(['ghcr.io', 'docker.io', 'registry.k8s.io'].map((h) => [h, { url: registry.url }]));
    const source = join(work, 'source');
    await mkdir(source, { recursive: true });
    await writeFile(join(source, 'sluice.yaml'), sluiceConfigYaml('./data', { windows: 'always', upstreams, allowlist: layout.images.map((i) => i.ref) }));
    const cfg = ['--config', join(source, 'sluice.yaml')];
    const sync = await runSluice(['sync', '--json', ...cfg], { timeoutMs: 180_000 });
    expect(sync.code, sync.stderr).toBe(0);
    for (const format of FORMATS) {
      const out = join(work, format);
      const r = await runSluice(['export', out, '--format', format, '--platform', 'linux/amd64', ...cfg], { timeoutMs: 180_000 });
      expect(r.code, `${format}: ${r.stderr}`).toBe(0);
      const dir = join(work, `target-${format}`);
      await mkdir(dir, { recursive: true });
      const config = sluiceConfigYaml('./data');
      await writeFile(join(dir, 'sluice.yaml'), config);
      const imported = await runSluice(['import', out, '--allow', '--config', join(dir, 'sluice.yaml')], { timeoutMs: 180_000 });
      expect(imported.code, `${format}: ${imported.stderr}`).toBe(0);
      expect(imported.stdout).toContain(`read a Talos image cache (--layout ${format.slice('talos-cache-'.length)})`);
      servers[format] = await startSluiceProcess(config, { dir });
    }
  }, 300_000);

  afterAll(async () => {
    await containerd?.stop();
    for (const s of Object.values(servers)) await s.stop();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('every tag file of the flat cache is the upstream registry\'s manifest for that tag, byte for byte', async () => {
    for (const img of layout.images) {
      const { host, name, tag } = splitRef(img.ref);
      const body = await readFile(join(work, 'talos-cache-flat', 'manifests', registryDir(host), name, 'reference', tag));
      expect(sha256(body), img.ref).toBe(await headManifest(registry.hostPort, name, tag));
    }
    const sig = await readFile(join(work, 'talos-cache-flat', 'manifests', 'ghcr.io', 'siderolabs', 'kubelet', 'reference', signature.ref.split(':').pop()!));
    expect(sha256(sig)).toBe(signature.digest);
  });

  for (const format of FORMATS) {
    test(`${format}: imported into an empty store, containerd pulls every image (linux/amd64) with the upstream's digests, and the signature`, async () => {
      const s = servers[format]!;
      containerd ??= await startContainerd();
      const hosts = join(work, `certs.d-${format}`);
      await writeHostsToml(hosts, '_default', s.hostPort);
      for (const img of layout.images) {
        const r = await containerd.pull(img.ref, hosts, ['--platform', 'linux/amd64']);
        expect(r.code, `${img.ref}: ${r.stderr}${r.stdout}`).toBe(0);
        expect(await containerd.imageDigest(img.ref), img.ref).toBe(img.digest);
        const content = new Set(await containerd.contentDigests());
        const amd64 = img.platforms?.find((p) => p.arch === 'amd64')?.digest ?? img.digest;
        expect(content.has(amd64), `${img.ref} linux/amd64 manifest`).toBe(true);
        await containerd.rmi(img.ref);
      }
      const r = await containerd.fetch(signature.ref, hosts);
      expect(r.code, `${signature.ref}: ${r.stderr}`).toBe(0);
      expect(new Set(await containerd.contentDigests()).has(signature.digest)).toBe(true);
    }, 180_000);
  }
});
