// /metrics during a pull-through against an in-process upstream: the counters move as the requests say (hit,
// miss-fetched, denied, window-closed, not-found, joins, ingest failures, upstream traffic, bytes), the gauges
// follow the window and the store, the token guards it on the admin listener, and promtool accepts the text.
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { MiniUpstream, type MiniImage } from '../helpers/mini-upstream.js';
import { which } from '../helpers/binaries.js';
import { MediaType, seededBytes } from '../kit/oci.js';
import { sample } from '../helpers/metrics-text.js';

describe('metrics', () => {
  let up: MiniUpstream;
  let s: InProcessSluice;
  let image: MiniImage;
  let bad: MiniImage;
  let token: string;
  const big = seededBytes(300 * 1024, 'metrics-layer');

  beforeAll(async () => {
    up = await new MiniUpstream().start();
    image = up.addImage('team/app', '1.0', [big, seededBytes(1000, 'small')]);
    bad = up.addImage('team/app', 'bad', [seededBytes(200 * 1024, 'corrupt-me')]);
    up.corrupt.add(bad.layers[0]?.digest ?? '');
    s = await startSluice({ windows: 'always', upstreams: { 'ghcr.io': { url: up.url } }, allowlist: ['ghcr.io/team/app:1.0', 'ghcr.io/team/app:bad', 'ghcr.io/team/app:missing'] });
    token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
  });
  afterAll(async () => {
    await s?.close();
    await up?.stop();
  });

  const get = (path: string, headers: Record<string, string> = {}): Promise<Response> => fetch(`${s.url}${path}`, { headers: { accept: MediaType.ociManifest, ...headers } });
  const scrape = async (): Promise<string> => {
    const res = await s.app.admin.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    return res.body;
  };
  const req = (kind: string, outcome: string): string => `sluice_http_requests_total{kind="${kind}",outcome="${outcome}"}`;

  it('needs the admin token on the admin listener', async () => {
    const res = await s.app.admin.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(401);
  });

  it('shows readiness from the readiness report: nothing stored yet, every exact rule missing', async () => {
    const text = await scrape();
    expect(sample(text, 'sluice_readiness_rules{state="missing"}')).toBe(3);
    expect(sample(text, 'sluice_readiness_rules{state="complete"}')).toBe(0);
  });

  it('counts a cold pull as miss-fetched, a warm one as hit, and the bytes of both', async () => {
    const before = await scrape();
    const layer = image.layers[0]?.digest ?? '';
    expect((await get('/v2/ghcr.io/team/app/manifests/1.0')).status).toBe(200);
    const cold = await get(`/v2/ghcr.io/team/app/blobs/${layer}`);
    expect(Buffer.from(await cold.arrayBuffer()).equals(big)).toBe(true);
    const warm = await get(`/v2/ghcr.io/team/app/blobs/${layer}`);
    expect(Buffer.from(await warm.arrayBuffer()).equals(big)).toBe(true);
    expect((await get('/v2/ghcr.io/team/app/manifests/1.0')).status).toBe(200);
    const after = await scrape();
    const delta = (series: string): number => sample(after, series) - sample(before, series);
    expect(delta(req('manifest', 'miss-fetched'))).toBe(1);
    expect(delta(req('manifest', 'hit'))).toBe(1);
    expect(delta(req('blob', 'miss-fetched'))).toBe(1);
    expect(delta(req('blob', 'hit'))).toBe(1);
    expect(delta('sluice_http_response_bytes_total{kind="blob"}')).toBe(2 * big.length);
    expect(delta('sluice_http_response_bytes_total{kind="manifest"}')).toBe(2 * image.manifest.length);
    expect(delta('registry_proxy_hits_total{type="blob"}')).toBe(1);
    expect(delta('registry_proxy_misses_total{type="blob"}')).toBe(1);
    expect(delta('sluice_ingested_bytes_total')).toBe(big.length);
    expect(delta('sluice_upstream_requests_total{upstream="ghcr.io"}')).toBe(2);
    expect(delta('sluice_upstream_received_bytes_total{upstream="ghcr.io"}')).toBe(big.length + image.manifest.length);
    expect(sample(after, 'sluice_ingests_in_flight')).toBe(0);
    const usage = await s.app.store.usage();
    expect(sample(after, 'sluice_store_bytes')).toBe(usage.bytes);
    expect(sample(after, 'sluice_store_blobs')).toBe(usage.blobs);
    expect(sample(after, 'sluice_window_open')).toBe(1);
  });

  it('counts joins of one download, denied, not-found and a digest mismatch by their labels', async () => {
    const before = await scrape();
    const small = image.layers[1]?.digest ?? '';
    let release!: () => void;
    up.holds.set(small, new Promise<void>((r) => (release = r)));
    const pulls = [1, 2, 3].map(() => get(`/v2/ghcr.io/team/app/blobs/${small}`).then(async (r) => Buffer.from(await r.arrayBuffer())));
    // The first holds the upstream body; the two others join it (observed through the metrics themselves).
    const joins = (t: string): number => sample(t, 'sluice_singleflight_joins_total{kind="blob"}') - sample(before, 'sluice_singleflight_joins_total{kind="blob"}');
    for (let t = await scrape(); joins(t) < 2 || sample(t, 'sluice_ingests_in_flight') < 1; t = await scrape()) await new Promise((r) => setImmediate(r));
    expect(sample(await scrape(), 'sluice_ingests_in_flight')).toBe(1);
    release();
    for (const body of await Promise.all(pulls)) expect(body.equals(image.layers[1]?.body ?? Buffer.alloc(0))).toBe(true);
    expect(up.count(`/v2/team/app/blobs/${small}`)).toBe(1);

    expect((await get('/v2/ghcr.io/team/other/manifests/1')).status).toBe(403);
    expect((await get('/v2/ghcr.io/team/app/manifests/nope')).status).toBe(403);
    expect((await get('/v2/ghcr.io/team/app/manifests/missing')).status).toBe(404);
    expect((await get('/v2/ghcr.io/team/app/manifests/bad')).status).toBe(200);
    const cut = await get(`/v2/ghcr.io/team/app/blobs/${bad.layers[0]?.digest ?? ''}`).then((r) => r.arrayBuffer()).then(() => 'complete', () => 'cut');
    expect(cut).toBe('cut');
    const after = await scrape();
    const delta = (series: string): number => sample(after, series) - sample(before, series);
    expect(delta('sluice_singleflight_joins_total{kind="blob"}')).toBe(2);
    expect(delta(req('blob', 'miss-fetched'))).toBe(4);
    expect(delta(req('manifest', 'denied'))).toBe(2);
    expect(delta(req('manifest', 'not-found'))).toBe(1);
    expect(delta('sluice_upstream_errors_total{upstream="ghcr.io",code="MANIFEST_UNKNOWN"}')).toBe(1);
    expect(delta('sluice_ingest_failures_total{reason="digest_mismatch"}')).toBe(1);
    expect(sample(after, 'sluice_denied_references')).toBe(s.app.denied.list().length);
    expect(sample(after, 'sluice_ingests_in_flight')).toBe(0);
  });

  it('is accepted by promtool check metrics', () => {
    const promtool = which('promtool');
    if (!promtool) {
      if (process.env.CI === 'true') throw new Error('promtool is missing (CI=true, so not skipping): apt-get install -y prometheus');
      console.warn(`\n${'!'.repeat(78)}\n!!! SKIPPING promtool check metrics: promtool not found\n!!! install with apt-get install -y prometheus\n${'!'.repeat(78)}\n`);
      return;
    }
    return scrape().then((text) => {
      const r = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
      expect(r.status).toBe(0);
    });
  });
});

describe('metrics on a window schedule and a separate listener', () => {
  let s: InProcessSluice;
  beforeAll(async () => {
    s = await startSluice({ windows: 'never', allowlist: ['ghcr.io/team/app:1.0'], extra: { metrics: { listen: '127.0.0.1:0' } } });
  });
  afterAll(async () => {
    await s?.close();
  });

  it('serves /metrics without a token there, and nothing else', async () => {
    const listener = s.app.metricsListener;
    expect(listener).toBeDefined();
    const res = await listener?.inject({ method: 'GET', url: '/metrics' });
    expect(res?.statusCode).toBe(200);
    expect((await listener?.inject({ method: 'GET', url: '/api/v1/status' }))?.statusCode).toBe(404);
    const text = res?.body ?? '';
    expect(sample(text, 'sluice_window_open')).toBe(0);
    expect(sample(text, 'sluice_window_next_open_seconds')).toBe(-1);
  });

  it('counts a miss outside a window as window-closed', async () => {
    const miss = await fetch(`${s.url}/v2/ghcr.io/team/app/manifests/1.0`, { headers: { accept: MediaType.ociManifest } });
    expect(miss.status).toBe(404);
    const text = (await s.app.metricsListener?.inject({ method: 'GET', url: '/metrics' }))?.body ?? '';
    expect(sample(text, 'sluice_http_requests_total{kind="manifest",outcome="window-closed"}')).toBe(1);
  });
});

describe('metrics and a weekly window', () => {
  let s: InProcessSluice;
  beforeAll(async () => {
    // Friday 2026-01-02 02:00 UTC; the window opens Saturday 02:00 UTC.
    const friday = new Date('2026-01-02T02:00:00Z');
    s = await startSluice({ windows: [{ days: ['sat'], start: '02:00', end: '06:00', timezone: 'UTC' }], build: { now: () => friday } });
  });
  afterAll(async () => {
    await s?.close();
  });

  it('says how long until the next window opens, on the clock the window runs on', async () => {
    const token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
    const text = (await s.app.admin.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } })).body;
    expect(sample(text, 'sluice_window_open')).toBe(0);
    expect(sample(text, 'sluice_window_next_open_seconds')).toBe(24 * 3600);
  });
});
