// The flat tree of a Talos image cache (`blob/sha256-<hex>`, `manifests/<registry>/<repo>/reference/<tag>` and
// `…/digest/sha256-<hex>`), scanned without ever following a symbolic link out of it.
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ImportError, refuseLinkedFolders } from './layout-files.js';
import { digestOfFileName, MANIFESTS_DIR, registryOfDir } from './talos-cache-paths.js';

export interface CacheRepository {
  host: string;
  name: string;
  /** `manifests/<registry dir>/<repo>` relative to the tree. */
  path: string;
  tags: string[];
  /** Digests of the files under `digest/`. */
  digests: Set<string>;
}

/** The entries of a tree folder; a symbolic link there (or as the folder, or above it) refuses the whole tree. */
export async function entries(tree: Tree, rel: string): Promise<Array<{ name: string; dir: boolean; file: boolean }>> {
  await refuseLinkedFolders(tree.root, rel, tree.name, true);
  const list = await readdir(join(tree.root, rel), { withFileTypes: true }).catch(() => []);
  const link = list.find((e) => e.isSymbolicLink());
  if (link) throw new ImportError(`${tree.name(`${rel}/${link.name}`)} is a symbolic link; sluice follows no link out of an import (copy the file or folder itself in)`);
  return list.map((e) => ({ name: e.name, dir: e.isDirectory(), file: e.isFile() })).sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The digest a `sha256-<hex>` file stands for, as a list of one (none for anything else). */
export function digestsOf(e: { name: string; file: boolean }): string[] {
  const digest = e.file ? digestOfFileName(e.name) : undefined;
  return digest ? [digest] : [];
}

export interface Tree {
  root: string;
  name: (file: string) => string;
}

/** Every repository of the tree: a folder holding `reference/` or `digest/`, at any depth under its registry. */
export async function scanCache(tree: Tree): Promise<CacheRepository[]> {
  const out: CacheRepository[] = [];
  for (const reg of await entries(tree, MANIFESTS_DIR)) {
    if (reg.dir) await scanRepos(tree, `${MANIFESTS_DIR}/${reg.name}`, registryOfDir(reg.name), [], out);
  }
  return out;
}

async function scanRepos(tree: Tree, path: string, host: string, segments: string[], out: CacheRepository[]): Promise<void> {
  const here = await entries(tree, path);
  const sub = (n: string): boolean => here.some((e) => e.dir && e.name === n);
  if (segments.length > 0 && (sub('reference') || sub('digest'))) {
    const tags = (await entries(tree, `${path}/reference`)).filter((e) => e.file).map((e) => e.name);
    const digests = new Set((await entries(tree, `${path}/digest`)).flatMap((e) => digestsOf(e)));
    out.push({ host, name: segments.join('/'), path, tags, digests });
  }
  for (const e of here) {
    if (e.dir && e.name !== 'reference' && e.name !== 'digest') await scanRepos(tree, `${path}/${e.name}`, host, [...segments, e.name], out);
  }
}

/**
 * A folder is a flat cache when it has `manifests/` and no `index.json` (which would make it an OCI layout). A
 * `manifests` that is a symbolic link counts, so its import is refused by name rather than read as a layout.
 */
export async function isFlatCache(dir: string): Promise<boolean> {
  const manifests = await lstat(join(dir, MANIFESTS_DIR)).catch(() => undefined);
  const index = await lstat(join(dir, 'index.json')).catch(() => undefined);
  return (manifests?.isDirectory() === true || manifests?.isSymbolicLink() === true) && index === undefined;
}
