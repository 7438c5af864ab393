// `sluice import`: reads an OCI image layout (a directory or a .tar of one), verifies every blob of every
// image against its descriptor (all platforms of an index), and only then commits the image to the store.
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLayoutTar, TarLayoutError } from './import-tar.js';
import { walkGraph, type ManifestBody } from '../oci/graph.js';
import { isDescriptor, isIndexType, manifestMediaType, parseManifest, MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import { parseRule } from '../policy/rules.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from '../store/store.js';

const REF_NAME = 'org.opencontainers.image.ref.name';
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
const MAX_DEPTH = 4;

export interface ImageRef {
  host: string;
  name: string;
  tag: string;
}

export interface ImportResult {
  imported: Array<{ ref: string; digest: string; blobs: number; bytes: number }>;
  failed: Array<{ ref: string; reason: string }>;
}

export interface ImportOptions {
  as?: string;
  progress?: (line: string) => void;
}

export class ImportError extends Error {}
/** A problem with what the operator asked for (`--as`), not with the layout: a usage error. */
export class ImportUsageError extends ImportError {}

/** Where a layout sits (`dir`) and how to name one of its files to the operator (the tar, never a temp folder). */
interface Layout {
  dir: string;
  name(file: string): string;
}

export async function importPath(store: Store, path: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const as = opts.as === undefined ? undefined : parseAsRef(opts.as);
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new ImportError(`${path}: no such file or directory`);
  if (info.isDirectory()) return importLayout(store, { dir: path, name: (f) => join(path, f) }, as, opts.progress);
  if (!info.isFile()) throw new ImportError(`${path} is neither a folder nor a regular file: give an OCI image layout or a .tar of one`);
  const dir = await store.scratchDir('import-');
  try {
    const top = await extractLayoutTar(path, dir).catch((e: unknown) => Promise.reject(e instanceof TarLayoutError ? new ImportError(e.message) : e));
    const layout = { dir: join(dir, top), name: (f: string) => `${top ? `${top}/` : ''}${f} in ${path}` };
    return await importLayout(store, layout, as, opts.progress);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function parseImageRef(text: string): ImageRef {
  const rule = parseRule(text);
  if (rule.nameGlob || (rule.tag ?? '').includes('*')) throw new ImportError(`${text}: an image reference cannot contain globs`);
  if (!rule.tag) throw new ImportError(`${text}: the reference needs a tag (e.g. ${text}:v1)`);
  return { host: rule.host, name: rule.name, tag: rule.tag };
}

/** `--as REF`, checked before anything is read: a bare word (`v1`) is a tag or a name, never a reference. */
export function parseAsRef(text: string): ImageRef {
  if (!text.includes('/') && !text.includes(':')) {
    throw new ImportUsageError(`--as "${text}" is not an image reference: give NAME:TAG with its registry, e.g. ghcr.io/org/name:${text}`);
  }
  try {
    return parseImageRef(text);
  } catch (e) {
    throw new ImportUsageError(`--as ${(e as Error).message}`);
  }
}

async function importLayout(store: Store, layout: Layout, as: ImageRef | undefined, progress?: (line: string) => void): Promise<ImportResult> {
  const entries = await readIndex(layout);
  if (as !== undefined && entries.length !== 1) {
    throw new ImportUsageError(`--as names one image, but ${layout.name('index.json')} holds ${entries.length}`);
  }
  const result: ImportResult = { imported: [], failed: [] };
  for (const [i, entry] of entries.entries()) {
    const refText = as ? `${as.host}/${as.name}:${as.tag}` : isDescriptor(entry) ? entry.annotations?.[REF_NAME] ?? '' : '';
    try {
      const root = imageEntry(layout, entry, i);
      const ref = as ?? entryRef(layout, root, refText, i);
      const image = await collect(layout, root);
      let done = 0;
      for (const d of image.blobs) {
        await verifyBlob(layout, d);
        progress?.(`verifying ${refText}: ${++done}/${image.blobs.length} blobs`);
      }
      await commitImage(store, layout, ref, image);
      const bytes = image.blobs.reduce((n, d) => n + d.size, 0);
      result.imported.push({ ref: `${ref.host}/${ref.name}:${ref.tag}`, digest: root.digest, blobs: image.blobs.length, bytes });
      progress?.(`imported ${refText} ${root.digest}`);
    } catch (e) {
      result.failed.push({ ref: refText || (isDescriptor(entry) ? entry.digest : `entry ${i + 1}`), reason: (e as Error).message });
    }
  }
  return result;
}

/** An index.json entry is an image only if it is a descriptor of a manifest or an index. */
function imageEntry(layout: Layout, entry: unknown, i: number): Descriptor {
  const where = `${layout.name('index.json')} entry ${i + 1}`;
  if (!isDescriptor(entry)) throw new ImportError(`${where} is not a descriptor (an object with mediaType, digest and size)`);
  if (!MANIFEST_MEDIA_TYPES.includes(entry.mediaType)) {
    throw new ImportError(`${where} has mediaType ${entry.mediaType}, which is not an image manifest or index: nothing to import`);
  }
  return entry;
}

function entryRef(layout: Layout, root: Descriptor, refText: string, i: number): ImageRef {
  if (!refText.includes('/') && !refText.includes(':')) {
    throw new ImportError(`${layout.name('index.json')} entry ${i + 1} (${root.digest}) has no full reference in ${REF_NAME} ("${refText}"); use --as REF`);
  }
  return parseImageRef(refText);
}

interface Collected {
  root: Descriptor;
  /** Manifests in commit order: children before parents. */
  manifests: Array<{ d: Descriptor; body: Buffer; mediaType: string }>;
  /** Every blob of the image, manifests included. */
  blobs: Descriptor[];
}

/** Walks the layout depth-first from `root`, checking every descriptor and reading and checking every manifest. */
async function collect(layout: Layout, root: Descriptor): Promise<Collected> {
  const out: Collected = { root, manifests: [], blobs: [] };
  await walkGraph({ manifest: (_digest, d) => d && readManifest(layout, d) }, [root], {
    order: 'depth',
    children: 'by-media-type',
    maxDepth: MAX_DEPTH,
    onNode: (node) => {
      const d = node.descriptor as Descriptor;
      checkDescriptor(d);
      out.blobs.push(d);
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

async function commitImage(store: Store, layout: Layout, ref: ImageRef, image: Collected): Promise<void> {
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
  await store.setTag(ref.host, ref.name, ref.tag, image.root.digest);
}

async function verifyBlob(layout: Layout, d: Descriptor): Promise<void> {
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
async function withBlob<T>(layout: Layout, d: Descriptor, use: (fh: FileHandle) => Promise<T>): Promise<T> {
  const { fh, size } = await openRegular(join(layout.dir, 'blobs', 'sha256', d.digest.slice(7)), `blob ${d.digest} (${layout.name(`blobs/sha256/${d.digest.slice(7)}`)})`);
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
async function openRegular(file: string, what: string, missing = `${what} cannot be read: no such file`): Promise<{ fh: FileHandle; size: number }> {
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
function readAtMost(fh: FileHandle, size: number): AsyncIterable<Buffer> {
  if (size === 0) return (async function* () {})();
  return fh.createReadStream({ start: 0, end: size - 1, autoClose: false, highWaterMark: 1024 * 1024 });
}

function checkDescriptor(d: Descriptor): void {
  if (typeof d.digest !== 'string' || !SHA256_RE.test(d.digest)) throw new ImportError(`descriptor has an invalid or non-sha256 digest: ${String(d.digest).slice(0, 80)}`);
  if (!Number.isSafeInteger(d.size) || d.size < 0) throw new ImportError(`descriptor ${d.digest} has an invalid size`);
  if (typeof d.mediaType !== 'string') throw new ImportError(`descriptor ${d.digest} has no mediaType`);
}

/** The entries of index.json (each still to be checked), or an ImportError naming the file and what is wrong. */
async function readIndex(layout: Layout): Promise<unknown[]> {
  const file = layout.name('index.json');
  const { fh, size } = await openRegular(join(layout.dir, 'index.json'), file, `${file} is missing: not an OCI image layout`);
  let doc: unknown;
  try {
    if (size > MAX_MANIFEST_BYTES) throw new ImportError(`${file} is larger than 4 MiB`);
    doc = JSON.parse((await fh.readFile()).toString('utf8'));
  } catch (e) {
    throw e instanceof ImportError ? e : new ImportError(`${file} is not valid JSON: ${(e as Error).message}`);
  } finally {
    await fh.close();
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new ImportError(`${file} is not an image index: it holds ${doc === null ? 'null' : Array.isArray(doc) ? 'a list' : typeof doc}, not an object with a manifests list`);
  }
  const manifests = (doc as { manifests?: unknown }).manifests;
  if (!Array.isArray(manifests)) throw new ImportError(`${file} has no manifests list: not an image index`);
  if (manifests.length === 0) throw new ImportError(`${file} lists no images (its manifests list is empty): nothing to import`);
  return manifests;
}
