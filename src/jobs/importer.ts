// `sluice import`: reads an OCI image layout (a directory, a .tar or a .tar.zst of one; sluice's export bundles
// included), verifies every blob of every image the layout holds against its descriptor, and only then commits
// the image. A blob the layout leaves out (an incremental bundle) must already be in the store.
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLayoutTar, TarLayoutError } from './import-tar.js';
import { PLATFORMS_ANNOTATION, REF_NAME, RULES_ANNOTATION } from './exporter.js';
import { platformWanted } from './export-plan.js';
import {
  checkDescriptor, hasBlob, ImportError, ImportUsageError, readBlobFile, readIndex, verifyBlob, withBlob, readAtMost, type Layout,
} from './layout-files.js';
import type { ProgressPort } from './progress.js';
import { readReceipt, receiptPathFor } from './receipt.js';
import { ociBlobFile } from './layout-image.js';
import { importCacheTree, importWrappedCache, isFlatCache, wrappedCache, type CacheImportResult } from './talos-cache.js';
import { walkGraph, type GraphNode, type ManifestBody } from '../oci/graph.js';
import { isDescriptor, isIndexType, manifestMediaType, parseManifest, MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import { parseRule } from '../policy/rules.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from '../store/store.js';

export { ImportError, ImportUsageError } from './layout-files.js';

const MAX_DEPTH = 4;

/** A tag, or (an export's referrers) a digest with no tag. */
export interface ImageRef {
  host: string;
  name: string;
  tag?: string;
  digest?: string;
}

export interface ImportResult {
  /** `missing`: platforms an index names that a Talos cache does not hold (it keeps only the chosen ones). */
  imported: Array<{ ref: string; digest: string; blobs: number; bytes: number; missing?: string[] }>;
  failed: Array<{ ref: string; reason: string }>;
  /** The rules a sluice export bundle was made from (index.json annotation); empty for other layouts. */
  bundleRules: string[];
  /** The archive was damaged or does not match its receipt: said once, whatever the images did. */
  warnings: string[];
  /** Set when the path was a Talos image cache (`talosctl images cache-create --layout flat|oci`). */
  talosCache?: 'flat' | 'oci';
}

const fromCache = (r: CacheImportResult, kind: 'flat' | 'oci', warnings: string[] = []): ImportResult => ({ ...r, bundleRules: [], warnings, talosCache: kind });

export interface ImportOptions {
  as?: string;
  progress?: ProgressPort;
}

export const refText = (r: ImageRef): string => `${r.host}/${r.name}${r.tag !== undefined ? `:${r.tag}` : `@${r.digest ?? ''}`}`;

export async function importPath(store: Store, path: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const as = opts.as === undefined ? undefined : parseAsRef(opts.as);
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new ImportError(`${path}: no such file or directory`);
  if (info.isDirectory() && as === undefined && (await isFlatCache(path))) {
    return fromCache(await importCacheTree(store, path, (f) => join(path, f), opts.progress), 'flat');
  }
  if (info.isDirectory()) return importLayout(store, { dir: path, name: (f) => join(path, f) }, as, [], opts.progress);
  if (!info.isFile()) throw new ImportError(`${path} is neither a folder nor a regular file: give an OCI image layout or a .tar of one`);
  const dir = await store.scratchDir('import-');
  try {
    const tar = await extractLayoutTar(path, dir).catch((e: unknown) => Promise.reject(e instanceof TarLayoutError ? new ImportError(e.message) : e));
    const warnings = [...(tar.brokenAfter ? [`${tar.brokenAfter}; only images whose blobs all arrived whole are imported`] : []), ...(await receiptWarnings(path, tar.sha256))];
    const layout: Layout = { dir: join(dir, tar.top), name: (f: string) => `${tar.top ? `${tar.top}/` : ''}${f} in ${path}`, damaged: tar.damaged };
    return await importLayout(store, layout, as, warnings, opts.progress);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A receipt beside the archive that does not match it means the bundle changed in transit (each blob is still verified). */
async function receiptWarnings(path: string, sha256: string): Promise<string[]> {
  const file = receiptPathFor(path);
  if (!(await stat(file).catch(() => undefined))) return [];
  try {
    const r = await readReceipt(file);
    if (r.checksum.of !== 'file' || r.checksum.value === sha256) return [];
    return [`${path} hashes to ${sha256}, but its receipt ${file} says ${r.checksum.value}: the bundle changed after it was written; every blob is verified, and images with a bad or absent blob are refused`];
  } catch (e) {
    return [`${(e as Error).message}; the bundle is imported without it`];
  }
}

export function parseImageRef(text: string): ImageRef {
  const rule = parseRule(text);
  if (rule.nameGlob || (rule.tag ?? '').includes('*')) throw new ImportError(`${text}: an image reference cannot contain globs`);
  if (rule.digest !== undefined) return { host: rule.host, name: rule.name, ...(rule.tag ? { tag: rule.tag } : {}), digest: rule.digest };
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

async function importLayout(store: Store, layout: Layout, as: ImageRef | undefined, warnings: string[], progress?: ProgressPort): Promise<ImportResult> {
  const index = await readIndex(layout);
  const entries = index.entries;
  if (as !== undefined && entries.length !== 1) {
    throw new ImportUsageError(`--as names one image, but ${layout.name('index.json')} holds ${entries.length}`);
  }
  const wrapped = as === undefined ? await wrappedCache({ ...layout, blobFile: ociBlobFile }, entries) : undefined;
  if (wrapped) return fromCache(await importWrappedCache(store, { ...layout, blobFile: ociBlobFile }, wrapped, progress), 'oci', warnings);
  const rules = index.annotations[RULES_ANNOTATION];
  const result: ImportResult = { imported: [], failed: [], bundleRules: rules ? rules.split(',').filter((r) => r !== '') : [], warnings };
  for (const [i, entry] of entries.entries()) {
    const named = as ? refText(as) : isDescriptor(entry) ? entry.annotations?.[REF_NAME] ?? '' : '';
    try {
      const root = imageEntry(layout, entry, i);
      const ref = as ?? entryRef(layout, root, named, i);
      const image = await collect(store, layout, root, platformsOf(root));
      await requireEntitled(store, ref, image);
      const blobs = { unit: 'blobs', done: 0, total: image.fromLayout.length, bytesDone: 0, bytesTotal: image.fromLayout.reduce((n, d) => n + d.size, 0), current: named };
      for (const d of image.fromLayout) {
        await verifyBlob(layout, d);
        blobs.done++;
        blobs.bytesDone += d.size;
        progress?.({ ...blobs });
      }
      await commitImage(store, layout, ref, image);
      const bytes = image.fromLayout.reduce((n, d) => n + d.size, 0);
      result.imported.push({ ref: refText(ref), digest: root.digest, blobs: image.fromLayout.length, bytes });
    } catch (e) {
      result.failed.push({ ref: named || (isDescriptor(entry) ? entry.digest : `entry ${i + 1}`), reason: (e as Error).message });
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

function entryRef(layout: Layout, root: Descriptor, named: string, i: number): ImageRef {
  if (!named.includes('/') && !named.includes(':')) {
    throw new ImportError(`${layout.name('index.json')} entry ${i + 1} (${root.digest}) has no full reference in ${REF_NAME} ("${named}"); use --as REF`);
  }
  const ref = parseImageRef(named);
  if (ref.digest !== undefined && ref.digest !== root.digest) throw new ImportError(`${named} names another digest than its entry (${root.digest})`);
  return ref;
}

/** The platforms a sluice export was limited to: the other platforms of an index may then be absent. */
function platformsOf(root: Descriptor): string[] {
  return (root.annotations?.[PLATFORMS_ANNOTATION] ?? '').split(',').filter((p) => p !== '');
}

interface Manifest {
  d: Descriptor;
  body: Buffer;
  mediaType: string;
  /** Read from the layout (to be written), or already in the store. */
  inLayout: boolean;
}

interface Collected {
  root: Descriptor;
  /** Manifests in commit order: children before parents. */
  manifests: Manifest[];
  /** Blobs the layout holds (manifests included): each is verified, then committed. */
  fromLayout: Descriptor[];
  /** Blobs the layout leaves out that the store holds. */
  fromStore: Descriptor[];
}

/** Walks the image depth-first from `root`, in the layout first and the store second; lists every blob in neither. */
async function collect(store: Store, layout: Layout, root: Descriptor, platforms: string[]): Promise<Collected> {
  const out: Collected = { root, manifests: [], fromLayout: [], fromStore: [] };
  const missing: string[] = [];
  const stored = new Set<string>();
  const lookup = async (d: Descriptor): Promise<ManifestBody | undefined> => {
    checkDescriptor(d);
    if (await hasBlob(layout, d)) return readManifest(layout, d);
    const m = await store.getManifest(d.digest);
    if (m) stored.add(d.digest);
    return m;
  };
  await walkGraph({ manifest: (_digest, d) => d && lookup(d) }, [root], {
    order: 'depth',
    children: 'by-media-type',
    maxDepth: MAX_DEPTH,
    follow: (child) => platformWanted(child, platforms),
    onNode: async (node) => {
      const d = node.descriptor as Descriptor;
      checkDescriptor(d);
      if (node.kind === 'truncated') throw new ImportError(`manifest ${d.digest} nests deeper than ${MAX_DEPTH} levels`);
      await place(store, layout, node, stored, out, missing);
    },
    onLeave: (node) => {
      const d = node.descriptor as Descriptor;
      const m = node.manifest as ManifestBody;
      if (!isIndexType(m.mediaType) && node.doc?.config === undefined) throw new ImportError(`manifest ${d.digest} has no config`);
      out.manifests.push({ d, body: m.body, mediaType: m.mediaType, inLayout: !stored.has(d.digest) });
    },
  });
  if (missing.length > 0) {
    throw new ImportError(`${missing.length} blob(s) of this image are neither in the bundle nor in the store, so nothing of it was imported: ${missing.join(', ')}`);
  }
  return out;
}

async function place(store: Store, layout: Layout, node: GraphNode, stored: Set<string>, out: Collected, missing: string[]): Promise<void> {
  const d = node.descriptor as Descriptor;
  if (node.kind === 'missing') missing.push(d.digest);
  else if (node.kind !== 'blob') (stored.has(d.digest) ? out.fromStore : out.fromLayout).push(d);
  else if (await hasBlob(layout, d)) out.fromLayout.push(d);
  else if (await store.stat(d.digest)) out.fromStore.push(d);
  else missing.push(d.digest);
}

/**
 * A blob or manifest the bundle leaves out is taken from the store only if this repository already holds it (an
 * earlier bundle of the same image): a bundle must not claim another repository's bytes by naming their digest.
 */
async function requireEntitled(store: Store, ref: ImageRef, image: Collected): Promise<void> {
  const manifests = new Set(image.manifests.map((m) => m.d.digest));
  const foreign: string[] = [];
  for (const d of image.fromStore) {
    const linked = manifests.has(d.digest)
      ? await store.isManifestLinked(ref.host, ref.name, d.digest)
      : await store.isBlobLinked(ref.host, ref.name, d.digest);
    if (!linked) foreign.push(d.digest);
  }
  if (foreign.length > 0) {
    throw new ImportError(`${foreign.length} blob(s) of this image are not in the bundle, and the store holds them only for other repositories, so nothing of it was imported: ${foreign.join(', ')}`);
  }
}

/** A manifest of the layout, read only once its descriptor is sound and checked against it. */
async function readManifest(layout: Layout, d: Descriptor): Promise<ManifestBody> {
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
  for (const d of [...image.fromLayout, ...image.fromStore]) {
    if (manifestDigests.has(d.digest)) continue;
    if (!(await store.stat(d.digest))) {
      await withBlob(layout, d, (fh) => store.ingest(readAtMost(fh, d.size), { digest: d.digest, sizeBytes: d.size }));
    }
    // The verified manifests name these bytes for this image: they may be served through its repository.
    await store.linkBlob(ref.host, ref.name, d.digest);
  }
  for (const m of image.manifests) {
    const stored = m.inLayout ? await store.putManifest(m.body, m.mediaType, m.d.digest) : { digest: m.d.digest, mediaType: m.mediaType, body: m.body };
    await store.linkManifest(ref.host, ref.name, stored);
  }
  if (ref.tag !== undefined) await store.setTag(ref.host, ref.name, ref.tag, image.root.digest);
}
