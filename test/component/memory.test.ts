// Serving a cached 64 MiB blob streams it: several concurrent slow readers keep the process's RSS
// growth to a few MiB per request. A server that buffered the blob would hold 64 MiB per request.
import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { run } from '../helpers/binaries.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { MediaType, MiB } from '../kit/oci.js';

const BLOB_BYTES = 64 * MiB;
const CONCURRENT = 8;
const BOUND_PER_REQUEST = 8 * MiB;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let sluice: InProcessSluice;
let blobDigest: string;

/** 64 MiB of deterministic, incompressible-looking bytes, generated chunk by chunk (never whole in memory). */
async function* blobChunks(): AsyncGenerator<Buffer> {
  const chunk = Buffer.alloc(MiB);
  for (let i = 0; i < BLOB_BYTES / MiB; i++) {
    for (let off = 0; off < MiB; off += 32) createHash('sha256').update(`${i}:${off}`).digest().copy(chunk, off);
    yield Buffer.from(chunk);
  }
}

/**
 * Slow readers in a child process, so their own buffers do not count against the server's memory:
 * `count` concurrent GETs, each pausing a macrotask per chunk from a small socket buffer.
 */
const CLIENT = `
const http = require('node:http');
const { createHash } = require('node:crypto');
const [url, count] = [process.argv[1], Number(process.argv[2])];
const one = () => new Promise((resolve, reject) => {
  http.get(url, { highWaterMark: 16 * 1024 }, (res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    res.on('data', (b) => { hash.update(b); bytes += b.length; res.pause(); setTimeout(() => res.resume(), 1); });
    res.on('end', () => resolve({ status: res.statusCode, digest: 'sha256:' + hash.digest('hex'), bytes }));
    res.on('error', reject);
  }).on('error', reject);
});
Promise.all(Array.from({ length: count }, one)).then((r) => process.stdout.write(JSON.stringify(r)), (e) => { console.error(e); process.exit(1); });
`;

async function slowGets(url: string, count: number): Promise<Array<{ status: number; digest: string; bytes: number }>> {
  const r = await run(process.execPath, ['-e', CLIENT, url, String(count)], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`client failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Array<{ status: number; digest: string; bytes: number }>;
}

beforeAll(async () => {
  sluice = await startSluice({ allowlist: ['docker.io/library/big:1'] });
  const store = sluice.app.store;
  const info = await store.ingest(blobChunks(), { sizeBytes: BLOB_BYTES });
  blobDigest = info.digest;
  const config = await store.putBlob(Buffer.from('{}'));
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: config.digest, size: config.sizeBytes },
    layers: [{ mediaType: MediaType.ociLayerTar, digest: info.digest, size: info.sizeBytes }],
  }));
  const m = await store.putManifest(body, MediaType.ociManifest);
  await store.linkManifest('docker.io', 'library/big', m);
  // As an import of docker.io/library/big would: its blobs are that repository's to serve.
  for (const d of [info.digest, config.digest]) await store.linkBlob('docker.io', 'library/big', d);
  await store.setTag('docker.io', 'library/big', '1', m.digest);
});

afterAll(async () => {
  await sluice?.close();
});

describe('memory', () => {
  test(`${CONCURRENT} concurrent slow GETs of a cached 64 MiB blob grow RSS by < ${BOUND_PER_REQUEST / MiB} MiB per request`, async () => {
    const url = `${sluice.url}/v2/library/big/blobs/${blobDigest}`;
    // Warm up every code path once (a small range), so the baseline includes them.
    const warm = await fetch(url, { headers: { range: 'bytes=0-1023' } });
    expect(warm.status).toBe(206);
    await warm.arrayBuffer();
    gc();
    const baseline = process.memoryUsage();
    let peakRss = baseline.rss;
    let peakBuffers = baseline.arrayBuffers;
    // Sample live memory: collect garbage first, so only what the process holds on to counts.
    const sampler = setInterval(() => {
      gc();
      const now = process.memoryUsage();
      peakRss = Math.max(peakRss, now.rss);
      peakBuffers = Math.max(peakBuffers, now.arrayBuffers);
    }, 100);
    let results: Array<{ status: number; digest: string; bytes: number }>;
    try {
      results = await slowGets(url, CONCURRENT);
    } finally {
      clearInterval(sampler);
    }
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.bytes).toBe(BLOB_BYTES);
      expect(r.digest).toBe(blobDigest);
    }
    const rssGrowth = peakRss - baseline.rss;
    const bufferGrowth = peakBuffers - baseline.arrayBuffers;
    console.info(`${CONCURRENT} × 64 MiB: RSS growth ${(rssGrowth / MiB).toFixed(1)} MiB, live Buffer growth ${(bufferGrowth / MiB).toFixed(1)} MiB`);
    // RSS carries allocator noise of a few tens of MiB; live Buffers are exact. Buffering would cost 64 MiB each.
    expect(rssGrowth).toBeLessThan(CONCURRENT * BOUND_PER_REQUEST);
    expect(bufferGrowth).toBeLessThan(CONCURRENT * BOUND_PER_REQUEST);
  });
});
