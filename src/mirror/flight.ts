// Single-flight blob ingest: one upstream download per digest written into the store, and any number of
// clients sent the temp file as it grows. A waiting client is woken when as much as it asked for has arrived
// (a buffer's worth), not on every upstream chunk: N clients woken per chunk would slow the one download they wait on.
// The blob's first bytes are also held in memory while it downloads, so every client's first bytes go out at once.
import type { GrowingFile } from '../store/ingest.js';
import { RegistryError } from '../oci/errors.js';
import type { BlobInfo, IngestWriter } from '../store/store.js';

/** How much of a blob's beginning is held in memory while it downloads: more than the first upstream chunk or two. */
const HEAD_BYTES = 256 * 1024;

export class Flight {
  written = 0;
  result: BlobInfo | undefined;
  failure: Error | undefined;
  /** What actually failed (a digest mismatch before it became the client's 502), for the ingest metrics. */
  cause: unknown;
  readonly done: Promise<BlobInfo>;
  private settle!: { resolve: (b: BlobInfo) => void; reject: (e: Error) => void };
  private readonly waiters = new Waiters();
  /**
   * The blob's first HEAD_BYTES, copied as they arrive and dropped when the download ends: the first bytes of
   * N clients woken together go out without waiting for the spool write, nor N file reads queued behind N opens.
   */
  private head: Buffer | undefined;
  private headBytes = 0;

  constructor(
    readonly digest: string,
    readonly sizeBytes: number | undefined,
    private readonly writer: IngestWriter,
  ) {
    this.done = new Promise<BlobInfo>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // Waiters attach their own handlers; this keeps an unobserved failure from crashing the process.
    this.done.catch(() => undefined);
  }

  /** Pumps the upstream body into the store; resolves or rejects `done` exactly once. */
  async run(body: AsyncIterable<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of body) {
        if (this.keepHead(chunk)) this.waiters.wake(this.growth.available());
        await this.writer.write(chunk);
        this.written = this.writer.bytesWritten;
        this.waiters.wake(this.growth.available());
      }
      this.result = await this.writer.commit();
      this.head = undefined;
      this.waiters.wakeAll();
      this.settle.resolve(this.result);
    } catch (e) {
      this.head = undefined;
      await this.writer.abort();
      this.cause = e;
      this.failure = upstreamFault(e, this.digest);
      this.waiters.wakeAll();
      this.settle.reject(this.failure);
    }
  }

  /** How much of the blob clients may be sent now, and a wait for more (see blob-sender.ts). */
  readonly growth: GrowingFile = {
    // The last byte waits for verification: with Content-Length set, a client that had every byte would hold a
    // complete response even if the digest check then failed. Cutting it one byte short cannot be mistaken.
    available: () => {
      const have = Math.max(this.written, this.headBytes);
      return this.sizeBytes !== undefined && have >= this.sizeBytes && !this.result ? have - 1 : have;
    },
    failure: () => this.failure,
    next: (atLeast, signal) => new Promise<void>((resolve) => {
      const mark = atLeast ?? this.growth.available() + 1;
      if (this.result || this.failure || signal?.aborted || this.growth.available() >= mark) return resolve();
      const waiter = { mark, wake: resolve };
      this.waiters.add(waiter);
      signal?.addEventListener('abort', () => {
        this.waiters.remove(waiter);
        resolve();
      }, { once: true });
    }),
    copyHead: (buf, length, position) => {
      const head = this.head;
      const end = Math.min(position + length, this.headBytes, this.growth.available());
      return head && end > position ? head.copy(buf, 0, position, end) : 0;
    },
  };

  /**
   * Copies what of `chunk` falls within the head; false when none did. Only while the head is all the bytes there
   * are, and within the declared size: an upstream sending more is cut by the writer, and its extra bytes must
   * never be offered to a client.
   */
  private keepHead(chunk: Uint8Array): boolean {
    const size = this.sizeBytes;
    // Only for clients already waiting for the first bytes: a download nobody tails (a sync) keeps nothing in memory.
    if (this.headBytes === 0 && this.waiters.size === 0) return false;
    if (size === undefined || this.headBytes !== this.written || this.headBytes >= HEAD_BYTES || this.headBytes + chunk.length > size) return false;
    this.head ??= Buffer.allocUnsafe(Math.min(size, HEAD_BYTES));
    const n = Math.min(chunk.length, this.head.length - this.headBytes);
    this.head.set(chunk.subarray(0, n), this.headBytes);
    this.headBytes += n;
    return true;
  }

  /** Readers waiting for more of the blob (for tests: a wait given up is forgotten). */
  get waiting(): number {
    return this.waiters.size;
  }

  /** Whether clients may be sent the blob while it grows (its spool is a file); else they wait for the commit. */
  get tailable(): boolean {
    return this.writer.spool.openFd !== undefined;
  }

  /** A descriptor on the blob's bytes: the spool while it grows, the committed blob once it is in place. */
  async openFd(): Promise<number> {
    if (!this.writer.spool.openFd) throw new Error(`blob ${this.digest} cannot be read while it downloads (its spool is no file)`);
    const fd = await this.writer.spool.openFd();
    if (fd !== undefined) return fd;
    // Joined just as the ingest ended and the spool went without becoming the blob: the write failed. The
    // discard can land before `failure` is set, so wait for the outcome rather than read it now.
    await this.done.catch(() => undefined);
    throw this.failure ?? new Error(`blob ${this.digest} left the store just after its download`);
  }
}

/** Readers waiting on a growing file, each until `available()` reaches its mark; scanned only when the lowest mark is reached. */
interface Waiter {
  mark: number;
  wake: () => void;
}

class Waiters {
  private list: Waiter[] = [];
  private lowest = Infinity;

  add(w: Waiter): void {
    this.list.push(w);
    if (w.mark < this.lowest) this.lowest = w.mark;
  }

  get size(): number {
    return this.list.length;
  }

  /** A reader stopped waiting (its client went, or it sends what is there after a while). */
  remove(w: Waiter): void {
    const at = this.list.indexOf(w);
    if (at < 0) return;
    this.list.splice(at, 1);
    if (w.mark === this.lowest) this.lowest = this.list.reduce((low, x) => Math.min(low, x.mark), Infinity);
  }

  wake(available: number): void {
    if (available < this.lowest) return;
    const keep: Waiter[] = [];
    this.lowest = Infinity;
    for (const w of this.list) {
      if (w.mark <= available) w.wake();
      else {
        keep.push(w);
        if (w.mark < this.lowest) this.lowest = w.mark;
      }
    }
    this.list = keep;
  }

  /** The writer finished or failed: nobody waits for more. */
  wakeAll(): void {
    const all = this.list;
    this.list = [];
    this.lowest = Infinity;
    for (const w of all) w.wake();
  }
}

/** The client asked for a well-formed digest: bytes that fail to match it are the upstream's fault (502), not the client's (400). */
function upstreamFault(e: unknown, digest: string): Error {
  if (e instanceof RegistryError && (e.kind === 'DIGEST_INVALID' || e.kind === 'SIZE_INVALID')) {
    return new RegistryError('UPSTREAM_FAILED', `the upstream sent a blob that does not verify as ${digest}: ${e.message}`, e.detail);
  }
  return e instanceof Error ? e : new Error(String(e));
}
