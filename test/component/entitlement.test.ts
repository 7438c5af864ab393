// Entitlement against in-process fake upstreams: stored bytes go out through a
// repository only if they are linked to it or, in a window, its own upstream confirms them (HEAD); single-flight
// is shared across repositories only with entitled ones, and one repository's failed download never answers another.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { importPath } from '../../src/jobs/importer.js';
import { MediaType, mkLayoutDir, sha256, writeBlob, writeLayoutIndex } from '../kit/oci.js';
import { MiniUpstream, miniImage, type MiniImage } from '../helpers/mini-upstream.js';
import { sluiceConfigDoc } from '../helpers/sluice.js';

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
}
const deferred = (): Deferred => {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};

/** An upstream that holds blobs per repository, as distribution does. */
function registry(): MiniUpstream {
  const up = new MiniUpstream();
  up.scopeBlobs = true;
  return up;
}

interface Answer {
  status: number;
  body: Buffer;
  code?: string;
  message?: string;
}

async function get(url: string, init: RequestInit = {}): Promise<Answer> {
  const r = await fetch(url, init);
  const body = Buffer.from(await r.arrayBuffer());
  let code: string | undefined;
  let message: string | undefined;
  if (r.status >= 400 && body.length > 0) {
    const doc = JSON.parse(body.toString()) as { errors: Array<{ code: string; message: string }> };
    code = doc.errors[0]?.code;
    message = doc.errors[0]?.message;
  }
  return { status: r.status, body, code, message };
}

/** Writes a one-image OCI layout (index.json names the reference) for `sluice import`. */
async function writeLayout(dir: string, ref: string, img: MiniImage): Promise<void> {
  await mkLayoutDir(dir);
  for (const b of [img.config, ...img.layers]) await writeBlob(dir, b.body, MediaType.ociLayer);
  const top = await writeBlob(dir, img.manifest, MediaType.ociManifest);
  await writeLayoutIndex(dir, [{ ref, top }]);
}

const dirs: string[] = [];
const apps: App[] = [];

async function boot(storage: string, windows: unknown, allowlist: string[], registries: Record<string, { url: string }>): Promise<{ app: App; url: string }> {
  const upstreams = Object.fromEntries(Object.entries(registries).map(([host, r]) => [host, { url: r.url }]));
  const config = validateConfig(sluiceConfigDoc(storage, { windows, allowlist, upstreams, extra: { upstreamTimeouts: { connect: '2s', idle: '5s' } } }), join(storage, '..', 'sluice.yaml'));
  const app = await buildApp(config);
  // Closing twice (a test that restarts, then afterEach) must not fail.
  let closed: Promise<void> | undefined;
  const close = app.close.bind(app);
  app.close = () => (closed ??= close());
  apps.push(app);
  const address = await app.registry.listen({ host: '127.0.0.1', port: 0 });
  return { app, url: address.replace('localhost', '127.0.0.1') };
}

async function newDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'sluice-entitlement-'));
  dirs.push(d);
  return d;
}

afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

afterAll(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describe('cached bytes of another repository are not served through an allowed one', () => {
  const hub = registry();
  const installer = miniImage('siderolabs/installer', 'v1', [randomBytes(256 * 1024)]);
  const installerLayer = installer.layers[0]?.body ?? Buffer.alloc(0);
  // evil/app:v1's only layer is a foreign-layer descriptor carrying the installer layer's digest; the
  // upstream holds no such blob in evil/app.
  const evilConfig = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', label: 'evil' }));
  const evil = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256(evilConfig), size: evilConfig.length },
    layers: [{
      mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
      digest: sha256(installerLayer),
      size: installerLayer.length,
      urls: ['https://example.invalid/layer'],
    }],
  }));
  // A legitimate image that shares the installer's layer, and whose upstream really has it.
  const shared = miniImage('legit/app', 'v1', [installerLayer]);
  const rules = ['docker.io/evil/app:v1', 'docker.io/evil/index:v1', 'docker.io/legit/app:v1'];
  let storage: string;

  beforeAll(async () => {
    await hub.start();
    hub.putManifest('evil/app', 'v1', evil);
    // An index of an allowed tag that lists the installer's manifest (stored by the import) as a platform.
    hub.addIndex('evil/index', 'v1', [{ image: installer, platform: { os: 'linux', architecture: 'amd64' } }], { withChildren: false });
    hub.push(shared);
    const dir = await newDir();
    storage = join(dir, 'data');
    const layout = join(dir, 'layout');
    await writeLayout(layout, 'docker.io/siderolabs/installer:v1', installer);
    const { app } = await boot(storage, 'never', [], { 'docker.io': hub });
    const result = await importPath(app.store, layout);
    expect(result.failed).toEqual([]);
    await app.close();
  });

  afterEach(() => hub.reset());
  afterAll(async () => hub.stop());

  const blob = (url: string, name: string, digest: string): string => `${url}/v2/${name}/blobs/${digest}?ns=docker.io`;
  const layerDigest = sha256(installerLayer);

  it('in a window: 404 before and after the manifest (the upstream has no such blob), never the stored bytes', async () => {
    const { url } = await boot(storage, 'always', rules, { 'docker.io': hub });
    // Before the tag was pulled the digest is placed through evil/app:v1 as the upstream has it.
    const before = await get(blob(url, 'evil/app', layerDigest));
    expect(before.status).toBe(404);
    expect(before.body.includes(installerLayer.subarray(0, 64))).toBe(false);
    expect((await get(`${url}/v2/evil/app/manifests/v1?ns=docker.io`)).status).toBe(200);
    for (const method of ['GET', 'HEAD']) {
      const after = await get(blob(url, 'evil/app', layerDigest), { method });
      expect(after.status, method).toBe(404);
      expect(after.body.includes(installerLayer.subarray(0, 64))).toBe(false);
    }
    expect((await get(blob(url, 'evil/app', layerDigest))).code).toBe('BLOB_UNKNOWN');
    // Asked of evil/app's own upstream, by HEAD, once per request; its bytes were never requested.
    expect(hub.times(`HEAD /v2/evil/app/blobs/${layerDigest}`)).toBeGreaterThanOrEqual(1);
    expect(hub.times(`GET /v2/evil/app/blobs/${layerDigest}`)).toBe(0);
  });

  it('outside a window the same request is a miss with the closed-window message, and nothing goes upstream', async () => {
    const { url } = await boot(storage, 'never', rules, { 'docker.io': hub });
    const after = await get(blob(url, 'evil/app', layerDigest));
    expect(after.status).toBe(404);
    expect(after.code).toBe('BLOB_UNKNOWN');
    expect(after.message).toMatch(/not cached; upstream access closed/);
    expect(hub.seen).toEqual([]);
  });

  it('a manifest stored for another repository is not served through an index that lists it', async () => {
    const { url } = await boot(storage, 'always', rules, { 'docker.io': hub });
    expect((await get(`${url}/v2/evil/index/manifests/v1?ns=docker.io`)).status).toBe(200);
    const m = await get(`${url}/v2/evil/index/manifests/${installer.digest}?ns=docker.io`);
    expect(m.status).toBe(404);
    expect(m.code).toBe('MANIFEST_UNKNOWN');
    expect(hub.times(`HEAD /v2/evil/index/manifests/${installer.digest}`)).toBe(1);
  });

  it('a repository whose upstream confirms the blob (HEAD) is served it from the store, and keeps it outside windows', async () => {
    const first = await boot(storage, 'always', rules, { 'docker.io': hub });
    expect((await get(`${first.url}/v2/legit/app/manifests/v1?ns=docker.io`)).status).toBe(200);
    const got = await get(blob(first.url, 'legit/app', layerDigest));
    expect(got.status).toBe(200);
    expect(sha256(got.body)).toBe(layerDigest);
    expect(hub.times(`HEAD /v2/legit/app/blobs/${layerDigest}`)).toBe(1);
    expect(hub.times(`GET /v2/legit/app/blobs/${layerDigest}`)).toBe(0);
    await first.app.close();
    hub.reset();
    const closed = await boot(storage, 'never', rules, { 'docker.io': hub });
    expect((await get(blob(closed.url, 'legit/app', layerDigest))).status).toBe(200);
    expect(hub.seen).toEqual([]);
  });

  it('import links every blob to the imported repository, even one the store already held for another', async () => {
    const dir = await newDir();
    await writeLayout(join(dir, 'installer'), 'docker.io/siderolabs/installer:v1', installer);
    await writeLayout(join(dir, 'legit'), 'docker.io/legit/app:v1', shared);
    const { app, url } = await boot(join(dir, 'data'), 'never', rules, { 'docker.io': hub });
    for (const layout of ['installer', 'legit']) expect((await importPath(app.store, join(dir, layout))).failed).toEqual([]);
    const got = await get(blob(url, 'legit/app', layerDigest));
    expect(got.status, got.message).toBe(200);
    expect(sha256(got.body)).toBe(layerDigest);
    expect(hub.seen).toEqual([]);
  });

  it('sync links a blob the store already held for another repository once the upstream confirms it', async () => {
    const dir = await newDir();
    await writeLayout(join(dir, 'installer'), 'docker.io/siderolabs/installer:v1', installer);
    const syncing = await boot(join(dir, 'data'), 'always', rules, { 'docker.io': hub });
    expect((await importPath(syncing.app.store, join(dir, 'installer'))).failed).toEqual([]);
    const report = await syncing.app.syncer.run();
    expect(report.failed.map((f) => f.reference)).toEqual(['docker.io/evil/app:v1', 'docker.io/evil/index:v1']);
    expect(report.fetched).toContain('docker.io/legit/app:v1');
    expect(hub.times(`HEAD /v2/legit/app/blobs/${layerDigest}`)).toBe(1);
    expect(hub.times(`GET /v2/legit/app/blobs/${layerDigest}`)).toBe(0);
    await syncing.app.close();
    hub.reset();
    const closed = await boot(join(dir, 'data'), 'never', rules, { 'docker.io': hub });
    expect((await get(blob(closed.url, 'legit/app', layerDigest))).status).toBe(200);
    expect((await get(blob(closed.url, 'evil/app', layerDigest))).status).toBe(404);
    expect(hub.seen).toEqual([]);
  });
});

describe('single-flight across repositories', () => {
  const ghcr = registry();
  const gcr = registry();
  const rules = ['ghcr.io/siderolabs/kubelet:v1.31.2', 'gcr.io/etcd-development/etcd'];
  const kubeletBlob = (url: string, digest: string): string => `${url}/v2/siderolabs/kubelet/blobs/${digest}?ns=ghcr.io`;
  const etcdBlob = (url: string, digest: string): string => `${url}/v2/etcd-development/etcd/blobs/${digest}?ns=gcr.io`;

  /** Starts `request` with kubelet's upstream download of `digest` held halfway; resolves once half is out. */
  async function heldMidway<T>(digest: string, request: () => T): Promise<{ pending: T; release: () => void }> {
    const rest = deferred();
    ghcr.holds.set(`GET /v2/siderolabs/kubelet/blobs/${digest}`, rest.promise);
    const halfOut = once(ghcr, 'half');
    const pending = request();
    await halfOut;
    return { pending, release: () => rest.resolve() };
  }

  beforeAll(async () => {
    await Promise.all([ghcr.start(), gcr.start()]);
  });
  afterEach(() => {
    ghcr.reset();
    gcr.reset();
  });
  afterAll(async () => {
    await Promise.all([ghcr.stop(), gcr.stop()]);
  });

  /** A fresh sluice in a window, kubelet's manifest pulled, and a kubelet layer only ghcr.io has. */
  async function setUp(etcdHasLayer: boolean): Promise<{ app: App; url: string; layer: Buffer; digest: string }> {
    const layer = randomBytes(2 * 1024 * 1024);
    ghcr.push(miniImage('siderolabs/kubelet', 'v1.31.2', [layer]));
    if (etcdHasLayer) gcr.push(miniImage('etcd-development/etcd', 'v3', [layer]));
    const booted = await boot(join(await newDir(), 'data'), 'always', rules, { 'ghcr.io': ghcr, 'gcr.io': gcr });
    expect((await get(`${booted.url}/v2/siderolabs/kubelet/manifests/v1.31.2?ns=ghcr.io`)).status).toBe(200);
    ghcr.reset();
    return { ...booted, layer, digest: sha256(layer) };
  }

  /** Resolves once the store's cache check for `digest` has answered `n` more times. */
  function statsOf(app: App, digest: string, n: number): Promise<void> {
    const done = deferred();
    let left = n;
    const store = app.store;
    const original = store.stat.bind(store);
    store.stat = async (d) => {
      const r = await original(d);
      if (d === digest && --left === 0) setImmediate(done.resolve);
      return r;
    };
    return done.promise;
  }

  it("another repository's failed attempt (gcr.io 404) is not kubelet's answer", async () => {
    const { app, url, layer, digest } = await setUp(false);
    const gcrAnswers = deferred();
    gcr.holdBefore.set(`GET /v2/etcd-development/etcd/blobs/${digest}`, gcrAnswers.promise);
    const etcdAsked = once(gcr, 'request');
    const etcd = get(etcdBlob(url, digest));
    await etcdAsked;
    // kubelet's request is past its cache check (so it has met etcd's pending download) before gcr.io answers.
    const kubeletChecked = statsOf(app, digest, 1);
    const kubelet = get(kubeletBlob(url, digest));
    await kubeletChecked;
    gcrAnswers.resolve();
    expect((await etcd).status).toBe(404);
    const got = await kubelet;
    expect(got.status, got.message).toBe(200);
    expect(sha256(got.body)).toBe(digest);
    expect(got.body.equals(layer)).toBe(true);
    expect(ghcr.times(`GET /v2/siderolabs/kubelet/blobs/${digest}`)).toBe(1);
  });

  it("while kubelet's download runs, etcd (its upstream has no such blob) gets no byte of it", async () => {
    const { url, digest } = await setUp(false);
    const { pending: kubelet, release } = await heldMidway(digest, () => get(kubeletBlob(url, digest)));
    for (const method of ['GET', 'HEAD']) {
      // The status first: a 200 here is a stream of kubelet's bytes that would wait on the held download.
      const etcd = await fetch(etcdBlob(url, digest), { method });
      expect(etcd.status, method).toBe(404);
      const body = Buffer.from(await etcd.arrayBuffer());
      expect(body.length === 0 || body.toString().includes('BLOB_UNKNOWN')).toBe(true);
    }
    expect(gcr.times(`HEAD /v2/etcd-development/etcd/blobs/${digest}`)).toBeGreaterThanOrEqual(1);
    release();
    const got = await kubelet;
    expect(got.status).toBe(200);
    expect(sha256(got.body)).toBe(digest);
    // After the commit it is still not etcd's.
    expect((await get(etcdBlob(url, digest))).status).not.toBe(200);
  });

  it('an entitled repository joins the running download (one upstream GET) and is served the verified blob', async () => {
    const { url, digest } = await setUp(true);
    const line = `GET /v2/siderolabs/kubelet/blobs/${digest}`;
    const { pending: kubelet, release } = await heldMidway(digest, () => get(kubeletBlob(url, digest)));
    const headed = once(gcr, 'request');
    const etcd = get(etcdBlob(url, digest));
    expect(await headed).toEqual([`HEAD /v2/etcd-development/etcd/blobs/${digest}`]);
    release();
    for (const got of await Promise.all([kubelet, etcd])) {
      expect(got.status).toBe(200);
      expect(sha256(got.body)).toBe(digest);
    }
    expect(ghcr.times(line)).toBe(1);
    expect(gcr.times(`GET /v2/etcd-development/etcd/blobs/${digest}`)).toBe(0);
  });

  it("a download that fails verification for kubelet makes etcd fetch its own, not fail (Range waits for the file)", async () => {
    const { url, digest, layer } = await setUp(true);
    const line = `GET /v2/siderolabs/kubelet/blobs/${digest}`;
    ghcr.corrupt.add(line);
    const { pending: kubelet, release } = await heldMidway(digest, () => fetch(kubeletBlob(url, digest)).then((r) => r.arrayBuffer()).catch((e: unknown) => e));
    const headed = once(gcr, 'request');
    const etcd = get(etcdBlob(url, digest), { headers: { range: 'bytes=10-' } });
    await headed;
    release();
    const got = await etcd;
    expect(got.status, got.message).toBe(206);
    expect(got.body.equals(layer.subarray(10))).toBe(true);
    expect(gcr.times(`GET /v2/etcd-development/etcd/blobs/${digest}`)).toBe(1);
    await kubelet;
  });

  it('an entitled repository that joined a download which then fails verification gets a whole, verified blob of its own', async () => {
    const { app, url, digest, layer } = await setUp(true);
    ghcr.corrupt.add(`GET /v2/siderolabs/kubelet/blobs/${digest}`);
    const { pending: kubelet, release } = await heldMidway(digest, () => fetch(kubeletBlob(url, digest)).then((r) => r.arrayBuffer()).catch((e: unknown) => e));
    // Released only once etcd has joined kubelet's download (the single-flight join is counted).
    const joined = deferred();
    const ingest = app.metrics.ingest;
    const count = ingest.joined.bind(ingest);
    ingest.joined = (kind) => {
      count(kind);
      if (kind === 'blob') joined.resolve();
    };
    const etcd = get(etcdBlob(url, digest)).catch((e: unknown) => e);
    await joined.promise;
    release();
    const got = await etcd;
    expect(got).not.toBeInstanceOf(Error);
    expect((got as Answer).status, (got as Answer).message).toBe(200);
    expect((got as Answer).body.equals(layer)).toBe(true);
    expect(gcr.times(`GET /v2/etcd-development/etcd/blobs/${digest}`)).toBe(1);
    await kubelet;
  });
});
