// Talos image caches (`talosctl images cache-create`, siderolabs/talos pkg/imager/cache/cache.go): the flat tree
// `blob/sha256-<hex>`, `manifests/<registry>/<repo>/reference/<tag>` and `…/digest/sha256-<hex>` (a registry's
// `host:port` written `host_port_`), imported image by image with only the chosen platforms present.
import { createHash } from 'node:crypto';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { collect, commitImage, ImportError, ociBlobFile, openRegular, verifyBlob, type Collected, type ImageRef, type Layout } from './layout-image.js';
import { CacheTarError, unpackCacheLayer } from './talos-cache-tar.js';
import { blobFile, BLOB_DIR, digestFileName, digestOfFileName, MANIFESTS_DIR, registryOfDir } from './talos-cache-paths.js';
import { isDescriptor, manifestMediaType, MANIFEST_MEDIA_TYPES, MediaType, parseManifest } from '../oci/manifest.js';
import { isValidHost, isValidName, isValidTag } from '../oci/reference.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from '../store/store.js';
import type { ProgressPort } from './progress.js';

export interface CacheRepository {
  host: string;
  name: string;
  /** `manifests/<registry dir>/<repo>` relative to the tree. */
  path: string;
  tags: string[];
  /** Digests of the files under `digest/`. */
  digests: Set<string>;
}

export interface CacheImage {
  ref: string;
  digest: string;
  blobs: number;
  bytes: number;
  /** Platforms (or attestations) the index names that the cache does not hold. */
  missing: string[];
}

export interface CacheImportResult {
  imported: CacheImage[];
  failed: Array<{ ref: string; reason: string }>;
}

async function entries(dir: string): Promise<Array<{ name: string; dir: boolean; file: boolean }>> {
  const list = await readdir(dir, { withFileTypes: true }).catch(() => []);
  return list.map((e) => ({ name: e.name, dir: e.isDirectory(), file: e.isFile() })).sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The digest a `sha256-<hex>` file stands for, as a list of one (none for anything else). */
function digestsOf(e: { name: string; file: boolean }): string[] {
  const digest = e.file ? digestOfFileName(e.name) : undefined;
  return digest ? [digest] : [];
}

/** Every repository of the tree: a folder holding `reference/` or `digest/`, at any depth under its registry. */
export async function scanCache(root: string): Promise<CacheRepository[]> {
  const out: CacheRepository[] = [];
  for (const reg of await entries(join(root, MANIFESTS_DIR))) {
    if (reg.dir) await scanRepos(root, `${MANIFESTS_DIR}/${reg.name}`, registryOfDir(reg.name), [], out);
  }
  return out;
}

async function scanRepos(root: string, path: string, host: string, segments: string[], out: CacheRepository[]): Promise<void> {
  const here = await entries(join(root, path));
  const sub = (n: string): boolean => here.some((e) => e.dir && e.name === n);
  if (segments.length > 0 && (sub('reference') || sub('digest'))) {
    const tags = (await entries(join(root, path, 'reference'))).filter((e) => e.file).map((e) => e.name);
    const digests = new Set((await entries(join(root, path, 'digest'))).flatMap((e) => digestsOf(e)));
    out.push({ host, name: segments.join('/'), path, tags, digests });
  }
  for (const e of here) {
    if (e.dir && e.name !== 'reference' && e.name !== 'digest') await scanRepos(root, `${path}/${e.name}`, host, [...segments, e.name], out);
  }
}

/** Imports every image of the tree at `root`; `name` turns a tree path into what the operator should read. */
export async function importCacheTree(store: Store, root: string, name: (file: string) => string, progress?: ProgressPort): Promise<CacheImportResult> {
  const repos = await scanCache(root);
  if (repos.length === 0) throw new ImportError(`${name('manifests/')} holds no repository (no …/reference/ or …/digest/ folder): not a Talos image cache`);
  const blobs = new Set((await entries(join(root, BLOB_DIR))).flatMap((e) => digestsOf(e)));
  const result: CacheImportResult = { imported: [], failed: [] };
  for (const repo of repos) await new RepositoryImport(store, repo, { root, name, blobs }, result, progress).run();
  return result;
}

/** One repository of the tree: its tags first, then what only its digest/ folder holds. */
class RepositoryImport {
  private readonly base: string;
  /** Top manifests by digest → their reference file, the source when digest/ lacks the copy Talos writes. */
  private readonly tagged = new Map<string, string>();
  /** Every digest an imported image reached: a digest file among them is no image of its own. */
  private readonly reached = new Set<string>();
  private readonly layout: Layout;

  constructor(
    private readonly store: Store,
    private readonly repo: CacheRepository,
    private readonly tree: { root: string; name: (file: string) => string; blobs: Set<string> },
    private readonly result: CacheImportResult,
    private readonly progress?: ProgressPort,
  ) {
    this.base = `${repo.host}/${repo.name}`;
    this.layout = { dir: tree.root, name: tree.name, blobFile: (d) => this.fileOf(d) };
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
      await this.importOne({ host, name, tag }, top, `${this.base}:${tag}`);
    }
    // Images cached by digest alone (`repo@sha256:…` in the list): digest files no tag reached.
    for (const digest of this.repo.digests) {
      if (this.reached.has(digest)) continue;
      const top = await this.root(`${this.repo.path}/digest/${digestFileName(digest)}`, `${this.base}@${digest}`);
      if (top) await this.importOne({ host, name }, top, `${this.base}@${digest}`);
    }
  }

  /** The root descriptor of a manifest file, or undefined with the reason recorded as a failure. */
  private async root(file: string, label: string, invalid?: string): Promise<Descriptor | undefined> {
    const top = invalid ? new ImportError(invalid) : await readRoot(this.tree.root, file, this.tree.name).catch((e: unknown) => e as Error);
    if (!(top instanceof Error)) return top;
    this.result.failed.push({ ref: label, reason: top.message });
    return undefined;
  }

  private async importOne(ref: ImageRef, top: Descriptor, label: string): Promise<void> {
    try {
      if (!isValidName(this.repo.name) || !isValidHost(this.repo.host)) throw new ImportError(`${this.tree.name(this.repo.path)} is not a valid registry and repository name`);
      const image = await collect(this.layout, top);
      for (const d of image.blobs) this.reached.add(d.digest);
      let bytesDone = 0;
      const bytesTotal = image.blobs.reduce((n, d) => n + d.size, 0);
      for (const [i, d] of image.blobs.entries()) {
        await verifyBlob(this.layout, d);
        this.progress?.({ unit: 'blobs', done: i + 1, total: image.blobs.length, bytesDone: (bytesDone += d.size), bytesTotal, current: label });
      }
      await commitImage(this.store, this.layout, ref, image);
      const bytes = image.blobs.reduce((n, d) => n + d.size, 0);
      this.result.imported.push({ ref: label, digest: top.digest, blobs: image.blobs.length, bytes, missing: image.missing.map(platformOf) });
    } catch (e) {
      this.result.failed.push({ ref: label, reason: (e as Error).message });
    }
  }
}

/** The root descriptor of a manifest file: its digest is the hash of its bytes, its media type what it declares or implies. */
async function readRoot(root: string, file: string, name: (file: string) => string): Promise<Descriptor> {
  const { fh, size } = await openRegular(join(root, file), name(file));
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

function platformOf(d: Descriptor): string {
  const p = d.platform;
  if (!p?.os || p.os === 'unknown') return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' ? `attestation ${d.digest}` : d.digest;
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** A folder is a flat cache when it has `manifests/` and no `index.json` (which would make it an OCI layout). */
export async function isFlatCache(dir: string): Promise<boolean> {
  const manifests = await stat(join(dir, MANIFESTS_DIR)).catch(() => undefined);
  const index = await stat(join(dir, 'index.json')).catch(() => undefined);
  return manifests?.isDirectory() === true && index === undefined;
}

/**
 * The OCI form: `index.json` holds one image manifest with no `org.opencontainers.image.ref.name` (cache.go appends
 * it with only a platform) and that manifest has one layer, the tree. Anything else is an ordinary layout.
 */
export async function wrappedCache(layout: Layout, entries: unknown[]): Promise<Collected | undefined> {
  const [entry] = entries;
  if (entries.length !== 1 || !isDescriptor(entry) || entry.annotations?.['org.opencontainers.image.ref.name'] !== undefined) return undefined;
  if (entry.mediaType !== MediaType.ociManifest && entry.mediaType !== MediaType.dockerManifest) return undefined;
  // A layout that cannot even be walked is not taken for a cache: the ordinary import names its problem.
  const image = await collect(layout, entry).catch(() => undefined);
  if (!image) return undefined;
  const layers = image.manifests[0]?.body ? parseManifest(image.manifests[0].body)?.layers : undefined;
  return layers?.length === 1 ? image : undefined;
}

/** Verifies the wrapping image (manifest, config, the layer), unpacks the layer safely and imports the tree in it. */
export async function importWrappedCache(store: Store, layout: Layout, image: Collected, progress?: ProgressPort): Promise<CacheImportResult> {
  for (const d of image.blobs) await verifyBlob(layout, d);
  const layer = parseManifest(image.manifests[0]?.body ?? Buffer.alloc(0))?.layers?.[0];
  const file = layer && (layout.blobFile ? layout.blobFile(layer) : ociBlobFile(layer));
  if (!layer || file === undefined) throw new ImportError(`${layout.name('index.json')}: the cache image has no layer`);
  const where = `the Talos cache layer ${layout.name(file)}`;
  const dir = await store.scratchDir('talos-cache-');
  try {
    progress?.({ unit: 'blobs', done: 0, bytesDone: 0, current: `unpacking ${where}` });
    await unpackCacheLayer(join(layout.dir, file), where, dir).catch((e: unknown) => {
      const hint = '; a single-image layout without a name is imported with --as REF';
      throw e instanceof CacheTarError ? new ImportError(`${e.message}${e.message.includes('not part of') ? hint : ''}`) : e;
    });
    return await importCacheTree(store, dir, (f) => `${f} in ${where}`, progress);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
