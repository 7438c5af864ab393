// The upstream pool a Config describes: one client per configured host, with its password, CA and timeouts read here.
import { readFileSync } from 'node:fs';
import { WILDCARD, type Config, type UpstreamConfig } from '../config/config.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Upstream } from './client.js';
import { UpstreamPool } from './pool.js';

/** Where sluice listens now (registry, admin, metrics), for the redirect check: read when a redirect comes. */
export type Listeners = () => ReadonlyArray<{ host: string; port: number }>;

/** One client per configured host; an upstream `'*'` (a mirror) makes one per host asked for, on first use. */
export function upstreamPool(config: Config, gate: (what: string) => void, metrics: Pick<Metrics, 'upstream'>, listeners?: Listeners): UpstreamPool {
  const named = new Map<string, ConstructorParameters<typeof Upstream>[0]>();
  let wildcard: ConstructorParameters<typeof Upstream>[0] | undefined;
  for (const u of config.upstreams.values()) {
    // Every host behind a '*' mirror shares its counters (labelled "*"), so the label set stays the configured one.
    const opts = { ...upstreamOptions(u, config), gate, listeners, metrics: metrics.upstream(u.host) };
    if (u.host === WILDCARD) wildcard = opts;
    else named.set(u.host, opts);
  }
  return new UpstreamPool(named, wildcard);
}

function upstreamOptions(u: UpstreamConfig, config: Config): ConstructorParameters<typeof Upstream>[0] {
  const password = u.auth?.passwordFile
    ? readFileSync(u.auth.passwordFile, 'utf8').trim()
    : u.auth?.passwordEnv
      ? process.env[u.auth.passwordEnv] ?? ''
      : undefined;
  return {
    host: u.host,
    url: u.url,
    dockerHub: u.host === 'docker.io' && !u.mirror,
    mirror: u.mirror,
    auth: u.auth && password !== undefined ? { username: u.auth.username, password } : undefined,
    tls: u.tls ? { ca: u.tls.ca ? readFileSync(u.tls.ca, 'utf8') : undefined, insecureSkipVerify: u.tls.insecureSkipVerify } : undefined,
    connectTimeoutMs: config.upstreamTimeouts.connectMs,
    idleTimeoutMs: config.upstreamTimeouts.idleMs,
    redirectHosts: u.redirectHosts,
    tokenRealms: u.tokenRealms,
  };
}
