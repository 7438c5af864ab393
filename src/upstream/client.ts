// The registry client for one configured upstream, on undici: token dance, basic auth, manual redirects,
// timeouts on every request, and the mapping of upstream failures to RegistryError kinds.
import { rootCertificates } from 'node:tls';
import { PassThrough, type Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { RegistryError, type ErrorKind } from '../oci/errors.js';
import type { Descriptor } from '../oci/manifest.js';
import { UpstreamAuth, type Authorization } from './auth.js';

export { parseWwwAuthenticate } from './auth.js';

export interface UpstreamOptions {
  /** The configured host key, e.g. 'docker.io'; used in messages. */
  host: string;
  /** Where it is dialled, e.g. 'https://registry-1.docker.io'. */
  url: string;
  auth?: { username: string; password: string };
  /** `ca` is added to the system roots, not a replacement; both apply only to the upstream's own origin. */
  tls?: { ca?: string; insecureSkipVerify?: boolean };
  connectTimeoutMs?: number;
  /** Longest wait for response headers and longest silence within a body. */
  idleTimeoutMs?: number;
  /** Docker Hub answers 401 rather than 404 for a repository that does not exist. */
  dockerHub?: boolean;
  /**
   * The window gate: asked right before every request leaves (token fetches, redirect hops and retries too);
   * throws when none may. Requests in flight when it closes are aborted via abortInFlight(), blob downloads excepted.
   */
  gate?: (what: string) => void;
}

export interface ReferrersIndex {
  schemaVersion: 2;
  mediaType: 'application/vnd.oci.image.index.v1+json';
  manifests: Descriptor[];
}

type Headers = Record<string, string>;
type Response = Dispatcher.ResponseData;
interface Call {
  method: 'GET' | 'HEAD';
  path: string;
  name: string;
  what: string;
  headers?: Headers;
  signal?: AbortSignal;
  /** A blob download survives abortInFlight(): its request has left, its bytes are worth keeping. */
  keepOnClose?: boolean;
}

// containerd refuses manifests over 4 MiB (DESIGN §1); we refuse to buffer more than that too.
const MANIFEST_LIMIT_BYTES = 4 * 1024 * 1024;
const JSON_LIMIT_BYTES = 16 * 1024 * 1024;
const ERROR_BODY_LIMIT_BYTES = 64 * 1024;
const MAX_REDIRECTS = 5;
const NAME_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const INDEX_TYPE = 'application/vnd.oci.image.index.v1+json';
/** Where each response really came from after redirects, for error messages about its body. */
const finalUrls = new WeakMap<Response, URL>();

export class Upstream {
  readonly host: string;
  /** Every HTTP request made, redirect hops and token requests included. */
  requestCount = 0;
  private readonly base: URL;
  private readonly opts: UpstreamOptions;
  private readonly own: Agent;
  private readonly foreign: Agent;
  private readonly auth: UpstreamAuth;
  /** Aborted (and replaced) by abortInFlight(): every request but a blob download listens to it. */
  private closing = new AbortController();

  constructor(opts: UpstreamOptions) {
    this.opts = opts;
    this.host = opts.host;
    this.base = new URL(opts.url);
    if (this.base.protocol !== 'https:' && this.base.protocol !== 'http:') {
      throw new Error(`upstream ${opts.host}: url must be http(s); got ${opts.url}`);
    }
    const timeouts = { headersTimeout: this.idleMs, bodyTimeout: this.idleMs };
    const ca = opts.tls?.ca ? [...rootCertificates, opts.tls.ca] : undefined;
    this.own = new Agent({
      ...timeouts,
      connect: { timeout: this.connectMs, ca, rejectUnauthorized: opts.tls?.insecureSkipVerify !== true },
    });
    // Redirect targets (blob storage) and token realms on sibling hosts get default TLS verification.
    this.foreign = new Agent({ ...timeouts, connect: { timeout: this.connectMs } });
    this.auth = new UpstreamAuth(opts.host, this.base, opts.auth, (url, authorization, what) => this.requestToken(url, authorization, what));
  }

  private get connectMs(): number {
    return this.opts.connectTimeoutMs ?? 10_000;
  }

  private get idleMs(): number {
    return this.opts.idleTimeoutMs ?? 30_000;
  }

  async getManifest(
    name: string,
    reference: string,
    accept: string[],
    signal?: AbortSignal,
  ): Promise<{ status: 200; body: Buffer; mediaType: string; digest: string | undefined }> {
    const what = `manifest ${name}${refSuffix(checkRef(name, reference))}`;
    const res = await this.call({ method: 'GET', path: `/${name}/manifests/${reference}`, name, what, headers: { accept: accept.join(', ') }, signal });
    if (res.statusCode !== 200) throw await this.statusError(res, what, 'MANIFEST_UNKNOWN');
    const body = await this.readLimited(res, MANIFEST_LIMIT_BYTES, what);
    if (!body) throw new RegistryError('MANIFEST_INVALID', `upstream ${this.host}: ${what} is larger than 4 MiB`, { upstream: this.host });
    return { status: 200, body, mediaType: mediaTypeOf(res, body), digest: digestOf(res) };
  }

  async headManifest(
    name: string,
    reference: string,
    accept: string[],
    signal?: AbortSignal,
  ): Promise<{ digest?: string; mediaType: string; sizeBytes?: number }> {
    const what = `manifest ${name}${refSuffix(checkRef(name, reference))}`;
    const res = await this.call({ method: 'HEAD', path: `/${name}/manifests/${reference}`, name, what, headers: { accept: accept.join(', ') }, signal });
    if (res.statusCode !== 200) throw await this.statusError(res, what, 'MANIFEST_UNKNOWN');
    res.body.resume();
    const digest = digestOf(res);
    const sizeBytes = lengthOf(res);
    return { ...(digest ? { digest } : {}), mediaType: mediaTypeOf(res), ...(sizeBytes !== undefined ? { sizeBytes } : {}) };
  }

  /** Whether the upstream holds a blob in this repository (HEAD; 404 → BLOB_UNKNOWN), without transferring it. */
  async headBlob(name: string, digest: string, signal?: AbortSignal): Promise<{ sizeBytes?: number }> {
    checkName(name);
    if (!DIGEST_RE.test(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
    const what = `blob ${name}@${digest}`;
    const res = await this.call({ method: 'HEAD', path: `/${name}/blobs/${digest}`, name, what, signal });
    if (res.statusCode !== 200) throw await this.statusError(res, what, 'BLOB_UNKNOWN');
    res.body.resume();
    const sizeBytes = lengthOf(res);
    return sizeBytes !== undefined ? { sizeBytes } : {};
  }

  /**
   * Streams a blob. With `offsetBytes` > 0 a Range is asked for; `offsetBytes` in the answer says where the
   * body really starts (0 when the upstream ignored the Range). Errors on the stream are RegistryErrors.
   */
  async getBlob(
    name: string,
    digest: string,
    signal?: AbortSignal,
    offsetBytes = 0,
  ): Promise<{ sizeBytes: number | undefined; body: Readable; offsetBytes: number }> {
    checkName(name);
    if (!DIGEST_RE.test(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
    const what = `blob ${name}@${digest}`;
    const headers: Headers = offsetBytes > 0 ? { range: `bytes=${offsetBytes}-` } : {};
    const res = await this.call({ method: 'GET', path: `/${name}/blobs/${digest}`, name, what, headers, signal, keepOnClose: true });
    if (res.statusCode !== 200 && !(res.statusCode === 206 && offsetBytes > 0)) {
      throw await this.statusError(res, what, 'BLOB_UNKNOWN');
    }
    const length = lengthOf(res);
    const start = res.statusCode === 206 ? offsetBytes : 0;
    return { sizeBytes: length === undefined ? undefined : start + length, body: this.mapStreamErrors(res, what), offsetBytes: start };
  }

  /** One page of tags; `nextLast` is the `last` parameter of the next page when the upstream sent a Link. */
  async tagsList(name: string, n?: number, last?: string): Promise<{ name: string; tags: string[]; nextLast?: string }> {
    checkName(name);
    const what = `tags of ${name}`;
    const query = new URLSearchParams();
    if (n !== undefined) query.set('n', String(n));
    if (last !== undefined) query.set('last', last);
    const qs = query.size > 0 ? `?${query}` : '';
    const res = await this.call({ method: 'GET', path: `/${name}/tags/list${qs}`, name, what, headers: { accept: 'application/json' } });
    if (res.statusCode !== 200) throw await this.statusError(res, what, 'NAME_UNKNOWN');
    const doc = await this.readJson(res, what);
    const tags = isRecord(doc) && Array.isArray(doc.tags) ? doc.tags.filter((t): t is string => typeof t === 'string') : [];
    const nextLast = nextLastOf(header(res, 'link'));
    return { name: isRecord(doc) && typeof doc.name === 'string' ? doc.name : name, tags, ...(nextLast ? { nextLast } : {}) };
  }

  /** The OCI referrers index for `digest`, filtered by `artifactType`; null when the upstream has no referrers API. */
  async referrers(name: string, digest: string, artifactType?: string): Promise<ReferrersIndex | null> {
    checkName(name);
    if (!DIGEST_RE.test(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
    const what = `referrers of ${name}@${digest}`;
    const qs = artifactType ? `?${new URLSearchParams({ artifactType })}` : '';
    const res = await this.call({ method: 'GET', path: `/${name}/referrers/${digest}${qs}`, name, what, headers: { accept: INDEX_TYPE } });
    // The spec requires 200 with an empty index for an unknown digest, so a 404 means "no referrers API".
    if (res.statusCode === 404 || res.statusCode === 405) {
      res.body.resume();
      return null;
    }
    if (res.statusCode !== 200) throw await this.statusError(res, what, 'MANIFEST_UNKNOWN');
    const doc = await this.readJson(res, what);
    const manifests = isRecord(doc) && Array.isArray(doc.manifests) ? doc.manifests.filter(isDescriptor) : [];
    // A registry that did not apply the filter says so by omitting OCI-Filters-Applied; then we filter.
    const filtered = (header(res, 'oci-filters-applied') ?? '').split(',').map((s) => s.trim()).includes('artifactType');
    const wanted = artifactType && !filtered ? manifests.filter((d) => d.artifactType === artifactType) : manifests;
    return { schemaVersion: 2, mediaType: INDEX_TYPE, manifests: wanted };
  }

  /** The Authorization value for a pull of `name` (undefined when anonymous), probing GET /v2/ once if needed. */
  async authorizationFor(name: string): Promise<string | undefined> {
    checkName(name);
    if (!this.auth.challenge) {
      const res = await this.send('GET', this.urlFor('/'), {}, this.abortable(), 'API version check');
      res.body.resume();
      this.auth.learn(res.statusCode === 401 ? headerAll(res, 'www-authenticate') : null);
    }
    return (await this.auth.authorize(name, false)).value;
  }

  /** The window closed: requests in flight are abandoned (blob downloads already sent may finish). */
  abortInFlight(reason: Error): void {
    const old = this.closing;
    this.closing = new AbortController();
    old.abort(reason);
  }

  /** Drops every connection at once: a request still in flight is abandoned, never waited for. */
  async close(): Promise<void> {
    await Promise.all([this.own.destroy(), this.foreign.destroy()]);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Authentication (challenges, realm rule and token cache live in upstream-auth.ts)

  /** Sends with what we know of the challenge, and on a 401 learns it, authenticates and retries once. */
  private async call(c: Call): Promise<Response> {
    const url = this.urlFor(c.path);
    let auth: Authorization = this.auth.challenge ? await this.auth.authorize(c.name, false) : { value: undefined, fresh: false };
    const signal = c.keepOnClose ? c.signal : this.abortable(c.signal);
    let res = await this.send(c.method, url, withAuth(c.headers, auth.value), signal, c.what);
    if (res.statusCode === 401) {
      res.body.resume();
      const sameChallenge = !this.auth.learn(headerAll(res, 'www-authenticate'));
      // A token just issued that is refused again will not get better by asking for another one.
      if (auth.value !== undefined && sameChallenge && auth.fresh) throw this.refused(c.what, res.statusCode);
      auth = await this.auth.authorize(c.name, true);
      if (auth.value === undefined) throw this.needsCredentials(c.what, this.auth.challenge?.scheme ?? 'basic');
      res = await this.send(c.method, url, withAuth(c.headers, auth.value), signal, c.what);
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      res.body.resume();
      throw this.refused(c.what, res.statusCode);
    }
    return res;
  }

  /** The transport half of a token request: HTTP and its failures here, the token document in UpstreamAuth. */
  private async requestToken(url: URL, authorization: string | undefined, what: string): Promise<unknown> {
    const res = await this.send('GET', url, authorization ? { authorization } : {}, this.abortable(), what);
    if (res.statusCode === 401 || res.statusCode === 403) {
      res.body.resume();
      throw new RegistryError('DENIED', `upstream ${this.host}: ${what} refused (HTTP ${res.statusCode}); check upstreams.${this.host}.auth`, { upstream: this.host, status: res.statusCode });
    }
    if (res.statusCode !== 200) throw await this.statusError(res, what, 'UPSTREAM_FAILED');
    return this.readJson(res, what);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Transport

  /** The caller's signal joined with the window-close one. */
  private abortable(signal?: AbortSignal): AbortSignal {
    return signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal;
  }

  private urlFor(path: string): URL {
    const prefix = this.base.pathname.replace(/\/+$/, '');
    return new URL(`${this.base.origin}${prefix}/v2${path}`);
  }

  /** One logical request: follows up to 5 redirects by hand, dropping Authorization once the origin changes. */
  private async send(method: 'GET' | 'HEAD', start: URL, headers: Headers, signal: AbortSignal | undefined, what: string): Promise<Response> {
    let url = start;
    let h: Headers = { ...headers, 'user-agent': 'sluice' };
    for (let hop = 0; ; hop++) {
      // At the moment of sending, not when the caller decided to: a window may have closed in between.
      this.opts.gate?.(what);
      this.requestCount++;
      const agent = url.origin === this.base.origin ? this.own : this.foreign;
      let res: Response;
      try {
        res = await agent.request({ origin: url.origin, path: `${url.pathname}${url.search}`, method, headers: h, signal });
      } catch (e) {
        throw this.transportError(e, what, url, signal);
      }
      const location = header(res, 'location');
      if (![301, 302, 303, 307, 308].includes(res.statusCode) || !location) {
        finalUrls.set(res, url);
        return res;
      }
      res.body.resume();
      if (hop === MAX_REDIRECTS) throw this.failed(`${what}: more than ${MAX_REDIRECTS} redirects`);
      const next = new URL(location, url);
      if (next.protocol !== 'https:' && next.protocol !== 'http:') throw this.failed(`${what}: redirect to ${next.protocol} refused`);
      if (next.origin !== url.origin) {
        // Credentials are for the registry alone (RFC 9110 §15.4 leaves this to the client; every registry client drops it).
        h = { ...h };
        delete h.authorization;
      }
      url = next;
    }
  }

  private transportError(e: unknown, what: string, url: URL, signal?: AbortSignal): unknown {
    if (signal?.aborted) return e; // the caller gave up; its own reason is the truthful one
    if (e instanceof RegistryError) return e;
    const code = typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : '';
    const reason = REASONS[code]?.(url) ?? (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO/.test(code)
      ? `TLS verification of ${url.host} failed (${code}); set upstreams.${this.host}.tls.ca`
      : `${e instanceof Error ? e.message : String(e)}${code ? ` (${code})` : ''}`);
    return new RegistryError('UPSTREAM_FAILED', `upstream ${this.host}: ${what} failed: ${reason}`, { upstream: this.host, url: url.origin, code: code || undefined });
  }

  private mapStreamErrors(res: Response, what: string): Readable {
    const out = new PassThrough();
    const body = res.body;
    body.on('error', (e) => out.destroy(this.transportError(e, what, finalUrls.get(res) ?? this.base) as Error));
    // A consumer that stops reading must release the upstream connection.
    out.on('close', () => body.destroy());
    body.pipe(out);
    return out;
  }

  private async readLimited(res: Response, limitBytes: number, what: string): Promise<Buffer | null> {
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
      throw this.transportError(e, what, finalUrls.get(res) ?? this.base);
    }
    return Buffer.concat(chunks);
  }

  private async readJson(res: Response, what: string): Promise<unknown> {
    const body = await this.readLimited(res, JSON_LIMIT_BYTES, what);
    try {
      if (!body) throw new Error('too large');
      return JSON.parse(body.toString('utf8'));
    } catch {
      throw this.failed(`${what}: the answer is not JSON`);
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Errors

  /** Maps a final non-success status: 404 → `notFound`, 429 → TOOMANYREQUESTS (Retry-After kept), else 502. */
  private async statusError(res: Response, what: string, notFound: ErrorKind): Promise<RegistryError> {
    const body = await this.readLimited(res, ERROR_BODY_LIMIT_BYTES, what).catch(() => null);
    const said = upstreamMessage(body);
    const detail = { upstream: this.host, status: res.statusCode, ...(said ? { message: said } : {}) };
    if (res.statusCode === 404) return new RegistryError(notFound, `upstream ${this.host} has no ${what}`, detail);
    if (res.statusCode === 429) {
      const retryAfter = header(res, 'retry-after');
      return new RegistryError('TOOMANYREQUESTS', `upstream ${this.host} is rate limiting: ${what}`, detail, retryAfter ? { 'Retry-After': retryAfter } : {});
    }
    return new RegistryError('UPSTREAM_FAILED', `upstream ${this.host}: ${what} failed: HTTP ${res.statusCode}${said ? ` ${said}` : ''}`, detail);
  }

  /** 401/403 after authenticating. Docker Hub says 401 for a repository that does not exist, so anonymous → unknown. */
  private refused(what: string, status: number): RegistryError {
    const detail = { upstream: this.host, status };
    if (this.opts.dockerHub && !this.opts.auth) {
      return new RegistryError(what.startsWith('blob') ? 'BLOB_UNKNOWN' : what.startsWith('manifest') ? 'MANIFEST_UNKNOWN' : 'NAME_UNKNOWN',
        `upstream ${this.host} has no ${what} (Docker Hub answers 401 when a repository does not exist or is private)`, detail);
    }
    const hint = this.opts.auth ? `check upstreams.${this.host}.auth` : `configure upstreams.${this.host}.auth if the repository is private`;
    return new RegistryError('DENIED', `upstream ${this.host} refused access to ${what} (HTTP ${status}); ${hint}`, detail);
  }

  private needsCredentials(what: string, scheme: string): RegistryError {
    return new RegistryError('DENIED', `upstream ${this.host} requires ${scheme} credentials for ${what}; configure upstreams.${this.host}.auth`, { upstream: this.host });
  }

  private failed(message: string): RegistryError {
    return new RegistryError('UPSTREAM_FAILED', `upstream ${this.host}: ${message}`, { upstream: this.host });
  }
}

const REASONS: Record<string, (url: URL) => string> = {
  UND_ERR_CONNECT_TIMEOUT: (url) => `connecting to ${url.host} timed out`,
  UND_ERR_HEADERS_TIMEOUT: (url) => `${url.host} sent no response headers in time`,
  UND_ERR_BODY_TIMEOUT: (url) => `${url.host} stopped sending the body (idle timeout)`,
  UND_ERR_SOCKET: (url) => `connection to ${url.host} closed unexpectedly`,
  ECONNRESET: (url) => `connection to ${url.host} reset`,
  ECONNREFUSED: (url) => `connection to ${url.host} refused`,
  ENOTFOUND: (url) => `DNS lookup of ${url.hostname} failed`,
  EAI_AGAIN: (url) => `DNS lookup of ${url.hostname} failed (temporary)`,
  EHOSTUNREACH: (url) => `${url.host} is unreachable`,
  ENETUNREACH: (url) => `network unreachable for ${url.host}`,
};

// -------------------------------------------------------------------------------------------------------------
// Pure helpers

function checkName(name: string): void {
  if (!NAME_RE.test(name)) throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`);
}

function checkRef(name: string, reference: string): string {
  checkName(name);
  if (!TAG_RE.test(reference) && !DIGEST_RE.test(reference)) {
    throw new RegistryError('TAG_INVALID', `invalid reference ${JSON.stringify(reference)}`);
  }
  return reference;
}

function refSuffix(reference: string): string {
  return reference.includes(':') ? `@${reference}` : `:${reference}`;
}

function withAuth(headers: Headers | undefined, authorization: string | undefined): Headers {
  return authorization ? { ...headers, authorization } : { ...headers };
}

function headerAll(res: Response, name: string): string[] {
  const v = res.headers[name];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

function header(res: Response, name: string): string | undefined {
  return headerAll(res, name)[0];
}

function lengthOf(res: Response): number | undefined {
  const v = header(res, 'content-length');
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

function digestOf(res: Response): string | undefined {
  const v = header(res, 'docker-content-digest')?.trim();
  return v && DIGEST_RE.test(v) ? v : undefined;
}

/** Content-Type without parameters; a generic one is replaced by the manifest's own mediaType field. */
function mediaTypeOf(res: Response, body?: Buffer): string {
  const ct = (header(res, 'content-type') ?? '').split(';')[0].trim();
  if (ct && !['application/json', 'text/plain', 'application/octet-stream'].includes(ct)) return ct;
  if (body) {
    try {
      const doc: unknown = JSON.parse(body.toString('utf8'));
      if (isRecord(doc) && typeof doc.mediaType === 'string') return doc.mediaType;
    } catch {
      // not JSON: keep what the upstream said
    }
  }
  return ct || 'application/octet-stream';
}

function nextLastOf(link: string | undefined): string | undefined {
  const m = link ? /<([^>]*)>\s*;\s*rel="?next"?/.exec(link) : null;
  return m ? (new URL(m[1], 'http://x').searchParams.get('last') ?? undefined) : undefined;
}

function upstreamMessage(body: Buffer | null): string | undefined {
  if (!body || body.length === 0) return undefined;
  try {
    const doc: unknown = JSON.parse(body.toString('utf8'));
    const first = isRecord(doc) && Array.isArray(doc.errors) ? doc.errors[0] : undefined;
    if (isRecord(first) && typeof first.message === 'string') return first.message.slice(0, 200);
  } catch {
    // a proxy's HTML error page: not worth quoting
  }
  return undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDescriptor(v: unknown): v is Descriptor {
  return isRecord(v) && typeof v.mediaType === 'string' && typeof v.digest === 'string' && typeof v.size === 'number';
}
