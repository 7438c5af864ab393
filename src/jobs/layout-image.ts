// One image of a layout on disk, read the way `sluice import` trusts it: walked from its root descriptor, every
// descriptor and manifest checked, every blob hashed, and only then committed. Shared by OCI layouts and Talos caches.
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { walkGraph, type ManifestBody } from '../oci/graph.js';
import { isIndexType, manifestMediaType, parseManifest } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from '../store/store.js';

const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
const MAX_DEPTH = 4;

export interface ImageRef {
  host: string;
  name: string;
  /** Absent for an image known by digest only. */
  tag?: string;
}

export class ImportError extends Error {}
/** A problem with what the operator asked for (`--as`), not with the layout: a usage error. */
export class ImportUsageError extends ImportError {}

/**
 * Where a layout sits (`dir`), how to name one of its files to the operator (the tar, never a temp folder), and
 * which file holds a blob: a path relative to `dir`, or undefined when the layout is known not to have it.
 */
export interface Layout {
  dir: string;
  name(file: string): string;
  blobFile(d: Descriptor): string | undefined;
}

/** An OCI image layout's blobs: `blobs/sha256/<hex>`, every one expected. */
export const ociBlobFile = (d: Descriptor): string => `blobs/sha256/${d.digest.slice(7)}`;


export interface Collected {
  root: Descriptor;
  /** Manifests in commit order: children before parents. */
  manifests: Array<{ d: Descriptor; body: Buffer; mediaType: string }>;
  /** Every blob of the image, manifests included. */
  blobs: Descriptor[];
  /** Manifests an index names that the layout does not hold (a Talos cache keeps only the chosen platforms). */
  missing: Descriptor[];
}

/** Walks the layout depth-first from `root`, checking every descriptor and reading and checking every manifest. */
export async function collect(layout: Layout, root: Descriptor): Promise<Collected> {
  const out: Collected = { root, manifests: [], blobs: [], missing: [] };
  const manifest = (d: Descriptor | undefined): Promise<ManifestBody> | undefined => (d && layout.blobFile(d) !== undefined ? readManifest(layout, d) : undefined);
  await walkGraph({ manifest: (_digest, d) => manifest(d) }, [root], {
    order: 'depth',
    children: 'by-media-type',
    maxDepth: MAX_DEPTH,
    onNode: (node) => {
      const d = node.descriptor as Descriptor;
      checkDescriptor(d);
      if (node.kind === 'missing' && node.depth > 0) out.missing.push(d);
      else out.blobs.push(d);
      if (node.kind === 'truncated') throw new ImportError(`manifest ${d.digest} nests deeper than ${MAX_DEPTH} levels`);
    },
    onLeave: (node) => {
      const d = node.descriptor as Descriptor;
      const m = node.manifest as ManifestBody;
      if (!isIndexType(m.mediaType) && node.doc?.config === undefined) throw new ImportError(`manifest ${d.digest} has no config`);
      out.manifests.push({ d, body: m.body, mediaType: m.mediaType });
    },
  });
  return out;
}

/** A manifest of the layout, read only once its descriptor is sound and checked against it. */
async function readManifest(layout: Layout, d: Descriptor): Promise<ManifestBody> {
  checkDescriptor(d);
  if (d.size > MAX_MANIFEST_BYTES) throw new ImportError(`manifest ${d.digest} is larger than 4 MiB`);
  const body = await readBlobFile(layout, d);
  const doc = parseManifest(body);
  const mediaType = doc && manifestMediaType(doc, d.mediaType);
  if (!doc || !mediaType) throw new ImportError(`blob ${d.digest} is not a valid manifest`);
  if (mediaType !== d.mediaType) throw new ImportError(`manifest ${d.digest} says ${mediaType} but its descriptor says ${d.mediaType}`);
  return { mediaType, body, doc };
}

export async function commitImage(store: Store, layout: Layout, ref: ImageRef, image: Collected): Promise<void> {
  const manifestDigests = new Set(image.manifests.map((m) => m.d.digest));
  for (const d of image.blobs) {
    if (manifestDigests.has(d.digest)) continue;
    if (!(await store.stat(d.digest))) {
      await withBlob(layout, d, (fh) => store.ingest(readAtMost(fh, d.size), { digest: d.digest, sizeBytes: d.size }));
    }
    // The layout had these bytes for this image: they may be served through its repository (even if stored before).
    await store.linkBlob(ref.host, ref.name, d.digest);
  }
  for (const m of image.manifests) {
    const stored = await store.putManifest(m.body, m.mediaType, m.d.digest);
    await store.linkManifest(ref.host, ref.name, stored);
  }
  if (ref.tag !== undefined) await store.setTag(ref.host, ref.name, ref.tag, image.root.digest);
}

export async function verifyBlob(layout: Layout, d: Descriptor): Promise<void> {
  const hash = createHash('sha256');
  let size = 0;
  await withBlob(layout, d, async (fh) => {
    try {
      for await (const chunk of readAtMost(fh, d.size)) {
        hash.update(chunk);
        size += chunk.length;
      }
    } catch (e) {
      throw new ImportError(`blob ${d.digest} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  });
  if (size !== d.size) throw new ImportError(`blob ${d.digest} is ${size} bytes, its descriptor says ${d.size}`);
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== d.digest) throw new ImportError(`blob ${d.digest} is corrupt: its content hashes to ${got}`);
}

async function readBlobFile(layout: Layout, d: Descriptor): Promise<Buffer> {
  return withBlob(layout, d, async (fh) => {
    const body = Buffer.alloc(d.size);
    const { bytesRead } = await fh.read(body, 0, d.size, 0);
    if (bytesRead !== d.size) throw new ImportError(`blob ${d.digest} is ${bytesRead} bytes, its descriptor says ${d.size}`);
    return body;
  });
}

/** Runs `use` on the blob's file once it is known to be a regular file of the descriptor's size. */
export async function withBlob<T>(layout: Layout, d: Descriptor, use: (fh: FileHandle) => Promise<T>): Promise<T> {
  const file = layout.blobFile(d);
  if (file === undefined) throw new ImportError(`blob ${d.digest} (${d.mediaType}) is not in ${layout.name('')}`);
  const { fh, size } = await openRegular(join(layout.dir, file), `blob ${d.digest} (${layout.name(file)})`);
  try {
    if (size !== d.size) throw new ImportError(`blob ${d.digest} is ${size} bytes, its descriptor says ${d.size}`);
    return await use(fh);
  } finally {
    await fh.close();
  }
}

/**
 * Opens a layout file only if it is a regular file: a symlink is not followed (it could point at /dev/zero or
 * outside the layout) and a FIFO or device is refused before any read (O_NONBLOCK: opening a FIFO never waits).
 */
export async function openRegular(file: string, what: string, missing = `${what} cannot be read: no such file`): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new ImportError(`${what} is a symbolic link; sluice reads only regular files (copy the file into the layout)`);
    throw new ImportError(code === 'ENOENT' ? missing : `${what} cannot be read: ${code ?? (e as Error).message}`);
  }
  const info = await fh.stat();
  if (!info.isFile()) {
    await fh.close();
    throw new ImportError(`${what} is not a regular file`);
  }
  return { fh, size: info.size };
}

/** The first `size` bytes of the file and no more, whatever it grows to. */
export function readAtMost(fh: FileHandle, size: number): AsyncIterable<Buffer> {
  if (size === 0) return (async function* () {})();
  return fh.createReadStream({ start: 0, end: size - 1, autoClose: false, highWaterMark: 1024 * 1024 });
}

export function checkDescriptor(d: Descriptor): void {
  if (typeof d.digest !== 'string' || !SHA256_RE.test(d.digest)) throw new ImportError(`descriptor has an invalid or non-sha256 digest: ${String(d.digest).slice(0, 80)}`);
  if (!Number.isSafeInteger(d.size) || d.size < 0) throw new ImportError(`descriptor ${d.digest} has an invalid size`);
  if (typeof d.mediaType !== 'string') throw new ImportError(`descriptor ${d.digest} has no mediaType`);
}

