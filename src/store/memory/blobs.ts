// The BlobBackend in memory: committed blobs in a map shared by every instance opened over it (so a "fresh
// process" sees the same bytes), spools as buffers. For tests of everything above the store; never configured.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { hexOf } from '../digest.js';
import type { BlobBackend, BlobStat, BlobUsage, ByteRange, Spool, VerifiedSpool } from '../ports.js';

/** What instances over the same memory store share: the committed blobs and what was quarantined. */
export class MemoryBlobs {
  readonly committed = new Map<string, { bytes: Buffer; committedMs: number }>();
  readonly quarantined = new Map<string, Buffer>();
}

/** Unverified bytes in memory; never visible as a blob until the backend commits it. */
class MemorySpool implements Spool {
  private chunks: Buffer[] = [];
  private written = 0;
  private gone = false;

  get bytesWritten(): number {
    return this.written;
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.gone) return Promise.reject(new Error('write to a discarded spool'));
    // A copy: the caller may reuse its buffer once the write resolves.
    this.chunks.push(Buffer.from(chunk));
    this.written += chunk.length;
    return Promise.resolve();
  }

  seal(): Promise<void> {
    return Promise.resolve();
  }

  discard(): Promise<void> {
    this.gone = true;
    this.chunks = [];
    return Promise.resolve();
  }

  bytes(): Buffer {
    if (this.gone) throw new Error('commit of a discarded spool');
    return Buffer.concat(this.chunks);
  }
}

export class MemoryBlobBackend implements BlobBackend {
  constructor(readonly data: MemoryBlobs = new MemoryBlobs()) {}

  stat(digest: string): Promise<BlobStat | undefined> {
    const b = this.data.committed.get(digest);
    return Promise.resolve(b ? { sizeBytes: b.bytes.length, committedMs: b.committedMs } : undefined);
  }

  read(digest: string, range: ByteRange): Promise<Readable | undefined> {
    const b = this.data.committed.get(digest);
    if (!b) return Promise.resolve(undefined);
    const part = range.end < range.start ? Buffer.alloc(0) : b.bytes.subarray(range.start, range.end + 1);
    return Promise.resolve(Readable.from(part.length > 0 ? [part] : []));
  }

  readAll(digest: string): Promise<Buffer | undefined> {
    const b = this.data.committed.get(digest);
    return Promise.resolve(b ? Buffer.from(b.bytes) : undefined);
  }

  createSpool(): Promise<Spool> {
    return Promise.resolve(new MemorySpool());
  }

  commit(verified: VerifiedSpool): Promise<void> {
    if (!(verified.spool instanceof MemorySpool)) return Promise.reject(new Error('MemoryBlobBackend commits only its own spools'));
    if (!this.data.committed.has(verified.digest)) {
      this.data.committed.set(verified.digest, { bytes: verified.spool.bytes(), committedMs: Date.now() });
    }
    return Promise.resolve();
  }

  delete(digest: string): Promise<boolean> {
    return Promise.resolve(this.data.committed.delete(digest));
  }

  quarantine(digest: string): Promise<string> {
    const b = this.data.committed.get(digest);
    if (!b) return Promise.reject(new Error(`no blob ${digest} to quarantine`));
    const where = `memory:quarantine/${hexOf(digest)}.${Date.now()}`;
    this.data.quarantined.set(where, b.bytes);
    this.data.committed.delete(digest);
    return Promise.resolve(where);
  }

  async *list(): AsyncGenerator<string> {
    yield* [...this.data.committed.keys()];
  }

  /** Exact at every call: the map is the truth. */
  usage(): Promise<BlobUsage> {
    let bytes = 0;
    for (const b of this.data.committed.values()) bytes += b.bytes.length;
    return Promise.resolve({ blobs: this.data.committed.size, bytes });
  }

  refresh(): void {
    // Nothing is memoised: usage() reads the shared map.
  }

  /** An import unpacks a tar into files whatever the store: a private temp folder the caller removes. */
  scratchDir(prefix: string): Promise<string> {
    return mkdtemp(join(tmpdir(), `sluice-memory-${prefix}`));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
