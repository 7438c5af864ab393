// One blob write: bytes go to a spool while being hashed; commit checks size and digest, seals the spool, and
// only then hands it to the backend to be made the blob. A failed or aborted write leaves nothing behind.
import { createHash, type Hash } from 'node:crypto';
import { RegistryError } from '../oci/errors.js';
import type { Spool, VerifiedSpool } from './ports.js';

export interface BlobInfo {
  digest: string;
  sizeBytes: number;
}

export interface IngestExpectation {
  /** The digest the content must hash to; without it the computed digest is used (import of a manifest). */
  digest?: string;
  sizeBytes?: number;
  maxBytes?: number;
}

/**
 * What one ingest may take, whatever its descriptor says (an upstream body may have no length, or lie):
 * `storage.maxBlobBytes`, and the room left under `storage.maxBytes` when it began.
 */
export interface IngestBounds {
  maxBlobBytes?: number;
  maxBytes?: number;
  /** Committed bytes when the ingest began (with maxBytes). */
  usedBytes?: number;
}

/** A write in progress; bytes go to a spool and only a verified commit makes them visible. */
export interface IngestWriter {
  write(chunk: Uint8Array): Promise<void>;
  commit(): Promise<BlobInfo>;
  abort(): Promise<void>;
  readonly bytesWritten: number;
  /** Where the unverified bytes sit until commit; readers may tail it (`Spool.openFd`). */
  readonly spool: Spool;
}

export class Ingest implements IngestWriter {
  private readonly hash: Hash = createHash('sha256');
  private written = 0;
  private done = false;

  constructor(
    private readonly commitSpool: (verified: VerifiedSpool) => Promise<void>,
    readonly spool: Spool,
    private readonly expect: IngestExpectation,
    private readonly bounds: IngestBounds = {},
  ) {}

  get bytesWritten(): number {
    return this.written;
  }

  write(chunk: Uint8Array): Promise<void> {
    const limit = this.expect.sizeBytes ?? this.expect.maxBytes;
    if (limit !== undefined && this.written + chunk.length > limit) {
      return Promise.reject(new RegistryError('SIZE_INVALID', 'content is longer than its descriptor says', {
        expectedBytes: limit,
      }));
    }
    const past = pastBounds(this.bounds, this.written + chunk.length);
    if (past) return Promise.reject(past);
    this.hash.update(chunk);
    this.written += chunk.length;
    return this.spool.write(chunk);
  }

  async commit(): Promise<BlobInfo> {
    if (this.done) throw new Error('ingest already finished');
    this.done = true;
    try {
      const digest = `sha256:${this.hash.digest('hex')}`;
      if (this.expect.sizeBytes !== undefined && this.written !== this.expect.sizeBytes) {
        throw new RegistryError('SIZE_INVALID', 'content is shorter than its descriptor says', {
          expectedBytes: this.expect.sizeBytes,
          receivedBytes: this.written,
        });
      }
      if (this.expect.digest !== undefined && digest !== this.expect.digest) {
        throw new RegistryError('DIGEST_INVALID', 'content does not match its digest', {
          expected: this.expect.digest,
          computed: digest,
        });
      }
      await this.spool.seal();
      const info = { digest, sizeBytes: this.written };
      await this.commitSpool({ spool: this.spool, ...info });
      return info;
    } catch (e) {
      await this.spool.discard();
      throw isNoSpace(e) ? storeFull() : e;
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.spool.discard();
  }
}

export function isNoSpace(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export function storeFull(detail: Record<string, number> = {}): RegistryError {
  return new RegistryError('INSUFFICIENT_STORAGE', 'the mirror\'s store is full (no space left on device); nothing was committed', detail);
}

/** The bound `totalBytes` of one blob would cross, if any: checked up front for a declared size, per chunk as bytes arrive. */
export function pastBounds(b: IngestBounds, totalBytes: number): RegistryError | undefined {
  if (b.maxBlobBytes !== undefined && totalBytes > b.maxBlobBytes) return blobTooLarge(b.maxBlobBytes, totalBytes);
  if (b.maxBytes !== undefined && (b.usedBytes ?? 0) + totalBytes > b.maxBytes) {
    return storeAtLimit({ maxBytes: b.maxBytes, usedBytes: b.usedBytes ?? 0, neededBytes: totalBytes });
  }
  return undefined;
}

/** storage.maxBlobBytes: one blob past it is refused whatever room there is (507, like the other store limits). */
export function blobTooLarge(maxBlobBytes: number, neededBytes: number): RegistryError {
  return new RegistryError(
    'INSUFFICIENT_STORAGE',
    `the blob is larger than storage.maxBlobBytes (${maxBlobBytes} bytes); nothing was committed`,
    { maxBlobBytes, neededBytes },
  );
}

/** storage.maxBytes reached: an alarm the operator set, answered like a full disk (507), never by evicting. */
export function storeAtLimit(detail: Record<string, number>): RegistryError {
  return new RegistryError(
    'INSUFFICIENT_STORAGE',
    `the mirror's store has reached storage.maxBytes (${detail.maxBytes} bytes); nothing was committed (free space with \`sluice gc\` or raise the limit)`,
    detail,
  );
}

/** A file still being written (a blob arriving from upstream): how much may be sent, and a wait for more. */
export interface GrowingFile {
  /** Bytes that may be sent now; never more than are on disk. */
  available(): number;
  /** Set once the writer failed: the response is then cut short. */
  failure(): Error | undefined;
  /**
   * Resolves once `available()` reaches `atLeast` (by default: any more than now), or the writer finished or
   * failed — so a reader asking for a buffer's worth is woken once per buffer, not once per upstream chunk, and
   * one asking past what will ever be available before verification is woken by the commit. An aborted `signal`
   * resolves it at once and forgets the wait (a reader that stopped waiting leaves nothing behind).
   */
  next(atLeast?: number, signal?: AbortSignal): Promise<void>;
  /**
   * Copies up to `length` bytes at `position` into `buf` from the blob's first bytes, when they are still held in
   * memory; 0 when they are not (read the file then). Never more than `available()` allows.
   */
  copyHead?(buf: Buffer, length: number, position: number): number;
}
