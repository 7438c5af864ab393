// The one object for upstream access, built before the decision and the mirror and handed to both: the gate
// (window, host lookup, closed-window miss) plus what may be asked through it: tag resolution, tag lists, manifest pulls.
import type { Store, StoredManifest } from '../store/store.js';
import type { UpstreamLookup } from '../upstream/pool.js';
import type { WindowState } from '../window/state.js';
import { NO_INGEST_METRICS, type IngestMetrics } from '../metrics/ports.js';
import { UpstreamGate } from './access.js';
import { ManifestFetcher } from './manifests.js';
import { TagCache, type FetchNote } from './tag-cache.js';
import { upstreamTags } from './upstream-tags.js';

export interface UpstreamAccessDeps {
  store: Store;
  window: WindowState;
  upstreams: UpstreamLookup;
  tagTtlMs: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** Joins of manifest fetches under way (metrics/); none counted when absent. */
  ingestMetrics?: IngestMetrics;
}

export class UpstreamAccess extends UpstreamGate {
  readonly tagTtlMs: number;
  private readonly manifests: ManifestFetcher;
  private readonly tagCache: TagCache;

  constructor(d: UpstreamAccessDeps) {
    super(d.window, d.upstreams);
    this.tagTtlMs = d.tagTtlMs;
    const ingest = d.ingestMetrics ?? NO_INGEST_METRICS;
    this.manifests = new ManifestFetcher({ store: d.store, gate: this, log: d.log, joined: () => ingest.joined('manifest') });
    const fetchManifest = (host: string, name: string, ref: string): Promise<StoredManifest> => this.manifests.fetch(host, name, ref);
    this.tagCache = new TagCache({ store: d.store, gate: this, fetchManifest, ttlMs: d.tagTtlMs, log: d.log });
  }

  /**
   * host/name:tag → digest: outside a window the store's last known digest (else the closed-window miss); in one,
   * as the upstream has it now (coalesced, at most once per tagTtl; manifest and tag are stored).
   */
  resolveTag(host: string, name: string, tag: string, note?: FetchNote): Promise<string> {
    return this.tagCache.resolve(host, name, tag, note);
  }

  /** The upstream's tags of host/name (every page, bounded; a window closing mid-listing stops it). */
  listTags(host: string, name: string): Promise<string[]> {
    return upstreamTags(this, this.upstream(host), name);
  }

  /** A manifest of host/name by digest: fetched, verified and stored (one fetch per digest at a time); in a window only. */
  async pullManifest(host: string, name: string, digest: string): Promise<StoredManifest> {
    this.requireOpen('MANIFEST_UNKNOWN', { name, digest });
    return this.manifests.pull(host, name, digest);
  }
}
