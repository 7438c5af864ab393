// allowlist.json as the store keeps it: lowdb's JSONFile (steno: temp file + rename, atomic) plus fsync of the
// file and its folder (durable), edits serialised across processes by `<file>.lock`, hand edits noticed by a
// FileWatch. The shape on disk is `{"version":1,"rules":[...]}`, as every release wrote it.
import { mkdir, open, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { JSONFile } from 'lowdb/node';
import { Allowlist, type AllowlistDocument, type AllowlistOptions, type AllowlistStorage, type DocumentWatch, type DocumentWatchOptions } from '../../policy/allowlist.js';
import { FileWatch } from './file-watch.js';
import { FsLayout } from './layout.js';
import { LockTimeoutError, withFileLock, type FileLockOptions } from './filelock.js';

export { LockTimeoutError, withFileLock, type FileLockOptions } from './filelock.js';

export class AllowlistFile implements AllowlistStorage {
  private readonly json: JSONFile<AllowlistDocument>;

  constructor(
    readonly location: string,
    private readonly lock: FileLockOptions = {},
  ) {
    this.json = new JSONFile<AllowlistDocument>(location);
  }

  async locked<T>(fn: () => Promise<T>): Promise<T> {
    await mkdir(dirname(this.location), { recursive: true });
    return withFileLock(FsLayout.lockOf(this.location), fn, this.lock);
  }

  async read(): Promise<unknown> {
    const raw: unknown = await this.json.read();
    // lowdb answers null both for a missing file and for a file containing `null`.
    if (raw === null && !(await exists(this.location))) return undefined;
    return raw;
  }

  async write(doc: AllowlistDocument): Promise<void> {
    await this.json.write(doc);
    await fsyncPath(this.location);
    await fsyncPath(dirname(this.location));
  }

  watch(onChange: () => Promise<void>, opts?: DocumentWatchOptions): DocumentWatch {
    return new FileWatch(this.location, onChange, opts);
  }

  isLockTimeout(err: unknown): err is Error {
    return err instanceof LockTimeoutError;
  }
}

/** Opens the allowlist kept in `file` (the CLI, the server and the tests' child processes use this). */
export function openAllowlistFile(file: string, seed: string[] = [], opts: AllowlistOptions & FileLockOptions = {}): Promise<Allowlist> {
  const { now, ...lock } = opts;
  return Allowlist.open(new AllowlistFile(file, lock), seed, now ? { now } : {});
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
