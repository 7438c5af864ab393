// Real clients pull through a real sluice: a layout with layers up to 64 MiB is put into a real sluice process with
// the real `sluice import`, then real skopeo (prefix form) and real containerd (`ctr --hosts-dir`,
// so `?ns=` is sent) pull every image through it with the original digests. Nothing leaves 127.0.0.1.
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { skopeoCopyAll, startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, splitRef, type LayoutDescription } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';

const ok = requireBinaries(['skopeo', 'containerd', 'ctr'], 'test/integration/pull.test.ts');

describe.skipIf(!ok)('pull from an imported store (real sluice process, skopeo, containerd)', () => {
  let work: string;
  let layout: LayoutDescription;
  let sluice: SluiceProcess | undefined;
  let containerd: Containerd | undefined;

  beforeAll(async () => {
    work = await tempDir('pull');
    layout = await buildLayout(join(work, 'layout'), { large: true });
    const config = sluiceConfigYaml('./data', { allowlist: layout.images.map((i) => i.ref) });
    await writeFile(join(work, 'sluice.yaml'), config);
    const imported = await runSluice(['import', layout.dir, '--config', join(work, 'sluice.yaml')], { timeoutMs: 300_000 });
    expect(imported.code, imported.stderr).toBe(0);
    for (const img of layout.images) expect(imported.stdout).toContain(`imported ${img.ref} ${img.digest}`);
    sluice = await startSluiceProcess(config, { dir: work });
  });

  afterAll(async () => {
    await containerd?.stop();
    const code = await sluice?.stop();
    if (sluice && code !== 0) console.warn(`sluice exited ${String(code)}:\n${sluice.stderr().slice(-2000)}`);
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('the layout has a 64 MiB layer and all four manifest kinds', () => {
    expect(Math.max(...layout.images.flatMap((i) => i.blobs.map((b) => b.size)))).toBeGreaterThanOrEqual(64 * 1024 * 1024);
    expect(layout.images.map((i) => i.kind).sort()).toEqual(['docker-list', 'docker-manifest', 'oci-index', 'oci-manifest']);
  });

  test('skopeo copy --all docker://127.0.0.1:PORT/<host>/<name>:<tag> gets every image with its original digests', async () => {
    for (const img of layout.images) {
      const { host, name, tag } = splitRef(img.ref);
      const dest = join(work, 'skopeo', `${host}_${name.replace(/\//g, '_')}`);
      const r = await skopeoCopyAll(`docker://${sluice!.hostPort}/${host}/${name}:${tag}`, dest, { timeoutMs: 300_000 });
      expect(r.code, `${img.ref}: ${r.stderr}`).toBe(0);
      expect(await verifyDirDigests(dest)).toBe(img.digest);
      const files = (await readdir(dest)).filter((f) => /^[0-9a-f]{64}/.test(f)).map((f) => `sha256:${f.slice(0, 64)}`);
      expect(new Set([img.digest, ...files])).toEqual(new Set(img.blobs.map((b) => b.digest)));
    }
  });

  test('containerd pulls every image through hosts.toml (docker.io, ghcr.io, _default → sluice, so ns is sent)', async () => {
    containerd = await startContainerd();
    const hosts = join(work, 'certs.d');
    for (const host of ['docker.io', 'ghcr.io', '_default']) await writeHostsToml(hosts, host, sluice!.hostPort);
    for (const img of layout.images) {
      const r = await containerd.pull(img.ref, hosts);
      expect(r.code, `${img.ref}: ${r.stderr}${r.stdout}`).toBe(0);
      expect(await containerd.imageDigest(img.ref)).toBe(img.digest);
    }
    const content = new Set(await containerd.contentDigests());
    // The host platform's image of each index, every blob of it, fetched and verified by containerd.
    for (const img of layout.images) {
      expect(content.has(img.digest), img.ref).toBe(true);
      const amd64 = img.platforms?.find((p) => p.arch === 'amd64')?.digest;
      if (amd64) expect(content.has(amd64), `${img.ref} amd64`).toBe(true);
    }
    const busybox = layout.images.find((i) => i.ref === 'docker.io/library/busybox:1.36')!;
    for (const b of busybox.blobs) expect(content.has(b.digest), b.digest).toBe(true);
    // Every request carried ns and got answers from sluice alone: the fallback `server` is a dead port,
    // so a pull that succeeded was served entirely by the mirror.
  });
});
