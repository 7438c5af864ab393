// The layer of a Talos image cache in OCI form (`talosctl images cache-create --layout oci`): a tar (gzip, zstd or
// plain) of the flat tree, unpacked only where the tree lives — never outside dest, never through a link, never
// past the room the store has left.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract, type Extract } from 'tar-stream';
import { UnpackBudget, zstdDecompress, type UnpackRoom } from './unpack-bounds.js';

export class CacheTarError extends Error {}

/** What the tree may hold: `blob/sha256-<hex>` and anything under `manifests/` (checked again when scanned). */
const TREE_FILE = /^(?:blob\/sha256-[a-f0-9]{64}|manifests\/.+)$/;
const TREE_DIR = /^(?:blob|manifests(?:\/.+)?)$/;

/** An entry name made relative and normalised, or a refusal: absolute paths and `..` never leave dest. */
export function safeEntryName(raw: string, where: string): string {
  if (raw.startsWith('/') || /^[A-Za-z]:[\\/]/.test(raw)) throw new CacheTarError(`${where}: refused entry "${raw}": an absolute path`);
  if (raw.includes('\\') || raw.includes('\0')) throw new CacheTarError(`${where}: refused entry "${raw}": not a plain relative path`);
  if (raw.split('/').includes('..')) throw new CacheTarError(`${where}: refused entry "${raw}": it climbs out with ..`);
  return posix.normalize(raw).replace(/^(\.\/)+/, '').replace(/\/+$/, '');
}

type Decompress = 'gzip' | 'zstd' | 'none';

/** How the layer is compressed, by what its first bytes say (gzip 1f 8b, zstd 28 b5 2f fd, else a plain tar). */
async function compressionOf(file: string): Promise<Decompress> {
  const fh = await open(file, 'r');
  const magic = Buffer.alloc(4);
  await fh.read(magic, 0, 4, 0).finally(() => fh.close());
  if (magic[0] === 0x1f && magic[1] === 0x8b) return 'gzip';
  if (magic.equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
  return 'none';
}

/** The layer's bytes into the tar reader; small reads for gzip, whose inflater expands a whole chunk at once. */
function feed(file: string, kind: Decompress, ex: Extract): { source: Readable; done: Promise<void> } {
  const source = createReadStream(file, { highWaterMark: kind === 'gzip' ? 16 * 1024 : 64 * 1024 });
  if (kind === 'gzip') return { source, done: pipeline(source, createGunzip(), ex) };
  return { source, done: kind === 'zstd' ? pipeline(source, zstdDecompress, ex) : pipeline(source, ex) };
}

/**
 * Unpacks the cache layer `file` (`where` names it to the operator) into `dest`: directories and regular files of
 * the tree only. Links, devices, absolute paths, `..`, a file given twice, anything outside `blob/` and
 * `manifests/` (then it is not a Talos cache), or an entry past the room left are refused, naming the entry.
 */
export async function unpackCacheLayer(file: string, where: string, dest: string, room: UnpackRoom): Promise<number> {
  const ex = extract();
  const written = new Set<string>();
  const { source, done: fed } = feed(file, await compressionOf(file), ex);
  const read = readTree(ex, where, dest, written, new UnpackBudget(room)).catch((e: unknown) => {
    source.destroy();
    ex.destroy();
    throw e;
  });
  const [f, r] = await Promise.allSettled([fed, read]);
  const failure = r.status === 'rejected' && r.reason instanceof CacheTarError ? r.reason : f.status === 'rejected' ? f.reason : r.status === 'rejected' ? r.reason : undefined;
  if (failure instanceof CacheTarError) throw failure;
  if (failure) throw new CacheTarError(`${where} is not a readable tar archive: ${(failure as Error).message}`);
  return written.size;
}

async function readTree(ex: Extract, where: string, dest: string, written: Set<string>, budget: UnpackBudget): Promise<void> {
  for await (const entry of ex) {
    const { type, name: raw } = entry.header;
    const name = safeEntryName(raw, where);
    if (type !== 'file' && type !== 'directory') throw new CacheTarError(`${where}: refused entry "${raw}": a ${type}; a Talos cache holds only files and folders`);
    const ok = name === '' || (type === 'file' ? TREE_FILE.test(name) : TREE_DIR.test(name));
    if (!ok) throw new CacheTarError(`${where}: entry "${raw}" is not part of a Talos image cache (blob/sha256-<hex> and manifests/… only)`);
    if (type === 'directory' || name === '') {
      if (name) await mkdir(join(dest, name), { recursive: true });
      entry.resume();
      continue;
    }
    if (written.has(name)) throw new CacheTarError(`${where}: holds ${name} twice`);
    written.add(name);
    const over = budget.take(entry.header.size ?? 0);
    if (over) throw new CacheTarError(`${where}: entry "${raw}" ${over}; the cache is refused and nothing of it is imported`);
    await mkdir(dirname(join(dest, name)), { recursive: true });
    await pipeline(entry, createWriteStream(join(dest, name), { flags: 'wx' }));
  }
}
