// A backend without the openFd fast path (an object store): blob GETs are served from its range stream, with
// the same bytes, headers and ranges as the pooled fd sender, and a blob gone before the open is a miss.
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test, vi } from 'vitest';
import { importPath } from '../../src/jobs/importer.js';
import { tempDir } from '../helpers/clients.js';
import { blobFile } from '../helpers/fs-store.js';
import { blobPath, buildLayout, splitRef, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { sha256 } from '../kit/oci.js';

let work: string;
let layout: LayoutDescription;
let sluice: InProcessSluice;
let img: TestImage;
let big: { digest: string; size: number };

beforeAll(async () => {
  work = await tempDir('blob-stream-fallback');
  layout = await buildLayout(join(work, 'layout'));
  img = layout.images.find((i) => i.ref === 'ghcr.io/siderolabs/kubelet:v1.34.0')!;
  big = [...img.blobs].sort((x, y) => y.size - x.size)[0]!;
  sluice = await startSluice({ allowlist: ['ghcr.io/siderolabs/kubelet:v1.34.0'] });
  expect((await importPath(sluice.app.store, layout.dir)).failed).toEqual([]);
  // What a Store over a backend without descriptors looks like to the HTTP layer.
  Object.defineProperty(sluice.app.store, 'openFd', { value: undefined });
});

afterAll(async () => {
  await sluice?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

const blobUrl = (digest: string): string => {
  const { host, name } = splitRef(img.ref);
  return `${sluice.url}/v2/${host}/${name}/blobs/${digest}`;
};

test('whole blob and a range come from the stream, exact', async () => {
  expect(big.size).toBeGreaterThan(64 * 1024); // past the small-blob path
  const spy = vi.spyOn(sluice.app.store, 'openBlob');
  try {
    const whole = await readFile(blobPath(layout.dir, big.digest));
    const r = await fetch(blobUrl(big.digest));
    expect(r.status).toBe(200);
    expect(r.headers.get('content-length')).toBe(String(big.size));
    expect(r.headers.get('docker-content-digest')).toBe(big.digest);
    expect(sha256(Buffer.from(await r.arrayBuffer()))).toBe(big.digest);
    const p = await fetch(blobUrl(big.digest), { headers: { range: 'bytes=1000-70999' } });
    expect(p.status).toBe(206);
    expect(p.headers.get('content-range')).toBe(`bytes 1000-70999/${big.size}`);
    expect(Buffer.from(await p.arrayBuffer()).equals(whole.subarray(1000, 71000))).toBe(true);
    expect(spy).toHaveBeenCalledTimes(2);
  } finally {
    spy.mockRestore();
  }
});

test('a blob removed behind the store\'s back is answered as a miss (window never: 404), not a cut', async () => {
  await rm(blobFile(sluice.app.store, big.digest));
  const r = await fetch(blobUrl(big.digest));
  expect(r.status).toBe(404);
  expect(((await r.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('BLOB_UNKNOWN');
});

test('a backend that finds a blob gone without saying so (an object store) still answers a miss, not a loop', async () => {
  const other = [...img.blobs].sort((x, y) => y.size - x.size).find((b) => b.size > 64 * 1024 && b.digest !== big.digest);
  expect(other).toBeDefined();
  const digest = other!.digest;
  expect((await fetch(blobUrl(digest))).status).toBe(200); // its size is now remembered
  // As the S3 backend: a 404 from the object store, and no onGone call to forget the size.
  const read = vi.spyOn(sluice.app.store.blobs, 'read').mockResolvedValue(undefined);
  const stat = vi.spyOn(sluice.app.store.blobs, 'stat').mockResolvedValue(undefined);
  try {
    const r = await fetch(blobUrl(digest), { signal: AbortSignal.timeout(5_000) });
    expect(r.status).toBe(404);
    expect(read).toHaveBeenCalledTimes(1);
  } finally {
    read.mockRestore();
    stat.mockRestore();
  }
});
