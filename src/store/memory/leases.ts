// FlightLeases in memory: one holder per digest among every instance over the same table (each instance is "a
// replica"); waiters queue and are woken by the release, bounded by their wait and cancelled by their signal.
import { RegistryError } from '../../oci/errors.js';
import type { FlightLease, FlightLeases } from '../ports.js';

interface Waiter {
  grant: () => void;
}

/** Per digest: the queue of waiters behind the current holder (present while the digest is held). */
export type MemoryLeaseTable = Map<string, Waiter[]>;

export class MemoryLeases implements FlightLeases {
  constructor(private readonly held: MemoryLeaseTable = new Map()) {}

  acquire(digest: string, waitMs: number, signal?: AbortSignal): Promise<FlightLease> {
    if (signal?.aborted) return Promise.reject(reasonOf(signal, digest));
    const queue = this.held.get(digest);
    if (!queue) {
      this.held.set(digest, []);
      return Promise.resolve(this.lease(digest));
    }
    return new Promise<FlightLease>((resolve, reject) => {
      const stop = (e: Error): void => {
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        clearTimeout(timer);
        signal?.removeEventListener('abort', cancel);
        reject(e);
      };
      const cancel = (): void => stop(reasonOf(signal, digest));
      const timer = setTimeout(
        () => stop(new RegistryError('UPSTREAM_FAILED', 'another sluice replica is still downloading this blob', { digest, waitedMs: waitMs })),
        waitMs,
      );
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', cancel);
          resolve(this.lease(digest));
        },
      };
      signal?.addEventListener('abort', cancel, { once: true });
      queue.push(waiter);
    });
  }

  /** Held until released; the release hands the digest to the first waiter, or frees it. */
  private lease(digest: string): FlightLease {
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        const next = this.held.get(digest)?.shift();
        if (next) next.grant();
        else this.held.delete(digest);
      },
    };
  }
}

function reasonOf(signal: AbortSignal | undefined, digest: string): Error {
  return signal?.reason instanceof Error ? signal.reason : new RegistryError('UPSTREAM_FAILED', 'the wait for another replica\'s download was cancelled', { digest });
}
