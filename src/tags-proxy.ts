// tags/list passthrough while a window is open, on @fastify/http-proxy (forwarding is exactly its job here):
// the upstream's own list, with its auth and host, filtered by the allowlist. Closed window → routes.ts serves the store.
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import httpProxy, { type FastifyHttpProxyOptions } from '@fastify/http-proxy';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { UpstreamConfig } from './config.js';
import { RegistryError } from './errors.js';
import type { Mirror } from './mirror.js';
import { parseRegistryUrl, type HostTable, type Route } from './reference.js';

const MAX_TAGS_BODY = 4 * 1024 * 1024;
type TagsRoute = Extract<Route, { kind: 'tags' }>;
interface UpstreamResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  stream: Readable;
}

declare module 'fastify' {
  interface FastifyRequest {
    tagsPassthrough?: { route: TagsRoute; ns?: string; authorization?: string };
  }
}

/** The fastify constraint that sends a tags/list request to its upstream's proxy route while a window is open. */
export function passthroughConstraint(mirror: () => Mirror | undefined, hosts: HostTable) {
  const table = new Map<string, unknown>();
  return {
    name: 'sluiceUpstream',
    mustMatchWhenDerived: false,
    storage: () => ({
      get: (host: string) => (table.get(host) ?? null) as never,
      set: (host: string, store: unknown) => void table.set(host, store),
    }),
    deriveConstraint: (req: { url?: string; method?: string }): string | undefined => {
      const url = req.url ?? '';
      const m = mirror();
      if (req.method !== 'GET' || !url.includes('/tags/list') || !m?.isWindowOpen()) return undefined;
      try {
        const parsed = parseRegistryUrl(url, hosts);
        return parsed.route.kind === 'tags' ? parsed.route.host : undefined;
      } catch {
        return undefined;
      }
    },
  };
}

export async function registerTagsPassthrough(app: FastifyInstance, mirror: Mirror, hosts: HostTable, upstreams: Map<string, UpstreamConfig>, ca: (u: UpstreamConfig) => string | undefined): Promise<void> {
  for (const u of upstreams.values()) {
    // Each proxy in its own scope: every registration decorates reply.from.
    await app.register(async (scope) => {
      const options: FastifyHttpProxyOptions = {
        upstream: u.url,
        prefix: '/v2',
        routes: ['/*'],
        httpMethods: ['GET'],
        constraints: { sluiceUpstream: u.host },
        proxyPayloads: false,
        undici: { connect: { ca: ca(u), rejectUnauthorized: !(u.tls?.insecureSkipVerify ?? false) } },
        preHandler: (req, _reply, done) => {
          prepare(req, u, mirror, hosts).then(() => done(), done);
        },
        // Our parser, not the proxy's prefix rewrite, decides the upstream path (host prefix, ns, library/).
        handler: (req, reply, _dest, options) => {
          // The window gate at send time: it may have closed since the route was chosen (Upstream.send gates the rest).
          if (!mirror.isWindowOpen()) {
            fromStore(req, reply, mirror, 'upstream access closed').catch((e: unknown) => reply.send(e));
            return;
          }
          reply.from(upstreamPath(req), options);
        },
        replyOptions: {
          queryString: (_search, _url, req) => upstreamQuery(req as FastifyRequest),
          rewriteRequestHeaders: (req: { url?: string }, headers: IncomingHttpHeaders) => upstreamHeaders(u, req, headers),
          rewriteHeaders: () => ({}),
          // reply-from's types allow HTTP/2; sluice's listeners are HTTP/1.1 only.
          onResponse: (req, reply, res) => {
            answer(req as FastifyRequest, reply as FastifyReply, res as unknown as UpstreamResponse, mirror).catch((e: unknown) => reply.send(e));
          },
          onError: (reply, { error }) => {
            fromStore(reply.request as FastifyRequest, reply as FastifyReply, mirror, `upstream ${u.host} unreachable: ${error.message}`)
              .catch((e: unknown) => reply.send(e));
          },
        },
      };
      await scope.register(httpProxy, options);
    });
  }
}

async function prepare(req: FastifyRequest, u: UpstreamConfig, mirror: Mirror, hosts: HostTable): Promise<void> {
  const parsed = parseRegistryUrl(req.url, hosts);
  if (parsed.route.kind !== 'tags') throw new RegistryError('NOT_FOUND', 'no such route in the registry API');
  // The allowlist applies before the upstream is asked anything: a repository no rule names is refused.
  await mirror.checkRepository(parsed.route.host, parsed.route.name, req.ip);
  req.tagsPassthrough = { route: parsed.route, ns: parsed.ns };
  try {
    req.tagsPassthrough.authorization = await mirror.upstreamFor(u.host)?.authorizationFor(parsed.route.name);
  } catch (e) {
    if (mirror.isWindowOpen()) throw e; // closed meanwhile (the gate refused or aborted it): the handler answers from the store
  }
}

/** The upstream path: host prefix and ns dropped, Docker Hub's library/ kept. */
function upstreamPath(req: FastifyRequest): string {
  return `/v2/${req.tagsPassthrough?.route.name ?? ''}/tags/list`;
}

/** Only the paging parameters go upstream (never ns or anything else the client sent). */
function upstreamQuery(req: FastifyRequest): string {
  return pagingOf(req.url.split('?')[1] ?? '').toString();
}

/** Only the tags/list paging parameters `n` and `last` of a query, in that order. */
function pagingOf(query: string, into = new URLSearchParams()): URLSearchParams {
  const q = new URLSearchParams(query);
  for (const key of ['n', 'last']) {
    const v = q.get(key);
    if (v !== null) into.set(key, v);
  }
  return into;
}

function upstreamHeaders(u: UpstreamConfig, req: { url?: string }, _client: IncomingHttpHeaders): IncomingHttpHeaders {
  // Never forward the client's headers (its Authorization belongs to sluice, not to the upstream).
  const auth = (req as FastifyRequest).tagsPassthrough?.authorization;
  return { host: new URL(u.url).host, accept: 'application/json', 'user-agent': 'sluice', ...(auth ? { authorization: auth } : {}) };
}

async function answer(req: FastifyRequest, reply: FastifyReply, res: UpstreamResponse, mirror: Mirror): Promise<void> {
  const ctx = req.tagsPassthrough;
  if (!ctx) return;
  if (res.statusCode === 404) {
    res.stream.resume();
    sendRegistryError(reply, new RegistryError('NAME_UNKNOWN', 'repository name not known to registry', { name: ctx.route.name }));
    return;
  }
  if (res.statusCode !== 200) {
    res.stream.resume();
    await fromStore(req, reply, mirror, `upstream answered ${res.statusCode}`);
    return;
  }
  let doc: { tags?: unknown };
  try {
    doc = JSON.parse((await readLimited(res.stream)).toString('utf8')) as { tags?: unknown };
  } catch (e) {
    await fromStore(req, reply, mirror, `upstream tags list unreadable: ${(e as Error).message}`);
    return;
  }
  const upstreamTags = Array.isArray(doc.tags) ? doc.tags.filter((t): t is string => typeof t === 'string') : [];
  const tags = (await mirror.filterTags(ctx.route.host, ctx.route.name, upstreamTags)).sort();
  const link = nextLink(res.headers.link, req, ctx.ns);
  reply.code(200).header('content-type', 'application/json');
  if (link) reply.header('link', link);
  reply.send(JSON.stringify({ name: ctx.route.name, tags }));
}

async function fromStore(req: FastifyRequest, reply: FastifyReply, mirror: Mirror, why: string): Promise<void> {
  const ctx = req.tagsPassthrough;
  if (!ctx) {
    sendRegistryError(reply, new RegistryError('UPSTREAM_FAILED', why));
    return;
  }
  req.log.warn({ host: ctx.route.host, name: ctx.route.name, why }, 'tags/list from the store instead of the upstream');
  const tags = await mirror.tags(ctx.route.host, ctx.route.name);
  reply.code(200).header('content-type', 'application/json').send(JSON.stringify({ name: ctx.route.name, tags }));
}

/** Re-points the upstream's next-page Link at our own path, keeping its `last` cursor. */
function nextLink(header: string | string[] | undefined, req: FastifyRequest, ns: string | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  const m = value ? /<([^>]*)>\s*;\s*rel="?next"?/.exec(value) : null;
  if (!m?.[1]) return undefined;
  const q = new URLSearchParams();
  if (ns !== undefined) q.set('ns', ns);
  pagingOf(m[1].split('?')[1] ?? '', q);
  return `<${req.url.split('?')[0] ?? ''}?${q.toString()}>; rel="next"`;
}

async function readLimited(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_TAGS_BODY) {
      stream.destroy();
      throw new Error('tags list larger than 4 MiB');
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function sendRegistryError(reply: FastifyReply, err: RegistryError): void {
  reply.code(err.status).header('content-type', 'application/json').send(JSON.stringify(err.toBody()));
}
