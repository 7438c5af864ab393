// The upstream client against in-process fake registries on loopback: anonymous, Bearer and Basic auth,
// redirects to another host without Authorization, realm checks, error mapping and timeouts.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { RegistryError } from '../../src/oci/errors.js';
import { parseWwwAuthenticate, Upstream, type UpstreamOptions } from '../../src/upstream/client.js';
import { MediaType, sha256 } from '../kit/oci.js';

type Handler = (req: IncomingMessage, res: ServerResponse, self: Fake) => void;
interface Fake {
  /** Base URL, with the host name the test chose ('127.0.0.1' or 'localhost'). */
  url: string;
  requests: Array<{ method: string; url: string; authorization?: string }>;
  count(path: string): number;
}

const servers: Server[] = [];
const upstreams: Upstream[] = [];

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(upstreams.splice(0).map((u) => u.close()));
  await Promise.all(
    servers.splice(0).map((s) => {
      s.closeAllConnections();
      return new Promise((resolve) => s.close(resolve));
    }),
  );
});

async function fake(handler: Handler, hostName: '127.0.0.1' | 'localhost' = '127.0.0.1'): Promise<Fake> {
  const self: Fake = {
    url: '',
    requests: [],
    count: (path) => self.requests.filter((r) => r.url.split('?')[0] === path).length,
  };
  const server = createServer((req, res) => {
    self.requests.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    handler(req, res, self);
  });
  servers.push(server);
  server.listen(0, hostName);
  await once(server, 'listening');
  self.url = `http://${hostName}:${(server.address() as AddressInfo).port}`;
  return self;
}

function upstream(url: string, extra: Partial<UpstreamOptions> = {}): Upstream {
  const u = new Upstream({ host: 'reg.test', url, connectTimeoutMs: 2000, idleTimeoutMs: 2000, ...extra });
  upstreams.push(u);
  return u;
}

const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, layers: [] }));
const MANIFEST_DIGEST = sha256(MANIFEST);
const BLOB = Buffer.from('layer bytes '.repeat(1000));
const BLOB_DIGEST = sha256(BLOB);

/** A minimal registry: one manifest, one blob, tags, and whatever `extra` adds first. */
function registry(extra?: (req: IncomingMessage, res: ServerResponse) => boolean): Handler {
  return (req, res) => {
    if (extra?.(req, res)) return;
    const path = (req.url ?? '').split('?')[0];
    if (/^\/v2\/library\/busybox\/manifests\/(1\.36|sha256:[0-9a-f]{64})$/.test(path)) {
      res.writeHead(200, { 'content-type': MediaType.ociManifest, 'docker-content-digest': MANIFEST_DIGEST, 'content-length': MANIFEST.length });
      res.end(req.method === 'HEAD' ? undefined : MANIFEST);
    } else if (path === `/v2/library/busybox/blobs/${BLOB_DIGEST}`) {
      res.writeHead(200, { 'content-length': BLOB.length, 'content-type': 'application/octet-stream' });
      res.end(BLOB);
    } else if (path === '/v2/library/busybox/tags/list') {
      res.writeHead(200, { 'content-type': 'application/json', link: '</v2/library/busybox/tags/list?n=2&last=1.36>; rel="next"' });
      res.end(JSON.stringify({ name: 'library/busybox', tags: ['1.35', '1.36'] }));
    } else if (path === '/v2/') {
      res.writeHead(200).end('{}');
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
    }
  };
}

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

async function rejection(p: Promise<unknown>): Promise<RegistryError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(RegistryError);
  return e as RegistryError;
}

const ACCEPT = [MediaType.ociManifest, MediaType.ociIndex];

describe('anonymous upstream', () => {
  it('gets and heads manifests, streams blobs, lists tags', async () => {
    const reg = await fake(registry());
    const u = upstream(reg.url);
    const m = await u.getManifest('library/busybox', '1.36', ACCEPT);
    expect(m).toEqual({ status: 200, body: MANIFEST, mediaType: MediaType.ociManifest, digest: MANIFEST_DIGEST });
    expect(await u.headManifest('library/busybox', MANIFEST_DIGEST, ACCEPT)).toEqual({
      digest: MANIFEST_DIGEST,
      mediaType: MediaType.ociManifest,
      sizeBytes: MANIFEST.length,
    });
    const blob = await u.getBlob('library/busybox', BLOB_DIGEST);
    expect(blob.sizeBytes).toBe(BLOB.length);
    expect(await readAll(blob.body)).toEqual(BLOB);
    expect(await u.tagsList('library/busybox', 2)).toEqual({ name: 'library/busybox', tags: ['1.35', '1.36'], nextLast: '1.36' });
    expect(await u.authorizationFor('library/busybox')).toBeUndefined();
    expect(u.requestCount).toBe(5);
    expect(reg.requests.every((r) => r.authorization === undefined)).toBe(true);
  });

  it('sends the Accept list and the tag query', async () => {
    const seen: string[] = [];
    const reg = await fake(registry((req) => (seen.push(`${req.headers.accept} ${req.url}`), false)));
    const u = upstream(reg.url);
    await u.getManifest('library/busybox', '1.36', ACCEPT);
    await u.tagsList('library/busybox', 10, '1.0');
    expect(seen).toEqual([`${ACCEPT.join(', ')} /v2/library/busybox/manifests/1.36`, `application/json /v2/library/busybox/tags/list?n=10&last=1.0`]);
  });

  it('answers referrers, filtering when the upstream did not', async () => {
    const index = {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [
        { mediaType: MediaType.ociManifest, digest: BLOB_DIGEST, size: 10, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' },
        { mediaType: MediaType.ociManifest, digest: MANIFEST_DIGEST, size: 11, artifactType: 'application/spdx+json' },
      ],
    };
    const reg = await fake(
      registry((req, res) => {
        if (!req.url?.startsWith('/v2/library/busybox/referrers/')) return false;
        res.writeHead(200, { 'content-type': MediaType.ociIndex }).end(JSON.stringify(index));
        return true;
      }),
    );
    const u = upstream(reg.url);
    const got = await u.referrers('library/busybox', MANIFEST_DIGEST, 'application/vnd.dev.sigstore.bundle.v0.3+json');
    expect(got?.manifests.map((d) => d.digest)).toEqual([BLOB_DIGEST]);
    expect(reg.requests[0].url).toBe(`/v2/library/busybox/referrers/${MANIFEST_DIGEST}?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson`);
    expect((await u.referrers('library/busybox', MANIFEST_DIGEST))?.manifests).toHaveLength(2);
  });

  it('returns null for referrers when the upstream has no referrers API', async () => {
    const reg = await fake(registry());
    expect(await upstream(reg.url).referrers('library/busybox', MANIFEST_DIGEST)).toBeNull();
  });

  it('refuses invalid names before dialling', async () => {
    const reg = await fake(registry());
    const u = upstream(reg.url);
    expect((await rejection(u.getManifest('../etc', 'x', ACCEPT))).kind).toBe('NAME_INVALID');
    expect((await rejection(u.getManifest('library/busybox', 'a/b', ACCEPT))).kind).toBe('TAG_INVALID');
    expect((await rejection(u.getBlob('library/busybox', 'sha256:../x'))).kind).toBe('DIGEST_INVALID');
    expect(reg.requests).toHaveLength(0);
  });
});

/** A registry behind a Bearer token service at `realmBase`/token, which checks service and scope. */
async function bearerRegistry(
  opts: { expiresIn?: number; needBasic?: string; realmHost?: 'localhost'; route?: (req: IncomingMessage, res: ServerResponse) => boolean } = {},
) {
  let issued = 0;
  const tokenScopes: string[] = [];
  const reg = await fake((req, res, self) => {
    const url = new URL(req.url ?? '', 'http://x');
    if (url.pathname === '/token') {
      if (opts.needBasic && req.headers.authorization !== opts.needBasic) return void res.writeHead(401).end();
      const scope = url.searchParams.get('scope') ?? '';
      tokenScopes.push(scope);
      if (url.searchParams.get('service') !== 'fake-registry' || !/^repository:[a-z/]+:pull$/.test(scope)) return void res.writeHead(400).end();
      issued++;
      const body = { token: `tok-${issued}|${scope}`, ...(opts.expiresIn ? { expires_in: opts.expiresIn } : {}) };
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    }
    const name = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(url.pathname)?.[1];
    const auth = req.headers.authorization ?? '';
    if (!name || !auth.startsWith('Bearer tok-') || !auth.endsWith(`|repository:${name}:pull`)) {
      const realm = `${opts.realmHost ? self.url.replace('127.0.0.1', 'localhost') : self.url}/token`;
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="${realm}",service="fake-registry",scope="repository:${name ?? ''}:pull"`,
        'content-type': 'application/json',
      });
      return void res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
    }
    registry(opts.route)(req, res, self);
  });
  return { reg, tokenScopes, tokenRequests: () => reg.count('/token') };
}

describe('Bearer token flow', () => {
  it('fetches one token per scope and reuses it', async () => {
    const { reg, tokenScopes, tokenRequests } = await bearerRegistry();
    const u = upstream(reg.url);
    expect((await u.getManifest('library/busybox', '1.36', ACCEPT)).body).toEqual(MANIFEST);
    expect((await u.getManifest('library/busybox', MANIFEST_DIGEST, ACCEPT)).body).toEqual(MANIFEST);
    expect(await readAll((await u.getBlob('library/busybox', BLOB_DIGEST)).body)).toEqual(BLOB);
    expect(tokenRequests()).toBe(1);
    // 401, token, retry; then the two later requests carry the cached token at once.
    expect(u.requestCount).toBe(5);
    expect(tokenScopes).toEqual(['repository:library/busybox:pull']);
    expect(await u.authorizationFor('library/busybox')).toBe('Bearer tok-1|repository:library/busybox:pull');
    expect(tokenRequests()).toBe(1);
  });

  it('shares one token request among concurrent pulls of a new repository', async () => {
    const { reg, tokenRequests } = await bearerRegistry();
    const u = upstream(reg.url);
    await u.getManifest('library/busybox', '1.36', ACCEPT);
    const results = await Promise.all(Array.from({ length: 5 }, () => rejection(u.getManifest('library/alpine', '3.20', ACCEPT))));
    // Authorised, so the fake's 404 for an unknown manifest comes through.
    expect(results.map((e) => e.kind)).toEqual(Array(5).fill('MANIFEST_UNKNOWN'));
    expect(tokenRequests()).toBe(2);
  });

  it('asks for a new token after expiry', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { reg, tokenRequests } = await bearerRegistry({ expiresIn: 300 });
    const u = upstream(reg.url);
    await u.getManifest('library/busybox', '1.36', ACCEPT);
    vi.setSystemTime(Date.now() + 200_000);
    await u.getManifest('library/busybox', '1.36', ACCEPT);
    expect(tokenRequests()).toBe(1);
    vi.setSystemTime(Date.now() + 90_000); // past expires_in minus the renewal margin
    await u.getManifest('library/busybox', '1.36', ACCEPT);
    expect(tokenRequests()).toBe(2);
  });

  it('authenticates the token request with Basic credentials when configured', async () => {
    const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
    const { reg } = await bearerRegistry({ needBasic: basic });
    const good = upstream(reg.url, { auth: { username: 'alice', password: 's3cret' } });
    expect((await good.getManifest('library/busybox', '1.36', ACCEPT)).body).toEqual(MANIFEST);
    const bad = upstream(reg.url, { auth: { username: 'alice', password: 'nope' } });
    const e = await rejection(bad.getManifest('library/busybox', '1.36', ACCEPT));
    expect([e.kind, e.status]).toEqual(['DENIED', 403]);
    expect(e.message).toMatch(/^upstream reg\.test: token for repository:library\/busybox:pull from 127\.0\.0\.1:\d+ refused \(HTTP 401\); check upstreams\.reg\.test\.auth$/);
  });

  it('refuses a token realm on a foreign host', async () => {
    const { reg, tokenRequests } = await bearerRegistry({ realmHost: 'localhost' });
    const u = upstream(reg.url);
    const e = await rejection(u.getManifest('library/busybox', '1.36', ACCEPT));
    expect([e.kind, e.status]).toEqual(['UPSTREAM_FAILED', 502]);
    expect(e.message).toMatch(/^upstream reg\.test: refusing its token realm http:\/\/localhost:\d+: a realm must be the upstream's own origin \(http:\/\/127\.0\.0\.1:\d+\) or listed in upstreams\.reg\.test\.tokenRealms$/);
    expect(tokenRequests()).toBe(0);
  });

  it('maps Docker Hub 401 for an anonymous pull to unknown', async () => {
    const reg = await fake((req, res, self) => {
      if (req.url?.startsWith('/token')) return void res.writeHead(200).end(JSON.stringify({ access_token: 'x' }));
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${self.url}/token",service="s"` }).end();
    });
    const hub = upstream(reg.url, { dockerHub: true });
    const e = await rejection(hub.getManifest('library/nope', 'latest', ACCEPT));
    expect(e.kind).toBe('MANIFEST_UNKNOWN');
    expect(e.message).toBe('upstream reg.test has no manifest library/nope:latest (Docker Hub answers 401 when a repository does not exist or is private)');
    // A fresh token that is refused is not asked for again.
    expect(reg.count('/token')).toBe(1);
    const other = upstream(reg.url);
    expect((await rejection(other.getManifest('library/nope', 'latest', ACCEPT))).kind).toBe('DENIED');
  });
});

describe('Basic auth upstream', () => {
  const expected = `Basic ${Buffer.from('bob:pw').toString('base64')}`;
  const basicRegistry = (): Promise<Fake> =>
    fake((req, res, self) => {
      if (req.headers.authorization !== expected) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="fake"' }).end();
      registry()(req, res, self);
    });

  it('retries with Basic credentials, then sends them up front', async () => {
    const reg = await basicRegistry();
    const u = upstream(reg.url, { auth: { username: 'bob', password: 'pw' } });
    await u.getManifest('library/busybox', '1.36', ACCEPT);
    await u.getManifest('library/busybox', '1.36', ACCEPT);
    expect(reg.requests.map((r) => r.authorization)).toEqual([undefined, expected, expected]);
    expect(await u.authorizationFor('library/busybox')).toBe(expected);
  });

  it('says credentials are needed, or were refused', async () => {
    const reg = await basicRegistry();
    const none = await rejection(upstream(reg.url).getManifest('library/busybox', '1.36', ACCEPT));
    expect([none.kind, none.message]).toEqual([
      'DENIED',
      'upstream reg.test requires basic credentials for manifest library/busybox:1.36; configure upstreams.reg.test.auth',
    ]);
    const wrong = upstream(reg.url, { auth: { username: 'bob', password: 'bad' } });
    const e = await rejection(wrong.getManifest('library/busybox', '1.36', ACCEPT));
    expect([e.kind, e.message]).toEqual([
      'DENIED',
      'upstream reg.test refused access to manifest library/busybox:1.36 (HTTP 401); check upstreams.reg.test.auth',
    ]);
    expect(wrong.requestCount).toBe(2);
  });
});

describe('redirects', () => {
  it('follows a blob redirect to another host without Authorization', async () => {
    const storage = await fake((_req, res) => void res.writeHead(200, { 'content-length': BLOB.length }).end(BLOB), 'localhost');
    const { reg } = await bearerRegistry({
      route: (req, res) => {
        if (!req.url?.includes('/blobs/')) return false;
        res.writeHead(307, { location: `${storage.url}/bucket/blob?sig=abc` }).end();
        return true;
      },
    });
    // The blob host is on loopback: named in redirectHosts, as loopback targets must be.
    const u = upstream(reg.url, { redirectHosts: [new URL(storage.url).host] });
    const blob = await u.getBlob('library/busybox', BLOB_DIGEST);
    expect(await readAll(blob.body)).toEqual(BLOB);
    expect(storage.requests).toEqual([{ method: 'GET', url: '/bucket/blob?sig=abc', authorization: undefined }]);
    expect(reg.requests.at(-1)?.authorization).toMatch(/^Bearer tok-1/);
  });

  it('keeps Authorization on a same-origin redirect, and relative Locations work', async () => {
    const { reg } = await bearerRegistry({
      route: (req, res) => {
        if (!req.url?.endsWith('/blobs/sha256:' + 'a'.repeat(64))) return false;
        res.writeHead(302, { location: `/v2/library/busybox/blobs/${BLOB_DIGEST}` }).end();
        return true;
      },
    });
    const u = upstream(reg.url);
    expect(await readAll((await u.getBlob('library/busybox', 'sha256:' + 'a'.repeat(64))).body)).toEqual(BLOB);
    expect(reg.requests.at(-1)).toEqual({ method: 'GET', url: `/v2/library/busybox/blobs/${BLOB_DIGEST}`, authorization: expect.stringMatching(/^Bearer tok-1/) });
  });

  it('gives up after 5 redirects', async () => {
    const reg = await fake((req, res) => void res.writeHead(302, { location: `${req.url}x` }).end());
    const u = upstream(reg.url);
    const e = await rejection(u.getBlob('library/busybox', BLOB_DIGEST));
    expect([e.kind, e.message]).toEqual(['UPSTREAM_FAILED', `upstream reg.test: blob library/busybox@${BLOB_DIGEST}: more than 5 redirects`]);
    expect(reg.requests).toHaveLength(6);
  });
});

describe('the window gate', () => {
  /** A gate the test closes; it counts what it refused, as the window gate in app.ts would throw. */
  function gate() {
    const g = { open: true, refused: [] as string[], check: (what: string): void => {
      if (g.open) return;
      g.refused.push(what);
      throw new RegistryError('MANIFEST_UNKNOWN', `${what} not cached; upstream access closed`);
    } };
    return g;
  }

  it('closed: no request leaves for a manifest, a HEAD, a blob, tags, referrers or the /v2/ probe', async () => {
    const reg = await fake(registry());
    const g = gate();
    g.open = false;
    const u = upstream(reg.url, { gate: g.check });
    const calls: Array<() => Promise<unknown>> = [
      () => u.getManifest('library/busybox', '1.36', ACCEPT),
      () => u.headManifest('library/busybox', '1.36', ACCEPT),
      () => u.getBlob('library/busybox', BLOB_DIGEST),
      () => u.tagsList('library/busybox'),
      () => u.referrers('library/busybox', MANIFEST_DIGEST),
      () => u.authorizationFor('library/busybox'),
    ];
    for (const call of calls) expect((await rejection(call())).message).toMatch(/upstream access closed/);
    expect(reg.requests).toEqual([]);
    expect(u.requestCount).toBe(0);
    expect(g.refused).toHaveLength(6);
  });

  it('closing between the 401 and the token request: the token request is not sent', async () => {
    const g = gate();
    const reg = await fake((_req, res, self) => {
      g.open = false; // the window closes while the upstream answers with its challenge
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${self.url}/token",service="s"` }).end();
    });
    const u = upstream(reg.url, { gate: g.check });
    expect((await rejection(u.getManifest('library/busybox', '1.36', ACCEPT))).message).toMatch(/upstream access closed/);
    expect(reg.requests.map((r) => r.url)).toEqual(['/v2/library/busybox/manifests/1.36']);
    expect(g.refused).toEqual(['token for repository:library/busybox:pull from ' + new URL(reg.url).host]);
  });

  it('closing before a redirect hop: the hop is not sent', async () => {
    const g = gate();
    const storage = await fake((_req, res) => void res.writeHead(200, { 'content-length': BLOB.length }).end(BLOB));
    const reg = await fake(registry((req, res) => {
      if (!req.url?.includes('/blobs/')) return false;
      g.open = false; // the window closes while the upstream answers with its redirect
      res.writeHead(307, { location: `${storage.url}/bucket/blob` }).end();
      return true;
    }));
    const u = upstream(reg.url, { gate: g.check, redirectHosts: [new URL(storage.url).host] });
    expect((await rejection(u.getBlob('library/busybox', BLOB_DIGEST))).message).toMatch(/upstream access closed/);
    expect(storage.requests).toEqual([]);
  });

  it('abortInFlight abandons a manifest request in flight but lets a blob download already sent finish', async () => {
    let release: (() => void) | undefined;
    const reg = await fake(registry((req, res) => {
      const path = req.url ?? '';
      if (path.includes('/manifests/')) return true; // never answers
      if (!path.includes('/blobs/')) return false;
      res.writeHead(200, { 'content-length': BLOB.length });
      res.write(BLOB.subarray(0, 100));
      release = () => res.end(BLOB.subarray(100));
      return true;
    }));
    const u = upstream(reg.url);
    const blob = await u.getBlob('library/busybox', BLOB_DIGEST);
    const manifest = rejection(u.getManifest('library/busybox', '1.36', ACCEPT));
    await vi.waitUntil(() => reg.count('/v2/library/busybox/manifests/1.36') === 1);
    const reason = new RegistryError('MANIFEST_UNKNOWN', 'upstream access closed while the request was in flight');
    u.abortInFlight(reason);
    expect(await manifest).toBe(reason);
    const body = readAll(blob.body);
    release?.();
    expect(await body).toEqual(BLOB);
  });
});

describe('error mapping', () => {
  function status(code: number, headers: Record<string, string> = {}): Handler {
    return (_req, res) => void res.writeHead(code, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ errors: [{ code: 'X', message: `said ${code}` }] }));
  }

  it.each([
    ['manifest 404', 404, 'MANIFEST_UNKNOWN', 404, (u: Upstream) => u.getManifest('library/busybox', '9.9', ACCEPT), 'upstream reg.test has no manifest library/busybox:9.9'],
    ['HEAD 404', 404, 'MANIFEST_UNKNOWN', 404, (u: Upstream) => u.headManifest('library/busybox', '9.9', ACCEPT), 'upstream reg.test has no manifest library/busybox:9.9'],
    ['blob 404', 404, 'BLOB_UNKNOWN', 404, (u: Upstream) => u.getBlob('library/busybox', BLOB_DIGEST), `upstream reg.test has no blob library/busybox@${BLOB_DIGEST}`],
    ['tags 404', 404, 'NAME_UNKNOWN', 404, (u: Upstream) => u.tagsList('library/busybox'), 'upstream reg.test has no tags of library/busybox'],
    ['500', 500, 'UPSTREAM_FAILED', 502, (u: Upstream) => u.getManifest('library/busybox', '1', ACCEPT), 'upstream reg.test: manifest library/busybox:1 failed: HTTP 500 said 500'],
    ['503 blob', 503, 'UPSTREAM_FAILED', 502, (u: Upstream) => u.getBlob('library/busybox', BLOB_DIGEST), `upstream reg.test: blob library/busybox@${BLOB_DIGEST} failed: HTTP 503 said 503`],
    ['403', 403, 'DENIED', 403, (u: Upstream) => u.getManifest('library/busybox', '1', ACCEPT), 'upstream reg.test refused access to manifest library/busybox:1 (HTTP 403); configure upstreams.reg.test.auth if the repository is private'],
  ])('%s', async (_name, code, kind, httpStatus, call, message) => {
    const reg = await fake(status(code));
    const e = await rejection(call(upstream(reg.url)));
    expect([e.kind, e.status, e.message]).toEqual([kind, httpStatus, message]);
  });

  it('passes Retry-After through on 429', async () => {
    const reg = await fake(status(429, { 'retry-after': '7' }));
    const e = await rejection(upstream(reg.url).getBlob('library/busybox', BLOB_DIGEST));
    expect([e.kind, e.status, e.headers]).toEqual(['TOOMANYREQUESTS', 429, { 'Retry-After': '7' }]);
    expect(e.message).toBe(`upstream reg.test is rate limiting: blob library/busybox@${BLOB_DIGEST}`);
  });

  it('refuses a manifest over 4 MiB', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
    const reg = await fake((_req, res) => void res.writeHead(200, { 'content-type': MediaType.ociManifest }).end(big));
    const e = await rejection(upstream(reg.url).getManifest('library/busybox', '1', ACCEPT));
    expect([e.kind, e.message]).toEqual(['MANIFEST_INVALID', 'upstream reg.test: manifest library/busybox:1 is larger than 4 MiB']);
  });

  it('maps a refused connection', async () => {
    const reg = await fake(registry());
    const port = new URL(reg.url).port;
    await new Promise((resolve) => servers.pop()?.close(resolve));
    const e = await rejection(upstream(`http://127.0.0.1:${port}`).getManifest('library/busybox', '1', ACCEPT));
    expect([e.kind, e.message]).toEqual(['UPSTREAM_FAILED', `upstream reg.test: manifest library/busybox:1 failed: connection to 127.0.0.1:${port} refused`]);
  });

  it('maps a reset connection', async () => {
    const reg = await fake((req) => req.socket.destroy());
    const e = await rejection(upstream(reg.url).getManifest('library/busybox', '1', ACCEPT));
    expect(e.kind).toBe('UPSTREAM_FAILED');
    expect(e.message).toMatch(/^upstream reg\.test: manifest library\/busybox:1 failed: connection to 127\.0\.0\.1:\d+ closed unexpectedly$/);
  });

  it('times out when no response headers come', async () => {
    const reg = await fake(() => undefined);
    const t0 = Date.now();
    const e = await rejection(upstream(reg.url, { idleTimeoutMs: 300 }).getManifest('library/busybox', '1', ACCEPT));
    expect(reg.requests).toHaveLength(1);
    expect([e.kind, e.status]).toEqual(['UPSTREAM_FAILED', 502]);
    expect(e.message).toMatch(/^upstream reg\.test: manifest library\/busybox:1 failed: 127\.0\.0\.1:\d+ sent no response headers in time \(a registry that builds images on demand/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('lets a caller abort with its own reason', async () => {
    let arrived: () => void = () => undefined;
    const came = new Promise<void>((resolve) => (arrived = resolve));
    const reg = await fake(() => arrived());
    const abort = new AbortController();
    const pending = upstream(reg.url).getManifest('library/busybox', '1', ACCEPT, abort.signal).then(
      () => undefined,
      (err: unknown) => err,
    );
    await came;
    abort.abort(new Error('client went away'));
    expect(((await pending) as Error).message).toBe('client went away');
  });

  it('errors the blob stream when the body stalls', async () => {
    const reg = await fake((_req, res) => {
      res.writeHead(200, { 'content-length': BLOB.length });
      res.write(BLOB.subarray(0, 100));
    });
    const u = upstream(reg.url, { idleTimeoutMs: 300 });
    const blob = await u.getBlob('library/busybox', BLOB_DIGEST);
    const t0 = Date.now();
    const e = await rejection(readAll(blob.body));
    expect(e.kind).toBe('UPSTREAM_FAILED');
    expect(e.message).toMatch(/^upstream reg\.test: blob library\/busybox@sha256:[0-9a-f]{64} failed: 127\.0\.0\.1:\d+ stopped sending the body \(idle timeout\)$/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });
});

describe('parseWwwAuthenticate', () => {
  it('reads several challenges with quoted and plain parameters', () => {
    expect(parseWwwAuthenticate(['Basic realm="r", Bearer realm="https://a.example/t?x=1",service=svc,scope="repository:a/b:pull,push"'])).toEqual([
      { scheme: 'basic', params: { realm: 'r' } },
      { scheme: 'bearer', params: { realm: 'https://a.example/t?x=1', service: 'svc', scope: 'repository:a/b:pull,push' } },
    ]);
  });
});
