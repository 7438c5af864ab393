// Talos Image Factory installers. A fake factory on loopback answers a tag with a 307 to a real
// docker-registry by digest and every blob with a 307, as factory.talos.dev does; real skopeo pulls through sluice.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries, run, runOk } from '../helpers/binaries.js';
import { startContainerd, tempDir, writeHostsToml } from '../helpers/clients.js';
import { buildLayout, sha256, type TestImage } from '../helpers/images.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { startCountingServer, startFakeFactory, type FakeFactory } from '../helpers/fake-factory.js';
import { MediaType } from '../kit/oci.js';

const ok = requireBinaries(['docker-registry', 'skopeo', 'containerd', 'ctr'], 'test/integration/image-factory.test.ts');
const SCHEMATIC = '376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba';
const NAME = `metal-installer/${SCHEMATIC}`;
const TAG = 'v1.14.0';
const REF = `factory.talos.dev/${NAME}:${TAG}`;
const RULE = `factory.talos.dev/*-installer/${SCHEMATIC}:v1.14.*`;

describe.skipIf(!ok)('Image Factory installers through sluice (fake factory → real docker-registry, real skopeo)', () => {
  let work: string;
  let registry: RunningRegistry;
  let image: TestImage;
  const open: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    work = await tempDir('factory');
    const layout = await buildLayout(join(work, 'layout'));
    image = layout.images.find((i) => i.kind === 'oci-index')!;
    registry = await startRegistry();
    await runOk('skopeo', ['copy', '--quiet', '--insecure-policy', '--all', '--preserve-digests', '--dest-tls-verify=false',
      `oci:${layout.dir}:${image.ref}`, `docker://${registry.hostPort}/factory/${NAME}:${TAG}`]);
  }, 120_000);

  afterAll(async () => {
    for (const o of open.reverse()) await o.close();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function factory(opts: { buildMs?: number; blobTarget?: string } = {}): Promise<FakeFactory> {
    const f = await startFakeFactory({ target: registry.url, names: { [NAME]: `factory/${NAME}` }, digests: { [TAG]: image.digest }, ...opts });
    open.push(f);
    return f;
  }

  async function sluiceFor(f: FakeFactory, extra: { redirectHosts?: string[]; timeouts?: Record<string, string> } = {}): Promise<InProcessSluice> {
    const s = await startSluice({
      allowlist: [RULE],
      // The registry the Factory redirects to is on loopback, which a redirect may reach only when named.
      upstreams: { 'factory.talos.dev': { url: f.url, redirectHosts: extra.redirectHosts ?? [registry.hostPort] } },
      extra: extra.timeouts ? { upstreamTimeouts: extra.timeouts } : {},
    });
    open.push(s);
    return s;
  }

  const skopeoCopy = (s: InProcessSluice, dest: string, ref = REF) =>
    run('skopeo', ['copy', '--quiet', '--insecure-policy', '--src-tls-verify=false', '--src-no-creds', '--override-arch', 'amd64', '--override-os', 'linux', `docker://${s.hostPort}/${ref}`, `dir:${dest}`]);
  const inspect = (s: InProcessSluice, ref = REF) => run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--no-creds', `docker://${s.hostPort}/${ref}`]);
  const amd64 = (): string => image.platforms!.find((p) => p.arch === 'amd64')!.digest;

  test('in a window a glob-ruled installer pulls through the redirects; outside one the tag still resolves from the store', async () => {
    const f = await factory();
    const s = await sluiceFor(f);
    s.app.window.open(3_600_000, 'factory test', 'test');
    // A node: containerd with Talos' '*' mirror (_default/hosts.toml), so ns=factory.talos.dev is sent.
    const containerd = await startContainerd();
    open.push({ close: () => containerd.stop() });
    const hosts = join(work, 'certs.d');
    await writeHostsToml(hosts, '_default', s.hostPort);
    const pulled = await containerd.pull(REF, hosts, ['--platform', 'linux/amd64']);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(await containerd.imageDigest(REF)).toBe(image.digest);
    expect(new Set(await containerd.contentDigests()).has(amd64())).toBe(true);
    const r = await skopeoCopy(s, join(work, 'pull-1'));
    expect(r.code, r.stderr).toBe(0);
    // The factory only ever redirected: the tag by digest to the registry, every blob too.
    expect(f.requests.some((l) => l.includes(`/manifests/${TAG}`))).toBe(true);
    expect(f.requests.some((l) => l.includes('/blobs/sha256:'))).toBe(true);
    expect(await s.app.store.getTag('factory.talos.dev', NAME, TAG)).toBe(image.digest);
    s.app.window.close();
    const before = f.requests.length;
    const raw = await inspect(s);
    expect(raw.code, raw.stderr).toBe(0);
    expect(sha256(raw.stdout)).toBe(image.digest);
    const again = await skopeoCopy(s, join(work, 'pull-2'));
    expect(again.code, again.stderr).toBe(0);
    expect(f.requests.length).toBe(before);
  }, 60_000);

  test('a tag the rule does not name is refused before the factory is asked', async () => {
    const f = await factory();
    const s = await sluiceFor(f);
    s.app.window.open(3_600_000, 'factory test', 'test');
    const r = await inspect(s, `factory.talos.dev/${NAME}:v1.13.0`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not on the allowlist/);
    expect(f.requests).toEqual([]);
  });

  test('build latency: a node gets a clear error at once, a later retry succeeds; a sync waits for the build', async () => {
    const f = await factory({ buildMs: 2_000 });
    const s = await sluiceFor(f, { timeouts: { idle: '1s', sync: '30s' } });
    s.app.window.open(3_600_000, 'factory test', 'test');
    // The node's first request (containerd asks for the tag once, like this) gets a clear 502 at the idle timeout.
    const said = await fetch(`${s.url}/v2/factory.talos.dev/${NAME}/manifests/${TAG}`, { headers: { accept: MediaType.ociIndex } });
    expect(said.status).toBe(502);
    const body = (await said.json()) as { errors: Array<{ code: string; message: string }> };
    expect(body.errors[0]?.code).toBe('UPSTREAM_FAILED');
    expect(body.errors[0]?.message).toMatch(/sent no response headers in time \(a registry that builds images on demand, such as the Talos Image Factory/);
    await f.built(TAG);
    const retry = await inspect(s);
    expect(retry.code, retry.stderr).toBe(0);
    expect(sha256(retry.stdout)).toBe(image.digest);

    // A sync against a factory that has not built yet waits (upstreamTimeouts.sync), where a node would not.
    const g = await factory({ buildMs: 2_000 });
    const t = await sluiceFor(g, { timeouts: { idle: '1s', sync: '30s' } });
    await t.app.allowlist.add([REF], { by: 'test' });
    t.app.window.open(3_600_000, 'factory test', 'test');
    const report = await t.app.syncer.run({ platforms: ['linux/amd64'] });
    expect(report.failed).toEqual([]);
    expect(report.fetched).toContain(REF);
    // It waited for the one answer rather than asking again and again.
    expect(g.requests.filter((l) => l.endsWith(`/manifests/${TAG}`))).toHaveLength(1);
    expect(await t.app.store.getManifest(amd64())).toBeDefined();
  }, 60_000);

  test('redirectHosts: the registry it names is followed; a redirect anywhere else is refused and never dialled', async () => {
    const f = await factory();
    const s = await sluiceFor(f, { redirectHosts: [registry.hostPort] });
    s.app.window.open(3_600_000, 'factory test', 'test');
    expect((await skopeoCopy(s, join(work, 'pinned'))).code).toBe(0);

    const elsewhere = await startCountingServer();
    open.push(elsewhere);
    const g = await factory({ blobTarget: elsewhere.url });
    const t = await sluiceFor(g, { redirectHosts: [registry.hostPort] });
    t.app.window.open(3_600_000, 'factory test', 'test');
    const r = await skopeoCopy(t, join(work, 'refused'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/403/);
    const platform = JSON.parse((await t.app.store.getManifest(amd64()))!.body.toString('utf8')) as { layers: Array<{ digest: string }> };
    const layer = await fetch(`${t.url}/v2/factory.talos.dev/${NAME}/blobs/${platform.layers[0]!.digest}`);
    expect(layer.status).toBe(403);
    const body = (await layer.json()) as { errors: Array<{ code: string; message: string }> };
    expect(body.errors[0]?.code).toBe('DENIED');
    expect(body.errors[0]?.message).toContain(`to ${elsewhere.host}, which is not in upstreams.factory.talos.dev.redirectHosts (${registry.hostPort}); nothing was fetched from it`);
    expect(elsewhere.requests).toEqual([]);
    expect(g.requests.some((l) => l.includes('/blobs/'))).toBe(true);
  }, 60_000);
});
