// tags/list while a window is open: the upstream's whole list filtered by the allowlist and paged by sluice,
// the client's Authorization never forwarded, and the store's list when closed or upstream down.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_UPSTREAM_TAG_PAGES } from '../../src/mirror/upstream-tags.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

/** A ghcr.io upstream whose siderolabs/kubelet has four tags. */
async function fakeUpstream(): Promise<MiniUpstream> {
  const up = await new MiniUpstream().start();
  for (const tag of ['v1.33.0', 'v1.34.0', 'v1.35.0-alpha.1', 'latest']) up.addImage('siderolabs/kubelet', tag, []);
  return up;
}

describe('tags/list passthrough', () => {
  let up: MiniUpstream;
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
    await up?.stop();
  });

  it('inside a window asks the upstream and filters by the allowlist', async () => {
    const before = up.requests.length;
    const res = await fetch(`${open.url}/v2/siderolabs/kubelet/tags/list?ns=ghcr.io`, { headers: { authorization: 'Basic bm9kZTpzZWNyZXQ=' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'siderolabs/kubelet', tags: ['v1.33.0', 'v1.34.0', 'v1.35.0-alpha.1'] });
    // (the first request may be sluice's one-time GET /v2/ probe for the upstream's auth challenge)
    const req = up.requests.slice(before).find((r) => r.path.includes('/tags/list'));
    expect(req?.path).toBe('/v2/siderolabs/kubelet/tags/list');
    expect(req?.authorization).toBeUndefined();
    expect(req?.host).toBe(new URL(up.url).host);
  });

  it('passes paging on and points the next Link at the mirror', async () => {
    const res = await fetch(`${open.url}/v2/ghcr.io/siderolabs/kubelet/tags/list?n=2`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'siderolabs/kubelet', tags: ['v1.33.0', 'v1.34.0'] });
    expect(res.headers.get('link')).toBe('</v2/ghcr.io/siderolabs/kubelet/tags/list?n=2&last=v1.34.0>; rel="next"');
    // What is left is "v1.35.0-alpha.1" (allowed) and "latest" (not): the last page is shorter.
    const next = await fetch(`${open.url}/v2/ghcr.io/siderolabs/kubelet/tags/list?n=2&last=v1.34.0`);
    expect(await next.json()).toEqual({ name: 'siderolabs/kubelet', tags: ['v1.35.0-alpha.1'] });
  });

  it('refuses a repository no rule names without asking the upstream', async () => {
    const before = up.requests.length;
    const res = await fetch(`${open.url}/v2/siderolabs/secret/tags/list?ns=ghcr.io`);
    expect(res.status).toBe(403);
    expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('DENIED');
    expect(up.requests.length).toBe(before);
  });

  it('an unknown upstream repository is NAME_UNKNOWN', async () => {
    const res = await fetch(`${open.url}/v2/siderolabs/other/tags/list?ns=ghcr.io`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('NAME_UNKNOWN');
  });

  it('outside a window lists the store and never dials the upstream', async () => {
    const before = up.requests.length;
    const res = await fetch(`${closed.url}/v2/siderolabs/kubelet/tags/list?ns=ghcr.io`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'siderolabs/kubelet', tags: [] });
    expect(up.requests.length).toBe(before);
  });
});

/**
 * A docker.io upstream paging its lists itself (at most `pageSize` tags a page, distribution's Link format), so
 * sluice must follow its pages; x/endless has a cursor that always moves on (only sluice's page bound ends it).
 */
async function pagingUpstream(repos: Record<string, string[]>, pageSize: number): Promise<MiniUpstream> {
  const up = await new MiniUpstream().start();
  up.tagPageSize = pageSize;
  for (const [name, tags] of Object.entries(repos)) for (const tag of tags) up.addImage(name, tag, []);
  up.routes.set('/v2/x/endless/tags/list', (req, res) => {
    const k = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('last') ?? '0') + 1;
    res.setHeader('link', `</v2/x/endless/tags/list?last=${k}&n=1>; rel="next"`);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name: 'x/endless', tags: [`v1.${k}`] }));
  });
  return up;
}

/** How many tags/list requests `up` has had. */
const lists = (up: MiniUpstream): number => up.seen.filter((l) => l.endsWith('/tags/list')).length;

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

describe('tags/list pages over the allowed tags only', () => {
  const many = Array.from({ length: 40 }, (_, i) => [`v1.${String(i).padStart(2, '0')}`, `internal-${i}`, `v2.${String(i).padStart(2, '0')}`, `zz-${i}`]).flat();
  const allowedMany = many.filter((t) => /^v1\.\d\d$/.test(t)).sort();
  let up: MiniUpstream;
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
    await up?.stop();
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
    const before = lists(up);
    const res = await fetch(`${open.url}/v2/x/endless/tags/list`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'x/endless', tags: [] });
    expect(lists(up) - before).toBe(MAX_UPSTREAM_TAG_PAGES);
  });

  it('a window closing mid-listing stops the upstream pages at once; the store answers', async () => {
    closed.app.window.open(60_000, 'tags test', 'test');
    const before = lists(up);
    const onList = (line: string): void => {
      if (line.endsWith('/tags/list') && lists(up) - before === 3) closed.app.window.close();
    };
    up.on('request', onList);
    try {
      const res = await fetch(`${closed.url}/v2/x/many/tags/list`);
      expect(await res.json()).toEqual({ name: 'x/many', tags: [] });
    } finally {
      up.off('request', onList);
      closed.app.window.close();
    }
    expect(lists(up) - before).toBe(3);
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
      const before = lists(up);
      for (const method of ['HEAD', 'GET']) {
        const res = await fetch(`${s.url}/v2/x/secret/tags/list?n=1`, { method });
        expect(res.status, `${method} ${s === open ? 'open' : 'closed'}`).toBe(403);
        if (method === 'GET') expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('DENIED');
      }
      expect(lists(up)).toBe(before);
      const entry = s.app.denied.list().find((e) => e.name === 'x/secret');
      expect(entry).toMatchObject({ host: 'docker.io', name: 'x/secret', reference: '', count: 2 });
    }
  });
});
