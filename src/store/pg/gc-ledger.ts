// gc across replicas on PostgreSQL: one sweep at a time (a session advisory lock, released by PostgreSQL if the
// replica dies) and table gc_marks, when each blob was first found unreferenced, by the database's clock.
import type pg from 'pg';
import type { GcLedger } from '../ports.js';

/** The gc lock's key (pg_try_advisory_lock), beside the migration (0x5c1ce0) and allowlist (0x5c1ce1) locks. */
const GC_LOCK = 0x5c1ce2;

export class PgGcLedger implements GcLedger {
  constructor(private readonly pool: pg.Pool) {}

  async exclusive<T>(sweep: () => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [GC_LOCK]);
      if (rows[0]?.ok !== true) throw new Error('garbage collection is running on another replica; nothing was removed here, run it again later');
      try {
        return await sweep();
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [GC_LOCK]);
      }
    } finally {
      client.release();
    }
  }

  async ripe(unreferenced: string[], graceMs: number, record: boolean): Promise<Set<string>> {
    const ripeSql = `SELECT digest FROM gc_marks WHERE digest = ANY($1::text[]) AND marked_at <= now() - make_interval(secs => $2::double precision / 1000)`;
    if (!record) {
      const { rows } = await this.pool.query<{ digest: string }>(ripeSql, [unreferenced, graceMs]);
      return new Set(rows.map((r) => r.digest));
    }
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('DELETE FROM gc_marks WHERE NOT (digest = ANY($1::text[]))', [unreferenced]);
      await client.query('INSERT INTO gc_marks (digest) SELECT unnest($1::text[]) ON CONFLICT (digest) DO NOTHING', [unreferenced]);
      const { rows } = await client.query<{ digest: string }>(ripeSql, [unreferenced, graceMs]);
      await client.query('COMMIT');
      return new Set(rows.map((r) => r.digest));
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }
}
