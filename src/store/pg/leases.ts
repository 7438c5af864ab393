// Cross-replica single flight: the lease on a digest is a PostgreSQL session-level advisory lock, held on its own
// connection for as long as the download runs. A replica that dies (kill -9, power) loses its connection and
// PostgreSQL releases the lock at once; a half-open TCP connection is found by keepalives. Waiting is blocking
// pg_advisory_lock: the waiter wakes the moment the holder releases or dies, with no polling.
import type pg from 'pg';
import { RegistryError } from '../../oci/errors.js';
import { hexOf } from '../digest.js';
import type { FlightLease, FlightLeases } from '../ports.js';
import { boundedQuery, databaseError } from './db.js';

/** The lock key of a digest: its first 64 bits, signed (a collision only makes two digests take turns). */
function keyOf(digest: string): string {
  return BigInt.asIntN(64, BigInt(`0x${hexOf(digest).slice(0, 16)}`)).toString();
}

export class PgLeases implements FlightLeases {
  private readonly held = new Set<pg.PoolClient>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly where: string,
    private readonly bounds: { queryTimeoutMs: number; freshnessMs: number },
    /** Why this replica cannot vouch for the shared state (its feed is broken or silent); a wait gives up then. */
    private readonly unconfirmed: () => string | undefined = () => undefined,
  ) {}

  async acquire(digest: string, waitMs: number, signal?: AbortSignal): Promise<FlightLease> {
    const client = await this.pool.connect().catch((e: unknown) => {
      throw databaseError(this.where, e);
    });
    const key = keyOf(digest);
    // Cancelling a blocked pg_advisory_lock: end its session (the lock, if granted meanwhile, goes with it).
    let cancelled = false;
    const cancel = (): void => {
      cancelled = true;
      client.release(true);
    };
    signal?.addEventListener('abort', cancel, { once: true });
    // A wait on a link that went silent would last until waitMs: it ends once this replica stops vouching.
    let lost: string | undefined;
    const watch = setInterval(() => {
      lost = this.unconfirmed();
      if (lost && !cancelled) cancel();
    }, Math.max(50, Math.floor(this.bounds.freshnessMs / 4)));
    watch.unref();
    const { queryTimeoutMs, freshnessMs } = this.bounds;
    try {
      if (signal?.aborted) throw signal.reason;
      const lockMs = Math.max(1, Math.floor(waitMs));
      await client.query(boundedQuery(`SET lock_timeout = ${lockMs}`, [], queryTimeoutMs));
      await client.query(boundedQuery('SELECT pg_advisory_lock($1)', [key], lockMs + queryTimeoutMs));
      // The holder's session ends on the server once it goes quiet past the freshness bound (its link hangs), so a
      // lease never outlives a replica that cannot reach the database; the holder pings it meanwhile.
      await client.query(boundedQuery(`SET idle_session_timeout = ${Math.max(1000, freshnessMs)}`, [], queryTimeoutMs));
    } catch (e) {
      if (lost) throw new RegistryError('UNAVAILABLE', `the wait for another replica's download was given up: ${lost}`, { digest });
      const lockTimeout = (e as { code?: string }).code === '55P03';
      if (!cancelled) client.release(lockTimeout ? undefined : true);
      if (cancelled) throw signal?.reason instanceof Error ? signal.reason : new RegistryError('UPSTREAM_FAILED', 'the wait for another replica\'s download was cancelled', { digest });
      if (lockTimeout) {
        throw new RegistryError('UPSTREAM_FAILED', 'another sluice replica is still downloading this blob', { digest, waitedMs: waitMs });
      }
      throw databaseError(this.where, e);
    } finally {
      clearInterval(watch);
      signal?.removeEventListener('abort', cancel);
    }
    if (cancelled) throw new RegistryError('UPSTREAM_FAILED', 'the wait for another replica\'s download was cancelled', { digest });
    this.held.add(client);
    let released = false;
    const ping = setInterval(() => {
      client.query(boundedQuery('SELECT 1', [], queryTimeoutMs)).catch(() => undefined);
    }, Math.max(250, Math.floor(freshnessMs / 3)));
    ping.unref();
    return {
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(ping);
        this.held.delete(client);
        try {
          await client.query(boundedQuery('SELECT pg_advisory_unlock($1)', [key], queryTimeoutMs));
          await client.query(boundedQuery('SET idle_session_timeout = 0', [], queryTimeoutMs));
          client.release();
        } catch (e) {
          client.release(e instanceof Error ? e : true); // a broken session drops its locks with it
        }
      },
    };
  }

  async close(): Promise<void> {
    for (const c of this.held) c.release(true);
    this.held.clear();
    await this.pool.end();
  }
}
