// A BlobBackend that keeps the blobs read from another (the object store) on local disk, up to maxBytes, least
// recently used going first, and hands out descriptors on them: a replica on S3 serves hits at local-disk speed.
import { close, createReadStream, readFile } from 'node:fs';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { BlobBackend, BlobStat, BlobUsage, ByteRange, Spool, VerifiedSpool } from '../ports.js';
import { LocalSpool } from '../local/spool.js';
import { CacheFiles } from './files.js';

const STREAM_CHUNK = 1024 * 1024;

export interface BlobCacheOptions {
  path: string;
  maxBytes: number;
}

/** A local file said to hold a blob's bytes (a committed spool): copied in, and verified like a download. */
interface LocalCopy {
  path: string;
  sizeBytes: number;
}

interface Entry {
  sizeBytes: number;
  /** False while filling: the bytes are reserved but not there yet. */
  ready: boolean;
  /** Cuts the fill when its reservation is evicted or the blob is deleted. */
  abort?: AbortController;
  /** Notices may have been missed since it was filled: ask the object store once before serving it again. */
  suspect: boolean;
}

/** What a cache counts, for tests and metrics. */
export interface BlobCacheCounts {
  hits: number;
  fills: number;
  /** Cached files found changed on disk, dropped and refetched. */
  changed: number;
}

export class CachedBlobBackend implements BlobBackend {
  readonly counts: BlobCacheCounts = { hits: 0, fills: 0, changed: 0 };
  private readonly entries: LRUCache<string, Entry>;
  /** One fill per digest, however many clients ask. */
  private readonly flights = new Map<string, Promise<Entry | undefined>>();
  /** Unlinks of evicted files still under way: a fill waits for them, so the folder never holds more than maxBytes. */
  private readonly removing = new Set<Promise<void>>();

  private constructor(private readonly inner: BlobBackend, private readonly files: CacheFiles, private readonly opts: BlobCacheOptions) {
    this.entries = new LRUCache<string, Entry>({
      maxSize: opts.maxBytes,
      // lru-cache wants sizes ≥ 1; an empty blob still takes a file.
      sizeCalculation: (e) => Math.max(1, e.sizeBytes),
      dispose: (e, digest, reason) => {
        if (reason !== 'evict' && reason !== 'delete') return;
        e.abort?.abort();
        if (e.ready) this.unlinkSoon(digest);
      },
    });
  }

  /** Rebuilds the index from names and sizes on disk (no byte is reread); fills a killed process left are dropped. */
  static async open(inner: BlobBackend, opts: BlobCacheOptions): Promise<CachedBlobBackend> {
    const files = new CacheFiles(opts.path);
    const c = new CachedBlobBackend(inner, files, opts);
    for (const f of await files.scan()) c.entries.set(f.digest, { sizeBytes: f.sizeBytes, ready: true, suspect: false });
    await Promise.all(c.removing);
    return c;
  }

  /** The bytes the cached files take now (what maxBytes bounds). */
  get cachedBytes(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.ready) n += e.sizeBytes;
    return n;
  }

  async stat(digest: string): Promise<BlobStat | undefined> {
    const e = this.entries.peek(digest);
    if (e?.ready && !e.suspect) return { sizeBytes: e.sizeBytes };
    return this.inner.stat(digest);
  }

  /**
   * A descriptor on the cached file, filling it first on a miss. Undefined when the blob is not in the object
   * store, or cannot be kept (larger than maxBytes, or the fill failed or was cut): the caller then streams.
   */
  readonly openFd = async (digest: string): Promise<number | undefined> => {
    for (let attempt = 0; attempt < 2; attempt++) {
      let e = this.entries.get(digest);
      if (e?.ready && e.suspect) e = await this.confirm(digest, e);
      if (!e?.ready) e = await this.filled(digest);
      if (!e) return undefined;
      const got = await this.files.openVerified(digest, e.sizeBytes);
      if ('fd' in got) {
        this.counts.hits++;
        return got.fd;
      }
      if (got.changed) this.counts.changed++;
      if (this.entries.peek(digest) === e) this.entries.delete(digest);
    }
    return undefined;
  };

  async read(digest: string, range: ByteRange): Promise<Readable | undefined> {
    const fd = await this.cachedFd(digest);
    if (fd === undefined) return this.inner.read(digest, range);
    if (range.end < range.start) {
      close(fd, () => undefined);
      return Readable.from([]);
    }
    return createReadStream('', { fd, start: range.start, end: range.end, highWaterMark: STREAM_CHUNK, autoClose: true });
  }

  async readAll(digest: string): Promise<Buffer | undefined> {
    const fd = await this.cachedFd(digest);
    if (fd === undefined) return this.inner.readAll(digest);
    return new Promise((resolve, reject) => {
      readFile(fd, (err, body) => {
        close(fd, () => undefined);
        if (err) reject(err);
        else resolve(body);
      });
    });
  }

  /** A descriptor when the blob is cached and unchanged; no fill (manifests and configs are memoised above). */
  private async cachedFd(digest: string): Promise<number | undefined> {
    const e = this.entries.get(digest);
    if (!e?.ready || e.suspect) return undefined;
    const got = await this.files.openVerified(digest, e.sizeBytes);
    if ('fd' in got) return got.fd;
    if (got.changed) this.counts.changed++;
    if (this.entries.peek(digest) === e) this.entries.delete(digest);
    return undefined;
  }

  private filled(digest: string, from?: LocalCopy): Promise<Entry | undefined> {
    let flight = this.flights.get(digest);
    if (!flight) {
      flight = this.fill(digest, from).finally(() => this.flights.delete(digest));
      this.flights.set(digest, flight);
    }
    return flight;
  }

  /**
   * Reserves the size (evicting the least recently used), then downloads (or copies a local file of the same
   * bytes), verifies and renames into place.
   */
  private async fill(digest: string, from?: LocalCopy): Promise<Entry | undefined> {
    const s = from ?? (await this.inner.stat(digest));
    if (!s || s.sizeBytes > this.opts.maxBytes) return undefined;
    const e: Entry = { sizeBytes: s.sizeBytes, ready: false, abort: new AbortController(), suspect: false };
    this.entries.set(digest, e);
    if (this.entries.peek(digest) !== e) return undefined;
    try {
      await Promise.all(this.removing);
      const body = from ? createReadStream(from.path, { highWaterMark: STREAM_CHUNK }) : await this.inner.read(digest, { start: 0, end: s.sizeBytes - 1 });
      if (!body) throw new Error(`${digest} left the object store`);
      await this.files.fill(digest, s.sizeBytes, body, e.abort?.signal ?? new AbortController().signal);
    } catch {
      if (this.entries.peek(digest) === e) this.entries.delete(digest);
      return undefined;
    }
    this.counts.fills++;
    delete e.abort;
    if (this.entries.peek(digest) !== e) {
      // Evicted or deleted while it was renamed: the file must go too.
      this.unlinkSoon(digest);
      return undefined;
    }
    e.ready = true;
    return e;
  }

  /** A HEAD after missed notices: still in the object store → trusted again; gone → dropped. */
  private async confirm(digest: string, e: Entry): Promise<Entry | undefined> {
    if (await this.inner.stat(digest)) {
      e.suspect = false;
      return e;
    }
    this.forget(digest);
    return undefined;
  }

  private unlinkSoon(digest: string): void {
    const p = this.files.remove(digest).catch(() => undefined);
    this.removing.add(p);
    void p.finally(() => this.removing.delete(p));
  }

  /** Drops this replica's copy (another replica's gc removed the blob); a read in progress keeps its descriptor. */
  forget(digest: string): void {
    this.entries.delete(digest);
  }

  /** Notices may have been lost (the LISTEN connection dropped): every cached blob is confirmed once on its next hit. */
  suspectAll(): void {
    for (const e of this.entries.values()) e.suspect = true;
  }

  createSpool(expectBytes?: number): Promise<Spool> {
    return this.inner.createSpool(expectBytes);
  }

  /**
   * The replica that downloaded a blob keeps a copy at once, from its verified spool (hashed again on the way in),
   * so its next GET makes no object-store request. In the background: the commit does not wait for the copy.
   */
  async commit(verified: VerifiedSpool): Promise<void> {
    await this.inner.commit(verified);
    const path = verified.spool instanceof LocalSpool ? verified.spool.path : undefined;
    if (path === undefined || this.entries.has(verified.digest) || this.flights.has(verified.digest)) return;
    void this.filled(verified.digest, { path, sizeBytes: verified.sizeBytes });
  }

  /** The other replicas are told by the store (Store.deleteBlob: BlobNotices), and drop their copies. */
  delete(digest: string): Promise<boolean> {
    this.forget(digest);
    return this.inner.delete(digest);
  }

  quarantine(digest: string): Promise<string> {
    this.forget(digest);
    return this.inner.quarantine(digest);
  }

  list(): AsyncIterable<string> {
    return this.inner.list();
  }

  usage(): Promise<BlobUsage> {
    return this.inner.usage();
  }

  refresh(): void {
    this.inner.refresh();
  }

  scratchDir(prefix: string): Promise<string> {
    return this.inner.scratchDir(prefix);
  }

  async close(): Promise<void> {
    for (const e of this.entries.values()) e.abort?.abort();
    await Promise.allSettled([...this.flights.values()]);
    await Promise.all(this.removing);
    await this.inner.close();
  }
}
