// The BlobBackend conformance suite: a backend commits atomically, never shows a partial blob, reads ranges
// exactly, keeps list and usage right. Each backend's own test file calls it (store-fs, store-s3, store-memory).
import { closeSync, readSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { RegistryError } from '../../../src/oci/errors.js';
import { Ingest } from '../../../src/store/ingest.js';
import type { BlobBackend, IngestExpectation } from '../../../src/store/store.js';
import { sha256 } from '../../kit/oci.js';

export interface BackendUnderTest {
  backend: BlobBackend;
  /** The same backing storage as seen by a fresh process (counts usage anew). */
  reopen(): Promise<BlobBackend>;
  dispose(): Promise<void>;
}

/** Bytes that differ at every offset, so an off-by-one range shows. */
function pattern(n: number, seed = 0): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

async function drain(s: Readable | undefined): Promise<Buffer | undefined> {
  if (!s) return undefined;
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Compares by content hash: vitest's deep equality walks a Buffer byte by byte, which takes seconds per MiB. */
function expectBytes(got: Buffer | undefined, want: Buffer): void {
  expect(got?.length).toBe(want.length);
  expect(got && sha256(got)).toBe(sha256(want));
}

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const d of it) out.push(d);
  return out.sort();
}

/** The verified write the store does (store/ingest.ts), straight onto the backend under test. */
async function begin(b: BlobBackend, expect: IngestExpectation): Promise<Ingest> {
  return new Ingest((v) => b.commit(v), await b.createSpool(expect.sizeBytes), expect);
}

async function put(b: BlobBackend, body: Buffer, chunkBytes = 64 * 1024): Promise<string> {
  const w = await begin(b, { digest: sha256(body), sizeBytes: body.length });
  for (let off = 0; off < body.length; off += chunkBytes) await w.write(body.subarray(off, off + chunkBytes));
  return (await w.commit()).digest;
}

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return e instanceof RegistryError ? e.kind : String(e);
  }
  return 'resolved';
}

/**
 * What every BlobBackend must do (store/ports.ts), as a suite each backend's own test file calls with a factory:
 * a fresh, empty backend per test, and `reopen` for the same storage as a fresh process sees it.
 */
export function blobBackendConformance(name: string, open: () => Promise<BackendUnderTest>): void {
  describe(`BlobBackend conformance: ${name}`, () => {
    let t: BackendUnderTest;
    let b: BlobBackend;
    beforeEach(async () => {
      t = await open();
      b = t.backend;
    });
    afterEach(async () => {
      await b.close();
      await t.dispose();
    });

    test('stat of an unknown digest is undefined; read and readAll are misses', async () => {
      const d = sha256(Buffer.from('never stored'));
      expect(await b.stat(d)).toBeUndefined();
      expect(await b.read(d, { start: 0, end: 0 })).toBeUndefined();
      expect(await b.readAll(d)).toBeUndefined();
      if (b.openFd) expect(await b.openFd(d)).toBeUndefined();
      expect(await b.usage()).toEqual({ blobs: 0, bytes: 0 });
    });

    test('nothing is visible while spooling; the commit makes all of it visible at once', async () => {
      const body = pattern(300_000);
      const d = sha256(body);
      const w = await begin(b, { digest: d, sizeBytes: body.length });
      await w.write(body.subarray(0, 100_000));
      expect(await b.stat(d)).toBeUndefined();
      expect(await b.read(d, { start: 0, end: 10 })).toBeUndefined();
      expect(await collect(b.list())).toEqual([]);
      await w.write(body.subarray(100_000));
      expect(await b.stat(d)).toBeUndefined(); // every byte is there, but not verified yet
      await w.commit();
      const committed = await b.stat(d);
      expect(committed?.sizeBytes).toBe(body.length);
      // committedMs is optional in the port; where a backend gives it, it is the commit's time, not some other.
      if (committed?.committedMs !== undefined) expect(Math.abs(committed.committedMs - Date.now())).toBeLessThan(60_000);
      expectBytes(await b.readAll(d), body);
    });

    test('a failed verification or an abort commits nothing and leaves nothing counted', async () => {
      const body = pattern(5000);
      const wrongDigest = await begin(b, { digest: sha256(Buffer.from('other')), sizeBytes: body.length });
      await wrongDigest.write(body);
      expect(await kindOf(wrongDigest.commit())).toBe('DIGEST_INVALID');
      const short = await begin(b, { digest: sha256(body), sizeBytes: body.length });
      await short.write(body.subarray(0, 10));
      expect(await kindOf(short.commit())).toBe('SIZE_INVALID');
      const long = await begin(b, { digest: sha256(body), sizeBytes: 10 });
      expect(await kindOf(long.write(body))).toBe('SIZE_INVALID');
      await long.abort();
      const aborted = await begin(b, { digest: sha256(body), sizeBytes: body.length });
      await aborted.write(body);
      await aborted.abort();
      expect(await b.stat(sha256(body))).toBeUndefined();
      expect(await b.stat(sha256(Buffer.from('other')))).toBeUndefined();
      expect(await collect(b.list())).toEqual([]);
      expect(await b.usage()).toEqual({ blobs: 0, bytes: 0 });
      if (aborted.spool.openFd) expect(await aborted.spool.openFd()).toBeUndefined();
    });

    test('a reader polling during the commit sees nothing or the whole blob, never a part', async () => {
      const body = pattern(1024 * 1024 + 5, 3);
      const d = sha256(body);
      const w = await begin(b, { digest: d, sizeBytes: body.length });
      for (let off = 0; off < body.length; off += 256 * 1024) await w.write(body.subarray(off, off + 256 * 1024));
      let committed = false;
      const seen: Array<number | undefined> = [];
      const poll = (async (): Promise<void> => {
        while (!committed) {
          const s = await b.stat(d);
          seen.push(s?.sizeBytes);
          const got = await b.readAll(d);
          if (got) expect(sha256(got)).toBe(d);
        }
      })();
      await w.commit();
      committed = true;
      await poll;
      expect(seen.every((s) => s === undefined || s === body.length)).toBe(true);
      expectBytes(await b.readAll(d), body);
    });

    test('range reads are exact: first byte, last byte, a middle range, the whole blob', async () => {
      const body = pattern(2 * 1024 * 1024 + 17, 5); // more than one stream chunk
      const d = await put(b, body);
      const n = body.length;
      for (const [start, end] of [[0, 0], [n - 1, n - 1], [1000, 1_500_000], [0, n - 1], [1024 * 1024 - 1, 1024 * 1024]] as const) {
        expectBytes(await drain(await b.read(d, { start, end })), body.subarray(start, end + 1));
      }
      expectBytes(await b.readAll(d), body);
    });

    test('the openFd fast path, when there is one, gives the committed bytes', async () => {
      if (!b.openFd) return;
      const body = pattern(70_000, 9);
      const fd = await b.openFd(await put(b, body));
      expect(fd).toBeTypeOf('number');
      const buf = Buffer.alloc(body.length + 10);
      const n = readSync(fd as number, buf, 0, buf.length, 0);
      closeSync(fd as number);
      expectBytes(buf.subarray(0, n), body);
    });

    test('an empty blob commits, stats as 0 bytes and counts as a blob', async () => {
      const d = await put(b, Buffer.alloc(0));
      expect((await b.stat(d))?.sizeBytes).toBe(0);
      expect(await b.readAll(d)).toEqual(Buffer.alloc(0));
      expect(await b.usage()).toEqual({ blobs: 1, bytes: 0 });
    });

    test('list and usage follow commits and deletes, and a fresh open counts the same', async () => {
      const bodies = [pattern(10), pattern(2000, 1), pattern(70_000, 2)];
      const digests = [];
      for (const body of bodies) digests.push(await put(b, body));
      expect(await collect(b.list())).toEqual([...digests].sort());
      expect(await b.usage()).toEqual({ blobs: 3, bytes: 72_010 });
      expect(await b.delete(digests[1] ?? '')).toBe(true);
      expect(await b.delete(digests[1] ?? '')).toBe(false);
      expect(await collect(b.list())).toEqual([digests[0], digests[2]].sort());
      expect(await b.usage()).toEqual({ blobs: 2, bytes: 70_010 });
      const again = await t.reopen();
      expect(await again.usage()).toEqual({ blobs: 2, bytes: 70_010 });
      await again.close();
    });

    test('usage asked before any commit is counted once, then kept current', async () => {
      const first = await put(b, pattern(100));
      expect(await b.usage()).toEqual({ blobs: 1, bytes: 100 });
      await put(b, pattern(50, 4));
      await put(b, pattern(100)); // the same blob again: not a second one
      expect(await b.usage()).toEqual({ blobs: 2, bytes: 150 });
      await b.delete(first);
      expect(await b.usage()).toEqual({ blobs: 1, bytes: 50 });
    });

    test('usage stays exact when commits race the first count', async () => {
      const bodies = Array.from({ length: 40 }, (_, i) => pattern(100 + i, i));
      for (const body of bodies.slice(0, 20)) await put(b, body);
      const fresh = await t.reopen();
      const counting = fresh.usage();
      await Promise.all(bodies.slice(10).map((body) => put(fresh, body)));
      await counting;
      const expected = { blobs: 40, bytes: bodies.reduce((n, x) => n + x.length, 0) };
      expect(await fresh.usage()).toEqual(expected);
      await fresh.close();
    });

    test('concurrent commits of one digest end with one blob, counted once', async () => {
      const body = pattern(200_000, 6);
      expect(await b.usage()).toEqual({ blobs: 0, bytes: 0 });
      const ds = await Promise.all(Array.from({ length: 8 }, () => put(b, body, 10_000)));
      expect(new Set(ds).size).toBe(1);
      expect(await collect(b.list())).toEqual([sha256(body)]);
      expect(await b.usage()).toEqual({ blobs: 1, bytes: body.length });
      expectBytes(await b.readAll(sha256(body)), body);
    });

    test('delete then stat is a miss, and a read is a miss too', async () => {
      const d = await put(b, pattern(1234));
      expect(await b.delete(d)).toBe(true);
      expect(await b.stat(d)).toBeUndefined();
      expect(await b.read(d, { start: 0, end: 0 })).toBeUndefined();
      expect(await b.readAll(d)).toBeUndefined();
      expect(await b.usage()).toEqual({ blobs: 0, bytes: 0 });
    });

    test('quarantine takes a blob out of service and out of usage', async () => {
      const d = await put(b, pattern(400));
      expect(typeof (await b.quarantine(d))).toBe('string');
      expect(await b.stat(d)).toBeUndefined();
      expect(await b.usage()).toEqual({ blobs: 0, bytes: 0 });
    });

    test('a tailing reader of the spool gets the bytes so far, and the blob after the commit (spools that are files)', async () => {
      const body = pattern(50_000, 8);
      const w = await begin(b, { digest: sha256(body), sizeBytes: body.length });
      if (!w.spool.openFd) return;
      await w.write(body.subarray(0, 20_000));
      const readFd = (fd: number): Buffer => {
        const buf = Buffer.alloc(body.length + 1);
        const n = readSync(fd, buf, 0, buf.length, 0);
        closeSync(fd);
        return buf.subarray(0, n);
      };
      expectBytes(readFd((await w.spool.openFd()) as number), body.subarray(0, 20_000));
      await w.write(body.subarray(20_000));
      await w.commit();
      expectBytes(readFd((await w.spool.openFd()) as number), body);
    });
  });
}
