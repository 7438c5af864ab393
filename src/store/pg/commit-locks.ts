// The gc/commit gate across replicas: a replica committing holds the COMMITS advisory lock shared on a session
// of its own; gc takes GC (its announcement) and then COMMITS exclusively. A replica that dies loses its session
// and PostgreSQL releases its locks at once, so nothing waits on the dead.
import type pg from 'pg';
import { CommitWaitError, type CommitLocks, type HeldLock } from '../commit-gate.js';

// Keys of their own: 0x5c1ce0 serialises migrations and 0x5c1ce1 allowlist edits (store/pg/migrations.ts, state.ts).
const COMMITS_KEY = 0x5c1ce2;
const GC_KEY = 0x5c1ce3;

export class PgCommitLocks implements CommitLocks {
  constructor(private readonly pool: pg.Pool) {}

  async mark(): Promise<HeldLock> {
    const client = await this.pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock_shared($1)', [COMMITS_KEY]);
    } catch (e) {
      client.release(true);
      throw e;
    }
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        await endSession(client, 'SELECT pg_advisory_unlock_shared($1)', [COMMITS_KEY]);
      },
    };
  }

  async gcPending(): Promise<boolean> {
    // Transaction-scoped: taken and let go within this one statement. It fails while a gc holds or waits for GC.
    const { rows } = await this.pool.query<{ free: boolean }>('SELECT pg_try_advisory_xact_lock_shared($1) AS free', [GC_KEY]);
    return rows[0]?.free !== true;
  }

  async gcDone(): Promise<void> {
    for (;;) {
      try {
        await this.pool.query('SELECT pg_advisory_xact_lock_shared($1)', [GC_KEY]);
        return;
      } catch (e) {
        // A lock or statement timeout set for every session only ends this wait early: wait again.
        const code = (e as { code?: string }).code;
        if (code !== '55P03' && code !== '57014') throw e;
      }
    }
  }

  async exclusive<T>(waitMs: number, fn: () => Promise<T>, onWaiting?: () => void): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query(`SET lock_timeout = ${Math.max(1, Math.floor(waitMs))}`);
      await client.query('SELECT pg_advisory_lock($1)', [GC_KEY]);
      const { rows } = await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1) AS got', [COMMITS_KEY]);
      if (rows[0]?.got !== true) {
        onWaiting?.();
        await client.query('SELECT pg_advisory_lock($1)', [COMMITS_KEY]);
      }
      await client.query('SET lock_timeout = 0');
    } catch (e) {
      client.release(true); // ends the session: whatever it took goes with it
      if ((e as { code?: string }).code === '55P03') throw new CommitWaitError(waitMs, 'another replica, or another gc');
      throw e;
    }
    try {
      return await fn();
    } finally {
      await endSession(client, 'SELECT pg_advisory_unlock_all()', []);
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Unlocks and returns the session to the pool; a broken session is dropped (its locks go with it). */
async function endSession(client: pg.PoolClient, sql: string, values: unknown[]): Promise<void> {
  try {
    await client.query(sql, values);
    client.release();
  } catch (e) {
    client.release(e instanceof Error ? e : true);
  }
}
