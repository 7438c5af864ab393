// One LISTEN connection per replica: other replicas' NOTIFYs (allowlist, manual window, tags and links) reach
// their subscribers at once. A dropped connection is re-opened; every subscriber is then told, since changes
// may have been missed meanwhile.
import pg from 'pg';

type Handler = (payload: string) => void;

export const CHANNELS = { allowlist: 'sluice_allowlist', applied: 'sluice_applied', window: 'sluice_window', meta: 'sluice_meta', blobs: 'sluice_blobs' } as const;

/** The application_name of a replica's LISTEN session: PostgreSQL's own list of the replicas alive now. */
export const LISTENER_PREFIX = 'sluice-listen-';

export class Notifications {
  private client: pg.Client | undefined;
  private readonly handlers = new Map<string, Set<Handler>>();
  private closed = false;
  private retryMs = 200;

  private constructor(private readonly config: pg.ClientConfig, readonly replica: string) {}

  /** False for a CLI command, which follows nothing. */
  get listening(): boolean {
    return !this.closed;
  }

  /** `listen: false` (a CLI command): subscribers are never called and no connection is held. */
  static async open(config: pg.ClientConfig, replica: string, listen = true): Promise<Notifications> {
    const n = new Notifications(config, replica);
    if (listen) await n.connect();
    else n.closed = true;
    return n;
  }

  on(channel: string, handler: Handler): () => void {
    const set = this.handlers.get(channel) ?? new Set<Handler>();
    this.handlers.set(channel, set);
    set.add(handler);
    return () => set.delete(handler);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ ...this.config, keepAlive: true, application_name: `${LISTENER_PREFIX}${this.replica}` });
    client.on('notification', (m) => {
      for (const h of this.handlers.get(m.channel) ?? []) h(m.payload ?? '');
    });
    client.on('error', () => undefined); // 'end' follows and reconnects
    client.on('end', () => {
      if (this.client === client) this.client = undefined;
      if (!this.closed) this.reconnectLater();
    });
    await client.connect();
    for (const channel of Object.values(CHANNELS)) await client.query(`LISTEN ${channel}`);
    this.client = client;
    this.retryMs = 200;
  }

  private reconnectLater(): void {
    const timer = setTimeout(() => {
      this.connect().then(
        // Whatever was sent while we were away is lost: every subscriber re-reads.
        () => { for (const set of this.handlers.values()) for (const h of set) h(''); },
        () => this.reconnectLater(),
      );
    }, this.retryMs);
    timer.unref();
    this.retryMs = Math.min(this.retryMs * 2, 5000);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.client?.end().catch(() => undefined);
  }
}
