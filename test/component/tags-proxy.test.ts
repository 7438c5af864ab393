// tags/list while a window is open: the upstream's whole list filtered by the allowlist and paged by sluice,
// the client's Authorization never forwarded, and the store's list when closed or upstream down.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_UPSTREAM_TAG_PAGES } from '../../src/mirror/upstream-tags.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

interface Seen {
  url: string;
  authorization?: string;
  host?: string;
}

async function fakeUpstream(): Promise<{ server: Server; url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    seen.push({ url: req.url ?? '', authorization: req.headers.authorization, host: req.headers.host });
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/v2/siderolabs/kubelet/tags/list') {
      const all = ['v1.33.0', 'v1.34.0', 'v1.35.0-alpha.1', 'latest'];
      const last = u.searchParams.get('last');
      const page = last ? all.filter((t) => t > last) : all;
      if (u.searchParams.get('n') === '2') {
        res.setHeader('link', `</v2/siderolabs/kubelet/tags/list?last=${page[1]}&n=2>; rel="next"`);
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ name: 'siderolabs/kubelet', tags: u.searchParams.get('n') === '2' ? page.slice(0, 2) : page }));
      return;
    }
    res.statusCode = 404;
    res.end(JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: 'no' }] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

describe('tags/list passthrough', () => {
  let up: Awaited<ReturnType<typeof fakeUpstream>>;
  let open: InProcessSluice;
  let closed: InProcessSluice;

  beforeAll(async () => {
    up = await fakeUpstream();
    const allowlist = ['ghcr.io/siderolabs/kubelet:v1.3*', 'ghcr.io/siderolabs/other:v1'];
    open = await startSluice({ windows: 'always', allowlist, upstreams: { 'ghcr.io': { url: up.url } } });
    closed = await startSluice({ windows: 'never', allowlist, upstreams: { 'ghcr.io': { url: up.url } } });
  });
  afterAll(async () => {
    await open?.close();
    await closed?.close();
    up?.server.close();
  });

  it('inside a window asks the upstream and filters by the allowlist', async () => {
    const before = up.seen.length;
    const res = await fetch(`${open.url}/v2/siderolabs/kubelet/tags/list?ns=ghcr.io`, { headers: { authorization: 'Basic bm9kZTpzZWNyZXQ=' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'siderolabs/kubelet', tags: ['v1.33.0', 'v1.34.0', 'v1.35.0-alpha.1'] });
    // (the first request may be sluice's one-time GET /v2/ probe for the upstream's auth challenge)
    const req = up.seen.slice(before).find((r) => r.url.includes('/tags/list'));
    expect(req?.url).toBe('/v2/siderolabs/kubelet/tags/list');
    expect(req?.authorization).toBeUndefined();
    expect(req?.host).toBe(new URL(up.url).host);
  });

  it('passes paging on and points the next Link at the mirror', async () => {
    const res = await fetch(`${open.url}/v2/ghcr.io/siderolabs/kubelet/tags/list?n=2`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'siderolabs/kubelet', tags: ['v1.33.0', 'v1.34.0'] });
    expect(res.headers.get('link')).toBe('</v2/ghcr.io/siderolabs/kubelet/tags/list?n=2&last=v1.34.0>; rel="next"');
    // The next page holds "v1.35.0-alpha.1" (allowed) and "latest" (not): the filtered page is shorter.
    const next = await fetch(`${open.url}/v2/ghcr.io/siderolabs/kubelet/tags/list?n=2&last=v1.34.0`);
    expect(await next.json()).toEqual({ name: 'siderolabs/kubelet', tags: ['v1.35.0-alpha.1'] });
  });

  it('refuses a repository no rule names without asking the upstream', async () => {
    const before = up.seen.length;
    const res = await fetch(`${open.url}/v2/siderolabs/secret/tags/list?ns=ghcr.io`);
    expect(res.status).toBe(403);
    expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('DENIED');
    expect(up.seen.length).toBe(before);
  });

  it('an unknown upstream repository is NAME_UNKNOWN', async () => {
    const res = await fetch(`${open.url}/v2/siderolabs/other/tags/list?ns=ghcr.io`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('NAME_UNKNOWN');
  });

  it('outside a window lists the store and never dials the upstream', async () => {
    const before = up.seen.length;
    const res = await fetch(`${closed.url}/v2/siderolabs/kubelet/tags/list?ns=ghcr.io`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'siderolabs/kubelet', tags: [] });
    expect(up.seen.length).toBe(before);
  });
});

/**
 * A docker.io upstream paging its lists itself (at most `pageSize` tags a page, distribution's Link format),
 * so sluice must follow its pages; every tags/list request is counted.
 */
interface PagingUpstream {
  server: Server;
  url: string;
  lists: () => number;
  /** Called on each tags/list request, before it is answered. */
  onList?: () => void;
}

async function pagingUpstream(repos: Record<string, string[]>, pageSize: number): Promise<PagingUpstream> {
  let lists = 0;
  const hooks: { onList?: () => void } = {};
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const m = /^\/v2\/(.+)\/tags\/list$/.exec(u.pathname);
    if (m?.[1] === 'x/endless') {
      // A cursor that always moves on: only sluice's page bound ends this listing.
      lists++;
      const k = Number(u.searchParams.get('last') ?? '0') + 1;
      res.setHeader('link', `</v2/x/endless/tags/list?last=${k}&n=1>; rel="next"`);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ name: 'x/endless', tags: [`v1.${k}`] }));
      return;
    }
    const all = m?.[1] ? repos[m[1]] : undefined;
    if (!all) {
      res.writeHead(u.pathname === '/v2/' ? 200 : 404, { 'content-type': 'application/json' });
      res.end(u.pathname === '/v2/' ? '{}' : JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: 'no' }] }));
      return;
    }
    lists++;
    hooks.onList?.();
    const last = u.searchParams.get('last');
    const n = Math.min(Number(u.searchParams.get('n') ?? pageSize), pageSize);
    const after = [...all].sort().filter((t) => last === null || t > last);
    const page = after.slice(0, n);
    if (after.length > page.length) res.setHeader('link', `</v2/${m?.[1]}/tags/list?last=${page[page.length - 1]}&n=${n}>; rel="next"`);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name: m?.[1], tags: page }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    lists: () => lists,
    set onList(f: (() => void) | undefined) {
      hooks.onList = f;
    },
  };
}

/** Follows the mirror's Link headers from `first`, returning every page's tags, headers and bodies as read. */
async function walk(base: string, first: string): Promise<{ tags: string[]; seen: string[] }> {
  const tags: string[] = [];
  const seen: string[] = [];
  let next: string | undefined = first;
  for (let i = 0; next !== undefined && i < 100; i++) {
    const res: Response = await fetch(`${base}${next}`);
    expect(res.status).toBe(200);
    const body = await res.text();
    seen.push(body, JSON.stringify([...res.headers]));
    tags.push(...((JSON.parse(body) as { tags: string[] }).tags));
    const link: string | null = res.headers.get('link');
    next = link ? /<([^>]*)>/.exec(link)?.[1] : undefined;
  }
  return { tags, seen };
}

describe('tags/list pages over the allowed tags only (issue 14 items 3 and 4)', () => {
  const many = Array.from({ length: 40 }, (_, i) => [`v1.${String(i).padStart(2, '0')}`, `internal-${i}`, `v2.${String(i).padStart(2, '0')}`, `zz-${i}`]).flat();
  const allowedMany = many.filter((t) => /^v1\.\d\d$/.test(t)).sort();
  let up: Awaited<ReturnType<typeof pagingUpstream>>;
  let open: InProcessSluice;
  let closed: InProcessSluice;

  beforeAll(async () => {
    up = await pagingUpstream({ 'x/app': ['internal-secret-build', 'v1', 'zz-hidden'], 'x/many': many }, 7);
    const allowlist = ['docker.io/x/app:v1', 'docker.io/x/many:v1.*', 'docker.io/x/endless:v1.*'];
    open = await startSluice({ windows: 'always', allowlist, upstreams: { 'docker.io': { url: up.url } } });
    closed = await startSluice({ windows: 'never', allowlist, upstreams: { 'docker.io': { url: up.url } } });
  });
  afterAll(async () => {
    await open?.close();
    await closed?.close();
    up?.server.close();
  });

  it('n=1 names no tag that is not allowed, in the Link or anywhere else', async () => {
    for (const query of ['?n=1', '?n=1&ns=docker.io', '']) {
      const res = await fetch(`${open.url}/v2/x/app/tags/list${query}`);
      const text = `${await res.text()} ${JSON.stringify([...res.headers])}`;
      expect(res.status).toBe(200);
      expect(JSON.parse(text.slice(0, text.lastIndexOf(' [')))).toEqual({ name: 'x/app', tags: ['v1'] });
      expect(res.headers.get('link')).toBeNull();
      expect(text).not.toMatch(/internal-secret-build|zz-hidden/);
    }
  });

  it('walking every page gives exactly the allowed tags, sorted, across upstream pages', async () => {
    for (const n of [1, 13, 40, 1000]) {
      const got = await walk(open.url, `/v2/docker.io/x/many/tags/list?n=${n}`);
      expect(got.tags).toEqual(allowedMany);
      expect(got.seen.join('\n').match(/(internal-|v2\.|zz-)[\w.-]*/g) ?? [], `n=${n}`).toEqual([]);
    }
  });

  it('an upstream that pages without end is cut at the page bound and the store answers', async () => {
    const before = up.lists();
    const res = await fetch(`${open.url}/v2/x/endless/tags/list`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'x/endless', tags: [] });
    expect(up.lists() - before).toBe(MAX_UPSTREAM_TAG_PAGES);
  });

  it('a window closing mid-listing stops the upstream pages at once; the store answers', async () => {
    closed.app.window.open(60_000, 'tags test', 'test');
    const before = up.lists();
    up.onList = () => {
      if (up.lists() - before === 3) closed.app.window.close();
    };
    try {
      const res = await fetch(`${closed.url}/v2/x/many/tags/list`);
      expect(await res.json()).toEqual({ name: 'x/many', tags: [] });
    } finally {
      up.onList = undefined;
      closed.app.window.close();
    }
    expect(up.lists() - before).toBe(3);
  });

  it('HEAD of an allowed tags/list equals GET minus the body, in and out of a window', async () => {
    for (const s of [open, closed]) {
      for (const path of ['/v2/x/many/tags/list?n=5&last=v1.07', '/v2/x/app/tags/list']) {
        const get = await fetch(`${s.url}${path}`);
        const body = await get.arrayBuffer();
        const head = await fetch(`${s.url}${path}`, { method: 'HEAD' });
        expect(head.status).toBe(get.status);
        expect(head.headers.get('link')).toBe(get.headers.get('link'));
        expect(head.headers.get('content-type')).toBe(get.headers.get('content-type'));
        expect(head.headers.get('content-length')).toBe(String(body.byteLength));
      }
    }
  });

  it('a repository no rule names is 403 DENIED for HEAD and GET, in and out of a window, and logged', async () => {
    for (const s of [open, closed]) {
      const before = up.lists();
      for (const method of ['HEAD', 'GET']) {
        const res = await fetch(`${s.url}/v2/x/secret/tags/list?n=1`, { method });
        expect(res.status, `${method} ${s === open ? 'open' : 'closed'}`).toBe(403);
        if (method === 'GET') expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('DENIED');
      }
      expect(up.lists()).toBe(before);
      const entry = s.app.denied.list().find((e) => e.name === 'x/secret');
      expect(entry).toMatchObject({ host: 'docker.io', name: 'x/secret', reference: '', count: 2 });
    }
  });
});
