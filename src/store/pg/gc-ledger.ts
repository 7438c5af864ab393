// gc's marks across replicas (table gc_marks): when each blob was first found unreferenced, by the database's
// clock. The sweep itself runs alone across replicas under the commit gate (commit-locks.ts).
import type { GcLedger } from '../ports.js';
import type { PgDb } from './db.js';

const RIPE_SQL = 'SELECT digest FROM gc_marks WHERE digest = ANY($1::text[]) AND marked_at <= now() - make_interval(secs => $2::double precision / 1000)';

export class PgGcLedger implements GcLedger {
  constructor(private readonly db: PgDb) {}

  async ripe(unreferenced: string[], graceMs: number, record: boolean): Promise<Set<string>> {
    if (!record) {
      const { rows } = await this.db.query<{ digest: string }>(RIPE_SQL, [unreferenced, graceMs]);
      return new Set(rows.map((r) => r.digest));
    }
    const client = await this.db.connect();
    try {
      await client.query('BEGIN');
      await client.query('DELETE FROM gc_marks WHERE NOT (digest = ANY($1::text[]))', [unreferenced]);
      await client.query('INSERT INTO gc_marks (digest) SELECT unnest($1::text[]) ON CONFLICT (digest) DO NOTHING', [unreferenced]);
      const { rows } = await client.query<{ digest: string }>(RIPE_SQL, [unreferenced, graceMs]);
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
