// sluice behind sluice: a real docker-registry → an outer sluice (the connected side) → an inner sluice whose only
// upstream is `'*': { url: outer, mirror: true }` → real containerd and skopeo. Each sluice has its own allowlist
// and manual window; the outer's request log (`requestLog: true`) shows what the inner asked.
import { readFile, rm } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { requireBinaries } from '../helpers/binaries.js';
import { skopeoCopyAll, startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, splitRef, type LayoutDescription } from '../helpers/images.js';
import { pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { sluiceConfigDoc, type SluiceConfigOptions } from '../helpers/sluice.js';
import { ACCEPT_MANIFESTS } from '../kit/oci.js';

const ok = requireBinaries(['docker-registry', 'skopeo', 'containerd', 'ctr'], 'test/integration/chain.test.ts');

interface Running {
  app: App;
  hostPort: string;
  /** Every registry request URL this sluice received. */
  requests: string[];
  window(open: boolean): Promise<void>;
  close(): Promise<void>;
}

/** A sluice in this process with a request log, listening on 127.0.0.1; its manual window is driven through the admin API. */
async function startLogged(opts: SluiceConfigOptions): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-chain-'));
  const requests: string[] = [];
  // sluice's own request log (`requestLog: true`), handed to the test instead of the listener's logger.
  const doc = { ...sluiceConfigDoc(join(dir, 'data'), opts), requestLog: true };
  const app = await buildApp(validateConfig(doc, join(dir, 'sluice.yaml')), {
    requestLog: (entry) => void requests.push(`${entry.method} ${entry.url}`),
  });
  const address = await app.registry.listen({ host: '127.0.0.1', port: 0 });
  const token = (await readFile(app.config.admin.tokenFile, 'utf8')).trim();
  return {
    app,
    hostPort: new URL(address.replace('localhost', '127.0.0.1')).host,
    requests,
    async window(open) {
      const res = await app.admin.inject({
        method: open ? 'POST' : 'DELETE', url: '/api/v1/window', headers: { authorization: `Bearer ${token}` },
        ...(open ? { payload: { duration: '1h', note: 'chain test' } } : {}),
      });
      expect(res.statusCode, res.body).toBe(200);
    },
    async close() {
      await app.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe.skipIf(!ok)('sluice behind sluice (docker-registry → outer → inner → containerd, skopeo)', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  let outer: Running;
  let inner: Running;
  let containerd: Containerd;
  let hosts: string;
  const ref = (kind: string): string => layout.images.find((i) => i.kind === kind)!.ref;

  beforeAll(async () => {
    work = await tempDir('chain');
    layout = await buildLayout(join(work, 'layout'));
    registry = await startRegistry();
    await pushLayout(layout.dir, layout, registry.hostPort);
    const up = { url: `http://${registry.hostPort}` };
    // The outer allows everything but busybox; the inner allows everything but coredns.
    outer = await startLogged({
      upstreams: { 'docker.io': up, 'ghcr.io': up, 'registry.k8s.io': up },
      allowlist: layout.images.map((i) => i.ref).filter((r) => !r.includes('busybox')),
    });
    inner = await startLogged({
      extra: { upstreams: { '*': { url: `http://${outer.hostPort}`, mirror: true } } },
      allowlist: layout.images.map((i) => i.ref).filter((r) => !r.includes('coredns')),
    });
    await outer.window(true);
    await inner.window(true);
    containerd = await startContainerd();
    hosts = join(work, 'certs.d');
    for (const host of ['docker.io', 'ghcr.io', '_default']) await writeHostsToml(hosts, host, inner.hostPort);
  }, 180_000);

  afterAll(async () => {
    await containerd?.stop();
    await inner?.close();
    await outer?.close();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('containerd and skopeo pull through both mirrors with the original digests; the outer sees ns on every request', async () => {
    const kubelet = layout.images.find((i) => i.kind === 'oci-index')!;
    const r = await containerd.pull(kubelet.ref, hosts);
    expect(r.code, `${r.stderr}${r.stdout}`).toBe(0);
    expect(await containerd.imageDigest(kubelet.ref)).toBe(kubelet.digest);
    const pause = layout.images.find((i) => i.kind === 'oci-manifest')!;
    const { host, name, tag } = splitRef(pause.ref);
    const dest = join(work, 'skopeo-pause');
    const s = await skopeoCopyAll(`docker://${inner.hostPort}/${host}/${name}:${tag}`, dest);
    expect(s.code, s.stderr).toBe(0);
    expect(await verifyDirDigests(dest)).toBe(pause.digest);
    expect(outer.requests.length).toBeGreaterThan(3);
    for (const line of outer.requests) expect(line, line).toMatch(/[?&]ns=(ghcr\.io|registry\.k8s\.io|docker\.io)(&|$)/);
    expect(outer.requests.some((l) => l.includes('ns=ghcr.io'))).toBe(true);
    expect(outer.requests.some((l) => l.includes('ns=registry.k8s.io'))).toBe(true);
  }, 120_000);

  test('the inner allowlist applies first (the outer is not asked); a refusal of the outer is relayed as 403', async () => {
    const before = outer.requests.length;
    const coredns = splitRef(ref('docker-list'));
    const denied = await fetch(`http://${inner.hostPort}/v2/${coredns.name}/manifests/${coredns.tag}?ns=${coredns.host}`, { headers: { accept: ACCEPT_MANIFESTS } });
    expect(denied.status).toBe(403);
    expect(outer.requests.length).toBe(before);
    const busybox = splitRef(ref('docker-manifest'));
    const relayed = await fetch(`http://${inner.hostPort}/v2/${busybox.name}/manifests/${busybox.tag}?ns=docker.io`, { headers: { accept: ACCEPT_MANIFESTS } });
    expect(relayed.status).toBe(403);
    const body = (await relayed.json()) as { errors: Array<{ code: string; message: string }> };
    expect(body.errors[0]?.code).toBe('DENIED');
    expect(body.errors[0]?.message).toMatch(/via mirror .*not on the allowlist of this mirror/);
    expect(outer.requests.length).toBeGreaterThan(before);
  }, 60_000);

  test('outer window closed: cached content still pulls through the inner; uncached gets a fast 404; inner closed: its own answer, outer not asked', async () => {
    await outer.window(false);
    const kubelet = layout.images.find((i) => i.kind === 'oci-index')!;
    await containerd.rmi(kubelet.ref);
    const again = await containerd.pull(kubelet.ref, hosts);
    expect(again.code, `${again.stderr}${again.stdout}`).toBe(0);
    expect(await containerd.imageDigest(kubelet.ref)).toBe(kubelet.digest);

    // registry.k8s.io/pause's arm64 sibling never went through: try an image neither sluice has cached.
    const pause = splitRef(ref('oci-manifest'));
    const started = Date.now();
    const res = await fetch(`http://${inner.hostPort}/v2/${pause.name}/manifests/not-cached-anywhere?ns=${pause.host}`, { headers: { accept: ACCEPT_MANIFESTS } });
    expect(res.status).toBe(403); // not on either allowlist: refused by the inner, first
    const arm = layout.images.find((i) => i.kind === 'oci-index')!.platforms!.find((p) => p.arch === 'arm64')!;
    const k = splitRef(kubelet.ref);
    const miss = await fetch(`http://${inner.hostPort}/v2/${k.name}/manifests/${arm.digest}?ns=${k.host}`, { headers: { accept: ACCEPT_MANIFESTS } });
    expect(miss.status).toBe(404);
    expect(((await miss.json()) as { errors: Array<{ message: string }> }).errors[0]?.message).toMatch(/upstream access closed/);
    expect(Date.now() - started).toBeLessThan(2_000);

    await inner.window(false);
    const before = outer.requests.length;
    const closed = await fetch(`http://${inner.hostPort}/v2/${k.name}/manifests/${arm.digest}?ns=${k.host}`, { headers: { accept: ACCEPT_MANIFESTS } });
    expect(closed.status).toBe(404);
    expect(((await closed.json()) as { errors: Array<{ message: string }> }).errors[0]?.message).toMatch(/^manifest not cached; upstream access closed/);
    expect(outer.requests.length).toBe(before);
    await containerd.rmi(kubelet.ref);
    const cached = await containerd.pull(kubelet.ref, hosts);
    expect(cached.code, `${cached.stderr}${cached.stdout}`).toBe(0);
  }, 120_000);
});
