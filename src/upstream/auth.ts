// Authentication against one upstream registry: WWW-Authenticate challenge parsing, the rule that a token
// realm's origin is the upstream's own or a configured one, per-scope challenges and tokens, coalesced token requests.
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';

export type Challenge = { scheme: 'bearer'; realm: URL; service?: string } | { scheme: 'basic' } | { scheme: 'none' };

export interface Credentials {
  username: string;
  password: string;
}

/** The Authorization value for a request, and whether it was just issued (a refusal of it is then final). */
export interface Authorization {
  value: string | undefined;
  fresh: boolean;
}

/**
 * Fetches the token document (parsed JSON) at `url` from the token realm, sending `authorization` when
 * given; the transport maps HTTP failures to RegistryErrors. Supplied by the Upstream, which owns the sockets.
 */
export type TokenRequest = (url: URL, authorization: string | undefined, what: string) => Promise<unknown>;

/** How many repositories' challenges are remembered (each is re-learnt with one unauthenticated request). */
const MAX_SCOPES = 10_000;

export class UpstreamAuth {
  /**
   * What the upstream asked for, per repository: a registry may answer each scope with its own realm. The host's
   * last answer (or the /v2/ probe's) stands in for a repository not yet asked. A challenge whose token request
   * failed is forgotten, so the next request asks the upstream again rather than repeating the failure.
   */
  private readonly scoped = new LRUCache<string, Challenge>({ maxSize: MAX_SCOPES, sizeCalculation: () => 1 });
  private hint: Challenge | undefined;
  private readonly tokens = new LRUCache<string, { token: string; expiresAtMs: number }>({ maxSize: MAX_SCOPES, sizeCalculation: () => 1 });
  private readonly pendingTokens = new Map<string, Promise<string>>();

  constructor(
    private readonly host: string,
    private readonly base: URL,
    private readonly creds: Credentials | undefined,
    private readonly requestToken: TokenRequest,
    /** Token realm origins allowed besides the upstream's own (`upstreams.<host>.tokenRealms`). */
    private readonly realms: readonly string[] = [],
  ) {}

  /** The challenge a request for `name` is sent with: its own, else the host's last one; undefined: not asked yet. */
  challengeFor(name: string): Challenge | undefined {
    return this.scoped.get(name) ?? this.hint;
  }

  /** Records the upstream's answer to an unauthenticated request for `name` (401 challenge values, or none); true if it changed. */
  learn(name: string | undefined, wwwAuthenticate: string[] | null): boolean {
    const next: Challenge = wwwAuthenticate === null ? { scheme: 'none' } : parseChallenge(wwwAuthenticate, this.base, this.host, this.realms);
    const before = name === undefined ? this.hint : this.challengeFor(name);
    if (name !== undefined) this.scoped.set(name, next);
    this.hint = next;
    return JSON.stringify(next) !== JSON.stringify(before);
  }

  async authorize(name: string, refresh: boolean): Promise<Authorization> {
    const c = this.challengeFor(name);
    if (!c || c.scheme === 'none') return { value: undefined, fresh: false };
    if (c.scheme === 'basic') {
      // Basic credentials never change, so a refusal of them is final: mark them fresh.
      return { value: this.creds ? basicAuthorization(this.creds) : undefined, fresh: true };
    }
    const scope = `repository:${name}:pull`;
    const key = `${c.realm.href} ${c.service ?? ''} ${scope}`;
    const cached = this.tokens.get(key);
    if (!refresh && cached && cached.expiresAtMs > Date.now()) return { value: `Bearer ${cached.token}`, fresh: false };
    let pending = this.pendingTokens.get(key);
    if (!pending) {
      // Concurrent pulls of one repository share a single token request.
      pending = this.fetchToken(c, scope, key).finally(() => this.pendingTokens.delete(key));
      this.pendingTokens.set(key, pending);
    }
    try {
      return { value: `Bearer ${await pending}`, fresh: true };
    } catch (e) {
      this.forget(name, c);
      throw e;
    }
  }

  /** Whether `name` was sent with the host's stand-in challenge rather than one the upstream gave for it. */
  isGuess(name: string): boolean {
    return !this.scoped.has(name);
  }

  /** A challenge whose token request failed is not kept: the next request asks the upstream what it wants now. */
  private forget(name: string, c: Challenge): void {
    if (this.scoped.get(name) === c) this.scoped.delete(name);
    if (this.hint === c) this.hint = undefined;
  }

  private async fetchToken(c: { realm: URL; service?: string }, scope: string, key: string): Promise<string> {
    const url = new URL(c.realm);
    if (c.service !== undefined) url.searchParams.set('service', c.service);
    url.searchParams.set('scope', scope);
    const what = `token for ${scope} from ${c.realm.host}`;
    const doc = await this.requestToken(url, this.creds ? basicAuthorization(this.creds) : undefined, what);
    const token = isRecord(doc) ? (doc.token ?? doc.access_token) : undefined;
    if (typeof token !== 'string' || token === '') {
      throw new RegistryError('UPSTREAM_FAILED', `upstream ${this.host}: ${what}: the answer has no token`, { upstream: this.host });
    }
    // distribution token spec: expires_in defaults to 60 s. Renew a little early so a token never dies in flight.
    const lifetimeMs = (isRecord(doc) && typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : 60) * 1000;
    this.tokens.set(key, { token, expiresAtMs: Date.now() + lifetimeMs - Math.min(30_000, lifetimeMs / 4) });
    return token;
  }
}

/** The challenge a 401 carries: Bearer (with a realm that belongs to the upstream) preferred over Basic. */
export function parseChallenge(wwwAuthenticate: string[], base: URL, host: string, realms: readonly string[] = []): Challenge {
  const challenges = parseWwwAuthenticate(wwwAuthenticate);
  const bearer = challenges.find((c) => c.scheme === 'bearer');
  if (bearer) {
    const realm = bearer.params.realm;
    if (!realm) throw failed(host, `its Bearer challenge has no realm`);
    return { scheme: 'bearer', realm: checkRealm(realm, base, host, realms), ...(bearer.params.service !== undefined ? { service: bearer.params.service } : {}) };
  }
  if (challenges.some((c) => c.scheme === 'basic')) return { scheme: 'basic' };
  throw failed(host, `it answered 401 without a Bearer or Basic challenge`);
}

/** Docker Hub's token service, known without configuration for the upstream https://registry-1.docker.io. */
const KNOWN_REALMS: Readonly<Record<string, string>> = { 'https://registry-1.docker.io': 'https://auth.docker.io' };

/**
 * Credentials go to the token realm, so its origin (scheme, host and port) must be the upstream's own, one of
 * `realms` (upstreams.<host>.tokenRealms), or Docker Hub's https://auth.docker.io for https://registry-1.docker.io.
 * Another port of the same host is another service, and gets nothing.
 */
export function checkRealm(realm: string, base: URL, host: string, realms: readonly string[] = []): URL {
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw failed(host, `its token realm ${JSON.stringify(realm)} is not a URL`);
  }
  const allowed = [base.origin, ...realms.map(originOf), KNOWN_REALMS[base.origin]].filter((o): o is string => o !== undefined);
  if (!allowed.includes(url.origin)) {
    throw failed(host, `refusing its token realm ${url.origin}: a realm must be the upstream's own origin (${base.origin}) or listed in upstreams.${host}.tokenRealms`);
  }
  return url;
}

/** The host names of configured token realm origins. */
export function realmHosts(realms: readonly string[] | undefined): string[] {
  return (realms ?? []).flatMap((r) => {
    try {
      return [new URL(r).hostname];
    } catch {
      return [];
    }
  });
}

/** `https://auth.example` or `https://auth.example:8443/anything` → its origin; anything else never matches. */
function originOf(s: string): string | undefined {
  try {
    return new URL(s).origin;
  } catch {
    return undefined;
  }
}

export function basicAuthorization(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

/** RFC 9110 §11.6.1 challenges: `scheme param=value, param="quoted", Other ...`; scheme names lower-cased. */
export function parseWwwAuthenticate(values: string[]): Array<{ scheme: string; params: Record<string, string> }> {
  const out: Array<{ scheme: string; params: Record<string, string> }> = [];
  for (const value of values) {
    const re = /[\s,]*([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*)))?/y;
    let m: RegExpExecArray | null;
    while (re.lastIndex < value.length && (m = re.exec(value)) !== null) {
      const [, token, quoted, plain] = m;
      if (quoted === undefined && plain === undefined) out.push({ scheme: token.toLowerCase(), params: {} });
      else if (out.length > 0) out[out.length - 1].params[token.toLowerCase()] = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : plain;
    }
  }
  return out;
}

function failed(host: string, message: string): RegistryError {
  return new RegistryError('UPSTREAM_FAILED', `upstream ${host}: ${message}`, { upstream: host });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
