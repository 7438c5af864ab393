// tags/list through @fastify/http-proxy while a window is open: the upstream's list filtered by the
// allowlist, the client's Authorization never forwarded, and the store's list when closed or upstream down.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

describe('tags/list passthrough and the window gate (issue 14 item 2)', () => {
  it('a window closed between choosing the passthrough and sending: nothing is sent, the store answers', async () => {
    let sluice: InProcessSluice | undefined;
    const seen: string[] = [];
    const server = createServer((req, res) => {
      seen.push(req.url ?? '');
      // sluice's one-time GET /v2/ auth probe runs after the route was chosen: close the window right then.
      if (req.url === '/v2/') sluice?.app.window.close();
      res.setHeader('content-type', 'application/json');
      res.end(req.url === '/v2/' ? '{}' : JSON.stringify({ name: 'siderolabs/kubelet', tags: ['v1.34.0'] }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      sluice = await startSluice({ windows: 'never', allowlist: ['ghcr.io/siderolabs/kubelet:v1.34.0'], upstreams: { 'ghcr.io': { url } } });
      sluice.app.window.open(3_600_000, 'gate test', 'test');
      const res = await fetch(`${sluice.url}/v2/ghcr.io/siderolabs/kubelet/tags/list`);
      expect(seen).toEqual(['/v2/']);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ name: 'siderolabs/kubelet', tags: [] });
    } finally {
      await sluice?.close();
      server.close();
    }
  });
});
