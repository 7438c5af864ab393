// Hand edits of <storage>/allowlist.json while the server runs: a valid edit is
// enforced at once without any CLI call; an invalid one keeps the last good rules, and status and the
// allowlist routes say which file is wrong and why; a fixed file is applied again.
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Allowlist, RuleRecord } from '../../src/policy/allowlist.js';
import { importPath } from '../../src/jobs/importer.js';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

const PAUSE = 'registry.k8s.io/pause:3.10';
const EXTRA = 'registry.k8s.io/coredns/coredns:v1.11.1';
const OTHER = 'ghcr.io/siderolabs/kubelet:v1.31.2';
const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json';
const WAIT_MS = 5_000;

interface Problem {
  file: string;
  message: string;
  since: string;
}
interface OciError {
  errors: Array<{ code: string; message: string; detail: unknown }>;
}

let layoutDir: string;
let layout: LayoutDescription;
const started: InProcessSluice[] = [];

beforeAll(async () => {
  layoutDir = await mkdtemp(join(tmpdir(), 'sluice-watch-layout-'));
  layout = await buildLayout(layoutDir);
});
afterAll(async () => {
  await rm(layoutDir, { recursive: true, force: true });
});
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.close()));
});

/** Resolves once `ready()` holds, re-checked on every allowlist event; fails after WAIT_MS. */
function until(list: Allowlist, what: string, ready: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const offs: Array<() => void> = [];
    const done = (err?: Error): void => {
      clearTimeout(timer);
      for (const off of offs) off();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS);
    const check = (): void => {
      if (ready()) done();
    };
    offs.push(list.onChange(check));
    // Absent before the fix: then only onChange can fire, and a broken file never resolves.
    const onProblem = (list as Partial<{ onProblem(l: () => void): () => void }>).onProblem;
    if (onProblem) offs.push(onProblem.call(list, check));
    check();
  });
}

/** What `jq 'del(...)' allowlist.json > tmp && mv tmp allowlist.json` does: a new file renamed over the old. */
async function replaceFile(file: string, text: string): Promise<void> {
  const tmp = `${file}.jq-tmp`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

async function start(): Promise<{ s: InProcessSluice; admin: string; token: string; file: string }> {
  const s = await startSluice({ allowlist: [PAUSE, OTHER] });
  started.push(s);
  expect((await importPath(s.app.store, layoutDir)).failed).toEqual([]);
  const admin = (await s.app.admin.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  const token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
  return { s, admin, token, file: join(s.storage, 'allowlist.json') };
}

describe('hand edits of allowlist.json while the server runs', () => {
  it('applies a jq-style edit at once, keeps the last good rules over a broken file and says so, applies the fix', async () => {
    const { s, admin, token, file } = await start();
    const list = s.app.allowlist;
    const manifest = (): Promise<number> =>
      fetch(`${s.url}/v2/pause/manifests/3.10?ns=registry.k8s.io`, { headers: { accept: ACCEPT } }).then((r) => r.status);
    const call = async <T>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> => {
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${admin}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, json: (await res.json()) as T };
    };
    expect(layout.images.some((i) => i.ref === PAUSE)).toBe(true);
    expect(await manifest()).toBe(200);

    // The rule deleted by hand: refused without any CLI or API call.
    const original = JSON.parse(await readFile(file, 'utf8')) as { version: 1; rules: RuleRecord[] };
    const pauseRecord = original.rules.find((r) => r.rule === PAUSE);
    const v0 = list.version;
    await replaceFile(file, JSON.stringify({ ...original, rules: original.rules.filter((r) => r.rule !== PAUSE) }, null, 2));
    await until(list, 'the edit to be applied', () => list.version > v0);
    expect(list.version).toBe(v0 + 1);
    expect(await manifest()).toBe(403);
    const status1 = await call<{ allowlist: { rules: number }; allowlistError: Problem | null }>('GET', '/api/v1/status');
    expect(status1.json.allowlist.rules).toBe(1);
    expect(status1.json.allowlistError).toBeNull();

    // Broken: the rule put back next to an invalid one. Nothing of it applies; the last good rules stay.
    const v1 = list.version;
    const broken = { version: 1, rules: [...original.rules, { rule: 'Ghcr.io/Bad', addedBy: 'vi', addedAt: '2025-01-01T00:00:00Z' }] };
    await replaceFile(file, JSON.stringify(broken));
    await until(list, 'the broken file to be reported', () => (list as Partial<{ problem: Problem }>).problem !== undefined);
    expect(list.version).toBe(v1);
    expect(await manifest()).toBe(403);
    const status2 = await call<{ allowlist: { rules: number }; allowlistError: Problem | null }>('GET', '/api/v1/status');
    expect(status2.status).toBe(200);
    expect(status2.json.allowlist.rules).toBe(1);
    expect(status2.json.allowlistError).toMatchObject({ file, message: expect.stringContaining('rules[2].rule "Ghcr.io/Bad"') });
    const ls = await call<{ rules: RuleRecord[]; allowlistError: Problem | null }>('GET', '/api/v1/allowlist');
    expect(ls.status).toBe(200);
    expect(ls.json.rules.map((r) => r.rule)).toEqual([OTHER]);
    expect(ls.json.allowlistError?.file).toBe(file);

    // Truncated JSON: still the last good rules; an edit through the API is refused naming file and problem.
    await writeFile(file, '{"version":1,"rules":[');
    await until(list, 'the parse error to be reported', () => /JSON/i.test((list as Partial<{ problem: Problem }>).problem?.message ?? ''));
    const add = await call<OciError>('POST', '/api/v1/allowlist', { rules: ['ghcr.io/x/y:v1'] });
    expect(add.status).toBe(409);
    expect(add.json.errors[0]?.code).toBe('ALLOWLIST_FILE_INVALID');
    expect(add.json.errors[0]?.message).toContain(file);
    expect(add.json.errors[0]?.message).toMatch(/JSON/i);
    const ls2 = await call<{ rules: RuleRecord[]; allowlistError: Problem | null }>('GET', '/api/v1/allowlist');
    expect(ls2.status).toBe(200);
    expect(ls2.json.rules.map((r) => r.rule)).toEqual([OTHER]);
    expect(ls2.json.allowlistError?.message).toMatch(/JSON/i);
    expect(Date.parse(ls2.json.allowlistError?.since ?? '')).toBe(Date.parse(status2.json.allowlistError?.since ?? ''));

    // Fixed, with the rule back: applied, the error gone.
    const v2 = list.version;
    await replaceFile(file, JSON.stringify({ version: 1, rules: [pauseRecord, ...original.rules.filter((r) => r.rule !== PAUSE)] }));
    await until(list, 'the fixed file to be applied', () => list.version > v2);
    expect(await manifest()).toBe(200);
    const status3 = await call<{ allowlist: { rules: number }; allowlistError: Problem | null }>('GET', '/api/v1/status');
    expect(status3.json.allowlist.rules).toBe(2);
    expect(status3.json.allowlistError).toBeNull();
  });

  it("sluice's own writes are not taken for hand edits: one API change bumps the version once", async () => {
    const { s, admin, token, file } = await start();
    const list = s.app.allowlist;
    // A rule added through the API (the config's rules cannot be removed through it).
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const added = await fetch(`${admin}/api/v1/allowlist`, { method: 'POST', headers, body: JSON.stringify({ rules: [EXTRA] }) });
    expect(added.status).toBe(200);
    const v0 = list.version;
    const res = await fetch(`${admin}/api/v1/allowlist`, { method: 'DELETE', headers, body: JSON.stringify({ rules: [EXTRA] }) });
    expect(res.status).toBe(200);
    expect(list.version).toBe(v0 + 1);
    // A later hand edit is then the very next change: nothing re-applied sluice's write in between.
    const doc = JSON.parse(await readFile(file, 'utf8')) as { version: 1; rules: RuleRecord[] };
    await replaceFile(file, JSON.stringify({ ...doc, rules: [] }));
    await until(list, 'the hand edit to be applied', () => list.version > v0 + 1);
    expect(list.version).toBe(v0 + 2);
    expect(list.list()).toEqual([]);
  });
});
