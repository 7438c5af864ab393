// The one import pipeline every source goes through (OCI layouts as folders or archives, export bundles, Talos
// caches flat or oci): walk an image from its root, take each blob from the source or — only if this repository is
// entitled to it — from the store, verify each blob once per import, then commit the image in one step.
import { checkDescriptor, hasBlob, ImportError, readAtMost, readBlobFile, verifyBlob, withBlob } from './layout-files.js';
import type { LayoutSource } from './layout-source.js';
import type { ProgressPort } from './progress.js';
import { walkGraph, type GraphNode, type ManifestBody } from '../oci/graph.js';
import { isIndexType, manifestMediaType, parseManifest } from '../oci/manifest.js';
import { platformOf, platformWanted } from '../oci/platform.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from '../store/store.js';

const MAX_DEPTH = 4;

/** A tag, or (an export's referrers, a Talos image cached by digest) a digest with no tag. */
export interface ImageRef {
  host: string;
  name: string;
  tag?: string;
  digest?: string;
}

export const refText = (r: ImageRef): string => `${r.host}/${r.name}${r.tag !== undefined ? `:${r.tag}` : `@${r.digest ?? ''}`}`;

export interface ImportedImage {
  ref: string;
  digest: string;
  /** Blobs (manifests included) this import brought, and their bytes. */
  blobs: number;
  bytes: number;
  /** Platforms an index names that a partial source (a Talos cache) does not hold. */
  missing?: string[];
}

/** One import: the store, the blobs already verified and the images already committed, where progress goes. */
export interface ImportRun {
  store: Store;
  /** `digest size` of every blob hashed so far: entries that share blobs hash them once. */
  verified: Set<string>;
  /** Every image imported or refused so far, by reference, digest and platforms: an identical entry is told the same. */
  outcomes: Map<string, ImportedImage | Error>;
  progress?: ProgressPort;
}

export const newRun = (store: Store, progress?: ProgressPort): ImportRun => ({ store, verified: new Set(), outcomes: new Map(), progress });

export interface Collected {
  root: Descriptor;
  /** Manifests in commit order: children before parents; `inLayout` when read from the source (to be written). */
  manifests: Array<{ d: Descriptor; body: Buffer; mediaType: string; inLayout: boolean }>;
  /** Blobs the source holds (manifests included): each is verified, then committed. */
  fromLayout: Descriptor[];
  /** Blobs the source leaves out that the store holds. */
  fromStore: Descriptor[];
  /** Manifests a partial source leaves out (the platforms a Talos cache was not made for). */
  absent: Descriptor[];
}

/** Collects, checks entitlement, verifies and commits one image; `platforms` limits an index (empty: all). */
export async function importImage(run: ImportRun, source: LayoutSource, ref: ImageRef, root: Descriptor, label: string, platforms: string[] = []): Promise<ImportedImage> {
  const key = `${refText(ref)} ${root.digest} ${platforms.join(',')}`;
  const again = run.outcomes.get(key);
  if (again instanceof Error) throw again;
  if (again) return again;
  try {
    const done = await importCollected(run, source, ref, await collect(run.store, source, root, platforms), label);
    run.outcomes.set(key, done);
    return done;
  } catch (e) {
    run.outcomes.set(key, e as Error);
    throw e;
  }
}

/** The rest of importImage for an image already collected (a Talos cache notes what each image reached). */
export async function importCollected(run: ImportRun, source: LayoutSource, ref: ImageRef, image: Collected, label: string): Promise<ImportedImage> {
  await requireEntitled(run.store, source, ref, image);
  await verifyOnce(run, source, image, label);
  await commitImage(run.store, source, ref, image);
  const bytes = image.fromLayout.reduce((n, d) => n + d.size, 0);
  const missing = source.partial ? { missing: image.absent.map(absentLabel) } : {};
  return { ref: refText(ref), digest: image.root.digest, blobs: image.fromLayout.length, bytes, ...missing };
}

/** Walks the image depth-first from `root`, in the source first and the store second; any blob in neither fails it. */
export async function collect(store: Store, source: LayoutSource, root: Descriptor, platforms: string[]): Promise<Collected> {
  const out: Collected = { root, manifests: [], fromLayout: [], fromStore: [], absent: [] };
  const missing: string[] = [];
  const stored = new Set<string>();
  const lookup = async (d: Descriptor): Promise<ManifestBody | undefined> => {
    checkDescriptor(d);
    if (await hasBlob(source, d)) return readManifest(source, d);
    // A partial source leaves platforms out on purpose: another repository's copy in the store is not this one's.
    const m = source.partial ? undefined : await store.getManifest(d.digest);
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
      if (node.kind === 'missing' && source.partial && node.depth > 0) out.absent.push(d);
      else await place(store, source, node, stored, out, missing);
    },
    onLeave: (node) => {
      const d = node.descriptor as Descriptor;
      const m = node.manifest as ManifestBody;
      if (!isIndexType(m.mediaType) && node.doc?.config === undefined) throw new ImportError(`manifest ${d.digest} has no config`);
      out.manifests.push({ d, body: m.body, mediaType: m.mediaType, inLayout: !stored.has(d.digest) });
    },
  });
  if (missing.length > 0) {
    throw new ImportError(`${missing.length} blob(s) of this image are neither in ${source.noun} nor in the store, so nothing of it was imported: ${missing.join(', ')}`);
  }
  return out;
}

async function place(store: Store, source: LayoutSource, node: GraphNode, stored: Set<string>, out: Collected, missing: string[]): Promise<void> {
  const d = node.descriptor as Descriptor;
  if (node.kind === 'missing') missing.push(d.digest);
  else if (node.kind !== 'blob') (stored.has(d.digest) ? out.fromStore : out.fromLayout).push(d);
  else if (await hasBlob(source, d)) out.fromLayout.push(d);
  else if (await store.stat(d.digest)) out.fromStore.push(d);
  else missing.push(d.digest);
}

/** A manifest of the source, read only once its descriptor is sound and checked against it. */
export async function readManifest(source: LayoutSource, d: Descriptor): Promise<ManifestBody> {
  if (d.size > MAX_MANIFEST_BYTES) throw new ImportError(`manifest ${d.digest} is larger than 4 MiB`);
  const body = await readBlobFile(source, d);
  const doc = parseManifest(body);
  const mediaType = doc && manifestMediaType(doc, d.mediaType);
  if (!doc || !mediaType) throw new ImportError(`blob ${d.digest} is not a valid manifest`);
  if (mediaType !== d.mediaType) throw new ImportError(`manifest ${d.digest} says ${mediaType} but its descriptor says ${d.mediaType}`);
  return { mediaType, body, doc };
}

/**
 * A blob or manifest the source leaves out is taken from the store only if this repository already holds it (an
 * earlier import of the same image): no source may claim another repository's bytes by naming their digest.
 */
async function requireEntitled(store: Store, source: LayoutSource, ref: ImageRef, image: Collected): Promise<void> {
  const manifests = new Set(image.manifests.map((m) => m.d.digest));
  const foreign: string[] = [];
  for (const d of image.fromStore) {
    const linked = manifests.has(d.digest)
      ? await store.isManifestLinked(ref.host, ref.name, d.digest)
      : await store.isBlobLinked(ref.host, ref.name, d.digest);
    if (!linked) foreign.push(d.digest);
  }
  if (foreign.length > 0) {
    throw new ImportError(`${foreign.length} blob(s) of this image are not in ${source.noun}, and the store holds them only for other repositories, so nothing of it was imported: ${foreign.join(', ')}`);
  }
}

/** Hashes every blob the source brings, each (digest, size) once per import whatever number of images share it. */
export async function verifyOnce(run: ImportRun, source: LayoutSource, image: Collected, label: string): Promise<void> {
  const p = { unit: 'blobs', done: 0, total: image.fromLayout.length, bytesDone: 0, bytesTotal: image.fromLayout.reduce((n, d) => n + d.size, 0), current: label };
  for (const d of image.fromLayout) {
    const key = `${d.digest} ${d.size}`;
    p.done++;
    p.bytesDone += d.size;
    if (run.verified.has(key)) continue;
    await verifyBlob(source, d);
    run.verified.add(key);
    // Reported for the blobs hashed only: one report is one hash (a test counts them).
    run.progress?.({ ...p });
  }
}

/**
 * The commit step, the only one that writes (everything it commits was verified before). The long copy runs first, outside the store's commit gate (fresh blobs are spared by
 * gcGrace); then, holding it (no gc sweeps meanwhile, store/commit-gate.ts), everything is looked at again on the
 * backend itself — a gc may have ended just before — what went is copied again from the source, and only then is
 * it linked and tagged.
 */
export async function commitImage(store: Store, source: LayoutSource, ref: ImageRef, image: Collected): Promise<void> {
  const manifestDigests = new Set(image.manifests.map((m) => m.d.digest));
  const blobs = image.fromLayout.filter((d) => !manifestDigests.has(d.digest));
  await copyMissing(store, source, blobs, (d) => store.stat(d));
  await store.commits.commit(async () => {
    await copyMissing(store, source, blobs, (d) => store.blobs.stat(d));
    const gone: string[] = [];
    for (const d of image.fromStore) if (!manifestDigests.has(d.digest) && !(await store.blobs.stat(d.digest))) gone.push(d.digest);
    if (gone.length > 0) {
      throw new ImportError(`${gone.length} blob(s) of this image that ${source.noun} leaves out were removed from the store (garbage collection) during the import, so nothing of it was imported; import a full copy of it: ${gone.join(', ')}`);
    }
    await linkAndTag(store, ref, image, manifestDigests);
  });
}

async function copyMissing(store: Store, source: LayoutSource, blobs: Descriptor[], stored: (digest: string) => Promise<unknown>): Promise<void> {
  for (const d of blobs) {
    if (!(await stored(d.digest))) await withBlob(source, d, (fh) => store.ingest(readAtMost(fh, d.size), { digest: d.digest, sizeBytes: d.size }));
  }
}

async function linkAndTag(store: Store, ref: ImageRef, image: Collected, manifestDigests: Set<string>): Promise<void> {
  for (const d of [...image.fromLayout, ...image.fromStore]) {
    // The verified manifests name these bytes for this image: they may be served through its repository.
    if (!manifestDigests.has(d.digest)) await store.linkBlob(ref.host, ref.name, d.digest);
  }
  for (const m of image.manifests) {
    // One taken from the store may have gone with a gc that ended just before: its bytes (read when the walk
    // found it there) are put back, checked against its digest, rather than a tag being set on nothing.
    const write = m.inLayout || !(await store.blobs.stat(m.d.digest)) || !(await store.meta.manifestType(m.d.digest));
    const stored = write ? await store.putManifest(m.body, m.mediaType, m.d.digest) : { digest: m.d.digest, mediaType: m.mediaType, body: m.body };
    await store.linkManifest(ref.host, ref.name, stored);
  }
  if (ref.tag !== undefined) await store.setTag(ref.host, ref.name, ref.tag, image.root.digest);
}

/** How a manifest a Talos cache left out is named: its platform, or (no platform) an attestation or its digest. */
function absentLabel(d: Descriptor): string {
  const p = platformOf(d);
  if (p !== undefined && !p.startsWith('unknown/')) return p;
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' ? `attestation ${d.digest}` : d.digest;
}
