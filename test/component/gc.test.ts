// Garbage collection against a synced store: removing a rule frees exactly that image's unshared blobs (shared
// layers stay), a dry run changes nothing, `keep` holds a moved tag's previous image, gcGrace spares fresh blobs,
// and pulls running during the sweep (one from disk, one still downloading) complete byte for byte.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectGarbage, type GcReport } from '../../src/jobs/gc.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { MiniUpstream, type MiniImage } from '../helpers/mini-upstream.js';
import { KiB, MediaType, seededBytes } from '../kit/oci.js';
import { sample } from '../helpers/metrics-text.js';

describe('garbage collection', () => {
  let up: MiniUpstream;
  let s: InProcessSluice;
  let token: string;
  let a: MiniImage;
  let b: MiniImage;
  let c: MiniImage;
  const shared = seededBytes(256 * KiB, 'shared-layer');

  beforeAll(async () => {
    up = await new MiniUpstream().start();
    a = up.addImage('team/a', '1', [shared, seededBytes(2048 * KiB, 'a-only')]);
    b = up.addImage('team/b', '1', [shared, seededBytes(128 * KiB, 'b-only')]);
    c = up.addImage('team/c', '1', [seededBytes(512 * KiB, 'c-late')]);
    s = await startSluice({
      windows: 'always',
      upstreams: { 'ghcr.io': { url: up.url } },
      extra: { gcGrace: 0, tagTtl: 0, gc: { keep: 2 } },
    });
    // Added, not seeded by the config: a config rule cannot be removed (it would be back at the next start).
    await s.app.allowlist.add(['ghcr.io/team/a:1', 'ghcr.io/team/b:1'], { by: 'test' });
    token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
    const r = await s.app.syncer.run();
    expect(r.failed).toEqual([]);
  });
  afterAll(async () => {
    await s?.close();
    await up?.stop();
  });

  const gc = async (dryRun: boolean): Promise<GcReport> => {
    const res = await s.app.admin.inject({ method: 'POST', url: '/api/v1/gc', headers: { authorization: `Bearer ${token}` }, payload: { dryRun } });
    expect(res.statusCode).toBe(200);
    return res.json<GcReport>();
  };
  const stored = async (digests: string[]): Promise<boolean[]> => Promise.all(digests.map(async (d) => (await s.app.store.stat(d)) !== undefined));
  const pull = async (name: string, digest: string): Promise<Buffer> => {
    const res = await fetch(`${s.url}/v2/ghcr.io/${name}/blobs/${digest}`, { headers: { accept: MediaType.ociManifest } });
    expect(res.status).toBe(200);
    return Buffer.from(await res.arrayBuffer());
  };
  const unshared = (img: MiniImage): string[] => img.digests.filter((d) => d !== a.layers[0]?.digest);

  it('keeps everything while every rule is in place', async () => {
    const r = await gc(true);
    expect(r.swept).toEqual([]);
    expect(r.marked).toBeGreaterThanOrEqual(a.digests.length + b.digests.length - 1);
  });

  it('a dry run after a rule is removed lists exactly that image\'s unshared blobs, and removes nothing', async () => {
    await s.app.allowlist.remove(['ghcr.io/team/b:1']);
    const r = await gc(true);
    expect(r.dryRun).toBe(true);
    expect(r.swept.map((x) => x.digest).sort()).toEqual(unshared(b).sort());
    expect(r.sweptBytes).toBe(b.sizeBytes - shared.length);
    expect(await stored(b.digests)).toEqual(b.digests.map(() => true));
  });

  it('gc frees exactly those blobs while pulls run, which complete byte for byte', async () => {
    const usage = await s.app.store.usage();
    await s.app.allowlist.add(['ghcr.io/team/c:1'], { by: 'test' });
    const late = c.layers[0]?.digest ?? '';
    let release!: () => void;
    up.holds.set(late, new Promise<void>((r) => (release = r)));
    // c's manifest first (so the layer is reachable), then its layer: held half-way by the upstream during gc.
    expect((await fetch(`${s.url}/v2/ghcr.io/team/c/manifests/1`, { headers: { accept: MediaType.ociManifest } })).status).toBe(200);
    const downloading = pull('team/c', late);
    await up.asked(`/v2/team/c/blobs/${late}`);
    const fromDisk = [pull('team/a', a.layers[1]?.digest ?? ''), pull('team/a', a.layers[0]?.digest ?? '')];
    const r = await gc(false);
    release();
    const [lateBody, aOnly, sharedBody] = await Promise.all([downloading, ...fromDisk]);
    expect(lateBody.equals(c.layers[0]?.body ?? Buffer.alloc(0))).toBe(true);
    expect(aOnly.equals(a.layers[1]?.body ?? Buffer.alloc(0))).toBe(true);
    expect(sharedBody.equals(shared)).toBe(true);

    expect(r.swept.map((x) => x.digest).sort()).toEqual(unshared(b).sort());
    expect(r.tagsRemoved).toEqual(['ghcr.io/team/b:1']);
    expect(await stored(unshared(b))).toEqual(unshared(b).map(() => false));
    const kept = [...a.digests, ...c.digests.filter((d) => d !== c.config.digest)];
    expect(await stored(kept)).toEqual(kept.map(() => true));
    const after = await s.app.store.usage();
    const cBytes = c.sizeBytes - c.config.body.length; // its config was never asked for
    expect(after.bytes).toBe(usage.bytes - (b.sizeBytes - shared.length) + cBytes);
    const metrics = (await s.app.admin.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } })).body;
    expect(sample(metrics, 'sluice_gc_freed_bytes_total')).toBe(r.sweptBytes);
    expect(sample(metrics, 'sluice_gc_runs_total{result="ok"}')).toBe(1);
  });

  it('keep holds the digest a tag moved away from; keep 1 lets it go, shared layers still stay', async () => {
    const a2 = up.addImage('team/a', 'next', [shared, seededBytes(64 * KiB, 'a2-only')]);
    up.retag(a2, '1');
    const r = await s.app.syncer.run();
    expect(r.failed).toEqual([]);
    expect(await s.app.store.tagHistory('ghcr.io', 'team/a', '1')).toEqual([a2.digest, a.digest]);
    expect((await gc(false)).swept).toEqual([]);
    const one = await collectGarbage(s.app.store, s.app.allowlist, { keep: 1, graceMs: 0 });
    expect(one.swept.map((x) => x.digest).sort()).toEqual(unshared(a).sort());
    expect(await stored(a2.digests)).toEqual(a2.digests.map(() => true));
    expect(await stored([shared].map(() => a.layers[0]?.digest ?? ''))).toEqual([true]);
  });

  it('gcGrace spares blobs committed within it', async () => {
    await s.app.allowlist.remove(['ghcr.io/team/c:1']);
    const r = await collectGarbage(s.app.store, s.app.allowlist, { keep: 2, graceMs: 3600_000, dryRun: false });
    expect(r.swept).toEqual([]);
    // The sync of the test before fetched all of c (its config too) and its rule is gone now: all three are fresh.
    expect(r.spared).toBe(c.digests.length);
    expect(await stored(c.digests)).toEqual(c.digests.map(() => true));
    const later = await collectGarbage(s.app.store, s.app.allowlist, { keep: 2, graceMs: 3600_000, dryRun: true, now: () => Date.now() + 2 * 3600_000 });
    expect(later.swept.map((x) => x.digest).sort()).toEqual([...c.digests].sort());
  });
});
