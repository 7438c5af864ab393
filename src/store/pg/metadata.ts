// MetadataStore in PostgreSQL, shared by every replica: tags, manifest and blob links per repository, referrers by
// subject, manifest media types, and the state documents (state.ts). Writes NOTIFY the others, which drop their
// tag cache and bump their generation at once; the schema is migrated at open (migrations.ts).
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { LRUCache } from 'lru-cache';
import type { PostgresConfig } from '../../config/config.js';
import { POSTGRES_BOUNDS } from '../../config/scale-out.js';
import type { Descriptor } from '../../oci/manifest.js';
import type { BlobNotices, FlightLeases, GcLedger, LinkableManifest, ManifestType, MetadataStore, RepositoryName, StateDocuments } from '../ports.js';
import { referrerDescriptor, subjectOf } from '../referrers.js';
import { databaseError, PgDb } from './db.js';
import { PgGcLedger } from './gc-ledger.js';
import { PgLeases } from './leases.js';
import { PgCommitLocks } from './commit-locks.js';
import { migrate } from './migrations.js';
import { CHANNELS, Notifications } from './notify.js';
import { pgStateDocuments } from './state.js';

/** How many past digests of a tag are kept (as store/fs keeps them). */
const MAX_HISTORY = 100;

/** Connecting is bounded; queries are bounded only where `pgQueryConfig` is added (not leases, migrations, LISTEN). */
export function pgClientConfig(c: PostgresConfig): pg.ClientConfig {
  const password = c.passwordFile ? readFileSync(c.passwordFile, 'utf8').trim() : undefined;
  return {
    ...(c.url ? { connectionString: c.url } : {}),
    ...(c.host ? { host: c.host } : {}),
    ...(c.port ? { port: c.port } : {}),
    ...(c.user ? { user: c.user } : {}),
    ...(c.database ? { database: c.database } : {}),
    ...(password !== undefined ? { password } : {}),
    application_name: 'sluice',
    connectionTimeoutMillis: c.connectTimeoutMs,
    keepAlive: true,
  };
}

/**
 * Every metadata query is bounded on both sides: the server cancels a statement past queryTimeout, and the client
 * gives up on one whose answer does not come (a half-open link), which also retires that connection.
 */
function pgQueryConfig(c: PostgresConfig): pg.ClientConfig {
  return { query_timeout: c.queryTimeoutMs, statement_timeout: c.queryTimeoutMs };
}

/** Where the database is, for messages: host:port/database (never the password). */
export function describeDb(c: PostgresConfig): string {
  if (c.url) {
    const u = new URL(c.url);
    return `${u.host}${u.pathname}`;
  }
  return `${c.host ?? 'localhost'}:${c.port ?? 5432}/${c.database ?? ''}`;
}

export class PgMetadataStore implements MetadataStore {
  private changes = 0;
  readonly state: StateDocuments;
  readonly leases: FlightLeases;
  readonly commitLocks: PgCommitLocks;
  readonly gcLedger: GcLedger;
  private readonly tags = new LRUCache<string, string>({ maxSize: 100_000, sizeCalculation: () => 1 });
  private readonly offMeta: () => void;
  /** gc or verify --repair removed a blob: every replica drops its cached copy (store/cache/) at once. */
  readonly blobNotices: BlobNotices = {
    announceGone: async (digest) => {
      await this.pool.query('SELECT pg_notify($1, $2)', [CHANNELS.blobs, digest]);
    },
    onGone: (handler) => this.notes.on(CHANNELS.blobs, handler),
  };

  private constructor(private readonly pool: PgDb, private readonly notes: Notifications, leases: PgLeases, commitPool: pg.Pool, location: string, ackWaitMs: number) {
    this.state = pgStateDocuments(pool, notes, location, ackWaitMs);
    this.leases = leases;
    this.commitLocks = new PgCommitLocks(commitPool);
    this.gcLedger = new PgGcLedger(pool);
    this.offMeta = notes.on(CHANNELS.meta, (from) => {
      if (from !== this.replica) this.invalidate();
    });
  }

  /**
   * Connects, migrates the schema, and (a server) listens for the other replicas' changes; fails with a message
   * naming the database. Idle connections never keep the process alive: a CLI command ends when it is done.
   */
  static async open(given: PostgresConfig, opts: { listen?: boolean } = {}): Promise<PgMetadataStore> {
    const c = { ...POSTGRES_BOUNDS, ...given }; // a config built by hand (a tool, a test) may leave the bounds out
    const config = pgClientConfig(c);
    const where = describeDb(c);
    const pool = new pg.Pool({ ...config, ...pgQueryConfig(c), max: c.poolSize, allowExitOnIdle: true });
    // Leases hold a session each (a waiting or leading download): their own pool, so they never starve queries.
    const leasePool = new pg.Pool({ ...config, max: Math.max(4, c.poolSize * 2), allowExitOnIdle: true });
    // The gc/commit gate's own: a mark, a wait for gc and gc's session never queue behind downloads' leases.
    const commitPool = new pg.Pool({ ...config, max: 4, allowExitOnIdle: true });
    // A connection dropping (database restart, a lease session ended) must not crash the process: the query on it
    // rejects where it is awaited, and the pool replaces the client.
    for (const p of [pool, leasePool, commitPool]) {
      p.on('error', () => undefined);
      p.on('connect', (client) => client.on('error', () => undefined));
    }
    try {
      // Migrations may wait for another replica's, and may take long: their own session, not bounded per query.
      const client = new pg.Client(config);
      client.on('error', () => undefined);
      await client.connect();
      try {
        await migrate(client);
      } finally {
        await client.end().catch(() => undefined);
      }
      const replica = randomBytes(6).toString('hex');
      const notes = await Notifications.open(config, replica, { freshnessMs: c.freshnessMs, where }, opts.listen ?? true);
      // An edit waits one freshness bound for acknowledgements: a replica that has not acknowledged by then has
      // stopped vouching for the shared state (its heartbeat is that old), so it serves nothing stale.
      return new PgMetadataStore(new PgDb(pool, where), notes, new PgLeases(leasePool, where, c, () => notes.unconfirmed()), commitPool, `PostgreSQL at ${where}`, c.freshnessMs + 250);
    } catch (e) {
      await Promise.all([pool.end(), leasePool.end(), commitPool.end()]).catch(() => undefined);
      const named = databaseError(where, e);
      throw named === e ? new Error(`PostgreSQL at ${where}: ${e instanceof Error ? e.message : String(e)}`) : named;
    }
  }

  /** This replica's name in the database (its LISTEN session, acknowledgements, messages). */
  get replica(): string {
    return this.notes.replica;
  }

  /** Why this replica cannot vouch for the shared state now; undefined when it can (notify.ts). */
  unconfirmed(): string | undefined {
    return this.notes.unconfirmed();
  }

  get generation(): number {
    return this.changes;
  }

  invalidate(): void {
    this.tags.clear();
    this.changes++;
  }

  /** Changed tags or links: the other replicas drop their caches (delivered when the statement commits). */
  private async changed(): Promise<void> {
    this.changes++;
    await this.pool.query('SELECT pg_notify($1, $2)', [CHANNELS.meta, this.replica]);
  }

  async setTag(host: string, name: string, tag: string, digest: string): Promise<void> {
    const key = [host, name, tag];
    const { rows } = await this.pool.query<{ digest: string }>('SELECT digest FROM tags WHERE host = $1 AND name = $2 AND tag = $3', key);
    const before = rows[0]?.digest;
    await this.pool.query(`INSERT INTO tags (host, name, tag, digest) VALUES ($1, $2, $3, $4)
      ON CONFLICT (host, name, tag) DO UPDATE SET digest = EXCLUDED.digest, updated_at = now()`, [...key, digest]);
    if (before !== digest) await this.recordMove(key, before, digest);
    this.tags.set(`${host}/${name}:${tag}`, digest);
    await this.changed();
  }

  async getTag(host: string, name: string, tag: string): Promise<string | undefined> {
    const key = `${host}/${name}:${tag}`;
    const cached = this.tags.get(key);
    if (cached) return cached;
    const { rows } = await this.pool.query<{ digest: string }>('SELECT digest FROM tags WHERE host = $1 AND name = $2 AND tag = $3', [host, name, tag]);
    const digest = rows[0]?.digest;
    if (digest) this.tags.set(key, digest);
    return digest;
  }

  /** The tag's history gains the new digest (and the old one first, when the history starts now). */
  private async recordMove(key: string[], before: string | undefined, digest: string): Promise<void> {
    const started = await this.exists('SELECT 1 FROM tag_history WHERE host = $1 AND name = $2 AND tag = $3', key);
    if (!started && before) {
      await this.pool.query(`INSERT INTO tag_history (host, name, tag, digest, at) VALUES ($1, $2, $3, $4, now() - interval '1 second')
        ON CONFLICT DO NOTHING`, [...key, before]);
    }
    await this.pool.query(`INSERT INTO tag_history (host, name, tag, digest) VALUES ($1, $2, $3, $4)
      ON CONFLICT (host, name, tag, digest) DO UPDATE SET at = now()`, [...key, digest]);
  }

  async tagHistory(host: string, name: string, tag: string): Promise<string[]> {
    const current = await this.getTag(host, name, tag);
    if (!current) return [];
    const { rows } = await this.pool.query<{ digest: string }>(
      `SELECT digest FROM tag_history WHERE host = $1 AND name = $2 AND tag = $3 ORDER BY at DESC LIMIT ${MAX_HISTORY}`, [host, name, tag]);
    return [current, ...rows.map((r) => r.digest).filter((d) => d !== current)];
  }

  async deleteTag(host: string, name: string, tag: string): Promise<boolean> {
    const { rowCount } = await this.pool.query('DELETE FROM tags WHERE host = $1 AND name = $2 AND tag = $3', [host, name, tag]);
    await this.pool.query('DELETE FROM tag_history WHERE host = $1 AND name = $2 AND tag = $3', [host, name, tag]);
    this.tags.delete(`${host}/${name}:${tag}`);
    await this.changed();
    return (rowCount ?? 0) > 0;
  }

  async listTags(host: string, name: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ tag: string }>('SELECT tag FROM tags WHERE host = $1 AND name = $2', [host, name]);
    return rows.map((r) => r.tag).sort();
  }

  async linkManifest(host: string, name: string, m: LinkableManifest): Promise<void> {
    await this.pool.query(`INSERT INTO manifest_links (host, name, digest, media_type) VALUES ($1, $2, $3, $4)
      ON CONFLICT DO NOTHING`, [host, name, m.digest, m.mediaType]);
    const subject = subjectOf(m.body);
    if (subject) {
      await this.pool.query(`INSERT INTO referrers (host, name, subject, digest, descriptor) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT DO NOTHING`, [host, name, subject, m.digest, JSON.stringify(referrerDescriptor(m))]);
    }
    await this.changed();
  }

  async isManifestLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.exists('SELECT 1 FROM manifest_links WHERE host = $1 AND name = $2 AND digest = $3', [host, name, digest]);
  }

  async linkedManifests(host: string, name: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ digest: string }>('SELECT digest FROM manifest_links WHERE host = $1 AND name = $2', [host, name]);
    return rows.map((r) => r.digest);
  }

  async linkBlob(host: string, name: string, digest: string): Promise<void> {
    await this.pool.query('INSERT INTO blob_links (host, name, digest) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [host, name, digest]);
  }

  async linkedBlobs(host: string, name: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ digest: string }>('SELECT digest FROM blob_links WHERE host = $1 AND name = $2', [host, name]);
    return rows.map((r) => r.digest);
  }

  async unlinkManifest(host: string, name: string, m: LinkableManifest): Promise<void> {
    await this.pool.query('DELETE FROM referrers WHERE host = $1 AND name = $2 AND digest = $3', [host, name, m.digest]);
    await this.pool.query('DELETE FROM manifest_links WHERE host = $1 AND name = $2 AND digest = $3', [host, name, m.digest]);
    await this.changed();
  }

  async unlinkBlob(host: string, name: string, digest: string): Promise<void> {
    await this.pool.query('DELETE FROM blob_links WHERE host = $1 AND name = $2 AND digest = $3', [host, name, digest]);
  }

  isBlobLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.exists('SELECT 1 FROM blob_links WHERE host = $1 AND name = $2 AND digest = $3', [host, name, digest]);
  }

  async referrers(host: string, name: string, subject: string): Promise<Descriptor[]> {
    const { rows } = await this.pool.query<{ descriptor: Descriptor }>(
      'SELECT descriptor FROM referrers WHERE host = $1 AND name = $2 AND subject = $3 ORDER BY digest', [host, name, subject]);
    return rows.map((r) => r.descriptor);
  }

  async repositories(opts: { blobLinks?: boolean } = {}): Promise<RepositoryName[]> {
    const blobs = opts.blobLinks ? ' UNION SELECT host, name FROM blob_links' : '';
    const { rows } = await this.pool.query<RepositoryName>(
      `SELECT host, name FROM tags UNION SELECT host, name FROM manifest_links${blobs} ORDER BY host, name`);
    return rows.map((r) => ({ host: r.host, name: r.name }));
  }

  async putManifestType(digest: string, t: ManifestType): Promise<void> {
    await this.pool.query(`INSERT INTO manifests (digest, media_type, size_bytes) VALUES ($1, $2, $3)
      ON CONFLICT (digest) DO UPDATE SET media_type = EXCLUDED.media_type, size_bytes = EXCLUDED.size_bytes`, [digest, t.mediaType, t.sizeBytes]);
  }

  async manifestType(digest: string): Promise<ManifestType | undefined> {
    const { rows } = await this.pool.query<{ media_type: string; size_bytes: string }>('SELECT media_type, size_bytes FROM manifests WHERE digest = $1', [digest]);
    const r = rows[0];
    return r ? { mediaType: r.media_type, sizeBytes: Number(r.size_bytes) } : undefined;
  }

  async deleteManifestType(digest: string): Promise<void> {
    await this.pool.query('DELETE FROM manifests WHERE digest = $1', [digest]);
  }

  private async exists(sql: string, values: unknown[]): Promise<boolean> {
    return (await this.pool.query(sql, values)).rowCount !== 0;
  }

  async close(): Promise<void> {
    this.offMeta();
    await (this.leases as PgLeases).close();
    await this.commitLocks.close();
    await this.notes.close();
    await this.pool.end();
  }
}
