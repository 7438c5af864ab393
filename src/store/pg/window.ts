// The manual window in PostgreSQL (table manual_window, one row with a revision): written and acknowledged by
// every live replica, followed by NOTIFY, and a close that could not be written is kept and written first.
import type { ManualWindow } from '../../window/state.js';
import type { ManualWindowStorage } from '../../window/manual-store.js';
import { Acks, acknowledge, liveReplicas, serialWatch } from './acks.js';
import { databaseError, type PgDb } from './db.js';
import { CHANNELS, type Notifications } from './notify.js';

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
