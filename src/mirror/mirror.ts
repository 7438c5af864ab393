// The request policy of DESIGN.md §2 after parsing, in its order: allowlist → store → window → upstream.
// The parts it composes: the tag cache (tag-cache.ts), manifest fetches (manifests.ts), the blob flights
// (blob-flights.ts, flight.ts) and, for stored bytes, the repository's entitlement to them (entitlement.ts).
import type { GrowingFile } from '../store/ingest.js';
import { Entitlement } from './entitlement.js';
import type { BlobInfo, Descriptor, Store, StoredManifest } from '../store/store.js';
import type { Upstream } from '../upstream/client.js';
import type { UpstreamLookup } from '../upstream/pool.js';
import type { WindowState } from '../window/state.js';
import { closedError, requireUpstream, type ClosedKind } from './access.js';
import type { UpstreamView } from './upstream-reach.js';
import { upstreamTags } from './upstream-tags.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import { BlobFlights, MAX_JOINS } from './blob-flights.js';
import { ManifestFetcher } from './manifests.js';
import { TagCache, type FetchNote } from './tag-cache.js';
import { NO_INGEST_METRICS, type IngestMetrics } from '../metrics/ports.js';

export type { FetchNote } from './tag-cache.js';

/** Allowlist decisions for one request; throws RegistryError DENIED when refused. */
export interface Policy {
  checkTag(host: string, name: string, tag: string, client?: string): Promise<void>;
  /** `miss`: the 404 kind when, outside a window, the store cannot tell (a rule's tag was never fetched). */
  checkDigest(host: string, name: string, digest: string, client?: string, miss?: ClosedKind): Promise<void>;
  filterTags(host: string, name: string, tags: string[]): Promise<string[]>;
  /** Refuses a repository no rule could ever allow (before listing its tags upstream). */
  checkRepository(host: string, name: string, client?: string): Promise<void>;
}

export interface MirrorDeps {
  store: Store;
  policy: Policy;
  upstreams: UpstreamLookup;
  window: WindowState;
  tagTtlMs: number;
  ingestTimeoutMs: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** Downloads in flight, their failures and joins (metrics/); none counted when absent. */
  ingestMetrics?: IngestMetrics;
}

export type BlobSource =
  | { kind: 'file'; sizeBytes: number }
  | { kind: 'stream'; sizeBytes: number | undefined; openFd: () => Promise<number>; growth: GrowingFile; done: Promise<BlobInfo>; own: boolean };

export class Mirror {
  private readonly entitlement: Entitlement;
  private readonly tagCache: TagCache;
  private readonly manifests: ManifestFetcher;
  private readonly flights: BlobFlights;

  constructor(private readonly deps: MirrorDeps) {
    const { store, window, log } = deps;
    const upstream = (host: string): Upstream => requireUpstream(deps.upstreams, host);
    this.entitlement = new Entitlement({
      store,
      upstream,
      isWindowOpen: () => window.isOpen(),
      closed: (kind, what, detail) => closedError(window, kind, what, detail),
    });
    const ingest = deps.ingestMetrics ?? NO_INGEST_METRICS;
    this.manifests = new ManifestFetcher({ store, upstream, log, joined: () => ingest.joined('manifest') });
    const fetchManifest = (host: string, name: string, ref: string): Promise<StoredManifest> => this.manifests.fetch(host, name, ref);
    this.tagCache = new TagCache({ store, window, upstream, fetchManifest, ttlMs: deps.tagTtlMs, log });
    this.flights = new BlobFlights({ store, window, entitlement: this.entitlement, upstream, ingestTimeoutMs: deps.ingestTimeoutMs, log, metrics: ingest });
  }

  /** `note.fetched` is set when the answer had to come from upstream. */
  async manifest(host: string, name: string, reference: { tag?: string; digest?: string }, client?: string, note?: FetchNote): Promise<StoredManifest> {
    if (reference.tag !== undefined) await this.deps.policy.checkTag(host, name, reference.tag, client);
    else await this.deps.policy.checkDigest(host, name, reference.digest ?? '', client);
    return this.ensureManifest(host, name, reference.tag ?? reference.digest ?? '', note);
  }

  async blob(host: string, name: string, digest: string, client?: string): Promise<BlobSource> {
    await this.deps.policy.checkDigest(host, name, digest, client, 'BLOB_UNKNOWN');
    return this.locateBlob(host, name, digest);
  }

  /** A manifest from the cache, or (in a window) from upstream; the caller has applied the allowlist. */
  async ensureManifest(host: string, name: string, reference: string, note?: FetchNote): Promise<StoredManifest> {
    const byDigest = reference.startsWith('sha256:');
    const digest = byDigest ? reference : await this.tagCache.resolve(host, name, reference, note);
    const m = await this.deps.store.getManifest(digest);
    if (!m) {
      if (note) note.fetched = true;
      return this.pullManifest(host, name, digest);
    }
    // A tag of this repository vouches for its digest; a bare digest may have been stored for another one.
    if (byDigest) await this.entitlement.manifest(host, name, m);
    return m;
  }

  /** A blob complete and verified on disk, fetching it in a window; the caller has applied the allowlist. */
  async ensureBlob(host: string, name: string, digest: string): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      const src = await this.locateBlob(host, name, digest);
      if (src.kind === 'file') return src.sizeBytes;
      try {
        // The flight's own outcome: a failed download is its upstream error (502), not "unknown".
        return (await src.done).sizeBytes;
      } catch (e) {
        // Another repository's failed download says nothing about this one's upstream.
        if (src.own || attempt >= MAX_JOINS) throw e;
      }
    }
  }

  async tags(host: string, name: string): Promise<string[]> {
    const tags = await this.deps.store.listTags(host, name);
    return this.deps.policy.filterTags(host, name, tags);
  }

  async checkRepository(host: string, name: string, client?: string): Promise<void> {
    await this.deps.policy.checkRepository(host, name, client);
  }

  async filterTags(host: string, name: string, tags: string[]): Promise<string[]> {
    return this.deps.policy.filterTags(host, name, tags);
  }

  async referrers(host: string, name: string, digest: string, client?: string): Promise<Descriptor[]> {
    await this.deps.policy.checkDigest(host, name, digest, client);
    return this.deps.store.referrers(host, name, digest);
  }

  /** Referrers the upstream knows for a digest (empty when it has no referrers API); for prefetch. */
  async upstreamReferrers(host: string, name: string, digest: string): Promise<Descriptor[]> {
    const index = await requireUpstream(this.deps.upstreams, host).referrers(name, digest);
    return index?.manifests ?? [];
  }

  /** The digest a tag has upstream now (one HEAD, nothing stored); for prefetch's check of pinned tags. */
  async upstreamTagDigest(host: string, name: string, tag: string): Promise<string | undefined> {
    return (await requireUpstream(this.deps.upstreams, host).headManifest(name, tag, [...MANIFEST_MEDIA_TYPES])).digest;
  }

  /** What the allowlist decision may ask of the upstream in a window (see upstream-reach.ts). */
  upstreamView(): UpstreamView {
    const { window, upstreams } = this.deps;
    return {
      isOpen: () => window.isOpen(),
      closed: (kind, what, detail) => closedError(window, kind, what, detail),
      resolveTag: (host, name, tag) => this.tagCache.resolve(host, name, tag),
      listTags: (host, name) => upstreamTags(window, requireUpstream(upstreams, host), name),
      pullManifest: (host, name, digest) => this.manifests.pull(host, name, digest),
    };
  }

  /** See BlobFlights.drain: downloads may finish until `deadlineMs`, then the rest are cancelled. */
  drain(deadlineMs: number): Promise<void> {
    return this.flights.drain(deadlineMs);
  }

  private async locateBlob(host: string, name: string, digest: string): Promise<BlobSource> {
    const hit = await this.deps.store.stat(digest);
    if (hit) {
      await this.entitlement.blob(host, name, digest);
      return { kind: 'file', sizeBytes: hit.sizeBytes };
    }
    const { flight, own } = await this.flights.flightFor(host, name, digest);
    if (!flight) return this.locateBlob(host, name, digest);
    if (flight.result) return { kind: 'file', sizeBytes: flight.result.sizeBytes };
    // An unknown size makes the route wait for the verified blob: so does a spool that cannot be tailed.
    return { kind: 'stream', sizeBytes: flight.tailable ? flight.sizeBytes : undefined, openFd: () => flight.openFd(), growth: flight.growth, done: flight.done, own };
  }

  private pullManifest(host: string, name: string, digest: string): Promise<StoredManifest> {
    if (!this.deps.window.isOpen()) return Promise.reject(closedError(this.deps.window, 'MANIFEST_UNKNOWN', 'manifest', { name, digest }));
    return this.manifests.pull(host, name, digest);
  }
}
