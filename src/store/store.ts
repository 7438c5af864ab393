// Content-addressed store: blobs (manifests too) by sha256 through a BlobBackend, manifest media types, and
// tags, links and referrers per (host, repository) through a MetadataStore; the caches sit in front of them.
import type { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import { hexOf, HEX_RE } from './digest.js';
import { Ingest, pastBounds, storeAtLimit, type BlobInfo, type IngestBounds, type IngestExpectation, type IngestWriter } from './ingest.js';
import type { BlobBackend, BlobUsage, ByteRange, FlightLeases, MetadataStore, RepositoryName, VerifiedSpool } from './ports.js';
import type { Descriptor } from '../oci/manifest.js';
import { CommitGate, type CommitLocks } from './commit-gate.js';

export type { Descriptor } from '../oci/manifest.js';
export type { BlobInfo, IngestExpectation, IngestWriter } from './ingest.js';
export type { BlobBackend, BlobUsage, ByteRange, FlightLease, FlightLeases } from './ports.js';
export { DocumentBusyError } from './ports.js';
export { hexOf } from './digest.js';
export { isNotFound } from './local/dirs.js';

export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface StoredManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
}

/** What a Store is built from (store/open.ts builds them from config; tests may hand in the in-memory ones). */
export interface StoreParts {
  /** The local folder (spools, the fs layout), or undefined for a store with none (memory). */
  root?: string;
  blobs: BlobBackend;
  meta: MetadataStore;
  /** One download per digest across every process sharing the store (LOCAL_LEASES for a store of its own). */
  leases: FlightLeases;
  /** The gc/commit gate across every process sharing the store (commit-gate.ts). */
  commitLocks: CommitLocks;
}

/** The operator's bounds on what the store takes (`storage.maxBytes`, `storage.maxBlobBytes`). */
export interface StoreLimits {
  /** An ingest that would take the committed bytes past it is refused (507). Never evicts. */
  maxBytes?: number;
  /** No one blob may be larger (507). */
  maxBlobBytes?: number;
}

export class Store {
  /** The local folder (spools; on fs the whole layout), or '' for a store with none. */
  readonly root: string;
  readonly blobs: BlobBackend;
  /** Tags, links, referrers and the state documents. */
  readonly meta: MetadataStore;
  // Every large count-bounded cache is a `maxSize` of entries counted as 1: it allocates as it fills, where `max`
  // would allocate all its slots at start (some 80 ms of start-up for this one and its like; lru-caches.test.ts).
  private readonly sizes = new LRUCache<string, number>({ maxSize: 200_000, sizeCalculation: () => 1 });
  private readonly manifests = new LRUCache<string, StoredManifest>({
    maxSize: 64 * 1024 * 1024,
    sizeCalculation: (m) => m.body.length + 64,
  });
  /** Configs and tiny layers are asked for by every node; keep them in memory like manifests. */
  private readonly smallBlobs = new LRUCache<string, Buffer>({ maxSize: 32 * 1024 * 1024, sizeCalculation: (b) => b.length + 64 });

  /**
   * The HTTP layer's fast path when the backend has one: an open descriptor on a committed blob, or undefined when
   * there is none here (gone, or a cached backend cannot keep it: stream it with openBlob, which tells which).
   * The backend's own function, so a cache hit costs no extra call.
   */
  readonly openFd: ((digest: string) => Promise<number | undefined>) | undefined;
  /**
   * Set when blob GETs are to be redirected (`storage.s3.redirect`): a short-lived URL of a committed blob's
   * object that a client fetches itself (see BlobBackend.presign).
   */
  readonly presign: ((digest: string) => Promise<string>) | undefined;

  /** One download per digest across every replica sharing the store (a no-op for a store of its own). */
  readonly leases: FlightLeases;
  /** Held by a commit (import, sync, a pull that tags) shared and by gc alone, across processes and replicas. */
  readonly commits: CommitGate;
  readonly maxBytes: number | undefined;
  readonly maxBlobBytes: number | undefined;
  /**
   * Bumped whenever a blob is found gone or removed here (gc, verify --repair), and when another process says the
   * store changed: what was derived from a blob being there (a repository's entitlement to it) is then stale.
   */
  removals = 0;
  /** When each blob was last asked for in this process (epoch ms), so gc spares what a client is using. */
  private readonly touched = new Map<string, number>();

  constructor(parts: StoreParts, limits: StoreLimits = {}) {
    this.root = parts.root ?? '';
    this.blobs = parts.blobs;
    this.meta = parts.meta;
    this.openFd = parts.blobs.openFd?.bind(parts.blobs);
    this.presign = parts.blobs.presign?.bind(parts.blobs);
    this.leases = parts.leases;
    this.commits = new CommitGate(parts.commitLocks);
    this.maxBytes = limits.maxBytes;
    this.maxBlobBytes = limits.maxBlobBytes;
  }

  /** Bumped whenever a tag or a manifest link changes, so derived sets (reachability) know to recompute. */
  get generation(): number {
    return this.meta.generation;
  }

  /** See MetadataStore.unconfirmed: undefined on a store of one process, or a replica that is current. */
  unconfirmed(): string | undefined {
    return this.meta.unconfirmed?.();
  }

  get replica(): string | undefined {
    return this.meta.replica;
  }

  /** Removes this process's spool area (nothing in it is committed content) and closes the database, if any. */
  async close(): Promise<void> {
    await this.blobs.close();
    await this.meta.close?.();
  }

  /** Size of a committed blob, or undefined; memoised because a committed blob never changes. */
  async stat(digest: string): Promise<BlobInfo | undefined> {
    const known = this.sizes.get(digest);
    if (known !== undefined) {
      this.touched.set(digest, Date.now());
      return { digest, sizeBytes: known };
    }
    const s = await this.blobs.stat(digest);
    if (!s) return undefined;
    this.sizes.set(digest, s.sizeBytes);
    this.touched.set(digest, Date.now()); // committed blobs only, so the map is bounded by the store
    return { digest, sizeBytes: s.sizeBytes };
  }

  /**
   * A stream of `range` of a committed blob (inclusive; the caller always gives one), or undefined when it has
   * gone (quarantined by `verify --repair` in another process): opened before any header is sent, so a miss.
   */
  async openBlob(digest: string, range: ByteRange): Promise<Readable | undefined> {
    const stream = await this.blobs.read(digest, range);
    // Gone (gc or verify --repair, maybe on another replica): forget its size, or the next stat still says "here".
    if (!stream) this.forget(digest);
    return stream;
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
    this.removals++;
    this.sizes.clear();
    this.smallBlobs.clear();
    this.blobs.refresh();
  }

  /** Forgets what is memoised about a digest (after another process changed the store). */
  forget(digest: string): void {
    this.removals++;
    this.sizes.delete(digest);
    this.manifests.delete(digest);
    this.smallBlobs.delete(digest);
  }

  readBlob(digest: string): Promise<Buffer | undefined> {
    return this.blobs.readAll(digest);
  }

  /** Drops a blob whose bytes no longer match its digest (verify --repair), so it can be refetched. */
  async quarantine(digest: string): Promise<string> {
    const dest = await this.blobs.quarantine(digest);
    this.forget(digest);
    // The other replicas forget it too, and drop their cached copies (store/cache/).
    await this.meta.blobNotices?.announceGone(digest);
    return dest;
  }

  /**
   * Removes a committed blob (and, for a manifest, its media type record) for good: gc's sweep. A reader that
   * opened it already keeps reading it (fs: an unlinked file lives until closed). False when it was not there.
   */
  async deleteBlob(digest: string): Promise<boolean> {
    const gone = await this.blobs.delete(digest);
    await this.meta.deleteManifestType(digest);
    this.forget(digest);
    this.touched.delete(digest);
    await this.meta.blobNotices?.announceGone(digest);
    return gone;
  }

  /** When `digest` was last asked for (stat, manifest read) in this process, or undefined. */
  lastTouched(digest: string): number | undefined {
    return this.touched.get(digest);
  }

  /** Forgets touches older than `beforeMs`: gc calls it, so the map holds only what its grace still needs. */
  pruneTouched(beforeMs: number): void {
    for (const [digest, at] of this.touched) if (at < beforeMs) this.touched.delete(digest);
  }

  /** Whether the committed bytes have reached storage.maxBytes. */
  async isFull(): Promise<boolean> {
    return this.maxBytes !== undefined && (await this.usage()).bytes >= this.maxBytes;
  }

  /** How many blobs and bytes the store holds, as of now (kept by the backend, never a scan per call). */
  usage(): Promise<BlobUsage> {
    return this.blobs.usage();
  }

  /** A fresh private folder in the spool area (an import's unpacked tar); the caller removes it. */
  scratchDir(prefix: string): Promise<string> {
    return this.blobs.scratchDir(prefix);
  }

  /**
   * Starts a verified write. Every ingest is bounded, its size declared or not: a declared size past
   * storage.maxBlobBytes, storage.maxBytes or the free space is refused before the first byte; bytes arriving past
   * them end the write (507) — the spool watches the free space as it grows.
   */
  async beginIngest(expect: IngestExpectation): Promise<IngestWriter> {
    if (expect.digest !== undefined) hexOf(expect.digest);
    const bounds: IngestBounds = { maxBlobBytes: this.maxBlobBytes };
    if (this.maxBytes !== undefined) {
      const { bytes } = await this.usage();
      if (bytes >= this.maxBytes) throw storeAtLimit({ maxBytes: this.maxBytes, usedBytes: bytes, ...(expect.sizeBytes !== undefined ? { neededBytes: expect.sizeBytes } : {}) });
      Object.assign(bounds, { maxBytes: this.maxBytes, usedBytes: bytes });
    }
    const refused = expect.sizeBytes !== undefined ? pastBounds(bounds, expect.sizeBytes) : undefined;
    if (refused) throw refused;
    const spool = await this.blobs.createSpool(expect.sizeBytes);
    return new Ingest((v) => this.commitBlob(v), spool, expect, bounds);
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

  /** Called by an Ingest once its spool is verified and sealed. */
  private async commitBlob(verified: VerifiedSpool): Promise<void> {
    await this.blobs.commit(verified);
    this.sizes.set(verified.digest, verified.sizeBytes);
  }

  async putManifest(body: Buffer, mediaType: string, expectDigest?: string): Promise<StoredManifest> {
    if (body.length > MAX_MANIFEST_BYTES) {
      throw new RegistryError('MANIFEST_INVALID', `manifest is larger than ${MAX_MANIFEST_BYTES} bytes`, {
        sizeBytes: body.length,
      });
    }
    const info = await this.putBlob(body, { digest: expectDigest, sizeBytes: body.length });
    await this.meta.putManifestType(info.digest, { mediaType, sizeBytes: body.length });
    const m = { digest: info.digest, mediaType, body };
    this.manifests.set(info.digest, m);
    return m;
  }

  /** `touch: false` for gc's own walk, which must not look like a client using the manifest. */
  async getManifest(digest: string, touch = true): Promise<StoredManifest | undefined> {
    const cached = this.manifests.get(digest);
    if (cached) {
      if (touch) this.touched.set(digest, Date.now());
      return cached;
    }
    if (!digest.startsWith('sha256:') || !HEX_RE.test(digest.slice(7))) return undefined;
    const meta = await this.meta.manifestType(digest);
    if (!meta) return undefined;
    const body = await this.readBlob(digest);
    if (!body) return undefined;
    const m = { digest, mediaType: meta.mediaType, body };
    this.manifests.set(digest, m);
    if (touch) this.touched.set(digest, Date.now());
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
  tagHistory(host: string, name: string, tag: string): Promise<string[]> {
    return this.meta.tagHistory(host, name, tag);
  }
  linkManifest(host: string, name: string, m: StoredManifest): Promise<void> {
    return this.meta.linkManifest(host, name, m);
  }
  isManifestLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.meta.isManifestLinked(host, name, digest);
  }
  linkedManifests(host: string, name: string): Promise<string[]> {
    return this.meta.linkedManifests(host, name);
  }
  linkBlob(host: string, name: string, digest: string): Promise<void> {
    return this.meta.linkBlob(host, name, digest);
  }
  isBlobLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.meta.isBlobLinked(host, name, digest);
  }
  referrers(host: string, name: string, subject: string): Promise<Descriptor[]> {
    return this.meta.referrers(host, name, subject);
  }
  /** `blobLinks`: also repositories holding only blob links (gc unlinks what it sweeps from them). */
  repositories(opts?: { blobLinks?: boolean }): Promise<RepositoryName[]> {
    return this.meta.repositories(opts);
  }

  /** Every committed blob digest (for verify). */
  allBlobs(): AsyncIterable<string> {
    return this.blobs.list();
  }
}
