// The real `sluice` CLI (node dist/src/main.js) against a running `sluice serve` — edits go through the admin
// API and apply live — and without one, where it edits the store files under the lock. Needs `npx tsc` first.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { createConnection, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatusReport } from '../../src/jobs/status.js';
import type { RuleRecord } from '../../src/policy/allowlist.js';
import type { DeniedEntry } from '../../src/policy/denied.js';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { nextOpen, parseWindows } from '../../src/window/schedule.js';
import type { RunResult } from '../helpers/binaries.js';
import { buildLayout } from '../helpers/images.js';
import { freePort } from '../helpers/registry.js';
import { runSluice, SLUICE_MAIN, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { snapshot } from '../helpers/snapshot.js';
import { blobFile } from '../helpers/fs-store.js';

type Status = StatusReport & { server: { running: boolean; url: string | null } };

/** A daily one-minute window twelve hours from now: closed for the whole test run, with a known next opening. */
function farWindow(): { windows: unknown; next: string } {
  const hour = (new Date().getUTCHours() + 12) % 24;
  const start = `${String(hour).padStart(2, '0')}:00`;
  const windows = [{ days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start, end: `${String(hour).padStart(2, '0')}:01`, timezone: 'UTC' }];
  const schedule = parseWindows(windows).windows;
  const next = nextOpen(schedule, new Date());
  if (!next) throw new Error('no next window');
  return { windows, next: next.toISOString() };
}

/** Runs `items` through `fn` with at most `limit` in flight (each CLI start costs a node boot). */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The CLI with `input` on its standard input. */
function sluiceWithStdin(args: string[], input: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SLUICE_MAIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => void (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => void (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(input);
  });
}

const TALOS_IMAGES = `ghcr.io/siderolabs/flannel:v0.26.7
registry.k8s.io/coredns/coredns:v1.12.1
gcr.io/etcd-development/etcd:v3.5.21
registry.k8s.io/kube-apiserver:v1.34.0
registry.k8s.io/kube-controller-manager:v1.34.0
registry.k8s.io/kube-scheduler:v1.34.0
registry.k8s.io/kube-proxy:v1.34.0
ghcr.io/siderolabs/kubelet:v1.34.0
ghcr.io/siderolabs/installer:v1.11.0
registry.k8s.io/pause:3.10
`;

function expectRc(r: RunResult, code: number): void {
  expect(r.code, `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toBe(code);
}

describe('sluice CLI with a running server (admin API)', () => {
  let server: SluiceProcess;
  let config: string;
  let adminUrl: string;
  let token: string;
  let window: { windows: unknown; next: string };
  const cli = (...args: string[]): Promise<RunResult> => runSluice([...args, '--config', config]);
  const api = (method: string, path: string, body?: unknown): Promise<Response> =>
    fetch(`${adminUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const rules = async (): Promise<string[]> => {
    const r = await cli('allow', 'ls', '--json');
    expectRc(r, 0);
    return (JSON.parse(r.stdout) as RuleRecord[]).map((x) => x.rule);
  };

  beforeAll(async () => {
    const adminPort = await freePort();
    window = farWindow();
    const dir = await mkdtemp(join(tmpdir(), 'sluice-cli-'));
    server = await startSluiceProcess(
      sluiceConfigYaml('./data', { windows: window.windows, extra: { admin: { listen: `127.0.0.1:${adminPort}` } } }),
      { dir },
    );
    config = server.configFile;
    adminUrl = `http://127.0.0.1:${adminPort}`;
    token = (await readFile(join(dir, 'data', 'admin.token'), 'utf8')).trim();
  });
  afterAll(async () => {
    await server?.stop();
    if (server) await rm(server.dir, { recursive: true, force: true });
  });

  it('100 concurrent `allow add` — 50 CLI processes and 50 API calls — leave exactly 100 rules', async () => {
    const viaCli = mapLimit(Array.from({ length: 50 }, (_, i) => i), 10, (i) => cli('allow', 'add', `ghcr.io/race/cli${i}:v1`, '--note', `cli ${i}`));
    const viaApi = Promise.all(Array.from({ length: 50 }, (_, i) => api('POST', '/api/v1/allowlist', { rules: [`ghcr.io/race/api${i}:v1`] })));
    const [cliResults, apiResults] = await Promise.all([viaCli, viaApi]);
    for (const r of cliResults) expectRc(r, 0);
    expect(apiResults.map((r) => r.status)).toEqual(Array(50).fill(200));
    const race = (await rules()).filter((r) => r.startsWith('ghcr.io/race/'));
    expect(race).toHaveLength(100);
    expect(new Set(race).size).toBe(100);
    const file = JSON.parse(await readFile(join(server.dir, 'data', 'allowlist.json'), 'utf8')) as { rules: RuleRecord[] };
    expect(file.rules.filter((r) => r.rule.startsWith('ghcr.io/race/'))).toHaveLength(100);
    const cliRecord = file.rules.find((r) => r.rule === 'ghcr.io/race/cli7:v1');
    expect(cliRecord?.note).toBe('cli 7');
    expect(cliRecord?.addedBy).not.toBe('admin-api'); // the CLI sends the login name
    for (const r of cliResults) expect(r.stderr).not.toContain('no sluice server');
  });

  it('`talosctl images default | sluice allow import -` adds exact rules live; a bad line adds nothing and exits 2', async () => {
    const ok = await sluiceWithStdin(['allow', 'import', '-', '--config', config], `# talosctl images default\n\n${TALOS_IMAGES}`);
    expectRc(ok, 0);
    expect(ok.stdout).toContain('added registry.k8s.io/pause:3.10');
    const now = await rules();
    for (const line of TALOS_IMAGES.trim().split('\n')) expect(now).toContain(line);

    const before = (await rules()).length;
    const bad = await sluiceWithStdin(['allow', 'import', '-', '--config', config], 'quay.io/fine/one:v1\nNot/Valid:1\n\nquay.io/fine/two:\n');
    expectRc(bad, 2);
    expect(bad.stderr).toContain('stdin:2:');
    expect(bad.stderr).toContain('stdin:4:');
    expect(await rules()).toHaveLength(before);

    const rm = await cli('allow', 'rm', 'registry.k8s.io/pause:3.10', 'quay.io/not/there:1');
    expectRc(rm, 1);
    expect(rm.stdout).toContain('removed registry.k8s.io/pause:3.10');
    expect(rm.stderr).toContain('not on the allowlist: quay.io/not/there:1');
    const invalid = await cli('allow', 'add', 'quay.io/ok:1', 'Bad/Rule');
    expectRc(invalid, 2);
    expect(invalid.stderr).toContain('invalid rule "Bad/Rule"');
    expect(await rules()).not.toContain('quay.io/ok:1');
  });

  it('window open/close through the CLI changes `status`; sync outside a window exits 1 naming the next window', async () => {
    const closed = await cli('sync');
    expectRc(closed, 1);
    expect(closed.stderr).toContain(`closed until ${window.next}`);

    const status = async (): Promise<Status> => {
      const r = await cli('status', '--json');
      expectRc(r, 0);
      return JSON.parse(r.stdout) as Status;
    };
    const before = await status();
    expect(before.server).toEqual({ running: true, url: adminUrl });
    expect(before.window).toMatchObject({ open: false, nextOpen: window.next });

    expectRc(await cli('window', 'open', '2h'), 2); // the note is required
    expectRc(await cli('window', 'open', 'soon', '--note', 'x'), 2);
    const open = await cli('window', 'open', '90m', '--note', 'talos upgrade');
    expectRc(open, 0);
    expect(open.stdout).toContain('upstream access is open until');
    const during = await status();
    expect(during.window).toMatchObject({ open: true, source: 'manual', manual: { note: 'talos upgrade' } });
    expect(Date.parse(during.window.until ?? '') - Date.parse(during.window.manual?.openedAt ?? '')).toBe(90 * 60_000);
    const human = await cli('status');
    expect(human.stdout).toContain('upstream access is open until');
    expect(human.stdout).toContain(`running (admin API ${adminUrl})`);

    expectRc(await cli('window', 'close'), 0);
    expect((await status()).window).toMatchObject({ open: false, nextOpen: window.next });

    const dry = await cli('sync', '--dry-run', '--platform', 'linux/amd64');
    expectRc(dry, 0);
    expect(dry.stdout).toContain('would fetch     ghcr.io/siderolabs/kubelet:v1.34.0');
  });

  it('`sluice denied` shows a refusal with count, first/last seen and client; --format commands is paste-ready', async () => {
    const registry = server.url;
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${registry}/v2/library/alpine/manifests/3.20?ns=docker.io`);
      expect(res.status).toBe(403);
    }
    const json = await cli('denied', '--json');
    expectRc(json, 0);
    const entry = (JSON.parse(json.stdout) as DeniedEntry[]).find((e) => e.name === 'library/alpine');
    expect(entry).toMatchObject({ host: 'docker.io', reference: '3.20', count: 3, client: '127.0.0.1' });
    expect(Date.parse(entry?.lastSeen ?? '')).toBeGreaterThanOrEqual(Date.parse(entry?.firstSeen ?? 'x'));
    const table = await cli('denied');
    expect(table.stdout).toMatch(/^COUNT +LAST SEEN +FIRST SEEN +CLIENT +REFERENCE$/m);
    expect(table.stdout).toMatch(/^3 +\S+ +\S+ +127\.0\.0\.1 +docker\.io\/library\/alpine:3\.20$/m);
    const commands = await cli('denied', '--format', 'commands');
    expect(commands.stdout.split('\n')).toContain('sluice allow add docker.io/library/alpine:3.20');
    // Pasting the line allows the image on the very next request (the answer changes from 403 to 404: not cached).
    expectRc(await cli('allow', 'add', 'docker.io/library/alpine:3.20'), 0);
    expect((await fetch(`${registry}/v2/library/alpine/manifests/3.20?ns=docker.io`)).status).toBe(404);
    expectRc(await cli('denied', '--clear'), 0);
    expect(JSON.parse((await cli('denied', '--json')).stdout)).toEqual([]);
  });

  it('a refused tags/list is logged as the repository: the 403 reads right, and every --format commands line works', async () => {
    const res = await fetch(`${server.url}/v2/siderolabs/imager/tags/list?ns=ghcr.io`);
    expect(res.status).toBe(403);
    const message = ((await res.json()) as { errors: Array<{ message: string }> }).errors[0]?.message;
    expect(message).toBe('repository ghcr.io/siderolabs/imager has no image on the allowlist of this mirror');
    const table = await cli('denied');
    expect(table.stdout).toMatch(/^1 +\S+ +\S+ +127\.0\.0\.1 +ghcr\.io\/siderolabs\/imager \(tags\/list\)$/m);
    const lines = (await cli('denied', '--format', 'commands')).stdout.split('\n').filter((l) => l.includes('siderolabs/imager'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^# /);
    expect(lines[0]).toContain('sluice allow add ghcr.io/siderolabs/imager:TAG');
    // What the comment offers is a rule the CLI takes, and it lifts the refusal.
    expectRc(await cli('allow', 'add', 'ghcr.io/siderolabs/imager:v1.11.0'), 0);
    expect((await fetch(`${server.url}/v2/siderolabs/imager/tags/list?ns=ghcr.io`)).status).toBe(200);
    expectRc(await cli('allow', 'rm', 'ghcr.io/siderolabs/imager:v1.11.0'), 0);
    expectRc(await cli('denied', '--clear'), 0);
  });

  it('a wrong token is refused with a clear message (exit 1), never an offline edit', async () => {
    const badToken = join(server.dir, 'wrong.token');
    await writeFile(badToken, `${'0'.repeat(64)}\n`);
    const text = (await readFile(config, 'utf8')) + '';
    const wrongConfig = join(server.dir, 'wrong.yaml');
    await writeFile(wrongConfig, text.replace(/admin:\n(\s+)listen: (\S+)/, `admin:\n$1listen: $2\n$1tokenFile: ${badToken}`));
    const r = await runSluice(['allow', 'add', 'quay.io/sneaky:1', '--config', wrongConfig]);
    expectRc(r, 1);
    expect(r.stderr).toContain(`refused the token in ${badToken}`);
    expect(await rules()).not.toContain('quay.io/sneaky:1');
  });
});

describe('rules seeded by the config', () => {
  it('`allow rm` of a config rule is refused naming the config file, removes nothing of the batch, and `allow ls` marks it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sluice-cli-seeded-'));
    try {
      const config = join(dir, 'sluice.yaml');
      const port = await freePort(); // nothing listens: the CLI edits the files
      await writeFile(config, sluiceConfigYaml('./data', { allowlist: ['quay.io/seeded/img:v1'], extra: { admin: { listen: `127.0.0.1:${port}` } } }));
      const cli = (...args: string[]): Promise<RunResult> => runSluice([...args, '--config', config]);
      expectRc(await cli('allow', 'add', 'quay.io/hand/img:v1'), 0);
      const rm1 = await cli('allow', 'rm', 'quay.io/seeded/img:v1', 'quay.io/hand/img:v1');
      expectRc(rm1, 1);
      expect(rm1.stdout).not.toContain('removed');
      expect(rm1.stderr).toContain('quay.io/seeded/img:v1');
      expect(rm1.stderr).toContain(config);
      const ls = await cli('allow', 'ls', '--json');
      const listed = JSON.parse(ls.stdout) as Array<RuleRecord & { fromConfig?: boolean }>;
      expect(listed.map((r) => [r.rule, r.fromConfig ?? false])).toEqual([['quay.io/seeded/img:v1', true], ['quay.io/hand/img:v1', false]]);
      const table = await cli('allow', 'ls');
      expect(table.stdout).toMatch(/quay\.io\/seeded\/img:v1 .*config/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('sluice CLI without a server (store files, under the lock)', () => {
  let dir: string;
  let config: string;
  let window: { windows: unknown; next: string };
  const cli = (...args: string[]): Promise<RunResult> => runSluice([...args, '--config', config]);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-cli-offline-'));
    config = join(dir, 'sluice.yaml');
    window = farWindow();
    // A port nothing listens on: the CLI finds no server and edits the files.
    const port = await freePort();
    await writeFile(config, sluiceConfigYaml('./data', { windows: window.windows, extra: { admin: { listen: `127.0.0.1:${port}` } } }));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('allow add/ls/rm/import edit the store directly; 20 concurrent CLIs lose no edit', async () => {
    const results = await mapLimit(Array.from({ length: 20 }, (_, i) => i), 10, (i) => cli('allow', 'add', `quay.io/offline/img${i}:v1`));
    for (const r of results) {
      expectRc(r, 0);
      expect(r.stderr).toContain('no sluice server answers');
    }
    const imported = await sluiceWithStdin(['allow', 'import', '-', '--config', config], TALOS_IMAGES);
    expectRc(imported, 0);
    const ls = await cli('allow', 'ls', '--json');
    const rules = (JSON.parse(ls.stdout) as RuleRecord[]).map((r) => r.rule);
    expect(rules.filter((r) => r.startsWith('quay.io/offline/'))).toHaveLength(20);
    expect(rules).toContain('ghcr.io/siderolabs/kubelet:v1.34.0');
    expectRc(await cli('allow', 'rm', 'quay.io/offline/img3:v1'), 0);
    const file = JSON.parse(await readFile(join(dir, 'data', 'allowlist.json'), 'utf8')) as { rules: RuleRecord[] };
    expect(file.rules.map((r) => r.rule)).not.toContain('quay.io/offline/img3:v1');
    expect(file.rules).toHaveLength(19 + 10);
  });

  it('window open is recorded for status and honoured by an in-process sync', async () => {
    const closedSync = await cli('sync');
    expectRc(closedSync, 1);
    expect(closedSync.stderr).toContain(`closed until ${window.next}`);

    expectRc(await cli('window', 'open', '1h', '--note', 'offline prefetch'), 0);
    const status = JSON.parse((await cli('status', '--json')).stdout) as Status;
    expect(status.server.running).toBe(false);
    expect(status.window).toMatchObject({ open: true, source: 'manual', manual: { note: 'offline prefetch' } });

    // The window is open, so sync runs (in this process) and reaches the (dead) upstreams: failures, not "closed".
    const sync = await cli('sync', '--platform', 'linux/amd64');
    expectRc(sync, 1);
    expect(sync.stderr).toContain('syncing in this process');
    expect(sync.stdout).toMatch(/^failed +registry\.k8s\.io\/pause:3\.10: /m);
    expect(sync.stdout).toMatch(/sync finished: 0 fetched \(0 B\), 0 already cached, \d+ failed/);

    expectRc(await cli('window', 'close'), 0);
    expect((JSON.parse((await cli('status', '--json')).stdout) as Status).window.open).toBe(false);
  });

  it('usage errors exit 2', async () => {
    for (const args of [
      ['allow'],
      ['allow', 'frob'],
      ['allow', 'add'],
      ['allow', 'import'],
      ['window', 'open'],
      ['window'],
      ['sync', 'extra'],
      ['sync', '--platform', 'linux'],
      ['denied', '--format', 'yaml'],
      ['status', '--bogus'],
    ]) {
      const r = await cli(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
    }
  });
});

describe('--help and unknown options (no side effect, one mechanism for every subcommand)', () => {
  let dir: string;
  let config: string;
  let storage: string;
  let upstream: Server;
  let upstreamHits = 0;
  let servePort: number;
  let corruptBlob: string;
  const cli = (...args: string[]): Promise<RunResult> => runSluice([...args, '--config', config], { timeoutMs: 20_000 });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-cli-help-'));
    storage = join(dir, 'data');
    config = join(dir, 'sluice.yaml');
    // Counts every request: a sync (or anything else) that reached the upstream shows here.
    upstream = createServer((req, res) => {
      upstreamHits++;
      res.writeHead(404).end();
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const { port } = upstream.address() as AddressInfo;
    servePort = await freePort();
    const adminPort = await freePort();
    await writeFile(config, sluiceConfigYaml('./data', {
      windows: 'always',
      upstreams: { 'docker.io': { url: `http://127.0.0.1:${port}` } },
      extra: { listen: `127.0.0.1:${servePort}`, admin: { listen: `127.0.0.1:${adminPort}` } },
    }));
    // State every command would change: a rule, a manual window, a corrupt blob that verify --repair would quarantine.
    expectRc(await cli('allow', 'add', 'docker.io/library/alpine:3.20'), 0);
    expectRc(await cli('window', 'open', '1h', '--note', 'prefetch'), 0);
    const store = await openStore({ storage });
    corruptBlob = blobFile(store, (await store.putBlob(Buffer.from('a blob that verify would re-hash'))).digest);
    await store.close();
    await writeFile(corruptBlob, (await readFile(corruptBlob)).reverse());
    await buildLayout(join(dir, 'layout'));
    await writeFile(join(dir, 'images.txt'), 'quay.io/from/list:v1\n');
    upstreamHits = 0;
  });
  afterAll(async () => {
    upstream?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('`--help`/`-h` on every subcommand prints its usage, exits 0 and does nothing', async () => {
    const cases: Array<[string, string[]]> = [
      ['serve', ['serve', '--help']],
      ['import', ['import', join(dir, 'layout'), '--help']],
      ['allow', ['allow', '--help']],
      ['allow add', ['allow', 'add', 'quay.io/added/by:help', '--help']],
      ['allow rm', ['allow', 'rm', 'docker.io/library/alpine:3.20', '-h']],
      ['allow ls', ['allow', 'ls', '--help']],
      ['allow import', ['allow', 'import', join(dir, 'images.txt'), '--help']],
      ['denied', ['denied', '--clear', '--help']],
      ['window', ['window', '--help']],
      ['window open', ['window', 'open', '2h', '--note', 'x', '--help']],
      ['window close', ['window', 'close', '--help']],
      ['window close', ['-h', 'window', 'close']],
      ['status', ['status', '--help']],
      ['sync', ['sync', '--help']],
      ['sync', ['help', 'sync']],
      ['verify', ['verify', '--repair', '--help']],
    ];
    const before = await snapshot(storage);
    const windowBefore = await readFile(join(storage, 'window.json'), 'utf8');
    const results = await mapLimit(cases, 4, ([, args]) => cli(...args));
    cases.forEach(([name, args], i) => {
      const r = results[i]!;
      expect(r.code, `${args.join(' ')}: exit ${r.code}\n${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout, args.join(' ')).toContain(`usage: sluice ${name}`);
    });
    expect(upstreamHits, 'a --help reached the upstream (sync ran)').toBe(0);
    expect(await readFile(join(storage, 'window.json'), 'utf8')).toBe(windowBefore);
    expect(existsSync(corruptBlob), 'verify --help quarantined the corrupt blob').toBe(true);
    expect((await snapshot(storage)).files).toEqual(before.files);
    // serve --help returned instead of serving: nothing listens on its port.
    const probe = createConnection({ host: '127.0.0.1', port: servePort });
    const outcome = await new Promise((resolve) => probe.once('connect', () => resolve('listening')).once('error', () => resolve('refused')));
    probe.destroy();
    expect(outcome).toBe('refused');
    const top = await runSluice(['--help']);
    expectRc(top, 0);
    for (const c of ['serve', 'import PATH', 'allow add RULE', 'window open DURATION', 'verify [--repair]']) expect(top.stdout).toContain(c);
  });

  it('an unknown option is exit 2 naming it, for the command it was given to', async () => {
    for (const args of [['status', '--repair'], ['sync', '--bogus'], ['window', 'close', '--note', 'x'], ['allow', 'ls', '--note', 'x'], ['verify', '-x'], ['--bogus', 'status']]) {
      const r = await cli(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      const option = args.find((a) => a.startsWith('-')) ?? '';
      expect(r.stderr, args.join(' ')).toContain(option);
    }
    expect(upstreamHits).toBe(0);
    expect(JSON.parse(await readFile(join(storage, 'window.json'), 'utf8'))).not.toBeNull();
  });

  it('a missing `allow import` file is a usage error naming it (exit 2)', async () => {
    const missing = join(dir, 'no-such-list.txt');
    const r = await cli('allow', 'import', missing);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(missing);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('global options work before the subcommand: `sluice --config F status`', async () => {
    const r = await runSluice(['--config', config, 'status', '--json']);
    expectRc(r, 0);
    expect((JSON.parse(r.stdout) as Status).allowlist.rules).toBe(1);
    expectRc(await runSluice([`--config=${config}`, 'allow', 'ls']), 0);
    expectRc(await runSluice(['--json', '--config', config, 'status']), 0);
  });
});
