// Where an export's files go: a folder, a .tar or a .tar.zst (zstd-napi), written under a temporary name and
// renamed into place only when complete, with a sha256 of what was written (the receipt's checksum).
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PassThrough, Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pack as tarPack } from 'tar-stream';
import { CompressStream } from 'zstd-napi';

export type BundleFormat = 'dir' | 'tar' | 'tar.zst';
export const BUNDLE_FORMATS: readonly BundleFormat[] = ['dir', 'tar', 'tar.zst'];

export interface BundleChecksum {
  algorithm: 'sha256';
  value: string;
  /** What was hashed: the archive file itself, or (a folder) the `sha256sum`-style listing of its files. */
  of: 'file' | 'listing';
}

export interface BundleSink {
  /** Appends one file of exactly `sizeBytes` from `source`. */
  add(path: string, sizeBytes: number, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void>;
  /** Completes the bundle and moves it to its final name. */
  finish(): Promise<BundleChecksum>;
  /** Removes whatever was written; harmless after finish or twice. */
  abort(): Promise<void>;
}

/** A folder being written: it can also hold empty folders and files named after the hash of their bytes. */
export interface FolderSink extends BundleSink {
  addDirectory(path: string): Promise<void>;
  /** Writes `source` under a temporary name, then names it `pathOf(<sha256 hex of its bytes>)`. */
  addNamedByHash(source: AsyncIterable<Uint8Array>, pathOf: (hex: string) => string): Promise<{ digest: string; sizeBytes: number }>;
}

export class BundleExistsError extends Error {}

// Fixed metadata, so the same content always makes the same archive bytes.
const MTIME = new Date(0);

export async function openBundle(out: string, format: BundleFormat): Promise<BundleSink> {
  const temp = await tempFor(out);
  return format === 'dir' ? new DirSink(out, temp) : TarSink.open(out, temp, format === 'tar.zst');
}

/** A folder written under a temporary name beside `out`, renamed to it by finish. */
export async function openFolder(out: string): Promise<FolderSink> {
  return new DirSink(out, await tempFor(out));
}

async function tempFor(out: string): Promise<string> {
  if (await stat(out).catch(() => undefined)) throw new BundleExistsError(`${out} already exists; remove it or choose another name`);
  await mkdir(dirname(out), { recursive: true });
  const temp = join(dirname(out), `.${basename(out)}.partial-${process.pid}`);
  await rm(temp, { recursive: true, force: true });
  return temp;
}

/** A folder: each file hashed as written; the checksum is over `<sha256>  <path>` lines, sorted by path. */
class DirSink implements FolderSink {
  private readonly lines: string[] = [];
  private unnamed = 0;

  constructor(
    private readonly out: string,
    private readonly temp: string,
  ) {}

  async add(path: string, _sizeBytes: number, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    const file = join(this.temp, path);
    await mkdir(dirname(file), { recursive: true });
    const hash = createHash('sha256');
    await pipeline(Readable.from(source), hashing(hash), createWriteStream(file, { flags: 'wx' }));
    this.lines.push(`${hash.digest('hex')}  ${path}`);
  }

  async addDirectory(path: string): Promise<void> {
    await mkdir(join(this.temp, path), { recursive: true });
  }

  async addNamedByHash(source: AsyncIterable<Uint8Array>, pathOf: (hex: string) => string): Promise<{ digest: string; sizeBytes: number }> {
    await mkdir(this.temp, { recursive: true });
    const unnamed = join(this.temp, `.unnamed-${this.unnamed++}`);
    const hash = createHash('sha256');
    let sizeBytes = 0;
    const counting = new Transform({
      transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
        sizeBytes += chunk.length;
        cb(null, chunk);
      },
    });
    await pipeline(Readable.from(source), counting, hashing(hash), createWriteStream(unnamed, { flags: 'wx' }));
    const hex = hash.digest('hex');
    const path = pathOf(hex);
    await mkdir(dirname(join(this.temp, path)), { recursive: true });
    await rename(unnamed, join(this.temp, path));
    this.lines.push(`${hex}  ${path}`);
    return { digest: `sha256:${hex}`, sizeBytes };
  }

  async finish(): Promise<BundleChecksum> {
    await mkdir(this.temp, { recursive: true });
    await rename(this.temp, this.out);
    const listing = this.lines.sort((a, b) => a.slice(66).localeCompare(b.slice(66))).join('\n') + '\n';
    return { algorithm: 'sha256', value: `sha256:${createHash('sha256').update(listing).digest('hex')}`, of: 'listing' };
  }

  abort(): Promise<void> {
    return rm(this.temp, { recursive: true, force: true });
  }
}

/** One tar stream, optionally through zstd, hashed on its way to the file. */
class TarSink implements BundleSink {
  private readonly hash = createHash('sha256');
  private readonly pack = tarPack();
  private done: Promise<void> = Promise.resolve();

  private constructor(
    private readonly out: string,
    private readonly temp: string,
  ) {}

  static async open(out: string, temp: string, zstd: boolean): Promise<TarSink> {
    const sink = new TarSink(out, temp);
    const file = createWriteStream(temp, { flags: 'wx' });
    const stages: Array<Transform | PassThrough> = zstd ? [new CompressStream({ compressionLevel: 3 })] : [];
    sink.done = pipeline([sink.pack as unknown as NodeJS.ReadableStream, ...stages, hashing(sink.hash), file]);
    sink.done.catch(() => undefined); // observed in add/finish
    return sink;
  }

  async add(path: string, sizeBytes: number, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    const entry = this.pack.entry({ name: path, size: sizeBytes, mode: 0o644, mtime: MTIME, uid: 0, gid: 0 }) as unknown as Writable;
    // A failure of the file side (a full disk) ends the pack too; race it so a write never waits forever.
    await Promise.race([pipeline(Readable.from(source), entry), this.done.then(() => Promise.reject(new Error('the bundle file closed early')))]);
  }

  async finish(): Promise<BundleChecksum> {
    this.pack.finalize();
    await this.done;
    await rename(this.temp, this.out);
    return { algorithm: 'sha256', value: `sha256:${this.hash.digest('hex')}`, of: 'file' };
  }

  async abort(): Promise<void> {
    this.pack.destroy();
    await this.done.catch(() => undefined);
    await rm(this.temp, { force: true });
  }
}

function hashing(hash: Hash): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
}
