// `syncOnOpen`: the allowlist prefetched whenever upstream access opens.
import type { WindowState } from '../window/state.js';
import type { Syncer } from './sync.js';

/** `syncOnOpen`: prefetch the allowlist each time upstream access goes from closed to open. */
export function syncWhenWindowOpens(window: WindowState, syncer: Syncer, log: (msg: string, f?: Record<string, unknown>) => void): () => void {
  let wasOpen = window.isOpen();
  const check = (): void => {
    const open = window.isOpen();
    if (open && !wasOpen) {
      syncer.run().then(
        (r) => log('automatic sync finished', { fetched: r.fetched.length, cached: r.cached.length, failed: r.failed.length }),
        (e: unknown) => log('automatic sync failed', { error: String(e) }),
      );
    }
    wasOpen = open;
  };
  const timer = setInterval(check, 15_000);
  timer.unref();
  const off = window.onChange(check);
  return () => {
    clearInterval(timer);
    off();
  };
}
