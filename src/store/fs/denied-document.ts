// denied.json through lowdb (`{"version":1,"entries":[...]}`); an unreadable one is renamed aside.
import { mkdir, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import { JSONFile } from 'lowdb/node';
import { DeniedLog, type DeniedDocument, type DeniedLogOptions, type DeniedStorage } from '../../policy/denied.js';

export class DeniedFile implements DeniedStorage {
  private readonly db: Low<DeniedDocument>;

  constructor(readonly location: string) {
    this.db = new Low<DeniedDocument>(new JSONFile<DeniedDocument>(location), { version: 1, entries: [] });
  }

  /**
   * null when the file is missing (lowdb's answer). The log reads once, at open: the folder is made here so a
   * timed flush is one write, nothing before it.
   */
  async read(): Promise<unknown> {
    await mkdir(dirname(this.location), { recursive: true });
    return this.db.adapter.read();
  }

  /** The whole document, least recently seen first: at most the newest `maxEntries`. */
  async write(doc: DeniedDocument, maxEntries: number): Promise<void> {
    this.db.data = { ...doc, entries: doc.entries.slice(-maxEntries) };
    await this.db.write();
  }

  async setAside(stamp: string): Promise<string> {
    const aside = `${this.location}.corrupt-${stamp}`;
    await rename(this.location, aside);
    return aside;
  }
}

/** Opens the denied log kept in `file`. */
export function openDeniedFile(file: string, opts: DeniedLogOptions = {}): Promise<DeniedLog> {
  return DeniedLog.open(new DeniedFile(file), opts);
}
