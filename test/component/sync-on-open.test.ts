// syncOnOpen: opening upstream access (here an operator's manual window) starts a sync of the allowlist by
// itself; the image is then complete in the store and serves after the window closes again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType, sha256 } from '../kit/oci.js';
import { MiniUpstream, miniImage } from '../helpers/mini-upstream.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

const layer = Buffer.alloc(300_000, 7);

describe('syncOnOpen', () => {
  const up = new MiniUpstream();
  let sluice: InProcessSluice;

  beforeAll(async () => {
    await up.start();
    up.push(miniImage('siderolabs/etcd', 'v3.6.4', [layer], MediaType.ociLayerTar));
    sluice = await startSluice({
      windows: 'never',
      allowlist: ['ghcr.io/siderolabs/etcd:v3.6.4'],
      upstreams: { 'ghcr.io': { url: up.url } },
      extra: { syncOnOpen: true },
    });
  });
  afterAll(async () => {
    await sluice?.close();
    await up.stop();
  });

  it('opening a window syncs the allowlist without being asked', async () => {
    expect(sluice.app.syncer.current).toBeUndefined();
    sluice.app.window.open(60_000, 'maintenance', 'test');
    const running = sluice.app.syncer.current;
    expect(running).toBeDefined();
    const report = await running;
    expect(report?.fetched).toEqual(['ghcr.io/siderolabs/etcd:v3.6.4']);
    expect(report?.failed).toEqual([]);
    expect(up.seen).toContain(`GET /v2/siderolabs/etcd/blobs/${sha256(layer)}`);

    sluice.app.window.close();
    up.reset();
    const res = await fetch(`${sluice.url}/v2/siderolabs/etcd/blobs/${sha256(layer)}?ns=ghcr.io`);
    expect(res.status).toBe(200);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(layer));
    expect(up.seen).toEqual([]);
  });
});
