// storage.s3.redirect on the real Ceph RGW and PostgreSQL, with a real docker-registry upstream: a stored blob's GET
// is a 307 to a presigned URL that serves exactly its bytes (Range honoured) and stops working after the ttl; HEAD
// and the first pull-through are answered directly; a refusal or a closed window keeps its OCI error and names no
// URL, and so does an allowed repository the stored blob is not linked to (unless its upstream confirms it); skopeo
// and containerd follow the redirects; a bad ttl stops sluice before it listens (exit 2).
import { readdir, rm, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { skopeoCopyAll, startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { freePort, pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { freshBucket, freshDatabase, requireServices, s3Config, s3Env } from '../helpers/services.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { sample } from '../helpers/metrics-text.js';
import { sha256 } from '../kit/oci.js';

const SUITE = 'test/integration/redirect.test.ts';
const ok = requireBinaries(['docker-registry', 'skopeo', 'containerd', 'ctr'], SUITE) && requireServices(['s3', 'postgres'], SUITE);

const BUSYBOX = 'docker.io/library/busybox:1.36';
const TTL_SECONDS = 5;

describe.skipIf(!ok)('storage.s3.redirect: blob GETs answered 307 to a presigned RGW URL', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let containerd: Containerd;
  const replicas: Record<string, SluiceProcess & { metrics: string }> = {};
  const image = (ref: string): TestImage => layout.images.find((i) => i.ref === ref) ?? (() => { throw new Error(ref); })();
  /** busybox's largest blob (a layer), which the first skopeo copy stores. */
  const layer = (): { digest: string; size: number } => [...image(BUSYBOX).blobs].sort((a, b) => b.size - a.size)[0] ?? { digest: '', size: 0 };
  const blobUrl = (r: SluiceProcess, repo: string, digest: string): string => `${r.url}/v2/${repo}/blobs/${digest}?ns=docker.io`;
  /** Neither a header nor the body names the object store or a presigned URL. */
  const expectNoUrl = (res: Response, body: string): void => {
    expect(res.headers.get('location')).toBeNull();
    const everything = `${body}\n${[...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n')}`;
    expect(everything).not.toMatch(/X-Amz|Signature|:\/\//i);
    expect(everything).not.toContain(new URL(s3Env?.endpoint ?? '').host);
  };
  const redirects = async (r: { metrics: string }): Promise<number> =>
    sample(await (await fetch(`${r.metrics}/metrics`)).text(), 'sluice_http_redirects_total{kind="blob"}');

  async function startReplica(id: string, windows: 'always' | 'never'): Promise<SluiceProcess & { metrics: string }> {
    const dir = join(work, id);
    await mkdir(dir, { recursive: true });
    const metricsPort = await freePort();
    const yaml = sluiceConfigYaml('unused', {
      windows,
      allowlist: ['docker.io/library/busybox', 'docker.io/siderolabs/kubelet', ...['pinned', 'toolbox'].map((n) => `docker.io/library/${n}@${layer().digest}`)],
      upstreams: { 'docker.io': { url: registry.url } },
      extra: {
        storage: { s3: { ...s3Config(bucket.bucket, 'mirror/'), redirect: { ttl: `${TTL_SECONDS}s` } }, path: './local' },
        database: { postgres: { url: db.url } },
        metrics: { listen: `127.0.0.1:${metricsPort}` },
      },
    });
    const p = await startSluiceProcess(yaml, { dir });
    return Object.assign(p, { metrics: `http://127.0.0.1:${metricsPort}` });
  }

  beforeAll(async () => {
    work = await tempDir('redirect');
    layout = await buildLayout(join(work, 'layout'));
    registry = await startRegistry();
    const kubelet = layout.images.filter((i) => i.ref.startsWith('ghcr.io/siderolabs/kubelet'));
    // The layout names kubelet under ghcr.io; push it under docker.io so one upstream serves both.
    await pushLayout(layout.dir, { dir: layout.dir, images: layout.images.filter((i) => i.ref === BUSYBOX) }, registry.hostPort);
    await pushLayout(layout.dir, { dir: layout.dir, images: kubelet }, registry.hostPort);
    layout = { dir: layout.dir, images: [image(BUSYBOX), ...kubelet.map((i) => ({ ...i, ref: i.ref.replace(/^ghcr\.io/, 'docker.io') }))] };
    [bucket, db] = await Promise.all([freshBucket(), freshDatabase()]);
    containerd = await startContainerd();
    replicas.a = await startReplica('a', 'always');
  }, 180_000);

  afterAll(async () => {
    for (const r of Object.values(replicas)) await r.stop('SIGKILL').catch(() => undefined);
    await containerd?.stop();
    await registry?.stop();
    await bucket?.remove().catch(() => undefined);
    await db?.drop().catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('skopeo copies through it twice: pulled through (served directly), then every stored blob redirected', async () => {
    const a = replicas.a;
    const ref = `docker://${a.hostPort}/docker.io/library/busybox:1.36`;
    const first = await skopeoCopyAll(ref, join(work, 'skopeo-1'));
    expect(first.code, first.stderr).toBe(0);
    expect(await verifyDirDigests(join(work, 'skopeo-1'))).toBe(image(BUSYBOX).digest);
    // Pulled through: each blob was streamed as it arrived from upstream, none redirected.
    const before = await redirects(a);
    expect(before).toBe(0);
    const second = await skopeoCopyAll(ref, join(work, 'skopeo-2'));
    expect(second.code, second.stderr).toBe(0);
    expect(await verifyDirDigests(join(work, 'skopeo-2'))).toBe(image(BUSYBOX).digest);
    // Every blob file skopeo wrote (configs and layers of each platform) came by a redirect.
    const blobs = (await readdir(join(work, 'skopeo-2'))).filter((f) => /^[0-9a-f]{64}$/.test(f)).length;
    expect(blobs).toBeGreaterThan(0);
    expect((await redirects(a)) - before).toBe(blobs);
  }, 180_000);

  test('a stored blob: GET is a 307 to a presigned URL serving exactly its bytes, Range honoured; HEAD answered directly', async () => {
    const a = replicas.a;
    const { digest, size } = layer();
    const res = await fetch(blobUrl(a, 'library/busybox', digest), { redirect: 'manual' });
    expect(res.status).toBe(307);
    expect(res.headers.get('docker-content-digest')).toBe(digest);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect((await res.arrayBuffer()).byteLength).toBe(0);
    const location = new URL(res.headers.get('location') ?? '');
    expect(location.origin).toBe(new URL(s3Env?.endpoint ?? '').origin);
    expect(location.searchParams.get('X-Amz-Expires')).toBe(String(TTL_SECONDS));
    const direct = Buffer.from(await (await fetch(location)).arrayBuffer());
    expect(direct.length).toBe(size);
    expect(sha256(direct)).toBe(digest);
    // fetch follows the 307 and sends the Range along; the object store answers it.
    const ranged = await fetch(blobUrl(a, 'library/busybox', digest), { headers: { range: 'bytes=100-1123' } });
    expect(ranged.status).toBe(206);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(direct.subarray(100, 1124))).toBe(true);
    const head = await fetch(blobUrl(a, 'library/busybox', digest), { method: 'HEAD', redirect: 'manual' });
    expect(head.status).toBe(200);
    expect(head.headers.get('location')).toBeNull();
    expect(head.headers.get('content-length')).toBe(String(size));
    expect(head.headers.get('docker-content-digest')).toBe(digest);
  }, 60_000);

  test('a stored blob asked for through a repository the allowlist refuses: 403 DENIED, no URL anywhere', async () => {
    const res = await fetch(blobUrl(replicas.a, 'library/alpine', layer().digest), { redirect: 'manual' });
    expect(res.status).toBe(403);
    const body = await res.text();
    expect(JSON.parse(body)).toMatchObject({ errors: [{ code: 'DENIED' }] });
    expectNoUrl(res, body);
  });

  // A stored blob is sent (or redirected to) only through a repository it is linked to. A repository allowed for
  // every tag is refused it by the policy (mirror/decision.ts); one whose rule lets the digest through (a pin here)
  // meets the entitlement check (mirror/entitlement.ts): its upstream must confirm it (HEAD), only in a window.
  test('a stored blob asked for through an allowed repository it is not linked to: the answer without redirects, no URL', async () => {
    const { digest, size } = layer();
    const expectError = async (r: SluiceProcess, repo: string, status: number, error: object): Promise<void> => {
      const res = await fetch(blobUrl(r, repo, digest), { redirect: 'manual' });
      const body = await res.text();
      expect(res.status, body).toBe(status);
      expect(JSON.parse(body)).toMatchObject({ errors: [error] });
      expectNoUrl(res, body);
      const head = await fetch(blobUrl(r, repo, digest), { method: 'HEAD', redirect: 'manual' });
      expect(head.status).toBe(status);
      expectNoUrl(head, await head.text());
    };
    await expectError(replicas.a, 'siderolabs/kubelet', 403, { code: 'DENIED' });
    // Pinned, window closed: a miss like any other, 404 with the next window (never).
    replicas.b = await startReplica('b', 'never');
    await expectError(replicas.b, 'library/pinned', 404, { code: 'BLOB_UNKNOWN', detail: { nextWindow: null } });
    await replicas.b.stop();
    delete replicas.b;
    // Pinned, window open, the upstream has no such blob there: its 404.
    await expectError(replicas.a, 'library/pinned', 404, { code: 'BLOB_UNKNOWN', detail: { upstream: 'docker.io', status: 404 } });
    // Pinned, window open, the upstream confirms (the blob mounted into library/toolbox there): HEAD answered
    // directly, GET redirected as for any entitled blob.
    const mount = await fetch(`${registry.url}/v2/library/toolbox/blobs/uploads/?mount=${digest}&from=library/busybox`, { method: 'POST' });
    expect(mount.status).toBe(201);
    const head = await fetch(blobUrl(replicas.a, 'library/toolbox', digest), { method: 'HEAD', redirect: 'manual' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(size));
    expect(head.headers.get('location')).toBeNull();
    const res = await fetch(blobUrl(replicas.a, 'library/toolbox', digest), { redirect: 'manual' });
    expect(res.status).toBe(307);
    expect(new URL(res.headers.get('location') ?? '').origin).toBe(new URL(s3Env?.endpoint ?? '').origin);
  }, 60_000);

  test('window closed: a blob not stored is still 404 BLOB_UNKNOWN with nextWindow; a stored one is still redirected', async () => {
    replicas.b = await startReplica('b', 'never');
    const kubelet = layout.images.find((i) => i.ref.startsWith('docker.io/siderolabs/kubelet')) ?? image(BUSYBOX);
    const missing = [...kubelet.blobs].sort((x, y) => y.size - x.size)[0]?.digest ?? '';
    const res = await fetch(blobUrl(replicas.b, 'siderolabs/kubelet', missing), { redirect: 'manual' });
    expect(res.status).toBe(404);
    const body = await res.text();
    expect(JSON.parse(body)).toMatchObject({ errors: [{ code: 'BLOB_UNKNOWN', detail: { nextWindow: null } }] });
    expect(res.headers.get('location')).toBeNull();
    expect(body).not.toMatch(/X-Amz/i);
    const stored = await fetch(blobUrl(replicas.b, 'library/busybox', layer().digest), { redirect: 'manual' });
    expect(stored.status).toBe(307);
    await replicas.b.stop();
    delete replicas.b;
  }, 60_000);

  test('containerd (ctr) pulls through it, following the redirects', async () => {
    const a = replicas.a;
    const hosts = join(work, 'certs.d');
    await writeHostsToml(hosts, 'docker.io', a.hostPort);
    const before = await redirects(a);
    const pulled = await containerd.pull(BUSYBOX, hosts);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(await containerd.imageDigest(BUSYBOX)).toBe(image(BUSYBOX).digest);
    expect(await redirects(a)).toBeGreaterThan(before);
  }, 120_000);

  test('the presigned URL stops working after the ttl', async () => {
    const res = await fetch(blobUrl(replicas.a, 'library/busybox', layer().digest), { redirect: 'manual' });
    const location = res.headers.get('location') ?? '';
    expect((await fetch(location)).status).toBe(200);
    await delay((TTL_SECONDS + 1.5) * 1000);
    const late = await fetch(location);
    expect(late.status).toBe(403);
    expect(await late.text()).toMatch(/AccessDenied|expired/i);
  }, 30_000);
});

describe('storage.s3.redirect in the config file', () => {
  test('a bad ttl stops sluice before it listens: exit 2, naming the key', async () => {
    const dir = await tempDir('redirect-config');
    try {
      const file = join(dir, 'sluice.yaml');
      await writeFile(file, sluiceConfigYaml('./data', {
        extra: { storage: { s3: { endpoint: 'http://127.0.0.1:9', bucket: 'mirror', redirect: { ttl: '90 seconds' } }, path: './local' } },
      }));
      const r = await runSluice(['serve', '--config', file], { timeoutMs: 30_000 });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/storage\.s3\.redirect\.ttl: invalid duration "90 seconds": use a number with a unit/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
