// Links follow verified content: a pull-through download that fails verification leaves no blob link behind,
// gc unlinks what it sweeps from every repository (those with blob links only too), and a repository's remembered
// entitlement to a blob is forgotten once gc removes the blob, so it is not served again without a new reason.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GcReport } from '../../src/jobs/gc.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { KiB, MediaType, seededBytes } from '../kit/oci.js';

describe('blob links and gc', () => {
  let up: MiniUpstream;
  let s: InProcessSluice;
  let token: string;

  beforeAll(async () => {
    up = await new MiniUpstream().start();
    s = await startSluice({ windows: 'never', upstreams: { 'ghcr.io': { url: up.url } }, extra: { gcGrace: 0, tagTtl: 0, gc: { keep: 1 } } });
    token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
    await s.app.allowlist.add(['ghcr.io/team/bad', 'ghcr.io/team/blobs-only', 'ghcr.io/team/other', 'ghcr.io/team/t:1', 'ghcr.io/team/t:2'], { by: 'test' });
  });
  afterAll(async () => {
    await s?.close();
    await up?.stop();
  });

  const blob = async (name: string, digest: string): Promise<{ status: number; body?: Buffer }> => {
    const res = await fetch(`${s.url}/v2/ghcr.io/${name}/blobs/${digest}`);
    try {
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
    } catch {
      return { status: res.status }; // the stream was aborted: the bytes did not match their digest
    }
  };
  const manifest = (name: string, tag: string): Promise<Response> =>
    fetch(`${s.url}/v2/ghcr.io/${name}/manifests/${tag}`, { headers: { accept: MediaType.ociManifest } });
  const gc = async (): Promise<GcReport> => {
    const res = await s.app.admin.inject({ method: 'POST', url: '/api/v1/gc', headers: { authorization: `Bearer ${token}` }, payload: {} });
    expect(res.statusCode).toBe(200);
    return res.json<GcReport>();
  };
  const withWindow = async <T>(fn: () => Promise<T>): Promise<T> => {
    s.app.window.open(3600_000, 'test', 'test');
    try {
      return await fn();
    } finally {
      s.app.window.close();
    }
  };

  it('a pull-through download that fails verification leaves no blob link', async () => {
    const img = up.addImage('team/bad', '1', [seededBytes(64 * KiB, 'corrupted-layer')]);
    const layer = img.layers[0]?.digest ?? '';
    up.corrupt.add(layer);
    const got = await withWindow(() => blob('team/bad', layer));
    expect(got.body?.length ?? 0).toBeLessThan(64 * KiB);
    expect(await s.app.store.stat(layer)).toBeUndefined();
    expect(await s.app.store.isBlobLinked('ghcr.io', 'team/bad', layer)).toBe(false);
  });

  it('gc unlinks a swept blob from a repository that holds only blob links', async () => {
    const img = up.addImage('team/blobs-only', '1', [seededBytes(32 * KiB, 'blob-only-layer')]);
    const layer = img.layers[0]?.digest ?? '';
    expect((await withWindow(() => blob('team/blobs-only', layer))).status).toBe(200);
    expect(await s.app.store.isBlobLinked('ghcr.io', 'team/blobs-only', layer)).toBe(true);
    const r = await gc();
    expect(r.swept.map((x) => x.digest)).toContain(layer);
    expect(await s.app.store.isBlobLinked('ghcr.io', 'team/blobs-only', layer)).toBe(false);
  });

  it('a blob gc removed is not served to a repository again on a remembered entitlement', async () => {
    const x = seededBytes(16 * KiB, 'layer-x');
    const first = up.addImage('team/t', '1', [x]);
    const layer = first.layers[0]?.digest ?? '';
    await withWindow(async () => {
      expect((await manifest('team/t', '1')).status).toBe(200);
      expect((await blob('team/t', layer)).status).toBe(200); // downloaded and linked to team/t
      expect((await blob('team/t', layer)).status).toBe(200); // from disk: the entitlement is remembered
      up.retag(up.addImage('team/t', 'moved', [seededBytes(8 * KiB, 'layer-y')]), '1');
      expect((await manifest('team/t', '1')).status).toBe(200); // the tag moved: with keep 1, the first image goes
    });
    expect((await gc()).swept.map((d) => d.digest)).toContain(layer);
    expect(await s.app.store.isBlobLinked('ghcr.io', 'team/t', layer)).toBe(false);
    up.addImage('team/other', '1', [x]);
    up.addImage('team/t', '2', [x, seededBytes(4 * KiB, 'layer-z')]);
    await withWindow(async () => {
      expect((await blob('team/other', layer)).status).toBe(200); // stored again, linked to team/other only
      expect((await manifest('team/t', '2')).status).toBe(200); // team/t:2 names it: allowed, but not linked
    });
    // Window closed: team/t holds no link to it and its upstream cannot confirm it, so this is a miss.
    const miss = await fetch(`${s.url}/v2/ghcr.io/team/t/blobs/${layer}`);
    expect(miss.status, await miss.text()).toBe(404);
    expect((await blob('team/other', layer)).status).toBe(200);
  });
});
