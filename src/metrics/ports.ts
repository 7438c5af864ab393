// What the other layers see of the metrics: small interfaces of pre-bound handles, their bounded label values,
// and the do-nothing handles used where no Metrics was passed in (unit tests, offline CLI commands).

export const ROUTE_KINDS = ['manifest', 'blob', 'tags', 'referrers', 'base', 'other'] as const;
export type RouteKind = (typeof ROUTE_KINDS)[number];

/**
 * hit: answered from the store; miss-fetched: fetched from upstream for it (or joined a fetch); denied: 403 by
 * the allowlist; window-closed: not cached and upstream access closed; not-found: any other 404; invalid:
 * another 4xx (bad name, range, write method); error: 5xx (upstream failed, store full) or a cut response.
 */
export const OUTCOMES = ['hit', 'miss-fetched', 'denied', 'window-closed', 'not-found', 'invalid', 'error'] as const;
export type Outcome = (typeof OUTCOMES)[number];

export const INGEST_FAILURES = ['digest_mismatch', 'cut', 'timeout', 'no_space', 'cancelled', 'other'] as const;
export type IngestFailure = (typeof INGEST_FAILURES)[number];

export interface RequestMetrics {
  count(kind: RouteKind, outcome: Outcome): void;
  /** Body bytes handed to a client. */
  sent(kind: RouteKind, bytes: number): void;
  /** Answered with a 307 to a presigned object-store URL instead of the bytes (`storage.s3.redirect`). */
  redirected(kind: RouteKind): void;
}

/** One upstream host's handles. */
export interface UpstreamMetrics {
  request(): void;
  received(bytes: number): void;
  /** `code`: the OCI code of the error sluice made of it, or 'transport' (bounded: the error table's codes). */
  error(code: string): void;
}

export interface IngestMetrics {
  started(): void;
  committed(bytes: number): void;
  failed(reason: IngestFailure): void;
  /** Refused before it started (no space, storage.maxBytes): nothing was in flight. */
  refused(reason: IngestFailure): void;
  joined(kind: 'blob' | 'manifest'): void;
}

export interface SyncMetrics {
  finished(report: { fetched: number; cached: number; failed: number; bytesFetched: number; aborted: boolean }): void;
}

export interface GcMetrics {
  finished(blobs: number, bytes: number): void;
  failed(): void;
}

/** Read on scrape; each must be cheap (in-memory state or the store's kept-current usage). */
export interface GaugeSources {
  window(): { open: boolean; nextOpen: Date | null };
  usage(): Promise<{ blobs: number; bytes: number }>;
  maxBytes?: number;
  deniedEntries(): number;
  allowlistRules(): number;
  /** Several replicas: whether this one can vouch for the shared state (false: it fails closed). */
  sharedStateConfirmed?: () => boolean;
  readiness?: ReadinessSource;
  /** The clock the window state runs on (a test's fake one); default the real one. */
  now?: () => number;
}

/** Counts of allowlist rules by readiness, from the readiness report when there is one. */
export type ReadinessSource = () => Promise<{ complete: number; incomplete: number; missing: number; empty: number }>;

const nothing = (): void => undefined;

export const NO_REQUEST_METRICS: RequestMetrics = { count: nothing, sent: nothing, redirected: nothing };
export const NO_UPSTREAM_METRICS: UpstreamMetrics = { request: nothing, received: nothing, error: nothing };
export const NO_INGEST_METRICS: IngestMetrics = { started: nothing, committed: nothing, failed: nothing, refused: nothing, joined: nothing };
export const NO_SYNC_METRICS: SyncMetrics = { finished: nothing };
export const NO_GC_METRICS: GcMetrics = { finished: nothing, failed: nothing };
