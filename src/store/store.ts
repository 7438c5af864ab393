// Content-addressed disk store: blobs (manifests too) by sha256 and manifest media types; tags, links and
// referrers per (host, repository) are its MetadataStore (fs/metadata.ts). Every write is temp file → hash →
// verify → fsync → rename.
import { randomBytes } from 'node:crypto';
import { createReadStream, open as openCallback } from 'node:fs';
import type { Readable } from 'node:stream';
import { mkdir, open, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import type { Descriptor } from '../oci/manifest.js';
import { HEX_RE, hexOf } from './digest.js';
import { isNotFound, listDir } from './fs/dirs.js';
import { FsMetadataStore } from './fs/metadata.js';
import type { MetadataStore, RepositoryName } from './ports.js';
import { Ingest, isNoSpace, storeFull, type BlobInfo, type IngestExpectation, type IngestWriter } from './ingest.js';

export type { Descriptor } from '../oci/manifest.js';
export type { BlobInfo, IngestExpectation, IngestWriter } from './ingest.js';
export { hexOf } from './digest.js';
export { isNotFound } from './fs/dirs.js';

export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Read size for streaming blobs: large chunks mean fewer syscalls and fewer trips through the event loop. */
const STREAM_CHUNK = 1024 * 1024;

export interface StoredManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
}

interface ManifestMeta {
  mediaType: string;
  sizeBytes: number;
}

export class Store {
  readonly root: string;
  /** Tags, links, referrers and the state documents. */
  readonly meta: MetadataStore;
  private readonly sizes = new LRUCache<string, number>({ max: 200_000 });
  private readonly manifests = new LRUCache<string, StoredManifest>({
    maxSize: 64 * 1024 * 1024,
    sizeCalculation: (m) => m.body.length + 64,
  });
  /** Configs and tiny layers are asked for by every node; keep them in memory like manifests. */
  private readonly smallBlobs = new LRUCache<string, Buffer>({ maxSize: 32 * 1024 * 1024, sizeCalculation: (b) => b.length + 64 });

  /** This process's own temp folder: `tmp/<pid>-<random>`, so several processes can share a store. */
  readonly tmpDir: string;

  private constructor(root: string) {
    this.root = root;
    this.tmpDir = join(root, 'tmp', `${process.pid}-${randomBytes(4).toString('hex')}`);
    this.meta = new FsMetadataStore(root, this);
  }

  /** Bumped whenever a tag or a manifest link changes, so derived sets (reachability) know to recompute. */
  get generation(): number {
    return this.meta.generation;
  }

  /**
   * Opens (creating) the store and removes temp leftovers of writes that never committed — only those of
   * processes that are gone, so a CLI opening the store never disturbs a running server's downloads.
   */
  static async open(root: string): Promise<Store> {
    const store = new Store(root);
    const tmpRoot = join(root, 'tmp');
    for (const entry of await listDir(tmpRoot)) {
      const pid = Number(/^(\d+)-/.exec(entry)?.[1]);
      if (!Number.isInteger(pid) || !isAlive(pid)) await rm(join(tmpRoot, entry), { recursive: true, force: true });
    }
    await mkdir(store.tmpDir, { recursive: true });
    await mkdir(join(root, 'blobs', 'sha256'), { recursive: true });
    await mkdir(join(root, 'repositories'), { recursive: true });
    return store;
  }

  /**
   * Runs a create in this process's temp folder, re-creating the folder once if something removed it (e.g. a CLI
   * in another pid namespace that took this process for dead).
   */
  async inTmp<T>(create: () => Promise<T>): Promise<T> {
    try {
      return await create();
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await mkdir(this.tmpDir, { recursive: true });
      return create();
    }
  }

  /** Removes this process's temp folder (nothing in it is committed content). */
  async close(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
  }

  blobPath(digest: string): string {
    const hex = hexOf(digest);
    return join(this.root, 'blobs', 'sha256', hex.slice(0, 2), hex);
  }

  private metaPath(digest: string): string {
    const hex = hexOf(digest);
    return join(this.root, 'manifests', 'sha256', hex.slice(0, 2), `${hex}.json`);
  }

  /** Size of a committed blob, or undefined; memoised because a committed blob never changes. */
  async stat(digest: string): Promise<BlobInfo | undefined> {
    const known = this.sizes.get(digest);
    if (known !== undefined) return { digest, sizeBytes: known };
    try {
      const s = await stat(this.blobPath(digest));
      this.sizes.set(digest, s.size);
      return { digest, sizeBytes: s.size };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * Opens a committed blob for streaming `range` (inclusive; the caller always gives one — an open end makes
   * Node read past EOF with a fresh buffer), or undefined when it has gone (quarantined by `verify --repair` in
   * another process): the file is opened before any header is sent, so a vanished blob is a miss, not a cut.
   */
  async openBlob(digest: string, range: { start: number; end: number }): Promise<Readable | undefined> {
    let fd: number;
    try {
      fd = await openFd(this.blobPath(digest));
    } catch (e) {
      if (!isNotFound(e)) throw e;
      this.forget(digest);
      return undefined;
    }
    // The callback stream on a plain fd costs less per chunk than a FileHandle stream (no promise per read).
    return createReadStream('', { fd, start: range.start, end: range.end, highWaterMark: STREAM_CHUNK, autoClose: true });
  }

  /** An open descriptor on a committed blob (for the pooled sender), or undefined when it has gone. */
  async openBlobFd(digest: string): Promise<number | undefined> {
    try {
      return await openFd(this.blobPath(digest));
    } catch (e) {
      if (!isNotFound(e)) throw e;
      this.forget(digest);
      return undefined;
    }
  }

  /** A small blob in one read (cheaper than a stream for configs and tiny layers), or undefined when gone. */
  async readSmallBlob(digest: string): Promise<Buffer | undefined> {
    const cached = this.smallBlobs.get(digest);
    if (cached) return cached;
    const body = await this.readBlob(digest);
    if (!body) this.forget(digest);
    else this.smallBlobs.set(digest, body);
    return body;
  }

  /** Drops memoised tags and bumps the generation: another process (import, offline sync) changed the store. */
  invalidate(): void {
    this.meta.invalidate();
    this.sizes.clear();
    this.smallBlobs.clear();
  }

  /** Forgets what is memoised about a digest (after another process changed the store). */
  forget(digest: string): void {
    this.sizes.delete(digest);
    this.manifests.delete(digest);
    this.smallBlobs.delete(digest);
  }

  async readBlob(digest: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.blobPath(digest));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** Drops a blob whose bytes no longer match its digest (verify --repair), so it can be refetched. */
  async quarantine(digest: string): Promise<string> {
    const dest = join(this.root, 'quarantine', `${hexOf(digest)}.${Date.now()}`);
    await mkdir(dirname(dest), { recursive: true });
    await rename(this.blobPath(digest), dest);
    this.forget(digest);
    return dest;
  }

  async beginIngest(expect: IngestExpectation): Promise<IngestWriter> {
    if (expect.digest !== undefined) hexOf(expect.digest);
    // A blob that cannot fit is refused before its first byte, while the client can still get an error status.
    if (expect.sizeBytes !== undefined) {
      const fs = await statfs(this.tmpDir);
      const freeBytes = fs.bavail * fs.bsize;
      if (expect.sizeBytes > freeBytes) throw storeFull({ neededBytes: expect.sizeBytes, freeBytes });
    }
    const tmp = join(this.tmpDir, `${Date.now()}-${randomBytes(8).toString('hex')}`);
    const fh = await this.inTmp(() => open(tmp, 'wx', 0o644)).catch((e: unknown) => Promise.reject(isNoSpace(e) ? storeFull() : e));
    return new Ingest((t, info) => this.publish(t, info), fh, tmp, expect);
  }

  /** Streams a source into the store; on any failure nothing is committed. */
  async ingest(source: AsyncIterable<Uint8Array>, expect: IngestExpectation): Promise<BlobInfo> {
    const w = await this.beginIngest(expect);
    try {
      for await (const chunk of source) await w.write(chunk);
      return await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
  }

  async putBlob(body: Uint8Array, expect: IngestExpectation = {}): Promise<BlobInfo> {
    return this.ingest((async function* () {
      yield body;
    })(), expect);
  }

  /** Called by an Ingest once its temp file is verified and synced. */
  async publish(tmp: string, info: BlobInfo): Promise<void> {
    const dest = this.blobPath(info.digest);
    await mkdir(dirname(dest), { recursive: true });
    await rename(tmp, dest);
    this.sizes.set(info.digest, info.sizeBytes);
  }

  async putManifest(body: Buffer, mediaType: string, expectDigest?: string): Promise<StoredManifest> {
    if (body.length > MAX_MANIFEST_BYTES) {
      throw new RegistryError('MANIFEST_INVALID', `manifest is larger than ${MAX_MANIFEST_BYTES} bytes`, {
        sizeBytes: body.length,
      });
    }
    const info = await this.putBlob(body, { digest: expectDigest, sizeBytes: body.length });
    await writeAtomic(this, this.metaPath(info.digest), JSON.stringify({ mediaType, sizeBytes: body.length }));
    const m = { digest: info.digest, mediaType, body };
    this.manifests.set(info.digest, m);
    return m;
  }

  async getManifest(digest: string): Promise<StoredManifest | undefined> {
    const cached = this.manifests.get(digest);
    if (cached) return cached;
    if (!digest.startsWith('sha256:') || !HEX_RE.test(digest.slice(7))) return undefined;
    let meta: ManifestMeta;
    try {
      meta = JSON.parse(await readFile(this.metaPath(digest), 'utf8')) as ManifestMeta;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    const body = await this.readBlob(digest);
    if (!body) return undefined;
    const m = { digest, mediaType: meta.mediaType, body };
    this.manifests.set(digest, m);
    return m;
  }

  async hasManifest(digest: string): Promise<boolean> {
    return (await this.getManifest(digest)) !== undefined;
  }

  // The metadata side, delegated so callers keep one handle on the store.
  setTag(host: string, name: string, tag: string, digest: string): Promise<void> {
    return this.meta.setTag(host, name, tag, digest);
  }
  getTag(host: string, name: string, tag: string): Promise<string | undefined> {
    return this.meta.getTag(host, name, tag);
  }
  listTags(host: string, name: string): Promise<string[]> {
    return this.meta.listTags(host, name);
  }
  linkManifest(host: string, name: string, m: StoredManifest): Promise<void> {
    return this.meta.linkManifest(host, name, m);
  }
  linkBlob(host: string, name: string, digest: string): Promise<void> {
    return this.meta.linkBlob(host, name, digest);
  }
  isBlobLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.meta.isBlobLinked(host, name, digest);
  }
  isManifestLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.meta.isManifestLinked(host, name, digest);
  }
  linkedManifests(host: string, name: string): Promise<string[]> {
    return this.meta.linkedManifests(host, name);
  }
  referrers(host: string, name: string, subject: string): Promise<Descriptor[]> {
    return this.meta.referrers(host, name, subject);
  }
  repositories(): Promise<RepositoryName[]> {
    return this.meta.repositories();
  }

  /** Every committed blob digest (for verify). */
  async *allBlobs(): AsyncGenerator<string> {
    const base = join(this.root, 'blobs', 'sha256');
    for (const prefix of await listDir(base)) {
      for (const hex of await listDir(join(base, prefix))) if (HEX_RE.test(hex)) yield `sha256:${hex}`;
    }
  }
}

async function writeAtomic(store: Store, dest: string, content: string): Promise<void> {
  const tmp = join(store.tmpDir, `${Date.now()}-${randomBytes(8).toString('hex')}`);
  await store.inTmp(() => writeFile(tmp, content, { flag: 'wx' }));
  await mkdir(dirname(dest), { recursive: true });
  await rename(tmp, dest);
}

/** A read-only descriptor on a file (callback fs: no FileHandle, which the fd-based sender does not need). */
export function openFd(path: string): Promise<number> {
  return new Promise((resolve, reject) => openCallback(path, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
