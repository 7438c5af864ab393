// Upstream access as the mirror answers it: the configured upstream of a host, and the closed-window miss
// (immediate, and it says when access opens next) that every caller outside a window gets.
import { RegistryError } from '../oci/errors.js';
import type { Upstream } from '../upstream/client.js';
import type { UpstreamLookup } from '../upstream/pool.js';
import type { WindowState } from '../window/state.js';

export type ClosedKind = 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN';

/** "until <ISO>" of the next window, or why there is none; used in every closed-window message. */
export function closedUntil(next: Date | null): string {
  return next ? `closed until ${next.toISOString()}` : 'closed (no sync window is scheduled)';
}

/** The same, for the window as it is now. */
export function windowClosedUntil(window: WindowState): string {
  return closedUntil(window.status().nextOpen);
}

/** The hard-fail answer outside a window. */
export function closedError(window: WindowState, kind: ClosedKind, what: string, detail: Record<string, string>): RegistryError {
  const next = window.status().nextOpen;
  return new RegistryError(kind, `${what} not cached; upstream access ${closedUntil(next)}`, {
    ...detail,
    nextWindow: next ? next.toISOString() : null,
  });
}

/** Whether an error is the closed-window miss above (for the request metrics' "window-closed" outcome). */
export function isClosedWindowMiss(e: RegistryError): boolean {
  const d = e.detail;
  return (e.kind === 'MANIFEST_UNKNOWN' || e.kind === 'BLOB_UNKNOWN') && typeof d === 'object' && d !== null && 'nextWindow' in d;
}

export function requireUpstream(upstreams: UpstreamLookup, host: string): Upstream {
  const u = upstreams.get(host);
  if (!u) throw new RegistryError('NAME_UNKNOWN', 'registry host is not a configured upstream', { host });
  return u;
}
