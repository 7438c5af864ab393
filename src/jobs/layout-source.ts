// What `sluice import` reads images from, whatever its form: a LayoutSource finds a manifest or blob by descriptor
// (layout-files.ts opens and checks it). Adapters here: an OCI layout folder and an OCI layout (an export bundle
// included) in a .tar/.tar.zst; talos-cache.ts adapts both Talos cache forms.
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLayoutTar, TarLayoutError } from './import-tar.js';
import { ImportError, type LayoutSource } from './layout-files.js';

export type { LayoutSource } from './layout-files.js';
import { readReceipt, receiptPathFor } from './receipt.js';
import { unpackRoom } from './unpack-bounds.js';
import type { Store } from '../store/store.js';

export const ociDirSource = (path: string): LayoutSource => ({ dir: path, name: (f) => join(path, f), noun: 'the bundle' });

export interface OpenedArchive {
  source: LayoutSource;
  /** The archive was damaged or does not match its receipt: said once, whatever the images do. */
  warnings: string[];
  /** Removes the unpacked copy; always called. */
  close(): Promise<void>;
}

/** Unpacks a .tar/.tar.zst of an OCI layout (bounded: unpack-bounds.ts) into a scratch folder of the store. */
export async function openOciArchive(store: Store, path: string): Promise<OpenedArchive> {
  const dir = await store.scratchDir('import-');
  const close = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    const tar = await extractLayoutTar(path, dir, await unpackRoom(store, dir)).catch((e: unknown) => Promise.reject(e instanceof TarLayoutError ? new ImportError(e.message) : e));
    const warnings = [...(tar.brokenAfter ? [`${tar.brokenAfter}; only images whose blobs all arrived whole are imported`] : []), ...(await receiptWarnings(path, tar.sha256))];
    const name = (f: string): string => `${tar.top ? `${tar.top}/` : ''}${f} in ${path}`;
    return { source: { dir: join(dir, tar.top), name, noun: 'the bundle', damaged: tar.damaged }, warnings, close };
  } catch (e) {
    await close();
    throw e;
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
