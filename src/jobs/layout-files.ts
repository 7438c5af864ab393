// Reading the files of an OCI image layout for import: only regular files (never a symlink, FIFO or device, nor
// a file under a symlinked folder), never past a descriptor's size, and every problem named by the layout's own name.
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_MANIFEST_BYTES, type Descriptor } from '../store/store.js';

export interface LayoutSource {
  /** The folder the source's files are in (an unpacked archive: a scratch folder, never named to the operator). */
  dir: string;
  /** How to name one of its files to the operator (inside the archive, never the scratch folder). */
  name(file: string): string;
  /** How messages call the whole source: "the bundle", "the Talos cache". */
  noun: string;
  /** Blobs a damaged archive held only in part (path → why): they count as bad, not as absent. */
  damaged?: ReadonlyMap<string, string>;
  /**
   * Which file holds a blob, relative to `dir` (default `blobs/sha256/<hex>`, an OCI layout), or undefined when
   * the source is known not to have it (a Talos cache: `blob/sha256-<hex>`, chosen platforms only).
   */
  blobFile?(d: Descriptor): string | undefined;
  /** The source holds only some platforms of an index on purpose (a Talos cache): the others are listed, not errors. */
  partial?: boolean;
}

export class ImportError extends Error {}
/** A problem with what the operator asked for (`--as`), not with the layout: a usage error. */
export class ImportUsageError extends ImportError {}

const SHA256_RE = /^sha256:[a-f0-9]{64}$/;

export const blobFile = (d: Descriptor): string => `blobs/sha256/${d.digest.slice(7)}`;
/** Which file of the source holds a blob: its own rule (a Talos cache), else the OCI layout's. */
export const fileOf = (layout: LayoutSource, d: Descriptor): string | undefined => (layout.blobFile ? layout.blobFile(d) : blobFile(d));

/** Whether the layout holds a file for this blob (not whether it is sound). */
export async function hasBlob(layout: LayoutSource, d: Descriptor): Promise<boolean> {
  const file = fileOf(layout, d);
  if (file === undefined) return false;
  if (layout.damaged?.has(file)) return true;
  await refuseLinkedFolders(layout.dir, file, layout.name);
  // lstat: a symlink or FIFO counts as present, so reading it is refused by name rather than it being taken as absent.
  return (await lstat(join(layout.dir, file)).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : e))) !== undefined;
}

export async function verifyBlob(layout: LayoutSource, d: Descriptor): Promise<void> {
  const hash = createHash('sha256');
  let size = 0;
  await withBlob(layout, d, async (fh) => {
    try {
      for await (const chunk of readAtMost(fh, d.size)) {
        hash.update(chunk);
        size += chunk.length;
      }
    } catch (e) {
      throw new ImportError(`blob ${d.digest} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  });
  if (size !== d.size) throw new ImportError(`blob ${d.digest} is ${size} bytes, its descriptor says ${d.size}`);
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== d.digest) throw new ImportError(`blob ${d.digest} is corrupt: its content hashes to ${got}`);
}

export async function readBlobFile(layout: LayoutSource, d: Descriptor): Promise<Buffer> {
  return withBlob(layout, d, async (fh) => {
    const body = Buffer.alloc(d.size);
    const { bytesRead } = await fh.read(body, 0, d.size, 0);
    if (bytesRead !== d.size) throw new ImportError(`blob ${d.digest} is ${bytesRead} bytes, its descriptor says ${d.size}`);
    return body;
  });
}

/** Runs `use` on the blob's file once it is known to be a regular file of the descriptor's size. */
export async function withBlob<T>(layout: LayoutSource, d: Descriptor, use: (fh: FileHandle) => Promise<T>): Promise<T> {
  const file = fileOf(layout, d);
  if (file === undefined) throw new ImportError(`blob ${d.digest} (${d.mediaType}) is not in ${layout.name('')}`);
  const damage = layout.damaged?.get(file);
  if (damage) throw new ImportError(`blob ${d.digest} (${layout.name(file)}) ${damage}`);
  await refuseLinkedFolders(layout.dir, file, layout.name);
  const { fh, size } = await openRegular(join(layout.dir, file), `blob ${d.digest} (${layout.name(file)})`);
  try {
    if (size !== d.size) throw new ImportError(`blob ${d.digest} is ${size} bytes, its descriptor says ${d.size}`);
    return await use(fh);
  } finally {
    await fh.close();
  }
}

/**
 * Refuses a file whose folders (relative to `root`, `file` itself included when `self`) include a symbolic link:
 * a linked `blobs/` or `manifests/` would lead the import out of the layout, onto the host's files.
 */
export async function refuseLinkedFolders(root: string, file: string, name: (file: string) => string, self = false): Promise<void> {
  const parts = file.split('/').filter((p) => p !== '');
  for (let i = 1; i <= (self ? parts.length : parts.length - 1); i++) {
    const rel = parts.slice(0, i).join('/');
    const info = await lstat(join(root, rel)).catch(() => undefined);
    if (!info) return;
    if (info.isSymbolicLink()) throw new ImportError(`${name(rel)} is a symbolic link; sluice follows no link out of an import (copy the folder itself in)`);
  }
}

/**
 * Opens a layout file only if it is a regular file: a symlink is not followed (it could point at /dev/zero or
 * outside the layout) and a FIFO or device is refused before any read (O_NONBLOCK: opening a FIFO never waits).
 */
export async function openRegular(file: string, what: string, missing = `${what} cannot be read: no such file`): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new ImportError(`${what} is a symbolic link; sluice reads only regular files (copy the file into the layout)`);
    throw new ImportError(code === 'ENOENT' ? missing : `${what} cannot be read: ${code ?? (e as Error).message}`);
  }
  const info = await fh.stat();
  if (!info.isFile()) {
    await fh.close();
    throw new ImportError(`${what} is not a regular file`);
  }
  return { fh, size: info.size };
}

/** The first `size` bytes of the file and no more, whatever it grows to. */
export function readAtMost(fh: FileHandle, size: number): AsyncIterable<Buffer> {
  if (size === 0) return (async function* () {})();
  return fh.createReadStream({ start: 0, end: size - 1, autoClose: false, highWaterMark: 1024 * 1024 });
}

export function checkDescriptor(d: Descriptor): void {
  if (typeof d.digest !== 'string' || !SHA256_RE.test(d.digest)) throw new ImportError(`descriptor has an invalid or non-sha256 digest: ${String(d.digest).slice(0, 80)}`);
  if (!Number.isSafeInteger(d.size) || d.size < 0) throw new ImportError(`descriptor ${d.digest} has an invalid size`);
  if (typeof d.mediaType !== 'string') throw new ImportError(`descriptor ${d.digest} has no mediaType`);
}

export interface LayoutIndex {
  entries: unknown[];
  annotations: Record<string, string>;
}

/** The entries of index.json (each still to be checked), or an ImportError naming the file and what is wrong. */
export async function readIndex(layout: LayoutSource): Promise<LayoutIndex> {
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
  const raw = (doc as { annotations?: unknown }).annotations;
  const annotations: Record<string, string> = {};
  if (typeof raw === 'object' && raw !== null) for (const [k, v] of Object.entries(raw)) if (typeof v === 'string') annotations[k] = v;
  return { entries: manifests, annotations };
}
