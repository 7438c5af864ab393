// The store's ports: what a backend provides so the content-addressed store can sit on a filesystem (store/fs/)
// or an object store. `Store` composes them and keeps the caches; nothing above store/ sees a path.
import type { Descriptor } from '../oci/manifest.js';
import type { AllowlistStorage } from '../policy/allowlist.js';
import type { DeniedStorage } from '../policy/denied.js';
import type { ManualWindowStorage } from '../window/manual-store.js';
import type { Readable } from 'node:stream';
import type { CommitLocks } from './commit-gate.js';

// ─── BlobBackend: committed bytes by digest (and the spool they arrive through) ────────────────────────────

/** An inclusive byte range, as HTTP Range gives it. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface BlobStat {
  sizeBytes: number;
  /** When the blob was committed (epoch ms), where the backend knows it: gc spares what is younger than its grace. */
  committedMs?: number;
}

/** What the committed blobs add up to; kept current as blobs commit and go, never a scan per call. */
export interface BlobUsage {
  blobs: number;
  bytes: number;
}

/** Unverified bytes on their way in: local and private to one ingest, never visible as a blob. */
export interface Spool {
  readonly bytesWritten: number;
  /** Appends the whole chunk; a full disk is INSUFFICIENT_STORAGE. */
  write(chunk: Uint8Array): Promise<void>;
  /** Flushes to stable storage and closes: the bytes are durable before a commit makes them visible. */
  seal(): Promise<void>;
  /** Closes and removes the spool; harmless at any time and more than once. */
  discard(): Promise<void>;
  /**
   * A descriptor on the bytes written so far, for readers that tail a download (after the commit: the blob
   * itself), or undefined once the spool is gone without becoming a blob. A spool that is no file (memory) has
   * none: its readers wait for the commit.
   */
  openFd?(): Promise<number | undefined>;
}

/** A sealed spool whose bytes were hashed and counted by the ingest (store/ingest.ts) and match these. */
export interface VerifiedSpool {
  spool: Spool;
  digest: string;
  sizeBytes: number;
}

export interface BlobBackend {
  /** Size of a committed blob, or undefined. */
  stat(digest: string): Promise<BlobStat | undefined>;
  /** A stream of `range` of a committed blob, or undefined when it is not (or no longer) there: answer as a miss. */
  read(digest: string, range: ByteRange): Promise<Readable | undefined>;
  /** A whole (small) blob in one read, or undefined: manifests and configs. */
  readAll(digest: string): Promise<Buffer | undefined>;
  /**
   * Optional fast path for the HTTP layer: a descriptor the pooled sender reads and closes; an object store has none.
   * Undefined: no descriptor here — gone, or not held as a file (a blob cache that cannot keep it): the caller
   * then streams with `read`, which tells the two apart.
   */
  openFd?(digest: string): Promise<number | undefined>;
  /**
   * Optional, an object store with `redirect` configured: a short-lived URL a client GETs the committed blob from
   * itself (Range honoured), so its bytes do not pass through sluice. It signs only: it does not check the blob is there.
   */
  presign?(digest: string): Promise<string>;
  /** A new spool; refused (INSUFFICIENT_STORAGE) up front when `expectBytes` cannot fit. */
  createSpool(expectBytes?: number): Promise<Spool>;
  /** Makes a verified spool the blob of its digest, atomically: a reader sees all of it or nothing. Idempotent. */
  commit(verified: VerifiedSpool): Promise<void>;
  /** Removes a blob; false when there was none. */
  delete(digest: string): Promise<boolean>;
  /** Takes a blob out of service but keeps its bytes for the operator (verify --repair); returns where they went. */
  quarantine(digest: string): Promise<string>;
  /** Every committed blob's digest. */
  list(): AsyncIterable<string>;
  usage(): Promise<BlobUsage>;
  /** Another process changed the blobs (import, verify --repair): recount usage when next asked. */
  refresh(): void;
  /** A fresh private local folder in the spool area (e.g. to unpack an import tar); the caller removes it. */
  scratchDir(prefix: string): Promise<string>;
  /** Removes this process's spool area. */
  close(): Promise<void>;
}

// ─── MetadataStore: what the store knows besides blob bytes — tags, which manifests and blobs a repository holds,
// referrers by subject, and the state documents (allowlist, denied log, manual window). store/fs fills it on
// today's layout; a database can fill it for several replicas. Callers hand it plain values.

export interface RepositoryName {
  host: string;
  name: string;
}

/** A committed manifest as linking needs it: its referrer entry is derived from the body. */
export interface LinkableManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
}

/**
 * A state document stayed locked by another process or replica past the wait (fs: `allowlist.json.lock`,
 * PostgreSQL: the allowlist's advisory lock). What callers above store/ test for, whichever backend.
 */
export class DocumentBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DocumentBusyError';
  }
}

/** The documents policy and window state persist through; each declares its own interface. */
export interface StateDocuments {
  allowlist: AllowlistStorage;
  denied: DeniedStorage;
  window: ManualWindowStorage;
}

/** What the store remembers of a committed manifest beside its bytes. */
export interface ManifestType {
  mediaType: string;
  sizeBytes: number;
}

export interface MetadataStore {
  /** Bumped whenever a tag or a manifest link changes, so derived sets (reachability) know to recompute. */
  readonly generation: number;
  /** Shared metadata (several replicas): this replica's name there. */
  readonly replica?: string;
  /**
   * Shared metadata: why this replica cannot vouch for the shared state now (its change feed silent or broken past
   * the bound, a change not applied); undefined when it can. Content and upstream access fail closed meanwhile.
   */
  unconfirmed?(): string | undefined;
  setTag(host: string, name: string, tag: string, digest: string): Promise<void>;
  getTag(host: string, name: string, tag: string): Promise<string | undefined>;
  /** Sorted. */
  listTags(host: string, name: string): Promise<string[]>;
  /**
   * The digests the tag has pointed at, newest (the current one) first, as recorded when it moved; a tag set
   * before history was kept has its current digest only. Empty when there is no such tag.
   */
  tagHistory(host: string, name: string, tag: string): Promise<string[]>;
  /** Removes a tag and its history (gc, when what it points at goes); false when there was none. */
  deleteTag(host: string, name: string, tag: string): Promise<boolean>;
  /** Records that a manifest belongs to a repository; indexes it as a referrer when it has a subject. */
  linkManifest(host: string, name: string, m: LinkableManifest): Promise<void>;
  isManifestLinked(host: string, name: string, digest: string): Promise<boolean>;
  /** Digests of every manifest linked to a repository. */
  linkedManifests(host: string, name: string): Promise<string[]>;
  /** Records that a blob arrived through a repository (fetched, confirmed by its upstream, or imported). */
  linkBlob(host: string, name: string, digest: string): Promise<void>;
  isBlobLinked(host: string, name: string, digest: string): Promise<boolean>;
  /** Digests of every blob linked to a repository. */
  linkedBlobs(host: string, name: string): Promise<string[]>;
  /** Undoes linkManifest (its referrer entry too); for gc, once the manifest itself goes. */
  unlinkManifest(host: string, name: string, m: LinkableManifest): Promise<void>;
  /** Undoes linkBlob; for gc. */
  unlinkBlob(host: string, name: string, digest: string): Promise<void>;
  /** Descriptors of the manifests whose subject is `subject`, by digest. */
  referrers(host: string, name: string, subject: string): Promise<Descriptor[]>;
  /** Every repository with a tag or a linked manifest; with `blobLinks`, those with only linked blobs too (gc). */
  repositories(opts?: { blobLinks?: boolean }): Promise<RepositoryName[]>;
  /** Records a committed manifest's media type, store-wide by digest. */
  putManifestType(digest: string, t: ManifestType): Promise<void>;
  manifestType(digest: string): Promise<ManifestType | undefined>;
  /** Forgets a manifest's media type (gc, as its blob goes); harmless when there is none. */
  deleteManifestType(digest: string): Promise<void>;
  /** Drops what is memoised and bumps the generation: another process (import, offline sync) changed the store. */
  invalidate(): void;
  readonly state: StateDocuments;
  /** One download per digest across every process sharing this store, when the store can tell (a database). */
  readonly leases?: FlightLeases;
  /** The gc/commit gate across replicas (a database); without it, the store folder's own (store/fs/commit-marks.ts). */
  readonly commitLocks?: CommitLocks;
  /** gc's marks on the shared clock (a database); absent: the grace is judged by this process's clock. */
  readonly gcLedger?: GcLedger;
  /** Blob removals told to every replica (a database), so each drops its local cached copy. */
  readonly blobNotices?: BlobNotices;
  /** Releases connections; fs has none. */
  close?(): Promise<void>;
}

/**
 * When each blob was first found unreferenced, by the database's clock, so gc removes it only once that is longer
 * ago than the grace — whichever replica runs gc and however fast its clock runs.
 */
export interface GcLedger {
  /**
   * Records `unreferenced` as marked now unless marked already, forgets every other mark (referenced again, used,
   * or gone), and returns those marked at least `graceMs` ago. `record: false` (a dry run) only reads.
   */
  ripe(unreferenced: string[], graceMs: number, record: boolean): Promise<Set<string>>;
}

/** Who removed a blob tells the others; each replica's local blob cache (store/cache/) listens. */
export interface BlobNotices {
  announceGone(digest: string): Promise<void>;
  /** `digest` is '' when notices may have been missed (the connection dropped): the listener rechecks what it holds. */
  onGone(handler: (digest: string) => void): () => void;
}

// ─── FlightLeases: the cross-process half of single flight (the in-process half is mirror/flight.ts) ─────────

export interface FlightLease {
  /** Harmless more than once. */
  release(): Promise<void>;
}

export interface FlightLeases {
  /**
   * Resolves once this process holds the lease on `digest`: at once when nobody else downloads it, else when the
   * holder releases it or dies. The caller then checks the store first: the holder may have committed it.
   * Waiting longer than `waitMs` rejects (UPSTREAM_FAILED), and so does `signal` (shutdown).
   */
  acquire(digest: string, waitMs: number, signal?: AbortSignal): Promise<FlightLease>;
}

/** A store used by one process at a time (or whose processes each download): the in-process flight is all. */
export const LOCAL_LEASES: FlightLeases = {
  acquire: async () => ({ release: async () => undefined }),
};
