// The layer of a Talos image cache in OCI form (`talosctl images cache-create --layout oci`): a tar (gzip, zstd or
// plain) of the flat tree, unpacked only where the tree lives — never outside dest, never through a link.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { PassThrough, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import { DecompressStream } from 'zstd-napi';

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

/** The layer's bytes decompressed by what its first bytes say (gzip 1f 8b, zstd 28 b5 2f fd, else a plain tar). */
async function decompressor(file: string): Promise<Transform> {
  const fh = await open(file, 'r');
  const magic = Buffer.alloc(4);
  await fh.read(magic, 0, 4, 0).finally(() => fh.close());
  if (magic[0] === 0x1f && magic[1] === 0x8b) return createGunzip();
  if (magic.equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return new DecompressStream();
  return new PassThrough();
}

/**
 * Unpacks the cache layer `file` (`where` names it to the operator) into `dest`: directories and regular files of
 * the tree only. Links, devices, absolute paths, `..`, a file given twice, or anything outside `blob/` and
 * `manifests/` (then it is not a Talos cache) are refused, naming the entry, before anything of it is written.
 */
export async function unpackCacheLayer(file: string, where: string, dest: string): Promise<number> {
  const ex = extract();
  const written = new Set<string>();
  const done = (async () => {
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
      await mkdir(dirname(join(dest, name)), { recursive: true });
      await pipeline(entry, createWriteStream(join(dest, name), { flags: 'wx' }));
    }
  })();
  try {
    await Promise.all([pipeline(createReadStream(file), await decompressor(file), ex), done]);
  } catch (e) {
    if (e instanceof CacheTarError) throw e;
    throw new CacheTarError(`${where} is not a readable tar archive: ${(e as Error).message}`);
  }
  return written.size;
}
