// Where an upstream's redirects may lead: http(s) only and never down from https, the operator's redirectHosts,
// and never loopback, link-local or sluice's own listeners unless named — checked on the Location and on DNS answers.
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { networkInterfaces } from 'node:os';
import { RegistryError } from '../oci/errors.js';

const OWN_LISTENER = 'a listener of this sluice';

/**
 * Why a redirect hop may not be followed, or undefined: only http(s), and never from https to plain http (a tag's
 * manifest cannot be checked against a digest, so it must not leave TLS).
 */
export function redirectRefusal(from: URL, to: URL): string | undefined {
  if (to.protocol !== 'https:' && to.protocol !== 'http:') return `redirect to ${to.protocol} refused`;
  if (from.protocol === 'https:' && to.protocol === 'http:') return `redirect from https to plain http (${to.host}) refused`;
  return undefined;
}

export interface RedirectRules {
  /** The configured host key, for messages. */
  host: string;
  base: URL;
  redirectHosts: readonly string[] | undefined;
  listeners: ReadonlyArray<{ host: string; port: number }>;
}

/**
 * The 403 for a redirect that may not be followed, or undefined. The upstream's own host is always allowed; a
 * pinned `redirectHosts` must name the target; an internal target must be named even when nothing is pinned
 * (one of sluice's listeners by its exact host:port).
 */
export function redirectDenial(next: URL, rules: RedirectRules, what: string): RegistryError | undefined {
  if (next.host === rules.base.host) return undefined;
  const allowed = rules.redirectHosts;
  const detail = { upstream: rules.host, redirectHost: next.host };
  if (allowed !== undefined && !redirectAllowed(allowed, next)) {
    return new RegistryError(
      'DENIED',
      `upstream ${rules.host} redirected ${what} to ${next.host}, which is not in upstreams.${rules.host}.redirectHosts (${allowed.join(', ') || 'empty'}); nothing was fetched from it`,
      detail,
    );
  }
  const internal = internalTarget(next, rules.listeners);
  if (!internal || (allowed !== undefined && (internal !== OWN_LISTENER || allowed.includes(next.host)))) return undefined;
  return new RegistryError(
    'DENIED',
    `upstream ${rules.host} redirected ${what} to ${next.host}, ${internal}: refused unless upstreams.${rules.host}.redirectHosts names it${internal === OWN_LISTENER ? ' (as host:port)' : ''}; nothing was fetched from it`,
    detail,
  );
}

/** `host` or `host:port` exactly, or `*.domain` for any host under it (not the domain itself). */
export function redirectAllowed(patterns: readonly string[], url: URL): boolean {
  return patterns.some((p) => (p.startsWith('*.') ? url.hostname.endsWith(p.slice(1)) : p.includes(':') ? url.host === p : url.hostname === p));
}

/**
 * Why a redirect target is internal, or undefined: one of sluice's listeners (its port, on a loopback or local
 * interface address, or the listener's own), a loopback address (127/8, ::1, localhost, 0.0.0.0, ::) or a
 * link-local one (169.254/16, fe80::/10, where cloud metadata services answer). Judged on the URL's literal host.
 */
export function internalTarget(url: URL, listeners: ReadonlyArray<{ host: string; port: number }>): string | undefined {
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  const loopback = isLoopback(host);
  const local = loopback || localAddresses().has(host);
  if (listeners.some((l) => l.port === port && (local || l.host === host))) return OWN_LISTENER;
  if (loopback) return 'a loopback address';
  if (isLinkLocal(host)) return 'a link-local address';
  return undefined;
}

/**
 * The 403 for a connection a redirect or token request made to one of sluice's own listeners (judged on the
 * address it reached, so a name that resolves to this machine is caught too), unless `redirectHosts` names the
 * target as its exact `host:port`; undefined otherwise.
 */
export function ownListenerDenial(reached: { address?: string; port?: number }, target: { host: string; upstream: string }, listeners: ReadonlyArray<{ host: string; port: number }>, redirectHosts: readonly string[] | undefined): RegistryError | undefined {
  const address = (reached.address ?? '').toLowerCase();
  if (address === '' || reached.port === undefined) return undefined;
  const local = isLoopback(address) || localAddresses().has(address) || localAddresses().has(mappedV4(address));
  if (!listeners.some((l) => l.port === reached.port && (local || l.host === address))) return undefined;
  if (redirectHosts?.includes(target.host)) return undefined;
  return new RegistryError(
    'DENIED',
    `upstream ${target.upstream} redirected to ${target.host}, which reaches ${address}:${reached.port}, ${OWN_LISTENER}: refused unless upstreams.${target.upstream}.redirectHosts names it (as host:port); nothing was fetched from it`,
    { upstream: target.upstream, redirectHost: target.host },
  );
}

/** An IPv4-mapped IPv6 address (`::ffff:7f00:1`, as URL writes `::ffff:127.0.0.1`) as its IPv4 address. */
function mappedV4(host: string): string {
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (!m) return host.startsWith('::ffff:') ? host.slice(7) : host;
  const [hi, lo] = [parseInt(m[1] ?? '0', 16), parseInt(m[2] ?? '0', 16)];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

function isLoopback(host: string): boolean {
  const v4 = mappedV4(host);
  if (isIP(v4) === 4) return v4.startsWith('127.') || v4 === '0.0.0.0';
  if (isIP(host) === 6) return host === '::1' || host === '::';
  return host === 'localhost' || host.endsWith('.localhost');
}

function isLinkLocal(host: string): boolean {
  const v4 = mappedV4(host);
  if (isIP(v4) === 4) return v4.startsWith('169.254.');
  return isIP(host) === 6 && /^fe[89ab]/.test(host);
}

/** This machine's interface addresses (a listener on 0.0.0.0 answers on each). */
function localAddresses(): Set<string> {
  return new Set(Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address.toLowerCase())));
}

/** Whether `patterns` (redirectHosts, or bare host names) name `hostname`, whatever the port. */
export function hostNamed(patterns: readonly string[], hostname: string): boolean {
  const h = hostname.toLowerCase();
  return patterns.some((p) => (p.startsWith('*.') ? h.endsWith(p.slice(1)) : p.replace(/:\d+$/, '') === h));
}

type Resolve = (hostname: string, options: LookupOptions & { all: true }, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void;

/**
 * A DNS lookup for connections to redirect targets and token realms: a name that resolves to a loopback or
 * link-local address fails to connect unless `named` says the operator configured it (a name in a Location can
 * point anywhere; the literal check above sees only addresses written out).
 */
export function guardedLookup(named: (hostname: string) => boolean, upstream: string, resolve: Resolve = dnsLookup): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '');
      const internal = named(hostname) ? undefined : addresses.find((a) => isLoopback(a.address) || isLinkLocal(a.address));
      if (internal) {
        const why = isLoopback(internal.address) ? 'a loopback address' : 'a link-local address';
        const e: NodeJS.ErrnoException = new Error(`${hostname} resolves to ${internal.address}, ${why}: refused unless upstreams.${upstream}.redirectHosts names it`);
        e.code = 'ERR_SLUICE_INTERNAL_ADDRESS';
        return callback(e, '');
      }
      const first = addresses[0];
      if (options.all) return callback(null, addresses);
      callback(null, first?.address ?? '', first?.family);
    });
  };
}
