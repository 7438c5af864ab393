// One image of a layout on disk, read the way `sluice import` trusts it: walked from its root descriptor, every
// descriptor and manifest checked, every blob hashed, and only then committed. Shared by OCI layouts and Talos caches.
import { checkDescriptor, ImportError, readAtMost, readBlobFile, withBlob, type Layout } from './layout-files.js';
import { walkGraph, type ManifestBody } from '../oci/graph.js';
import { isIndexType, manifestMediaType, parseManifest } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from '../store/store.js';

const MAX_DEPTH = 4;

export interface ImageRef {
  host: string;
  name: string;
  /** Absent for an image known by digest only. */
  tag?: string;
}

export { checkDescriptor, ImportError, ImportUsageError, openRegular, verifyBlob, withBlob, type Layout } from './layout-files.js';


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
  const manifest = (d: Descriptor | undefined): Promise<ManifestBody> | undefined => (d && (layout.blobFile ? layout.blobFile(d) : ociBlobFile(d)) !== undefined ? readManifest(layout, d) : undefined);
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

/**
 * Copies what the store lacks, then, holding the store's commit gate (no gc sweeps meanwhile), looks again on the
 * backend itself (a gc may have ended just before), copies again what went, and only then links and tags.
 */
export async function commitImage(store: Store, layout: Layout, ref: ImageRef, image: Collected): Promise<void> {
  const manifestDigests = new Set(image.manifests.map((m) => m.d.digest));
  const blobs = image.blobs.filter((d) => !manifestDigests.has(d.digest));
  const copyMissing = async (stored: (digest: string) => Promise<unknown>): Promise<void> => {
    for (const d of blobs) {
      if (!(await stored(d.digest))) await withBlob(layout, d, (fh) => store.ingest(readAtMost(fh, d.size), { digest: d.digest, sizeBytes: d.size }));
    }
  };
  await copyMissing((d) => store.stat(d));
  await store.commits.commit(async () => {
    await copyMissing((d) => store.blobs.stat(d));
    // The layout had these bytes for this image: they may be served through its repository (even if stored before).
    for (const d of blobs) await store.linkBlob(ref.host, ref.name, d.digest);
    for (const m of image.manifests) {
      const stored = await store.putManifest(m.body, m.mediaType, m.d.digest);
      await store.linkManifest(ref.host, ref.name, stored);
    }
    if (ref.tag !== undefined) await store.setTag(ref.host, ref.name, ref.tag, image.root.digest);
  });
}
