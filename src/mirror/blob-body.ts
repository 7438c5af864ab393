// What the mirror hands a route to send for a blob: its size, and its bytes opened only when a body is sent (a HEAD
// never opens the file): a descriptor for the pooled sender, the growing spool of a download, a range stream, a buffer,
// or, on an object store with redirects on, where the client fetches the bytes itself.
import type { Readable } from 'node:stream';
import type { GrowingFile } from '../store/ingest.js';
import type { ByteRange } from '../store/ports.js';
import type { Store } from '../store/store.js';

export type { GrowingFile } from '../store/ingest.js';
export type { ByteRange } from '../store/ports.js';

/** Opened bytes, each kind sent its own way; `range` is inclusive. */
export type BlobBytes =
  | { kind: 'fd'; fd: number; range: ByteRange }
  | { kind: 'growing'; fd: number; range: ByteRange; file: GrowingFile }
  | { kind: 'stream'; stream: Readable; sizeBytes: number }
  | { kind: 'buffer'; bytes: Buffer }
  /** A presigned URL of the committed object, valid for `storage.s3.redirect.ttl`; the client sends its Range there. */
  | { kind: 'redirect'; url: string };

export interface BlobBody {
  sizeBytes: number;
  /** Byte ranges may be asked for: a verified blob. A download still arriving is sent whole from its first byte. */
  ranges: boolean;
  /** Upstream was asked for this answer (for the request metrics); set again if `open` had to fetch it anew. */
  fetched: boolean;
  /** The bytes of `range` (undefined: all of them). */
  open(range: ByteRange | undefined): Promise<BlobBytes>;
}

/** What a route asks for. */
export interface BlobRequest {
  host: string;
  name: string;
  digest: string;
  client?: string;
  /** A range that does not start at byte 0 was asked for: the bytes must come from the verified blob. */
  fromOffset: boolean;
}

/** Configs and tiny layers: one read, one write. */
const SMALL_BLOB_BYTES = 64 * 1024;

/**
 * The bytes of a stored blob, or undefined when it has gone since it was stat'ed (quarantined by verify --repair):
 * a redirect when the store offers them (every committed blob, whatever its size: the bytes never pass through
 * sluice), else a small whole blob in one read, else a descriptor for the pooled sender when the backend has one
 * for it, else its range stream.
 */
export async function openStored(store: Store, digest: string, sizeBytes: number, range: ByteRange | undefined): Promise<BlobBytes | undefined> {
  if (store.presign) return { kind: 'redirect', url: await store.presign(digest) };
  if (range === undefined && sizeBytes <= SMALL_BLOB_BYTES) {
    const bytes = await store.readSmallBlob(digest);
    return bytes && { kind: 'buffer', bytes };
  }
  const whole = range ?? { start: 0, end: sizeBytes - 1 };
  const openFd = store.openFd;
  const fd = openFd && (await openFd(digest));
  if (fd !== undefined) return { kind: 'fd', fd, range: whole };
  // No descriptor: gone, or not held as a file here (a blob cache that cannot keep it): its stream tells which.
  const stream = await store.openBlob(digest, whole);
  return stream && { kind: 'stream', stream, sizeBytes: whole.end - whole.start + 1 };
}
