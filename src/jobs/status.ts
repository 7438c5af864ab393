// The status report: the same shape online (GET /api/v1/status) and offline (`sluice status` reading the
// files). Takes the parts, returns the report; the only I/O is the store count.
import type { AllowlistProblem } from '../policy/allowlist.js';
import type { Config } from '../config/config.js';
import type { Store } from '../store/store.js';
import type { MovedPin, Syncer } from './sync.js';
import type { SiteSigner } from './site-signer.js';
import type { Schedule } from '../window/schedule.js';
import type { ManualWindow, WindowState } from '../window/state.js';

export interface WindowReport {
  open: boolean;
  until: string | null;
  nextOpen: string | null;
  source: 'schedule' | 'manual' | 'always' | null;
  manual?: ManualWindow;
  schedule: 'always' | 'never' | Array<{ days: string[]; start: string; end: string; timezone: string }>;
}

export interface StatusReport {
  window: WindowReport;
  allowlist: { rules: number };
  /** Set while allowlist.json on disk is broken: the rules counted are the last good ones, still in force. */
  allowlistError: AllowlistProblem | null;
  denied: { entries: number };
  /** `maxBytes`: storage.maxBytes or null; `full`: it is reached and new ingests are refused (507). */
  store: { repositories: number; tags: number; blobs: number; sizeBytes: number; maxBytes: number | null; full: boolean };
  upstreams: Array<{ host: string; url: string }>;
  defaultUpstream: string;
  sync: { running: boolean; last: unknown };
  /** From the last sync: pinned tags (`name:tag@sha256:…`) the upstream has moved; the pins still serve. */
  movedPins: MovedPin[];
  /**
   * Several replicas: whether this one can vouch for the shared state now. Unconfirmed, it serves nothing and
   * sends nothing upstream (503 naming the reason), whatever the window says.
   */
  sharedState: { replica: string | null; confirmed: boolean; reason: string | null };
  /** The store's counts could not be read (the database or object store failing): why; the counts are then 0. */
  storeError?: string;
}

export interface StatusParts {
  config: Config;
  window: WindowState;
  store: Store;
  allowlist: { list(): unknown[]; problem?: AllowlistProblem };
  denied: { list(): unknown[] };
  syncer?: Pick<Syncer, 'busy' | 'last'>;
  /** With `signing:` configured: the readiness report checks each admitted image's site signature. */
  signer?: Pick<SiteSigner, 'status'>;
}

export function windowReport(window: WindowState): WindowReport {
  const s = window.status();
  return {
    open: s.open,
    until: s.until?.toISOString() ?? null,
    nextOpen: s.nextOpen?.toISOString() ?? null,
    source: s.source,
    ...(s.manual ? { manual: s.manual } : {}),
    schedule: describeSchedule(window.schedule),
  };
}

function describeSchedule(schedule: Schedule): WindowReport['schedule'] {
  if (schedule === 'always' || schedule === 'never') return schedule;
  const hhmm = (min: number): string => `${String(Math.floor(min / 60)).padStart(2, '0')}:${String(min % 60).padStart(2, '0')}`;
  return schedule.map((w) => ({ days: [...w.days], start: hhmm(w.startMin), end: hhmm(w.endMin), timezone: w.timezone }));
}

export async function storeCounts(store: Store): Promise<StatusReport['store']> {
  const repos = await store.repositories();
  let tags = 0;
  for (const r of repos) tags += (await store.listTags(r.host, r.name)).length;
  const { blobs, bytes } = await store.usage();
  const maxBytes = store.maxBytes ?? null;
  return { repositories: repos.length, tags, blobs, sizeBytes: bytes, maxBytes, full: maxBytes !== null && bytes >= maxBytes };
}

export async function statusReport(parts: StatusParts): Promise<StatusReport> {
  const reason = parts.store.unconfirmed() ?? null;
  let storeError: string | undefined;
  const counts = await storeCounts(parts.store).catch((e: unknown) => {
    storeError = e instanceof Error ? e.message : String(e);
    return { repositories: 0, tags: 0, blobs: 0, sizeBytes: 0, maxBytes: parts.store.maxBytes ?? null, full: false };
  });
  return {
    window: windowReport(parts.window),
    sharedState: { replica: parts.store.replica ?? null, confirmed: reason === null, reason },
    ...(storeError ? { storeError } : {}),
    allowlist: { rules: parts.allowlist.list().length },
    allowlistError: parts.allowlist.problem ?? null,
    denied: { entries: parts.denied.list().length },
    store: counts,
    upstreams: [...parts.config.upstreams.values()].map((u) => ({ host: u.host, url: u.url })),
    defaultUpstream: parts.config.defaultUpstream,
    sync: { running: parts.syncer?.busy ?? false, last: parts.syncer?.last ?? null },
    movedPins: parts.syncer?.last?.moved ?? [],
  };
}
