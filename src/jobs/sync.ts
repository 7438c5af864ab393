// Prefetch (`sluice sync`): inside an open window, fetch every exact reference on the allowlist —
// every platform (or those asked), their cosign signature tags and referrers — through the mirror.
import type { Allowlist } from '../policy/allowlist.js';
import { withHeadersTimeout } from '../upstream/transport.js';
import { parseRule } from '../policy/allowlist.js';
import { RegistryError } from '../oci/errors.js';
import { walkGraph, type GraphSource } from '../oci/graph.js';
import { platformWanted } from '../oci/platform.js';
import type { Mirror } from '../mirror/mirror.js';
import { windowClosedUntil } from '../mirror/access.js';
import type { Descriptor, Store, StoredManifest } from '../store/store.js';
import type { WindowState } from '../window/state.js';
import { NO_SYNC_METRICS, type SyncMetrics } from '../metrics/ports.js';
import type { ImageSigning } from './site-signer.js';

export interface SyncOptions {
  dryRun?: boolean;
  /** `os/arch[/variant]` filters for index entries; empty = all platforms. */
  platforms?: string[];
  onEvent?: (e: SyncEvent) => void;
}

export type SyncEvent =
  | { type: 'plan'; references: string[] }
  | { type: 'reference'; reference: string; status: 'fetched' | 'cached' | 'failed' | 'planned'; reason?: string; blobs: number; bytes: number }
  | { type: 'blob'; reference: string; digest: string; sizeBytes: number; cached: boolean }
  | ({ type: 'moved' } & MovedPin);

/** A `name:tag@sha256:…` rule whose tag the upstream now points elsewhere; the pinned digest still serves. */
export interface MovedPin {
  rule: string;
  tag: string;
  pinned: string;
  upstream: string;
}

export interface SyncReport {
  startedAt: string;
  finishedAt: string;
  dryRun: boolean;
  fetched: string[];
  cached: string[];
  failed: Array<{ reference: string; reason: string }>;
  planned: string[];
  bytesFetched: number;
  /** Pinned tags the upstream has moved away from their pin (checked with one HEAD each). */
  moved: MovedPin[];
  /** With signing on: the site signatures made, kept, and the manifests left unsigned (and why). */
  signing?: { signed: number; kept: number; unsigned: Array<{ reference: string; digest: string; reason: string }> };
}

const RECENT_RUNS = 10;

export class SyncClosedError extends Error {}

const CLOSED_DURING_SYNC = 'upstream access closed during the sync; nothing more was asked of the upstream';

interface Target {
  text: string;
  host: string;
  name: string;
  reference: string;
  /** The tag a digest rule was written with (`name:tag@sha256:…`), to check it against the upstream. */
  pinnedTag?: string;
}

export class Syncer {
  private running: Promise<SyncReport> | undefined;
  /** Set by useSigner when signing is configured. */
  private sign: ((host: string, name: string, digest: string) => Promise<ImageSigning>) | undefined;
  last: SyncReport | undefined;
  /** The most recent runs, newest first (at most RECENT_RUNS), for the status page. */
  readonly recent: SyncReport[] = [];

  constructor(
    private readonly mirror: Pick<Mirror, 'ensureManifest' | 'ensureBlob' | 'upstreamReferrers' | 'upstreamTagDigest'>,
    private readonly allowlist: Allowlist,
    private readonly store: Store,
    private readonly window: WindowState,
    /** The config's `platforms`: the filter when a run names none (empty: every platform). */
    private readonly defaultPlatforms: readonly string[] = [],
    /** How long the sync's upstream requests wait for headers (an Image Factory may build for minutes). */
    private readonly headersWaitMs?: number,
    private readonly metrics: SyncMetrics = NO_SYNC_METRICS,
  ) {}

  /** Signs each image once it is synced (signing configured); its outcome goes in the report. */
  useSigner(sign: (host: string, name: string, digest: string) => Promise<ImageSigning>): void {
    this.sign = sign;
  }

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** The sync in progress, if any (for callers that started one indirectly, e.g. syncOnOpen). */
  get current(): Promise<SyncReport> | undefined {
    return this.running;
  }

  /** Runs one sync; a second call while one runs joins it rather than fetching twice. */
  run(opts: SyncOptions = {}): Promise<SyncReport> {
    if (!opts.dryRun && !this.window.isOpen()) {
      return Promise.reject(new SyncClosedError(`upstream access is closed; ${windowClosedUntil(this.window)}`));
    }
    if (this.running) return this.running;
    const platforms = opts.platforms ?? (this.defaultPlatforms.length > 0 ? [...this.defaultPlatforms] : undefined);
    const p = this.runOnce({ ...opts, platforms }).finally(() => {
      this.running = undefined;
    });
    if (!opts.dryRun) {
      p.then(
        (r) => this.metrics.finished({ fetched: r.fetched.length, cached: r.cached.length, failed: r.failed.length, bytesFetched: r.bytesFetched, aborted: false }),
        () => this.metrics.finished({ fetched: 0, cached: 0, failed: 0, bytesFetched: 0, aborted: true }),
      );
    }
    this.running = p;
    return p;
  }

  private async runOnce(opts: SyncOptions): Promise<SyncReport> {
    const report: SyncReport = { startedAt: new Date().toISOString(), finishedAt: '', dryRun: opts.dryRun ?? false, fetched: [], cached: [], failed: [], planned: [], bytesFetched: 0, moved: [] };
    if (this.sign && !opts.dryRun) report.signing = { signed: 0, kept: 0, unsigned: [] };
    const targets = this.targets();
    opts.onEvent?.({ type: 'plan', references: targets.map((t) => t.text) });
    // Closing the window stops the sync at once: the step awaited now is abandoned, no later step starts.
    const stop = new AbortController();
    const off = this.window.onChange(() => {
      if (!this.window.isOpen()) stop.abort(new SyncClosedError(CLOSED_DURING_SYNC));
    });
    try {
      const all = async (): Promise<void> => {
        for (const t of targets) await this.syncTarget(t, opts, report, stop.signal);
      };
      await (this.headersWaitMs ? withHeadersTimeout(this.headersWaitMs, all) : all());
    } finally {
      off();
    }
    report.finishedAt = new Date().toISOString();
    this.last = report;
    this.recent.unshift(report);
    this.recent.splice(RECENT_RUNS);
    return report;
  }

  private async syncTarget(t: Target, opts: SyncOptions, report: SyncReport, signal: AbortSignal): Promise<void> {
    if (opts.dryRun) {
      report.planned.push(t.text);
      opts.onEvent?.({ type: 'reference', reference: t.text, status: 'planned', blobs: 0, bytes: 0 });
      return;
    }
    const counts = { blobs: 0, bytes: 0, fetchedBytes: 0 };
    try {
      const root = await this.syncImage(t, opts, counts, (run) => this.step(signal, run));
      const status = counts.fetchedBytes > 0 ? 'fetched' : 'cached';
      (status === 'fetched' ? report.fetched : report.cached).push(t.text);
      report.bytesFetched += counts.fetchedBytes;
      opts.onEvent?.({ type: 'reference', reference: t.text, status, blobs: counts.blobs, bytes: counts.bytes });
      await this.checkPin(t, opts, report, signal);
      await this.signSynced(t, root, report);
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      report.failed.push({ reference: t.text, reason });
      opts.onEvent?.({ type: 'reference', reference: t.text, status: 'failed', reason, blobs: counts.blobs, bytes: counts.bytes });
    }
  }

  /** The image just synced is signed as the signing policy decides; a signing failure fails no sync. */
  private async signSynced(t: Target, root: string, report: SyncReport): Promise<void> {
    if (!this.sign || !report.signing) return;
    const s = report.signing;
    try {
      for (const m of (await this.sign(t.host, t.name, root)).manifests) {
        if (m.state === 'unsigned') s.unsigned.push({ reference: t.text, digest: m.digest, reason: m.reason });
        else s[m.state]++;
      }
    } catch (e) {
      s.unsigned.push({ reference: t.text, digest: root, reason: `signing failed: ${e instanceof Error ? e.message : String(e)}` });
    }
  }

  /** A pinned tag the upstream has moved is reported (the pin is what serves); a failed check says nothing. */
  private async checkPin(t: Target, opts: SyncOptions, report: SyncReport, signal: AbortSignal): Promise<void> {
    if (t.pinnedTag === undefined) return;
    const tag = t.pinnedTag;
    const upstream = await this.step(signal, () => this.mirror.upstreamTagDigest(t.host, t.name, tag)).catch(() => undefined);
    if (upstream === undefined || upstream === t.reference) return;
    const moved: MovedPin = { rule: t.text, tag, pinned: t.reference, upstream };
    report.moved.push(moved);
    opts.onEvent?.({ type: 'moved', ...moved });
  }

  /**
   * One step that may ask the upstream: refused once the window has closed, abandoned when it closes meanwhile.
   * An abandoned blob download is not cut: its request has left, so it finishes and verifies in the background.
   */
  private step<T>(signal: AbortSignal, run: () => Promise<T>): Promise<T> {
    if (signal.aborted || !this.window.isOpen()) return Promise.reject(new SyncClosedError(CLOSED_DURING_SYNC));
    return untilAborted(run(), signal);
  }

  /** Exact references only: a glob or an any-tag rule names no image to fetch. */
  private targets(): Target[] {
    const out: Target[] = [];
    for (const r of this.allowlist.list()) {
      const spec = parseRule(r.rule);
      if (spec.nameGlob) continue;
      const reference = spec.digest ?? spec.tag;
      if (reference === undefined || reference.includes('*')) continue;
      const pinnedTag = spec.digest !== undefined ? spec.tag : undefined;
      out.push({ text: r.rule, host: spec.host, name: spec.name, reference, ...(pinnedTag !== undefined ? { pinnedTag } : {}) });
    }
    return out;
  }

  /**
   * The image as a client pulls it: every wanted platform of an index, each manifest's config and layers,
   * and the signature tags and referrers of the root and of every index, each manifest linked to the repository.
   */
  private async syncImage(t: Target, opts: SyncOptions, counts: Counts, step: Step): Promise<string> {
    const root = await this.tagRoot(t, step);
    const source: GraphSource = {
      manifest: async (digest) => {
        const m = await step(() => this.mirror.ensureManifest(t.host, t.name, digest));
        await this.store.linkManifest(t.host, t.name, m);
        return m;
      },
      tag: (tag) => this.signatureTag(t, tag, step),
      referrers: (digest) => step(() => this.mirror.upstreamReferrers(t.host, t.name, digest)),
    };
    await walkGraph(source, [root.digest], {
      children: 'by-parent',
      follow: (child) => platformWanted(child, opts.platforms),
      signatures: 'roots-and-indexes',
      onNode: async (node) => {
        if (node.kind === 'invalid') throw new RegistryError('MANIFEST_INVALID', `${node.digest} is not a manifest`);
        if (node.kind === 'manifest') for (const blob of node.children) await this.syncBlob(t, blob, opts, counts, step);
      },
    });
    return root.digest;
  }

  /**
   * The root manifest, with the tag set on it as one commit (store/commit-gate.ts): any gc from then on keeps the
   * image. The manifest is looked at again on the backend inside it: a gc that ended just before may have removed it.
   */
  private async tagRoot(t: Target, step: Step): Promise<StoredManifest> {
    for (let attempt = 1; ; attempt++) {
      const root = await step(() => this.mirror.ensureManifest(t.host, t.name, t.reference));
      if (t.reference.startsWith('sha256:')) return root;
      const tagged = await this.store.commits.commit(async () => {
        if (!(await this.store.blobs.stat(root.digest))) return false;
        await this.store.setTag(t.host, t.name, t.reference, root.digest);
        return true;
      });
      if (tagged) return root;
      this.store.forget(root.digest);
      if (attempt === 3) throw new RegistryError('MANIFEST_UNKNOWN', `${t.text}: its manifest ${root.digest} kept being removed by garbage collection while syncing`);
    }
  }

  private async syncBlob(t: Target, blob: Descriptor, opts: SyncOptions, counts: Counts, step: Step): Promise<void> {
    const cached = (await this.store.stat(blob.digest)) !== undefined;
    const sizeBytes = await step(() => this.mirror.ensureBlob(t.host, t.name, blob.digest));
    counts.blobs++;
    counts.bytes += sizeBytes;
    if (!cached) counts.fetchedBytes += sizeBytes;
    opts.onEvent?.({ type: 'blob', reference: t.text, digest: blob.digest, sizeBytes, cached });
  }

  /** cosign's signature/attestation tag, when the upstream has it. */
  private async signatureTag(t: Target, tag: string, step: Step): Promise<string | undefined> {
    try {
      return (await step(() => this.mirror.ensureManifest(t.host, t.name, tag))).digest;
    } catch (e) {
      if (!(e instanceof RegistryError) || e.status !== 404) throw e;
      return undefined;
    }
  }
}

interface Counts {
  blobs: number;
  bytes: number;
  fetchedBytes: number;
}

type Step = <T>(run: () => Promise<T>) => Promise<T>;

/** `p`, or the signal's reason as soon as it aborts (p's own outcome is then ignored). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
