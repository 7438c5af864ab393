// A snapshot of a folder tree (relative path → size and mtime) to prove a test touched nothing it should not.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface Snapshot {
  files: Map<string, string>;
}

/** Every file below `root`, skipping paths for which `skip` is true (and everything beneath them). */
export async function snapshot(root: string, skip: (rel: string) => boolean = () => false): Promise<Snapshot> {
  const files = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (skip(r)) continue;
      if (e.isDirectory()) {
        files.set(`${r}/`, 'dir');
        await walk(r);
      } else {
        const s = await stat(join(root, r));
        files.set(r, `${s.size}:${s.mtimeMs}`);
      }
    }
  };
  await walk('');
  return { files };
}
