// The one download per digest: a map entry set synchronously so concurrent callers share it, waited on by other
// repositories (served the verified blob) only when they are entitled to it, and cancelled at shutdown past the drain deadline.
import { RegistryError } from '../oci/errors.js';
import type { FlightLease, IngestWriter, Store } from '../store/store.js';
import type { Upstream } from '../upstream/client.js';
import type { UpstreamGate } from './access.js';
import type { Entitlement } from './entitlement.js';
import { Flight } from './flight.js';
import type { IngestFailure, IngestMetrics } from '../metrics/ports.js';

export interface BlobFlightDeps {
  store: Store;
  gate: UpstreamGate;
  entitlement: Entitlement;
  ingestTimeoutMs: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  metrics: IngestMetrics;
}

/** A download under way, and the repository whose upstream it comes from. */
interface FlightEntry {
  host: string;
  name: string;
  pending: Promise<Flight | undefined>;
}

/** How many other repositories' failed downloads a request sits through before it starts one of its own. */
export const MAX_JOINS = 3;

export class BlobFlights {
  private readonly flights = new Map<string, FlightEntry>();
  /** One per blob download in progress, so shutdown can cancel them (see drain). */
  private readonly ingestAborts = new Set<AbortController>();
  /** Set once drain() cancels what is left: an aborted download is then "cancelled", not "timeout". */
  private cancelling = false;

  constructor(private readonly d: BlobFlightDeps) {}

  /**
   * The one flight for a digest (undefined: it committed meanwhile). A flight from another repository's upstream
   * is waited on only by a repository entitled to the blob itself, and never streamed to it: bytes its own
   * upstream did not send may turn out corrupt, and would cut its response. It is served the blob once verified;
   * when that download fails, it starts (or joins) another attempt.
   */
  async flightFor(host: string, name: string, digest: string): Promise<{ flight: Flight | undefined; own: boolean }> {
    for (let attempt = 1; attempt <= MAX_JOINS; attempt++) {
      const existing = this.flights.get(digest);
      const entry = existing ?? this.lead(host, name, digest);
      if (entry.host === host && entry.name === name) {
        if (existing) this.d.metrics.joined('blob');
        return { flight: await entry.pending, own: true };
      }
      await this.d.entitlement.blob(host, name, digest);
      this.d.metrics.joined('blob');
      const committed = await entry.pending.then((f) => f?.done).then(() => true, () => false);
      if (committed) return { flight: undefined, own: false };
    }
    return { flight: await this.start(host, name, digest), own: true };
  }

  /**
   * Shutdown: blob downloads may finish until `deadlineMs` (epoch ms); then the rest are cancelled (temp file
   * removed, nothing committed). Resolves once every one has ended, so the store's temp folder can go.
   */
  async drain(deadlineMs: number): Promise<void> {
    const cancel = (): void => {
      this.cancelling = true;
      for (const a of this.ingestAborts) a.abort(new RegistryError('UPSTREAM_FAILED', 'sluice is shutting down; the blob download was cancelled'));
    };
    const timer = setTimeout(cancel, Math.max(0, deadlineMs - Date.now()));
    try {
      while (this.flights.size > 0) await Promise.allSettled([...this.flights.values()].map((e) => e.pending.then((f) => f?.done)));
    } finally {
      clearTimeout(timer);
    }
  }

  private lead(host: string, name: string, digest: string): FlightEntry {
    const entry: FlightEntry = { host, name, pending: this.start(host, name, digest) };
    this.flights.set(digest, entry);
    const forget = (): void => {
      if (this.flights.get(digest) === entry) this.flights.delete(digest);
    };
    entry.pending.then((f) => (f ? f.done.then(forget, forget) : forget()), forget);
    return entry;
  }

  private async start(host: string, name: string, digest: string): Promise<Flight | undefined> {
    this.d.gate.requireOpen('BLOB_UNKNOWN', { name, digest });
    const upstream = this.d.gate.upstream(host);
    const lease = await this.leaseFor(digest);
    if (!lease) return undefined;
    const abort = new AbortController();
    this.ingestAborts.add(abort);
    const timer = setTimeout(
      () => abort.abort(new RegistryError('UPSTREAM_FAILED', `upstream ${host}: blob download exceeded ingestTimeout`, { name, digest })),
      this.d.ingestTimeoutMs,
    );
    timer.unref();
    const ended = (): void => {
      clearTimeout(timer);
      this.ingestAborts.delete(abort);
      void lease.release();
    };
    try {
      const flight = await this.download(upstream, host, name, digest, abort.signal);
      flight.done.then(ended, ended);
      return flight;
    } catch (e) {
      ended();
      throw e;
    }
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
      lease = await this.d.store.leases.acquire(digest, this.d.ingestTimeoutMs, wait.signal);
    } finally {
      this.ingestAborts.delete(wait);
    }
    try {
      if (!(await this.d.store.stat(digest))) return lease;
    } catch (e) {
      await lease.release();
      throw e;
    }
    await lease.release();
    return undefined;
  }

  /** The upstream GET, pumped into the store by a Flight; logs its outcome. */
  private async download(upstream: Upstream, host: string, name: string, digest: string, signal: AbortSignal): Promise<Flight> {
    const { store, log } = this.d;
    const got = await upstream.getBlob(name, digest, signal);
    // If the store refuses (disk full), the upstream body must be released: nobody else will read it.
    const { metrics } = this.d;
    const writer = await store.beginIngest({ digest, sizeBytes: got.sizeBytes })
      .then((w) => linkedOnCommit(w, () => store.linkBlob(host, name, digest)))
      .catch((e: unknown) => {
        got.body.destroy();
        metrics.refused(ingestFailure(e, signal, this.cancelling));
        log('blob ingest failed; nothing committed', { host, name, digest, error: String(e) });
        throw e;
      });
    const flight = new Flight(digest, got.sizeBytes, writer);
    metrics.started();
    flight.done.then((info) => metrics.committed(info.sizeBytes), () => metrics.failed(ingestFailure(flight.cause, signal, this.cancelling)));
    void flight.run(got.body);
    flight.done
      .then((info) => log('blob ingested from upstream', { host, name, digest, sizeBytes: info.sizeBytes }))
      .catch((e: unknown) => log('blob ingest failed; nothing committed', { host, name, digest, error: String(e) }));
    return flight;
  }
}

/**
 * The blob is linked to the repository it came through once its bytes are verified and committed, and before
 * the flight reports done: a download that fails verification leaves no link behind.
 */
function linkedOnCommit(writer: IngestWriter, link: () => Promise<void>): IngestWriter {
  return {
    write: (chunk) => writer.write(chunk),
    commit: async () => {
      const info = await writer.commit();
      await link();
      return info;
    },
    abort: () => writer.abort(),
    get bytesWritten() {
      return writer.bytesWritten;
    },
    spool: writer.spool,
  };
}

/** Why an ingest committed nothing, in the bounded set the metrics label with. */
export function ingestFailure(e: unknown, signal: AbortSignal, cancelling: boolean): IngestFailure {
  if (signal.aborted) return cancelling ? 'cancelled' : 'timeout';
  if (!(e instanceof RegistryError)) return 'other';
  switch (e.kind) {
    case 'DIGEST_INVALID':
      return 'digest_mismatch';
    case 'SIZE_INVALID':
    case 'UPSTREAM_FAILED':
      return 'cut';
    case 'INSUFFICIENT_STORAGE':
      return 'no_space';
    default:
      return 'other';
  }
}
