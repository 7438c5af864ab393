// Garbage collection (`sluice gc`): mark every digest the allowlist still gives a reason to keep — each allowed
// tag's last `keep` digests, pins, their whole graphs with signatures and referrers — and sweep the other blobs,
// sparing anything committed or asked for within the grace period. Tags and links to what went are removed too.
import { reachableFrom, repositoryGraph, type RepositoryLookup } from '../oci/repository-graph.js';
import { signatureSubject } from '../policy/allowlist.js';
import type { Store } from '../store/store.js';
import type { ProgressPort } from './progress.js';
import { NO_GC_METRICS, type GcMetrics } from '../metrics/ports.js';

/** What gc asks of the allowlist (policy/allowlist.ts's Allowlist has it all). */
export interface RetentionRules {
  readonly version: number;
  matchesRepository(host: string, name: string): boolean;
  tagRulesFor(host: string, name: string): (tag: string) => boolean;
  pinnedDigests(host: string, name: string): string[];
  allowsAnyTag(host: string, name: string): boolean;
}

export interface GcOptions {
  dryRun?: boolean;
  /** Digests kept per allowed tag, newest first, the current one included (config `gc.keep`). */
  keep: number;
  /** Nothing committed or asked for within this long before the run is swept (config `gcGrace`). */
  graceMs: number;
  now?: () => number;
  /** Repositories marked, then blobs looked at, then blobs swept. */
  onProgress?: ProgressPort;
  /** How long a run waits for commits under way (imports, syncs, pulls tagging) before giving up; default 10 min. */
  commitWaitMs?: number;
  /** Called once when the run has to wait for commits under way. */
  onWaitingForCommits?: () => void;
}

export interface GcReport {
  startedAt: string;
  finishedAt: string;
  dryRun: boolean;
  /** Digests the rules keep (blobs and manifests, stored or not). */
  marked: number;
  /** Blobs removed (or, in a dry run, that would be). */
  swept: Array<{ digest: string; sizeBytes: number }>;
  sweptBytes: number;
  /** Unmarked blobs spared: committed or asked for within gcGrace, or (shared database) found unreferenced less than gcGrace ago. */
  spared: number;
  /** `host/name:tag` of tags removed because what they point at went. */
  tagsRemoved: string[];
}

/** How often the mark is redone when the allowlist changes under it before gc gives up for this run. */
const MAX_MARKS = 3;

const COMMIT_WAIT_MS = 10 * 60 * 1000;

/**
 * A real run marks and sweeps holding the store's commit gate alone (store/commit-gate.ts): what an import, a sync
 * or a pull in any process or replica is committing is either fully in the mark or not begun until the sweep ends.
 * A dry run changes nothing and takes no gate.
 */
export async function collectGarbage(store: Store, rules: RetentionRules, opts: GcOptions): Promise<GcReport> {
  if (opts.dryRun) return markAndSweep(store, rules, opts);
  return store.commits.exclusive(opts.commitWaitMs ?? COMMIT_WAIT_MS, () => markAndSweep(store, rules, opts), opts.onWaitingForCommits);
}

async function markAndSweep(store: Store, rules: RetentionRules, opts: GcOptions): Promise<GcReport> {
  const now = opts.now ?? Date.now;
  const startedMs = now();
  const since = startedMs - opts.graceMs;
  let marked = new Set<string>();
  let candidates: Array<{ digest: string; sizeBytes: number }> = [];
  let spared = 0;
  for (let attempt = 1; ; attempt++) {
    const version = rules.version;
    marked = await mark(store, rules, opts.keep, opts.onProgress);
    ({ candidates, spared } = await unmarked(store, marked, since, opts.onProgress));
    if (rules.version === version) break;
    if (attempt === MAX_MARKS) throw new Error('the allowlist kept changing during garbage collection; nothing was removed, run it again');
  }
  // With a shared database a blob goes only once unreferenced for longer than the grace by the database's clock.
  const ledger = store.meta.gcLedger;
  if (ledger) {
    const ripe = await ledger.ripe(candidates.map((c) => c.digest), opts.graceMs, !(opts.dryRun ?? false));
    spared += candidates.filter((c) => !ripe.has(c.digest)).length;
    candidates = candidates.filter((c) => ripe.has(c.digest));
  }
  const report: GcReport = {
    startedAt: new Date(startedMs).toISOString(), finishedAt: '', dryRun: opts.dryRun ?? false,
    marked: marked.size, swept: [], sweptBytes: 0, spared, tagsRemoved: [],
  };
  if (report.dryRun) report.swept = candidates;
  else await sweep(store, candidates, since, report, opts.onProgress);
  report.sweptBytes = report.swept.reduce((n, b) => n + b.sizeBytes, 0);
  report.finishedAt = new Date(now()).toISOString();
  store.pruneTouched(since);
  return report;
}

/** Every digest some rule keeps, across all repositories. */
async function mark(store: Store, rules: RetentionRules, keep: number, progress?: ProgressPort): Promise<Set<string>> {
  const marked = new Set<string>();
  const repositories = await store.repositories();
  for (const [i, { host, name }] of repositories.entries()) {
    progress?.({ unit: 'repositories', done: i + 1, total: repositories.length, bytesDone: 0, current: `marking ${host}/${name}` });
    if (!rules.matchesRepository(host, name)) continue;
    const { live, retired } = await rootsOf(store, rules, host, name, keep);
    if (rules.allowsAnyTag(host, name)) {
      // Any tag is allowed, so a manifest fetched by digest alone is allowed too: it stays, unless it is part of
      // an image a tag has moved away from beyond `keep`.
      const old = await reachable(store, host, name, retired);
      for (const d of await store.linkedManifests(host, name)) if (!old.has(d)) live.add(d);
    }
    for (const d of await reachable(store, host, name, [...live])) marked.add(d);
  }
  return marked;
}

/** The repository's roots: pins and the newest `keep` digests of each allowed tag; older digests are retired. */
async function rootsOf(store: Store, rules: RetentionRules, host: string, name: string, keep: number): Promise<{ live: Set<string>; retired: string[] }> {
  const live = new Set(rules.pinnedDigests(host, name));
  const retired: string[] = [];
  const allowed = rules.tagRulesFor(host, name);
  for (const tag of await store.listTags(host, name)) {
    // Signature tags are kept through the image they sign (the walk follows them), never on their own.
    if (signatureSubject(tag) !== undefined || !allowed(tag)) continue;
    const history = await store.tagHistory(host, name, tag);
    for (const d of history.slice(0, keep)) live.add(d);
    retired.push(...history.slice(keep));
  }
  return { live, retired: retired.filter((d) => !live.has(d)) };
}

/** The graph below `roots` as the mirror would serve it: manifests, configs, layers, signature tags, referrers. */
/** The same walk as the request decision's (oci/repository-graph.ts), unbounded: gc keeps rather than guesses. */
function reachable(store: Store, host: string, name: string, roots: string[]): Promise<Set<string>> {
  // gc's own reads must not look like a client using the manifest.
  const lookup: RepositoryLookup = {
    getManifest: (digest) => store.getManifest(digest, false),
    getTag: (h, n, tag) => store.getTag(h, n, tag),
    referrers: (h, n, digest) => store.referrers(h, n, digest),
  };
  return reachableFrom(repositoryGraph(lookup, host, name), roots);
}

/** Committed blobs no rule keeps; those committed or asked for since `since` are spared (counted). */
async function unmarked(store: Store, marked: Set<string>, since: number, progress?: ProgressPort): Promise<{ candidates: Array<{ digest: string; sizeBytes: number }>; spared: number }> {
  const candidates: Array<{ digest: string; sizeBytes: number }> = [];
  let spared = 0;
  const total = progress ? (await store.usage()).blobs : undefined;
  let done = 0;
  for await (const digest of store.allBlobs()) {
    progress?.({ unit: 'blobs', done: ++done, total, bytesDone: 0, current: 'looking for unused blobs' });
    if (marked.has(digest)) continue;
    const stat = await store.blobs.stat(digest);
    if (!stat) continue;
    if ((stat.committedMs ?? Infinity) >= since || (store.lastTouched(digest) ?? -Infinity) >= since) spared++;
    else candidates.push({ digest, sizeBytes: stat.sizeBytes });
  }
  return { candidates, spared };
}

/**
 * Tags and links first (so nothing points at a blob about to go), then the blobs; each one is looked at once
 * more just before it goes, so a client that started using it during the run keeps it.
 */
async function sweep(store: Store, candidates: Array<{ digest: string; sizeBytes: number }>, since: number, report: GcReport, progress?: ProgressPort): Promise<void> {
  const going = new Set(candidates.map((c) => c.digest));
  await unlinkAll(store, going, report);
  const bytesTotal = candidates.reduce((n, c) => n + c.sizeBytes, 0);
  let bytesDone = 0;
  for (const [i, c] of candidates.entries()) {
    bytesDone += c.sizeBytes;
    progress?.({ unit: 'blobs', done: i + 1, total: candidates.length, bytesDone, bytesTotal, current: 'removing' });
    if ((store.lastTouched(c.digest) ?? -Infinity) >= since) {
      report.spared++;
      continue;
    }
    if (await store.deleteBlob(c.digest)) report.swept.push(c);
  }
}

async function unlinkAll(store: Store, going: Set<string>, report: GcReport): Promise<void> {
  // Blob links alone make a repository too (a blob fetched by digest, or confirmed by its upstream).
  for (const { host, name } of await store.repositories({ blobLinks: true })) {
    for (const tag of await store.listTags(host, name)) {
      const d = await store.getTag(host, name, tag);
      if (d && going.has(d) && (await store.meta.deleteTag(host, name, tag))) report.tagsRemoved.push(`${host}/${name}:${tag}`);
    }
    for (const d of await store.linkedManifests(host, name)) {
      if (!going.has(d)) continue;
      // Without its body (gone already) only the link itself can be removed; its referrer entry names a subject that goes too.
      const m = (await store.getManifest(d, false)) ?? { digest: d, mediaType: '', body: Buffer.alloc(0) };
      await store.meta.unlinkManifest(host, name, m);
    }
    for (const d of await store.meta.linkedBlobs(host, name)) if (going.has(d)) await store.meta.unlinkBlob(host, name, d);
  }
}

/** The server's one collector: runs are serialised (a second caller joins the run under way), and counted. */
export class GarbageCollector {
  private running: Promise<GcReport> | undefined;
  last: GcReport | undefined;

  constructor(
    private readonly store: Store,
    private readonly rules: RetentionRules,
    private readonly settings: { keep: number; graceMs: number },
    private readonly metrics: GcMetrics = NO_GC_METRICS,
  ) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Resolves once no run is under way (shutdown waits for it before closing the store). */
  async settled(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }

  /** A dry run never joins a real one (nor the other way round): it waits for it, then runs on its own. */
  async run(opts: { dryRun?: boolean } = {}): Promise<GcReport> {
    while (this.running) {
      const current = this.running;
      const report = await current.catch(() => undefined);
      if (report && report.dryRun === (opts.dryRun ?? false)) return report;
    }
    const p = collectGarbage(this.store, this.rules, { ...this.settings, dryRun: opts.dryRun });
    this.running = p;
    try {
      const report = await p;
      if (!report.dryRun) {
        this.last = report;
        this.metrics.finished(report.swept.length, report.sweptBytes);
      }
      return report;
    } catch (e) {
      if (!opts.dryRun) this.metrics.failed();
      throw e;
    } finally {
      this.running = undefined;
    }
  }

  /** `gc.schedule`: a run every `everyMs`; returns the stop. */
  schedule(everyMs: number, log: (msg: string, fields?: Record<string, unknown>) => void): () => void {
    const timer = setInterval(() => {
      this.run().then(
        (r) => log('scheduled garbage collection finished', { blobs: r.swept.length, bytes: r.sweptBytes, spared: r.spared }),
        (e: unknown) => log('scheduled garbage collection failed', { error: String(e) }),
      );
    }, everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
