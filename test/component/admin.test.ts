// The admin API against buildApp in this process: token file and bearer auth, the registry listener not
// serving it, allowlist edits (live on the very next registry request), import, denied log, window, sync.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureAdminToken } from '../../src/admin/token.js';
import type { StatusReport, WindowReport } from '../../src/jobs/status.js';
import { ConfigError } from '../../src/config/config.js';
import type { AddResult, RemoveResult, RuleRecord } from '../../src/policy/allowlist.js';
import type { DeniedEntry } from '../../src/policy/denied.js';
import { importPath } from '../../src/jobs/importer.js';
import type { SyncReport } from '../../src/jobs/sync.js';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { startSluice, type InProcessSluice, type StartSluiceOptions } from '../helpers/sluice.js';
import { MediaType } from '../kit/oci.js';

interface Reply<T> {
  status: number;
  /** The parsed JSON body, typed as the route documents it (error answers: OciError). */
  json: T;
  text: string;
  headers: Headers;
}

interface Admin {
  sluice: InProcessSluice;
  url: string;
  token: string;
  tokenFile: string;
  call<T = OciError>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Reply<T>>;
}

interface OciError {
  errors: Array<{ code: string; message: string; detail: { invalid?: Array<{ rule?: string; line?: number; reason: string }>; nextOpen?: string } | null }>;
}
type Status = StatusReport & { sync: { running: boolean; last: SyncReport | null } };
interface SyncLine {
  type: string;
  reference?: string;
  status?: string;
  cached?: boolean;
  report?: SyncReport;
}

const OCI_ACCEPT = [
  MediaType.ociIndex,
  MediaType.ociManifest,
  MediaType.dockerManifest,
  MediaType.dockerList,
].join(', ');

let layout: LayoutDescription;
let layoutDir: string;
const started: Array<{ close(): Promise<void> }> = [];
const dirs: string[] = [];

beforeAll(async () => {
  layoutDir = await mkdtemp(join(tmpdir(), 'sluice-admin-layout-'));
  layout = await buildLayout(layoutDir);
});
afterAll(async () => {
  await rm(layoutDir, { recursive: true, force: true });
});
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** sluice in this process with its admin listener on 127.0.0.1:0; the token file in a folder that does not exist yet. */
async function startAdmin(opts: StartSluiceOptions = {}): Promise<Admin> {
  const tokenDir = await mkdtemp(join(tmpdir(), 'sluice-admin-token-'));
  dirs.push(tokenDir);
  const tokenFile = join(tokenDir, 'nested', 'secrets', 'admin.token');
  const sluice = await startSluice({ ...opts, extra: { admin: { listen: '127.0.0.1:0', tokenFile }, ...(opts.extra ?? {}) } });
  started.push(sluice);
  const url = (await sluice.app.admin.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  const token = (await readFile(tokenFile, 'utf8')).trim();
  const call = async <T,>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply<T>> => {
    const h: Record<string, string> = { authorization: `Bearer ${token}`, ...headers };
    let payload: string | undefined;
    if (body !== undefined) {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      h['content-type'] ??= typeof body === 'string' ? 'text/plain' : 'application/json';
    }
    const res = await fetch(`${url}${path}`, { method, headers: h, body: payload });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json: json as T, text, headers: res.headers };
  };
  return { sluice, url, token, tokenFile, call: call as Admin['call'] };
}

const pauseRef = (): { digest: string } => {
  const img = layout.images.find((i) => i.ref === 'registry.k8s.io/pause:3.10');
  if (!img) throw new Error('test layout lacks pause');
  return img;
};

describe('admin token and authentication', () => {
  it('creates the token file (0600, 32 random bytes hex) with its folder on first start', async () => {
    const a = await startAdmin();
    expect(a.token).toMatch(/^[0-9a-f]{64}$/);
    expect((await stat(a.tokenFile)).mode & 0o777).toBe(0o600);
    expect((await a.call('GET', '/api/v1/allowlist')).status).toBe(200);
    // A restart keeps the token; a file too short to be a secret refuses to start (config error, exit 2).
    expect(await ensureAdminToken(a.tokenFile)).toBe(a.token);
    const short = join(dirname(a.tokenFile), 'short.token');
    await writeFile(short, 'secret\n');
    await expect(ensureAdminToken(short)).rejects.toBeInstanceOf(ConfigError);
  });

  it('answers 401 in the OCI error format with a Bearer challenge to a missing, wrong or malformed token', async () => {
    const a = await startAdmin();
    const cases: Array<Record<string, string>> = [
      {},
      { authorization: 'Bearer wrong' },
      { authorization: `Bearer ${a.token.slice(0, -1)}${a.token.endsWith('0') ? '1' : '0'}` },
      { authorization: `Bearer ${a.token}x` },
      { authorization: `Basic ${Buffer.from(`admin:${a.token}`).toString('base64')}` },
      { authorization: a.token },
    ];
    for (const headers of cases) {
      for (const [method, path] of [['GET', '/api/v1/allowlist'], ['POST', '/api/v1/window'], ['GET', '/api/v1/nothing']]) {
        const res = await fetch(`${a.url}${path}`, { method, headers });
        expect(res.status, `${method} ${path} with ${JSON.stringify(headers)}`).toBe(401);
        expect(res.headers.get('www-authenticate')).toBe('Bearer realm="sluice-admin"');
        const body = (await res.json()) as { errors: Array<{ code: string }> };
        expect(body.errors[0]?.code).toBe('UNAUTHORIZED');
      }
    }
    expect((await a.call('GET', '/api/v1/allowlist')).status).toBe(200);
  });

  it('serves none of the admin API on the registry listener, with or without the token', async () => {
    const a = await startAdmin({ allowlist: ['registry.k8s.io/pause:3.10'] });
    const paths = ['/api/v1/allowlist', '/api/v1/denied', '/api/v1/status', '/api/v1/window', '/api/v1/sync', '/api/v1/allowlist/import'];
    for (const path of paths) {
      for (const auth of [{}, { authorization: `Bearer ${a.token}` }] as Array<Record<string, string>>) {
        const get = await fetch(`${a.sluice.url}${path}`, { headers: auth });
        expect(get.status, `GET ${path}`).toBe(404);
        // Writes on the registry port are the read-only mirror's 405, never an admin action.
        const post = await fetch(`${a.sluice.url}${path}`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"rules":["docker.io/library/x"]}' });
        expect(post.status, `POST ${path}`).toBe(405);
      }
    }
    expect((await a.call<{ rules: RuleRecord[] }>('GET', '/api/v1/allowlist')).json.rules.map((r) => r.rule)).toEqual(['registry.k8s.io/pause:3.10']);
  });
});

describe('allowlist routes', () => {
  it('adds (with who and note), lists, removes; an invalid rule refuses the whole batch with every reason', async () => {
    const a = await startAdmin();
    const add = await a.call<AddResult>('POST', '/api/v1/allowlist', { rules: ['busybox:1.36', 'ghcr.io/siderolabs/**'], note: 'upgrade' }, { 'x-sluice-user': 'alice' });
    expect(add.status).toBe(200);
    expect(add.json.added.map((r) => r.rule)).toEqual(['docker.io/library/busybox:1.36', 'ghcr.io/siderolabs/**']);
    expect(add.json.added[0]).toMatchObject({ addedBy: 'alice', note: 'upgrade' });
    const again = await a.call<AddResult>('POST', '/api/v1/allowlist', { rules: ['docker.io/library/busybox:1.36'] });
    expect(again.json).toMatchObject({ added: [], existing: ['docker.io/library/busybox:1.36'] });

    const bad = await a.call('POST', '/api/v1/allowlist', { rules: ['quay.io/ok:1', 'UPPER/case', 'x y', 'ghcr.io/a@sha256:short'] });
    expect(bad.status).toBe(400);
    const invalid = bad.json.errors[0]?.detail?.invalid ?? [];
    expect(invalid.map((i) => i.rule)).toEqual(['UPPER/case', 'x y', 'ghcr.io/a@sha256:short']);
    for (const i of invalid) expect(i.reason).toBeTruthy();
    expect((await a.call('POST', '/api/v1/allowlist', { rules: 'docker.io/x' })).status).toBe(400);

    const list = await a.call<{ rules: RuleRecord[] }>('GET', '/api/v1/allowlist');
    expect(list.json.rules.map((r) => r.rule)).toEqual(['docker.io/library/busybox:1.36', 'ghcr.io/siderolabs/**']);

    const del = await a.call<RemoveResult>('DELETE', '/api/v1/allowlist', { rules: ['busybox:1.36', 'docker.io/library/absent'] });
    expect(del.json).toEqual({ removed: ['docker.io/library/busybox:1.36'], missing: ['docker.io/library/absent'] });
    expect(a.sluice.app.allowlist.list().map((r) => r.rule)).toEqual(['ghcr.io/siderolabs/**']);
  });

  it('imports `talosctl images default` output as exact rules; a bad line refuses the import with its line number', async () => {
    const a = await startAdmin();
    const talos = [
      '# talosctl images default',
      'ghcr.io/siderolabs/flannel:v0.26.7',
      'registry.k8s.io/coredns/coredns:v1.12.1',
      'gcr.io/etcd-development/etcd:v3.5.21',
      'registry.k8s.io/kube-apiserver:v1.34.0',
      'ghcr.io/siderolabs/kubelet:v1.34.0',
      '',
      'ghcr.io/siderolabs/installer:v1.11.0   # trailing comment',
      'registry.k8s.io/pause:3.10',
      'busybox:1.36',
      'ghcr.io/siderolabs/kubelet:v1.34.0',
    ].join('\n');
    const res = await a.call<AddResult & { rules: string[] }>('POST', '/api/v1/allowlist/import', talos);
    expect(res.status).toBe(200);
    const expected = [
      'ghcr.io/siderolabs/flannel:v0.26.7',
      'registry.k8s.io/coredns/coredns:v1.12.1',
      'gcr.io/etcd-development/etcd:v3.5.21',
      'registry.k8s.io/kube-apiserver:v1.34.0',
      'ghcr.io/siderolabs/kubelet:v1.34.0',
      'ghcr.io/siderolabs/installer:v1.11.0',
      'registry.k8s.io/pause:3.10',
      'docker.io/library/busybox:1.36',
    ];
    expect(a.sluice.app.allowlist.list().map((r) => r.rule)).toEqual(expected);
    expect(res.json.added).toHaveLength(8);

    const json = await a.call<AddResult>('POST', '/api/v1/allowlist/import', { text: 'quay.io/cilium/cilium:v1.16.0\n', note: 'cni' });
    expect(json.json.added[0]).toMatchObject({ rule: 'quay.io/cilium/cilium:v1.16.0', note: 'cni' });

    const bad = await a.call('POST', '/api/v1/allowlist/import', 'quay.io/a:1\n\nNot/Valid\nquay.io/b:2\nquay.io/c:\n');
    expect(bad.status).toBe(400);
    expect(bad.json.errors[0]?.detail?.invalid?.map((e) => e.line)).toEqual([3, 5]);
    expect(a.sluice.app.allowlist.list()).toHaveLength(9);
  });

  it('applies 50 concurrent API adds, every one of them', async () => {
    const a = await startAdmin();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => a.call('POST', '/api/v1/allowlist', { rules: [`ghcr.io/concurrent/img${i}:v1`] })),
    );
    expect(results.map((r) => r.status)).toEqual(Array(50).fill(200));
    const file = JSON.parse(await readFile(join(a.sluice.storage, 'allowlist.json'), 'utf8')) as { rules: unknown[] };
    expect(file.rules).toHaveLength(50);
  });
});

describe('enforcement is live and refusals are logged', () => {
  it('a rule removed through the API refuses the very next registry request, and the denied log shows it', async () => {
    const a = await startAdmin();
    const result = await importPath(a.sluice.app.store, layoutDir);
    expect(result.failed).toEqual([]);
    const pause = `${a.sluice.url}/v2/pause/manifests/3.10?ns=registry.k8s.io`;
    const get = (): Promise<Response> => fetch(pause, { headers: { accept: OCI_ACCEPT } });

    expect((await get()).status).toBe(403); // default-deny, content on disk or not
    await a.call('POST', '/api/v1/allowlist', { rules: ['registry.k8s.io/pause:3.10'] });
    const ok = await get();
    expect(ok.status).toBe(200);
    expect(ok.headers.get('docker-content-digest')).toBe(pauseRef().digest);

    const del = await a.call<RemoveResult>('DELETE', '/api/v1/allowlist', { rules: ['registry.k8s.io/pause:3.10'] });
    expect(del.json.removed).toEqual(['registry.k8s.io/pause:3.10']);
    const refused = await get();
    expect(refused.status).toBe(403);
    const body = (await refused.json()) as { errors: Array<{ code: string; message: string }> };
    expect(body.errors[0]?.code).toBe('DENIED');
    expect(body.errors[0]?.message).toContain('registry.k8s.io/pause:3.10 is not on the allowlist');
    // The digest the tag pointed to is not reachable any more either.
    expect((await fetch(`${a.sluice.url}/v2/pause/manifests/${pauseRef().digest}?ns=registry.k8s.io`)).status).toBe(403);

    const denied = await a.call<{ entries: Array<DeniedEntry & { command: string }> }>('GET', '/api/v1/denied');
    const entry = denied.json.entries.find((e) => e.name === 'pause' && e.reference === '3.10');
    if (!entry) throw new Error(`no denied entry for pause:3.10 in ${denied.text}`);
    expect(entry).toMatchObject({ host: 'registry.k8s.io', count: 2, client: '127.0.0.1', command: 'sluice allow add registry.k8s.io/pause:3.10' });
    expect(Date.parse(entry.firstSeen)).toBeLessThan(Date.parse(entry.lastSeen));
    const commands = await a.call('GET', '/api/v1/denied?format=commands');
    expect(commands.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(commands.text.split('\n')).toEqual([
      `sluice allow add registry.k8s.io/pause@${pauseRef().digest}`,
      'sluice allow add registry.k8s.io/pause:3.10',
      '',
    ]);
    expect((await a.call<{ cleared: number }>('DELETE', '/api/v1/denied')).json).toEqual({ cleared: 2 });
    expect((await a.call<{ entries: DeniedEntry[] }>('GET', '/api/v1/denied')).json.entries).toEqual([]);
  });
});

describe('window, status and sync', () => {
  const SATURDAY_NIGHT = [{ days: ['sat'], start: '02:00', end: '04:00', timezone: 'UTC' }];
  // A Wednesday noon: the next scheduled window is Saturday 2025-06-14 02:00 UTC.
  const now = (): Date => new Date('2025-06-11T12:00:00Z');

  it('opens and closes a manual window (who from X-Sluice-User, why from the note) and status shows it', async () => {
    const a = await startAdmin({ windows: SATURDAY_NIGHT, build: { now } });
    const before = await a.call<Status>('GET', '/api/v1/status');
    expect(before.json.window).toMatchObject({ open: false, until: null, nextOpen: '2025-06-14T02:00:00.000Z', source: null });
    expect(before.json.upstreams.map((u) => u.host)).toEqual(['docker.io', 'ghcr.io', 'registry.k8s.io']);
    expect(before.json.store).toEqual({ repositories: 0, tags: 0, blobs: 0, sizeBytes: 0, maxBytes: null, full: false });

    const open = await a.call<{ window: WindowReport }>('POST', '/api/v1/window', { duration: '2h', note: 'talos 1.11 upgrade' }, { 'x-sluice-user': 'alice' });
    expect(open.status).toBe(200);
    expect(open.json.window).toMatchObject({
      open: true,
      until: '2025-06-11T14:00:00.000Z',
      source: 'manual',
      manual: { who: 'alice', note: 'talos 1.11 upgrade', openedAt: '2025-06-11T12:00:00.000Z' },
    });
    expect((await a.call<Status>('GET', '/api/v1/status')).json.window.open).toBe(true);
    expect(a.sluice.app.window.isOpen()).toBe(true);

    const closed = await a.call<{ window: WindowReport }>('DELETE', '/api/v1/window');
    expect(closed.json.window).toMatchObject({ open: false, nextOpen: '2025-06-14T02:00:00.000Z' });
    expect((await a.call<Status>('GET', '/api/v1/status')).json.window.open).toBe(false);

    for (const body of [{ duration: 'soon', note: 'x' }, { duration: '2h' }, { duration: '0s', note: 'x' }, { duration: '40d', note: 'x' }, {}]) {
      const res = await a.call('POST', '/api/v1/window', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
    expect(a.sluice.app.window.isOpen()).toBe(false);
  });

  it('refuses sync outside a window with 409 naming the next window; a dry run is allowed', async () => {
    const a = await startAdmin({ windows: SATURDAY_NIGHT, build: { now }, allowlist: ['registry.k8s.io/pause:3.10', 'ghcr.io/siderolabs/**'] });
    const res = await a.call('POST', '/api/v1/sync', {});
    expect(res.status).toBe(409);
    expect(res.json.errors[0]?.message).toContain('closed until 2025-06-14T02:00:00.000Z');
    expect(res.json.errors[0]?.detail).toEqual({ nextOpen: '2025-06-14T02:00:00.000Z' });

    const dry = await a.call('POST', '/api/v1/sync', { dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.headers.get('content-type')).toBe('application/x-ndjson');
    const lines = dry.text.trim().split('\n').map((l) => JSON.parse(l) as SyncLine);
    expect(lines[0]).toEqual({ type: 'plan', references: ['registry.k8s.io/pause:3.10'] });
    expect(lines.at(-1)?.type).toBe('summary');
    expect(lines.at(-1)?.report?.planned).toEqual(['registry.k8s.io/pause:3.10']);
    expect((await a.call('POST', '/api/v1/sync', { platforms: ['linux'] })).status).toBe(400);
  });

  it('streams NDJSON progress and a summary: cached content counts as cached, an unknown image as failed', async () => {
    // An upstream that knows nothing: tags resolve from the store, signature tags and referrers are absent.
    const empty = await new MiniUpstream().start();
    started.push({ close: () => empty.stop() });
    const url = empty.url;
    const a = await startAdmin({
      windows: 'always',
      allowlist: ['registry.k8s.io/pause:3.10', 'ghcr.io/siderolabs/installer:v1.11.0'],
      upstreams: { 'registry.k8s.io': { url }, 'ghcr.io': { url } },
    });
    await importPath(a.sluice.app.store, layoutDir);
    const res = await a.call('POST', '/api/v1/sync', { platforms: ['linux/amd64'] });
    expect(res.status).toBe(200);
    const lines = res.text.trim().split('\n').map((l) => JSON.parse(l) as SyncLine);
    expect(lines[0]).toEqual({ type: 'plan', references: ['registry.k8s.io/pause:3.10', 'ghcr.io/siderolabs/installer:v1.11.0'] });
    expect(lines.filter((l) => l.type === 'reference').map((l) => [l.reference, l.status])).toEqual([
      ['registry.k8s.io/pause:3.10', 'cached'],
      ['ghcr.io/siderolabs/installer:v1.11.0', 'failed'],
    ]);
    expect(lines.filter((l) => l.type === 'blob').every((l) => l.cached === true && l.reference === 'registry.k8s.io/pause:3.10')).toBe(true);
    const summary = lines.at(-1);
    expect(summary?.type).toBe('summary');
    expect(summary?.report?.cached).toEqual(['registry.k8s.io/pause:3.10']);
    expect(summary?.report?.failed.map((f) => f.reference)).toEqual(['ghcr.io/siderolabs/installer:v1.11.0']);
    const status = await a.call<Status>('GET', '/api/v1/status');
    expect(status.json.sync.last?.cached).toEqual(['registry.k8s.io/pause:3.10']);
    expect(status.json.store.repositories).toBe(4);
  });
});
