// The one door to content: each request in its order, allowlist → store → window → upstream, answered with what
// the route sends (a manifest, a blob body, a tag list, referrers). It composes the decision (a Policy), upstream
// access (upstream-access.ts), the blob flights (blob-flights.ts, flight.ts) and stored bytes' entitlement (entitlement.ts).
import { Entitlement } from './entitlement.js';
import type { BlobInfo, Descriptor, Store, StoredManifest } from '../store/store.js';
import type { GrowingFile } from '../store/ingest.js';
import { RegistryError } from '../oci/errors.js';
import type { ClosedKind } from './access.js';
import type { UpstreamAccess } from './upstream-access.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import { BlobFlights, MAX_JOINS } from './blob-flights.js';
import { openStored, type BlobBody, type BlobRequest } from './blob-body.js';
import type { FetchNote } from './tag-cache.js';
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
  /** The same upstream access the policy was given. */
  access: UpstreamAccess;
  ingestTimeoutMs: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** Downloads in flight, their failures and joins (metrics/); none counted when absent. */
  ingestMetrics?: IngestMetrics;
}

export type { BlobBody, BlobBytes, BlobRequest, ByteRange, GrowingFile } from './blob-body.js';

/** Where a blob's bytes are now: verified in the store, or arriving through a download. */
type BlobSource =
  | { kind: 'file'; sizeBytes: number }
  | { kind: 'stream'; sizeBytes: number | undefined; openFd: () => Promise<number>; growth: GrowingFile; done: Promise<BlobInfo>; own: boolean };

/** A tags/list's warning when the upstream's list could not be had and the store's is sent instead. */
export type TagsLog = (msg: string, fields: Record<string, unknown>) => void;

export class Mirror {
  private readonly entitlement: Entitlement;
  private readonly flights: BlobFlights;

  constructor(private readonly deps: MirrorDeps) {
    const { store, access: gate, log } = deps;
    this.entitlement = new Entitlement({ store, gate });
    const metrics = deps.ingestMetrics ?? NO_INGEST_METRICS;
    this.flights = new BlobFlights({ store, gate, entitlement: this.entitlement, ingestTimeoutMs: deps.ingestTimeoutMs, log, metrics });
  }

  /** `note.fetched` is set when the answer had to come from upstream. */
  async manifest(host: string, name: string, reference: { tag?: string; digest?: string }, client?: string, note?: FetchNote): Promise<StoredManifest> {
    if (reference.tag !== undefined) await this.deps.policy.checkTag(host, name, reference.tag, client);
    else await this.deps.policy.checkDigest(host, name, reference.digest ?? '', client);
    return this.ensureManifest(host, name, reference.tag ?? reference.digest ?? '', note);
  }

  /** What to send for a blob: its size now, its bytes when the route opens them. */
  async blob(req: BlobRequest): Promise<BlobBody> {
    const { host, name, digest } = req;
    await this.deps.policy.checkDigest(host, name, digest, req.client, 'BLOB_UNKNOWN');
    const src = await this.locateBlob(host, name, digest);
    if (src.kind === 'file') return this.storedBody(req, src.sizeBytes, false);
    // A blob still arriving is sent live from its first byte; a range from an offset, or a download of unknown
    // size, waits for the verified file.
    if (req.fromOffset || !src.sizeBytes) return this.storedBody(req, await this.ensureBlob(host, name, digest), true);
    const range = { start: 0, end: src.sizeBytes - 1 };
    // Live bytes of an upstream ingest: if it fails verification the response is cut short, never completed.
    return { sizeBytes: src.sizeBytes, ranges: false, fetched: true, open: async () => ({ kind: 'growing', fd: await src.openFd(), range, file: src.growth }) };
  }

  /** A manifest from the cache, or (in a window) from upstream; the caller has applied the allowlist. */
  async ensureManifest(host: string, name: string, reference: string, note?: FetchNote): Promise<StoredManifest> {
    const byDigest = reference.startsWith('sha256:');
    const digest = byDigest ? reference : await this.deps.access.resolveTag(host, name, reference, note);
    const m = await this.deps.store.getManifest(digest);
    if (!m) {
      if (note) note.fetched = true;
      return this.deps.access.pullManifest(host, name, digest);
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

  /**
   * tags/list: the allowed tags of a repository some rule names. In a window the upstream's whole list (its pages
   * followed, bounded), else the store's; always filtered by the allowlist, so paging never sees a tag that is not
   * allowed. An upstream that does not know the repository is NAME_UNKNOWN; any other failure falls back to the store.
   */
  async tags(host: string, name: string, client: string | undefined, log: TagsLog): Promise<string[]> {
    const { policy, access } = this.deps;
    await policy.checkRepository(host, name, client);
    if (!access.openUpstream(host)) return this.storedTags(host, name);
    let listed: string[];
    try {
      listed = await access.listTags(host, name);
    } catch (e) {
      if (e instanceof RegistryError && e.kind === 'NAME_UNKNOWN') throw e;
      log('tags/list from the store instead of the upstream', { host, name, why: e instanceof Error ? e.message : String(e) });
      return this.storedTags(host, name);
    }
    return policy.filterTags(host, name, listed);
  }

  async referrers(host: string, name: string, digest: string, client?: string): Promise<Descriptor[]> {
    await this.deps.policy.checkDigest(host, name, digest, client);
    return this.deps.store.referrers(host, name, digest);
  }

  /** Referrers the upstream knows for a digest (empty when it has no referrers API); for prefetch. */
  async upstreamReferrers(host: string, name: string, digest: string): Promise<Descriptor[]> {
    const index = await this.deps.access.upstream(host).referrers(name, digest);
    return index?.manifests ?? [];
  }

  /** The digest a tag has upstream now (one HEAD, nothing stored); for prefetch's check of pinned tags. */
  async upstreamTagDigest(host: string, name: string, tag: string): Promise<string | undefined> {
    return (await this.deps.access.upstream(host).headManifest(name, tag, [...MANIFEST_MEDIA_TYPES])).digest;
  }

  /** See BlobFlights.drain: downloads may finish until `deadlineMs`, then the rest are cancelled. */
  drain(deadlineMs: number): Promise<void> {
    return this.flights.drain(deadlineMs);
  }

  /** Store (memoised stat, then this repository's entitlement) → window → upstream (a download is started only in a window). */
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

  private async storedTags(host: string, name: string): Promise<string[]> {
    return this.deps.policy.filterTags(host, name, await this.deps.store.listTags(host, name));
  }

  /** A stored blob's body. Gone between stat and open (quarantined by verify --repair): answered as any miss. */
  private storedBody(req: BlobRequest, sizeBytes: number, fetched: boolean): BlobBody {
    const body: BlobBody = {
      sizeBytes,
      ranges: true,
      fetched,
      open: async (range) => {
        const bytes = await openStored(this.deps.store, req.digest, sizeBytes, range);
        if (bytes) return bytes;
        const again = await this.blob(req);
        body.fetched ||= again.fetched;
        return again.open(range);
      },
    };
    return body;
  }
}
