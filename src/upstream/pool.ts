// Which upstream client answers for a registry host: the one configured for it, or — when an upstream `'*'` is
// another mirror — one client per host made on first use, asking that mirror with `?ns=<host>`.
import { Upstream, type UpstreamOptions } from './client.js';

/** What the mirror needs of the upstreams: a client per host (undefined: not a configured host) and all made so far. */
export interface UpstreamLookup {
  get(host: string): Upstream | undefined;
  values(): IterableIterator<Upstream>;
}

export class UpstreamPool implements UpstreamLookup {
  private readonly clients = new Map<string, Upstream>();

  /**
   * `configured`: the options of each named host; `wildcard`: the options of the `'*'` mirror (its `host` is replaced
   * by the asked host). Every client is made with the same window gate, passed in the options.
   */
  constructor(
    private readonly configured: ReadonlyMap<string, UpstreamOptions>,
    private readonly wildcard?: UpstreamOptions,
  ) {
    for (const [host, opts] of configured) this.clients.set(host, new Upstream(opts));
  }

  /** Whether requests for `host` may be served at all (a configured host, or any host behind a `'*'` mirror). */
  has(host: string): boolean {
    return this.clients.has(host) || this.wildcard !== undefined;
  }

  get(host: string): Upstream | undefined {
    const known = this.clients.get(host);
    if (known || !this.wildcard) return known;
    const made = new Upstream({ ...this.wildcard, host, mirror: true, dockerHub: false });
    this.clients.set(host, made);
    return made;
  }

  values(): IterableIterator<Upstream> {
    return this.clients.values();
  }
}
