// Writing a Talos image cache from the store: the flat tree `talosctl images cache-create --layout flat` writes, or
// (`--layout oci`) one unnamed OCI image whose single layer is a gzip tar of that tree, the form the imager takes.
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { MediaType } from '../oci/manifest.js';
import type { Store } from '../store/store.js';
import { openFolder, type BundleChecksum, type FolderSink } from './bundle-sink.js';
import { ProgressCounter, verified, type ExportProgress } from './export-blobs.js';
import type { CacheFile, CachePlan } from './talos-cache-plan.js';

export const TALOS_CACHE_FORMATS = ['talos-cache-flat', 'talos-cache-oci'] as const;
export type TalosCacheFormat = (typeof TALOS_CACHE_FORMATS)[number];
export const isTalosCacheFormat = (format: string): format is TalosCacheFormat => (TALOS_CACHE_FORMATS as readonly string[]).includes(format);

// The wrapping image as cache.go's Generate builds it with go-containerregistry: mutate.MediaType(OCIManifestSchema1),
// ConfigMediaType(OCIConfigJSON), CreatedAt(now), AppendLayers(filemap.Layer: OCILayer, gzip BestSpeed), then
// layout.Write + AppendImage(WithPlatform(first --platform, linux/amd64 for all)).
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
/** layout.Write's `oci-layout`, byte for byte. */
const OCI_LAYOUT_FILE = '{\n    "imageLayoutVersion": "1.0.0"\n}';
/** What a zero v1.History (mutate.AppendLayers adds one per layer) marshals to. */
const ZERO_TIME = '0001-01-01T00:00:00Z';
const EPOCH = new Date(0);

export interface CacheWriteOptions {
  out: string;
  format: TalosCacheFormat;
  platforms: readonly string[];
  progress?: (p: ExportProgress) => void;
  /** The wrapping image's `created` (cache-create: the time it ran). */
  createdAt?: Date;
}

/** Writes the planned tree under a temporary name beside `out`, renamed into place only when complete. */
export async function writeTalosCache(store: Store, plan: CachePlan, opts: CacheWriteOptions): Promise<BundleChecksum> {
  const sink = await openFolder(opts.out);
  const counter = new ProgressCounter(plan.files, opts.progress);
  try {
    if (opts.format === 'talos-cache-flat') await writeTree(store, sink, plan, counter);
    else await writeWrapped(store, sink, plan, opts, counter);
    return await sink.finish();
  } catch (e) {
    await sink.abort();
    throw e;
  }
}

async function writeTree(store: Store, sink: FolderSink, plan: CachePlan, counter: ProgressCounter): Promise<void> {
  for (const dir of plan.dirs) await sink.addDirectory(dir);
  for (const f of plan.files) {
    await sink.add(f.path, f.sizeBytes, verified(store, f, counter.bytes));
    counter.blobDone();
  }
}

async function writeWrapped(store: Store, sink: FolderSink, plan: CachePlan, opts: CacheWriteOptions, counter: ProgressCounter): Promise<void> {
  const layer = await writeLayer(store, sink, plan, counter);
  const config = Buffer.from(JSON.stringify({
    architecture: '',
    created: (opts.createdAt ?? new Date()).toISOString(),
    history: [{ created: ZERO_TIME }],
    os: '',
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    config: {},
  }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: OCI_CONFIG, size: config.length, digest: sha256(config) },
    layers: [{ mediaType: OCI_LAYER_GZIP, size: layer.sizeBytes, digest: layer.digest }],
  }));
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [{ mediaType: MediaType.ociManifest, size: manifest.length, digest: sha256(manifest), platform: outerPlatform(opts.platforms) }],
  };
  await addBuffer(sink, `blobs/sha256/${sha256(config).slice(7)}`, config);
  await addBuffer(sink, `blobs/sha256/${sha256(manifest).slice(7)}`, manifest);
  await addBuffer(sink, 'index.json', Buffer.from(JSON.stringify(index, null, 3)));
  await addBuffer(sink, 'oci-layout', Buffer.from(OCI_LAYOUT_FILE));
}

/** The imager picks the index entry whose platform is linux/<its arch> (profile ContainerAsset.pullFromOCI). */
function outerPlatform(platforms: readonly string[]): { architecture: string; os: string; variant?: string } {
  const [os = 'linux', architecture = 'amd64', variant] = (platforms[0] ?? 'linux/amd64').split('/');
  return { architecture, os, ...(variant ? { variant } : {}) };
}

/** The tree as filemap.Walk and filemap.Layer list it: every folder and file, sorted by path. */
export function layerEntries(plan: Pick<CachePlan, 'dirs' | 'files'>): Array<{ path: string; file?: CacheFile }> {
  const dirs = new Set<string>();
  const withParents = (path: string, self: boolean): void => {
    for (let i = path.indexOf('/'); i > 0; i = path.indexOf('/', i + 1)) dirs.add(path.slice(0, i));
    if (self) dirs.add(path);
  };
  for (const d of plan.dirs) withParents(d, true);
  for (const f of plan.files) withParents(f.path, false);
  const entries: Array<{ path: string; file?: CacheFile }> = [...[...dirs].map((path) => ({ path })), ...plan.files.map((file) => ({ path: file.path, file }))];
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * Streams the tar of the tree through gzip into `blobs/sha256/<hex>`, hashing the tar (the config's diff_id) and
 * the gzip (the layer's digest) on the way. A failure on either side (a rotted blob, a full disk) ends both.
 */
async function writeLayer(store: Store, sink: FolderSink, plan: CachePlan, counter: ProgressCounter): Promise<{ digest: string; sizeBytes: number; diffId: string }> {
  const pack = tarPack();
  const diff = createHash('sha256');
  const gzip = createGzip({ level: 1 });
  const tee = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      diff.update(chunk);
      cb(null, chunk);
    },
  });
  const compressed = pipeline(pack as unknown as NodeJS.ReadableStream, tee, gzip);
  const written = sink.addNamedByHash(gzip, (hex) => `blobs/sha256/${hex}`);
  const failure = new Promise<never>((_resolve, reject) => {
    compressed.catch(reject);
    written.catch(reject);
  });
  failure.catch(() => undefined);
  const produce = async (): Promise<void> => {
    for (const e of layerEntries(plan)) {
      const header = { name: e.path, mtime: EPOCH, uid: 0, gid: 0 };
      if (!e.file) {
        pack.entry({ ...header, type: 'directory', mode: 0o755 });
        continue;
      }
      const entry = pack.entry({ ...header, type: 'file', mode: 0o644, size: e.file.sizeBytes }) as unknown as Writable;
      await Promise.race([pipeline(verified(store, e.file, counter.bytes), entry), failure]);
      counter.blobDone();
    }
    pack.finalize();
  };
  try {
    await Promise.race([produce(), failure]);
    const [, layer] = await Promise.all([compressed, written]);
    return { ...layer, diffId: `sha256:${diff.digest('hex')}` };
  } catch (e) {
    pack.destroy(e as Error);
    await Promise.allSettled([compressed, written]);
    throw e;
  }
}

function addBuffer(sink: FolderSink, path: string, body: Buffer): Promise<void> {
  return sink.add(path, body.length, [body]);
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
