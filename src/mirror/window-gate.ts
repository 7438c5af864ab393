// Where the window meets the upstream clients: the gate every request passes, and the abort when it closes.
import { RegistryError } from '../oci/errors.js';
import type { UpstreamPool } from '../upstream/pool.js';
import type { WindowState } from '../window/state.js';
import { closedError } from './access.js';

/** A replica that cannot vouch for the shared state (allowlist, window) says why (store.unconfirmed()). */
export interface SharedState {
  unconfirmed?(): string | undefined;
}

/** 503 naming the database: the replica fails closed rather than act on state that may be stale. */
export function unconfirmedError(reason: string, what: string): RegistryError {
  return new RegistryError('UNAVAILABLE', `${what}: ${reason}`, { failClosed: true });
}

/**
 * The one window gate every upstream request passes at the moment it is sent (shut for good by close()). 404 like the mirror's closed
 * answer (blob or manifest unknown, with the next window) for the rare client that raced the close.
 */
export function windowGate(window: WindowState, life: { stopping: boolean }, shared: SharedState = {}): (what: string) => void {
  return (what) => {
    if (life.stopping) throw new RegistryError('UPSTREAM_FAILED', `${what} not sent: sluice is shutting down`);
    const unconfirmed = shared.unconfirmed?.();
    if (unconfirmed) throw unconfirmedError(unconfirmed, `${what} not sent upstream: upstream access is closed on this replica`);
    if (window.isOpen()) return;
    throw closedError(window, what.startsWith('blob') ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN', what, {});
  };
}

/** Closing the window abandons upstream requests in flight (blob downloads already sent excepted). */
export function abortWhenWindowCloses(window: WindowState, upstreams: UpstreamPool): () => void {
  return window.onChange(() => {
    if (window.isOpen()) return;
    const reason = new RegistryError('MANIFEST_UNKNOWN', 'upstream access closed while the request was in flight');
    for (const u of upstreams.values()) u.abortInFlight(reason);
  });
}
