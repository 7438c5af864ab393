// `sluice import`: reads an OCI image layout (a directory, a .tar or a .tar.zst of one; sluice's export bundles
// included) or a Talos image cache, picks the source's adapter (layout-source.ts, talos-cache.ts) and hands each
// image to the one import pipeline (import-pipeline.ts): verified first, committed only then.
import { stat } from 'node:fs/promises';
import { PLATFORMS_ANNOTATION, REF_NAME, RULES_ANNOTATION } from './exporter.js';
import { importImage, newRun, refText, type ImageRef, type ImportedImage, type ImportRun } from './import-pipeline.js';
import { ImportError, ImportUsageError, readIndex } from './layout-files.js';
import type { ProgressPort } from './progress.js';
import { ociDirSource, openOciArchive, type LayoutSource } from './layout-source.js';
import { importCacheTree, importWrappedCache, isFlatCache, wrappedCache, type CacheImportResult } from './talos-cache.js';
import { isDescriptor, MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import { parseRule } from '../policy/rules.js';
import type { Descriptor, Store } from '../store/store.js';

export { ImportError, ImportUsageError } from './layout-files.js';
export { refText, type ImageRef } from './import-pipeline.js';

export interface ImportResult {
  /** `missing`: platforms an index names that a Talos cache does not hold (it keeps only the chosen ones). */
  imported: ImportedImage[];
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

export async function importPath(store: Store, path: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const as = opts.as === undefined ? undefined : parseAsRef(opts.as);
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new ImportError(`${path}: no such file or directory`);
  const run = newRun(store, opts.progress);
  if (info.isDirectory() && as === undefined && (await isFlatCache(path))) return fromCache(await importCacheTree(run, ociDirSource(path)), 'flat');
  if (info.isDirectory()) return importLayout(run, ociDirSource(path), as, []);
  if (!info.isFile()) throw new ImportError(`${path} is neither a folder nor a regular file: give an OCI image layout or a .tar of one`);
  const archive = await openOciArchive(store, path);
  try {
    return await importLayout(run, archive.source, as, archive.warnings);
  } finally {
    await archive.close();
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

/** Every entry of an OCI layout's index.json, each its own image; or the one image of a Talos cache in OCI form. */
async function importLayout(run: ImportRun, source: LayoutSource, as: ImageRef | undefined, warnings: string[]): Promise<ImportResult> {
  const index = await readIndex(source);
  const entries = index.entries;
  if (as !== undefined && entries.length !== 1) {
    throw new ImportUsageError(`--as names one image, but ${source.name('index.json')} holds ${entries.length}`);
  }
  const wrapped = as === undefined ? await wrappedCache(run.store, source, entries) : undefined;
  if (wrapped) return fromCache(await importWrappedCache(run, source, wrapped), 'oci', warnings);
  const rules = index.annotations[RULES_ANNOTATION];
  const result: ImportResult = { imported: [], failed: [], bundleRules: rules ? rules.split(',').filter((r) => r !== '') : [], warnings };
  for (const [i, entry] of entries.entries()) {
    const named = as ? refText(as) : isDescriptor(entry) ? entry.annotations?.[REF_NAME] ?? '' : '';
    try {
      const root = imageEntry(source, entry, i);
      const ref = as ?? entryRef(source, root, named, i);
      result.imported.push(await importImage(run, source, ref, root, named, platformsOf(root)));
    } catch (e) {
      result.failed.push({ ref: named || (isDescriptor(entry) ? entry.digest : `entry ${i + 1}`), reason: (e as Error).message });
    }
  }
  return result;
}

/** An index.json entry is an image only if it is a descriptor of a manifest or an index. */
function imageEntry(source: LayoutSource, entry: unknown, i: number): Descriptor {
  const where = `${source.name('index.json')} entry ${i + 1}`;
  if (!isDescriptor(entry)) throw new ImportError(`${where} is not a descriptor (an object with mediaType, digest and size)`);
  if (!MANIFEST_MEDIA_TYPES.includes(entry.mediaType)) {
    throw new ImportError(`${where} has mediaType ${entry.mediaType}, which is not an image manifest or index: nothing to import`);
  }
  return entry;
}

function entryRef(source: LayoutSource, root: Descriptor, named: string, i: number): ImageRef {
  if (!named.includes('/') && !named.includes(':')) {
    throw new ImportError(`${source.name('index.json')} entry ${i + 1} (${root.digest}) has no full reference in ${REF_NAME} ("${named}"); use --as REF`);
  }
  const ref = parseImageRef(named);
  if (ref.digest !== undefined && ref.digest !== root.digest) throw new ImportError(`${named} names another digest than its entry (${root.digest})`);
  return ref;
}

/** The platforms a sluice export was limited to: the other platforms of an index may then be absent. */
function platformsOf(root: Descriptor): string[] {
  return (root.annotations?.[PLATFORMS_ANNOTATION] ?? '').split(',').filter((p) => p !== '');
}
