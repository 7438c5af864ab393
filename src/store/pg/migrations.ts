// The PostgreSQL schema, as numbered migrations applied at start in one transaction under an advisory lock, so
// replicas starting together apply each exactly once; a migration is never edited once released, only added.
import type pg from 'pg';

/** Serialises schema changes across replicas (pg_advisory_xact_lock key). */
const MIGRATION_LOCK = 0x5c1ce0;

export const MIGRATIONS: ReadonlyArray<{ version: number; name: string; sql: string }> = [
  {
    version: 1,
    name: 'tags, links, referrers, manifests, allowlist with history, denied log, manual window',
    sql: `
      CREATE TABLE tags (
        host text NOT NULL, name text NOT NULL, tag text NOT NULL, digest text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (host, name, tag));
      CREATE TABLE manifest_links (
        host text NOT NULL, name text NOT NULL, digest text NOT NULL, media_type text NOT NULL,
        PRIMARY KEY (host, name, digest));
      CREATE TABLE blob_links (host text NOT NULL, name text NOT NULL, digest text NOT NULL, PRIMARY KEY (host, name, digest));
      CREATE TABLE referrers (
        host text NOT NULL, name text NOT NULL, subject text NOT NULL, digest text NOT NULL, descriptor jsonb NOT NULL,
        PRIMARY KEY (host, name, subject, digest));
      CREATE TABLE manifests (digest text PRIMARY KEY, media_type text NOT NULL, size_bytes bigint NOT NULL);
      CREATE TABLE allowlist (id int PRIMARY KEY CHECK (id = 1), document jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
      CREATE TABLE allowlist_history (
        id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), action text NOT NULL CHECK (action IN ('add', 'remove')),
        rule text NOT NULL, by text NOT NULL, note text);
      CREATE TABLE denied (
        host text NOT NULL, name text NOT NULL, reference text NOT NULL, count bigint NOT NULL,
        first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL, client text, PRIMARY KEY (host, name, reference));
      CREATE TABLE manual_window (id int PRIMARY KEY CHECK (id = 1), manual jsonb);
    `,
  },
  {
    version: 2,
    name: 'allowlist revision (replicas acknowledge each one)',
    sql: 'ALTER TABLE allowlist ADD COLUMN revision bigint NOT NULL DEFAULT 0;',
  },
  {
    version: 3,
    name: 'tag history (gc keeps the last digests of each tag)',
    sql: `CREATE TABLE tag_history (
      host text NOT NULL, name text NOT NULL, tag text NOT NULL, digest text NOT NULL, at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (host, name, tag, digest));`,
  },
  {
    version: 4,
    name: 'manual window revision (replicas acknowledge each change)',
    sql: 'ALTER TABLE manual_window ADD COLUMN revision bigint NOT NULL DEFAULT 0;',
  },
  {
    version: 5,
    name: 'gc marks (a blob goes once unreferenced for longer than the grace, by the database clock)',
    sql: 'CREATE TABLE gc_marks (digest text PRIMARY KEY, marked_at timestamptz NOT NULL DEFAULT now());',
  },
];

/** Applies every migration not yet applied; returns the versions applied now. */
export async function migrate(client: pg.ClientBase): Promise<number[]> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS sluice_schema (
      version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set((await client.query<{ version: number }>('SELECT version FROM sluice_schema')).rows.map((r) => r.version));
    const newest = Math.max(0, ...done);
    const latest = Math.max(...MIGRATIONS.map((m) => m.version));
    if (newest > latest) throw new Error(`the database schema is version ${newest}, newer than this sluice knows (${latest}): upgrade sluice`);
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      await client.query(m.sql);
      await client.query('INSERT INTO sluice_schema (version, name) VALUES ($1, $2)', [m.version, m.name]);
      applied.push(m.version);
    }
    await client.query('COMMIT');
    return applied;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}
