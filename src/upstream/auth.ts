// Authentication against one upstream registry: WWW-Authenticate challenge parsing, the rule that a token
// realm must belong to the upstream, and the per-scope token cache with coalesced token requests.
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

export class UpstreamAuth {
  /** What the upstream last asked for; undefined until it has been asked (or probed). */
  private current: Challenge | undefined;
  private readonly tokens = new Map<string, { token: string; expiresAtMs: number }>();
  private readonly pendingTokens = new Map<string, Promise<string>>();

  constructor(
    private readonly host: string,
    private readonly base: URL,
    private readonly creds: Credentials | undefined,
    private readonly requestToken: TokenRequest,
  ) {}

  get challenge(): Challenge | undefined {
    return this.current;
  }

  /** Records the upstream's answer to an unauthenticated request (401 challenge values, or none); true if it changed. */
  learn(wwwAuthenticate: string[] | null): boolean {
    const next: Challenge = wwwAuthenticate === null ? { scheme: 'none' } : parseChallenge(wwwAuthenticate, this.base, this.host);
    const changed = JSON.stringify(next) !== JSON.stringify(this.current);
    this.current = next;
    return changed;
  }

  async authorize(name: string, refresh: boolean): Promise<Authorization> {
    const c = this.current;
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
    return { value: `Bearer ${await pending}`, fresh: true };
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
export function parseChallenge(wwwAuthenticate: string[], base: URL, host: string): Challenge {
  const challenges = parseWwwAuthenticate(wwwAuthenticate);
  const bearer = challenges.find((c) => c.scheme === 'bearer');
  if (bearer) {
    const realm = bearer.params.realm;
    if (!realm) throw failed(host, `its Bearer challenge has no realm`);
    return { scheme: 'bearer', realm: checkRealm(realm, base, host), ...(bearer.params.service !== undefined ? { service: bearer.params.service } : {}) };
  }
  if (challenges.some((c) => c.scheme === 'basic')) return { scheme: 'basic' };
  throw failed(host, `it answered 401 without a Bearer or Basic challenge`);
}

/**
 * Credentials go to the token realm, so it must belong to the upstream: the same host name, or the
 * upstream's parent domain (its name minus the first label, when it has three or more labels) or a
 * subdomain of that. registry-1.docker.io → auth.docker.io and registry.gitlab.com → gitlab.com pass;
 * another domain or IP address does not, nor plain http when the upstream is https. Without the public
 * suffix list, foo.github.io would accept bar.github.io: configure such upstreams knowingly.
 */
export function checkRealm(realm: string, base: URL, host: string): URL {
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw failed(host, `its token realm ${JSON.stringify(realm)} is not a URL`);
  }
  const upstreamHost = base.hostname.toLowerCase();
  const realmHost = url.hostname.toLowerCase();
  const labels = upstreamHost.split('.');
  const isIp = /^[\d.]+$/.test(upstreamHost) || upstreamHost.includes(':');
  const parent = !isIp && labels.length >= 3 ? labels.slice(1).join('.') : upstreamHost;
  const hostOk = realmHost === upstreamHost || realmHost === parent || (!isIp && realmHost.endsWith(`.${parent}`));
  const schemeOk = url.protocol === 'https:' || (url.protocol === 'http:' && base.protocol === 'http:');
  if (!hostOk || !schemeOk) {
    throw failed(host, `refusing its token realm ${url.origin}: a realm must be on ${upstreamHost} or ${parent}${schemeOk ? '' : ' over https'}`);
  }
  return url;
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
