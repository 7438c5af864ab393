// The one scriptable in-process upstream registry of the component tests: images and indexes by tag and digest,
// paged tags/list, referrers, blobs (optionally per repository, or under /storage/<hex> as a redirect target),
// Bearer challenges, redirects, whole-registry failures, holds, scripted blob bodies (chunks, corruption, short,
// cut, stalled, endless), and a log of every request with events to await.
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { closeServer, json, write } from './http-server.js';
import { scriptedBytes, sendScripted, type BlobBehaviour } from './mini-blob.js';
import { miniImage, type MiniImage } from './mini-image.js';
import { referrersIndex, tagPage } from './mini-lists.js';
import { MediaType, sha256 } from '../kit/oci.js';

export { miniImage, type MiniImage } from './mini-image.js';

const unknown = (code: string): object => ({ errors: [{ code, message: 'unknown' }] });

/**
 * Scripting keys: holds, corruption and cuts take a blob digest (every repository) or a request line
 * `METHOD /v2/<name>/blobs/<digest>` (that one only); so does `behaviour`. Events: 'request' (line) as a request
 * arrives, before it is answered; 'half' (line) once the first half of a blob body is written; 'sent', 'cut' or
 * 'stalled' (digest) once a blob body ended so.
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
  /** Blob bodies sent as scripted: chunk size, a hand before each chunk, short, corrupt, cut or stalled. */
  readonly behaviour = new Map<string, BlobBehaviour>();
  /** When set, every registry request (not `routes`, not /storage/) is answered with this. */
  failAll: { status: number; headers?: Record<string, string>; body?: string } | undefined;
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

  /** Listens on a free port of `hostName` (a loopback name: 'localhost' is another origin than 127.0.0.1). */
  async start(hostName: '127.0.0.1' | 'localhost' = '127.0.0.1'): Promise<this> {
    this.server.listen(0, hostName);
    await once(this.server, 'listening');
    this.url = `http://${hostName}:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  stop(): Promise<void> {
    return closeServer(this.server);
  }

  /** Forgets the request log and every script: holds, corruption, cuts, behaviours, failures, auth, redirects. */
  reset(): void {
    this.requests.length = 0;
    this.hits.clear();
    for (const m of [this.holds, this.holdBefore, this.behaviour]) m.clear();
    for (const s of [this.corrupt, this.cut]) s.clear();
    this.failAll = undefined;
    this.bearerRealm = undefined;
    this.redirectBlob = undefined;
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

  /** A blob served through every repository (unless `scopeBlobs`); returns its digest. */
  addBlob(body: Buffer): string {
    const digest = sha256(body);
    this.blobs.set(digest, body);
    return digest;
  }

  /** A manifest document under `name` by digest, and under `tag` if given. */
  addManifest(name: string, doc: object, tag?: string): { digest: string; body: Buffer } {
    const body = Buffer.from(JSON.stringify(doc));
    const digest = sha256(body);
    this.manifests.set(`${name}:${digest}`, body);
    if (tag !== undefined) this.manifests.set(`${name}:${tag}`, body);
    return { digest, body };
  }

  /** A blob pushed to repository `name`; returns its digest. */
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
    const stored = /^\/storage\/([0-9a-f]{64})$/.exec(path);
    const storedBlob = stored ? this.blobs.get(`sha256:${stored[1]}`) : undefined;
    if (stored) return storedBlob ? this.sendBlob(storedBlob, `sha256:${stored[1]}`, line, req, res) : json(res, 404, unknown('BLOB_UNKNOWN'));
    if (this.failAll) {
      const { status, headers, body } = this.failAll;
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      return void res.end(body ?? JSON.stringify({ errors: [{ code: 'UNKNOWN', message: 'fake upstream failure' }] }));
    }
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
    const { tags, link } = tagPage(name, all, url.searchParams, this.tagPageSize);
    if (link) res.setHeader('link', link);
    json(res, 200, { name, tags });
  }

  private referrers(name: string, digest: string, res: ServerResponse): void {
    const bodies = [...this.manifests.entries()].filter(([k]) => k.startsWith(`${name}:sha256:`)).map(([, body]) => body);
    const body = referrersIndex(bodies, digest);
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
    await this.sendBlob(blob, digest, line, req, res);
  }

  private async sendBlob(blob: Buffer, digest: string, line: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const scripted = (keys: Set<string> | Map<string, unknown>): boolean => keys.has(digest) || keys.has(line);
    const b: BlobBehaviour = { ...this.behaviour.get(digest), ...this.behaviour.get(line) };
    if (scripted(this.corrupt)) b.corrupt = true;
    if (scripted(this.cut)) b.cutAtPercent ??= 50;
    const bytes = scriptedBytes(blob, b);
    const length = b.noLength ? {} : { 'content-length': b.lyingLength ? blob.length : bytes.length };
    res.writeHead(200, { 'content-type': 'application/octet-stream', ...length, 'docker-content-digest': digest });
    if (req.method === 'HEAD') return void res.end();
    const outcome = await sendScripted(res, bytes, b, async () => {
      this.emit('half', line);
      await (this.holds.get(line) ?? this.holds.get(digest));
      if (this.midwayDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.midwayDelayMs));
    });
    if (outcome !== 'gone') this.emit(outcome, digest);
  }

  private async sendEndless(res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const piece = Buffer.alloc(64 * 1024, 0x5a);
    while (await write(res, piece)) this.endlessBytesSent += piece.length;
  }
}
