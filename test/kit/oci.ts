// The OCI vocabulary tests and the bench write content in, kept apart from src/ on purpose: content
// generated with sluice's own constants would not catch a wrong constant. Plus seeded bytes, digests, and
// the blobs/index of an OCI image layout.
import { createCipheriv, createHash, type Cipher } from 'node:crypto';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  /** Uncompressed: the bench's layers, so their bytes are the seeded bytes themselves. */
  ociLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** Every manifest type, as containerd sends it in Accept. */
export const ACCEPT_MANIFESTS = [
  MediaType.dockerManifest,
  MediaType.dockerList,
  MediaType.ociManifest,
  MediaType.ociIndex,
].join(', ');

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export const sha256 = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
export const hexOf = (digest: string): string => digest.replace(/^sha256:/, '');
/** Where a layout keeps a blob: `blobs/sha256/<hex>`. */
export const blobPath = (layoutDir: string, digest: string): string => join(layoutDir, 'blobs', 'sha256', hexOf(digest));

/** AES-128-CTR keyed by sha256(key): over zeros, reproducible pseudo-random bytes that do not compress. */
function seededCipher(key: string): Cipher {
  const k = createHash('sha256').update(key).digest();
  return createCipheriv('aes-128-ctr', k.subarray(0, 16), k.subarray(16, 32));
}

/** `n` seeded bytes in memory. */
export function seededBytes(n: number, key: string): Buffer {
  const c = seededCipher(key);
  return Buffer.concat([c.update(Buffer.alloc(n)), c.final()]);
}

/** `size` seeded bytes written to `file` 4 MiB at a time (for blobs too large to hold); returns their descriptor. */
export async function writeSeededBlob(file: string, size: number, key: string, mediaType: string): Promise<Descriptor> {
  const cipher = seededCipher(key);
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

/** Writes `body` as a blob of the layout at `dir`. */
export async function writeBlob(dir: string, body: Buffer, mediaType: string): Promise<Descriptor> {
  const d: Descriptor = { mediaType, digest: sha256(body), size: body.length };
  await writeFile(blobPath(dir, d.digest), body);
  return d;
}

export const writeJsonBlob = (dir: string, doc: object, mediaType: string): Promise<Descriptor> =>
  writeBlob(dir, Buffer.from(JSON.stringify(doc)), mediaType);

export const mkLayoutDir = (dir: string): Promise<string | undefined> => mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });

/** oci-layout and index.json; each entry names its image by the full reference. */
export async function writeLayoutIndex(dir: string, tops: Array<{ ref: string; top: Descriptor }>): Promise<void> {
  const manifests = tops.map(({ ref, top }) => ({ mediaType: top.mediaType, digest: top.digest, size: top.size, annotations: { [REF_NAME_ANNOTATION]: ref } }));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }));
}
