// The state documents in PostgreSQL: the allowlist (one row, edited under a transaction-scoped advisory lock,
// every added and removed rule recorded in allowlist_history with who and when), the denied log (one row per
// refused reference, merged across replicas) and the manual window (window.ts). Changes NOTIFY every replica.
import type pg from 'pg';
import type { AllowlistChange, AllowlistDocument, AllowlistStorage, DocumentWatch } from '../../policy/allowlist.js';
import type { DeniedDocument, DeniedEntry, DeniedStorage } from '../../policy/denied.js';
import { DocumentBusyError, type StateDocuments } from '../ports.js';
import { Acks, acknowledge, liveReplicas, serialWatch } from './acks.js';
import { databaseError, type PgDb } from './db.js';
import { CHANNELS, type Notifications } from './notify.js';
import { PgWindow } from './window.js';

const ALLOWLIST_LOCK = 0x5c1ce1;

export function pgStateDocuments(pool: PgDb, notes: Notifications, location: string, ackWaitMs: number): StateDocuments {
  return {
    allowlist: new PgAllowlist(pool, notes, `${location} (table allowlist)`, ackWaitMs),
    denied: new PgDenied(pool),
    window: new PgWindow(pool, notes, `${location} (table manual_window)`, ackWaitMs),
  };
}

class LockTimeout extends DocumentBusyError {}

export class PgAllowlist implements AllowlistStorage {
  /** The transaction an edit runs in; edits in this process are serialised, so there is at most one. */
  private tx: pg.PoolClient | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** The revision last read here (what this replica enforces once the read is adopted). */
  private lastRead = 0;
  /** The revision the current transaction wrote, if it wrote. */
  private wrote: number | undefined;

  /** Set while an Allowlist enforces these rules here (the server); otherwise this replica has nothing to apply. */
  private watching = false;

  constructor(private readonly pool: PgDb, private readonly notes: Notifications, readonly location: string, private readonly ackWaitMs: number) {
    // A process that enforces no rules (a tool holding the store) acknowledges at once, so no editor waits on it.
    notes.on(CHANNELS.allowlist, (revision) => {
      if (!this.watching) void acknowledge(this.pool, this.notes, 'allowlist', revision).catch(() => undefined);
    });
  }

  locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => this.inTransaction(fn));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Runs `fn` in a transaction holding the allowlist's lock. An edit succeeds once every replica alive (each one's
   * LISTEN session, as PostgreSQL lists them) has applied it, so "the next request" anywhere sees it; otherwise it
   * fails naming the replicas that did not (by then they refuse to serve: see Notifications.unconfirmed).
   */
  private async inTransaction<T>(fn: () => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let acks: Acks | undefined;
    let committed = false;
    try {
      await client.query('BEGIN');
      await client.query("SET LOCAL lock_timeout = '10s'");
      await client.query('SELECT pg_advisory_xact_lock($1)', [ALLOWLIST_LOCK]).catch((e: unknown) => {
        throw (e as { code?: string }).code === '55P03' ? new LockTimeout('the allowlist is locked by another replica') : e;
      });
      this.tx = client;
      this.wrote = undefined;
      const result = await fn();
      this.tx = undefined;
      if (this.wrote !== undefined && this.notes.listening) acks = new Acks(this.notes, 'allowlist');
      const replicas = acks ? await liveReplicas((text, values) => client.query<{ name: string }>(text, values), this.notes.replica) : [];
      await client.query('COMMIT');
      committed = true;
      client.release();
      if (acks) await acks.fromAll(this.wrote ?? 0, replicas, this.ackWaitMs, `the allowlist change (revision ${String(this.wrote)})`);
      return result;
    } catch (e) {
      this.tx = undefined;
      if (!committed) {
        await client.query('ROLLBACK').catch(() => undefined);
        client.release(true);
      }
      throw databaseError(this.pool.where, e);
    } finally {
      acks?.close();
    }
  }

  async read(): Promise<unknown> {
    const { rows } = this.tx
      ? await this.tx.query<{ document: unknown; revision: string }>('SELECT document, revision FROM allowlist WHERE id = 1')
      : await this.pool.query<{ document: unknown; revision: string }>('SELECT document, revision FROM allowlist WHERE id = 1');
    this.lastRead = Number(rows[0]?.revision ?? 0);
    return rows[0]?.document;
  }

  /** Only inside locked(): the history is the difference to what the transaction read. */
  async write(doc: AllowlistDocument, change: AllowlistChange = {}): Promise<void> {
    const db = this.tx;
    if (!db) throw new Error('the allowlist is written only inside locked()');
    const before = (await this.read()) as AllowlistDocument | undefined;
    const had = new Set((before?.rules ?? []).map((r) => r.rule));
    const has = new Set(doc.rules.map((r) => r.rule));
    const { rows } = await db.query<{ revision: string }>(`INSERT INTO allowlist (id, document, revision) VALUES (1, $1, 1)
      ON CONFLICT (id) DO UPDATE SET document = EXCLUDED.document, revision = allowlist.revision + 1, updated_at = now()
      RETURNING revision`, [JSON.stringify(doc)]);
    this.wrote = Number(rows[0]?.revision ?? 0);
    this.lastRead = this.wrote;
    for (const r of doc.rules) {
      if (!had.has(r.rule)) await db.query('INSERT INTO allowlist_history (action, rule, by, note) VALUES ($1, $2, $3, $4)', ['add', r.rule, r.addedBy, r.note ?? null]);
    }
    for (const rule of had) {
      if (!has.has(rule)) await db.query('INSERT INTO allowlist_history (action, rule, by) VALUES ($1, $2, $3)', ['remove', rule, change.by ?? 'unknown']);
    }
    await db.query('SELECT pg_notify($1, $2)', [CHANNELS.allowlist, String(this.wrote)]); // delivered at commit
  }

  /** Every replica's edits arrive by NOTIFY at once; after applying one, this replica says so (the editor waits for it). */
  watch(onChange: () => Promise<void>): DocumentWatch {
    this.watching = true;
    const w = serialWatch(this.notes, CHANNELS.allowlist, 'allowlist', async () => {
      await onChange();
      await acknowledge(this.pool, this.notes, 'allowlist', String(this.lastRead));
    });
    return {
      settle: () => w.settle(),
      close: () => {
        this.watching = false;
        w.close();
      },
    };
  }

  isLockTimeout(err: unknown): err is Error {
    return err instanceof LockTimeout;
  }
}

/**
 * The denied log of every replica in one table. Each replica writes its whole in-memory log; what it adds to a
 * row is what it counted since its last write (so replicas' counts add up, none overwrites another's), and an
 * empty document (a clear) empties the table. The table keeps the log's bound (the least recently seen go).
 */
export class PgDenied implements DeniedStorage {
  /** Counts as of this replica's last read or write, per reference. */
  private readonly written = new Map<string, number>();

  constructor(private readonly pool: PgDb) {}

  async read(): Promise<unknown> {
    const { rows } = await this.pool.query<{ host: string; name: string; reference: string; count: string; first_seen: Date; last_seen: Date; client: string | null }>(
      'SELECT host, name, reference, count, first_seen, last_seen, client FROM denied ORDER BY last_seen');
    const entries: DeniedEntry[] = rows.map((r) => ({
      host: r.host, name: r.name, reference: r.reference, count: Number(r.count),
      firstSeen: r.first_seen.toISOString(), lastSeen: r.last_seen.toISOString(), ...(r.client === null ? {} : { client: r.client }),
    }));
    this.written.clear();
    for (const e of entries) this.written.set(keyOf(e), e.count);
    return { version: 1, entries };
  }

  async write(doc: DeniedDocument, maxEntries: number): Promise<void> {
    if (doc.entries.length === 0) {
      await this.pool.query('DELETE FROM denied');
      this.written.clear();
      return;
    }
    const fresh = doc.entries.filter((e) => e.count !== this.written.get(keyOf(e)));
    if (fresh.length === 0) return;
    await this.pool.query(`INSERT INTO denied (host, name, reference, count, first_seen, last_seen, client)
      SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(host text, name text, reference text, count bigint, first_seen timestamptz, last_seen timestamptz, client text)
      ON CONFLICT (host, name, reference) DO UPDATE SET count = denied.count + EXCLUDED.count,
        first_seen = LEAST(denied.first_seen, EXCLUDED.first_seen), last_seen = GREATEST(denied.last_seen, EXCLUDED.last_seen),
        client = CASE WHEN EXCLUDED.last_seen >= denied.last_seen THEN COALESCE(EXCLUDED.client, denied.client) ELSE denied.client END`,
    [JSON.stringify(fresh.map((e) => ({
      host: e.host, name: e.name, reference: e.reference, count: delta(e.count, this.written.get(keyOf(e))),
      first_seen: e.firstSeen, last_seen: e.lastSeen, client: e.client ?? null,
    })))]);
    for (const e of fresh) this.written.set(keyOf(e), e.count);
    // Only what the log holds now is remembered (an evicted reference seen again starts over from 1 anyway), so a
    // flood of distinct references costs no memory beyond the log's bound.
    const held = new Set(doc.entries.map(keyOf));
    for (const key of this.written.keys()) if (!held.has(key)) this.written.delete(key);
    // Every replica adds its own references: the table, not each replica's log, must stay within the bound.
    await this.pool.query(`DELETE FROM denied WHERE (host, name, reference) IN
      (SELECT host, name, reference FROM denied ORDER BY last_seen DESC, host, name, reference OFFSET $1)`, [maxEntries]);
  }

  /**
   * Rows are typed, so a table never holds an unreadable document: a failed read is the database failing, and
   * the log is not emptied for it (on fs a corrupt file is moved aside); opening fails instead.
   */
  async setAside(): Promise<string> {
    throw new Error('the denied log (table denied) cannot be read from PostgreSQL');
  }
}

/** What this replica counted since its last write; an entry evicted and seen again starts over from 1. */
const delta = (count: number, before: number | undefined): number => (before !== undefined && count >= before ? count - before : count);

const keyOf = (e: { host: string; name: string; reference: string }): string => `${e.host}/${e.name}\u0000${e.reference}`;
