// The HTTP half of an upstream, on undici: one dispatcher for the upstream's own origin (its TLS settings)
// and one for everywhere else, redirects followed by hand, the window gate before every request, bounded reads.
import { AsyncLocalStorage } from 'node:async_hooks';
import { rootCertificates } from 'node:tls';
import { PassThrough, type Readable } from 'node:stream';
import type { Agent, Dispatcher } from 'undici';
import { transportError, upstreamFailed } from './errors.js';
import { NO_UPSTREAM_METRICS, type UpstreamMetrics } from '../metrics/ports.js';
import { guardedLookup, hostNamed, ownListenerDenial, redirectDenial, redirectRefusal } from './redirects.js';

export type Headers = Record<string, string>;
export type Response = Dispatcher.ResponseData;

export interface TransportOptions {
  host: string;
  base: URL;
  /** Sent as `?ns=` on every registry request: the upstream is a mirror serving many hosts (containerd's form). */
  ns?: string;
  tls?: { ca?: string; insecureSkipVerify?: boolean };
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  gate?: (what: string) => void;
  /**
   * Hosts a redirect may lead to (`host`, `host:port` or `*.domain`); undefined: any public one. The upstream's own
   * host is always allowed; loopback, link-local and sluice's own listeners only when named here (a listener by its
   * exact `host:port`). A redirect elsewhere is refused before anything is dialled.
   */
  redirectHosts?: readonly string[];
  /** Where sluice itself listens now (registry, admin, metrics): never a redirect target unless named. */
  listeners?: () => ReadonlyArray<{ host: string; port: number }>;
  /** Host names of the configured token realms (tokenRealms): dialled even when they resolve to loopback. */
  tokenRealmHosts?: readonly string[];
  metrics?: UpstreamMetrics;
}

/**
 * How long the requests made inside `run` wait for response headers: a sync waits minutes for an upstream that
 * builds on demand (the Talos Image Factory), where a node's request gives up after the idle timeout.
 */
const headersWait = new AsyncLocalStorage<number>();
export function withHeadersTimeout<T>(timeoutMs: number, run: () => Promise<T>): Promise<T> {
  return headersWait.run(timeoutMs, run);
}

interface Agents {
  /** The upstream's own origin, with its TLS settings. */
  own: Agent;
  /** Everywhere else: redirect targets and token realms. */
  foreign: Agent;
}

async function openAgents(opts: TransportOptions): Promise<Agents> {
  const { Agent, buildConnector } = await import('undici');
  const idleMs = opts.idleTimeoutMs ?? 30_000;
  const connectMs = opts.connectTimeoutMs ?? 10_000;
  const timeouts = { headersTimeout: idleMs, bodyTimeout: idleMs };
  const ca = opts.tls?.ca ? [...rootCertificates, opts.tls.ca] : undefined;
  const own = new Agent({
    ...timeouts,
    connect: { timeout: connectMs, ca, rejectUnauthorized: opts.tls?.insecureSkipVerify !== true },
  });
  // Redirect targets (blob storage) and configured token realms get default TLS verification, and a name that
  // resolves to a loopback or link-local address is not dialled unless the operator named it.
  const named = (hostname: string): boolean =>
    hostname === opts.base.hostname || hostNamed(opts.redirectHosts ?? [], hostname) || hostNamed(opts.tokenRealmHosts ?? [], hostname);
  const connect = buildConnector({ timeout: connectMs, lookup: guardedLookup(named, opts.host) });
  const foreign = new Agent({
    ...timeouts,
    // Where the connection really landed is checked too: a name may resolve to this machine, onto a listener of sluice's.
    connect: (o, done) => connect(o, (...args) => {
      if (args[0] !== null) return done(args[0], null);
      const socket = args[1];
      const denied = ownListenerDenial({ address: socket.remoteAddress, port: socket.remotePort }, { host: `${o.hostname}:${o.port || (o.protocol === 'https:' ? 443 : 80)}`, upstream: opts.host }, opts.listeners?.() ?? [], opts.redirectHosts);
      if (!denied) return done(null, socket);
      socket.destroy();
      done(denied, null);
    }),
  });
  return { own, foreign };
}

const MAX_REDIRECTS = 5;
const JSON_LIMIT_BYTES = 16 * 1024 * 1024;
const REDIRECTS = [301, 302, 303, 307, 308];

export class Transport {
  /** Every HTTP request made, redirect hops and token requests included. */
  requestCount = 0;
  /** Made with the first request: undici is loaded then, not at start (a mirror outside its window never needs it). */
  private agents: Promise<Agents> | undefined;
  private closed = false;
  /** Where each response really came from after redirects, for error messages about its body. */
  private readonly finalUrls = new WeakMap<Response, URL>();
  /** Responses that came from a redirect target, not from the URL asked. */
  private readonly redirectedResponses = new WeakSet<Response>();
  /** Aborted (and replaced) by abortInFlight(): every request but a blob download listens to it. */
  private closing = new AbortController();
  private readonly metrics: UpstreamMetrics;

  constructor(private readonly opts: TransportOptions) {
    this.metrics = opts.metrics ?? NO_UPSTREAM_METRICS;
  }

  urlFor(path: string): URL {
    const prefix = this.opts.base.pathname.replace(/\/+$/, '');
    const url = new URL(`${this.opts.base.origin}${prefix}/v2${path}`);
    if (this.opts.ns !== undefined) url.searchParams.set('ns', this.opts.ns);
    return url;
  }

  /** The caller's signal joined with the window-close one. */
  abortable(signal?: AbortSignal): AbortSignal {
    return signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal;
  }

  /** The window closed: requests in flight are abandoned (blob downloads already sent may finish). */
  abortInFlight(reason: Error): void {
    const old = this.closing;
    this.closing = new AbortController();
    old.abort(reason);
  }

  /** Drops every connection at once: a request still in flight is abandoned, never waited for. */
  async close(): Promise<void> {
    this.closed = true;
    const agents = await this.agents;
    if (agents) await Promise.all([agents.own.destroy(), agents.foreign.destroy()]);
  }

  private refuseIfClosed(what: string): void {
    if (this.closed) throw upstreamFailed(this.opts.host, `${what}: sluice is shutting down`);
  }

  /** One logical request: follows up to 5 redirects by hand, dropping Authorization once the origin changes. */
  async send(method: 'GET' | 'HEAD', start: URL, headers: Headers, signal: AbortSignal | undefined, what: string): Promise<Response> {
    let url = start;
    let h: Headers = { ...headers, 'user-agent': 'sluice' };
    for (let hop = 0; ; hop++) {
      const res = await this.once(method, url, h, signal, what);
      const location = header(res, 'location');
      if (!REDIRECTS.includes(res.statusCode) || !location) {
        this.finalUrls.set(res, url);
        if (hop > 0) this.redirectedResponses.add(res);
        return res;
      }
      res.body.resume();
      if (hop === MAX_REDIRECTS) throw upstreamFailed(this.opts.host, `${what}: more than ${MAX_REDIRECTS} redirects`);
      const next = new URL(location, url);
      const refused = redirectRefusal(url, next);
      if (refused) throw upstreamFailed(this.opts.host, `${what}: ${refused}`);
      const denied = redirectDenial(next, { host: this.opts.host, base: this.opts.base, redirectHosts: this.opts.redirectHosts, listeners: this.opts.listeners?.() ?? [] }, what);
      if (denied) throw denied;
      if (next.origin !== url.origin) {
        // Credentials are for the registry alone (RFC 9110 §15.4 leaves this to the client; every registry client drops it).
        h = { ...h };
        delete h.authorization;
      }
      url = next;
    }
  }

  /** The host a response came from when a redirect led there; undefined when it is the one asked. */
  redirectTarget(res: Response): string | undefined {
    return this.redirectedResponses.has(res) ? this.finalUrl(res).host : undefined;
  }

  private async once(method: 'GET' | 'HEAD', url: URL, headers: Headers, signal: AbortSignal | undefined, what: string): Promise<Response> {
    this.refuseIfClosed(what); // no agents made after close: nothing would destroy them
    // A failed load (EMFILE in a storm, say) is not remembered: the next request tries again.
    const agents = await (this.agents ??= openAgents(this.opts).catch((e: unknown) => {
      this.agents = undefined;
      throw e;
    }));
    // At the moment of sending, not when the caller decided to (nor before undici was loaded): a window may have closed in between.
    this.opts.gate?.(what);
    this.refuseIfClosed(what);
    this.requestCount++;
    this.metrics.request();
    const agent = url.origin === this.opts.base.origin ? agents.own : agents.foreign;
    try {
      const headersTimeout = headersWait.getStore();
      return await agent.request({ origin: url.origin, path: `${url.pathname}${url.search}`, method, headers, signal, ...(headersTimeout ? { headersTimeout } : {}) });
    } catch (e) {
      this.metrics.error('transport');
      throw transportError(this.opts.host, e, what, url, signal);
    }
  }

  /** The body as a stream whose errors are RegistryErrors; a consumer that stops reading releases the connection. */
  streamBody(res: Response, what: string): Readable {
    const out = new PassThrough();
    const body = res.body;
    const { metrics } = this;
    body.on('data', (chunk: Buffer) => metrics.received(chunk.length));
    body.on('error', (e) => {
      metrics.error('transport');
      out.destroy(transportError(this.opts.host, e, what, this.finalUrl(res)) as Error);
    });
    out.on('close', () => body.destroy());
    body.pipe(out);
    return out;
  }

  /** The whole body, or null (and the connection dropped) once it passes `limitBytes`. */
  async readLimited(res: Response, limitBytes: number, what: string): Promise<Buffer | null> {
    const declared = lengthOf(res);
    if (declared !== undefined && declared > limitBytes) {
      res.body.destroy();
      return null;
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of res.body) {
        total += (chunk as Buffer).length;
        if (total > limitBytes) {
          res.body.destroy();
          return null;
        }
        chunks.push(chunk as Buffer);
      }
    } catch (e) {
      this.metrics.error('transport');
      throw transportError(this.opts.host, e, what, this.finalUrl(res));
    } finally {
      this.metrics.received(total);
    }
    return Buffer.concat(chunks);
  }

  async readJson(res: Response, what: string): Promise<unknown> {
    const body = await this.readLimited(res, JSON_LIMIT_BYTES, what);
    try {
      if (!body) throw new Error('too large');
      return JSON.parse(body.toString('utf8'));
    } catch {
      throw upstreamFailed(this.opts.host, `${what}: the answer is not JSON`);
    }
  }

  private finalUrl(res: Response): URL {
    return this.finalUrls.get(res) ?? this.opts.base;
  }
}

export function headerAll(res: Response, name: string): string[] {
  const v = res.headers[name];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

export function header(res: Response, name: string): string | undefined {
  return headerAll(res, name)[0];
}

export function lengthOf(res: Response): number | undefined {
  const v = header(res, 'content-length');
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}
