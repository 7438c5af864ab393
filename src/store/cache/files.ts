// The cache's folder on local disk: verified blobs at `<path>/blobs/sha256/<ab>/<hex>`, fills in progress under
// `<path>/filling/`. A file is renamed into blobs/ only after its bytes hashed to its digest, so being there is the proof.
import { createHash, randomBytes } from 'node:crypto';
import { close, fstatSync, open as openCallback, statSync, type Stats } from 'node:fs';
import { mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { hexOf, HEX_RE } from '../digest.js';
import { isNotFound, listDir } from '../local/dirs.js';

/**
 * The mtime a verified cache file is given once it is complete. Any write to the file afterwards (a stray process,
 * an operator, a truncation) sets its mtime to now, so a file whose mtime or size differ is no longer the proof.
 */
export const VERIFIED_MTIME_MS = Date.UTC(2000, 0, 1);

export interface CachedFile {
  digest: string;
  sizeBytes: number;
  /** When it was filled (ctime: the rename), so the LRU starts in fill order. */
  filledMs: number;
}

export class CacheFiles {
  readonly blobsDir: string;
  readonly fillDir: string;

  constructor(readonly root: string) {
    this.blobsDir = join(root, 'blobs', 'sha256');
    this.fillDir = join(root, 'filling');
  }

  path(digest: string): string {
    const hex = hexOf(digest);
    return join(this.blobsDir, hex.slice(0, 2), hex);
  }

  /**
   * What the cache holds, from names and stat alone (no byte is reread); fills a killed process left are removed,
   * and so are files changed since they were verified. One readdir per shard, then a synchronous stat per file:
   * it runs before the server listens, and 10,000 stats awaited one by one cost 4–10× as much (bench/README.md).
   */
  async scan(): Promise<CachedFile[]> {
    await rm(this.fillDir, { recursive: true, force: true });
    await mkdir(this.fillDir, { recursive: true });
    await mkdir(this.blobsDir, { recursive: true });
    const out: CachedFile[] = [];
    for (const prefix of await listDir(this.blobsDir)) {
      const stale: string[] = [];
      for (const hex of await listDir(join(this.blobsDir, prefix))) {
        const path = join(this.blobsDir, prefix, hex);
        const s = statOrUndefined(path);
        if (!s) continue;
        if (!HEX_RE.test(hex) || hex.slice(0, 2) !== prefix || !isVerified(s, s.size)) stale.push(path);
        else out.push({ digest: `sha256:${hex}`, sizeBytes: s.size, filledMs: s.ctimeMs });
      }
      for (const path of stale) await unlink(path).catch(() => undefined);
    }
    return out.sort((a, b) => a.filledMs - b.filledMs);
  }

  /**
   * Streams `body` into a fill file while hashing it; only bytes that are the digest's, all `sizeBytes` of them,
   * are synced, stamped and renamed into place. Anything else throws and leaves no file. `signal` cuts the fill.
   */
  async fill(digest: string, sizeBytes: number, body: Readable, signal: AbortSignal): Promise<void> {
    const tmp = join(this.fillDir, `${hexOf(digest)}.${randomBytes(4).toString('hex')}`);
    const fh = await open(tmp, 'wx');
    let closed = false;
    try {
      const hash = createHash('sha256');
      let n = 0;
      for await (const chunk of body) {
        signal.throwIfAborted();
        const b = chunk as Buffer;
        n += b.length;
        if (n > sizeBytes) throw new Error(`the object store gave more than ${sizeBytes} bytes for ${digest}`);
        hash.update(b);
        await fh.write(b);
      }
      const got = `sha256:${hash.digest('hex')}`;
      if (n !== sizeBytes || got !== digest) throw new Error(`the object store gave ${n} bytes hashing to ${got} for ${digest} (${sizeBytes} bytes)`);
      await fh.sync();
      const now = new Date();
      await fh.utimes(now, new Date(VERIFIED_MTIME_MS));
      await fh.close();
      closed = true;
      signal.throwIfAborted();
      const dest = this.path(digest);
      await mkdir(dirname(dest), { recursive: true });
      await rename(tmp, dest);
    } catch (e) {
      body.destroy();
      if (!closed) await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  }

  /**
   * A descriptor on the cached file when it is still what was verified (size and stamp, one fstat), else
   * undefined: missing, or changed on disk (then the caller drops it). Open before checking, so the check holds
   * for exactly the bytes the descriptor reads.
   */
  openVerified(digest: string, sizeBytes: number): Promise<{ fd: number } | { changed: boolean }> {
    return new Promise((resolve, reject) => {
      openCallback(this.path(digest), 'r', (err, fd) => {
        if (err) return isNotFound(err) ? resolve({ changed: false }) : reject(err);
        // fstat of an open descriptor does no path lookup: done inline, it saves a second trip through the thread pool.
        let verified: boolean;
        try {
          verified = isVerified(fstatSync(fd), sizeBytes);
        } catch (e) {
          close(fd, () => reject(e));
          return;
        }
        if (verified) resolve({ fd });
        else close(fd, () => resolve({ changed: true }));
      });
    });
  }

  /** Removes a cached file; a reader holding it open keeps reading it (Linux frees the bytes at its close). */
  async remove(digest: string): Promise<void> {
    await unlink(this.path(digest)).catch((e: unknown) => {
      if (!isNotFound(e)) throw e;
    });
  }
}

/** Gone (removed meanwhile) or unreadable: not part of the cache. */
function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

function isVerified(s: Stats, sizeBytes: number): boolean {
  return s.size === sizeBytes && s.mtimeMs === VERIFIED_MTIME_MS;
}
