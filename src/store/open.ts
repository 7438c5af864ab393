// The one storage factory: blobs, metadata, state documents and leases from config, for the server and every
// CLI command alike — the fs layout by default, blobs on S3 and/or metadata in PostgreSQL when configured.
import { mkdir } from 'node:fs/promises';
import type { BlobCacheConfig, Config, PostgresConfig, S3StorageConfig } from '../config/config.js';
import { CachedBlobBackend } from './cache/blobs.js';
import { FsBlobBackend } from './fs/blobs.js';
import { FsCommitLocks } from './fs/commit-marks.js';
import { FsLayout } from './fs/layout.js';
import { FsMetadataStore } from './fs/metadata.js';
import { fsStateDocuments } from './fs/state.js';
import { LocalSpoolArea } from './local/spool.js';
import { MemoryBlobBackend, MemoryBlobs } from './memory/blobs.js';
import { MemoryCommitLocks } from './memory/commit-locks.js';
import { MemoryMetadata, MemoryMetadataStore } from './memory/metadata.js';
import { LOCAL_LEASES, type BlobBackend, type BlobNotices, type MetadataStore, type StateDocuments } from './ports.js';
import { Store, type StoreLimits } from './store.js';
import { MIGRATIONS } from './pg/migrations.js';

/** The part of the config the store is built from (a whole Config will do). */
export type StoreConfig = Pick<Config, 'storage'> & Partial<Pick<Config, 'storageMaxBytes' | 'storageMaxBlobBytes' | 's3' | 'storageCache' | 'postgres'>>;

export interface OpenStoreOptions {
  /** A server follows the other replicas' changes (LISTEN); a CLI command does not. Default true. */
  follow?: boolean;
}

/**
 * Opens (creating) the store the config describes: `storage` is the local folder (spools; on fs the whole
 * layout). Spool leftovers of processes that are gone are removed.
 */
export async function openStore(cfg: StoreConfig, opts: OpenStoreOptions = {}): Promise<Store> {
  const paths = new FsLayout(cfg.storage);
  const spools = await LocalSpoolArea.open(paths.spoolsDir);
  let store: Store | undefined;
  const onGone = (digest: string): void => store?.forget(digest);
  let meta: MetadataStore | undefined;
  try {
    meta = cfg.postgres ? await openPostgres(cfg.postgres, opts.follow) : await openFsMetadata(paths, spools);
    const blobs = cfg.s3 ? await openCache(await openS3(cfg.s3, spools), cfg.storageCache, opts.follow) : await FsBlobBackend.open(paths, spools, { onGone });
    followRemovals(meta.blobNotices, blobs, onGone);
    const leases = meta.leases ?? LOCAL_LEASES;
    const commitLocks = meta.commitLocks ?? new FsCommitLocks(paths.commitsDir);
    store = new Store({ root: cfg.storage, blobs, meta, leases, commitLocks }, { maxBytes: cfg.storageMaxBytes, maxBlobBytes: cfg.storageMaxBlobBytes });
  } catch (e) {
    await meta?.close?.();
    await spools.close();
    throw e;
  }
  return store;
}

/** What the instances of one in-memory store share: a second Store over the same data plays another replica. */
export interface MemoryStoreData {
  blobs: MemoryBlobs;
  meta: MemoryMetadata;
  commitLocks: MemoryCommitLocks;
}

export function memoryStoreData(): MemoryStoreData {
  return { blobs: new MemoryBlobs(), meta: new MemoryMetadata(), commitLocks: new MemoryCommitLocks() };
}

/** A store wholly in memory (blobs, metadata, state documents, leases): for tests above the store; never configured. */
export function openMemoryStore(limits: StoreLimits = {}, data: MemoryStoreData = memoryStoreData()): Store {
  const meta = new MemoryMetadataStore(data.meta);
  return new Store({ blobs: new MemoryBlobBackend(data.blobs), meta, leases: meta.leases, commitLocks: data.commitLocks }, limits);
}

const opened = new Map<string, Promise<StateDocuments>>();

/**
 * The state documents (allowlist, denied log, manual window) for a CLI command that works without a running
 * server or a store: beside the store on fs, or in the shared database (one connection pool per process).
 */
export function openStateDocuments(cfg: Pick<Config, 'storage'> & { postgres?: PostgresConfig }): Promise<StateDocuments> {
  if (!cfg.postgres) return Promise.resolve(fsStateDocuments(new FsLayout(cfg.storage)));
  const c = cfg.postgres;
  const key = JSON.stringify(c);
  let docs = opened.get(key);
  if (!docs) {
    docs = openPostgres(c, false).then((m) => m.state);
    opened.set(key, docs);
  }
  return docs;
}

/**
 * Runs `fn` on the state documents for a CLI command that edits them with no server reachable. On PostgreSQL it
 * follows the change feed meanwhile (a LISTEN session of its own), so an edit succeeds only once every live
 * replica has acknowledged it, as through the admin API; the connections are closed after.
 */
export async function withEditableStateDocuments<T>(cfg: Pick<Config, 'storage'> & { postgres?: PostgresConfig }, fn: (docs: StateDocuments) => Promise<T>): Promise<T> {
  if (!cfg.postgres) return fn(fsStateDocuments(new FsLayout(cfg.storage)));
  const meta = await openPostgres(cfg.postgres, true);
  try {
    return await fn(meta.state);
  } finally {
    await meta.close?.();
  }
}

async function openFsMetadata(paths: FsLayout, spools: LocalSpoolArea): Promise<MetadataStore> {
  await mkdir(paths.repositoriesDir, { recursive: true });
  return new FsMetadataStore(paths, spools);
}

// Loaded only when configured: the AWS SDK and pg cost start-up time an fs store (the default) never needs.
async function openS3(c: S3StorageConfig, spools: LocalSpoolArea): Promise<BlobBackend> {
  const [{ S3BlobBackend }, { s3Client }] = await Promise.all([import('./s3/blobs.js'), import('./s3/client.js')]);
  return S3BlobBackend.open(s3Client(c), {
    bucket: c.bucket, prefix: c.prefix, endpoint: c.endpoint ?? `AWS S3 ${c.region}`, ...(c.redirectTtlSeconds !== undefined ? { redirectTtlSeconds: c.redirectTtlSeconds } : {}),
  }, spools);
}

/**
 * A server's local blob cache in front of the object store. A CLI command opens none: it would read the
 * replica's copies instead of the bucket (verify) and share a folder one server owns.
 */
async function openCache(inner: BlobBackend, c: BlobCacheConfig | undefined, follow: boolean | undefined): Promise<BlobBackend> {
  if (!c || follow === false) return inner;
  return CachedBlobBackend.open(inner, { path: c.path, maxBytes: c.maxBytes });
}

/** Another replica removed a blob (gc, verify --repair): forget it, and drop the local copy. '' = notices were missed. */
function followRemovals(notices: BlobNotices | undefined, blobs: BlobBackend, forget: (digest: string) => void): void {
  const cache = blobs instanceof CachedBlobBackend ? blobs : undefined;
  notices?.onGone((digest) => {
    if (digest === '') return cache?.suspectAll();
    cache?.forget(digest);
    forget(digest);
  });
}

async function openPostgres(c: PostgresConfig, follow: boolean | undefined): Promise<MetadataStore> {
  const { PgMetadataStore } = await import('./pg/metadata.js');
  return PgMetadataStore.open(c, { listen: follow });
}

/** The PostgreSQL schema version this build migrates a database to (`sluice version`). */
export const DATABASE_SCHEMA_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));
