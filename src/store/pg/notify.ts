// One LISTEN connection per replica: other replicas' NOTIFYs (allowlist, manual window, tags and links) reach
// their subscribers at once. A heartbeat NOTIFY to itself proves the feed still delivers; a connection that drops
// or goes silent is replaced, and every subscriber is then told, since changes may have been missed meanwhile.
import pg from 'pg';
import { boundedQuery } from './db.js';

type Handler = (payload: string) => void;

export const CHANNELS = {
  allowlist: 'sluice_allowlist', applied: 'sluice_applied', window: 'sluice_window', meta: 'sluice_meta', beat: 'sluice_beat', blobs: 'sluice_blobs',
} as const;

/** The application_name of a replica's LISTEN session: PostgreSQL's own list of the replicas alive now. */
export const LISTENER_PREFIX = 'sluice-listen-';

export interface FeedOptions {
  /** A replica that has not confirmed its feed for this long is unconfirmed (and fails closed). */
  freshnessMs: number;
  /** Names the database in messages. */
  where: string;
}

export class Notifications {
  private client: pg.Client | undefined;
  private readonly handlers = new Map<string, Set<Handler>>();
  private closed = false;
  private retryMs = 200;
  /** When the feed last proved it delivers (our own heartbeat came back), or the moment it was (re)opened. */
  private confirmedAt = 0;
  /** After a reconnect the replica stays unconfirmed this long, so writes other replicas held back land first. */
  private settledAt = 0;
  /** Changes heard but not yet applied here, by what: since when. */
  private readonly unapplied = new Map<string, number>();
  private beatTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** A heartbeat is on its way (the next waits for it: one query at a time on the feed's connection). */
  private beating = false;

  private constructor(private readonly config: pg.ClientConfig, readonly replica: string, private readonly opts: FeedOptions) {}

  /** False for a CLI command, which follows nothing. */
  get listening(): boolean {
    return !this.closed;
  }

  /** `listen: false` (a CLI command): subscribers are never called and no connection is held. */
  static async open(config: pg.ClientConfig, replica: string, opts: FeedOptions, listen = true): Promise<Notifications> {
    const n = new Notifications(config, replica, opts);
    if (listen) {
      await n.connect();
      n.beatTimer = setInterval(() => n.beat(), Math.max(50, Math.floor(opts.freshnessMs / 4)));
      n.beatTimer.unref();
    } else n.closed = true;
    return n;
  }

  on(channel: string, handler: Handler): () => void {
    const set = this.handlers.get(channel) ?? new Set<Handler>();
    this.handlers.set(channel, set);
    set.add(handler);
    return () => set.delete(handler);
  }

  /**
   * Why this replica cannot vouch for the shared state now (undefined: it can): its feed is down, has not
   * delivered its own heartbeat within the bound (half-open), reconnected less than a bound ago, or a change it
   * heard has not been applied within the bound.
   */
  unconfirmed(now = Date.now()): string | undefined {
    if (this.closed) return undefined;
    const bound = this.opts.freshnessMs;
    const db = `the database (PostgreSQL at ${this.opts.where})`;
    if (!this.client) return `replica ${this.replica} lost its connection to ${db} (its change feed is broken)`;
    if (now - this.confirmedAt > bound) {
      return `replica ${this.replica} has not heard from ${db} for ${Math.round((now - this.confirmedAt) / 1000)} s (its change feed is broken or silent)`;
    }
    if (now < this.settledAt) return `replica ${this.replica} reconnected to ${db} and is catching up`;
    for (const [what, since] of this.unapplied) {
      if (now - since > bound) return `replica ${this.replica} could not apply a change of the ${what} from ${db}`;
    }
    return undefined;
  }

  /** A change of `what` was heard: until applied(what), it counts against freshness. */
  heard(what: string): void {
    if (!this.unapplied.has(what)) this.unapplied.set(what, Date.now());
  }

  /** Everything heard of `what` up to `since` (ms) is applied. */
  applied(what: string, since: number): void {
    const at = this.unapplied.get(what);
    if (at !== undefined && at <= since) this.unapplied.delete(what);
  }

  private beat(): void {
    const client = this.client;
    if (!client || this.beating) return;
    this.beating = true;
    client.query(boundedQuery('SELECT pg_notify($1, $2)', [CHANNELS.beat, this.replica], this.opts.freshnessMs))
      .catch(() => this.drop(client))
      .finally(() => {
        this.beating = false;
      });
  }

  /** A feed that cannot send its heartbeat is replaced (a half-open connection would never say it is gone). */
  private drop(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    client.connection.stream.destroy();
    if (!this.closed) this.reconnectLater();
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ ...this.config, keepAlive: true, application_name: `${LISTENER_PREFIX}${this.replica}` });
    client.on('notification', (m) => {
      if (m.channel === CHANNELS.beat) {
        if (m.payload === this.replica && this.client === client) this.confirmedAt = Date.now();
        return;
      }
      for (const h of this.handlers.get(m.channel) ?? []) h(m.payload ?? '');
    });
    client.on('error', () => undefined); // 'end' follows and reconnects
    client.on('end', () => {
      if (this.client === client) this.client = undefined;
      else return;
      if (!this.closed) this.reconnectLater();
    });
    try {
      await client.connect();
      for (const channel of Object.values(CHANNELS)) await client.query(`LISTEN ${channel}`);
    } catch (e) {
      client.connection.stream.destroy();
      throw e;
    }
    if (this.closed) {
      client.connection.stream.destroy();
      return;
    }
    this.client = client;
    this.confirmedAt = Date.now();
    this.retryMs = 200;
  }

  private reconnectLater(): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.closed) return;
      this.connect().then(
        () => {
          // Whatever was sent while we were away is lost: every subscriber re-reads, and the replica waits one
          // bound before vouching again, so a close another replica could not record meanwhile is written first.
          this.settledAt = Date.now() + this.opts.freshnessMs;
          for (const set of this.handlers.values()) for (const h of set) h('');
        },
        () => this.reconnectLater(),
      );
    }, this.retryMs);
    timer.unref();
    this.reconnectTimer = timer;
    this.retryMs = Math.min(this.retryMs * 2, Math.max(200, Math.floor(this.opts.freshnessMs / 2)));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.beatTimer) clearInterval(this.beatTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    // A half-open session would hold end() forever: bounded, then cut.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      client.end().catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          client.connection.stream.destroy();
          resolve();
        }, this.opts.freshnessMs);
      }),
    ]);
    clearTimeout(timer);
  }
}
