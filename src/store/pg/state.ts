// The state documents in PostgreSQL: the allowlist (one row, edited under a transaction-scoped advisory lock,
// every added and removed rule recorded in allowlist_history with who and when), the denied log (one row per
// refused reference, merged across replicas) and the manual window. Changes NOTIFY every replica.
import type pg from 'pg';
import { RegistryError } from '../../oci/errors.js';
import type { AllowlistChange, AllowlistDocument, AllowlistStorage, DocumentWatch } from '../../policy/allowlist.js';
import type { DeniedDocument, DeniedEntry, DeniedStorage } from '../../policy/denied.js';
import type { ManualWindow } from '../../window/state.js';
import type { ManualWindowStorage } from '../../window/manual-store.js';
import type { StateDocuments } from '../ports.js';
import { databaseError, type PgDb } from './db.js';
import { CHANNELS, LISTENER_PREFIX, type Notifications } from './notify.js';

const ALLOWLIST_LOCK = 0x5c1ce1;

export function pgStateDocuments(pool: PgDb, notes: Notifications, location: string, ackWaitMs: number): StateDocuments {
  return {
    allowlist: new PgAllowlist(pool, notes, `${location} (table allowlist)`, ackWaitMs),
    denied: new PgDenied(pool),
    window: new PgWindow(pool, notes, `${location} (table manual_window)`, ackWaitMs),
  };
}

class LockTimeout extends Error {}

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

type Acked = 'allowlist' | 'window';

/** Says this replica applies `what` as of `revision` (an editor waits for it). */
async function acknowledge(db: PgDb, notes: Notifications, what: Acked, revision: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [CHANNELS.applied, `${notes.replica} ${what} ${revision}`]);
}

/** The other replicas alive now: their LISTEN sessions, as PostgreSQL lists them. */
async function liveReplicas(query: (text: string, values: unknown[]) => Promise<{ rows: Array<{ name: string }> }>, self: string): Promise<string[]> {
  const { rows } = await query(
    'SELECT application_name AS name FROM pg_stat_activity WHERE application_name LIKE $1', [`${LISTENER_PREFIX}%`]);
  return rows.map((r) => r.name.slice(LISTENER_PREFIX.length)).filter((id) => id !== self);
}

/** Acknowledgements of `what`, collected from the moment of subscribing (before the change is sent). */
class Acks {
  /** The newest revision each replica said it applies. */
  private readonly seen = new Map<string, number>();
  private wake: (() => void) | undefined;
  private readonly off: () => void;

  constructor(private readonly notes: Notifications, what: Acked) {
    this.off = notes.on(CHANNELS.applied, (payload) => {
      const [replica = '', kind = '', rev = ''] = payload.split(' ');
      if (kind === what) this.seen.set(replica, Math.max(this.seen.get(replica) ?? 0, Number(rev)));
      this.wake?.();
    });
  }

  /**
   * Resolves when every replica in `replicas` has applied `revision`; after `timeoutMs` fails naming those that
   * did not. The wait is one freshness bound, so a replica that did not hear the change has stopped vouching by then.
   */
  async fromAll(revision: number, replicas: string[], timeoutMs: number, change: string): Promise<void> {
    const done = (r: string): boolean => (this.seen.get(r) ?? -1) >= revision;
    const deadline = Date.now() + timeoutMs;
    while (!replicas.every(done) && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const silent = replicas.filter((r) => !done(r));
    if (silent.length === 0) return;
    throw new RegistryError('UNAVAILABLE',
      `${change} is recorded in the database, but replica ${silent.join(', ')} did not acknowledge it within ${Math.round(timeoutMs / 1000)} s: `
      + 'it cannot confirm the shared state and refuses to serve (503) until it catches up; check its link to the database',
      { unacknowledged: silent, by: this.notes.replica });
  }

  close(): void {
    this.off();
  }
}

/** Runs `onChange` for each notification on `channel`, never two at once; notifications meanwhile fold into one more run. */
function serialWatch(notes: Notifications, channel: string, what: string, onChange: () => Promise<void>): DocumentWatch {
  let running = false;
  let again = false;
  let closed = false;
  const run = (): void => {
    if (closed) return;
    notes.heard(what);
    if (running) {
      again = true;
      return;
    }
    running = true;
    const started = Date.now();
    onChange().then(
      () => notes.applied(what, started),
      () => {
        const t = setTimeout(run, 500);
        t.unref();
      },
    ).finally(() => {
      running = false;
      if (again) {
        again = false;
        run();
      }
    });
  };
  const off = notes.on(channel, run);
  return {
    settle: async () => undefined,
    close: () => {
      closed = true;
      off();
    },
  };
}

/**
 * The denied log of every replica in one table. Each replica writes its whole in-memory log; what it adds to a
 * row is what it counted since its last write (so replicas' counts add up, none overwrites another's), and an
 * empty document (a clear) empties the table.
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

  async write(doc: DeniedDocument): Promise<void> {
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

/**
 * The manual window. A close that cannot be written is kept and retried (and written before this replica reads
 * the window again), so a closed window never reopens from the old row when the database returns; a write
 * succeeds only once every live replica has applied it.
 */
export class PgWindow implements ManualWindowStorage {
  private unwrittenClose = false;
  private retry: NodeJS.Timeout | undefined;
  /** Set while a WindowState here follows the row (the server); otherwise there is nothing to apply. */
  private watching = false;

  constructor(private readonly pool: PgDb, private readonly notes: Notifications, readonly location: string, private readonly ackWaitMs: number) {
    // A process that follows no window (a tool holding the store) acknowledges at once, so no editor waits on it.
    notes.on(CHANNELS.window, (revision) => {
      if (!this.watching && revision !== '') void acknowledge(this.pool, this.notes, 'window', revision).catch(() => undefined);
    });
  }

  async read(): Promise<ManualWindow | null> {
    return (await this.readRevision()).manual;
  }

  private async readRevision(): Promise<{ manual: ManualWindow | null; revision: number }> {
    const { rows } = await this.pool.query<{ manual: ManualWindow | null; revision: string }>('SELECT manual, revision FROM manual_window WHERE id = 1');
    return { manual: rows[0]?.manual ?? null, revision: Number(rows[0]?.revision ?? 0) };
  }

  async write(manual: ManualWindow | null): Promise<void> {
    const acks = this.notes.listening ? new Acks(this.notes, 'window') : undefined;
    try {
      let revision: number;
      try {
        revision = await this.record(manual);
      } catch (e) {
        if (manual === null) this.keepClose();
        else this.unwrittenClose = false;
        throw e;
      }
      if (!acks) return;
      const replicas = await liveReplicas((text, values) => this.pool.query<{ name: string }>(text, values), this.notes.replica);
      await acks.fromAll(revision, replicas, this.ackWaitMs, `the manual window change (${manual ? `open until ${manual.until}` : 'closed'})`);
    } finally {
      acks?.close();
    }
  }

  private async record(manual: ManualWindow | null): Promise<number> {
    const client = await this.pool.connect();
    try {
      const { rows } = await client.query<{ revision: string }>(`INSERT INTO manual_window (id, manual, revision) VALUES (1, $1, 1)
        ON CONFLICT (id) DO UPDATE SET manual = EXCLUDED.manual, revision = manual_window.revision + 1 RETURNING revision`, [JSON.stringify(manual)]);
      const revision = Number(rows[0]?.revision ?? 0);
      await client.query('SELECT pg_notify($1, $2)', [CHANNELS.window, String(revision)]);
      client.release();
      this.unwrittenClose = false;
      return revision;
    } catch (e) {
      client.release(true);
      throw databaseError(this.pool.where, e);
    }
  }

  /** Retries the close until it is written (a newer change written meanwhile supersedes it). */
  private keepClose(): void {
    this.unwrittenClose = true;
    if (this.retry) return;
    this.retry = setInterval(() => {
      if (!this.unwrittenClose) return this.stopRetry();
      this.record(null).then(() => this.stopRetry(), () => undefined);
    }, Math.max(50, Math.min(1000, Math.floor(this.ackWaitMs / 4))));
    this.retry.unref();
  }

  private stopRetry(): void {
    if (this.retry) clearInterval(this.retry);
    this.retry = undefined;
  }

  /** Another replica (or the CLI) opened or closed the manual window; a close of ours not yet written goes first. */
  watch(onChange: (manual: ManualWindow | null) => void): () => void {
    this.watching = true;
    const w = serialWatch(this.notes, CHANNELS.window, 'manual window', async () => {
      if (this.unwrittenClose) await this.record(null);
      const { manual, revision } = await this.readRevision();
      onChange(manual);
      await acknowledge(this.pool, this.notes, 'window', String(revision));
    });
    return () => {
      this.watching = false;
      w.close();
      this.stopRetry();
    };
  }
}
