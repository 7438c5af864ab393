// Talos image caches (`talosctl images cache-create`, siderolabs/talos pkg/imager/cache/cache.go) as sources of the
// import pipeline: each repository of the flat tree (talos-cache-scan.ts) is a partial LayoutSource (only the
// chosen platforms present); the OCI form is one wrapping image whose single layer is that tree, unpacked first.
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { collect, importCollected, verifyOnce, type Collected, type ImageRef, type ImportedImage, type ImportRun } from './import-pipeline.js';
import { fileOf, ImportError, openRegular, refuseLinkedFolders } from './layout-files.js';
import type { LayoutSource } from './layout-source.js';
import { CacheTarError, unpackCacheLayer } from './talos-cache-tar.js';
import { BLOB_DIR, blobFile, digestFileName } from './talos-cache-paths.js';
import { digestsOf, entries, scanCache, type CacheRepository, type Tree } from './talos-cache-scan.js';
import { unpackRoom } from './unpack-bounds.js';
import { isDescriptor, manifestMediaType, MANIFEST_MEDIA_TYPES, MediaType, parseManifest } from '../oci/manifest.js';
import { isValidHost, isValidName, isValidTag } from '../oci/reference.js';
import { MAX_MANIFEST_BYTES, type Descriptor } from '../store/store.js';

export { isFlatCache, scanCache, type CacheRepository } from './talos-cache-scan.js';
export { registryOfDir } from './talos-cache-paths.js';

export interface CacheImportResult {
  /** `missing` on each: platforms (or attestations) the index names that the cache does not hold. */
  imported: ImportedImage[];
  failed: Array<{ ref: string; reason: string }>;
}

/** Imports every image of the flat tree `tree` (its `dir` and `name`); a tree with no image at all is an error. */
export async function importCacheTree(run: ImportRun, tree: Pick<LayoutSource, 'dir' | 'name'>): Promise<CacheImportResult> {
  const at: Tree = { root: tree.dir, name: tree.name };
  const repos = await scanCache(at);
  if (repos.length === 0) throw new ImportError(`${tree.name('manifests/')} holds no repository (no …/reference/ or …/digest/ folder): not a Talos image cache`);
  const blobs = new Set((await entries(at, BLOB_DIR)).flatMap((e) => digestsOf(e)));
  const result: CacheImportResult = { imported: [], failed: [] };
  for (const repo of repos) await new RepositoryImport(run, repo, { ...at, blobs }, result).run();
  // A tree of empty folders imported nothing and failed nothing: say so rather than succeed in silence.
  if (result.imported.length + result.failed.length === 0) throw new ImportError(`${tree.name('manifests/')} holds no image (no tag or digest file under its repositories): nothing to import`);
  return result;
}

/** One repository of the tree, a partial source: its tags first, then what only its digest/ folder holds. */
class RepositoryImport {
  private readonly base: string;
  /** Top manifests by digest → their reference file, the source when digest/ lacks the copy Talos writes. */
  private readonly tagged = new Map<string, string>();
  /** Every digest an imported image reached: a digest file among them is no image of its own. */
  private readonly reached = new Set<string>();
  private readonly source: LayoutSource;

  constructor(
    private readonly importRun: ImportRun,
    private readonly repo: CacheRepository,
    private readonly tree: Tree & { blobs: Set<string> },
    private readonly result: CacheImportResult,
  ) {
    this.base = `${repo.host}/${repo.name}`;
    this.source = { dir: tree.root, name: tree.name, noun: 'the Talos cache', partial: true, blobFile: (d) => this.fileOf(d) };
  }

  private fileOf(d: Descriptor): string | undefined {
    if (MANIFEST_MEDIA_TYPES.includes(d.mediaType)) return this.repo.digests.has(d.digest) ? `${this.repo.path}/digest/${digestFileName(d.digest)}` : this.tagged.get(d.digest);
    return this.tree.blobs.has(d.digest) ? blobFile(d.digest) : undefined;
  }

  async run(): Promise<void> {
    const { host, name } = this.repo;
    for (const tag of this.repo.tags) {
      const file = `${this.repo.path}/reference/${tag}`;
      const top = await this.root(file, `${this.base}:${tag}`, isValidTag(tag) ? undefined : `"${tag}" is not a valid tag`);
      if (!top) continue;
      this.tagged.set(top.digest, file);
      await this.importOne({ host, name, tag }, top);
    }
    // Images cached by digest alone (`repo@sha256:…` in the list): digest files no tag reached.
    for (const digest of this.repo.digests) {
      if (this.reached.has(digest)) continue;
      const top = await this.root(`${this.repo.path}/digest/${digestFileName(digest)}`, `${this.base}@${digest}`);
      if (top) await this.importOne({ host, name, digest }, top);
    }
  }

  /** The root descriptor of a manifest file, or undefined with the reason recorded as a failure. */
  private async root(file: string, label: string, invalid?: string): Promise<Descriptor | undefined> {
    const top = invalid ? new ImportError(invalid) : await readRoot(this.tree, file).catch((e: unknown) => e as Error);
    if (!(top instanceof Error)) return top;
    this.result.failed.push({ ref: label, reason: top.message });
    return undefined;
  }

  private async importOne(ref: ImageRef, top: Descriptor): Promise<void> {
    const label = ref.tag !== undefined ? `${this.base}:${ref.tag}` : `${this.base}@${top.digest}`;
    try {
      if (!isValidName(this.repo.name) || !isValidHost(this.repo.host)) throw new ImportError(`${this.tree.name(this.repo.path)} is not a valid registry and repository name`);
      const image = await collect(this.importRun.store, this.source, top, []);
      for (const d of [...image.fromLayout, ...image.fromStore]) this.reached.add(d.digest);
      this.result.imported.push(await importCollected(this.importRun, this.source, ref, image, label));
    } catch (e) {
      this.result.failed.push({ ref: label, reason: (e as Error).message });
    }
  }
}

/** The root descriptor of a manifest file: its digest is the hash of its bytes, its media type what it declares or implies. */
async function readRoot(tree: Tree, file: string): Promise<Descriptor> {
  const name = tree.name;
  await refuseLinkedFolders(tree.root, file, name);
  const { fh, size } = await openRegular(join(tree.root, file), name(file));
  try {
    if (size > MAX_MANIFEST_BYTES) throw new ImportError(`${name(file)} is larger than 4 MiB: not a manifest`);
    const body = await fh.readFile();
    const doc = parseManifest(body);
    const mediaType = doc && manifestMediaType(doc);
    if (!mediaType) throw new ImportError(`${name(file)} is not an image manifest or index`);
    return { mediaType, digest: `sha256:${createHash('sha256').update(body).digest('hex')}`, size: body.length };
  } finally {
    await fh.close();
  }
}

/**
 * The OCI form: `index.json` holds one image manifest with no `org.opencontainers.image.ref.name` (cache.go appends
 * it with only a platform) and that manifest has one layer, the tree. Anything else is an ordinary layout.
 */
export async function wrappedCache(store: ImportRun['store'], source: LayoutSource, index: unknown[]): Promise<Collected | undefined> {
  const [entry] = index;
  if (index.length !== 1 || !isDescriptor(entry) || entry.annotations?.['org.opencontainers.image.ref.name'] !== undefined) return undefined;
  if (entry.mediaType !== MediaType.ociManifest && entry.mediaType !== MediaType.dockerManifest) return undefined;
  // A layout that cannot even be walked is not taken for a cache: the ordinary import names its problem.
  const image = await collect(store, source, entry, []).catch(() => undefined);
  if (!image) return undefined;
  const layers = image.manifests[0]?.body ? parseManifest(image.manifests[0].body)?.layers : undefined;
  return layers?.length === 1 ? image : undefined;
}

/** Verifies the wrapping image (manifest, config, the layer), unpacks the layer safely and imports the tree in it. */
export async function importWrappedCache(run: ImportRun, source: LayoutSource, image: Collected): Promise<CacheImportResult> {
  await verifyOnce(run, source, image, 'the Talos cache image');
  const layer = parseManifest(image.manifests[0]?.body ?? Buffer.alloc(0))?.layers?.[0];
  const file = layer && fileOf(source, layer);
  if (!layer || file === undefined) throw new ImportError(`${source.name('index.json')}: the cache image has no layer`);
  const where = `the Talos cache layer ${source.name(file)}`;
  const dir = await run.store.scratchDir('talos-cache-');
  try {
    run.progress?.({ unit: 'blobs', done: 0, bytesDone: 0, current: `unpacking ${where}` });
    await unpackCacheLayer(join(source.dir, file), where, dir, await unpackRoom(run.store, dir)).catch((e: unknown) => {
      const hint = '; a single-image layout without a name is imported with --as REF';
      throw e instanceof CacheTarError ? new ImportError(`${e.message}${e.message.includes('not part of') ? hint : ''}`) : e;
    });
    return await importCacheTree(run, { dir, name: (f) => `${f} in ${where}` });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
