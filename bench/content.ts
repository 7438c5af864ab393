// The bench's own content: seeded pseudo-random blobs (1 KiB … 256 MiB) and the OCI manifests that reference
// them, written as OCI image layouts, plus the static tree nginx and the bare servers serve at /v2/ paths.
import { link, mkdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { blobPath, KiB, MediaType, MiB, mkLayoutDir, writeBlob, writeLayoutIndex, writeSeededBlob, type Descriptor } from '../test/kit/oci.js';

export type { Descriptor } from '../test/kit/oci.js';

/** The registry host sluice knows the bench content under (its defaultUpstream, so paths match every target). */
export const BENCH_HOST = 'bench.local';

export interface BenchImage {
  /** Full reference with host, as imported into sluice: bench.local/bench/img:v1. */
  ref: string;
  /** Repository name without host, as pushed to docker-registry and used in URL paths. */
  name: string;
  tag: string;
  manifest: Descriptor;
  manifestBody: Buffer;
  config: Descriptor;
  /** Layers by their size label: '1KiB', '1MiB', '64MiB', '256MiB'. */
  layers: Map<string, Descriptor>;
}

export interface Layout {
  dir: string;
  images: BenchImage[];
}

export const sizeLabel = (n: number): string => (n >= MiB ? `${n / MiB}MiB` : `${n / KiB}KiB`);

async function writeJsonBlob(dir: string, doc: object, mediaType: string): Promise<{ d: Descriptor; body: Buffer }> {
  const body = Buffer.from(JSON.stringify(doc));
  return { d: await writeBlob(dir, body, mediaType), body };
}

/** One OCI image: a config and one uncompressed-tar layer per size. */
async function writeImage(dir: string, name: string, tag: string, sizes: number[]): Promise<BenchImage> {
  const layers = new Map<string, Descriptor>();
  for (const size of sizes) {
    const tmp = join(dir, 'blobs', 'sha256', `tmp-${sizeLabel(size)}`);
    const d = await writeSeededBlob(tmp, size, `sluice-bench:${name}:${tag}/${size}`, MediaType.ociLayerTar);
    await link(tmp, blobPath(dir, d.digest)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    await unlink(tmp);
    layers.set(sizeLabel(size), d);
  }
  const config = await writeJsonBlob(
    dir,
    {
      created: '2025-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: [...layers.values()].map((l) => l.digest) },
    },
    MediaType.ociConfig,
  );
  const manifest = await writeJsonBlob(
    dir,
    { schemaVersion: 2, mediaType: MediaType.ociManifest, config: config.d, layers: [...layers.values()] },
    MediaType.ociManifest,
  );
  return {
    ref: `${BENCH_HOST}/${name}:${tag}`,
    name,
    tag,
    manifest: manifest.d,
    manifestBody: manifest.body,
    config: config.d,
    layers,
  };
}

/** An OCI image layout at `dir` holding the given images; index.json names each by its full reference. */
export async function writeLayout(dir: string, specs: Array<{ name: string; tag: string; sizes: number[] }>): Promise<Layout> {
  await mkLayoutDir(dir);
  const images: BenchImage[] = [];
  for (const s of specs) images.push(await writeImage(dir, s.name, s.tag, s.sizes));
  await writeLayoutIndex(dir, images.map((i) => ({ ref: i.ref, top: i.manifest })));
  return { dir, images };
}

/**
 * The static tree served by nginx and the bare servers, at the registry's own URL paths:
 * `root/v2/<name>/blobs/<digest>` and `root/v2/<name>/manifests/<tag|digest>` (hard links to the layout).
 */
export async function writeStaticTree(root: string, layout: Layout): Promise<void> {
  for (const img of layout.images) {
    const blobs = join(root, 'v2', img.name, 'blobs');
    const manifests = join(root, 'v2', img.name, 'manifests');
    await mkdir(blobs, { recursive: true });
    await mkdir(manifests, { recursive: true });
    for (const d of [img.config, ...img.layers.values()]) await link(blobPath(layout.dir, d.digest), join(blobs, d.digest));
    await link(blobPath(layout.dir, img.manifest.digest), join(manifests, img.manifest.digest));
    await link(blobPath(layout.dir, img.manifest.digest), join(manifests, img.tag));
  }
}
