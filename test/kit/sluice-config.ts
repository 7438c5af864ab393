// The sluice config documents tests and the bench write: loopback listeners, a default-deny allowlist and
// upstreams that point nowhere unless a test names real ones.
import { stringify as toYaml } from 'yaml';

export interface UpstreamSpec {
  url: string;
  /** The url is another mirror, asked with ?ns=<host>. */
  mirror?: boolean;
  auth?: { username: string; passwordFile?: string; passwordEnv?: string };
  tls?: { ca?: string; insecureSkipVerify?: boolean };
  redirectHosts?: string[];
  tokenRealms?: string[];
}

/**
 * The registry hosts every test config knows, each pointing at a dead loopback port (the discard
 * port, closed on test machines), so a test that reaches an upstream by mistake fails fast on the box.
 */
export const DEAD_UPSTREAMS: Readonly<Record<string, UpstreamSpec>> = Object.freeze({
  'docker.io': { url: 'http://127.0.0.1:9' },
  'ghcr.io': { url: 'http://127.0.0.1:9' },
  'registry.k8s.io': { url: 'http://127.0.0.1:9' },
});

export interface SluiceConfigOptions {
  /** Seed allowlist rules (config `allowlist`). Default none (default-deny). */
  allowlist?: string[];
  /** Config `windows`: 'always', 'never' (default) or a list of windows. */
  windows?: unknown;
  /** Merged over DEAD_UPSTREAMS; give `extra.upstreams` to replace the whole table instead. */
  upstreams?: Record<string, UpstreamSpec>;
  /** Any other config keys, applied last (they win over everything above). */
  extra?: Record<string, unknown>;
}

/** The config document (before validation) the helpers use: loopback listeners on port 0. */
export function sluiceConfigDoc(storage: string, opts: SluiceConfigOptions = {}): Record<string, unknown> {
  return {
    listen: '127.0.0.1:0',
    storage,
    defaultUpstream: 'docker.io',
    upstreams: { ...DEAD_UPSTREAMS, ...(opts.upstreams ?? {}) },
    windows: opts.windows ?? 'never',
    allowlist: opts.allowlist ?? [],
    admin: { listen: '127.0.0.1:0' },
    ...(opts.extra ?? {}),
  };
}

/** The same document as YAML text, for startSluiceProcess or a config file handed to the CLI. */
export function sluiceConfigYaml(storage: string, opts: SluiceConfigOptions = {}): string {
  return toYaml(sluiceConfigDoc(storage, opts));
}
