// Pull-through end to end: real docker-registry upstreams (one anonymous, one behind htpasswd basic auth),
// a real `sluice serve` process, and real skopeo and containerd pulling through it. Counting proxies in
// front of every registry (and of sluice) give exact request counts inside and outside a sync window.
import { createServer, request, type Server } from 'node:http';
import { once } from 'node:events';
import { mkdir, readdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { skopeoCopyAll, startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, splitRef, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { pushLayout, startRegistry, type Creds, type RunningRegistry } from '../helpers/registry.js';
import { sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';

const ok = requireBinaries(['docker-registry', 'skopeo', 'containerd', 'ctr'], 'test/integration/pullthrough.test.ts');

/** A reverse proxy on 127.0.0.1:0 that records every request line it forwards. */
interface CountingProxy {
  url: string;
  hostPort: string;
  requests: string[];
  /** Requests to the registry API (/v2/...), as `METHOD path`. */
  registryRequests(): string[];
  reset(): void;
  stop(): Promise<void>;
}

async function countingProxy(targetPort: number): Promise<CountingProxy> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(`${req.method ?? ''} ${req.url ?? ''}`);
    const upstream = request(
      { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        answer.on('error', () => res.destroy());
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const hostPort = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `http://${hostPort}`,
    hostPort,
    requests,
    registryRequests: () => requests.filter((r) => r.split(' ')[1]?.startsWith('/v2/')),
    reset: () => void (requests.length = 0),
    stop: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const KUBELET = 'ghcr.io/siderolabs/kubelet:v1.34.0'; // OCI index, two platforms: on the htpasswd upstream
const BUSYBOX = 'docker.io/library/busybox:1.36'; // Docker schema 2: anonymous upstream
const PAUSE = 'registry.k8s.io/pause:3.10'; // OCI manifest: anonymous upstream
const COREDNS = 'registry.k8s.io/coredns/coredns:v1.11.3'; // allowed, never pulled inside the window
const CREDS: Creds = { user: 'sluice', pass: 'pull-secret-42' };
const PASSWORD_ENV = 'SLUICE_TEST_GHCR_PASSWORD';
const CLOSED = /not cached; upstream access closed/;

describe.skipIf(!ok)('pull-through with real upstreams, skopeo and containerd', () => {
  let work: string;
  let layout: LayoutDescription;
  let anonymous: RunningRegistry;
  let private_: RunningRegistry;
  let proxyAnon: CountingProxy;
  let proxyAuth: CountingProxy;
  let proxySluice: CountingProxy | undefined;
  let sluice: SluiceProcess | undefined;
  let containerd: Containerd | undefined;
  let hostsDir: string;
  const image = (ref: string): TestImage => {
    const found = layout.images.find((i) => i.ref === ref);
    if (!found) throw new Error(`no ${ref} in the layout`);
    return found;
  };
  const upstreamRequests = (): string[] => [...proxyAnon.registryRequests(), ...proxyAuth.registryRequests()];
  const resetCounts = (): void => {
    proxyAnon.reset();
    proxyAuth.reset();
    proxySluice?.reset();
  };

  /** (Re)starts sluice on the one storage folder, with a counting proxy in front that the clients use. */
  async function startSluice(windows: 'always' | 'never'): Promise<void> {
    await proxySluice?.stop();
    await sluice?.stop();
    const yaml = sluiceConfigYaml(join(work, 'sluice', 'data'), {
      windows,
      allowlist: [KUBELET, BUSYBOX, PAUSE, COREDNS],
      upstreams: {
        'docker.io': { url: proxyAnon.url },
        'registry.k8s.io': { url: proxyAnon.url },
        'ghcr.io': { url: proxyAuth.url, auth: { username: CREDS.user, passwordEnv: PASSWORD_ENV } },
      },
    });
    sluice = await startSluiceProcess(yaml, { dir: join(work, 'sluice'), env: { ...process.env, [PASSWORD_ENV]: CREDS.pass } });
    proxySluice = await countingProxy(Number(sluice.hostPort.split(':')[1]));
    for (const host of ['docker.io', 'ghcr.io', '_default']) await writeHostsToml(hostsDir, host, proxySluice.hostPort);
  }

  /** skopeo copy --all through sluice in the prefix form (no ns), into a fresh dir; returns the dir. */
  async function skopeoPull(ref: string, label: string): Promise<{ dir: string; code: number; stderr: string }> {
    const { host, name, tag } = splitRef(ref);
    const dir = join(work, 'skopeo', `${label}-${name.replace(/\//g, '_')}`);
    const r = await skopeoCopyAll(`docker://${proxySluice?.hostPort ?? ''}/${host}/${name}:${tag}`, dir, { timeoutMs: 120_000 });
    return { dir, code: r.code, stderr: r.stderr + r.stdout };
  }

  async function expectSkopeoPulls(ref: string, label: string): Promise<void> {
    const r = await skopeoPull(ref, label);
    expect(r.code, r.stderr).toBe(0);
    expect(await verifyDirDigests(r.dir)).toBe(image(ref).digest);
    const files = (await readdir(r.dir)).filter((f) => /^[0-9a-f]{64}/.test(f)).map((f) => `sha256:${f.slice(0, 64)}`);
    expect(new Set([image(ref).digest, ...files])).toEqual(new Set(image(ref).blobs.map((b) => b.digest)));
  }

  async function expectContainerdPulls(ref: string): Promise<void> {
    if (!containerd) throw new Error('containerd not started');
    const r = await containerd.pull(ref, hostsDir);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(await containerd.imageDigest(ref)).toBe(image(ref).digest);
  }

  beforeAll(async () => {
    work = await tempDir('pullthrough');
    hostsDir = join(work, 'certs.d');
    await mkdir(join(work, 'sluice'), { recursive: true });
    layout = await buildLayout(join(work, 'layout'));
    [anonymous, private_] = await Promise.all([startRegistry(), startRegistry({ htpasswd: CREDS })]);
    const only = (refs: string[]): LayoutDescription => ({ dir: layout.dir, images: layout.images.filter((i) => refs.includes(i.ref)) });
    await Promise.all([
      pushLayout(layout.dir, only([BUSYBOX, PAUSE, COREDNS]), anonymous.hostPort),
      pushLayout(layout.dir, only([KUBELET]), private_.hostPort, CREDS),
    ]);
    [proxyAnon, proxyAuth] = await Promise.all([countingProxy(anonymous.port), countingProxy(private_.port)]);
    containerd = await startContainerd();
  });

  afterAll(async () => {
    await containerd?.stop();
    await sluice?.stop();
    await Promise.all([proxySluice?.stop(), proxyAnon?.stop(), proxyAuth?.stop()]);
    await Promise.all([anonymous?.stop(), private_?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('inside a window: containerd and skopeo pull once from the upstreams, then from the cache alone', async () => {
    await startSluice('always');
    resetCounts();

    // containerd, ns=ghcr.io → the htpasswd upstream (sluice authenticates), ns=docker.io → the anonymous one.
    await expectContainerdPulls(KUBELET);
    expect(proxyAuth.registryRequests().length).toBeGreaterThan(0);
    expect(proxyAuth.registryRequests().some((r) => r.startsWith('GET /v2/siderolabs/kubelet/blobs/'))).toBe(true);
    expect(proxyAnon.registryRequests()).toEqual([]);
    await expectContainerdPulls(BUSYBOX);
    expect(proxyAnon.registryRequests().some((r) => r.startsWith('GET /v2/library/busybox/blobs/'))).toBe(true);
    // containerd sent ns=..., and sluice echoed nothing upstream but the plain path.
    expect(proxySluice?.registryRequests().some((r) => r.includes('?ns=ghcr.io'))).toBe(true);
    expect(upstreamRequests().some((r) => r.includes('ns='))).toBe(false);

    // Second containerd pull after removing the images (and GC): all from sluice's cache.
    await containerd?.rmi(KUBELET);
    await containerd?.rmi(BUSYBOX);
    resetCounts();
    await expectContainerdPulls(KUBELET);
    await expectContainerdPulls(BUSYBOX);
    expect(proxySluice?.registryRequests().filter((r) => r.includes('/blobs/')).length).toBeGreaterThan(0);
    expect(upstreamRequests()).toEqual([]);

    // skopeo --all in the prefix form: the other kubelet platform and pause are new to sluice.
    resetCounts();
    await expectSkopeoPulls(KUBELET, 'first');
    expect(proxyAuth.registryRequests().length).toBeGreaterThan(0);
    await expectSkopeoPulls(PAUSE, 'first');
    expect(proxyAnon.registryRequests().length).toBeGreaterThan(0);

    resetCounts();
    await expectSkopeoPulls(KUBELET, 'second');
    await expectSkopeoPulls(PAUSE, 'second');
    expect(proxySluice?.registryRequests().length).toBeGreaterThan(0);
    expect(upstreamRequests()).toEqual([]);
  });

  test('outside the window: cached images still pull, an uncached one fails at once without a packet upstream', async () => {
    await startSluice('never');
    resetCounts();

    await containerd?.rmi(KUBELET);
    await containerd?.rmi(BUSYBOX);
    await expectContainerdPulls(KUBELET);
    await expectContainerdPulls(BUSYBOX);
    await expectSkopeoPulls(KUBELET, 'closed');
    await expectSkopeoPulls(PAUSE, 'closed');
    expect(upstreamRequests()).toEqual([]);

    // The allowed but never-pulled image: skopeo shows sluice's message.
    const started = performance.now();
    const s = await skopeoPull(COREDNS, 'closed');
    expect(s.code).not.toBe(0);
    expect(s.stderr).toMatch(CLOSED);
    // containerd (ns via _default) gets the 404, tries its dead fallback, and gives up.
    const c = await containerd?.pull(COREDNS, hostsDir);
    expect(c?.code).not.toBe(0);
    expect(performance.now() - started).toBeLessThan(30_000);

    // The exact answer, as a client sees it.
    const res = await fetch(`${proxySluice?.url ?? ''}/v2/coredns/coredns/manifests/v1.11.3?ns=registry.k8s.io`);
    expect(res.status).toBe(404);
    const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
    expect(body.errors[0]?.code).toBe('MANIFEST_UNKNOWN');
    expect(body.errors[0]?.message).toBe('manifest not cached; upstream access closed (no sync window is scheduled)');
    expect(proxySluice?.registryRequests().some((r) => r.includes('coredns') && r.includes('ns=registry.k8s.io'))).toBe(true);
    expect(upstreamRequests()).toEqual([]);
    expect(proxyAnon.requests).toEqual([]);
    expect(proxyAuth.requests).toEqual([]);
  });
});
