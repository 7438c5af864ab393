// The status page's edges without a browser: the login form for strangers, nothing of the API reachable through
// /ui paths, the cookie never opening the JSON API, and the pages' security headers.
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

describe('status page (/ui) on the admin listener', () => {
  let s: InProcessSluice;
  let cookie = '';
  beforeAll(async () => {
    s = await startSluice({ allowlist: ['docker.io/library/busybox:1.36'] });
    const token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
    const res = await s.app.admin.inject({ method: 'POST', url: '/ui/login', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams({ token }).toString() });
    expect(res.statusCode).toBe(303);
    cookie = String(res.headers['set-cookie']).split(';')[0] ?? '';
  });
  afterAll(() => s?.close());

  test('a stranger gets the login form, with headers that allow no script and no framing', async () => {
    const res = await s.app.admin.inject({ method: 'GET', url: '/ui' });
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('name="token"');
    expect(res.body).not.toContain('busybox');
    expect(res.headers['content-security-policy']).toContain("default-src 'none'");
    expect(res.headers['x-frame-options']).toBe('DENY');
    expect(res.headers['cache-control']).toBe('no-store');
  });

  test('/ui paths reach nothing of the API, and the session cookie opens no API route', async () => {
    for (const url of ['/ui/../api/v1/status', '/ui/..%2fapi/v1/status', '/ui/%2e%2e/api/v1/allowlist', '/ui/api/v1/status']) {
      const res = await s.app.admin.inject({ method: 'GET', url, headers: { cookie } });
      expect([401, 404], url).toContain(res.statusCode); // dot segments resolve before routing: the bearer check applies
    }
    expect((await s.app.admin.inject({ method: 'GET', url: '/api/v1/status', headers: { cookie } })).statusCode).toBe(401);
    // On the wire, unnormalised (inject resolves dot segments itself).
    const base = new URL(await s.app.admin.listen({ host: '127.0.0.1', port: 0 }));
    for (const path of ['/ui/../api/v1/status', '/ui/..%2fapi/v1/status']) {
      const status = await new Promise<number>((resolve, reject) => {
        request({ host: '127.0.0.1', port: base.port, path, headers: { cookie } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', reject).end();
      });
      expect([401, 404], path).toContain(status);
    }
  });

  test('logged in: the page lists the rule as missing; allow for something never refused is a 404 page', async () => {
    const page = await s.app.admin.inject({ method: 'GET', url: '/ui', headers: { cookie } });
    expect(page.body).toMatch(/data-rule="docker.io\/library\/busybox:1.36"/);
    expect(page.body).toContain('not ready');
    const res = await s.app.admin.inject({ method: 'GET', url: '/ui/allow?host=docker.io&name=library/x&reference=1', headers: { cookie } });
    expect(res.statusCode).toBe(404);
    expect(res.headers['content-type']).toMatch(/text\/html/);
  });

  test('HTML in refused names is escaped', async () => {
    s.app.denied.record({ host: 'docker.io', name: 'library/x', reference: '1"><b>x</b>' });
    const page = await s.app.admin.inject({ method: 'GET', url: '/ui', headers: { cookie } });
    expect(page.body).not.toContain('<b>x</b>');
    expect(page.body).toContain('&lt;b&gt;x&lt;/b&gt;');
  });
});
