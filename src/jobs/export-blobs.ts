// The bytes every export writes: each blob streamed from the store and re-hashed on its way out, so a blob
// that rotted in the store ends the export instead of being shipped; progress counted as the bytes pass.
import { createHash } from 'node:crypto';
import type { Store } from '../store/store.js';

export class ExportError extends Error {}

export interface ExportProgress {
  blobsDone: number;
  blobsTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

/** A blob (or manifest) to stream: its digest, size, and the image that needs it (for messages). */
export interface BlobToWrite {
  digest: string;
  sizeBytes: number;
  ref: string;
}

/** The blob's bytes from the store, hashed as they pass: a blob that no longer matches its digest ends the export. */
export async function* verified(store: Store, b: BlobToWrite, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  const stream = b.sizeBytes === 0 ? [Buffer.alloc(0)] : await store.openBlob(b.digest, { start: 0, end: b.sizeBytes - 1 });
  if (!stream) throw new ExportError(`blob ${b.digest} of ${b.ref} is no longer in the store; nothing was written`);
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
    onBytes(chunk.length);
    yield chunk;
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (size !== b.sizeBytes || got !== b.digest) {
    throw new ExportError(`blob ${b.digest} of ${b.ref} is corrupt in the store (it hashes to ${got}); nothing was written; run "sluice verify --repair"`);
  }
}

/** Counts blobs and bytes for a progress callback. */
export class ProgressCounter {
  readonly p: ExportProgress;

  constructor(
    blobs: readonly BlobToWrite[],
    private readonly progress?: (p: ExportProgress) => void,
  ) {
    this.p = { blobsDone: 0, blobsTotal: blobs.length, bytesDone: 0, bytesTotal: blobs.reduce((n, b) => n + b.sizeBytes, 0) };
    progress?.(this.p);
  }

  readonly bytes = (n: number): void => {
    this.p.bytesDone += n;
    this.progress?.(this.p);
  };

  blobDone(): void {
    this.p.blobsDone++;
    this.progress?.(this.p);
  }
}
