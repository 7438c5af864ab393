// The local blob cache in front of the real object store (Ceph RGW), counted by a proxy in front of RGW: it passes
// the BlobBackend conformance suite; a hit makes no object-store request; one fill per digest; maxBytes holds
// while three times that is pulled through; eviction never cuts a read; a file changed on disk is never served;
// a fill killed with -9 leaves nothing served; a removal on one replica reaches the other's cache (PostgreSQL).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, readSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { CachedBlobBackend } from '../../src/store/cache/blobs.js';
import { Ingest } from '../../src/store/ingest.js';
import { LocalSpoolArea } from '../../src/store/local/spool.js';
import { openStore } from '../../src/store/open.js';
import { S3BlobBackend } from '../../src/store/s3/blobs.js';
import { s3Client } from '../../src/store/s3/client.js';
import type { BlobBackend } from '../../src/store/ports.js';
import { blobBackendConformance } from '../helpers/conformance/blob-backend.js';
import { s3UnderTest } from '../helpers/s3-under-test.js';
import { countingProxy, type CountingProxy } from '../helpers/counting-proxy.js';
import { freshBucket, freshDatabase, requireServices, s3Config } from '../helpers/services.js';
import { MiB, sha256 } from '../kit/oci.js';

const ok = requireServices(['s3'], 'test/component/store-cache.test.ts');
const okPg = requireServices(['s3', 'postgres'], 'test/component/store-cache.test.ts (replicas)');

function body(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return b;
}

/** Reads a descriptor to its end and closes it. */
function readFd(fd: number): Buffer {
  const size = fstatSync(fd).size;
  const out = Buffer.alloc(size);
  let off = 0;
  while (off < size) off += readSync(fd, out, off, size - off, off);
  closeSync(fd);
  return out;
}

async function put(b: BlobBackend, bytes: Buffer): Promise<string> {
  const w = new Ingest((v) => b.commit(v), await b.createSpool(bytes.length), { digest: sha256(bytes), sizeBytes: bytes.length });
  for (let off = 0; off < bytes.length; off += MiB) await w.write(bytes.subarray(off, off + MiB));
  return (await w.commit()).digest;
}

/** Every byte in files under the cache folder (cached blobs and fills in progress). */
async function bytesOnDisk(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) n += (await stat(join(e.parentPath, e.name)).catch(() => ({ size: 0 }))).size;
  }
  return n;
}

if (ok) {
  blobBackendConformance('s3 behind the local blob cache', () =>
    s3UnderTest(async (s3, dir) => CachedBlobBackend.open(s3, { path: join(dir, 'cache'), maxBytes: 64 * MiB })));
}

describe.skipIf(!ok)('the local blob cache on the real RGW, counted by a proxy', () => {
  let dir: string;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let proxy: CountingProxy;
  let s3: S3BlobBackend;
  const opened: CachedBlobBackend[] = [];
  const cacheDir = (): string => join(dir, 'cache');
  const openCache = async (maxBytes: number): Promise<CachedBlobBackend> => {
    const c = await CachedBlobBackend.open(s3, { path: cacheDir(), maxBytes });
    opened.push(c);
    return c;
  };

  beforeAll(async () => {
    bucket = await freshBucket();
    proxy = await countingProxy(s3Config(bucket.bucket).endpoint ?? '');
  });
  afterAll(async () => {
    await proxy?.close();
    await bucket?.remove();
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-cache-'));
    s3 = await S3BlobBackend.open(s3Client({ ...s3Config(bucket.bucket), endpoint: proxy.url }), { bucket: bucket.bucket, prefix: `${dir.slice(-6)}/` }, await LocalSpoolArea.open(join(dir, 'spools')));
  });
  afterEach(async () => {
    proxy.release();
    for (const c of opened.splice(0)) await c.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  test('a second read of a blob makes no object-store request, and a restart keeps the hit without rereading', async () => {
    const bytes = body(3 * MiB, 1);
    const digest = await put(s3, bytes);
    const cache = await openCache(16 * MiB);
    const before = { ...proxy.counts };
    expect(sha256(readFd((await cache.openFd(digest)) as number))).toBe(digest);
    expect(proxy.gets() - (before.GET ?? 0)).toBe(1);
    const afterFill = JSON.stringify(proxy.counts);
    expect(sha256(readFd((await cache.openFd(digest)) as number))).toBe(digest);
    expect(await cache.stat(digest)).toEqual({ sizeBytes: bytes.length });
    expect(JSON.stringify(proxy.counts)).toBe(afterFill);
    const again = await openCache(16 * MiB);
    expect(sha256(readFd((await again.openFd(digest)) as number))).toBe(digest);
    expect(JSON.stringify(proxy.counts)).toBe(afterFill);
  });

  test('the replica that committed a blob keeps a copy from its verified spool: its GETs make no object-store GET', async () => {
    const cache = await openCache(16 * MiB);
    const gets = proxy.gets();
    const digest = await put(cache, body(3 * MiB, 7));
    expect(sha256(readFd((await cache.openFd(digest)) as number))).toBe(digest);
    expect(proxy.gets()).toBe(gets);
    expect(cache.counts.fills).toBe(1);
  });

  test('a CLI command opens no cache: it reads the bucket itself and leaves the server\'s fills alone', async () => {
    const fill = join(cacheDir(), 'filling', 'a-fill-of-the-running-server');
    await mkdir(join(cacheDir(), 'filling'), { recursive: true });
    await writeFile(fill, 'partial');
    const cfg = { storage: join(dir, 'cli'), s3: { ...s3Config(bucket.bucket), endpoint: proxy.url }, storageCache: { path: cacheDir(), maxBytes: 16 * MiB } };
    const cli = await openStore(cfg, { follow: false });
    try {
      expect(cli.openFd).toBeUndefined();
      expect(cli.blobs).not.toBeInstanceOf(CachedBlobBackend);
      expect(existsSync(fill)).toBe(true);
    } finally {
      await cli.close();
    }
  });

  test('many clients asking for one cold blob cause one download', async () => {
    const digest = await put(s3, body(5 * MiB, 2));
    const cache = await openCache(16 * MiB);
    const gets = proxy.gets();
    const fds = await Promise.all(Array.from({ length: 12 }, () => cache.openFd(digest)));
    for (const fd of fds) expect(sha256(readFd(fd as number))).toBe(digest);
    expect(proxy.gets() - gets).toBe(1);
    expect(cache.counts.fills).toBe(1);
  });

  test('maxBytes is never exceeded while three times it is pulled through, and eviction never cuts an open read', async () => {
    const maxBytes = 4 * MiB;
    const digests: string[] = [];
    for (let i = 0; i < 12; i++) digests.push(await put(s3, body(MiB, 10 + i)));
    const cache = await openCache(maxBytes);
    const held = (await cache.openFd(digests[0] as string)) as number;
    let peak = 0;
    let pulling = true;
    const sampler = (async () => {
      while (pulling) {
        peak = Math.max(peak, await bytesOnDisk(cacheDir()));
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 1; i < digests.length; i += 3) {
      const group = digests.slice(i, i + 3) as string[];
      const fds = await Promise.all(group.map((d) => cache.openFd(d)));
      fds.forEach((fd, j) => expect(sha256(readFd(fd as number))).toBe(group[j]));
    }
    pulling = false;
    await sampler;
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(maxBytes);
    expect(cache.cachedBytes).toBeLessThanOrEqual(maxBytes);
    expect(existsSync(join(cacheDir(), 'blobs', 'sha256', (digests[0] as string).slice(7, 9), (digests[0] as string).slice(7)))).toBe(false);
    // The first blob was evicted (unlinked) long ago; its open descriptor still reads all of it.
    expect(sha256(readFd(held))).toBe(digests[0]);
  });

  test('a blob larger than maxBytes is not kept: openFd says so and the read streams from the object store', async () => {
    const digest = await put(s3, body(3 * MiB, 3));
    const cache = await openCache(2 * MiB);
    expect(await cache.openFd(digest)).toBeUndefined();
    const parts: Buffer[] = [];
    for await (const c of (await cache.read(digest, { start: 0, end: 3 * MiB - 1 })) ?? []) parts.push(c as Buffer);
    expect(sha256(Buffer.concat(parts))).toBe(digest);
    expect(await bytesOnDisk(cacheDir())).toBe(0);
  });

  test.each([
    ['overwritten in place (same size)', async (path: string) => {
      const fh = await open(path, 'r+');
      await fh.write(Buffer.from('corrupt'), 0, 7, 1000);
      await fh.close();
    }],
    ['truncated', async (path: string) => {
      const fh = await open(path, 'r+');
      await fh.truncate(1000);
      await fh.close();
    }],
  ])('a cache file %s on disk is detected, dropped and refetched, never served', async (_how, corrupt) => {
    const digest = await put(s3, body(2 * MiB, 4));
    const cache = await openCache(16 * MiB);
    readFd((await cache.openFd(digest)) as number);
    const path = join(cacheDir(), 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
    await corrupt(path);
    const gets = proxy.gets();
    expect(sha256(readFd((await cache.openFd(digest)) as number))).toBe(digest);
    expect(proxy.gets() - gets).toBe(1);
    expect(cache.counts.changed).toBe(1);
    expect(sha256(await readFile(path))).toBe(digest);
    // Changed while the process was down: the start-up scan drops it without reading it.
    await corrupt(path);
    const restarted = await openCache(16 * MiB);
    expect(existsSync(path)).toBe(false);
    expect(sha256(readFd((await restarted.openFd(digest)) as number))).toBe(digest);
  });

  test('a fill killed with -9 halfway leaves nothing that is served; the next start drops it and fills anew', async () => {
    const bytes = body(24 * MiB, 5);
    const digest = await put(s3, bytes);
    const cfg = {
      storage: join(dir, 'child'),
      s3: { ...s3Config(bucket.bucket, `${dir.slice(-6)}/`), endpoint: proxy.url },
      storageCache: { path: cacheDir(), maxBytes: 64 * MiB },
    };
    const script = `const { openStore } = await import(${JSON.stringify(join(process.cwd(), 'dist/src/store/open.js'))});
      const store = await openStore(JSON.parse(process.argv[1]));
      await store.openFd(process.argv[2]);`;
    proxy.hold = true;
    const held = new Promise<void>((resolve) => (proxy.onHeld = resolve));
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(cfg), digest], { stdio: 'inherit' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    await held;
    // The first chunk has reached the child; wait until its fill file holds bytes, then kill it.
    const fillDir = join(cacheDir(), 'filling');
    for (;;) {
      const names = await readdir(fillDir).catch(() => []);
      const sizes = await Promise.all(names.map((n) => stat(join(fillDir, n)).then((s) => s.size, () => 0)));
      if (sizes.some((s) => s > 0)) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    child.kill('SIGKILL');
    await exited;
    proxy.onHeld = undefined;
    proxy.release();
    const blobPath = join(cacheDir(), 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
    expect(existsSync(blobPath)).toBe(false);
    const cache = await openCache(64 * MiB);
    expect(await readdir(fillDir)).toEqual([]);
    expect(await cache.stat(digest)).toEqual(expect.objectContaining({ sizeBytes: bytes.length }));
    const gets = proxy.gets();
    expect(sha256(readFd((await cache.openFd(digest)) as number))).toBe(digest);
    expect(proxy.gets() - gets).toBe(1);
  }, 60_000);
});

describe.skipIf(!okPg)('the local blob cache across replicas (RGW + PostgreSQL)', () => {
  test('a blob removed on replica A leaves B\'s cache at once, and B answers it as a miss', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sluice-cache-replicas-'));
    const bucket = await freshBucket();
    const db = await freshDatabase();
    const proxy = await countingProxy(s3Config(bucket.bucket).endpoint ?? '');
    const cfg = (name: string): Parameters<typeof openStore>[0] => ({
      storage: join(dir, name),
      s3: { ...s3Config(bucket.bucket), endpoint: proxy.url },
      storageCache: { path: join(dir, name, 'cache'), maxBytes: 64 * MiB },
      postgres: { url: db.url, poolSize: 2, connectTimeoutMs: 5000, queryTimeoutMs: 10_000, freshnessMs: 10_000 },
    });
    const a = await openStore(cfg('a'));
    const b = await openStore(cfg('b'));
    try {
      const bytes = body(2 * MiB, 6);
      const digest = await put(a.blobs, bytes);
      expect(sha256(readFd((await b.openFd?.(digest)) as number))).toBe(digest);
      expect(await b.stat(digest)).toEqual({ digest, sizeBytes: bytes.length });
      const gets = proxy.gets();
      readFd((await b.openFd?.(digest)) as number);
      expect(proxy.gets()).toBe(gets);
      const cached = join(dir, 'b', 'cache', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
      expect(existsSync(cached)).toBe(true);

      const noticed = new Promise<void>((resolve) => b.meta.blobNotices?.onGone((d) => d === digest && resolve()));
      expect(await a.deleteBlob(digest)).toBe(true);
      await noticed;
      expect(await b.stat(digest)).toBeUndefined();
      expect(await b.openFd?.(digest)).toBeUndefined();
      expect(await b.openBlob(digest, { start: 0, end: 9 })).toBeUndefined();
      expect(existsSync(cached)).toBe(false);
    } finally {
      await a.close();
      await b.close();
      await proxy.close();
      await bucket.remove();
      await db.drop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
