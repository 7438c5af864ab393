// The archive side of `sluice import`: a .tar or .tar.zst (found by its magic bytes, not its name) is unpacked,
// keeping only the files an image layout has, at the top or under one top folder. Entries that could write
// outside the folder (absolute paths, `..`) and links or devices refuse the whole archive; an archive cut short
// keeps what arrived whole and names the blob it ends in. An entry past its descriptor's size or past the room
// the store has left refuses the archive before it is written.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname, join, normalize } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract, type Extract, type Header } from 'tar-stream';
import { UnpackBudget, zstdDecompress, type UnpackRoom } from './unpack-bounds.js';
import { childDescriptors, parseManifest } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES } from '../store/store.js';

export class TarLayoutError extends Error {}

export interface ExtractedTar {
  /** The folder (relative to dest, '' for the top) that holds the layout. */
  top: string;
  /** Layout files (relative to `top`) the archive held only in part, with why. */
  damaged: Map<string, string>;
  /** Why the archive stopped being readable after some entries, if it did. */
  brokenAfter?: string;
  /** sha256 of the archive file as read (to compare with a receipt). */
  sha256: string;
}

/** A layout file, at the top (`folder` '') or one folder down. */
const LAYOUT_FILE = /^(?:([^/]+)\/)?(index\.json|oci-layout|blobs\/sha256\/[a-f0-9]{64})$/;
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

export async function extractLayoutTar(tarPath: string, dest: string, room: UnpackRoom): Promise<ExtractedTar> {
  const state: Unpack = { tarPath, dest, folders: new Set(), written: new Set(), entries: 0, damaged: new Map(), budget: new UnpackBudget(room), sizes: new Map() };
  const hash = createHash('sha256');
  try {
    await unpack(state, hash, await isZstd(tarPath));
  } catch (e) {
    if (e instanceof TarLayoutError) throw e;
    if (state.entries === 0) throw new TarLayoutError(`${tarPath} is not a readable tar archive: ${(e as Error).message}`);
    if (state.current) state.damaged.set(state.current, `is cut short in ${tarPath}: the archive ends or is unreadable inside it (${(e as Error).message})`);
    else state.brokenAfter = `${tarPath} is unreadable after ${state.entries} entries: ${(e as Error).message}`;
    if (state.current) await rm(join(dest, state.current), { force: true });
  }
  const top = topFolder(state);
  const damaged = new Map<string, string>();
  for (const [name, why] of state.damaged) damaged.set(top ? name.slice(top.length + 1) : name, why);
  return { top, damaged, brokenAfter: state.brokenAfter, sha256: `sha256:${hash.digest('hex')}` };
}

interface Unpack {
  tarPath: string;
  dest: string;
  folders: Set<string>;
  written: Set<string>;
  entries: number;
  /** The layout file being written when the archive failed. */
  current?: string;
  damaged: Map<string, string>;
  brokenAfter?: string;
  budget: UnpackBudget;
  /** Sizes the descriptors read so far (index.json, manifests) give each digest: a blob entry may not exceed its. */
  sizes: Map<string, number>;
}

function topFolder(s: Unpack): string {
  if (s.folders.has('')) return '';
  const found = [...s.folders].sort();
  if (found.length === 1) return found[0] ?? '';
  if (found.length > 1) {
    throw new TarLayoutError(`${s.tarPath} holds an image layout under each of ${found.map((f) => `${f}/`).join(', ')}; tar one layout's contents`);
  }
  if (s.entries === 0) throw new TarLayoutError(`${s.tarPath} is empty: no index.json; tar the layout's contents (tar -cf ${s.tarPath} -C LAYOUT .)`);
  throw new TarLayoutError(`${s.tarPath} has no index.json at its top or under one top folder: it is not a .tar of an OCI image layout`);
}

async function isZstd(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(4);
    const { bytesRead } = await fh.read(head, 0, 4, 0);
    return bytesRead === 4 && head.equals(ZSTD_MAGIC);
  } finally {
    await fh.close();
  }
}

async function unpack(s: Unpack, hash: ReturnType<typeof createHash>, zstd: boolean): Promise<void> {
  const ex = extract();
  const hashing = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const source = createReadStream(s.tarPath);
  const feed = zstd ? pipeline(source, hashing, zstdDecompress, ex) : pipeline(source, hashing, ex);
  // A refused entry stops the archive at once: every stream is destroyed, nothing more is read or decompressed.
  const entries = readEntries(s, ex).catch((e: unknown) => {
    source.destroy();
    ex.destroy();
    throw e;
  });
  const [fed, read] = await Promise.allSettled([feed, entries]);
  if (read.status === 'rejected' && read.reason instanceof TarLayoutError) throw read.reason;
  if (fed.status === 'rejected') throw fed.reason;
  if (read.status === 'rejected') throw read.reason;
}

async function readEntries(s: Unpack, ex: Extract): Promise<void> {
  for await (const entry of ex) {
    s.entries++;
    const name = checkEntry(s.tarPath, entry.header);
    const m = name === undefined ? null : LAYOUT_FILE.exec(name);
    if (!m || name === undefined) {
      entry.resume();
      await new Promise<void>((resolve) => entry.on('end', resolve));
      continue;
    }
    if (m[2] === 'index.json') s.folders.add(m[1] ?? '');
    if (s.written.has(name)) throw new TarLayoutError(`${s.tarPath} holds ${name} twice`);
    s.written.add(name);
    checkSize(s, name, m[2] ?? '', entry.header.size ?? 0);
    const out = join(s.dest, name);
    await mkdir(dirname(out), { recursive: true });
    s.current = name;
    await pipeline(entry, createWriteStream(out, { flags: 'wx' }));
    s.current = undefined;
    if ((entry.header.size ?? 0) <= MAX_MANIFEST_BYTES) learnSizes(s, await readFile(out));
  }
}

/** An entry may not be larger than a descriptor of its digest says, nor than the room left for the archive. */
function checkSize(s: Unpack, name: string, file: string, sizeBytes: number): void {
  const refuse = (why: string): never => {
    throw new TarLayoutError(`${s.tarPath}: entry ${JSON.stringify(name)} ${why}; the archive is refused and nothing of it is imported`);
  };
  const known = file.startsWith('blobs/') ? s.sizes.get(`sha256:${file.slice(13)}`) : undefined;
  if (known !== undefined && sizeBytes > known) refuse(`is ${sizeBytes} bytes, but its descriptor says ${known}`);
  const over = s.budget.take(sizeBytes);
  if (over) refuse(over);
}

/** The sizes an index.json or a manifest gives its children (anything else parses to nothing). */
function learnSizes(s: Unpack, body: Buffer): void {
  const doc = parseManifest(body);
  if (!doc) return;
  for (const d of childDescriptors(doc)) {
    const known = s.sizes.get(d.digest);
    if (Number.isSafeInteger(d.size) && d.size >= 0 && (known === undefined || d.size < known)) s.sizes.set(d.digest, d.size);
  }
}

/**
 * The entry's normalised name when it is a regular file (undefined for a folder); refuses anything that could
 * reach outside the unpack folder or is not plain data, so nothing of such an archive is imported.
 */
function checkEntry(tarPath: string, h: Header): string | undefined {
  const raw = h.name;
  const refuse = (why: string): never => {
    throw new TarLayoutError(`${tarPath}: entry ${JSON.stringify(raw.slice(0, 200))} ${why}; the archive is refused and nothing of it is imported`);
  };
  if (raw.startsWith('/')) refuse('has an absolute path');
  if (raw.split('/').includes('..')) refuse('climbs out of the archive with ".."');
  if (h.type === 'symlink' || h.type === 'link') refuse(`is a ${h.type === 'link' ? 'hard' : 'symbolic'} link (to ${JSON.stringify((h.linkname ?? '').slice(0, 200))})`);
  if (h.type === 'directory') return undefined;
  if (h.type !== 'file' && h.type !== 'contiguous-file') refuse(`is a ${h.type ?? 'special file'}, not a regular file`);
  const name = normalize(raw).replace(/\/$/, '');
  return name === '.' ? undefined : name;
}
