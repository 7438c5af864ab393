// window.json: the manual window as JSON (`null` when none), replaced through a temp name and a rename.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ManualWindow } from '../../window/state.js';
import type { ManualWindowStorage } from '../../window/manual-store.js';

export class WindowFile implements ManualWindowStorage {
  private seq = 0;

  constructor(readonly location: string) {}

  async read(): Promise<ManualWindow | null> {
    try {
      return JSON.parse(await readFile(this.location, 'utf8')) as ManualWindow | null;
    } catch {
      return null;
    }
  }

  /** Each write has its own temp name, so overlapping writers (server, CLI) never share one. */
  async write(manual: ManualWindow | null): Promise<void> {
    const tmp = `${this.location}.${process.pid}.${++this.seq}.tmp`;
    await mkdir(dirname(this.location), { recursive: true });
    await writeFile(tmp, JSON.stringify(manual));
    await rename(tmp, this.location);
  }
}
