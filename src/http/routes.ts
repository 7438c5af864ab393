// The registry HTTP surface: HEAD registered before GET on /v2/*, our own path parser, OCI errors
// for everything else (writes → 405 UNSUPPORTED, unknown paths → 404). Streams blobs and manifests, or redirects
// a blob GET to the object store when the mirror says so.
import type { OutgoingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError } from '../oci/errors.js';
import { parseRegistryUrl, type HostTable, type ParsedRequest } from '../oci/reference.js';
import { planContent, type ContentPlan } from './content.js';
import { clientOf } from './client-identity.js';
import type { BlobBytes, FetchNote, Mirror } from '../mirror/mirror.js';
import { isClosedWindowMiss } from '../mirror/access.js';
import { NO_REQUEST_METRICS, type Outcome, type RequestMetrics, type RouteKind } from '../metrics/ports.js';
import { MediaType } from '../oci/manifest.js';
import type { GrowingFile } from './blob-sender.js';
import type { BlobSender } from './zero-copy-sender.js';

/** What the registry listener needs, handed over at composition (app.ts): the mirror is its one door to content. */
export interface RegistryRoutesOptions {
  mirror: Mirror;
  hosts: HostTable;
  /** Requests by kind and outcome, and body bytes sent; none counted when absent. */
  metrics?: RequestMetrics;
  /** How blob files reach the socket (zero-copy-sender.ts): sendfile(2) or pooled buffers. */
  sender: BlobSender;
}

/** What one request's handling learnt for its metrics: whether upstream was asked for it, and what was sent. */
interface Served extends FetchNote {
  bytes: number;
  /** Sent as a 307 to the object store instead of the bytes. */
  redirected?: boolean;
}

const WRITE_METHODS = new Set(['PUT', 'POST', 'PATCH', 'DELETE']);
const MAX_TAGS_PAGE = 10_000;
/** Parses remembered: nodes ask for the same few paths over and over. Bounded, and emptied when full. */
const MAX_PARSED_URLS = 1024;
const MAX_PARSED_URL_LENGTH = 512;

/**
 * parseRegistryUrl remembered per raw URL (it depends on nothing else: the host table is fixed at start). Only
 * answers are kept, never refusals, and a parse is frozen: every request with that URL shares it.
 */
function memoisedParse(hosts: HostTable): (rawUrl: string) => ParsedRequest {
  const parsed = new Map<string, ParsedRequest>();
  return (rawUrl) => {
    const hit = parsed.get(rawUrl);
    if (hit) return hit;
    const p = parseRegistryUrl(rawUrl, hosts);
    if (rawUrl.length > MAX_PARSED_URL_LENGTH) return p;
    if (parsed.size >= MAX_PARSED_URLS) parsed.clear();
    Object.freeze(p.route);
    if (p.route.kind === 'manifest') Object.freeze(p.route.reference);
    parsed.set(rawUrl, Object.freeze(p));
    return p;
  };
}

export function registerRegistryRoutes(app: FastifyInstance, opts: RegistryRoutesOptions): void {
  const metrics = opts.metrics ?? NO_REQUEST_METRICS;
  const parse = memoisedParse(opts.hosts);
  const handler = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    let kind: RouteKind = 'other';
    const served: Served = { fetched: false, bytes: 0 };
    try {
      const parsed = parse(req.url);
      kind = parsed.route.kind;
      if (parsed.ns !== undefined) reply.header('oci-namespace', parsed.ns);
      await dispatch(req, reply, parsed, opts, served);
    } catch (e) {
      metrics.count(kind, outcomeOf(e));
      throw e;
    }
    metrics.count(kind, served.fetched ? 'miss-fetched' : 'hit');
    if (served.bytes > 0) metrics.sent(kind, served.bytes);
    if (served.redirected) metrics.redirected(kind);
    // Returning the reply tells fastify the answer is under way: an async handler that resolves to
    // undefined while a streamed body has not written its headers yet gets an empty 200 sent over it.
    return reply;
  };
  // HEAD first and by hand: fastify's automatic HEAD would run the GET handler and open the file.
  app.route({ method: 'HEAD', url: '/v2/*', handler });
  app.route({ method: 'GET', url: '/v2/*', handler });
  app.route({ method: ['HEAD', 'GET'], url: '/v2', handler });
  // Refused in onRequest, before fastify reads the body: a body it cannot parse (an upload's
  // application/octet-stream) or one over bodyLimit would otherwise turn the 405 into a 415 or 413.
  const unsupported = async (req: FastifyRequest): Promise<never> => {
    metrics.count('other', 'invalid');
    throw new RegistryError('UNSUPPORTED', 'sluice is a read-only mirror: this operation is unsupported', { method: req.method });
  };
  for (const method of WRITE_METHODS) {
    app.route({ method, url: '/*', onRequest: unsupported, handler: unsupported });
  }
}

/** The outcome label of a failed request (the decision order's refusals, then by status). */
function outcomeOf(e: unknown): Outcome {
  if (!(e instanceof RegistryError)) return 'error';
  if (e.kind === 'DENIED') return 'denied';
  if (isClosedWindowMiss(e)) return 'window-closed';
  if (e.status === 404) return 'not-found';
  return e.status < 500 ? 'invalid' : 'error';
}

/** Not async: it hands back the one route's promise, so a request costs no extra promise here. */
function dispatch(req: FastifyRequest, reply: FastifyReply, parsed: ParsedRequest, opts: RegistryRoutesOptions, served: Served): Promise<void> | undefined {
  const route = parsed.route;
  switch (route.kind) {
    case 'base':
      reply.header('content-type', 'application/json').send('{}');
      return undefined;
    case 'manifest':
      return serveManifest(req, reply, route, opts.mirror, served);
    case 'blob':
      return serveBlob(req, reply, route, opts, served);
    case 'tags':
      return serveTagsList(req, reply, parsed, route, opts.mirror);
    case 'referrers':
      return serveReferrers(req, reply, parsed, route, opts.mirror);
  }
}

type RouteOf<K extends ParsedRequest['route']['kind']> = Extract<ParsedRequest['route'], { kind: K }>;

async function serveManifest(req: FastifyRequest, reply: FastifyReply, route: RouteOf<'manifest'>, mirror: Mirror, served: Served): Promise<void> {
  const m = await mirror.manifest(route.host, route.name, route.reference, clientOf(req), served);
  const plan = planContent({
    method: req.method,
    digest: m.digest,
    sizeBytes: m.body.length,
    contentType: m.mediaType,
    ifNoneMatch: header(req, 'if-none-match'),
    ranges: false,
  });
  if (plan.sendBody) served.bytes = m.body.length;
  send(reply, plan, m.body);
}

/** HEAD and GET, in a window or not: the same refusal, the same list, the same pages. */
async function serveTagsList(req: FastifyRequest, reply: FastifyReply, parsed: ParsedRequest, route: RouteOf<'tags'>, mirror: Mirror): Promise<void> {
  const paging = pagingOf(parsed);
  const tags = await mirror.tags(route.host, route.name, clientOf(req), (msg, fields) => req.log.warn(fields, msg));
  serveTags(req, reply, parsed, pageTags(tags, paging), route.name);
}

async function serveReferrers(req: FastifyRequest, reply: FastifyReply, parsed: ParsedRequest, route: RouteOf<'referrers'>, mirror: Mirror): Promise<void> {
  const artifactType = parsed.query.get('artifactType') ?? undefined;
  let manifests = await mirror.referrers(route.host, route.name, route.digest, clientOf(req));
  if (artifactType !== undefined) {
    manifests = manifests.filter((d) => d.artifactType === artifactType);
    reply.header('oci-filters-applied', 'artifactType');
  }
  // A Buffer, so fastify sends the media type exactly as given (a string would get "; charset=utf-8").
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }));
  reply.code(200).header('content-type', MediaType.ociIndex).send(body);
}

async function serveBlob(req: FastifyRequest, reply: FastifyReply, route: RouteOf<'blob'>, { mirror, sender }: RegistryRoutesOptions, served: Served): Promise<void> {
  const rangeHeader = header(req, 'range');
  // containerd's "bytes=0-" can be sent from a download still arriving; any other range needs the verified blob.
  const fromOffset = rangeHeader !== undefined && !/^\s*bytes\s*=\s*0-\s*$/.test(rangeHeader);
  const body = await mirror.blob({ host: route.host, name: route.name, digest: route.digest, client: clientOf(req), fromOffset });
  served.fetched = body.fetched;
  const plan = planContent({
    method: req.method,
    digest: route.digest,
    sizeBytes: body.sizeBytes,
    contentType: 'application/octet-stream',
    ifNoneMatch: header(req, 'if-none-match'),
    range: body.ranges ? rangeHeader : undefined,
    ranges: true,
  });
  // HEAD and 304 never open the blob.
  if (!plan.sendBody) {
    send(reply, plan);
    return;
  }
  const bytes = await body.open(plan.range);
  served.fetched = body.fetched;
  if (bytes.kind === 'redirect') {
    served.redirected = true;
    redirect(reply, route.digest, bytes.url);
    return;
  }
  served.bytes = await sendBytes(reply, plan, bytes, sender);
}

/**
 * 307 (GET stays GET, the client's Range goes along) to where the object store serves the blob itself. The URL is
 * a bearer token until it expires: no cache may keep it.
 */
function redirect(reply: FastifyReply, digest: string, url: string): void {
  reply.code(307).headers({ location: url, 'docker-content-digest': digest, 'cache-control': 'no-store' }).send();
}

/** Resolves to the body bytes sent. */
function sendBytes(reply: FastifyReply, plan: ContentPlan, bytes: Exclude<BlobBytes, { kind: 'redirect' }>, sender: BlobSender): Promise<number> | number {
  switch (bytes.kind) {
    case 'buffer':
      send(reply, plan, bytes.bytes);
      return bytes.bytes.length;
    case 'stream':
      // The range as planned (the stream is fastify's to send).
      send(reply, plan, bytes.stream);
      return bytes.sizeBytes;
    case 'fd':
      return sendFd(reply, plan, sender, bytes.fd, bytes.range);
    case 'growing':
      return sendFd(reply, plan, sender, bytes.fd, bytes.range, bytes.file);
  }
}

/** Straight from the file to the socket: sendfile(2) for a committed blob, else pooled buffers (zero-copy-sender.ts). */
async function sendFd(reply: FastifyReply, plan: ContentPlan, sender: BlobSender, fd: number, range: { start: number; end: number }, growing?: GrowingFile): Promise<number> {
  reply.hijack();
  const head: OutgoingHttpHeaders = { ...plan.headers };
  for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) head[k] = v;
  reply.raw.writeHead(plan.status, head);
  return sender.send(fd, range.start, range.end, reply.raw, growing);
}

function send(reply: FastifyReply, plan: ContentPlan, body?: Buffer | Readable): void {
  // fastify keeps our Content-Length on HEAD and 304 when no payload is given.
  reply.code(plan.status).headers(plan.headers);
  reply.send(plan.sendBody ? body : undefined);
}

interface Paging {
  n: number;
  last: string | null;
}

/** `n` and `last` of a tags/list request, checked before anything is listed. */
function pagingOf(parsed: ParsedRequest): Paging {
  const nRaw = parsed.query.get('n');
  if (nRaw !== null && !/^\d{1,6}$/.test(nRaw)) {
    throw new RegistryError('PAGINATION_NUMBER_INVALID', 'invalid number of results requested', { n: nRaw.slice(0, 20) });
  }
  return { n: nRaw === null ? MAX_TAGS_PAGE : Math.min(Number(nRaw), MAX_TAGS_PAGE), last: parsed.query.get('last') };
}

/** The one pager, over a list that holds allowed tags only: its cursor can only ever name an allowed tag. */
function pageTags(allowed: string[], { n, last }: Paging): { tags: string[]; next?: Paging } {
  const sorted = [...new Set(allowed)].sort();
  const after = last === null ? sorted : sorted.filter((t) => t > last);
  const tags = after.slice(0, n);
  const cursor = tags[tags.length - 1];
  return after.length > tags.length && cursor !== undefined ? { tags, next: { n, last: cursor } } : { tags };
}

function serveTags(req: FastifyRequest, reply: FastifyReply, parsed: ParsedRequest, page: { tags: string[]; next?: Paging }, name: string): void {
  if (page.next) {
    const path = req.url.split('?')[0] ?? '';
    const q = new URLSearchParams();
    if (parsed.ns !== undefined) q.set('ns', parsed.ns);
    q.set('n', String(page.next.n));
    q.set('last', page.next.last ?? '');
    reply.header('link', `<${path}?${q.toString()}>; rel="next"`);
  }
  // On HEAD Node drops the body; fastify still sets its Content-Length, so HEAD is GET minus the body.
  reply.code(200).header('content-type', 'application/json').send(JSON.stringify({ name, tags: page.tags }));
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
