// The status page in a real browser (Debian's chromium, headless, driven by playwright-core).
// Real docker-registry upstream; the test logs in with the admin token, sees a refused image in the denied list,
// allows it (the exact rule is shown first), and the next skopeo pull of it succeeds. The screenshot goes to
// test-results/status-page.png, where CI keeps test output.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries, which } from '../helpers/binaries.js';
import { skopeoCopyAll, tempDir, verifyDirDigests } from '../helpers/clients.js';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { REPO_ROOT, startSluice, type InProcessSluice } from '../helpers/sluice.js';

const ok = requireBinaries(['docker-registry', 'skopeo', 'chromium'], 'test/integration/status-page.test.ts (apt-get install chromium)');

const BUSYBOX = 'docker.io/library/busybox:1.36'; // refused, then allowed from the page
const PAUSE = 'registry.k8s.io/pause:3.10'; // allowed and synced: green
const KUBELET = 'ghcr.io/siderolabs/kubelet:v1.34.0'; // synced for linux/amd64 only: amber
const ETCD = 'registry.k8s.io/etcd:3.5.0'; // allowed, not on the upstream: red
/** Debian's chromium (the brief: /usr/bin/chromium), wherever PATH finds it. */
const CHROMIUM = which('chromium') ?? '/usr/bin/chromium';
const SCREENSHOT = join(REPO_ROOT, 'test-results', 'status-page.png');

describe.skipIf(!ok)('status page in headless chromium, real docker-registry upstream', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  let sluice: InProcessSluice;
  let adminUrl: string;
  let browser: Browser;

  beforeAll(async () => {
    work = await tempDir('status-page');
    layout = await buildLayout(join(work, 'layout'));
    registry = await startRegistry();
    await pushLayout(layout.dir, layout, registry.hostPort);
    const up = { url: registry.url };
    sluice = await startSluice({ windows: 'always', allowlist: [PAUSE, KUBELET, ETCD], upstreams: { 'docker.io': up, 'ghcr.io': up, 'registry.k8s.io': up } });
    adminUrl = (await sluice.app.admin.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
    await sluice.app.syncer.run({ platforms: ['linux/amd64'] });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await sluice?.close();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const pull = async (label: string): Promise<{ code: number; out: string; dir: string }> => {
    const dir = join(work, `pull-${label}`);
    const r = await skopeoCopyAll(`docker://${sluice.hostPort}/docker.io/library/busybox:1.36`, dir, { timeoutMs: 60_000 });
    return { code: r.code, out: r.stderr + r.stdout, dir };
  };

  test('log in, see the refused image, allow it, and the next pull succeeds', async () => {
    const refused = await pull('refused');
    expect(refused.code).not.toBe(0);
    expect(refused.out).toMatch(/denied|DENIED|403/);
    await sluice.app.denied.flush();

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await page.goto(`${adminUrl}/ui`);
    await page.fill('input[name=token]', 'not-the-token');
    await page.click('button[type=submit]');
    expect(await page.textContent('.error')).toContain('Wrong admin token');

    const token = (await readFile(sluice.app.config.admin.tokenFile, 'utf8')).trim();
    await page.fill('input[name=token]', token);
    await page.fill('input[name=user]', 'alice');
    await page.click('button[type=submit]');
    await page.waitForSelector('#readiness');
    const [cookie] = await context.cookies();
    expect(cookie).toMatchObject({ name: 'sluice_session', httpOnly: true, sameSite: 'Strict', path: '/ui' });
    expect(cookie?.value).not.toContain(token);

    // Readiness per rule: green, amber, red; the window and the last sync are there.
    expect(await page.getAttribute(`tr[data-rule="${PAUSE}"]`, 'class')).toBe('green');
    expect(await page.getAttribute(`tr[data-rule="${KUBELET}"]`, 'class')).toBe('amber');
    expect(await page.getAttribute(`tr[data-rule="${ETCD}"]`, 'class')).toBe('red');
    expect(await page.textContent('header .badge')).toBe('window open');
    expect(await page.textContent('#syncs')).toContain(ETCD);

    const row = page.locator('#denied tr', { hasText: BUSYBOX });
    await expect.poll(() => row.count()).toBe(1);
    await row.locator('a', { hasText: 'Allow this' }).click();
    expect(await page.textContent('#rule')).toBe(BUSYBOX);
    expect(sluice.app.allowlist.list().map((r) => r.rule)).not.toContain(BUSYBOX); // nothing written before the click
    await page.click('#allow');
    expect(await page.textContent('.flash')).toContain(`Allowed ${BUSYBOX}`);
    expect(await row.locator('.badge').textContent()).toBe('allowed now');
    const added = sluice.app.allowlist.list().find((r) => r.rule === BUSYBOX);
    expect(added).toMatchObject({ addedBy: 'alice', note: 'allowed from the status page' });

    await mkdir(join(REPO_ROOT, 'test-results'), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    await context.close();

    const allowed = await pull('allowed');
    expect(allowed.code, allowed.out).toBe(0);
    expect(await verifyDirDigests(allowed.dir)).toBe(layout.images.find((i) => i.ref === BUSYBOX)?.digest);
  }, 120_000);

  test('writes need the session, its CSRF token and this origin; the JSON API still needs the bearer token', async () => {
    const token = (await readFile(sluice.app.config.admin.tokenFile, 'utf8')).trim();
    const login = await fetch(`${adminUrl}/ui/login`, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ token, user: 'bob' }) });
    expect(login.status).toBe(303);
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
    const post = (body: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(`${adminUrl}/ui/allow`, { method: 'POST', redirect: 'manual', headers: { cookie, ...headers }, body: new URLSearchParams(body) });
    const before = sluice.app.allowlist.list().length;
    expect((await post({ rule: 'docker.io/library/evil:1' })).status).toBe(403);
    expect((await post({ rule: 'docker.io/library/evil:1', csrf: 'guess' })).status).toBe(403);
    const html = await (await fetch(`${adminUrl}/ui`, { headers: { cookie } })).text();
    const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? '';
    expect(csrf).not.toBe('');
    expect((await post({ rule: 'docker.io/library/evil:1', csrf }, { origin: 'http://evil.example' })).status).toBe(403);
    expect(sluice.app.allowlist.list().length).toBe(before);
    expect((await fetch(`${adminUrl}/api/v1/status`, { headers: { cookie } })).status).toBe(401);
    const ok2 = await post({ rule: 'docker.io/library/fine:1', csrf }, { origin: new URL(adminUrl).origin });
    expect(ok2.status).toBe(303);
    expect(sluice.app.allowlist.list().find((r) => r.rule === 'docker.io/library/fine:1')?.addedBy).toBe('bob');
  }, 60_000);
});
