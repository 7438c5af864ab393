// The BlobBackend on a folder, in the layout every sluice store has had (layout.ts): blobs by digest, spools in
// this process's spool folder, quarantined bytes aside. A commit is fsync + rename, so it is atomic.
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { dirname } from 'node:path';
import { HEX_RE } from '../digest.js';
import type { FsLayout } from './layout.js';
import type { BlobBackend, BlobStat, BlobUsage, ByteRange, VerifiedSpool } from '../ports.js';
import { BlobUsageCount } from '../local/usage.js';
import { LocalSpool, LocalSpoolArea, isNotFound, listDir, openFd } from '../local/spool.js';

/** Read size for streaming blobs: large chunks mean fewer syscalls and fewer trips through the event loop. */
const STREAM_CHUNK = 1024 * 1024;

export interface FsBlobOptions {
  /** Told when a blob turned out to be gone (removed by another process), so memoised facts about it go. */
  onGone?: (digest: string) => void;
}

export class FsBlobBackend implements BlobBackend {
  /** Counted once when first asked, then kept current by commit and delete. */
  private readonly counts = new BlobUsageCount((d) => this.stat(d), (prefix) => this.listPrefix(prefix));
  /** Commits per digest run one after another, so "was it there already?" is exact within the process. */
  private readonly commits = new Map<string, Promise<void>>();
  private readonly onGone: (digest: string) => void;

  constructor(readonly paths: FsLayout, readonly spools: LocalSpoolArea, opts: FsBlobOptions = {}) {
    this.onGone = opts.onGone ?? (() => undefined);
  }

  static async open(paths: FsLayout, spools: LocalSpoolArea, opts: FsBlobOptions = {}): Promise<FsBlobBackend> {
    await mkdir(paths.blobsDir, { recursive: true });
    return new FsBlobBackend(paths, spools, opts);
  }

  blobPath(digest: string): string {
    return this.paths.blob(digest);
  }

  async stat(digest: string): Promise<BlobStat | undefined> {
    try {
      const s = await stat(this.blobPath(digest));
      // The rename of a commit keeps the spool's mtime: the time its last byte was written.
      return { sizeBytes: s.size, committedMs: s.mtimeMs };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * The file is opened before any header is sent, so a vanished blob is a miss, not a cut. The caller always
   * gives an end: an open end makes Node read past EOF with a fresh buffer.
   */
  async read(digest: string, range: ByteRange): Promise<Readable | undefined> {
    const fd = await this.openFd(digest);
    if (fd === undefined) return undefined;
    // The callback stream on a plain fd costs less per chunk than a FileHandle stream (no promise per read).
    return createReadStream('', { fd, start: range.start, end: range.end, highWaterMark: STREAM_CHUNK, autoClose: true });
  }

  async readAll(digest: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.blobPath(digest));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** An arrow, so the HTTP layer can hold it without a bind: the hot path is this one open. */
  readonly openFd = async (digest: string): Promise<number | undefined> => {
    try {
      return await openFd(this.blobPath(digest));
    } catch (e) {
      if (!isNotFound(e)) throw e;
      // Another process removed it (verify --repair): what is memoised about it, and the totals, are stale.
      this.counts.reset();
      this.onGone(digest);
      return undefined;
    }
  };

  createSpool(expectBytes?: number): Promise<LocalSpool> {
    return this.spools.createSpool(expectBytes);
  }

  commit(verified: VerifiedSpool): Promise<void> {
    const { spool, digest } = verified;
    if (!(spool instanceof LocalSpool)) throw new Error('FsBlobBackend commits only its own spools');
    const dest = this.blobPath(digest);
    const before = this.commits.get(digest) ?? Promise.resolve();
    const run = before.then(() => this.place(spool, dest, verified));
    this.commits.set(digest, run);
    const forget = (): void => {
      if (this.commits.get(digest) === run) this.commits.delete(digest);
    };
    run.then(forget, forget);
    return run;
  }

  private async place(spool: LocalSpool, dest: string, verified: VerifiedSpool): Promise<void> {
    if (await exists(dest)) await spool.moveTo(dest);
    else await this.counts.adding(verified.digest, verified.sizeBytes, () => spool.moveTo(dest));
  }

  async delete(digest: string): Promise<boolean> {
    const path = this.blobPath(digest);
    const size = (await this.stat(digest))?.sizeBytes;
    if (size === undefined) return false;
    try {
      await unlink(path);
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
    this.counts.change(digest, -1, -size);
    return true;
  }

  async quarantine(digest: string): Promise<string> {
    const dest = this.paths.quarantine(digest, Date.now());
    const size = (await this.stat(digest))?.sizeBytes ?? 0;
    await mkdir(dirname(dest), { recursive: true });
    await rename(this.blobPath(digest), dest);
    this.counts.change(digest, -1, -size);
    return dest;
  }

  async *list(): AsyncGenerator<string> {
    for (const prefix of await listDir(this.paths.blobsDir)) yield* await this.listPrefix(prefix);
  }

  private async listPrefix(prefix: string): Promise<string[]> {
    const hexes = await listDir(this.paths.blobPrefixDir(prefix));
    return hexes.filter((hex) => HEX_RE.test(hex)).map((hex) => `sha256:${hex}`);
  }

  usage(): Promise<BlobUsage> {
    return this.counts.get();
  }

  refresh(): void {
    this.counts.reset();
  }

  scratchDir(prefix: string): Promise<string> {
    return this.spools.scratchDir(prefix);
  }

  close(): Promise<void> {
    return this.spools.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}
