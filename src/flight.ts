// Single-flight blob ingest: one upstream download per digest written into the store, and any number of
// readers tailing the temp file as it grows, so every waiting client gets bytes at once and none slows the download.
import { EventEmitter } from 'node:events';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { RegistryError } from './errors.js';
import type { BlobInfo, IngestWriter } from './store.js';

const READ_CHUNK = 256 * 1024;

export class Flight extends EventEmitter {
  written = 0;
  result: BlobInfo | undefined;
  failure: Error | undefined;
  readonly done: Promise<BlobInfo>;
  private settle!: { resolve: (b: BlobInfo) => void; reject: (e: Error) => void };

  constructor(
    readonly digest: string,
    readonly sizeBytes: number | undefined,
    private readonly writer: IngestWriter,
    private readonly committedPath: string,
  ) {
    super();
    this.setMaxListeners(0);
    this.done = new Promise<BlobInfo>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // Waiters attach their own handlers; this keeps an unobserved failure from crashing the process.
    this.done.catch(() => undefined);
  }

  get tmpPath(): string {
    return this.writer.tmpPath;
  }

  /** Pumps the upstream body into the store; resolves or rejects `done` exactly once. */
  async run(body: AsyncIterable<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of body) {
        await this.writer.write(chunk);
        this.written = this.writer.bytesWritten;
        this.emit('progress');
      }
      this.result = await this.writer.commit();
      this.emit('progress');
      this.settle.resolve(this.result);
    } catch (e) {
      await this.writer.abort();
      this.failure = upstreamFault(e, this.digest);
      this.emit('progress');
      this.settle.reject(this.failure);
    }
  }

  /** A stream of the blob's bytes as they arrive; errors (and so aborts the response) if the ingest fails. */
  async reader(): Promise<Readable> {
    let fh: FileHandle;
    try {
      fh = await open(this.tmpPath, 'r');
    } catch (e) {
      // Joined just as the ingest ended: the temp file has been renamed into place, or removed on failure.
      // The rename can land before `result` is set, so wait for the outcome rather than read it now.
      if (!isNotFound(e)) throw e;
      await this.done.catch(() => undefined);
      if (this.failure) throw this.failure;
      fh = await open(this.committedPath, 'r');
    }
    return Readable.from(this.tail(fh), { objectMode: false });
  }

  private async *tail(fh: FileHandle): AsyncGenerator<Buffer> {
    let pos = 0;
    try {
      for (;;) {
        if (this.failure) throw this.failure;
        // The last byte waits for verification: with Content-Length set, a client that had every byte would
        // hold a complete response even if the digest check then failed. Cutting it one byte short cannot be mistaken.
        const complete = this.sizeBytes !== undefined && this.written >= this.sizeBytes;
        const available = complete && !this.result ? this.written - 1 : this.written;
        if (pos < available) {
          const len = Math.min(READ_CHUNK, available - pos);
          const buf = Buffer.allocUnsafe(len);
          const { bytesRead } = await fh.read(buf, 0, len, pos);
          if (bytesRead === 0) throw new Error('blob temp file shrank while being read');
          pos += bytesRead;
          yield bytesRead === len ? buf : buf.subarray(0, bytesRead);
          continue;
        }
        if (this.result) return;
        await new Promise<void>((resolve) => this.once('progress', resolve));
      }
    } finally {
      await fh.close();
    }
  }
}

function isNotFound(e: unknown): boolean {
  return typeof e === 'object' && e !== null && 'code' in e && e.code === 'ENOENT';
}

/** The client asked for a well-formed digest: bytes that fail to match it are the upstream's fault (502), not the client's (400). */
function upstreamFault(e: unknown, digest: string): Error {
  if (e instanceof RegistryError && (e.kind === 'DIGEST_INVALID' || e.kind === 'SIZE_INVALID')) {
    return new RegistryError('UPSTREAM_FAILED', `the upstream sent a blob that does not verify as ${digest}: ${e.message}`, e.detail);
  }
  return e instanceof Error ? e : new Error(String(e));
}
