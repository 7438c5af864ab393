// The local spool area every backend writes through (fs and S3 alike): this process's own folder `<pid>-<random>`
// in the spools folder (processes may share it), the spool files blobs arrive in, free-space checks, atomic writes.
import { randomBytes } from 'node:crypto';
import { open as openCallback } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm, statfs, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { RegistryError } from '../../oci/errors.js';
import { isNoSpace, storeFull } from '../ingest.js';
import { isNotFound, listDir } from './dirs.js';
import type { Spool } from '../ports.js';

/** The free space on a spool's filesystem and the part of it no spool may take. */
export interface SpoolRoom {
  freeBytes: number;
  reserveBytes: number;
}

const MAX_RESERVE_BYTES = 64 * 1024 * 1024;
/** A growing spool looks at the free space again after at least this many bytes (more while the disk is roomy). */
const MIN_ROOM_CHECK_BYTES = 1024 * 1024;

export class LocalSpoolArea {
  private constructor(readonly dir: string) {}

  /**
   * Opens this process's spool folder and removes leftovers of writes that never committed — only those of
   * processes that are gone, so a CLI opening the store never disturbs a running server's downloads.
   */
  static async open(tmpRoot: string): Promise<LocalSpoolArea> {
    for (const entry of await listDir(tmpRoot)) {
      const pid = Number(/^(\d+)-/.exec(entry)?.[1]);
      if (!Number.isInteger(pid) || !isAlive(pid)) await rm(join(tmpRoot, entry), { recursive: true, force: true });
    }
    const area = new LocalSpoolArea(join(tmpRoot, `${process.pid}-${randomBytes(4).toString('hex')}`));
    await mkdir(area.dir, { recursive: true });
    return area;
  }

  /**
   * Runs a create in the folder, re-creating the folder once if something removed it (e.g. a CLI in another
   * pid namespace that took this process for dead).
   */
  async inTmp<T>(create: () => Promise<T>): Promise<T> {
    try {
      return await create();
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await mkdir(this.dir, { recursive: true });
      return create();
    }
  }

  /**
   * Bytes free on the spool's filesystem, and what every spool leaves free there (1/32 of the disk, at most
   * 64 MiB): the state documents beside the store and the other downloads still need room.
   */
  async room(): Promise<SpoolRoom> {
    const fs = await statfs(this.dir);
    return { freeBytes: fs.bavail * fs.bsize, reserveBytes: Math.min(MAX_RESERVE_BYTES, Math.floor((fs.blocks * fs.bsize) / 32)) };
  }

  /**
   * A new spool. A declared size that cannot fit is refused before its first byte, while the client can still
   * get an error status; the spool then watches the free space as it grows, declared size or not.
   */
  async createSpool(expectBytes?: number): Promise<LocalSpool> {
    let firstCheckBytes = 0;
    if (expectBytes !== undefined) {
      const { freeBytes, reserveBytes } = await this.room();
      if (expectBytes + reserveBytes > freeBytes) throw storeFull({ neededBytes: expectBytes, freeBytes });
      firstCheckBytes = nextCheckAfter(freeBytes, reserveBytes);
    }
    const path = this.tempPath();
    const fh = await this.inTmp(() => open(path, 'wx', 0o644)).catch((e: unknown) => Promise.reject(isNoSpace(e) ? storeFull() : e));
    return new LocalSpool(fh, path, () => this.room(), firstCheckBytes);
  }

  /** Writes a small file beside its destination's readers in one step: temp file, then rename. */
  async writeAtomic(dest: string, content: string): Promise<void> {
    const tmp = this.tempPath();
    await this.inTmp(() => writeFile(tmp, content, { flag: 'wx' }));
    await mkdir(dirname(dest), { recursive: true });
    await rename(tmp, dest);
  }

  scratchDir(prefix: string): Promise<string> {
    return this.inTmp(() => mkdtemp(join(this.dir, prefix)));
  }

  /** Removes the folder (nothing in it is committed content). */
  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  private tempPath(): string {
    return join(this.dir, `${Date.now()}-${randomBytes(8).toString('hex')}`);
  }
}

/** A spool file; once committed it is renamed into place, and its inode (what tailing readers hold) is the blob. */
export class LocalSpool implements Spool {
  private written = 0;
  private closed = false;
  /** Where the commit renamed (or is renaming) the file, so a reader arriving just after still finds the bytes. */
  private committedPath: string | undefined;

  constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    private readonly room: () => Promise<SpoolRoom>,
    /** Bytes written at which the free space is looked at (again): 0 when nobody looked yet. */
    private nextRoomCheck = 0,
  ) {}

  get bytesWritten(): number {
    return this.written;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.written + chunk.length > this.nextRoomCheck) await this.checkRoom(chunk.length);
    this.written += chunk.length;
    let off = 0;
    try {
      while (off < chunk.length) {
        const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off);
        off += bytesWritten;
      }
    } catch (e) {
      throw isNoSpace(e) ? storeFull({ receivedBytes: this.written }) : e;
    }
  }

  /**
   * Ends the write before the disk fills (a body of unknown length may never end): looked at again once half
   * of the room left has been written, so concurrent downloads cannot race past the reserve between two looks.
   */
  private async checkRoom(chunkBytes: number): Promise<void> {
    const { freeBytes, reserveBytes } = await this.room();
    if (freeBytes - chunkBytes < reserveBytes) throw storeNearlyFull({ freeBytes, reserveBytes, receivedBytes: this.written });
    this.nextRoomCheck = this.written + nextCheckAfter(freeBytes, reserveBytes);
  }

  async seal(): Promise<void> {
    await this.fh.sync();
    this.closed = true;
    await this.fh.close();
  }

  async discard(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.fh.close().catch(() => undefined);
    }
    await unlink(this.path).catch(() => undefined);
  }

  async openFd(): Promise<number | undefined> {
    try {
      return await openFd(this.path);
    } catch (e) {
      // Gone from the spool: renamed into place (open it there), or removed because the write failed.
      if (!isNotFound(e) || this.committedPath === undefined) return rethrowUnlessNotFound(e);
      return openFd(this.committedPath).catch(rethrowUnlessNotFound);
    }
  }

  /** The commit's step: the rename that makes the bytes the blob at `dest`. */
  async moveTo(dest: string): Promise<void> {
    this.committedPath = dest;
    await mkdir(dirname(dest), { recursive: true });
    await rename(this.path, dest);
  }
}

/** Half of the room left above the reserve (at least MIN_ROOM_CHECK_BYTES): the bytes until the next look. */
function nextCheckAfter(freeBytes: number, reserveBytes: number): number {
  return Math.max(MIN_ROOM_CHECK_BYTES, Math.floor((freeBytes - reserveBytes) / 2));
}

function storeNearlyFull(detail: { freeBytes: number; reserveBytes: number; receivedBytes: number }): RegistryError {
  return new RegistryError(
    'INSUFFICIENT_STORAGE',
    `the mirror's store is full: the blob would leave less than ${detail.reserveBytes} bytes free on its disk; nothing was committed`,
    detail,
  );
}

function rethrowUnlessNotFound(e: unknown): undefined {
  if (isNotFound(e)) return undefined;
  throw e;
}

/** A read-only descriptor on a file (callback fs: no FileHandle, which the fd-based sender does not need). */
export function openFd(path: string): Promise<number> {
  return new Promise((resolve, reject) => openCallback(path, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
}


function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export { isNotDir, isNotFound, listDir } from './dirs.js';
