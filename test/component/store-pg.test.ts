// The PostgreSQL backend (the real one from test/services) passes the MetadataStore and FlightLeases conformance
// suites: a fresh database per test, `another` a second replica's store on it. And what only it can do: a lease
// holder whose session dies (a replica killed) frees the lease at once.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { POSTGRES_BOUNDS } from '../../src/config/scale-out.js';
import { openStore } from '../../src/store/open.js';
import { PgMetadataStore } from '../../src/store/pg/metadata.js';
import type { Store } from '../../src/store/store.js';
import { flightLeasesConformance } from '../helpers/conformance/flight-leases.js';
import { metadataStoreConformance } from '../helpers/conformance/metadata-store.js';
import { freshDatabase, requireServices } from '../helpers/services.js';

const ok = requireServices(['postgres'], 'test/component/store-pg.test.ts');
const D = `sha256:${'ab'.repeat(32)}`;

if (ok) {
  metadataStoreConformance('postgres', async () => {
    const db = await freshDatabase();
    const dirs: string[] = [];
    const stores: Store[] = [];
    const openOne = async (): Promise<Store> => {
      const dir = await mkdtemp(join(tmpdir(), 'sluice-meta-pg-'));
      dirs.push(dir);
      const s = await openStore({ storage: dir, postgres: { url: db.url, poolSize: 4, ...POSTGRES_BOUNDS } });
      stores.push(s);
      return s;
    };
    const first = await openOne();
    return {
      meta: first.meta,
      another: async () => (await openOne()).meta,
      close: async () => {
        for (const s of stores) await s.close();
        for (const d of dirs) await rm(d, { recursive: true, force: true });
        await db.drop();
      },
    };
  });

  flightLeasesConformance('postgres', async () => {
    const db = await freshDatabase();
    const [a, b] = await Promise.all([PgMetadataStore.open({ url: db.url, poolSize: 2, ...POSTGRES_BOUNDS }), PgMetadataStore.open({ url: db.url, poolSize: 2, ...POSTGRES_BOUNDS })]);
    const probe = new pg.Client({ connectionString: db.url });
    await probe.connect();
    return {
      a: a.leases,
      b: b.leases,
      settled: async () => void (await probe.query('SELECT 1')),
      close: async () => {
        await probe.end();
        await a.close();
        await b.close();
        await db.drop();
      },
    };
  });
}

describe.skipIf(!ok)('FlightLeases on PostgreSQL: a replica killed', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let a: PgMetadataStore;
  let b: PgMetadataStore;
  let probe: pg.Client;
  beforeAll(async () => {
    db = await freshDatabase();
    [a, b] = await Promise.all([PgMetadataStore.open({ url: db.url, poolSize: 2, ...POSTGRES_BOUNDS }), PgMetadataStore.open({ url: db.url, poolSize: 2, ...POSTGRES_BOUNDS })]);
    probe = new pg.Client({ connectionString: db.url });
    await probe.connect();
  });
  afterAll(async () => {
    await probe?.end();
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  /** Resolves to 'pending' if `p` has not settled by the time a round trip to the database has. */
  async function state(p: Promise<unknown>): Promise<string> {
    const settled = p.then(() => 'resolved', () => 'rejected');
    await probe.query('SELECT 1');
    return Promise.race([settled, Promise.resolve('pending')]);
  }

  test('a holder whose session dies (a replica killed) frees the lease at once', async () => {
    const held = await a.leases.acquire(D, 10_000);
    const waiting = b.leases.acquire(D, 10_000);
    expect(await state(waiting)).toBe('pending');
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
});

describe.skipIf(!ok)('the denied log on PostgreSQL under a flood of distinct references', () => {
  test('what a replica remembers of its own writes stays within the log bound, however many references went by', async () => {
    const db = await freshDatabase();
    const m = await PgMetadataStore.open({ url: db.url, poolSize: 2, ...POSTGRES_BOUNDS });
    try {
      const max = 50;
      const at = new Date().toISOString();
      // Each flush holds the in-memory log (never more than `max`): a flood replaces all of it every time.
      for (let round = 0; round < 20; round++) {
        const entries = Array.from({ length: max }, (_, i) => ({ host: 'ghcr.io', name: 'flood/x', reference: `r${round}-${i}`, count: 1, firstSeen: at, lastSeen: at }));
        await m.state.denied.write({ version: 1, entries }, max);
      }
      const stored = (await m.state.denied.read()) as { entries: unknown[] };
      expect(stored.entries).toHaveLength(max);
      // Written again after the read: the replica's memo of counts it wrote must not keep every reference ever seen.
      for (let round = 20; round < 40; round++) {
        const entries = Array.from({ length: max }, (_, i) => ({ host: 'ghcr.io', name: 'flood/x', reference: `r${round}-${i}`, count: 1, firstSeen: at, lastSeen: at }));
        await m.state.denied.write({ version: 1, entries }, max);
      }
      const memo = (m.state.denied as unknown as { written: Map<string, number> }).written;
      expect(memo.size).toBeLessThanOrEqual(max);
    } finally {
      await m.close();
      await db.drop();
    }
  });
});
