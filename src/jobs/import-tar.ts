// The .tar side of `sluice import`: unpacks only the files an image layout has, at the archive's top or under
// one top folder (what `tar -cf x.tar layout/` gives), and names the archive — never the temp folder — when wrong.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join, normalize } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';

export class TarLayoutError extends Error {}

/** A layout file, at the top (`folder` '') or one folder down. */
const LAYOUT_FILE = /^(?:([^/]+)\/)?(index\.json|oci-layout|blobs\/sha256\/[a-f0-9]{64})$/;

/**
 * Extracts the layout files of `tarPath` into `dest` and returns the folder (relative to dest, '' for the top)
 * that holds the layout: the top when it has an index.json, else the one top folder that has one.
 */
export async function extractLayoutTar(tarPath: string, dest: string): Promise<string> {
  const folders = new Set<string>();
  let entries = 0;
  try {
    await extractInto(tarPath, dest, (folder) => {
      entries++;
      if (folder !== undefined) folders.add(folder);
    });
  } catch (e) {
    if (e instanceof TarLayoutError) throw e;
    throw new TarLayoutError(`${tarPath} is not a readable tar archive: ${(e as Error).message}`);
  }
  if (folders.has('')) return '';
  const found = [...folders].sort();
  if (found.length === 1) return found[0] ?? '';
  if (found.length > 1) {
    throw new TarLayoutError(`${tarPath} holds an image layout under each of ${found.map((f) => `${f}/`).join(', ')}; tar one layout's contents`);
  }
  if (entries === 0) throw new TarLayoutError(`${tarPath} is empty: no index.json; tar the layout's contents (tar -cf ${tarPath} -C LAYOUT .)`);
  throw new TarLayoutError(`${tarPath} has no index.json at its top or under one top folder: it is not a .tar of an OCI image layout`);
}

/** Calls `seen` per entry with the folder of an extracted index.json (undefined for anything else). */
async function extractInto(tarPath: string, dest: string, seen: (indexFolder: string | undefined) => void): Promise<void> {
  const ex = extract();
  const written = new Set<string>();
  const done = (async () => {
    for await (const entry of ex) {
      const name = normalize(entry.header.name).replace(/\/$/, '');
      const m = LAYOUT_FILE.exec(name);
      const folder = m?.[1] ?? '';
      const wanted = entry.header.type === 'file' && m !== null && folder !== '.' && folder !== '..';
      seen(wanted && m?.[2] === 'index.json' ? folder : undefined);
      if (!wanted) {
        entry.resume();
        await new Promise<void>((resolve) => entry.on('end', resolve));
        continue;
      }
      if (written.has(name)) throw new TarLayoutError(`${tarPath} holds ${name} twice`);
      written.add(name);
      const out = join(dest, name);
      await mkdir(dirname(out), { recursive: true });
      await pipeline(entry, createWriteStream(out, { flags: 'wx' }));
    }
  })();
  await Promise.all([pipeline(createReadStream(tarPath), ex), done]);
}
