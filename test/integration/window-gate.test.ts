// `window close` while a sync runs stops every upstream request at once. A real docker-registry
// behind a counting proxy; the proxy itself closes the window (through the admin API) when a chosen request
// arrives and holds that request's answer until the close took effect, so "after the close" is exact.
import { once } from 'node:events';
import { readFile, rm } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { tempDir } from '../helpers/clients.js';
import { buildLayout, type LayoutDescription } from '../helpers/images.js';
import { pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

const ok = requireBinaries(['docker-registry', 'skopeo'], 'test/integration/window-gate.test.ts');

/** Decides, per request, whether the window closes now: 'request' before forwarding, 'answer' once headers are back. */
type Trigger = (req: IncomingMessage) => 'request' | 'answer' | undefined;

interface GateProxy {
  url: string;
  requests: string[];
  /** requests.length when the window was closed (the trigger included); undefined while it has not been. */
  closedAt: number | undefined;
  arm(trigger: Trigger, close: () => Promise<void>): void;
  stop(): Promise<void>;
}

async function gateProxy(targetPort: number): Promise<GateProxy> {
  let trigger: Trigger = () => undefined;
  let close: () => Promise<void> = async () => undefined;
  const self: GateProxy = {
    url: '',
    requests: [],
    closedAt: undefined,
    arm: (t, c) => {
      trigger = t;
      close = c;
      self.closedAt = undefined;
      self.requests.length = 0;
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  const closeNow = async (): Promise<void> => {
    trigger = () => undefined;
    // Counted from the moment the close starts: stricter than from when it took effect.
    self.closedAt = self.requests.length;
    await close();
  };
  const server: Server = createServer((req, res) => {
    self.requests.push(`${req.method ?? ''} ${req.url ?? ''}`);
    const when = self.closedAt === undefined ? trigger(req) : undefined;
    const forward = (): void => {
      const up = request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        const pass = (): void => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        };
        if (when === 'answer') closeNow().then(pass, () => res.destroy());
        else pass();
        answer.on('error', () => res.destroy());
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    };
    if (when === 'request') closeNow().then(forward, () => res.destroy());
    else forward();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  self.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return self;
}

describe.skipIf(!ok)('window close during a sync, real docker-registry upstream', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  let proxy: GateProxy;
  let sluice: InProcessSluice | undefined;

  beforeAll(async () => {
    work = await tempDir('gate');
    layout = await buildLayout(join(work, 'layout'));
    registry = await startRegistry();
    await pushLayout(layout.dir, layout, registry.hostPort);
    proxy = await gateProxy(registry.port);
  }, 180_000);

  afterEach(async () => {
    await sluice?.close();
    sluice = undefined;
  });

  afterAll(async () => {
    await proxy?.stop();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** sluice with every host on the proxy, a manual window opened and closed through the admin API. */
  async function start(allowlist: string[]): Promise<{ s: InProcessSluice; closeWindow: () => Promise<void> }> {
    const up = { url: proxy.url };
    const s = await startSluice({ allowlist, upstreams: { 'docker.io': up, 'ghcr.io': up, 'registry.k8s.io': up } });
    sluice = s;
    const token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
    const admin = (method: 'POST' | 'DELETE', payload?: unknown) =>
      s.app.admin.inject({ method, url: '/api/v1/window', headers: { authorization: `Bearer ${token}` }, payload: payload as object });
    expect((await admin('POST', { duration: '1h', note: 'window gate test' })).statusCode).toBe(200);
    return { s, closeWindow: async () => void expect((await admin('DELETE')).statusCode).toBe(200) };
  }

  test('closed at the first signature lookup: no referrers or anything else goes upstream, the sync fails as closed', async () => {
    const { s, closeWindow } = await start(['registry.k8s.io/pause:3.10', 'docker.io/library/busybox:1.36']);
    proxy.arm((req) => (/\/manifests\/sha256-[0-9a-f]{64}\.sig$/.test(req.url ?? '') ? 'request' : undefined), closeWindow);
    const report = await s.app.syncer.run();
    expect(proxy.closedAt).toBeDefined();
    expect(proxy.requests.slice(proxy.closedAt)).toEqual([]);
    expect(report.fetched).toEqual([]);
    expect(report.failed.map((f) => f.reference).sort()).toEqual(['docker.io/library/busybox:1.36', 'registry.k8s.io/pause:3.10']);
    for (const f of report.failed) expect(f.reason).toMatch(/upstream access closed during the sync/);
  }, 60_000);

  test('closed while the first blob download starts: that download finishes and verifies, no other request leaves', async () => {
    const { s, closeWindow } = await start(['ghcr.io/siderolabs/kubelet:v1.34.0']);
    let blob: string | undefined;
    proxy.arm((req) => {
      const m = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '');
      if (!m) return undefined;
      blob = m[1];
      return 'answer';
    }, closeWindow);
    const report = await s.app.syncer.run();
    expect(proxy.closedAt).toBeDefined();
    expect(proxy.requests.slice(proxy.closedAt)).toEqual([]);
    expect(report.failed.map((f) => f.reason)).toEqual([expect.stringMatching(/upstream access closed during the sync/)]);
    // The abandoned download goes on in the background: joining its flight sends nothing and gets verified bytes.
    const digest = blob ?? '';
    const sizeBytes = await s.app.mirror.ensureBlob('ghcr.io', 'siderolabs/kubelet', digest);
    expect((await s.app.store.stat(digest))?.sizeBytes).toBe(sizeBytes);
    expect(proxy.requests.slice(proxy.closedAt)).toEqual([]);
    expect(proxy.requests.at(-1)).toBe(`GET /v2/siderolabs/kubelet/blobs/${digest}`);
  }, 60_000);
});
