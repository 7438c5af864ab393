// Export: the test images (OCI index multi-arch, Docker schema2, Docker manifest list, OCI
// manifest, and an image with a 256 MiB layer) exported by the real `sluice export`; real skopeo reads every
// image back from the bundle with its original digest; `sluice import` of the bundle into an empty store, served
// by a real sluice process, is pulled by real containerd.
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries, run } from '../helpers/binaries.js';
import { startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { MediaType, MiB, blobPath, writeJsonBlob, writeLayoutIndex, type Descriptor } from '../kit/oci.js';

const ok = requireBinaries(['skopeo', 'containerd', 'ctr'], 'test/integration/export.test.ts');
const BIG_REF = 'docker.io/library/big:256';

/** A valid uncompressed tar layer holding one file of `bytes` seeded bytes, streamed into the layout (never in memory). */
async function bigTarLayer(dir: string, bytes: number): Promise<Descriptor> {
  const tmp = join(dir, 'big-layer.tmp');
  const hash = createHash('sha256');
  let size = 0;
  const pack = tar.pack();
  const counting = new Transform({ transform(chunk: Buffer, _e, cb) { hash.update(chunk); size += chunk.length; cb(null, chunk); } });
  const done = pipeline(pack, counting, createWriteStream(tmp));
  const key = createHash('sha256').update('sluice-test:big').digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16));
  const entry = pack.entry({ name: 'data/big.bin', size: bytes, mtime: new Date(0) });
  const zeros = Buffer.alloc(4 * MiB);
  await pipeline((async function* () {
    for (let left = bytes; left > 0; left -= zeros.length) yield cipher.update(zeros.subarray(0, Math.min(left, zeros.length)));
  })(), entry);
  pack.finalize();
  await done;
  const digest = `sha256:${hash.digest('hex')}`;
  await rename(tmp, blobPath(dir, digest));
  return { mediaType: MediaType.ociLayerTar, digest, size };
}

describe.skipIf(!ok)('export bundles read by skopeo, imported and pulled by containerd', () => {
  let work: string;
  let layout: LayoutDescription;
  let refs: Array<{ ref: string; digest: string; docker: boolean }>;
  let sluice: SluiceProcess | undefined;
  let containerd: Containerd | undefined;

  beforeAll(async () => {
    work = await tempDir('export-int');
    layout = await buildLayout(join(work, 'layout'));
    const layer = await bigTarLayer(layout.dir, 256 * MiB);
    const config = await writeJsonBlob(layout.dir, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] } }, MediaType.ociConfig);
    const big = await writeJsonBlob(layout.dir, { schemaVersion: 2, mediaType: MediaType.ociManifest, config, layers: [layer] }, MediaType.ociManifest);
    refs = [...layout.images.map((i) => ({ ref: i.ref, digest: i.digest, docker: i.kind.startsWith('docker') })), { ref: BIG_REF, digest: big.digest, docker: false }];
    await writeLayoutIndex(layout.dir, [...layout.images.map((i) => ({ ref: i.ref, top: { mediaType: i.mediaType, digest: i.digest, size: i.size } })), { ref: BIG_REF, top: big }]);
    await mkdir(join(work, 'source'));
    await writeFile(join(work, 'source', 'sluice.yaml'), sluiceConfigYaml('./data', { allowlist: refs.map((r) => r.ref) }));
    const imported = await runSluice(['import', layout.dir, '--config', join(work, 'source', 'sluice.yaml')], { timeoutMs: 300_000 });
    expect(imported.code, imported.stderr).toBe(0);
    for (const out of ['bundle', 'bundle.tar']) {
      const exported = await runSluice(['export', join(work, out), '--config', join(work, 'source', 'sluice.yaml')], { timeoutMs: 300_000 });
      expect(exported.code, exported.stderr).toBe(0);
    }
  }, 300_000);

  afterAll(async () => {
    await containerd?.stop();
    await sluice?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('skopeo copy oci:BUNDLE:REF reads every OCI-typed image back with its original digest', async () => {
    for (const { ref, digest, docker } of refs) {
      const dest = join(work, 'skopeo', ref.replace(/[/:]/g, '_'));
      await mkdir(dest, { recursive: true });
      const r = await run('skopeo', ['copy', '--quiet', '--insecure-policy', '--all', '--preserve-digests', `oci:${join(work, 'bundle')}:${ref}`, `dir:${dest}`], { timeoutMs: 300_000 });
      if (docker && r.code !== 0) {
        // skopeo 1.9 (containers/image 5.23) looks only at OCI-typed index.json entries; ctr reads these below.
        expect(r.stderr, ref).toContain('no descriptor found for reference');
        continue;
      }
      expect(r.code, `${ref}: ${r.stderr}`).toBe(0);
      expect(await verifyDirDigests(dest), ref).toBe(digest);
    }
  }, 300_000);

  test('ctr images import of the .tar reads every image, Docker-typed ones included, with its original digest', async () => {
    containerd = await startContainerd();
    const r = await containerd.ctr(['images', 'import', '--all-platforms', join(work, 'bundle.tar')]);
    expect(r.code, `${r.stderr}${r.stdout}`).toBe(0);
    for (const { ref, digest } of refs) expect(await containerd.imageDigest(ref), ref).toBe(digest);
    for (const { ref } of refs) await containerd.rmi(ref);
  }, 300_000);

  test('sluice import of the .tar into an empty store serves every image to containerd', async () => {
    const config = sluiceConfigYaml('./data', { allowlist: refs.map((r) => r.ref) });
    await mkdir(join(work, 'target'));
    await writeFile(join(work, 'target', 'sluice.yaml'), config);
    const imported = await runSluice(['import', join(work, 'bundle.tar'), '--config', join(work, 'target', 'sluice.yaml')], { timeoutMs: 300_000 });
    expect(imported.code, imported.stderr).toBe(0);
    sluice = await startSluiceProcess(config, { dir: join(work, 'target') });
    containerd ??= await startContainerd();
    const hosts = join(work, 'certs.d');
    for (const host of ['docker.io', 'ghcr.io', '_default']) await writeHostsToml(hosts, host, sluice.hostPort);
    for (const { ref, digest } of refs) {
      const r = await containerd.pull(ref, hosts);
      expect(r.code, `${ref}: ${r.stderr}${r.stdout}`).toBe(0);
      expect(await containerd.imageDigest(ref), ref).toBe(digest);
    }
  }, 300_000);
});
