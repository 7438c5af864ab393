// The one scriptable in-process upstream registry of the component tests: images and indexes by tag and digest,
// paged tags/list, referrers, blobs (optionally per repository), Bearer challenges, redirects, holds, corruption,
// cut connections, endless bodies, and a log of every request with events to await.
import { EventEmitter } from 'node:events';
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

/** An image of `layers` for `name:tag`, not served by anyone yet (for a layout to import, or `MiniUpstream.push`). */
export function miniImage(name: string, tag: string, layers: Buffer[], layerMediaType: string = MediaType.ociLayer): MiniImage {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', tag, name }));
  const cfg = { digest: sha256(config), body: config };
  const ls = layers.map((body) => ({ digest: sha256(body), body }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: cfg.digest, size: config.length },
    layers: ls.map((l) => ({ mediaType: layerMediaType, digest: l.digest, size: l.body.length })),
  }));
  const digest = sha256(manifest);
  const digests = [digest, cfg.digest, ...ls.map((l) => l.digest)];
  const sizeBytes = manifest.length + config.length + ls.reduce((n, l) => n + l.body.length, 0);
  return { name, tag, digest, manifest, config: cfg, layers: ls, digests, sizeBytes };
}

const unknown = (code: string): object => ({ errors: [{ code, message: 'unknown' }] });

/**
 * Scripting keys: holds, corruption and cuts take a blob digest (every repository) or a request line
 * `METHOD /v2/<name>/blobs/<digest>` (that one only). Events: 'request' (line) as a request arrives, before it
 * is answered; 'half' (line) once the first half of a blob body is written.
 */
export class MiniUpstream extends EventEmitter {
  url = '';
  readonly blobs = new Map<string, Buffer>();
  /** `name:reference` → manifest or index body. */
  readonly manifests = new Map<string, Buffer>();
  /** When true, a blob is served only through a repository it was pushed to (as distribution does). */
  scopeBlobs = false;
  /** Repository name → the blob digests pushed to it. */
  readonly links = new Map<string, Set<string>>();
  /** Path (query excluded) → how many times it was asked, any method. */
  readonly hits = new Map<string, number>();
  /** Blob bodies: the first half is sent, the rest once the promise resolves. */
  readonly holds = new Map<string, Promise<void>>();
  /** Request lines (`METHOD path`, query excluded) answered only once the promise resolves. */
  readonly holdBefore = new Map<string, Promise<void>>();
  /** Blob bodies answered with one byte flipped (right length, wrong digest). */
  readonly corrupt = new Set<string>();
  /** A pause between a blob body's halves, so that concurrent requests meet a download still running. */
  midwayDelayMs = 0;
  /** Blob bodies whose connection is cut after the first half. */
  readonly cut = new Set<string>();
  /** Every request as it came: method, path (query included), its Authorization and Host headers. */
  readonly requests: Array<{ method: string; path: string; authorization?: string; host?: string }> = [];
  /** Exact paths (query excluded) answered by a handler of their own: token endpoints, blob storage, anything odd. */
  readonly routes = new Map<string, (req: IncomingMessage, res: ServerResponse) => void>();
  /** tags/list pages hold at most this many tags (a client's smaller `n` wins). */
  tagPageSize = 1000;
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

  constructor() {
    super();
    this.setMaxListeners(0);
  }

  async start(): Promise<this> {
    this.url = await listenLoopback(this.server);
    return this;
  }

  stop(): Promise<void> {
    return closeServer(this.server);
  }

  /** Forgets the request log and every hold, corruption and cut. */
  reset(): void {
    this.requests.length = 0;
    this.hits.clear();
    for (const m of [this.holds, this.holdBefore]) m.clear();
    for (const s of [this.corrupt, this.cut]) s.clear();
  }

  /** An image of `layers` (shared layers: pass the same Buffer to two images). */
  addImage(name: string, tag: string, layers: Buffer[]): MiniImage {
    return this.push(miniImage(name, tag, layers));
  }

  /** Serves `image` under its name and tag (or `tag`); `withBlobs: false` pushes the manifest alone. */
  push(image: MiniImage, opts: { tag?: string; withBlobs?: boolean } = {}): MiniImage {
    if (opts.withBlobs ?? true) for (const b of [image.config, ...image.layers]) this.putBlob(image.name, b.body);
    this.putManifest(image.name, opts.tag ?? image.tag, image.manifest);
    return image;
  }

  putBlob(name: string, body: Buffer): string {
    const digest = sha256(body);
    this.blobs.set(digest, body);
    this.links.set(name, (this.links.get(name) ?? new Set()).add(digest));
    return digest;
  }

  /** A manifest or index body of any shape under `name:tag` and by digest; returns its digest. */
  putManifest(name: string, tag: string, body: Buffer): string {
    const digest = sha256(body);
    this.manifests.set(`${name}:${tag}`, body);
    this.manifests.set(`${name}:${digest}`, body);
    return digest;
  }

  /**
   * An OCI index under `name:tag` of `entries`: images already added (each entry's `platform` as given, `{}`
   * included) or bare manifest bodies (no platform); every child by digest and its blobs too unless `withChildren`
   * is false.
   */
  addIndex(
    name: string,
    tag: string,
    entries: Array<Buffer | { image: MiniImage; platform?: Record<string, string> }>,
    opts: { withChildren?: boolean } = {},
  ): { digest: string; body: Buffer } {
    const children = entries.map((e) => (Buffer.isBuffer(e) ? { manifest: e, platform: undefined } : { manifest: e.image.manifest, platform: e.platform }));
    const body = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: children.map((c) => ({ mediaType: MediaType.ociManifest, digest: sha256(c.manifest), size: c.manifest.length, ...(c.platform ? { platform: c.platform } : {}) })),
    }));
    if (opts.withChildren ?? true) {
      for (const c of children) this.manifests.set(`${name}:${sha256(c.manifest)}`, c.manifest);
      for (const e of entries) if (!Buffer.isBuffer(e)) for (const b of [e.image.config, ...e.image.layers]) this.putBlob(name, b.body);
    }
    return { digest: this.putManifest(name, tag, body), body };
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

  /** The tags of `name`, sorted. */
  tags(name: string): string[] {
    const prefix = `${name}:`;
    return [...this.manifests.keys()].filter((k) => k.startsWith(prefix) && !k.startsWith(`${prefix}sha256:`)).map((k) => k.slice(prefix.length)).sort();
  }

  /** How many times `path` (query excluded) was asked, any method. */
  count(path: string): number {
    return this.hits.get(path) ?? 0;
  }

  /** How many times the request line `METHOD path` (query excluded) was asked. */
  times(line: string): number {
    return this.seen.filter((l) => l === line).length;
  }

  /** The request log as lines `METHOD path`, query excluded. */
  get seen(): string[] {
    return this.requests.map((r) => `${r.method} ${r.path.split('?')[0] ?? ''}`);
  }

  /** The request lines since `from` (an earlier `seen.length`). */
  since(from: number): string[] {
    return this.seen.slice(from);
  }

  /** Resolves once `path` has been asked for (at once if it was). */
  asked(path: string): Promise<void> {
    if (this.count(path) > 0) return Promise.resolve();
    return new Promise((resolve) => {
      const seen = (line: string): void => {
        if (line.slice(line.indexOf(' ') + 1) !== path) return;
        this.off('request', seen);
        resolve();
      };
      this.on('request', seen);
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    const line = `${req.method ?? ''} ${path}`;
    this.hits.set(path, this.count(path) + 1);
    const { authorization, host } = req.headers;
    this.requests.push({ method: req.method ?? '', path: req.url ?? '', ...(authorization ? { authorization } : {}), ...(host ? { host } : {}) });
    this.emit('request', line);
    await this.holdBefore.get(line);
    const route = this.routes.get(path);
    if (route) return route(req, res);
    const m = /^\/v2\/(.+)\/(manifests|blobs|referrers|tags)\/([^/]+)$/.exec(path);
    if (!m) return json(res, path === '/v2/' ? 200 : 404, path === '/v2/' ? {} : unknown('NAME_UNKNOWN'));
    const [, name = '', kind, ref = ''] = m;
    if (this.bearerRealm && req.headers.authorization !== `Bearer t:${name}`) {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${this.bearerRealm(name)}",service="mini",scope="repository:${name}:pull"`, 'content-type': 'application/json' });
      return void res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'token needed' }] }));
    }
    if (kind === 'tags' && ref === 'list') return this.tagsList(name, url, res);
    if (kind === 'referrers') return this.referrers(name, ref, res);
    if (kind === 'manifests') return this.manifest(name, ref, req, res);
    if (kind === 'blobs') return this.blob(name, ref, line, req, res);
    json(res, 404, unknown('NAME_UNKNOWN'));
  }

  private tagsList(name: string, url: URL, res: ServerResponse): void {
    const all = this.tags(name);
    if (all.length === 0) return json(res, 404, unknown('NAME_UNKNOWN'));
    const last = url.searchParams.get('last');
    const n = Math.min(Number(url.searchParams.get('n') ?? this.tagPageSize) || this.tagPageSize, this.tagPageSize);
    const after = last === null ? all : all.filter((t) => t > last);
    const page = after.slice(0, n);
    if (page.length < after.length) res.setHeader('link', `</v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(page.at(-1) ?? '')}>; rel="next"`);
    json(res, 200, { name, tags: page });
  }

  /** The OCI referrers API: an index of the repository's manifests whose subject is `digest`. */
  private referrers(name: string, digest: string, res: ServerResponse): void {
    const manifests = [...this.manifests.entries()]
      .filter(([k]) => k.startsWith(`${name}:sha256:`))
      .map(([, body]) => ({ body, doc: JSON.parse(body.toString('utf8')) as { mediaType?: string; artifactType?: string; subject?: { digest?: string } } }))
      .filter(({ doc }) => doc.subject?.digest === digest)
      .map(({ body, doc }) => ({ mediaType: doc.mediaType ?? MediaType.ociManifest, digest: sha256(body), size: body.length, ...(doc.artifactType ? { artifactType: doc.artifactType } : {}) }));
    const body = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });
    res.writeHead(200, { 'content-type': MediaType.ociIndex, 'content-length': Buffer.byteLength(body) }).end(body);
  }

  private manifest(name: string, ref: string, req: IncomingMessage, res: ServerResponse): void {
    const body = this.manifests.get(`${name}:${ref}`);
    if (!body) return json(res, 404, unknown('MANIFEST_UNKNOWN'));
    const mediaType = (JSON.parse(body.toString('utf8')) as { mediaType?: string }).mediaType ?? MediaType.ociManifest;
    res.writeHead(200, { 'content-type': mediaType, 'content-length': body.length, 'docker-content-digest': sha256(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private async blob(name: string, digest: string, line: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const elsewhere = req.method === 'GET' ? this.redirectBlob?.(digest) : undefined;
    if (elsewhere) return void res.writeHead(307, { location: elsewhere, 'content-length': 0 }).end();
    if (this.endless.has(digest) && req.method !== 'HEAD') return this.sendEndless(res);
    const blob = this.scopeBlobs && !this.links.get(name)?.has(digest) ? undefined : this.blobs.get(digest);
    if (!blob) return json(res, 404, unknown('BLOB_UNKNOWN'));
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length, 'docker-content-digest': digest });
    if (req.method === 'HEAD') return void res.end();
    const scripted = (keys: Set<string> | Map<string, unknown>): boolean => keys.has(digest) || keys.has(line);
    const body = Buffer.from(blob);
    if (scripted(this.corrupt)) body[body.length >> 1] = (body[body.length >> 1] ?? 0) ^ 0xff;
    const half = body.length >> 1;
    if (!(await write(res, body.subarray(0, half)))) return;
    this.emit('half', line);
    if (scripted(this.cut)) return void res.destroy();
    await (this.holds.get(line) ?? this.holds.get(digest));
    if (this.midwayDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.midwayDelayMs));
    res.end(body.subarray(half));
  }

  private async sendEndless(res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const piece = Buffer.alloc(64 * 1024, 0x5a);
    while (await write(res, piece)) this.endlessBytesSent += piece.length;
  }
}
