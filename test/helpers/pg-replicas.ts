// Two replicas' PostgreSQL metadata stores on one fresh database, with a plain client beside them to observe and
// to end sessions (what kill -9 does to a replica, seen from the database).
import pg from 'pg';
import { POSTGRES_BOUNDS } from '../../src/config/scale-out.js';
import { PgMetadataStore } from '../../src/store/pg/metadata.js';
import { freshDatabase } from './services.js';

export interface PgReplicas {
  a: PgMetadataStore;
  b: PgMetadataStore;
  probe: pg.Client;
  /** Closes both stores and the probe, and drops the database. */
  close(): Promise<void>;
}

export async function pgReplicas(): Promise<PgReplicas> {
  const db = await freshDatabase();
  const open = (): Promise<PgMetadataStore> => PgMetadataStore.open({ url: db.url, poolSize: 2, ...POSTGRES_BOUNDS });
  const [a, b] = await Promise.all([open(), open()]);
  const probe = new pg.Client({ connectionString: db.url });
  await probe.connect();
  return {
    a,
    b,
    probe,
    close: async () => {
      await probe.end();
      await a.close();
      await b.close();
      await db.drop();
    },
  };
}

/** 'pending' if `p` has not settled by the time a round trip through `probe` has. */
export async function settledState(p: Promise<unknown>, probe: pg.Client): Promise<string> {
  const settled = p.then(() => 'resolved', () => 'rejected');
  await probe.query('SELECT 1');
  return Promise.race([settled, Promise.resolve('pending')]);
}
