// Entitlement against a real docker-registry (distribution 2.8) and real skopeo: a foreign-layer
// manifest naming another image's stored layer gets no byte of it, and single-flight across repositories
// neither answers one repository with another's failure nor streams one repository's download to another.
import { randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { closeServer, listenLoopback } from '../helpers/http-server.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { importPath } from '../../src/jobs/importer.js';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { requireBinaries } from '../helpers/binaries.js';
import { skopeoCopyAll, tempDir, verifyDirDigests } from '../helpers/clients.js';
import type { LayoutDescription, TestImage } from '../helpers/images.js';
import { pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { sluiceConfigDoc } from '../helpers/sluice.js';
import { MediaType, MiB, sha256 } from '../kit/oci.js';

const ok = requireBinaries(['docker-registry', 'skopeo'], 'test/integration/entitlement.test.ts');

const FOREIGN = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';

interface Built {
  ref: string;
  config: Buffer;
  layers: Buffer[];
  manifest: Buffer;
  digest: string;
}

function build(ref: string, layers: Buffer[]): Built {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, ref }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length },
    layers: layers.map((l) => ({ mediaType: MediaType.ociLayer, digest: sha256(l), size: l.length })),
  }));
  return { ref, config, layers, manifest, digest: sha256(manifest) };
}

/** An OCI image layout holding `images`, each named by its full reference (for skopeo and sluice import). */
async function writeLayout(dir: string, images: Built[]): Promise<LayoutDescription> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const described: TestImage[] = [];
  for (const img of images) {
    const blobs = [img.manifest, img.config, ...img.layers];
    for (const b of blobs) await writeFile(join(dir, 'blobs', 'sha256', sha256(b).slice(7)), b);
    described.push({
      ref: img.ref,
      digest: img.digest,
      mediaType: MediaType.ociManifest,
      size: img.manifest.length,
      kind: 'oci-manifest',
      blobs: blobs.map((b) => ({ digest: sha256(b), size: b.length, mediaType: MediaType.ociLayer })),
    });
  }
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const manifests = images.map((i) => ({ mediaType: MediaType.ociManifest, digest: i.digest, size: i.manifest.length, annotations: { 'org.opencontainers.image.ref.name': i.ref } }));
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
  return { dir, images: described };
}

/** Pushes a manifest by hand (skopeo would refuse a layer it cannot read): its config blob, then the manifest. */
async function pushByHand(registry: string, name: string, tag: string, config: Buffer, manifest: Buffer): Promise<void> {
  const started = await fetch(`${registry}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  expect(started.status).toBe(202);
  const location = new URL(started.headers.get('location') ?? '', registry);
  location.searchParams.set('digest', sha256(config));
  const put = await fetch(location, { method: 'PUT', body: new Uint8Array(config), headers: { 'content-type': 'application/octet-stream' } });
  expect(put.status).toBe(201);
  const m = await fetch(`${registry}/v2/${name}/manifests/${tag}`, { method: 'PUT', body: new Uint8Array(manifest), headers: { 'content-type': MediaType.ociManifest } });
  expect(m.status, await m.text()).toBe(201);
}

/** A reverse proxy in front of the registry that records requests and can hold one before or midway. */
class HoldingProxy extends EventEmitter {
  url = '';
  readonly seen: string[] = [];
  readonly holdBefore = new Map<string, Promise<void>>();
  readonly holdMidway = new Map<string, Promise<void>>();
  private readonly server: Server;

  constructor(private readonly targetPort: number) {
    super();
    this.server = createServer((req, res) => void this.forward(req, res));
  }

  async start(): Promise<this> {
    this.url = await listenLoopback(this.server);
    return this;
  }

  async stop(): Promise<void> {
    await closeServer(this.server);
  }

  count(line: string): number {
    return this.seen.filter((s) => s === line).length;
  }

  private async forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const line = `${req.method ?? ''} ${req.url ?? ''}`;
    this.seen.push(line);
    this.emit('request', line);
    await this.holdBefore.get(line);
    const midway = this.holdMidway.get(line);
    const up = request({ host: '127.0.0.1', port: this.targetPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      let sent = 0;
      let paused = false;
      answer.on('data', (chunk: Buffer) => {
        res.write(chunk);
        sent += chunk.length;
        if (midway && !paused && sent >= MiB) {
          paused = true;
          answer.pause();
          this.emit('midway', line);
          void midway.then(() => answer.resume());
        }
      });
      answer.on('end', () => res.end());
      answer.on('error', () => res.destroy());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  }
}

describe.skipIf(!ok)('entitlement and cross-repository single-flight with a real registry and skopeo', () => {
  let work: string;
  let registry: RunningRegistry;
  let proxy: HoldingProxy;
  const apps: App[] = [];
  const installer = build('docker.io/siderolabs/installer:v1', [randomBytes(4 * MiB)]);
  const legit = build('docker.io/legit/app:v1', installer.layers); // shares the installer's layer, and has it upstream
  const kubelet = build('ghcr.io/siderolabs/kubelet:v1.31.2', [randomBytes(3 * MiB), randomBytes(3 * MiB)]);
  const etcd = build('gcr.io/etcd-development/etcd:v3.5', [randomBytes(MiB)]);
  const layer = sha256(installer.layers[0] ?? Buffer.alloc(0));
  const [k1, k2] = kubelet.layers.map(sha256);
  const evilConfig = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const evilManifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256(evilConfig), size: evilConfig.length },
    layers: [{ mediaType: FOREIGN, digest: layer, size: 4 * MiB, urls: ['https://example.invalid/installer-layer'] }],
  }));
  const rules = ['docker.io/evil/app:v1', 'docker.io/legit/app:v1', 'ghcr.io/siderolabs/kubelet:v1.31.2', 'gcr.io/etcd-development/etcd'];

  async function boot(windows: 'always' | 'never'): Promise<{ app: App; url: string; hostPort: string }> {
    await Promise.all(apps.splice(0).map((a) => a.close()));
    const upstreams = { 'docker.io': { url: proxy.url }, 'ghcr.io': { url: proxy.url }, 'gcr.io': { url: proxy.url } };
    const doc = sluiceConfigDoc(join(work, 'data'), { windows, allowlist: rules, upstreams });
    const app = await buildApp(validateConfig(doc, join(work, 'sluice.yaml')));
    apps.push(app);
    const url = (await app.registry.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
    return { app, url, hostPort: new URL(url).host };
  }

  /** Resolves just after the store's cache check for `digest` next answers (the request is then at its flight). */
  function nextStat(app: App, digest: string): Promise<void> {
    return new Promise((resolve) => {
      const original = app.store.stat.bind(app.store);
      app.store.stat = async (d) => {
        const r = await original(d);
        if (d === digest) {
          app.store.stat = original;
          setImmediate(resolve);
        }
        return r;
      };
    });
  }

  beforeAll(async () => {
    work = await tempDir('entitlement');
    registry = await startRegistry({ manifestUrlsAllow: ['^https://example\\.invalid/'] });
    proxy = await new HoldingProxy(registry.port).start();
    const pushed = await writeLayout(join(work, 'push'), [legit, kubelet, etcd]);
    await pushLayout(pushed.dir, pushed, registry.hostPort);
    await pushByHand(registry.url, 'evil/app', 'v1', evilConfig, evilManifest);
    // The installer is imported, not allowed; its layer sits in sluice's store.
    await writeLayout(join(work, 'import'), [installer]);
    const store = await openStore({ storage: join(work, 'data') });
    expect((await importPath(store, join(work, 'import'))).failed).toEqual([]);
    await store.close();
  });

  afterAll(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
    await proxy?.stop();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('the real registry took the foreign layer and holds no such blob in evil/app', async () => {
    expect((await fetch(`${registry.url}/v2/evil/app/manifests/v1`, { headers: { accept: MediaType.ociManifest } })).status).toBe(200);
    expect((await fetch(`${registry.url}/v2/evil/app/blobs/${layer}`, { method: 'HEAD' })).status).toBe(404);
    expect((await fetch(`${registry.url}/v2/legit/app/blobs/${layer}`, { method: 'HEAD' })).status).toBe(200);
  });

  test('evil/app gets no byte of the installer layer, before or after its manifest, in a window or not', async () => {
    const { url } = await boot('always');
    const blob = `${url}/v2/docker.io/evil/app/blobs/${layer}`;
    // Before the manifest the layer is already placed through evil/app:v1 as the upstream has it, and
    // the upstream's evil/app holds no such blob: 404, no byte of the stored layer.
    const before = await fetch(blob);
    expect(before.status).toBe(404);
    expect(Buffer.from(await before.arrayBuffer()).length).toBeLessThan(4096);
    expect((await fetch(`${url}/v2/docker.io/evil/app/manifests/v1`)).status).toBe(200);
    const after = await fetch(blob);
    const body = Buffer.from(await after.arrayBuffer());
    expect(after.status).toBe(404);
    expect(body.length).toBeLessThan(4096);
    expect(JSON.parse(body.toString())).toMatchObject({ errors: [{ code: 'BLOB_UNKNOWN' }] });
    expect((await fetch(blob, { method: 'HEAD' })).status).toBe(404);
    expect(proxy.count(`HEAD /v2/evil/app/blobs/${layer}`)).toBeGreaterThanOrEqual(1);

    const closed = await boot('never');
    proxy.seen.length = 0;
    const miss = await fetch(`${closed.url}/v2/docker.io/evil/app/blobs/${layer}`);
    expect(miss.status).toBe(404);
    expect(await miss.text()).toMatch(/not cached; upstream access closed/);
    expect(proxy.seen).toEqual([]);
  });

  test('skopeo copies the legitimate image that shares the layer (its upstream confirms it), then offline too', async () => {
    let { hostPort } = await boot('always');
    for (const label of ['window', 'closed']) {
      const dir = join(work, 'skopeo', `legit-${label}`);
      const r = await skopeoCopyAll(`docker://${hostPort}/docker.io/legit/app:v1`, dir, { timeoutMs: 120_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(await verifyDirDigests(dir)).toBe(legit.digest);
      ({ hostPort } = await boot('never'));
    }
    // The shared layer came from the store: confirmed by HEAD, never downloaded again.
    expect(proxy.count(`GET /v2/legit/app/blobs/${layer}`)).toBe(0);
    expect(proxy.count(`HEAD /v2/legit/app/blobs/${layer}`)).toBe(1);
  });

  test("while kubelet's layer downloads, etcd (whose upstream lacks it) is sent none of it", async () => {
    const { url } = await boot('always');
    expect((await fetch(`${url}/v2/ghcr.io/siderolabs/kubelet/manifests/v1.31.2`)).status).toBe(200);
    const line = `GET /v2/siderolabs/kubelet/blobs/${k2}`;
    let release: () => void = () => undefined;
    proxy.holdMidway.set(line, new Promise<void>((r) => (release = r)));
    const midway = once(proxy, 'midway');
    const kubeletGet = fetch(`${url}/v2/ghcr.io/siderolabs/kubelet/blobs/${k2}`).then(async (r) => ({ status: r.status, body: Buffer.from(await r.arrayBuffer()) }));
    await midway;
    const etcdGet = await fetch(`${url}/v2/gcr.io/etcd-development/etcd/blobs/${k2}`);
    // The status first: a 200 here is a stream of kubelet's bytes that would wait on the held download.
    expect(etcdGet.status).toBe(404);
    expect(Buffer.from(await etcdGet.arrayBuffer()).length).toBeLessThan(4096);
    expect(proxy.count(`HEAD /v2/etcd-development/etcd/blobs/${k2}`)).toBe(1);
    release();
    const got = await kubeletGet;
    expect(got.status).toBe(200);
    expect(sha256(got.body)).toBe(k2);
  });

  test("etcd's failed attempt (the registry's 404) is not the answer skopeo gets for kubelet", async () => {
    const { app, hostPort, url } = await boot('always');
    const line = `GET /v2/etcd-development/etcd/blobs/${k1}`;
    let release: () => void = () => undefined;
    proxy.holdBefore.set(line, new Promise<void>((r) => (release = r)));
    const etcdAsked = new Promise<void>((resolve) => proxy.on('request', (l: string) => l === line && resolve()));
    const etcdGet = fetch(`${url}/v2/gcr.io/etcd-development/etcd/blobs/${k1}`);
    await etcdAsked;
    // skopeo's request for the layer meets etcd's pending download; only then does the registry answer etcd.
    const kubeletAtFlight = nextStat(app, k1 ?? '');
    const dir = join(work, 'skopeo', 'kubelet');
    const copy = skopeoCopyAll(`docker://${hostPort}/ghcr.io/siderolabs/kubelet:v1.31.2`, dir, { timeoutMs: 120_000 });
    await kubeletAtFlight;
    release();
    expect((await etcdGet).status).toBe(404);
    const r = await copy;
    expect(r.code, r.stderr).toBe(0);
    expect(await verifyDirDigests(dir)).toBe(kubelet.digest);
    expect(proxy.count(`GET /v2/siderolabs/kubelet/blobs/${k1}`)).toBe(1);
  });
});
