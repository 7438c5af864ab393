// How a change to shared state reaches every replica and is confirmed: each replica applies a NOTIFY in turn
// (serialWatch) and acknowledges it; the editor waits, bounded, for every live replica and names any that did not.
import { RegistryError } from '../../oci/errors.js';
import type { DocumentWatch } from '../../policy/allowlist.js';
import type { PgDb } from './db.js';
import { CHANNELS, LISTENER_PREFIX, type Notifications } from './notify.js';

export type Acked = 'allowlist' | 'window';

/** Says this replica applies `what` as of `revision` (an editor waits for it). */
export async function acknowledge(db: PgDb, notes: Notifications, what: Acked, revision: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [CHANNELS.applied, `${notes.replica} ${what} ${revision}`]);
}

/** The other replicas alive now: their LISTEN sessions, as PostgreSQL lists them. */
export async function liveReplicas(query: (text: string, values: unknown[]) => Promise<{ rows: Array<{ name: string }> }>, self: string): Promise<string[]> {
  const { rows } = await query(
    'SELECT application_name AS name FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE $1', [`${LISTENER_PREFIX}%`]);
  return rows.map((r) => r.name.slice(LISTENER_PREFIX.length)).filter((id) => id !== self);
}

/** Acknowledgements of `what`, collected from the moment of subscribing (before the change is sent). */
export class Acks {
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
export function serialWatch(notes: Notifications, channel: string, what: string, onChange: () => Promise<void>): DocumentWatch {
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
