// The registry client for one configured upstream: manifests, blobs, tags and referrers, each request
// authenticated (auth.ts) and sent through the transport (transport.ts); failures mapped in errors.ts.
import type { Readable } from 'node:stream';
import { RegistryError, type ErrorKind } from '../oci/errors.js';
import { isDescriptor, type Descriptor } from '../oci/manifest.js';
import { checkDigestShape, checkName, checkRef, refSuffix } from './arguments.js';
import { digestOf, mediaTypeOf, nextLastOf, withAuth } from './response-fields.js';
import { realmHosts, UpstreamAuth, type Authorization } from './auth.js';
import { isRecord, needsCredentials, refused, statusError, tokenRefused, upstreamFailed, type UpstreamIdentity } from './errors.js';
import { header, headerAll, lengthOf, Transport, type Headers, type Response } from './transport.js';
import { NO_UPSTREAM_METRICS, type UpstreamMetrics } from '../metrics/ports.js';

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
   * The url is another mirror (a sluice, or any registry that reads containerd's `ns`): every request carries
   * `?ns=<host>`, and a refusal relays the mirror's own message (its allowlist said no).
   */
  mirror?: boolean;
  /**
   * The window gate: asked right before every request leaves (token fetches, redirect hops and retries too);
   * throws when none may. Requests in flight when it closes are aborted via abortInFlight(), blob downloads excepted.
   */
  gate?: (what: string) => void;
  /**
   * Where redirects may lead besides the upstream's own host (blob storage, a Factory's registry); undefined: any
   * public host. Loopback, link-local and sluice's own listeners only when named here.
   */
  redirectHosts?: readonly string[];
  /** Where sluice itself listens now; redirects there are refused unless named exactly in redirectHosts. */
  listeners?: () => ReadonlyArray<{ host: string; port: number }>;
  /** Token realm origins allowed besides the upstream's own (e.g. https://auth.example). */
  tokenRealms?: readonly string[];
  /** This host's request, byte and error counters (metrics/); none counted when absent. */
  metrics?: UpstreamMetrics;
}

export interface ReferrersIndex {
  schemaVersion: 2;
  mediaType: 'application/vnd.oci.image.index.v1+json';
  manifests: Descriptor[];
}

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
const ERROR_BODY_LIMIT_BYTES = 64 * 1024;
const INDEX_TYPE = 'application/vnd.oci.image.index.v1+json';

export class Upstream {
  readonly host: string;
  /** How messages name it: the host, and the mirror it is asked through. */
  private readonly label: string;
  private readonly mirror: boolean;
  private readonly http: Transport;
  private readonly auth: UpstreamAuth;
  private readonly identity: UpstreamIdentity;
  private readonly metrics: UpstreamMetrics;

  constructor(opts: UpstreamOptions) {
    this.metrics = opts.metrics ?? NO_UPSTREAM_METRICS;
    this.host = opts.host;
    const base = new URL(opts.url);
    if (base.protocol !== 'https:' && base.protocol !== 'http:') {
      throw new Error(`upstream ${opts.host}: url must be http(s); got ${opts.url}`);
    }
    this.mirror = opts.mirror === true;
    this.label = this.mirror ? `${opts.host} (via mirror ${base.host})` : opts.host;
    this.identity = { host: this.label, dockerHub: opts.dockerHub, hasAuth: opts.auth !== undefined };
    const ns = this.mirror ? opts.host : undefined;
    this.http = new Transport({ host: this.label, base, ns, tls: opts.tls, connectTimeoutMs: opts.connectTimeoutMs, idleTimeoutMs: opts.idleTimeoutMs, gate: opts.gate, redirectHosts: opts.redirectHosts, listeners: opts.listeners, tokenRealmHosts: realmHosts(opts.tokenRealms), metrics: this.metrics });
    this.auth = new UpstreamAuth(opts.host, base, opts.auth, (url, authorization, what) => this.requestToken(url, authorization, what), opts.tokenRealms);
  }

  /** Every HTTP request made, redirect hops and token requests included. */
  get requestCount(): number {
    return this.http.requestCount;
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
    const body = await this.http.readLimited(res, MANIFEST_LIMIT_BYTES, what);
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
    checkDigestShape(digest);
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
    checkDigestShape(digest);
    const what = `blob ${name}@${digest}`;
    const headers: Headers = offsetBytes > 0 ? { range: `bytes=${offsetBytes}-` } : {};
    const res = await this.call({ method: 'GET', path: `/${name}/blobs/${digest}`, name, what, headers, signal, keepOnClose: true });
    if (res.statusCode !== 200 && !(res.statusCode === 206 && offsetBytes > 0)) {
      throw await this.statusError(res, what, 'BLOB_UNKNOWN');
    }
    const length = lengthOf(res);
    const start = res.statusCode === 206 ? offsetBytes : 0;
    return { sizeBytes: length === undefined ? undefined : start + length, body: this.http.streamBody(res, what), offsetBytes: start };
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
    const doc = await this.http.readJson(res, what);
    const tags = isRecord(doc) && Array.isArray(doc.tags) ? doc.tags.filter((t): t is string => typeof t === 'string') : [];
    const nextLast = nextLastOf(header(res, 'link'));
    return { name: isRecord(doc) && typeof doc.name === 'string' ? doc.name : name, tags, ...(nextLast ? { nextLast } : {}) };
  }

  /** The OCI referrers index for `digest`, filtered by `artifactType`; null when the upstream has no referrers API. */
  async referrers(name: string, digest: string, artifactType?: string): Promise<ReferrersIndex | null> {
    checkName(name);
    checkDigestShape(digest);
    const what = `referrers of ${name}@${digest}`;
    const qs = artifactType ? `?${new URLSearchParams({ artifactType })}` : '';
    const res = await this.call({ method: 'GET', path: `/${name}/referrers/${digest}${qs}`, name, what, headers: { accept: INDEX_TYPE } });
    // The spec requires 200 with an empty index for an unknown digest, so a 404 means "no referrers API".
    if (res.statusCode === 404 || res.statusCode === 405) {
      res.body.resume();
      return null;
    }
    if (res.statusCode !== 200) throw await this.statusError(res, what, 'MANIFEST_UNKNOWN');
    const doc = await this.http.readJson(res, what);
    const manifests = isRecord(doc) && Array.isArray(doc.manifests) ? doc.manifests.filter(isDescriptor) : [];
    // A registry that did not apply the filter says so by omitting OCI-Filters-Applied; then we filter.
    const filtered = (header(res, 'oci-filters-applied') ?? '').split(',').map((s) => s.trim()).includes('artifactType');
    const wanted = artifactType && !filtered ? manifests.filter((d) => d.artifactType === artifactType) : manifests;
    return { schemaVersion: 2, mediaType: INDEX_TYPE, manifests: wanted };
  }

  /** The Authorization value for a pull of `name` (undefined when anonymous), probing GET /v2/ once if needed. */
  async authorizationFor(name: string): Promise<string | undefined> {
    checkName(name);
    if (!this.auth.challengeFor(name)) {
      const res = await this.http.send('GET', this.http.urlFor('/'), {}, this.http.abortable(), 'API version check');
      res.body.resume();
      this.auth.learn(undefined, res.statusCode === 401 && !this.http.redirectTarget(res) ? headerAll(res, 'www-authenticate') : null);
    }
    return (await this.auth.authorize(name, false)).value;
  }

  /** The window closed: requests in flight are abandoned (blob downloads already sent may finish). */
  abortInFlight(reason: Error): void {
    this.http.abortInFlight(reason);
  }

  /** Drops every connection at once: a request still in flight is abandoned, never waited for. */
  async close(): Promise<void> {
    await this.http.close();
  }

  /** Sends with what we know of the challenge, and on a 401 learns it, authenticates and retries once. */
  private async call(c: Call): Promise<Response> {
    const url = this.http.urlFor(c.path);
    let auth = await this.knownAuthorization(c.name);
    const signal = c.keepOnClose ? c.signal : this.http.abortable(c.signal);
    let res = await this.http.send(c.method, url, withAuth(c.headers, auth.value), signal, c.what);
    if (res.statusCode === 401 && !this.http.redirectTarget(res)) {
      res.body.resume();
      const sameChallenge = !this.auth.learn(c.name, headerAll(res, 'www-authenticate'));
      // A token just issued that is refused again will not get better by asking for another one.
      if (auth.value !== undefined && sameChallenge && auth.fresh) throw refused(this.identity, c.what, res.statusCode);
      auth = await this.auth.authorize(c.name, true);
      if (auth.value === undefined) throw needsCredentials(this.host, c.what, this.auth.challengeFor(c.name)?.scheme ?? 'basic');
      res = await this.http.send(c.method, url, withAuth(c.headers, auth.value), signal, c.what);
    }
    const target = this.http.redirectTarget(res);
    if (target && (res.statusCode === 401 || res.statusCode === 403)) {
      // Blob storage a redirect led to (an expired signed URL, say): its challenge is not the upstream's to learn.
      res.body.resume();
      const e = upstreamFailed(this.label, `${c.what}: the redirect target ${target} refused it (HTTP ${res.statusCode})`);
      this.metrics.error(e.code);
      throw e;
    }
    if (res.statusCode === 403 && this.mirror) throw await this.mirrorRefused(res, c.what);
    if (res.statusCode === 401 || res.statusCode === 403) {
      res.body.resume();
      const e = refused(this.identity, c.what, res.statusCode);
      this.metrics.error(e.code);
      throw e;
    }
    return res;
  }

  /**
   * The Authorization a request starts with: none until the upstream has asked. When the host's stand-in
   * challenge (learnt for another repository) yields no token, ask the upstream what this repository needs.
   */
  private async knownAuthorization(name: string): Promise<Authorization> {
    if (!this.auth.challengeFor(name)) return { value: undefined, fresh: false };
    const guess = this.auth.isGuess(name);
    try {
      return await this.auth.authorize(name, false);
    } catch (e) {
      if (guess) return { value: undefined, fresh: false };
      throw e;
    }
  }

  /** The mirror's allowlist refused: its own words are the useful ones (no credentials would help). */
  private async mirrorRefused(res: Response, what: string): Promise<RegistryError> {
    const body = await this.http.readLimited(res, ERROR_BODY_LIMIT_BYTES, what).catch(() => null);
    const said = statusError(this.label, { status: 403, body }, what, 'DENIED').detail as { message?: string } | undefined;
    return new RegistryError('DENIED', `upstream ${this.label} refused ${what}${said?.message ? `: ${said.message}` : ''}`, { upstream: this.host, status: 403 });
  }

  /** The transport half of a token request: HTTP and its failures here, the token document in UpstreamAuth. */
  private async requestToken(url: URL, authorization: string | undefined, what: string): Promise<unknown> {
    const res = await this.http.send('GET', url, authorization ? { authorization } : {}, this.http.abortable(), what);
    if (res.statusCode === 401 || res.statusCode === 403) {
      res.body.resume();
      throw tokenRefused(this.host, what, res.statusCode);
    }
    if (res.statusCode !== 200) throw await this.statusError(res, what, 'UPSTREAM_FAILED');
    return this.http.readJson(res, what);
  }

  /** Reads what the upstream said about a final non-success status and maps it. */
  private async statusError(res: Response, what: string, notFound: ErrorKind): Promise<RegistryError> {
    const body = await this.http.readLimited(res, ERROR_BODY_LIMIT_BYTES, what).catch(() => null);
    const e = statusError(this.label, { status: res.statusCode, body, retryAfter: header(res, 'retry-after') }, what, notFound);
    this.metrics.error(e.code);
    // A mirror's 404 says why (e.g. its own window is closed): that is the message the client needs.
    const said = (e.detail as { message?: string } | undefined)?.message;
    if (!this.mirror || res.statusCode !== 404 || !said) return e;
    return new RegistryError(e.kind, `upstream ${this.label}: ${said}`, e.detail);
  }
}
