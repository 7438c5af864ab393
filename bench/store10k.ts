// A populated store for the idle-memory and start-up cases: 1,000 tagged images (100 repositories × 10 tags),
// each a manifest, a config and 8 small layers — 10,000 blobs — written through sluice's own Store module.
import { randomBytes } from 'node:crypto';
import { Store } from '../src/store/store.js';
import { openStore } from '../src/store/open.js';
import { MediaType, sha256, type Descriptor } from '../test/kit/oci.js';
import { BENCH_HOST } from './content.js';

export interface PopulatedStore {
  blobs: number;
  images: number;
  repositories: number;
  buildMs: number;
  /** A tag of the store, for a first manifest GET after start-up. */
  sample: { name: string; tag: string };
  /** The allowlist rule that covers every image of it. */
  rule: string;
}

const REPOS = 100;
const TAGS_PER_REPO = 10;
const LAYERS = 8;
const LAYER_BYTES = 512;
const CONCURRENCY = 16;

async function putImage(store: Store, repo: string, tag: string): Promise<number> {
  const layers: Descriptor[] = [];
  for (let i = 0; i < LAYERS; i++) {
    const body = randomBytes(LAYER_BYTES);
    const info = await store.putBlob(body, { sizeBytes: body.length });
    layers.push({ mediaType: MediaType.ociLayerTar, digest: info.digest, size: info.sizeBytes });
  }
  const configBody = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } }));
  const config = await store.putBlob(configBody, { digest: sha256(configBody), sizeBytes: configBody.length });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: config.digest, size: config.sizeBytes },
      layers,
    }),
  );
  const m = await store.putManifest(manifest, MediaType.ociManifest);
  await store.linkManifest(BENCH_HOST, repo, m);
  // As `sluice import` does: the blobs arrived through this repository, so they may be served through it.
  for (const d of [config.digest, ...layers.map((l) => l.digest)]) await store.linkBlob(BENCH_HOST, repo, d);
  await store.setTag(BENCH_HOST, repo, tag, m.digest);
  return LAYERS + 2;
}

/** Fills `storage` (a sluice storage folder) with 10,000 blobs; every write is the Store's own verified ingest. */
export async function populateStore(storage: string): Promise<PopulatedStore> {
  const t0 = performance.now();
  const store = await openStore({ storage });
  const jobs: Array<{ repo: string; tag: string }> = [];
  for (let t = 0; t < TAGS_PER_REPO; t++) for (let r = 0; r < REPOS; r++) jobs.push({ repo: `many/repo${r}`, tag: `v${t}` });
  let blobs = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let job = jobs[next++]; job !== undefined; job = jobs[next++]) {
        const n = await putImage(store, job.repo, job.tag);
        blobs += n;
      }
    }),
  );
  return {
    blobs,
    images: jobs.length,
    repositories: REPOS,
    buildMs: performance.now() - t0,
    sample: { name: 'many/repo7', tag: 'v3' },
    rule: `${BENCH_HOST}/many/**`,
  };
}
