// Reproducible archives: entries sorted by path, parents before children, owner and mtime fixed by the caller,
// modes normalised (0755 for folders and executables, 0644 otherwise); gzip from node:zlib, whose header carries
// no timestamp or file name. Also the sha256 digests an OCI layer needs (of the tar and of the gzip).
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';

export type Entry =
  | { kind: 'file'; path: string; mode: number; source: string | Buffer; uid?: number; gid?: number }
  | { kind: 'dir'; path: string; mode: number; uid?: number; gid?: number }
  | { kind: 'symlink'; path: string; target: string };

export interface ArchiveOptions {
  /** Every entry's mtime (the commit's date). */
  mtime: Date;
  gzip: boolean;
}

export interface ArchiveDigests {
  /** sha256 of the uncompressed tar (an OCI layer's diff_id). */
  tarDigest: string;
  /** sha256 of the file as written. */
  fileDigest: string;
  sizeBytes: number;
}

/** 0755 when any execute bit is set, else 0644: a checkout's umask must not reach the archive. */
export const normalMode = (mode: number): number => (mode & 0o111 ? 0o755 : 0o644);

/** The entries with every missing parent folder added, sorted so that a folder comes before what it holds. */
export function withParents(entries: readonly Entry[]): Entry[] {
  const byPath = new Map<string, Entry>();
  for (const e of entries) {
    if (byPath.has(e.path)) throw new Error(`archive lists ${e.path} twice`);
    byPath.set(e.path, e);
  }
  for (const e of entries) {
    const parts = e.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!byPath.has(dir)) byPath.set(dir, { kind: 'dir', path: dir, mode: 0o755 });
    }
  }
  // Compare path segments, not strings: `a/b` must precede `a-b` and `a.b` is unrelated to either.
  const key = (p: string): string[] => p.split('/');
  return [...byPath.values()].sort((x, y) => {
    const a = key(x.path);
    const b = key(y.path);
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const ai = a[i] ?? '';
      const bi = b[i] ?? '';
      if (ai !== bi) return ai < bi ? -1 : 1;
    }
    return a.length - b.length;
  });
}

async function writeEntries(pack: ReturnType<typeof tarPack>, entries: readonly Entry[], mtime: Date): Promise<void> {
  for (const e of withParents(entries)) {
    const owner = { uid: e.kind === 'symlink' ? 0 : (e.uid ?? 0), gid: e.kind === 'symlink' ? 0 : (e.gid ?? 0), uname: '', gname: '' };
    if (e.kind === 'dir') {
      pack.entry({ name: `${e.path}/`, type: 'directory', mode: e.mode, mtime, ...owner });
    } else if (e.kind === 'symlink') {
      pack.entry({ name: e.path, type: 'symlink', linkname: e.target, mode: 0o777, mtime, ...owner });
    } else {
      const data = typeof e.source === 'string' ? await readFile(e.source) : e.source;
      await new Promise<void>((resolveEntry, reject) => {
        pack.entry({ name: e.path, type: 'file', mode: e.mode, size: data.length, mtime, ...owner }, data, (err) => (err ? reject(err) : resolveEntry()));
      });
    }
  }
  pack.finalize();
}

/** Writes the entries as a tar (optionally gzipped) to `file`, returning its digests. */
export async function writeArchive(file: string, entries: readonly Entry[], opts: ArchiveOptions): Promise<ArchiveDigests> {
  const pack = tarPack();
  const tarHash = createHash('sha256');
  const fileHash = createHash('sha256');
  let sizeBytes = 0;
  const out = createWriteStream(file);
  const counted = new Writable({
    write(chunk: Buffer, _enc, cb) {
      fileHash.update(chunk);
      sizeBytes += chunk.length;
      out.write(chunk) ? cb() : out.once('drain', () => cb());
    },
    final(cb) {
      out.end(cb);
    },
  });
  out.on('error', (e) => counted.destroy(e)); // a full disk fails the release instead of hanging it
  const tarSide = new PassThrough();
  tarSide.on('data', (chunk: Buffer) => tarHash.update(chunk));
  const writing = writeEntries(pack, entries, opts.mtime);
  const piping = opts.gzip ? pipeline(pack, tarSide, createGzip({ level: 6 }), counted) : pipeline(pack, tarSide, counted);
  await Promise.all([writing, piping]);
  return { tarDigest: `sha256:${tarHash.digest('hex')}`, fileDigest: `sha256:${fileHash.digest('hex')}`, sizeBytes };
}

