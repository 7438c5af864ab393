// The state documents in PostgreSQL: the allowlist (one row, edited under a transaction-scoped advisory lock,
// every added and removed rule recorded in allowlist_history with who and when), the denied log (one row per
// refused reference, merged across replicas) and the manual window. Changes NOTIFY every replica.
import type pg from 'pg';
import type { AllowlistChange, AllowlistDocument, AllowlistStorage, DocumentWatch } from '../../policy/allowlist.js';
import type { DeniedDocument, DeniedEntry, DeniedStorage } from '../../policy/denied.js';
import type { ManualWindow } from '../../window/state.js';
import type { ManualWindowStorage } from '../../window/manual-store.js';
import { DocumentBusyError, type StateDocuments } from '../ports.js';
import { CHANNELS, LISTENER_PREFIX, type Notifications } from './notify.js';

const ALLOWLIST_LOCK = 0x5c1ce1;

export function pgStateDocuments(pool: pg.Pool, notes: Notifications, location: string): StateDocuments {
  return {
    allowlist: new PgAllowlist(pool, notes, `${location} (table allowlist)`),
    denied: new PgDenied(pool),
    window: new PgWindow(pool, notes, `${location} (table manual_window)`),
  };
}

class LockTimeout extends DocumentBusyError {}

/** How long an edit waits for every live replica to acknowledge it before answering anyway. */
const APPLY_WAIT_MS = 2000;

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

  constructor(private readonly pool: pg.Pool, private readonly notes: Notifications, readonly location: string) {
    // A process that enforces no rules (a tool holding the store) acknowledges at once, so no editor waits on it.
    notes.on(CHANNELS.allowlist, (revision) => {
      if (!this.watching) void this.acknowledge(revision).catch(() => undefined);
    });
  }

  private async acknowledge(revision: string): Promise<void> {
    await this.pool.query('SELECT pg_notify($1, $2)', [CHANNELS.applied, `${this.notes.replica} ${revision}`]);
  }

  locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => this.inTransaction(fn));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Runs `fn` in a transaction holding the allowlist's lock. An edit returns once every replica alive (each one's
   * LISTEN session, as PostgreSQL lists them) has applied it, so "the next request" anywhere sees it.
   */
  private async inTransaction<T>(fn: () => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let acks: Acks | undefined;
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
      if (this.wrote !== undefined && this.notes.listening) acks = new Acks(this.notes, this.wrote);
      await client.query('COMMIT');
      if (acks) await acks.fromAll(await this.liveReplicas(client), APPLY_WAIT_MS);
      return result;
    } catch (e) {
      this.tx = undefined;
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      acks?.close();
      client.release();
    }
  }

  private async liveReplicas(client: pg.PoolClient): Promise<string[]> {
    const { rows } = await client.query<{ name: string }>(
      'SELECT application_name AS name FROM pg_stat_activity WHERE application_name LIKE $1', [`${LISTENER_PREFIX}%`]);
    return rows.map((r) => r.name.slice(LISTENER_PREFIX.length)).filter((id) => id !== this.notes.replica);
  }

  async read(): Promise<unknown> {
    const { rows } = await (this.tx ?? this.pool).query<{ document: unknown; revision: string }>('SELECT document, revision FROM allowlist WHERE id = 1');
    this.lastRead = Number(rows[0]?.revision ?? 0);
    return rows[0]?.document;
  }

  /** Only inside locked(): the history is the difference to what the transaction read. */
  async write(doc: AllowlistDocument, change: AllowlistChange = {}): Promise<void> {
    const db = this.tx ?? this.pool;
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
    const w = serialWatch(this.notes, CHANNELS.allowlist, async () => {
      await onChange();
      await this.acknowledge(String(this.lastRead));
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

/** Acknowledgements of an allowlist revision, collected from the moment of subscribing. */
class Acks {
  private readonly seen = new Set<string>();
  private wake: (() => void) | undefined;
  private readonly off: () => void;

  constructor(notes: Notifications, revision: number) {
    this.off = notes.on(CHANNELS.applied, (payload) => {
      const [replica = '', rev = ''] = payload.split(' ');
      if (Number(rev) >= revision) this.seen.add(replica);
      this.wake?.();
    });
  }

  /** Resolves when every replica in `replicas` has acknowledged, or after `timeoutMs` (one that is stuck is not waited for). */
  async fromAll(replicas: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!replicas.every((r) => this.seen.has(r)) && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  close(): void {
    this.off();
  }
}

/** Runs `onChange` for each notification on `channel`, never two at once; notifications meanwhile fold into one more run. */
function serialWatch(notes: Notifications, channel: string, onChange: () => Promise<void>): DocumentWatch {
  let running = false;
  let again = false;
  let closed = false;
  const run = (): void => {
    if (closed) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    onChange().then(
      () => undefined,
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
 * empty document (a clear) empties the table. The table keeps the log's bound (the least recently seen go).
 */
export class PgDenied implements DeniedStorage {
  /** Counts as of this replica's last read or write, per reference. */
  private readonly written = new Map<string, number>();

  constructor(private readonly pool: pg.Pool) {}

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

export class PgWindow implements ManualWindowStorage {
  constructor(private readonly pool: pg.Pool, private readonly notes: Notifications, readonly location: string) {}

  async read(): Promise<ManualWindow | null> {
    const { rows } = await this.pool.query<{ manual: ManualWindow | null }>('SELECT manual FROM manual_window WHERE id = 1');
    return rows[0]?.manual ?? null;
  }

  async write(manual: ManualWindow | null): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query(`INSERT INTO manual_window (id, manual) VALUES (1, $1)
        ON CONFLICT (id) DO UPDATE SET manual = EXCLUDED.manual`, [JSON.stringify(manual)]);
      await client.query('SELECT pg_notify($1, $2)', [CHANNELS.window, 'changed']);
    } finally {
      client.release();
    }
  }

  /** Another replica (or the CLI) opened or closed the manual window. */
  watch(onChange: (manual: ManualWindow | null) => void): () => void {
    const w = serialWatch(this.notes, CHANNELS.window, async () => onChange(await this.read()));
    return () => w.close();
  }
}
