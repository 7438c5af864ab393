// `sluice import`: reads an OCI image layout (a directory or a .tar of one), verifies every blob of every
// image against its descriptor (all platforms of an index), and only then commits the image to the store.
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLayoutTar, TarLayoutError } from './import-tar.js';
import { importCacheTree, importWrappedCache, isFlatCache, wrappedCache } from './talos-cache.js';
import { checkDescriptor, collect, commitImage, ImportError, ImportUsageError, ociBlobFile, openRegular, verifyBlob, type ImageRef, type Layout } from './layout-image.js';
import { isDescriptor, MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import { parseRule } from '../policy/rules.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from '../store/store.js';

export { ImportError, ImportUsageError, type ImageRef } from './layout-image.js';

const REF_NAME = 'org.opencontainers.image.ref.name';

export interface ImportResult {
  /** `missing`: platforms an index names that a Talos cache does not hold (it keeps only the chosen ones). */
  imported: Array<{ ref: string; digest: string; blobs: number; bytes: number; missing?: string[] }>;
  failed: Array<{ ref: string; reason: string }>;
  /** Set when the path was a Talos image cache (`talosctl images cache-create --layout flat|oci`). */
  talosCache?: 'flat' | 'oci';
}

export interface ImportOptions {
  as?: string;
  progress?: (line: string) => void;
}

export async function importPath(store: Store, path: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const as = opts.as === undefined ? undefined : parseAsRef(opts.as);
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new ImportError(`${path}: no such file or directory`);
  if (info.isDirectory() && as === undefined && (await isFlatCache(path))) {
    return { ...(await importCacheTree(store, path, (f) => join(path, f), opts.progress)), talosCache: 'flat' };
  }
  if (info.isDirectory()) return importLayout(store, { dir: path, name: (f) => join(path, f), blobFile: ociBlobFile }, as, opts.progress);
  if (!info.isFile()) throw new ImportError(`${path} is neither a folder nor a regular file: give an OCI image layout or a .tar of one`);
  const dir = await store.scratchDir('import-');
  try {
    const top = await extractLayoutTar(path, dir).catch((e: unknown) => Promise.reject(e instanceof TarLayoutError ? new ImportError(e.message) : e));
    const layout: Layout = { dir: join(dir, top), name: (f: string) => `${top ? `${top}/` : ''}${f} in ${path}`, blobFile: ociBlobFile };
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
  const wrapped = as === undefined ? await wrappedCache(layout, entries) : undefined;
  if (wrapped) return { ...(await importWrappedCache(store, layout, wrapped, progress)), talosCache: 'oci' };
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
