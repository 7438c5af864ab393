// The bench's own content: seeded pseudo-random blobs (1 KiB … 256 MiB) and the OCI manifests that reference
// them, written as OCI image layouts, plus the static tree nginx and the bare servers serve at /v2/ paths.
import { createCipheriv, createHash } from 'node:crypto';
import { link, mkdir, open, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
} as const;

/** Every manifest type, as containerd sends it; the bench sends this Accept to every target. */
export const ACCEPT_MANIFESTS = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  MediaType.ociManifest,
  MediaType.ociIndex,
].join(', ');

export const REF_NAME = 'org.opencontainers.image.ref.name';
/** The registry host sluice knows the bench content under (its defaultUpstream, so paths match every target). */
export const BENCH_HOST = 'bench.local';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

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

export const blobFile = (layoutDir: string, digest: string): string => join(layoutDir, 'blobs', 'sha256', digest.slice(7));

/**
 * Writes `size` reproducible pseudo-random bytes (AES-128-CTR over zeros, keyed by `seed`) to `file`,
 * 4 MiB at a time, and returns their descriptor.
 */
export async function writeSeededBlob(file: string, size: number, seed: string, mediaType: string): Promise<Descriptor> {
  const key = createHash('sha256').update(`sluice-bench:${seed}`).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  const hash = createHash('sha256');
  const fh = await open(file, 'w');
  try {
    const zeros = Buffer.alloc(4 * MiB);
    for (let left = size; left > 0; ) {
      const n = Math.min(left, zeros.length);
      const chunk = cipher.update(zeros.subarray(0, n));
      hash.update(chunk);
      await fh.write(chunk, 0, chunk.length);
      left -= n;
    }
  } finally {
    await fh.close();
  }
  return { mediaType, digest: `sha256:${hash.digest('hex')}`, size };
}

async function writeJsonBlob(dir: string, doc: object, mediaType: string): Promise<{ d: Descriptor; body: Buffer }> {
  const body = Buffer.from(JSON.stringify(doc));
  const d = { mediaType, digest: `sha256:${createHash('sha256').update(body).digest('hex')}`, size: body.length };
  await writeFile(blobFile(dir, d.digest), body);
  return { d, body };
}

/** One OCI image: a config and one uncompressed-tar layer per size. */
async function writeImage(dir: string, name: string, tag: string, sizes: number[]): Promise<BenchImage> {
  const layers = new Map<string, Descriptor>();
  for (const size of sizes) {
    const tmp = join(dir, 'blobs', 'sha256', `tmp-${sizeLabel(size)}`);
    const d = await writeSeededBlob(tmp, size, `${name}:${tag}/${size}`, MediaType.ociLayer);
    await link(tmp, blobFile(dir, d.digest)).catch((e: NodeJS.ErrnoException) => {
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
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const images: BenchImage[] = [];
  for (const s of specs) images.push(await writeImage(dir, s.name, s.tag, s.sizes));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const manifests = images.map((i) => ({ ...i.manifest, annotations: { [REF_NAME]: i.ref } }));
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }));
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
    for (const d of [img.config, ...img.layers.values()]) await link(blobFile(layout.dir, d.digest), join(blobs, d.digest));
    await link(blobFile(layout.dir, img.manifest.digest), join(manifests, img.manifest.digest));
    await link(blobFile(layout.dir, img.manifest.digest), join(manifests, img.tag));
  }
}
