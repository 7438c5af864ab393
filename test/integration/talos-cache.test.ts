// Talos image caches: both layouts of `talosctl images cache-create` (built from cache.go's facts)
// go into real sluice processes with the real `sluice import --allow`; real skopeo and real containerd then pull the
// chosen platform of every image through sluice with its original digests, signature tags and a digest-only image included.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries, run } from '../helpers/binaries.js';
import { startContainerd, tempDir, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { buildFlatCache, tarTree, wrapAsOciCache, type TalosCache } from '../helpers/talos-cache.js';
import { sha256 } from '../kit/oci.js';

const ok = requireBinaries(['skopeo', 'containerd', 'ctr'], 'test/integration/talos-cache.test.ts');
const DIGEST_ONLY = 'docker.io/library/busybox:1.36';
const PORT_COPY = { 'registry.k8s.io/pause:3.10': 'registry.lan:5000/team/pause:3.10' };

describe.skipIf(!ok)('pull what a Talos image cache imported (real sluice, skopeo, containerd)', () => {
  let work: string;
  let layout: LayoutDescription;
  let cache: TalosCache;
  let containerd: Containerd | undefined;
  const servers: Record<string, SluiceProcess> = {};

  beforeAll(async () => {
    work = await tempDir('talos-cache-pull');
    layout = await buildLayout(join(work, 'layout'));
    cache = await buildFlatCache(join(work, 'flat'), layout, DIGEST_ONLY, PORT_COPY);
    await tarTree(cache.dir, join(work, 'layer.tar.gz'));
    await wrapAsOciCache(join(work, 'layer.tar.gz'), join(work, 'oci'));
    for (const form of ['flat', 'oci'] as const) {
      const dir = join(work, `sluice-${form}`);
      const upstreams = { 'registry.lan:5000': { url: 'http://127.0.0.1:9' } };
      const config = sluiceConfigYaml('./data', { upstreams });
      await run('mkdir', ['-p', dir]);
      await writeFile(join(dir, 'sluice.yaml'), config);
      const r = await runSluice(['import', join(work, form), '--allow', '--config', join(dir, 'sluice.yaml')]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`read a Talos image cache (--layout ${form})`);
      expect(r.stdout).toContain('not in the cache (not served; a window fetches them if allowed): linux/arm64/v8');
      servers[form] = await startSluiceProcess(config, { dir });
    }
    containerd = await startContainerd();
  }, 240_000);

  afterAll(async () => {
    await containerd?.stop();
    for (const s of Object.values(servers)) await s.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  for (const form of ['flat', 'oci'] as const) {
    test(`--layout ${form}: skopeo copies the chosen platform of each image, by tag and by digest, and the signature tags`, async () => {
      const s = servers[form]!;
      for (const img of cache.images.filter((i) => i.host !== 'registry.lan:5000')) {
        const dest = join(work, `skopeo-${form}-${img.digests[0]!.slice(7, 19)}`);
        const src = `docker://${s.hostPort}/${img.ref}`;
        const r = await run('skopeo', ['copy', '--quiet', '--insecure-policy', '--src-tls-verify=false', '--src-no-creds', '--override-os', 'linux', '--override-arch', 'amd64', src, `dir:${dest}`]);
        expect(r.code, `${img.ref}: ${r.stderr}`).toBe(0);
        // skopeo verified every blob against its digest; the manifest it kept is the chosen platform's, byte-exact.
        expect(sha256(await readFile(join(dest, 'manifest.json'))), img.ref).toBe(img.platformDigest);
      }
      for (const sig of cache.signatures) {
        const raw = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--no-creds', `docker://${s.hostPort}/${sig.ref}`]);
        expect(raw.code, `${sig.ref}: ${raw.stderr}`).toBe(0);
        expect(sha256(raw.stdout), sig.ref).toBe(sig.digest);
      }
    }, 120_000);

    test(`--layout ${form}: containerd pulls every image (ns sent, host:port included) with its original digest`, async () => {
      const s = servers[form]!;
      const hosts = join(work, `certs.d-${form}`);
      await writeHostsToml(hosts, '_default', s.hostPort);
      for (const img of cache.images) {
        const r = await containerd!.pull(img.ref, hosts, ['--platform', 'linux/amd64']);
        expect(r.code, `${img.ref}: ${r.stderr}${r.stdout}`).toBe(0);
        expect(await containerd!.imageDigest(img.ref), img.ref).toBe(img.digest);
        const content = new Set(await containerd!.contentDigests());
        for (const d of img.digests) expect(content.has(d), `${img.ref} ${d}`).toBe(true);
        await containerd!.rmi(img.ref);
      }
      for (const sig of cache.signatures) {
        const r = await containerd!.fetch(sig.ref, hosts);
        expect(r.code, `${sig.ref}: ${r.stderr}`).toBe(0);
        const content = new Set(await containerd!.contentDigests());
        for (const d of sig.digests) expect(content.has(d), `${sig.ref} ${d}`).toBe(true);
      }
    }, 120_000);
  }
});
