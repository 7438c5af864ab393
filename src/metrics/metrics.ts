// The Prometheus metrics of one sluice instance: its own registry (component tests build many apps in one
// process), every series declared here, and the small pre-bound handles the other layers are given.
import { Counter, Gauge, Registry, collectDefaultMetrics, type LabelValues } from './prom.js';
import {
  INGEST_FAILURES, OUTCOMES, ROUTE_KINDS, type GaugeSources, type IngestFailure, type IngestMetrics, type Outcome,
  type RequestMetrics, type RouteKind, type SyncMetrics, type UpstreamMetrics, type GcMetrics, type ReadinessSource,
} from './ports.js';

export * from './ports.js';

type Table<K extends string, V> = Record<K, V>;
type Child = { inc(n?: number): void };

/** distribution's proxy series (`registry_proxy_*{type}`) exist beside ours so existing pull-through dashboards work. */
const PROXY_TYPES = { manifest: 'manifest', blob: 'blob' } as const;

export class Metrics {
  readonly registry = new Registry();
  readonly contentType = this.registry.contentType;
  readonly requests: RequestMetrics;
  readonly ingest: IngestMetrics;
  readonly sync: SyncMetrics;
  readonly gc: GcMetrics;
  private readonly upstreamRequests: Counter<'upstream'>;
  private readonly upstreamBytes: Counter<'upstream'>;
  private readonly upstreamErrors: Counter<'upstream' | 'code'>;
  private readonly joins: Counter<'kind'>;
  private readiness: ReadinessSource | undefined;
  /** The process_* and nodejs_* series are registered at the first scrape, not at start (see prom.ts). */
  private defaultsPending: boolean;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const r = this.registry;
    this.defaultsPending = opts.defaultMetrics !== false;
    this.requests = requestMetrics(r);
    this.upstreamRequests = new Counter({ name: 'sluice_upstream_requests_total', help: 'HTTP requests sent to an upstream (token requests and redirect hops included).', labelNames: ['upstream'], registers: [r] });
    this.upstreamBytes = new Counter({ name: 'sluice_upstream_received_bytes_total', help: 'Body bytes received from an upstream (manifests, blobs, tag lists, tokens).', labelNames: ['upstream'], registers: [r] });
    this.upstreamErrors = new Counter({ name: 'sluice_upstream_errors_total', help: 'Failed upstream requests, by the OCI error code sluice answered with (or "transport").', labelNames: ['upstream', 'code'], registers: [r] });
    this.joins = new Counter({ name: 'sluice_singleflight_joins_total', help: 'Requests that joined a download already under way instead of starting their own.', labelNames: ['kind'], registers: [r] });
    this.ingest = ingestMetrics(r, this.joins);
    this.sync = syncMetrics(r);
    this.gc = gcMetrics(r);
  }

  /** `sluice_blob_sender{sender}` 1: how committed blobs reach the socket (sendfile, or buffers as the fallback). */
  blobSender(kind: 'sendfile' | 'buffers'): void {
    new Gauge({ name: 'sluice_blob_sender', help: 'How committed blobs are sent: sendfile (zero-copy) or buffers (read and write; the fallback), 1 for the one in use.', labelNames: ['sender'], registers: [this.registry] }).set({ sender: kind }, 1);
  }

  /** The handles of one upstream host, resolved once (the host set is the configured, closed list). */
  upstream(host: string): UpstreamMetrics {
    const requests = this.upstreamRequests.labels(host);
    const bytes = this.upstreamBytes.labels(host);
    const errors = new Map<string, Child>();
    return {
      request: () => requests.inc(),
      received: (n) => bytes.inc(n),
      error: (code) => {
        let c = errors.get(code);
        if (!c) errors.set(code, (c = this.upstreamErrors.labels(host, code)));
        c.inc();
      },
    };
  }

  /** Gauges read at scrape time from state that is kept current (no scan of the store per scrape). */
  observe(src: GaugeSources): void {
    const r = this.registry;
    gauge(r, 'sluice_window_open', 'Whether upstream access is open now (1) or closed (0).', () => (src.window().open ? 1 : 0));
    gauge(r, 'sluice_window_next_open_seconds', 'Seconds until the next window opens (0 while one is open; -1 when none is scheduled).', () => {
      const w = src.window();
      if (w.open) return 0;
      return w.nextOpen ? Math.max(0, (w.nextOpen.getTime() - (src.now ?? Date.now)()) / 1000) : -1;
    });
    gauge(r, 'sluice_store_bytes', 'Bytes of committed blobs in the store.', async () => (await src.usage()).bytes);
    gauge(r, 'sluice_store_blobs', 'Committed blobs in the store.', async () => (await src.usage()).blobs);
    gauge(r, 'sluice_store_max_bytes', 'storage.maxBytes (0 when not set).', () => src.maxBytes ?? 0);
    gauge(r, 'sluice_store_full', 'Whether the store has reached storage.maxBytes and refuses new ingests (1) or not (0).', async () =>
      src.maxBytes !== undefined && (await src.usage()).bytes >= src.maxBytes ? 1 : 0);
    gauge(r, 'sluice_denied_references', 'Distinct references in the denied log (bounded by the log size).', () => src.deniedEntries());
    gauge(r, 'sluice_allowlist_rules', 'Rules on the allowlist.', () => src.allowlistRules());
    const confirmed = src.sharedStateConfirmed;
    if (confirmed) {
      gauge(r, 'sluice_shared_state_confirmed', 'Several replicas: whether this one can vouch for the shared state now (1); 0: it serves nothing and sends nothing upstream (503).',
        () => (confirmed() ? 1 : 0));
    }
    if (src.readiness) this.attachReadiness(src.readiness);
  }

  /** `sluice_readiness_rules{state}` from the readiness report (jobs/coverage.ts), which app.ts attaches. */
  attachReadiness(source: ReadinessSource): void {
    if (this.readiness) throw new Error('a readiness source is attached already');
    this.readiness = source;
    const g = new Gauge({
      name: 'sluice_readiness_rules',
      help: 'Allowlist rules by readiness: complete (everything stored), incomplete, missing (nothing stored), empty (a glob matching nothing yet).',
      labelNames: ['state'],
      registers: [this.registry],
      collect: async () => {
        // A store that cannot answer (its database down) keeps the last counts; the scrape still succeeds.
        const s = await source().catch(() => undefined);
        if (!s) return;
        g.set({ state: 'complete' }, s.complete);
        g.set({ state: 'incomplete' }, s.incomplete);
        g.set({ state: 'missing' }, s.missing);
        g.set({ state: 'empty' }, s.empty);
      },
    });
  }

  render(): Promise<string> {
    if (this.defaultsPending) this.registerDefaults();
    return this.registry.metrics();
  }

  private registerDefaults(): void {
    this.defaultsPending = false;
    collectDefaultMetrics({ register: this.registry });
    // Gauges named like counters (promtool check metrics refuses them); the per-type nodejs_active_* stay.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
  }
}

function gauge(r: Registry, name: string, help: string, value: () => number | Promise<number>): void {
  // A source that fails (the database or object store down) keeps the gauge's last value: one failing gauge must
  // not fail the scrape, or the alert on sluice_shared_state_confirmed would never fire.
  const g: Gauge = new Gauge({
    name, help, registers: [r],
    collect: async () => {
      try {
        g.set(await value());
      } catch {
        return;
      }
    },
  });
}

/** A child per (kind, outcome), so counting a request is two property reads and an add. */
function requestMetrics(r: Registry): RequestMetrics {
  const requests = new Counter({ name: 'sluice_http_requests_total', help: 'Registry API requests by route kind and outcome.', labelNames: ['kind', 'outcome'], registers: [r] });
  const bytes = new Counter({ name: 'sluice_http_response_bytes_total', help: 'Body bytes sent to registry clients, by route kind.', labelNames: ['kind'], registers: [r] });
  const redirects = new Counter({
    name: 'sluice_http_redirects_total', labelNames: ['kind'], registers: [r],
    help: 'Registry answers sent as a 307 to a presigned object-store URL instead of the bytes (storage.s3.redirect), by route kind; also counted in sluice_http_requests_total.',
  });
  const proxyRequests = new Counter({ name: 'registry_proxy_requests_total', help: 'distribution-compatible: proxied requests by type.', labelNames: ['type'], registers: [r] });
  const proxyHits = new Counter({ name: 'registry_proxy_hits_total', help: 'distribution-compatible: requests answered from the cache.', labelNames: ['type'], registers: [r] });
  const proxyMisses = new Counter({ name: 'registry_proxy_misses_total', help: 'distribution-compatible: requests fetched from upstream.', labelNames: ['type'], registers: [r] });
  const proxyPushed = new Counter({ name: 'registry_proxy_pushed_bytes_total', help: 'distribution-compatible: bytes sent to clients.', labelNames: ['type'], registers: [r] });
  const table = {} as Table<RouteKind, Table<Outcome, Child>>;
  const sent = {} as Table<RouteKind, Child>;
  const redirected = {} as Table<RouteKind, Child>;
  for (const kind of ROUTE_KINDS) {
    const row = {} as Table<Outcome, Child>;
    const type = kind === 'manifest' || kind === 'blob' ? PROXY_TYPES[kind] : undefined;
    for (const outcome of OUTCOMES) row[outcome] = bothOf(requests.labels(kind, outcome), type && proxyOutcome(type, outcome, proxyRequests, proxyHits, proxyMisses));
    table[kind] = row;
    sent[kind] = bothOf(bytes.labels(kind), type && proxyPushed.labels(type));
    redirected[kind] = redirects.labels(kind);
  }
  return { count: (kind, outcome) => table[kind][outcome].inc(), sent: (kind, n) => sent[kind].inc(n), redirected: (kind) => redirected[kind].inc() };
}

/** distribution counts a request once, and as a hit or a miss when it was one. */
function proxyOutcome(type: string, outcome: Outcome, all: Counter<'type'>, hits: Counter<'type'>, misses: Counter<'type'>): Child {
  const req = all.labels(type);
  const extra = outcome === 'hit' ? hits.labels(type) : outcome === 'miss-fetched' ? misses.labels(type) : undefined;
  return bothOf(req, extra);
}

function bothOf(a: Child, b: Child | undefined): Child {
  return b ? { inc: (n) => (a.inc(n), b.inc(n)) } : a;
}

function ingestMetrics(r: Registry, joins: Counter<'kind'>): IngestMetrics {
  const inFlight = new Gauge({ name: 'sluice_ingests_in_flight', help: 'Blob downloads from upstream being written into the store now.', registers: [r] });
  const failures = new Counter({ name: 'sluice_ingest_failures_total', help: 'Blob ingests that committed nothing, by reason.', labelNames: ['reason'], registers: [r] });
  const done = new Counter({ name: 'sluice_ingested_bytes_total', help: 'Bytes of blobs downloaded from upstream, verified and committed (manifests excluded).', registers: [r] });
  const byReason = {} as Table<IngestFailure, Child>;
  for (const reason of INGEST_FAILURES) byReason[reason] = failures.labels(reason);
  const blobJoins = joins.labels('blob');
  const manifestJoins = joins.labels('manifest');
  return {
    started: () => inFlight.inc(),
    committed: (n) => {
      inFlight.dec();
      done.inc(n);
    },
    failed: (reason) => {
      inFlight.dec();
      byReason[reason].inc();
    },
    refused: (reason) => byReason[reason].inc(),
    joined: (kind) => (kind === 'blob' ? blobJoins : manifestJoins).inc(),
  };
}

function syncMetrics(r: Registry): SyncMetrics {
  const runs = new Counter({ name: 'sluice_sync_runs_total', help: 'Syncs finished, by result: ok (all fetched or cached), partial (some failed), failed (aborted).', labelNames: ['result'], registers: [r] });
  const refs = new Counter({ name: 'sluice_sync_references_total', help: 'References synced, by status.', labelNames: ['status'], registers: [r] });
  const bytes = new Counter({ name: 'sluice_sync_fetched_bytes_total', help: 'Bytes fetched from upstream by syncs.', registers: [r] });
  const last = new Gauge({ name: 'sluice_sync_last_finished_timestamp_seconds', help: 'When the last sync finished (Unix time; 0: none since start).', registers: [r] });
  const lastResult = new Gauge({ name: 'sluice_sync_last_failed_references', help: 'References the last sync failed to fetch.', registers: [r] });
  return {
    finished: (report) => {
      const result = report.aborted ? 'failed' : report.failed > 0 ? 'partial' : 'ok';
      runs.inc({ result } satisfies LabelValues<'result'>);
      refs.inc({ status: 'fetched' }, report.fetched);
      refs.inc({ status: 'cached' }, report.cached);
      refs.inc({ status: 'failed' }, report.failed);
      bytes.inc(report.bytesFetched);
      last.set(Date.now() / 1000);
      lastResult.set(report.failed);
    },
  };
}

function gcMetrics(r: Registry): GcMetrics {
  const runs = new Counter({ name: 'sluice_gc_runs_total', help: 'Garbage collections finished (dry runs excluded), by result.', labelNames: ['result'], registers: [r] });
  const freedBytes = new Counter({ name: 'sluice_gc_freed_bytes_total', help: 'Bytes of blobs removed by garbage collection.', registers: [r] });
  const freedBlobs = new Counter({ name: 'sluice_gc_freed_blobs_total', help: 'Blobs removed by garbage collection.', registers: [r] });
  const last = new Gauge({ name: 'sluice_gc_last_finished_timestamp_seconds', help: 'When the last garbage collection finished (Unix time; 0: none since start).', registers: [r] });
  return {
    finished: (blobs, bytes) => {
      runs.inc({ result: 'ok' });
      freedBlobs.inc(blobs);
      freedBytes.inc(bytes);
      last.set(Date.now() / 1000);
    },
    failed: () => runs.inc({ result: 'failed' }),
  };
}
