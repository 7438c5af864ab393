// Upstream access decided in one place: whether it is open now (the window), the configured upstream of a host,
// and the closed-window miss (immediate, and it says when access opens next) that every caller outside a window gets.
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

/** The window and the host table, as every part of the mirror that may reach an upstream asks them. */
export class UpstreamGate {
  constructor(
    private readonly window: WindowState,
    private readonly upstreams: UpstreamLookup,
  ) {}

  isOpen(): boolean {
    return this.window.isOpen();
  }

  /** The closed-window miss, for a caller that has a better answer to try first (a last known tag). */
  closed(kind: ClosedKind, detail: Record<string, string>): RegistryError {
    return closedError(this.window, kind, kind === 'BLOB_UNKNOWN' ? 'blob' : 'manifest', detail);
  }

  /** Throws the closed-window miss unless a window is open: the one place upstream access is refused. */
  requireOpen(kind: ClosedKind, detail: Record<string, string>): void {
    if (!this.window.isOpen()) throw this.closed(kind, detail);
  }

  /** The upstream configured for a host (NAME_UNKNOWN when none is). */
  upstream(host: string): Upstream {
    const u = this.upstreams.get(host);
    if (!u) throw new RegistryError('NAME_UNKNOWN', 'registry host is not a configured upstream', { host });
    return u;
  }

  /** The upstream to ask now: only while a window is open and the host is configured. */
  openUpstream(host: string): Upstream | undefined {
    return this.window.isOpen() ? this.upstreams.get(host) : undefined;
  }
}
