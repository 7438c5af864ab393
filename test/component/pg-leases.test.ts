// The cross-replica lease on a digest (store/pg/leases.ts) against the real PostgreSQL: one holder at a time, a
// waiter woken by the release, by the holder's session dying, or cancelled by its signal; never by polling.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import pg from 'pg';
import { PgMetadataStore } from '../../src/store/pg/metadata.js';
import type { FlightLeases } from '../../src/store/ports.js';
import { freshDatabase, requireServices } from '../helpers/services.js';

const ok = requireServices(['postgres'], 'test/component/pg-leases.test.ts');
const D = `sha256:${'ab'.repeat(32)}`;

/** Resolves to 'pending' if `p` has not settled by the time a round trip to the database has. */
async function state(p: Promise<unknown>, db: pg.Client): Promise<string> {
  const settled = p.then(() => 'resolved', () => 'rejected');
  await db.query('SELECT 1');
  return Promise.race([settled, Promise.resolve('pending')]);
}

describe.skipIf(!ok)('FlightLeases on PostgreSQL', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let a: PgMetadataStore;
  let b: PgMetadataStore;
  let probe: pg.Client;
  const leases = (m: PgMetadataStore): FlightLeases => m.leases;
  beforeAll(async () => {
    db = await freshDatabase();
    [a, b] = await Promise.all([PgMetadataStore.open({ url: db.url, poolSize: 2 }), PgMetadataStore.open({ url: db.url, poolSize: 2 })]);
    probe = new pg.Client({ connectionString: db.url });
    await probe.connect();
  });
  afterAll(async () => {
    await probe?.end();
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  test('a second replica waits for the holder and gets the lease the moment it is released', async () => {
    const held = await leases(a).acquire(D, 10_000);
    const waiting = leases(b).acquire(D, 10_000);
    expect(await state(waiting, probe)).toBe('pending');
    await held.release();
    const next = await waiting;
    await next.release();
    await next.release(); // harmless twice
  });

  test('a holder whose session dies (a replica killed) frees the lease at once', async () => {
    const held = await leases(a).acquire(D, 10_000);
    const waiting = leases(b).acquire(D, 10_000);
    expect(await state(waiting, probe)).toBe('pending');
    // What kill -9 does to a replica's sessions: PostgreSQL ends the holder's backend.
    const { rows } = await probe.query<{ pid: number }>(
      `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`); // the server is shared
    expect(rows).toHaveLength(1);
    await probe.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
    const next = await waiting;
    await next.release();
    await held.release(); // its session is gone: releasing must not throw
  });

  test('a wait is bounded by its timeout and cancelled by its signal', async () => {
    const held = await leases(a).acquire(D, 10_000);
    await expect(leases(b).acquire(D, 50)).rejects.toThrow('another sluice replica is still downloading this blob');
    const stop = new AbortController();
    const waiting = leases(b).acquire(D, 10_000, stop.signal);
    expect(await state(waiting, probe)).toBe('pending');
    stop.abort(new Error('shutting down'));
    await expect(waiting).rejects.toThrow('shutting down');
    await held.release();
    const again = await leases(b).acquire(D, 1000);
    await again.release();
  });
});
