// Every admin route checks its body and querystring strictly (issue 14, item 7): a wrong type, an unknown
// field or a missing one is a 400 with the admin API's own code and a message naming the field, and
// nothing is done; an unknown admin route says it is the admin API (item 11).
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

interface OciError {
  errors: Array<{ code: string; message: string; detail: unknown }>;
}

let s: InProcessSluice;
let admin: string;
let token: string;

beforeAll(async () => {
  // Windows always open: a sync that slips through validation really runs (against dead upstreams).
  s = await startSluice({ windows: 'always', allowlist: ['registry.k8s.io/pause:3.10'] });
  admin = (await s.app.admin.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
});
afterAll(async () => {
  await s.close();
});

async function call(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = contentType;
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const res = await fetch(`${admin}${path}`, { method, headers, body: payload });
  return { status: res.status, text: await res.text() };
}

interface Case {
  route: string;
  body?: unknown;
  /** A word the message must contain: the field at fault. */
  field: string;
}

const CASES: Case[] = [
  { route: 'POST /api/v1/sync', body: { dryRun: 'yes' }, field: 'dryRun' },
  { route: 'POST /api/v1/sync', body: { dryRun: 1 }, field: 'dryRun' },
  { route: 'POST /api/v1/sync', body: { dryRun: true, platforms: 'linux/amd64' }, field: 'platforms' },
  { route: 'POST /api/v1/sync', body: { dryRun: true, platforms: [7] }, field: 'platforms' },
  { route: 'POST /api/v1/sync', body: { dryRun: true, dryrun: true }, field: 'dryrun' },
  { route: 'POST /api/v1/sync', body: [true], field: 'body' },
  { route: 'POST /api/v1/allowlist', body: { rules: 'ghcr.io/x/y:v1' }, field: 'rules' },
  { route: 'POST /api/v1/allowlist', body: { rules: ['ghcr.io/x/y:v1'], note: 5 }, field: 'note' },
  { route: 'POST /api/v1/allowlist', body: { rules: ['ghcr.io/x/y:v1'], by: 'mallory' }, field: 'by' },
  { route: 'POST /api/v1/allowlist', body: { note: 'no rules' }, field: 'rules' },
  { route: 'POST /api/v1/allowlist', body: { rules: [] }, field: 'rules' },
  { route: 'DELETE /api/v1/allowlist', body: { rules: [1] }, field: 'rules' },
  { route: 'DELETE /api/v1/allowlist', body: { rules: ['registry.k8s.io/pause:3.10'], all: true }, field: 'all' },
  { route: 'DELETE /api/v1/allowlist', body: {}, field: 'rules' },
  { route: 'POST /api/v1/allowlist/import', body: { text: ['ghcr.io/x/y:v1'] }, field: 'text' },
  { route: 'POST /api/v1/allowlist/import', body: { text: 'ghcr.io/x/y:v1', note: false }, field: 'note' },
  { route: 'POST /api/v1/allowlist/import', body: { text: 'ghcr.io/x/y:v1', rules: [] }, field: 'rules' },
  { route: 'POST /api/v1/allowlist/import', body: { note: 'x' }, field: 'text' },
  { route: 'POST /api/v1/allowlist/import?note=x&by=y', body: { text: 'ghcr.io/x/y:v1' }, field: 'by' },
  { route: 'POST /api/v1/window', body: { duration: ['2h'], note: 'x' }, field: 'duration' },
  // A bare number is not "seconds": durations carry their unit here as on the CLI.
  { route: 'POST /api/v1/window', body: { duration: 5, note: 'x' }, field: 'duration' },
  { route: 'POST /api/v1/window', body: { duration: '2h', note: 7 }, field: 'note' },
  { route: 'POST /api/v1/window', body: { duration: '2h', note: 'x', who: 'root' }, field: 'who' },
  { route: 'POST /api/v1/window', body: { note: 'x' }, field: 'duration' },
  { route: 'POST /api/v1/window', body: { duration: '2h' }, field: 'note' },
  { route: 'DELETE /api/v1/window', body: { force: true }, field: 'force' },
  { route: 'GET /api/v1/denied?format=yaml', field: 'format' },
  { route: 'GET /api/v1/denied?limit=5', field: 'limit' },
  { route: 'DELETE /api/v1/denied', body: { host: 'ghcr.io' }, field: 'host' },
  { route: 'GET /api/v1/status?verbose=1', field: 'verbose' },
  { route: 'GET /api/v1/allowlist?host=ghcr.io', field: 'host' },
  { route: 'POST /api/v1/store/refresh', body: { all: true }, field: 'all' },
];

describe('admin request validation', () => {
  it.each(CASES)('$route $body → 400 ADMIN_INVALID_REQUEST naming "$field"', async ({ route, body, field }) => {
    const [method = '', path = ''] = route.split(' ');
    const res = await call(method, path, body);
    expect(res.status, res.text).toBe(400);
    const err = (JSON.parse(res.text) as OciError).errors[0];
    expect(err?.code).toBe('ADMIN_INVALID_REQUEST');
    expect(err?.message).toContain(field);
  });

  it('ran nothing: no sync, no window, no rule change, no denied log cleared', async () => {
    expect(s.app.syncer.last).toBeFalsy();
    expect(s.app.syncer.busy).toBe(false);
    expect(s.app.allowlist.list().map((r) => r.rule)).toEqual(['registry.k8s.io/pause:3.10']);
    expect(s.app.window.manual()).toBeNull();
  });

  it('a window duration without a unit is refused, saying to give one', async () => {
    const res = await call('POST', '/api/v1/window', { duration: 5, note: 'x' });
    expect(res.status, res.text).toBe(400);
    expect((JSON.parse(res.text) as OciError).errors[0]?.message).toMatch(/body\.duration must be a string with a unit.*"45s"/);
    expect(s.app.window.manual()).toBeNull();
  });

  it('removing a rule the config seeds is a 409 naming the config file; the rule stays; listing marks it', async () => {
    const res = await call('DELETE', '/api/v1/allowlist', { rules: ['registry.k8s.io/pause:3.10'] });
    expect(res.status, res.text).toBe(409);
    const err = (JSON.parse(res.text) as OciError).errors[0];
    expect(err?.code).toBe('RULE_FROM_CONFIG');
    expect(err?.message).toContain(s.app.config.file);
    expect(err?.message).toContain('registry.k8s.io/pause:3.10');
    expect(s.app.allowlist.list().map((r) => r.rule)).toEqual(['registry.k8s.io/pause:3.10']);
    const ls = JSON.parse((await call('GET', '/api/v1/allowlist')).text) as { rules: Array<{ rule: string; fromConfig?: boolean }> };
    expect(ls.rules).toEqual([expect.objectContaining({ rule: 'registry.k8s.io/pause:3.10', fromConfig: true })]);
  });

  it('malformed JSON and a JSON scalar body are the same admin 400', async () => {
    for (const body of ['{"rules": [', '"ghcr.io/x/y:v1"', 'null']) {
      const res = await call('POST', '/api/v1/allowlist', body);
      expect(res.status, body).toBe(400);
      expect((JSON.parse(res.text) as OciError).errors[0]?.code, body).toBe('ADMIN_INVALID_REQUEST');
    }
  });

  it('still takes what the CLI sends', async () => {
    expect((await call('POST', '/api/v1/store/refresh', {})).status).toBe(200);
    expect((await call('GET', '/api/v1/status')).status).toBe(200);
    expect((await call('GET', '/api/v1/denied')).status).toBe(200);
    expect((await call('GET', '/api/v1/denied?format=commands')).status).toBe(200);
    expect((await call('DELETE', '/api/v1/denied')).status).toBe(200);
    expect((await call('POST', '/api/v1/allowlist', { rules: ['ghcr.io/x/y:v1'], note: 'why' })).status).toBe(200);
    expect((await call('POST', '/api/v1/allowlist/import?note=talos', 'ghcr.io/x/z:v1\n', 'text/plain')).status).toBe(200);
    expect((await call('POST', '/api/v1/allowlist/import', { text: 'ghcr.io/x/w:v1', note: 'n' })).status).toBe(200);
    expect((await call('DELETE', '/api/v1/allowlist', { rules: ['ghcr.io/x/y:v1', 'ghcr.io/x/z:v1', 'ghcr.io/x/w:v1'] })).status).toBe(200);
    expect((await call('POST', '/api/v1/window', { duration: '2h', note: 'upgrade' })).status).toBe(200);
    expect((await call('DELETE', '/api/v1/window')).status).toBe(200);
    const dry = await call('POST', '/api/v1/sync', { dryRun: true, platforms: ['linux/amd64'] });
    expect(dry.status, dry.text).toBe(200);
    expect(dry.text).toContain('"type":"summary"');
  });

  it('an unknown admin route is a 404 of the admin API, not the registry API', async () => {
    const res = await call('GET', '/api/v1/nope');
    expect(res.status).toBe(404);
    expect((JSON.parse(res.text) as OciError).errors[0]?.message).toBe('no such route in the admin API');
    const reg = await fetch(`${s.url}/nope`);
    expect(((await reg.json()) as OciError).errors[0]?.message).toBe('no such route in the registry API');
  });
});
