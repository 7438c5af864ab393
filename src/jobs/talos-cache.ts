// Talos image caches (`talosctl images cache-create`, siderolabs/talos pkg/imager/cache/cache.go): the flat tree
// `blob/sha256-<hex>`, `manifests/<registry>/<repo>/reference/<tag>` and `…/digest/sha256-<hex>` (a registry's
// `host:port` written `host_port_`), imported image by image with only the chosen platforms present.
import { createHash } from 'node:crypto';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { collect, commitImage, ImportError, openRegular, verifyBlob, type Collected, type ImageRef, type Layout } from './layout-image.js';
import { CacheTarError, unpackCacheLayer } from './talos-cache-tar.js';
import { isDescriptor, manifestMediaType, MANIFEST_MEDIA_TYPES, MediaType, parseManifest } from '../oci/manifest.js';
import { canonicalHost, isValidHost, isValidName, isValidTag } from '../oci/reference.js';
import { MAX_MANIFEST_BYTES, type Descriptor, type Store } from '../store/store.js';

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

const BLOB_FILE = /^sha256-([a-f0-9]{64})$/;

/** `host_port_` (Talos' vfat-safe spelling of `host:port`) → `host:port`; other names as they are. */
export function registryOfDir(dir: string): string {
  const m = /^(.+)_(\d{1,5})_$/.exec(dir);
  return canonicalHost(m ? `${m[1]}:${m[2]}` : dir);
}

async function entries(dir: string): Promise<Array<{ name: string; dir: boolean; file: boolean }>> {
  const list = await readdir(dir, { withFileTypes: true }).catch(() => []);
  return list.map((e) => ({ name: e.name, dir: e.isDirectory(), file: e.isFile() })).sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** Every repository of the tree: a folder holding `reference/` or `digest/`, at any depth under its registry. */
export async function scanCache(root: string): Promise<CacheRepository[]> {
  const out: CacheRepository[] = [];
  for (const reg of await entries(join(root, 'manifests'))) {
    if (reg.dir) await scanRepos(root, `manifests/${reg.name}`, registryOfDir(reg.name), [], out);
  }
  return out;
}

async function scanRepos(root: string, path: string, host: string, segments: string[], out: CacheRepository[]): Promise<void> {
  const here = await entries(join(root, path));
  const sub = (n: string): boolean => here.some((e) => e.dir && e.name === n);
  if (segments.length > 0 && (sub('reference') || sub('digest'))) {
    const tags = (await entries(join(root, path, 'reference'))).filter((e) => e.file).map((e) => e.name);
    const digests = new Set((await entries(join(root, path, 'digest'))).flatMap((e) => {
      const m = e.file ? BLOB_FILE.exec(e.name) : null;
      return m ? [`sha256:${m[1]}`] : [];
    }));
    out.push({ host, name: segments.join('/'), path, tags, digests });
  }
  for (const e of here) {
    if (e.dir && e.name !== 'reference' && e.name !== 'digest') await scanRepos(root, `${path}/${e.name}`, host, [...segments, e.name], out);
  }
}

/** Imports every image of the tree at `root`; `name` turns a tree path into what the operator should read. */
export async function importCacheTree(store: Store, root: string, name: (file: string) => string, progress?: (line: string) => void): Promise<CacheImportResult> {
  const repos = await scanCache(root);
  if (repos.length === 0) throw new ImportError(`${name('manifests/')} holds no repository (no …/reference/ or …/digest/ folder): not a Talos image cache`);
  const blobs = new Set((await entries(join(root, 'blob'))).flatMap((e) => (e.file && BLOB_FILE.test(e.name) ? [`sha256:${e.name.slice(7)}`] : [])));
  const result: CacheImportResult = { imported: [], failed: [] };
  for (const repo of repos) await importRepository(store, root, name, repo, blobs, result, progress);
  return result;
}

async function importRepository(
  store: Store, root: string, name: (file: string) => string, repo: CacheRepository, blobs: Set<string>,
  result: CacheImportResult, progress?: (line: string) => void,
): Promise<void> {
  const base = `${repo.host}/${repo.name}`;
  const tagged = new Map<string, string>();
  const layout: Layout = {
    dir: root,
    name,
    blobFile: (d) => {
      const hex = d.digest.slice(7);
      if (MANIFEST_MEDIA_TYPES.includes(d.mediaType)) return repo.digests.has(d.digest) ? `${repo.path}/digest/sha256-${hex}` : tagged.get(d.digest);
      return blobs.has(d.digest) ? `blob/sha256-${hex}` : undefined;
    },
  };
  const reached = new Set<string>();
  const importOne = async (ref: ImageRef, top: Descriptor, label: string): Promise<void> => {
    try {
      if (!isValidName(repo.name) || !isValidHost(repo.host)) throw new ImportError(`${name(repo.path)} is not a valid registry and repository name`);
      const image = await collect(layout, top);
      for (const d of image.blobs) reached.add(d.digest);
      for (const [i, d] of image.blobs.entries()) {
        await verifyBlob(layout, d);
        progress?.(`verifying ${label}: ${i + 1}/${image.blobs.length} blobs`);
      }
      await commitImage(store, layout, ref, image);
      const bytes = image.blobs.reduce((n, d) => n + d.size, 0);
      result.imported.push({ ref: label, digest: top.digest, blobs: image.blobs.length, bytes, missing: image.missing.map(platformOf) });
    } catch (e) {
      result.failed.push({ ref: label, reason: (e as Error).message });
    }
  };
  for (const tag of repo.tags) {
    const label = `${base}:${tag}`;
    const top = await readRoot(root, `${repo.path}/reference/${tag}`, name).catch((e: unknown) => e as Error);
    if (top instanceof Error || !isValidTag(tag)) {
      result.failed.push({ ref: label, reason: top instanceof Error ? top.message : `"${tag}" is not a valid tag` });
      continue;
    }
    // Talos writes the same bytes under digest/ too; without that file the reference file itself is the source.
    tagged.set(top.digest, `${repo.path}/reference/${tag}`);
    await importOne({ host: repo.host, name: repo.name, tag }, top, label);
  }
  // Images cached by digest alone (`repo@sha256:…` in the list): digest files no tag reached.
  for (const digest of repo.digests) {
    if (reached.has(digest)) continue;
    const top = await readRoot(root, `${repo.path}/digest/sha256-${digest.slice(7)}`, name).catch((e: unknown) => e as Error);
    if (top instanceof Error) {
      result.failed.push({ ref: `${base}@${digest}`, reason: top.message });
      continue;
    }
    await importOne({ host: repo.host, name: repo.name }, top, `${base}@${digest}`);
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
  const manifests = await stat(join(dir, 'manifests')).catch(() => undefined);
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
export async function importWrappedCache(store: Store, layout: Layout, image: Collected, progress?: (line: string) => void): Promise<CacheImportResult> {
  for (const d of image.blobs) await verifyBlob(layout, d);
  const layer = parseManifest(image.manifests[0]?.body ?? Buffer.alloc(0))?.layers?.[0];
  const file = layer && layout.blobFile(layer);
  if (!layer || file === undefined) throw new ImportError(`${layout.name('index.json')}: the cache image has no layer`);
  const where = `the Talos cache layer ${layout.name(file)}`;
  const dir = await store.scratchDir('talos-cache-');
  try {
    progress?.(`unpacking ${where}`);
    await unpackCacheLayer(join(layout.dir, file), where, dir).catch((e: unknown) => {
      const hint = '; a single-image layout without a name is imported with --as REF';
      throw e instanceof CacheTarError ? new ImportError(`${e.message}${e.message.includes('not part of') ? hint : ''}`) : e;
    });
    return await importCacheTree(store, dir, (f) => `${f} in ${where}`, progress);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
