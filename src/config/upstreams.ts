// The `upstreams` section of the configuration: registry host → url, mirror, auth, tls, redirect hosts, token realms.
import { canonicalHost, isValidHost } from '../oci/reference.js';
import { bool, isObject, str } from './values.js';

export interface UpstreamConfig {
  host: string;
  url: string;
  /** The url is another mirror (e.g. a sluice on the connected side): asked with `?ns=<host>` for every host. */
  mirror: boolean;
  auth?: { username: string; passwordFile?: string; passwordEnv?: string };
  tls?: { ca?: string; insecureSkipVerify: boolean };
  /** Hosts redirects may lead to (exact `host`, `host:port` or `*.domain`); absent: any public host. */
  redirectHosts?: string[];
  /** Token realm origins (scheme://host[:port]) allowed besides the upstream's own. */
  tokenRealms?: string[];
}

/** The upstreams key that stands for every registry host (only as `mirror: true`). */
export const WILDCARD = '*';

export function parseUpstreams(v: unknown, p: string[], path: (s: string) => string): Map<string, UpstreamConfig> {
  const out = new Map<string, UpstreamConfig>();
  if (!isObject(v)) {
    p.push('upstreams: must be a mapping of registry host to { url }');
    return out;
  }
  for (const [rawHost, spec] of Object.entries(v)) {
    const at = `upstreams.${rawHost}`;
    const host = rawHost === WILDCARD ? WILDCARD : canonicalHost(rawHost);
    if (host !== WILDCARD && !isValidHost(host)) p.push(`${at}: not a valid registry host name (or '*' for every host, through a mirror)`);
    if (!isObject(spec)) {
      p.push(`${at}: must be a mapping with at least url`);
      continue;
    }
    const u = parseUpstream(host, spec, at, p, path);
    if (out.has(host)) p.push(`${at}: duplicate of ${host}`);
    out.set(host, u);
  }
  return out;
}

function parseUpstream(host: string, spec: Record<string, unknown>, at: string, p: string[], path: (s: string) => string): UpstreamConfig {
  for (const k of Object.keys(spec)) if (!['url', 'auth', 'tls', 'mirror', 'redirectHosts', 'tokenRealms'].includes(k)) p.push(`${at}.${k}: unknown key`);
  const url = str(spec.url, `${at}.url`, p);
  if (url && !/^https?:\/\/[^/]+/.test(url)) p.push(`${at}.url: must be an http:// or https:// URL`);
  const mirror = bool(spec.mirror ?? false, `${at}.mirror`, p);
  if (host === WILDCARD && !mirror) p.push(`${at}: an upstream for every host must be another mirror: add mirror: true`);
  const u: UpstreamConfig = { host, url: url.replace(/\/+$/, ''), mirror };
  if (spec.auth !== undefined) {
    if (!isObject(spec.auth)) p.push(`${at}.auth: must be a mapping`);
    else u.auth = parseUpstreamAuth(spec.auth, at, p, path);
  }
  if (spec.tls !== undefined) {
    if (!isObject(spec.tls)) p.push(`${at}.tls: must be a mapping`);
    else {
      u.tls = { insecureSkipVerify: bool(spec.tls.insecureSkipVerify ?? false, `${at}.tls.insecureSkipVerify`, p) };
      if (spec.tls.ca !== undefined) u.tls.ca = path(str(spec.tls.ca, `${at}.tls.ca`, p));
    }
  }
  if (spec.redirectHosts !== undefined) u.redirectHosts = parseRedirectHosts(spec.redirectHosts, `${at}.redirectHosts`, p);
  if (spec.tokenRealms !== undefined) u.tokenRealms = parseTokenRealms(spec.tokenRealms, `${at}.tokenRealms`, p);
  return u;
}

function parseUpstreamAuth(a: Record<string, unknown>, at: string, p: string[], path: (s: string) => string): NonNullable<UpstreamConfig['auth']> {
  const auth: NonNullable<UpstreamConfig['auth']> = { username: str(a.username, `${at}.auth.username`, p) };
  if (a.passwordFile !== undefined) auth.passwordFile = path(str(a.passwordFile, `${at}.auth.passwordFile`, p));
  if (a.passwordEnv !== undefined) auth.passwordEnv = str(a.passwordEnv, `${at}.auth.passwordEnv`, p);
  if ((a.passwordFile === undefined) === (a.passwordEnv === undefined)) {
    p.push(`${at}.auth: give exactly one of passwordFile or passwordEnv`);
  }
  return auth;
}

/** A list of `host`, `host:port` or `*.domain`: where an upstream's redirects may lead. */
function parseRedirectHosts(v: unknown, at: string, p: string[]): string[] {
  if (!Array.isArray(v)) {
    p.push(`${at}: must be a list of hosts (e.g. [production.cloudflare.docker.com, "*.r2.cloudflarestorage.com"])`);
    return [];
  }
  return v.flatMap((h, i) => {
    const host = typeof h === 'string' ? h.toLowerCase() : '';
    if (!isValidHost(host.startsWith('*.') ? host.slice(2) : host)) {
      p.push(`${at}[${i}]: ${JSON.stringify(h)} is not a host name (host, host:port or *.domain)`);
      return [];
    }
    return [host];
  });
}

/** A list of origins (`https://auth.example`, `https://auth.example:8443`) the upstream's credentials may go to. */
function parseTokenRealms(v: unknown, at: string, p: string[]): string[] {
  if (!Array.isArray(v)) {
    p.push(`${at}: must be a list of origins (e.g. [https://auth.example])`);
    return [];
  }
  return v.flatMap((r, i) => {
    let url: URL | undefined;
    try {
      url = typeof r === 'string' ? new URL(r) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || (url.pathname !== '/' && url.pathname !== '') || url.search || url.username) {
      p.push(`${at}[${i}]: ${JSON.stringify(r)} is not an origin (scheme://host[:port], nothing after)`);
      return [];
    }
    return [url.origin];
  });
}
