// A small in-process upstream registry for component tests: single-platform OCI images and indexes by tag and
// digest, blobs by digest, a hold on chosen blobs, corrupted or endless blobs, Bearer challenges, redirects and
// request counts.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { closeServer, json, listenLoopback, write } from './http-server.js';
import { MediaType, sha256 } from '../kit/oci.js';

export interface MiniImage {
  name: string;
  tag: string;
  digest: string;
  manifest: Buffer;
  config: { digest: string; body: Buffer };
  layers: Array<{ digest: string; body: Buffer }>;
  /** Every blob of the image, the manifest first. */
  digests: string[];
  sizeBytes: number;
}

export class MiniUpstream {
  url = '';
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, Buffer>();
  /** `GET path` → how many times it was asked. */
  readonly hits = new Map<string, number>();
  /** Blob digests whose body is held until the promise resolves. */
  readonly holds = new Map<string, Promise<void>>();
  /** Blob digests answered with one byte flipped. */
  readonly corrupt = new Set<string>();
  /** Every request as it came: method, path (query included) and its Authorization header. */
  readonly requests: Array<{ method: string; path: string; authorization?: string }> = [];
  /** Exact paths (query excluded) answered by a handler of their own: token endpoints, blob storage, anything odd. */
  readonly routes = new Map<string, (req: IncomingMessage, res: ServerResponse) => void>();
  /** When set, a blob GET is answered with a 307 to the URL it returns (undefined: served here). */
  redirectBlob: ((digest: string) => string | undefined) | undefined;
  /**
   * When set, registry requests need `Authorization: Bearer t:<name>`; without it they get a 401 whose challenge
   * names the realm this returns for the repository (service "mini", scope repository:<name>:pull).
   */
  bearerRealm: ((name: string) => string) | undefined;
  /** Blob digests answered with no Content-Length and a body that never ends (until the client goes). */
  readonly endless = new Set<string>();
  /** Bytes sent of endless bodies so far. */
  endlessBytesSent = 0;
  private readonly server: Server = createServer((req, res) => void this.handle(req, res));
  private readonly waiters: Array<{ path: string; resolve: () => void }> = [];

  async start(): Promise<this> {
    this.url = await listenLoopback(this.server);
    return this;
  }

  stop(): Promise<void> {
    return closeServer(this.server);
  }

  /** An image of `layers` (shared layers: pass the same Buffer to two images). */
  addImage(name: string, tag: string, layers: Buffer[]): MiniImage {
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', tag, name }));
    const cfg = { digest: sha256(config), body: config };
    const ls = layers.map((body) => ({ digest: sha256(body), body }));
    for (const b of [cfg, ...ls]) this.blobs.set(b.digest, b.body);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: cfg.digest, size: config.length },
      layers: ls.map((l) => ({ mediaType: MediaType.ociLayer, digest: l.digest, size: l.body.length })),
    }));
    const digest = sha256(manifest);
    this.manifests.set(`${name}:${tag}`, manifest);
    this.manifests.set(`${name}:${digest}`, manifest);
    const digests = [digest, cfg.digest, ...ls.map((l) => l.digest)];
    const sizeBytes = manifest.length + config.length + ls.reduce((n, l) => n + l.body.length, 0);
    return { name, tag, digest, manifest, config: cfg, layers: ls, digests, sizeBytes };
  }

  /**
   * An OCI index under `name:tag` of `entries`: images already added (each entry's `platform` as given, `{}`
   * included) or bare manifest bodies (no platform); every child by digest too.
   */
  addIndex(name: string, tag: string, entries: Array<Buffer | { image: MiniImage; platform?: Record<string, string> }>): { digest: string; body: Buffer } {
    const children = entries.map((e) => (Buffer.isBuffer(e) ? { manifest: e, platform: undefined } : { manifest: e.image.manifest, platform: e.platform }));
    const body = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: children.map((c) => ({ mediaType: MediaType.ociManifest, digest: sha256(c.manifest), size: c.manifest.length, ...(c.platform ? { platform: c.platform } : {}) })),
    }));
    const digest = sha256(body);
    for (const c of children) this.manifests.set(`${name}:${sha256(c.manifest)}`, c.manifest);
    this.manifests.set(`${name}:${tag}`, body);
    this.manifests.set(`${name}:${digest}`, body);
    return { digest, body };
  }

  /** Serves a token document at `path` for the scopes `grant` accepts (token `t:<name>`), 401 for the rest. */
  serveTokens(path: string, grant: (scope: string) => boolean): void {
    this.routes.set(path, (req, res) => {
      const scope = new URL(req.url ?? '/', 'http://x').searchParams.get('scope') ?? '';
      if (!grant(scope)) return json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: `no token for ${scope}` }] });
      json(res, 200, { token: `t:${/^repository:(.+):pull$/.exec(scope)?.[1] ?? ''}`, expires_in: 300 });
    });
  }

  /** Moves a tag to another image of the same repository. */
  retag(image: MiniImage, tag: string): void {
    this.manifests.set(`${image.name}:${tag}`, image.manifest);
  }

  count(path: string): number {
    return this.hits.get(path) ?? 0;
  }

  /** Resolves once `path` has been asked for (at once if it was). */
  asked(path: string): Promise<void> {
    if (this.count(path) > 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ path, resolve }));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    this.hits.set(path, this.count(path) + 1);
    this.requests.push({ method: req.method ?? '', path: req.url ?? '', ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    for (const w of this.waiters.splice(0)) (w.path === path ? w.resolve() : this.waiters.push(w));
    const route = this.routes.get(path);
    if (route) return route(req, res);
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (!m) return json(res, path === '/v2/' ? 200 : 404, path === '/v2/' ? {} : { errors: [{ code: 'NAME_UNKNOWN', message: 'no' }] });
    const [, name = '', kind, ref = ''] = m;
    if (this.bearerRealm && req.headers.authorization !== `Bearer t:${name}`) {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${this.bearerRealm(name)}",service="mini",scope="repository:${name}:pull"`, 'content-type': 'application/json' });
      return void res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'token needed' }] }));
    }
    if (kind === 'manifests') {
      const body = this.manifests.get(`${name}:${ref}`);
      if (!body) return json(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown' }] });
      const mediaType = (JSON.parse(body.toString('utf8')) as { mediaType?: string }).mediaType ?? MediaType.ociManifest;
      res.writeHead(200, { 'content-type': mediaType, 'content-length': body.length, 'docker-content-digest': sha256(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const elsewhere = req.method === 'GET' ? this.redirectBlob?.(ref) : undefined;
    if (elsewhere) return void res.writeHead(307, { location: elsewhere, 'content-length': 0 }).end();
    if (this.endless.has(ref) && req.method !== 'HEAD') return this.sendEndless(res);
    const blob = this.blobs.get(ref);
    if (!blob) return json(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown' }] });
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length });
    if (req.method === 'HEAD') return void res.end();
    const body = Buffer.from(blob);
    if (this.corrupt.has(ref)) body[body.length >> 1] = (body[body.length >> 1] ?? 0) ^ 0xff;
    const half = body.length >> 1;
    res.write(body.subarray(0, half));
    await this.holds.get(ref);
    res.end(body.subarray(half));
  }

  private async sendEndless(res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const piece = Buffer.alloc(64 * 1024, 0x5a);
    while (await write(res, piece)) this.endlessBytesSent += piece.length;
  }
}
