// Reading local folders, for the spool area and the fs store: a missing folder lists as empty, and the
// errno checks that say a path is not there.
import { readdir } from 'node:fs/promises';

export async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if (isNotFound(e) || isNotDir(e)) return [];
    throw e;
  }
}

export function isNotFound(e: unknown): boolean {
  return (e as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

export function isNotDir(e: unknown): boolean {
  return (e as NodeJS.ErrnoException | undefined)?.code === 'ENOTDIR';
}
