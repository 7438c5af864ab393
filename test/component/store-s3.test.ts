// The S3 backend on the real object store (Ceph RGW from test/services) passes the BlobBackend conformance suite
// (spools in the local spool area, a fresh bucket per test), and what the suite's small blobs do not reach: a blob
// large enough for a multipart upload (16 MiB parts) commits whole and reads exactly across part boundaries.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Ingest } from '../../src/store/ingest.js';
import { LocalSpoolArea } from '../../src/store/local/spool.js';
import { S3BlobBackend } from '../../src/store/s3/blobs.js';
import { blobBackendConformance } from '../helpers/conformance/blob-backend.js';
import { s3UnderTest } from '../helpers/s3-under-test.js';
import { freshBucket, requireServices } from '../helpers/services.js';
import { MiB, sha256 } from '../kit/oci.js';

const ok = requireServices(['s3'], 'test/component/store-s3.test.ts');

async function drain(s: Readable | undefined): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s ?? []) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

if (ok) {
  blobBackendConformance('s3', () => s3UnderTest());
}

describe.skipIf(!ok)('S3BlobBackend on the real RGW: multipart', () => {
  let dir: string;
  let bucket: Awaited<ReturnType<typeof freshBucket>>;
  let b: S3BlobBackend;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-s3-'));
    bucket = await freshBucket();
    b = await S3BlobBackend.open(bucket.client, { bucket: bucket.bucket, prefix: '' }, await LocalSpoolArea.open(dir));
  });
  afterAll(async () => {
    await b?.close();
    await bucket?.remove();
    await rm(dir, { recursive: true, force: true });
  });

  test('a 40 MiB blob goes up in parts, becomes visible whole, and reads exactly across part boundaries', async () => {
    const body = Buffer.alloc(40 * MiB);
    for (let i = 0; i < body.length; i += 4) body.writeUInt32LE(i, i);
    const digest = sha256(body);
    const w = new Ingest((v) => b.commit(v), await b.createSpool(body.length), { digest, sizeBytes: body.length });
    for (let off = 0; off < body.length; off += MiB) await w.write(body.subarray(off, off + MiB));
    expect(await b.stat(digest)).toBeUndefined();
    await w.commit();
    expect(await b.stat(digest)).toMatchObject({ sizeBytes: body.length, committedMs: expect.any(Number) as number });
    const edge = 16 * MiB;
    const got = await drain(await b.read(digest, { start: edge - 10, end: edge + 9 }));
    expect(got.equals(body.subarray(edge - 10, edge + 10))).toBe(true);
    expect(sha256(await drain(await b.read(digest, { start: 0, end: body.length - 1 })))).toBe(digest);
    expect(await b.usage()).toEqual({ blobs: 1, bytes: body.length });
  }, 120_000);

  test('the bucket must exist: opening on a missing one names it', async () => {
    await expect(S3BlobBackend.open(bucket.client, { bucket: 'sluice-no-such-bucket', prefix: '' }, await LocalSpoolArea.open(dir)))
      .rejects.toThrow('S3 bucket "sluice-no-such-bucket" does not exist');
  });
});
