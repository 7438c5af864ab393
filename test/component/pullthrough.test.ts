// Pull-through against the in-process fake upstream, which counts requests per path and misbehaves on
// command (held chunks, corruption, cuts, short bodies, stalls, errors, Bearer auth, redirects):
// single-flight, streaming before the end, verify-before-commit, detached ingest, tags, windows.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir, mkdtemp, rm } from 'node:fs/promises';
import { request, Agent, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { sluiceConfigDoc, type SluiceConfigOptions } from '../helpers/sluice.js';
import { spoolDir } from '../helpers/fs-store.js';
import type { BlobBehaviour } from '../helpers/mini-blob.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { MediaType, MiB, sha256 } from '../kit/oci.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Rejects with `message` if `p` has not settled within `ms`: turns a would-be hang into a failure that says why. */
function within<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)));
  return Promise.race([p, guard]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------------------------
// Clients

interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  bytes: number;
  digest: string;
  /** The response ended normally with every byte its Content-Length announced. */
  complete: boolean;
  body: Buffer | undefined;
}

interface GetOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  keepBody?: boolean;
  onHeaders?: (res: IncomingMessage) => void;
  onFirstBytes?: () => void;
  /** Destroy the request as soon as the first body bytes arrive. */
  disconnectAfterFirstBytes?: boolean;
}

const clientAgent = new Agent({ keepAlive: false, maxSockets: Infinity });

/** One request; the body is hashed as it streams (50 × 64 MiB never sits in memory). */
function get(url: string, opts: GetOptions = {}): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: clientAgent }, (res) => {
      opts.onHeaders?.(res);
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let bytes = 0;
      let ended = false;
      res.on('data', (c: Buffer) => {
        if (bytes === 0) {
          opts.onFirstBytes?.();
          if (opts.disconnectAfterFirstBytes) req.destroy();
        }
        bytes += c.length;
        hash.update(c);
        if (opts.keepBody) chunks.push(c);
      });
      res.on('end', () => void (ended = true));
      res.on('error', () => undefined);
      res.on('close', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          bytes,
          digest: `sha256:${hash.digest('hex')}`,
          complete: ended && res.complete,
          body: opts.keepBody ? Buffer.concat(chunks) : undefined,
        }),
      );
    });
    req.on('error', (e) => (opts.disconnectAfterFirstBytes ? undefined : reject(e)));
    req.end();
  });
}

async function getJson(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingHttpHeaders; doc: unknown; body: Buffer }> {
  const got = await get(url, { headers, keepBody: true });
  const body = got.body ?? Buffer.alloc(0);
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    doc = undefined;
  }
  return { status: got.status, headers: got.headers, doc, body };
}

// ---------------------------------------------------------------------------------------------------------------
// Sluice in process

interface Running {
  app: App;
  url: string;
  storage: string;
  close(): Promise<void>;
}

const running: Running[] = [];
const dirs: string[] = [];

async function newStorage(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-pullthrough-'));
  dirs.push(dir);
  return join(dir, 'data');
}

/** buildApp on 127.0.0.1:0 over `storage`; closed after each test. */
async function boot(storage: string, opts: SluiceConfigOptions): Promise<Running> {
  const config = validateConfig(sluiceConfigDoc(storage, opts), join(storage, '..', 'sluice.yaml'));
  const app = await buildApp(config);
  const address = await app.registry.listen({ host: '127.0.0.1', port: 0 });
  let closed: Promise<void> | undefined;
  const r: Running = {
    app,
    url: address.replace('localhost', '127.0.0.1'),
    storage,
    close: () => (closed ??= app.close()),
  };
  running.push(r);
  return r;
}

async function tmpFiles(r: Running): Promise<string[]> {
  return readdir(spoolDir(r.app.store));
}

// ---------------------------------------------------------------------------------------------------------------

describe('pull-through against a fake upstream', () => {
  const up = new MiniUpstream();
  const storageServer = new MiniUpstream();
  /** Requests to the registry API, token requests and redirect targets excluded. */
  const registryRequests = (): number => up.seen.filter((l) => l.split(' ')[1]?.startsWith('/v2/')).length;
  let big: Buffer;
  let bigDigest: string;
  let mid: Buffer;
  let midDigest: string;

  /** Sluice in a window with `docker.io` → the fake, and library/big allowed for every tag. */
  const open = async (extra: Record<string, unknown> = {}, storage?: string): Promise<Running> =>
    boot(storage ?? (await newStorage()), {
      windows: 'always',
      upstreams: { 'docker.io': { url: up.url }, 'ghcr.io': { url: up.url } },
      allowlist: ['docker.io/library/big', 'docker.io/library/app:1.0', 'docker.io/library/multi:1.0', 'ghcr.io/private/app'],
      extra: { upstreamTimeouts: { connect: '2s', idle: '400ms' }, tagTtl: '1h', ...extra },
    });
  const blobUrl = (r: Running, digest: string, name = 'library/big', ns = 'docker.io'): string => `${r.url}/v2/${name}/blobs/${digest}?ns=${ns}`;
  const blobPath = (digest: string, name = 'library/big'): string => `/v2/${name}/blobs/${digest}`;
  /**
   * Pulls library/big:latest as a client would first. A rule for every tag lets an uncached digest be
   * fetched (the upstream enforces membership), but a cached one is served only when a manifest of the
   * repository links it, so repeat requests need the manifest in the store.
   */
  const pullManifest = async (r: Running): Promise<void> => {
    expect((await getJson(`${r.url}/v2/library/big/manifests/latest?ns=docker.io`)).status).toBe(200);
  };

  beforeAll(async () => {
    await up.start();
    await storageServer.start('localhost');
    big = randomBytes(64 * MiB);
    bigDigest = up.addBlob(big);
    mid = randomBytes(8 * MiB + 12345);
    midDigest = up.addBlob(mid);
    storageServer.blobs.set(midDigest, mid);
    const layers = [bigDigest, midDigest].map((digest) => ({ mediaType: MediaType.ociLayerTar, digest, size: (up.blobs.get(digest) ?? big).length }));
    up.addManifest('library/big', { schemaVersion: 2, mediaType: MediaType.ociManifest, config: layers[1], layers }, 'latest');
  });

  beforeEach(() => {
    up.reset();
    storageServer.reset();
  });

  afterEach(async () => {
    await Promise.all(running.splice(0).map((r) => r.close()));
  });

  afterAll(async () => {
    await up.stop();
    await storageServer.stop();
    clientAgent.destroy();
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  it('(a) 50 concurrent cold GETs of a 64 MiB blob make one upstream GET and all get the verified bytes', async () => {
    const r = await open();
    await pullManifest(r);
    // The upstream holds its last chunk until all 50 clients have their response headers, so all 50 are
    // provably in flight together while the one download is still running.
    const allHeaders = deferred();
    let withHeaders = 0;
    up.behaviour.set(bigDigest, { beforeChunk: async (i, n) => (i === n - 1 ? allHeaders.promise : undefined) });
    const onHeaders = (): void => {
      if (++withHeaders === 50) allHeaders.resolve();
    };
    const results = await within(
      Promise.all(Array.from({ length: 50 }, () => get(blobUrl(r, bigDigest), { onHeaders }))),
      90_000,
      `only ${withHeaders} of 50 clients got headers while the upstream held the last chunk`,
    );
    expect(up.times(`GET ${blobPath(bigDigest)}`)).toBe(1);
    for (const got of results) {
      expect(got.status).toBe(200);
      expect(got.complete).toBe(true);
      expect(got.bytes).toBe(big.length);
      expect(got.digest).toBe(bigDigest);
      expect(got.headers['docker-content-digest']).toBe(bigDigest);
    }
    expect(await r.app.store.stat(bigDigest)).toEqual({ digest: bigDigest, sizeBytes: big.length });
    expect(await tmpFiles(r)).toEqual([]);
    // And now it is a cache hit: no further upstream traffic.
    const again = await get(blobUrl(r, bigDigest));
    expect(again.digest).toBe(bigDigest);
    expect(registryRequests()).toBe(2); // the manifest and the blob, once each
  }, 120_000);

  it('(b) the first byte reaches the client before the upstream transfer ends', async () => {
    const r = await open();
    const clientHasBytes = deferred();
    let upstreamFinished = false;
    up.once('sent', () => void (upstreamFinished = true));
    let finishedWhenFirstBytes: boolean | undefined;
    up.behaviour.set(midDigest, { beforeChunk: async (i, n) => (i === n - 1 ? clientHasBytes.promise : undefined) });
    const got = await within(
      get(blobUrl(r, midDigest), {
        onFirstBytes: () => {
          finishedWhenFirstBytes = upstreamFinished;
          clientHasBytes.resolve();
        },
      }),
      20_000,
      'no byte reached the client while the upstream held back its last chunk',
    );
    expect(finishedWhenFirstBytes).toBe(false);
    expect(got).toMatchObject({ status: 200, complete: true, bytes: mid.length, digest: midDigest });
    expect(up.times(`GET ${blobPath(midDigest)}`)).toBe(1);
  });

  describe('(c) bad upstream bytes are never committed nor completed to a client', () => {
    const cases: Array<[string, () => BlobBehaviour]> = [
      ['corrupted bytes of the right length', () => ({ corrupt: true })],
      ['a connection cut at 40%', () => ({ cutAtPercent: 40 })],
      ['a short but well-formed body', () => ({ shortBytes: 3 * MiB })],
    ];
    it.each(cases)('%s', async (_label, behaviour) => {
      const r = await open();
      up.behaviour.set(midDigest, behaviour());
      const bad = await get(blobUrl(r, midDigest));
      // Either an error before the headers or a response cut short; never a complete 200 of wrong bytes.
      if (bad.status === 200) expect(bad.complete).toBe(false);
      else expect(bad.status).toBe(502);
      expect(bad.digest).not.toBe(midDigest);
      expect(await r.app.store.stat(midDigest)).toBeUndefined();
      expect(await tmpFiles(r)).toEqual([]);
      // The upstream is fixed: a later request fetches again and succeeds.
      up.behaviour.delete(midDigest);
      const good = await get(blobUrl(r, midDigest));
      expect(good).toMatchObject({ status: 200, complete: true, bytes: mid.length, digest: midDigest });
      expect(await r.app.store.stat(midDigest)).toEqual({ digest: midDigest, sizeBytes: mid.length });
      expect(up.times(`GET ${blobPath(midDigest)}`)).toBe(2);
    });
  });

  it('(c) a Range request waiting on a corrupted download gets 502, not a complaint about its own digest', async () => {
    const r = await open();
    up.behaviour.set(midDigest, { corrupt: true });
    const got = await getJson(blobUrl(r, midDigest), { range: 'bytes=100-199' });
    expect(got.status).toBe(502);
    expect(JSON.stringify(got.doc)).toContain('UPSTREAM_FAILED');
    expect(await r.app.store.stat(midDigest)).toBeUndefined();
    expect(await tmpFiles(r)).toEqual([]);
  });

  it('(d) a client that disconnects mid-transfer leaves a complete, verified blob in the store', async () => {
    const r = await open();
    await pullManifest(r);
    const serverSocket = once(r.app.registry.server, 'connection') as Promise<[Socket]>;
    const clientGone = deferred();
    up.behaviour.set(midDigest, { beforeChunk: async (i, n) => (i === n - 1 ? clientGone.promise : undefined) });
    const cut = await get(blobUrl(r, midDigest), { disconnectAfterFirstBytes: true });
    expect(cut.complete).toBe(false);
    const [socket] = await serverSocket;
    // Not once(): the server side of a reset socket emits 'error' (write ECONNRESET) before 'close'.
    if (!socket.destroyed) await new Promise((resolve) => socket.once('close', resolve));
    clientGone.resolve(); // only now may the upstream finish: the ingest must outlive its first client
    expect(await r.app.mirror.ensureBlob('docker.io', 'library/big', midDigest)).toBe(mid.length);
    expect(sha256((await r.app.store.readBlob(midDigest)) ?? Buffer.alloc(0))).toBe(midDigest);
    expect(await tmpFiles(r)).toEqual([]);
    const again = await get(blobUrl(r, midDigest));
    expect(again).toMatchObject({ status: 200, complete: true, digest: midDigest });
    expect(up.times(`GET ${blobPath(midDigest)}`)).toBe(1);
  });

  it('(e) a Range request on an uncached blob waits for the verified blob and gets the right 206 slice', async () => {
    const r = await open();
    // The Range request starts the download; a plain GET joins it and streams live. Only when that
    // client has bytes does the upstream send its last chunk: the Range answer must not have come yet.
    const liveClientHasBytes = deferred();
    let rangeAnswered = false;
    let rangeAnsweredWhenReleased: boolean | undefined;
    up.behaviour.set(midDigest, {
      beforeChunk: async (i, n) => {
        if (i !== n - 1) return;
        await liveClientHasBytes.promise;
        rangeAnsweredWhenReleased = rangeAnswered;
      },
    });
    const upstreamAsked = once(up, 'request');
    const ranged = get(blobUrl(r, midDigest), { headers: { range: 'bytes=5000000-5999999' }, keepBody: true, onHeaders: () => void (rangeAnswered = true) });
    await upstreamAsked;
    const live = get(blobUrl(r, midDigest), { onFirstBytes: () => liveClientHasBytes.resolve() });
    const [slice, whole] = await within(Promise.all([ranged, live]), 20_000, 'the Range request or the live client hung');
    expect(rangeAnsweredWhenReleased).toBe(false);
    expect(slice.status).toBe(206);
    expect(slice.headers['content-range']).toBe(`bytes 5000000-5999999/${mid.length}`);
    expect(slice.body?.equals(mid.subarray(5_000_000, 6_000_000))).toBe(true);
    expect(whole).toMatchObject({ status: 200, complete: true, digest: midDigest });
    expect(up.times(`GET ${blobPath(midDigest)}`)).toBe(1);
  });

  describe('(f) tag resolution', () => {
    const layer = Buffer.from('app layer');
    const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
    let manifestDigest: string;

    beforeEach(() => {
      const l = up.addBlob(layer);
      const c = up.addBlob(config);
      manifestDigest = up.addManifest('library/app', {
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: c, size: config.length },
        layers: [{ mediaType: MediaType.ociLayerTar, digest: l, size: layer.length }],
      }, '1.0').digest;
    });

    it('resolves a tag upstream once per TTL, and serves the last known digest when the upstream is down', async () => {
      const storage = await newStorage();
      const r = await open({}, storage);
      const url = `${r.url}/v2/library/app/manifests/1.0?ns=docker.io`;
      const [head, first] = await Promise.all([get(url, { method: 'HEAD' }), getJson(url)]);
      const second = await getJson(url);
      expect(head.headers['docker-content-digest']).toBe(manifestDigest);
      expect(first.status).toBe(200);
      expect(sha256(first.body)).toBe(manifestDigest);
      expect(second.headers['docker-content-digest']).toBe(manifestDigest);
      expect(up.times('GET /v2/library/app/manifests/1.0') + up.times('HEAD /v2/library/app/manifests/1.0')).toBe(1);
      await r.close();

      // The same store, a fresh process-worth of caches, and an upstream that refuses connections.
      const down = await boot(storage, {
        windows: 'always',
        upstreams: { 'docker.io': { url: 'http://127.0.0.1:9' } },
        allowlist: ['docker.io/library/app:1.0'],
        extra: { upstreamTimeouts: { connect: '2s', idle: '2s' } },
      });
      const stale = await getJson(`${down.url}/v2/library/app/manifests/1.0?ns=docker.io`);
      expect(stale.status).toBe(200);
      expect(stale.headers['docker-content-digest']).toBe(manifestDigest);
      expect(sha256(stale.body)).toBe(manifestDigest);
      // It did try the upstream (the tag was not trusted forever), and failing that kept serving.
      expect(down.app.upstreams.get('docker.io')?.requestCount).toBeGreaterThan(0);

      // An upstream answering 500 is "down" too.
      await down.close();
      const failing = await open({}, storage);
      up.failAll = { status: 500 };
      const again = await getJson(`${failing.url}/v2/library/app/manifests/1.0?ns=docker.io`);
      expect(again.status).toBe(200);
      expect(again.headers['docker-content-digest']).toBe(manifestDigest);
      // First resolution: one GET; the re-check of a known tag is a HEAD (cheap against pull limits).
      expect(up.times('GET /v2/library/app/manifests/1.0')).toBe(1);
      expect(up.times('HEAD /v2/library/app/manifests/1.0')).toBe(1);
    });

    it('(g) outside a window a miss is an immediate 404 with no upstream request; a cached image still serves', async () => {
      const storage = await newStorage();
      const inWindow = await open({}, storage);
      const cachedManifest = await getJson(`${inWindow.url}/v2/library/app/manifests/1.0?ns=docker.io`);
      expect(cachedManifest.status).toBe(200);
      const layerDigest = sha256(layer);
      expect((await get(blobUrl(inWindow, layerDigest, 'library/app'))).digest).toBe(layerDigest);
      await inWindow.close();
      up.reset();

      const closed = await boot(storage, {
        windows: 'never',
        upstreams: { 'docker.io': { url: up.url } },
        allowlist: ['docker.io/library/app:1.0', 'docker.io/library/big'],
      });
      const started = performance.now();
      const miss = await getJson(`${closed.url}/v2/library/big/blobs/${midDigest}?ns=docker.io`);
      const elapsedMs = performance.now() - started;
      expect(miss.status).toBe(404);
      const err = (miss.doc as { errors: Array<{ code: string; message: string; detail: { nextWindow: unknown } }> }).errors[0];
      expect(err?.code).toBe('BLOB_UNKNOWN');
      expect(err?.message).toMatch(/^blob not cached; upstream access closed/);
      expect(elapsedMs).toBeLessThan(1000);
      const manifestMiss = await getJson(`${closed.url}/v2/library/big/manifests/latest?ns=docker.io`);
      expect(manifestMiss.status).toBe(404);
      expect(JSON.stringify(manifestMiss.doc)).toMatch(/manifest not cached; upstream access closed/);

      const hit = await getJson(`${closed.url}/v2/library/app/manifests/1.0?ns=docker.io`);
      expect(hit.status).toBe(200);
      expect(hit.body.equals(cachedManifest.body)).toBe(true);
      expect((await get(blobUrl(closed, layerDigest, 'library/app'))).digest).toBe(layerDigest);
      expect(up.requests).toEqual([]);
      expect(closed.app.upstreams.get('docker.io')?.requestCount).toBe(0);
    });
  });

  describe('(h) upstream failures map to OCI errors, never a hang', () => {
    it('429 → 429 TOOMANYREQUESTS with Retry-After, for manifests and blobs', async () => {
      const r = await open();
      up.failAll = { status: 429, headers: { 'retry-after': '17' } };
      const m = await getJson(`${r.url}/v2/library/big/manifests/latest?ns=docker.io`);
      expect(m.status).toBe(429);
      expect(m.headers['retry-after']).toBe('17');
      expect(JSON.stringify(m.doc)).toContain('TOOMANYREQUESTS');
      const b = await getJson(blobUrl(r, midDigest));
      expect(b.status).toBe(429);
      expect(b.headers['retry-after']).toBe('17');
    });

    it('500 → 502', async () => {
      const r = await open();
      up.failAll = { status: 500 };
      const m = await getJson(`${r.url}/v2/library/big/manifests/latest?ns=docker.io`);
      expect(m.status).toBe(502);
      expect(JSON.stringify(m.doc)).toContain('UPSTREAM_FAILED');
      const b = await getJson(blobUrl(r, midDigest));
      expect(b.status).toBe(502);
      expect(await r.app.store.stat(midDigest)).toBeUndefined();
    });

    it('a body that stalls midway ends the response within the idle timeout, committing nothing', async () => {
      const r = await open(); // idle timeout 400 ms
      up.behaviour.set(midDigest, { stallAtPercent: 50 });
      const started = performance.now();
      const got = await within(get(blobUrl(r, midDigest)), 10_000, 'the stalled transfer hung the client');
      const elapsedMs = performance.now() - started;
      expect(got.complete).toBe(false);
      expect(elapsedMs).toBeLessThan(400 + 3000);
      expect(await r.app.store.stat(midDigest)).toBeUndefined();
      expect(await tmpFiles(r)).toEqual([]);
    });
  });

  it('(h) a download that outlives ingestTimeout is abandoned: waiting clients get 502, nothing is committed', async () => {
    const r = await open({ ingestTimeout: '300ms', upstreamTimeouts: { connect: '2s', idle: '30s' } });
    const never = deferred();
    up.behaviour.set(midDigest, { beforeChunk: async (i) => (i === 1 ? never.promise : undefined) });
    const got = await within(getJson(blobUrl(r, midDigest), { range: 'bytes=0-99' }), 10_000, 'ingestTimeout did not end the download');
    never.resolve();
    expect(got.status).toBe(502);
    expect(JSON.stringify(got.doc)).toContain('ingestTimeout');
    expect(await r.app.store.stat(midDigest)).toBeUndefined();
    expect(await tmpFiles(r)).toEqual([]);
  });

  it('(i) Bearer token flow, and a blob redirect to another host without the Authorization header', async () => {
    // The blob host is on loopback: named in redirectHosts, as loopback targets must be.
    const r = await open({ upstreams: { 'docker.io': { url: up.url }, 'ghcr.io': { url: up.url, redirectHosts: [new URL(storageServer.url).host] } } });
    up.bearerRealm = () => `${up.url}/token`;
    up.serveTokens('/token', () => true);
    up.redirectBlob = (digest) => `${storageServer.url}/storage/${digest.slice(7)}`; // http://localhost:P: another origin than http://127.0.0.1:P
    const name = 'private/app';
    up.addManifest(name, { schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: midDigest, size: mid.length }, layers: [] }, 'v1');
    const m = await getJson(`${r.url}/v2/${name}/manifests/v1?ns=ghcr.io`);
    expect(m.status).toBe(200);
    const got = await get(`${r.url}/v2/${name}/blobs/${midDigest}?ns=ghcr.io`);
    expect(got).toMatchObject({ status: 200, complete: true, digest: midDigest });

    const tokenRequests = up.seen.filter((l) => l === 'GET /token');
    expect(tokenRequests).toHaveLength(1); // cached for the blob request
    const authorized = up.requests.filter((q) => q.path.startsWith('/v2/') && q.authorization === `Bearer t:${name}`);
    expect(authorized.map((q) => q.path)).toEqual([`/v2/${name}/manifests/v1`, `/v2/${name}/blobs/${midDigest}`]);
    expect(storageServer.seen).toEqual([`GET /storage/${midDigest.slice(7)}`]);
    expect(storageServer.requests[0]?.authorization).toBeUndefined();
  });

  it('(j) an index pulled by tag, then only the requested platform manifest is fetched by digest', async () => {
    const r = await open();
    const platforms = ['amd64', 'arm64'].map((arch) => {
      const cfg = Buffer.from(JSON.stringify({ architecture: arch, os: 'linux' }));
      const lay = Buffer.from(`layer for ${arch}`);
      const c = up.addBlob(cfg);
      const l = up.addBlob(lay);
      const man = up.addManifest('library/multi', {
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: c, size: cfg.length },
        layers: [{ mediaType: MediaType.ociLayerTar, digest: l, size: lay.length }],
      });
      return { arch, manifest: man, config: c, layer: l, size: man.body.length };
    });
    const index = up.addManifest('library/multi', {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: platforms.map((p) => ({ mediaType: MediaType.ociManifest, digest: p.manifest.digest, size: p.size, platform: { architecture: p.arch, os: 'linux' } })),
    }, '1.0');
    const base = `${r.url}/v2/library/multi`;
    const head = await get(`${base}/manifests/1.0?ns=docker.io`, { method: 'HEAD' });
    expect(head.headers['docker-content-digest']).toBe(index.digest);
    const idx = await getJson(`${base}/manifests/1.0?ns=docker.io`);
    expect(idx.headers['content-type']).toBe(MediaType.ociIndex);
    expect(idx.body.equals(index.body)).toBe(true);
    const amd64 = platforms[0]!;
    const arm64 = platforms[1]!;
    const pm = await getJson(`${base}/manifests/${amd64.manifest.digest}?ns=docker.io`);
    expect(pm.status).toBe(200);
    expect(pm.body.equals(amd64.manifest.body)).toBe(true);
    for (const d of [amd64.config, amd64.layer]) expect((await get(`${base}/blobs/${d}?ns=docker.io`)).digest).toBe(d);

    expect(up.times('GET /v2/library/multi/manifests/1.0')).toBe(1);
    expect(up.times(`GET /v2/library/multi/manifests/${amd64.manifest.digest}`)).toBe(1);
    expect(up.times(`GET /v2/library/multi/manifests/${arm64.manifest.digest}`)).toBe(0);
    expect(up.times(`GET /v2/library/multi/blobs/${arm64.config}`) + up.times(`GET /v2/library/multi/blobs/${arm64.layer}`)).toBe(0);
    expect(await r.app.store.getManifest(arm64.manifest.digest)).toBeUndefined();
    // A digest the index does not reach is refused by the allowlist before anything is dialled.
    const before = registryRequests();
    const denied = await getJson(`${base}/manifests/${sha256('unrelated')}?ns=docker.io`);
    expect(denied.status).toBe(403);
    expect(registryRequests()).toBe(before);
  });
});
