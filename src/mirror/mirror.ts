// The request policy of DESIGN.md §2 after parsing: allowlist → cache → window → upstream.
// Owns single-flight per digest, the tag-resolution cache, and the error a client sees for a closed window.
// Stored bytes go out through a repository only if it is entitled to them (entitlement.ts).
import type { GrowingFile } from '../store/ingest.js';
import { LRUCache } from 'lru-cache';
import { Entitlement } from './entitlement.js';
import { RegistryError } from '../oci/errors.js';
import { Flight } from './flight.js';
import { isIndexType, manifestMediaType, parseManifest, MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import { isDigest } from '../oci/reference.js';
import type { BlobInfo, Descriptor, FlightLease, Store, StoredManifest } from '../store/store.js';
import type { Upstream } from '../upstream/client.js';
import type { WindowState } from '../window/state.js';

/** Allowlist decisions for one request; throws RegistryError DENIED when refused. */
export interface Policy {
  checkTag(host: string, name: string, tag: string, client?: string): Promise<void>;
  checkDigest(host: string, name: string, digest: string, client?: string): Promise<void>;
  filterTags(host: string, name: string, tags: string[]): Promise<string[]>;
  /** Refuses a repository no rule could ever allow (before listing its tags upstream). */
  checkRepository(host: string, name: string, client?: string): Promise<void>;
}

export interface MirrorDeps {
  store: Store;
  policy: Policy;
  upstreams: Map<string, Upstream>;
  window: WindowState;
  tagTtlMs: number;
  ingestTimeoutMs: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

export type BlobSource =
  | { kind: 'file'; sizeBytes: number }
  | { kind: 'stream'; sizeBytes: number | undefined; openFd: () => Promise<number>; growth: GrowingFile; done: Promise<BlobInfo>; own: boolean };

/** A download under way, and the repository whose upstream it comes from. */
interface FlightEntry {
  host: string;
  name: string;
  pending: Promise<Flight | undefined>;
}

/** How many other repositories' failed downloads a request sits through before it starts one of its own. */
const MAX_JOINS = 3;

export class Mirror {
  private readonly flights = new Map<string, FlightEntry>();
  private readonly entitlement: Entitlement;
  private readonly tagChecks: LRUCache<string, string>;
  private readonly manifestPulls = new Map<string, Promise<StoredManifest>>();
  /** One per blob download in progress, so shutdown can cancel them (see drain). */
  private readonly ingestAborts = new Set<AbortController>();

  constructor(private readonly deps: MirrorDeps) {
    this.entitlement = new Entitlement({
      store: deps.store,
      upstream: (host) => this.requireUpstream(host),
      isWindowOpen: () => this.isWindowOpen(),
      closed: (kind, what, detail) => this.closed(kind, what, detail),
    });
    // Coalesced and time-bounded: at most one upstream resolution per tag per TTL.
    this.tagChecks = new LRUCache<string, string>({
      max: 10_000,
      ttl: Math.max(1, deps.tagTtlMs),
      fetchMethod: async (key) => {
        const [host = '', name = '', tag = ''] = key.split('\u0000');
        return this.refreshTag(host, name, tag);
      },
    });
  }

  get store(): Store {
    return this.deps.store;
  }

  async manifest(host: string, name: string, reference: { tag?: string; digest?: string }, client?: string): Promise<StoredManifest> {
    if (reference.tag !== undefined) await this.deps.policy.checkTag(host, name, reference.tag, client);
    else await this.deps.policy.checkDigest(host, name, reference.digest ?? '', client);
    return this.ensureManifest(host, name, reference.tag ?? reference.digest ?? '');
  }

  async blob(host: string, name: string, digest: string, client?: string): Promise<BlobSource> {
    await this.deps.policy.checkDigest(host, name, digest, client);
    return this.locateBlob(host, name, digest);
  }

  /** A manifest from the cache, or (in a window) from upstream; the caller has applied the allowlist. */
  async ensureManifest(host: string, name: string, reference: string): Promise<StoredManifest> {
    const byDigest = reference.startsWith('sha256:');
    const digest = byDigest ? reference : await this.resolveTag(host, name, reference);
    const m = await this.deps.store.getManifest(digest);
    if (!m) return this.pullManifest(host, name, digest);
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

  private async locateBlob(host: string, name: string, digest: string): Promise<BlobSource> {
    const hit = await this.deps.store.stat(digest);
    if (hit) {
      await this.entitlement.blob(host, name, digest);
      return { kind: 'file', sizeBytes: hit.sizeBytes };
    }
    const { flight, own } = await this.flightFor(host, name, digest);
    if (!flight) return this.locateBlob(host, name, digest);
    if (flight.result) return { kind: 'file', sizeBytes: flight.result.sizeBytes };
    return { kind: 'stream', sizeBytes: flight.sizeBytes, openFd: () => flight.openFd(), growth: flight.growth, done: flight.done, own };
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
    const index = await this.requireUpstream(host).referrers(name, digest);
    return index?.manifests ?? [];
  }

  /** "until <ISO>" of the next window, or why there is none; used in every closed-window message. */
  closedUntil(next: Date | null = this.deps.window.status().nextOpen): string {
    return next ? `closed until ${next.toISOString()}` : 'closed (no sync window is scheduled)';
  }

  isWindowOpen(): boolean {
    return this.deps.window.isOpen();
  }

  upstreamFor(host: string): Upstream | undefined {
    return this.deps.upstreams.get(host);
  }

  private async resolveTag(host: string, name: string, tag: string): Promise<string> {
    const { store, log } = this.deps;
    if (!this.isWindowOpen()) {
      const known = await store.getTag(host, name, tag);
      if (known) return known;
      throw this.closed('MANIFEST_UNKNOWN', 'manifest', { name, tag });
    }
    try {
      const digest = await this.tagChecks.fetch(`${host}\u0000${name}\u0000${tag}`);
      if (digest) return digest;
    } catch (e) {
      const known = await store.getTag(host, name, tag);
      if (known) {
        log('upstream tag resolution failed; serving the last known digest', { host, name, tag, digest: known, error: String(e) });
        return known;
      }
      throw e;
    }
    throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { name, tag });
  }

  /** N nodes asking for the same uncached manifest at once cost one upstream GET. */
  private pullManifest(host: string, name: string, digest: string): Promise<StoredManifest> {
    if (!this.isWindowOpen()) return Promise.reject(this.closed('MANIFEST_UNKNOWN', 'manifest', { name, digest }));
    const key = `${host}/${name}@${digest}`;
    const pending = this.manifestPulls.get(key) ?? this.fetchManifest(host, name, digest).finally(() => this.manifestPulls.delete(key));
    this.manifestPulls.set(key, pending);
    return pending;
  }

  /**
   * Resolves a tag upstream. A tag never seen is fetched with one GET; a known tag is re-checked with a HEAD
   * (registries such as Docker Hub count only GETs against pull limits) and its manifest is GET only if it moved.
   */
  private async refreshTag(host: string, name: string, tag: string): Promise<string> {
    const { store } = this.deps;
    if (!(await store.getTag(host, name, tag))) return (await this.fetchManifest(host, name, tag)).digest;
    const head = await this.requireUpstream(host).headManifest(name, tag, [...MANIFEST_MEDIA_TYPES]);
    const known = head.digest && isDigest(head.digest) ? await store.getManifest(head.digest) : undefined;
    if (!known) return (await this.fetchManifest(host, name, tag)).digest;
    await store.linkManifest(host, name, known);
    if ((await store.getTag(host, name, tag)) !== known.digest) await store.setTag(host, name, tag, known.digest);
    return known.digest;
  }

  /** Fetches a manifest by tag or digest, verifies it, stores it, links it (and the tag) to the repository. */
  private async fetchManifest(host: string, name: string, reference: string): Promise<StoredManifest> {
    const upstream = this.requireUpstream(host);
    const got = await upstream.getManifest(name, reference, [...MANIFEST_MEDIA_TYPES]);
    const doc = parseManifest(got.body);
    const mediaType = doc && manifestMediaType(doc, got.mediaType);
    if (!mediaType) {
      throw new RegistryError('UPSTREAM_FAILED', `upstream ${host} returned something that is not a manifest`, { name, reference });
    }
    const byDigest = reference.startsWith('sha256:');
    // A digest reference is its own proof; a tag answer must at least match what the upstream claims.
    const expect = byDigest ? reference : got.digest;
    const m = await this.deps.store.putManifest(got.body, mediaType, expect);
    await this.deps.store.linkManifest(host, name, m);
    if (!byDigest) await this.deps.store.setTag(host, name, reference, m.digest);
    this.deps.log('fetched manifest from upstream', { host, name, reference, digest: m.digest, index: isIndexType(mediaType) });
    return m;
  }

  /**
   * The one flight for a digest; the map entry is set synchronously so concurrent callers share it. A flight
   * from another repository's upstream is joined only by a repository entitled to the blob itself, and its
   * failure is not this repository's answer: it then starts (or joins) another attempt.
   */
  private async flightFor(host: string, name: string, digest: string): Promise<{ flight: Flight | undefined; own: boolean }> {
    for (let attempt = 1; attempt <= MAX_JOINS; attempt++) {
      const entry = this.flights.get(digest) ?? this.lead(host, name, digest);
      if (entry.host === host && entry.name === name) return { flight: await entry.pending, own: true };
      await this.entitlement.blob(host, name, digest);
      const flight = await entry.pending.catch(() => null);
      if (flight !== null) return { flight, own: false };
    }
    return { flight: await this.startFlight(host, name, digest), own: true };
  }

  private lead(host: string, name: string, digest: string): FlightEntry {
    const entry: FlightEntry = { host, name, pending: this.startFlight(host, name, digest) };
    this.flights.set(digest, entry);
    const forget = (): void => {
      if (this.flights.get(digest) === entry) this.flights.delete(digest);
    };
    entry.pending.then((f) => (f ? f.done.then(forget, forget) : forget()), forget);
    return entry;
  }

  /**
   * One download per digest across replicas: waits while another replica holds the lease (shutdown cancels the
   * wait). Undefined when the blob was committed meanwhile, here or by the replica waited for.
   */
  private async leaseFor(digest: string): Promise<FlightLease | undefined> {
    const wait = new AbortController();
    this.ingestAborts.add(wait);
    let lease: FlightLease;
    try {
      lease = await this.deps.store.leases.acquire(digest, this.deps.ingestTimeoutMs, wait.signal);
    } finally {
      this.ingestAborts.delete(wait);
    }
    try {
      if (!(await this.deps.store.stat(digest))) return lease;
    } catch (e) {
      await lease.release();
      throw e;
    }
    await lease.release();
    return undefined;
  }

  private async startFlight(host: string, name: string, digest: string): Promise<Flight | undefined> {
    if (!this.isWindowOpen()) throw this.closed('BLOB_UNKNOWN', 'blob', { name, digest });
    const upstream = this.requireUpstream(host);
    const lease = await this.leaseFor(digest);
    if (!lease) return undefined;
    const abort = new AbortController();
    this.ingestAborts.add(abort);
    const timer = setTimeout(
      () => abort.abort(new RegistryError('UPSTREAM_FAILED', `upstream ${host}: blob download exceeded ingestTimeout`, { name, digest })),
      this.deps.ingestTimeoutMs,
    );
    timer.unref();
    try {
      const got = await upstream.getBlob(name, digest, abort.signal);
      // Linked before commit: the blob belongs to the repository it was fetched through from its first byte on.
      // If the store refuses (disk full), the upstream body must be released: nobody else will read it.
      const writer = await this.deps.store.linkBlob(host, name, digest)
        .then(() => this.deps.store.beginIngest({ digest, sizeBytes: got.sizeBytes }))
        .catch((e: unknown) => {
          got.body.destroy();
          this.deps.log('blob ingest failed; nothing committed', { host, name, digest, error: String(e) });
          throw e;
        });
      const flight = new Flight(digest, got.sizeBytes, writer);
      void flight.run(got.body);
      flight.done
        .then((info) => this.deps.log('blob ingested from upstream', { host, name, digest, sizeBytes: info.sizeBytes }))
        .catch((e: unknown) => this.deps.log('blob ingest failed; nothing committed', { host, name, digest, error: String(e) }))
        .finally(() => {
          clearTimeout(timer);
          this.ingestAborts.delete(abort);
          void lease.release();
        });
      return flight;
    } catch (e) {
      clearTimeout(timer);
      this.ingestAborts.delete(abort);
      await lease.release();
      throw e;
    }
  }

  /**
   * Shutdown: blob downloads may finish until `deadlineMs` (epoch ms); then the rest are cancelled (temp file
   * removed, nothing committed). Resolves once every one has ended, so the store's temp folder can go.
   */
  async drain(deadlineMs: number): Promise<void> {
    const cancel = (): void => {
      for (const a of this.ingestAborts) a.abort(new RegistryError('UPSTREAM_FAILED', 'sluice is shutting down; the blob download was cancelled'));
    };
    const timer = setTimeout(cancel, Math.max(0, deadlineMs - Date.now()));
    try {
      while (this.flights.size > 0) await Promise.allSettled([...this.flights.values()].map((e) => e.pending.then((f) => f?.done)));
    } finally {
      clearTimeout(timer);
    }
  }

  private requireUpstream(host: string): Upstream {
    const u = this.deps.upstreams.get(host);
    if (!u) throw new RegistryError('NAME_UNKNOWN', 'registry host is not a configured upstream', { host });
    return u;
  }

  /** The hard-fail answer outside a window: immediate, and it says when access opens next. */
  private closed(kind: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN', what: string, detail: Record<string, string>): RegistryError {
    const next = this.deps.window.status().nextOpen;
    return new RegistryError(kind, `${what} not cached; upstream access ${this.closedUntil(next)}`, {
      ...detail,
      nextWindow: next ? next.toISOString() : null,
    });
  }
}
