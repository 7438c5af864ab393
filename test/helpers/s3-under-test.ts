// An S3 blob backend on a fresh bucket of the real object store, spooling in a temp folder, for the BlobBackend
// conformance suite: `wrap` puts whatever the test is about (a local cache) in front of it; reopen builds it anew.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalSpoolArea } from '../../src/store/local/spool.js';
import type { BlobBackend } from '../../src/store/ports.js';
import { S3BlobBackend } from '../../src/store/s3/blobs.js';
import type { BackendUnderTest } from './conformance/blob-backend.js';
import { freshBucket } from './services.js';

export async function s3UnderTest(wrap: (s3: S3BlobBackend, dir: string) => Promise<BlobBackend> = async (s3) => s3): Promise<BackendUnderTest> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-conformance-s3-'));
  const bucket = await freshBucket();
  const open = async (): Promise<BlobBackend> =>
    wrap(await S3BlobBackend.open(bucket.client, { bucket: bucket.bucket, prefix: 'store/' }, await LocalSpoolArea.open(join(dir, 'spools'))), dir);
  return {
    backend: await open(),
    reopen: open,
    dispose: async () => {
      await bucket.remove();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
