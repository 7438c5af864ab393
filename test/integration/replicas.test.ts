// Two sluice replicas on one Ceph RGW bucket and one PostgreSQL database, with a real docker-registry upstream
// behind a counting proxy: what one replica fetched the other serves; an allowlist edit on one refuses on the
// other; 20 cold GETs over both cost 1 upstream GET; a leader killed mid-download is taken over, nothing partial.
import { once } from 'node:events';
import { readFile, rm, mkdir } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { startContainerd, tempDir, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { freePort, pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { freshBucket, freshDatabase, requireServices, s3Config } from '../helpers/services.js';
import { sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { sha256 } from '../kit/oci.js';

const SUITE = 'test/integration/replicas.test.ts';
const ok = requireBinaries(['docker-registry', 'skopeo', 'containerd', 'ctr'], SUITE) && requireServices(['s3', 'postgres'], SUITE);

const BUSYBOX = 'docker.io/library/busybox:1.36';
const KUBELET = 'docker.io/siderolabs/kubelet:v1.34.0';

/** A reverse proxy counting upstream requests; `hold` stalls one blob download after its first bytes until released. */
interface Proxy {
  url: string;
  requests: string[];
  blobGets(digest: string): number;
  /** The next GET of `digest` sends its headers and at least 64 KiB, then waits for `release()`; resolves when that point is reached. */
  hold(digest: string): { reached: Promise<void>; release(): void };
  stop(): Promise<void>;
}

async function proxy(targetPort: number): Promise<Proxy> {
  const requests: string[] = [];
  const holds = new Map<string, { reached: () => void; released: Promise<void> }>();
  const server: Server = createServer((req, res) => {
    const line = `${req.method ?? ''} ${req.url ?? ''}`;
    requests.push(line);
    const held = [...holds.entries()].find(([d]) => req.method === 'GET' && line.endsWith(`/blobs/${d}`));
    if (held) holds.delete(held[0]);
    const up = request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      if (!held) {
        answer.pipe(res);
        return;
      }
      let sent = 0;
      let paused = false;
      answer.on('data', (chunk: Buffer) => {
        res.write(chunk);
        sent += chunk.length;
        if (!paused && sent >= 64 * 1024) {
          paused = true;
          answer.pause();
          held[1].reached();
          void held[1].released.then(() => answer.resume());
        }
      });
      answer.on('end', () => res.end());
      res.on('close', () => answer.destroy());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    blobGets: (d) => requests.filter((r) => r.startsWith('GET ') && r.endsWith(`/blobs/${d}`)).length,
    hold(digest) {
      let reached!: () => void;
      let release!: () => void;
      const r = new Promise<void>((resolve) => (reached = resolve));
      holds.set(digest, { reached, released: new Promise<void>((resolve) => (release = resolve)) });
      return { reached: r, release };
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe.skipIf(!ok)('two replicas on one RGW bucket and one PostgreSQL database', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  let upstream: Proxy;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let containerd: Containerd;
  const replicas: Record<string, SluiceProcess & { admin: string }> = {};
  const image = (ref: string): TestImage => layout.images.find((i) => i.ref === ref) ?? (() => { throw new Error(ref); })();
  /** The largest layers of an image, one per platform (4 MiB each for kubelet). */
  const layers = (ref: string): string[] => [...image(ref).blobs].sort((a, b) => b.size - a.size).map((b) => b.digest);

  async function startReplica(id: string, windows: 'always' | 'never'): Promise<SluiceProcess & { admin: string }> {
    const dir = join(work, id);
    await mkdir(dir, { recursive: true });
    const adminPort = await freePort();
    const yaml = sluiceConfigYaml('unused', {
      windows,
      // busybox is added through the admin API (addBusybox): a rule the config seeds cannot be removed there.
      allowlist: ['docker.io/siderolabs/kubelet'],
      upstreams: { 'docker.io': { url: upstream.url } },
      extra: {
        // B keeps a local blob cache smaller than kubelet's 4 MiB layers: small blobs come from its disk, the
        // layers it cannot keep are streamed from the bucket, and every test below holds for both.
        storage: { s3: s3Config(bucket.bucket, 'mirror/'), path: './local', ...(id === 'b' ? { cache: { path: './blob-cache', maxBytes: '3MiB' } } : {}) },
        database: { postgres: { url: db.url } },
        admin: { listen: `127.0.0.1:${adminPort}`, tokenFile: join(work, 'admin.token') },
      },
    });
    const p = await startSluiceProcess(yaml, { dir });
    return Object.assign(p, { admin: `http://127.0.0.1:${adminPort}` });
  }

  async function addBusybox(admin: string): Promise<void> {
    const token = (await readFile(join(work, 'admin.token'), 'utf8')).trim();
    const res = await fetch(`${admin}/api/v1/allowlist`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ rules: ['docker.io/library/busybox'], note: 'replicas test' }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
  }

  beforeAll(async () => {
    work = await tempDir('replicas');
    layout = await buildLayout(join(work, 'layout'));
    registry = await startRegistry();
    const images = layout.images.filter((i) => [BUSYBOX, 'ghcr.io/siderolabs/kubelet:v1.34.0'].includes(i.ref))
      .map((i) => (i.ref.startsWith('ghcr.io') ? { ...i, ref: KUBELET } : i));
    // The layout names kubelet under ghcr.io; push it under docker.io so one upstream serves both.
    await pushLayout(layout.dir, { dir: layout.dir, images: images.filter((i) => i.ref === BUSYBOX) }, registry.hostPort);
    await pushLayout(layout.dir, { dir: layout.dir, images: layout.images.filter((i) => i.ref.startsWith('ghcr.io/siderolabs/kubelet')) }, registry.hostPort);
    layout = { dir: layout.dir, images };
    upstream = await proxy(registry.port);
    [bucket, db] = await Promise.all([freshBucket(), freshDatabase()]);
    containerd = await startContainerd();
  }, 180_000);

  afterAll(async () => {
    for (const r of Object.values(replicas)) await r.stop('SIGKILL').catch(() => undefined);
    await containerd?.stop();
    await upstream?.stop();
    await registry?.stop();
    await bucket?.remove().catch(() => undefined);
    await db?.drop().catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('containerd pulls through A, then through B with 0 upstream requests', async () => {
    replicas.a = await startReplica('a', 'always');
    await addBusybox(replicas.a.admin);
    // B's window is closed: whatever it answers comes from the shared store alone (in a window it would also
    // re-check the tag upstream once per tagTtl, as any sluice does).
    replicas.b = await startReplica('b', 'never');
    const hosts = join(work, 'certs.d');
    await writeHostsToml(hosts, 'docker.io', replicas.a.hostPort);
    const viaA = await containerd.pull(BUSYBOX, hosts);
    expect(viaA.code, viaA.stderr).toBe(0);
    expect(upstream.requests.some((r) => r.includes('/blobs/'))).toBe(true);
    await containerd.rmi(BUSYBOX);
    upstream.requests.length = 0;
    await writeHostsToml(hosts, 'docker.io', replicas.b.hostPort);
    const viaB = await containerd.pull(BUSYBOX, hosts);
    expect(viaB.code, viaB.stderr).toBe(0);
    expect(await containerd.imageDigest(BUSYBOX)).toBe(image(BUSYBOX).digest);
    expect(upstream.requests).toEqual([]);
    await replicas.b.stop();
    delete replicas.b;
  }, 120_000);

  test('20 cold GETs spread over both replicas cost 1 upstream GET, and every body verifies', async () => {
    replicas.b = await startReplica('b', 'always');
    const digest = layers(KUBELET)[0] ?? '';
    const held = upstream.hold(digest);
    const gets = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? replicas.a : replicas.b))
      .map((r) => fetch(`${r.url}/v2/siderolabs/kubelet/blobs/${digest}?ns=docker.io`).then(async (res) => ({ status: res.status, body: Buffer.from(await res.arrayBuffer()) })));
    await held.reached;
    held.release();
    const got = await Promise.all(gets);
    expect(got.map((g) => g.status)).toEqual(Array(20).fill(200));
    for (const g of got) expect(sha256(g.body)).toBe(digest);
    expect(upstream.blobGets(digest)).toBe(1);
  }, 120_000);

  test('kill -9 of the leader mid-ingest: the other replica completes the next request, nothing partial is served', async () => {
    const digest = layers(KUBELET)[1] ?? '';
    const held = upstream.hold(digest);
    // The leader streams to its client as the bytes arrive: take the first ones, then kill it mid-download.
    const res = await fetch(`${replicas.a.url}/v2/siderolabs/kubelet/blobs/${digest}?ns=docker.io`);
    expect(res.status).toBe(200);
    const length = Number(res.headers.get('content-length'));
    const reader = (res.body ?? new ReadableStream<Uint8Array>()).getReader();
    let received = (await reader.read()).value?.length ?? 0;
    await held.reached;
    await replicas.a.stop('SIGKILL');
    delete replicas.a;
    try {
      for (let r = await reader.read(); !r.done; r = await reader.read()) received += r.value.length;
    } catch {
      // the cut: expected
    }
    // The leader's client got a cut stream, never a complete-looking body.
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThan(length);
    // Nothing was committed for the blob.
    await expect(bucket.client.send(new HeadObjectCommand({ Bucket: bucket.bucket, Key: `mirror/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}` }))).rejects.toThrow();
    const taken = await fetch(`${replicas.b.url}/v2/siderolabs/kubelet/blobs/${digest}?ns=docker.io`);
    expect(taken.status).toBe(200);
    expect(sha256(Buffer.from(await taken.arrayBuffer()))).toBe(digest);
    expect(upstream.blobGets(digest)).toBe(2);
  }, 120_000);

  test('an allowlist edit through one replica refuses the next request on the other', async () => {
    replicas.a = await startReplica('a', 'always');
    const manifest = `${replicas.b.url}/v2/library/busybox/manifests/1.36?ns=docker.io`;
    const accept = { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json' };
    expect((await fetch(manifest, { headers: accept })).status).toBe(200);
    const token = (await readFile(join(work, 'admin.token'), 'utf8')).trim();
    const removed = await fetch(`${replicas.a.admin}/api/v1/allowlist`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ rules: ['docker.io/library/busybox'] }),
    });
    expect(removed.status, await removed.clone().text()).toBe(200);
    const refused = await fetch(manifest, { headers: accept });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('DENIED');
  }, 60_000);
});
