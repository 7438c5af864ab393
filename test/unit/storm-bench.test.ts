// The boot-storm case's pure parts (the image set, percentiles, the node split, the phase summary and its
// rows) and a smoke run of the simulated nodes against an in-process registry serving the set.
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mapLimit, pickPlatform, runStorm } from '../../bench/storm-client.js';
import { NODE_PLATFORM, nodeClosure, stormImageSet, writeStormImages, type StormImage } from '../../bench/storm-content.js';
import { percentile, stormRows, summarisePhase, type StormPhase, type StormRun } from '../../bench/storm-report.js';
import { splitNodes } from '../../bench/storm.js';
import { KiB, MediaType } from '../kit/oci.js';

describe('the image set', () => {
  let dir: string;
  let images: StormImage[];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'storm-set-'));
    images = await writeStormImages(dir, stormImageSet(64 * KiB, 0.001));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('holds a dozen images: OCI indexes, Docker lists and one plain manifest', () => {
    expect(images).toHaveLength(12);
    const kinds = images.map((i) => i.top.d.mediaType);
    expect(kinds.filter((k) => k === MediaType.ociIndex).length).toBeGreaterThanOrEqual(4);
    expect(kinds.filter((k) => k === MediaType.dockerList).length).toBeGreaterThanOrEqual(4);
    expect(kinds).toContain(MediaType.ociManifest);
    const installer = images.find((i) => i.spec.name === 'siderolabs/installer');
    expect(installer?.platforms.get('amd64')?.blobs.some((b) => b.size === 64 * KiB)).toBe(true);
  });

  it('gives each platform its own blobs and shares base layers between images', () => {
    const apiserver = images.find((i) => i.spec.name === 'kube-apiserver') as StormImage;
    const scheduler = images.find((i) => i.spec.name === 'kube-scheduler') as StormImage;
    const amd = apiserver.platforms.get('amd64')?.blobs.map((b) => b.digest) ?? [];
    const arm = apiserver.platforms.get('arm64')?.blobs.map((b) => b.digest) ?? [];
    expect(amd.filter((d) => arm.includes(d))).toEqual([]);
    expect(scheduler.platforms.get('amd64')?.blobs.filter((b) => amd.includes(b.digest))).toHaveLength(2);
    const index = JSON.parse(apiserver.top.body.toString()) as { manifests: Array<{ digest: string; mediaType: string; platform: { architecture: string } }> };
    expect(index.manifests.map((m) => m.platform.architecture)).toEqual(['amd64', 'arm64']);
    expect(index.manifests[0]?.mediaType).toBe(MediaType.dockerManifest);
  });

  it("counts a node's closure once per blob, its platform only", () => {
    const c = nodeClosure(images);
    const seen = new Map<string, number>();
    let manifestBytes = 0;
    for (const i of images) {
      const m = i.platforms.get('amd64');
      manifestBytes += m?.d.size ?? 0;
      if (i.top !== m) manifestBytes += i.top.d.size;
      for (const b of m?.blobs ?? []) seen.set(b.digest, b.size);
    }
    expect(c.blobs).toBe(seen.size);
    expect(c.manifests).toBe(23);
    expect(c.bytes).toBe(manifestBytes + [...seen.values()].reduce((a, b) => a + b, 0));
  });
});

describe('helpers', () => {
  it('takes nearest-rank percentiles', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile([5, 1, 3], 99)).toBe(5);
    expect(percentile([7], 1)).toBe(7);
    expect(percentile([], 99)).toBeNaN();
  });

  it('splits nodes round-robin over client processes', () => {
    expect(splitNodes(5, 2)).toEqual([[0, 2, 4], [1, 3]]);
    expect(splitNodes(1, 4)).toEqual([[0]]);
  });

  it('picks the platform of an index', () => {
    const index = { manifests: [{ mediaType: 'm', digest: 'sha256:a', size: 1, platform: { os: 'linux', architecture: 'arm64' } }, { mediaType: 'm', digest: 'sha256:b', size: 1, platform: { os: 'linux', architecture: 'amd64' } }] };
    expect(pickPlatform(index, NODE_PLATFORM)?.digest).toBe('sha256:b');
    expect(pickPlatform({ manifests: [] }, NODE_PLATFORM)).toBeUndefined();
  });

  it('never runs more than the limit at once', async () => {
    let running = 0;
    let peak = 0;
    const done: number[] = [];
    await mapLimit([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 2));
      running--;
      done.push(n);
    });
    expect(peak).toBe(3);
    expect(done.sort()).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });
});

const phase = (over: Partial<StormPhase>): StormPhase => ({
  phase: 'cold',
  wallMs: 1000,
  p50TtlbMs: 900,
  p99TtlbMs: 1000,
  maxTtlbMs: 1000,
  nodesOk: 50,
  errors: [],
  clientRequests: 100,
  clientBytes: 5e9,
  upstreamRequests: 50,
  upstreamBlobGets: 30,
  upstreamBytes: 100,
  upstreamSlowestMs: 10,
  peakRssBytes: 100 * 2 ** 20,
  serverCpuSeconds: 1,
  clientCpuSeconds: 1,
  upstreamCpuSeconds: 1,
  backgroundCores: 0,
  ...over,
});

const run = (target: StormRun['target'], nodes: number, cold: Partial<StormPhase>, warm: Partial<StormPhase>, round = 0): StormRun => ({
  target,
  nodes,
  round,
  setBytes: 100,
  cold: phase(cold),
  warm: phase({ phase: 'warm', ...warm }),
});

describe('phase summary and rows', () => {
  it('summarises nodes from every client process and the upstream log', () => {
    const node = (n: number, start: number, end: number, errors: string[] = []) => ({ node: n, startMs: start, endMs: end, requests: 10, bodyBytes: 1000, errors });
    const p = summarisePhase(
      'cold',
      [
        { nodes: [node(0, 100, 600), node(2, 101, 1100, ['HEAD x: 500'])], cpuSeconds: 1.5, maxRssBytes: 0 },
        { nodes: [node(1, 99, 300)], cpuSeconds: 0.5, maxRssBytes: 0 },
      ],
      [
        { method: 'HEAD', path: '/v2/a/manifests/v1', status: 200, startMs: 0, bytes: 0 },
        { method: 'GET', path: '/v2/a/blobs/sha256:ab', status: 200, startMs: 10, endMs: 250, bytes: 700 },
      ],
      { peakRssBytes: 5, serverCpuSeconds: 2, upstreamCpuSeconds: 1, backgroundCores: 0.1 },
    );
    expect(p.wallMs).toBe(1001);
    expect(p.p99TtlbMs).toBe(999);
    expect(p.p50TtlbMs).toBe(500);
    expect(p.nodesOk).toBe(2);
    expect(p.errors).toEqual(['node 2: HEAD x: 500']);
    expect([p.clientRequests, p.clientBytes, p.clientCpuSeconds]).toEqual([30, 3000, 2]);
    expect([p.upstreamRequests, p.upstreamBlobGets, p.upstreamBytes, p.upstreamSlowestMs]).toEqual([2, 1, 700, 240]);
  });

  it('checks cold ≥2×, ≤1.05× the set upstream, and warm ≥1.5× at every N', () => {
    const rows = stormRows(
      [
        run('sluice', 10, { wallMs: 900 }, { wallMs: 500 }),
        run('registry', 10, { wallMs: 1000, upstreamBytes: 900 }, { wallMs: 700 }),
        run('sluice', 50, { wallMs: 400, upstreamBytes: 104 }, { wallMs: 600 }),
        run('registry', 50, { wallMs: 1000, upstreamBytes: 3000 }, { wallMs: 1000 }),
      ],
      12,
    );
    expect(rows).toHaveLength(14);
    const [cold10, ttlb10, up10, warm10] = rows;
    expect(ttlb10?.cells.sluice?.text).toBe('0.90 s / 1.00 s');
    expect(cold10?.case).toMatch(/^6 boot storm, 10 nodes × 12 images/);
    expect(cold10?.checks).toEqual([{ target: '≥2× faster than distribution (≤0.50×), every run', pass: false }, { target: 'every node pulled every image', pass: true }]);
    expect(up10?.checks.map((c) => c.pass)).toEqual([true]);
    // 500 / 700 ms is 1.4× faster: short of 1.5×.
    expect(warm10?.checks).toEqual([{ target: '≥1.5× faster than distribution (≤0.67×), every run', pass: false }]);
    const [cold50, , up50, warm50] = rows.slice(7);
    expect(cold50?.vsRegistry).toBeCloseTo(0.4);
    expect(cold50?.checks.map((c) => c.pass)).toEqual([true, true]);
    expect(up50?.checks).toEqual([{ target: "sluice ≤1.05× the set's bytes, every run", pass: true }]);
    expect(up50?.cells.sluice?.text).toMatch(/1\.04× set/);
    expect(warm50?.checks.map((c) => c.pass)).toEqual([true]);
  });

  it('a speed target holds in every run, not only on the medians', () => {
    // Warm at N = 50 over three rounds: 1.8×, 1.4×, 2.4× faster. The medians (500 vs 900 ms) pass; round 1 misses.
    const warm = [
      [500, 900],
      [700, 980],
      [400, 960],
    ] as const;
    const runs = warm.flatMap(([mine, theirs], round) => [run('sluice', 50, { wallMs: 100 }, { wallMs: mine }, round), run('registry', 50, { wallMs: 1000 }, { wallMs: theirs }, round)]);
    const rows = stormRows(runs, 12);
    const warmRow = rows[3];
    expect(warmRow?.vsRegistry).toBeCloseTo(500 / 960);
    expect(warmRow?.checks).toEqual([{ target: '≥1.5× faster than distribution (≤0.67×), every run', pass: false }]);
    expect(warmRow?.note).toMatch(/^runs: sluice 0.50 s, 0.70 s, 0.40 s; distribution 0.90 s, 0.98 s, 0.96 s/);
    expect(rows[0]?.checks[0]?.pass).toBe(true);
    const fixed = stormRows(runs.map((r) => (r.round === 1 && r.target === 'sluice' ? { ...r, warm: { ...r.warm, wallMs: 600 } } : r)), 12);
    expect(fixed[3]?.checks[0]?.pass).toBe(true);
  });

  it('marks failed pulls and a run over the byte budget as misses', () => {
    const rows = stormRows(
      [
        run('sluice', 50, { wallMs: 400, upstreamBytes: 100 }, {}),
        run('sluice', 50, { wallMs: 400, upstreamBytes: 106, errors: ['node 3: GET blob: 502'] }, {}, 1),
        run('registry', 50, { wallMs: 1000 }, {}),
      ],
      12,
    );
    expect(rows[0]?.checks.find((c) => c.target.startsWith('every node'))?.pass).toBe(false);
    expect(rows[0]?.note).toMatch(/ERRORS: sluice cold round 1: 1 failed pulls/);
    expect(rows[2]?.checks[0]?.pass).toBe(false);
  });
});

/** A registry in a few lines: the set by tag and digest, HEAD and GET, blobs with `Range: bytes=0-` as 206. */
function setServer(images: StormImage[]): Server {
  const manifests = new Map<string, { type: string; body: Buffer }>();
  const blobs = new Map<string, Buffer>();
  for (const i of images) {
    for (const m of [i.top, ...i.platforms.values()]) manifests.set(`${i.spec.name}/${m.d.digest}`, { type: m.d.mediaType, body: m.body });
    manifests.set(`${i.spec.name}/${i.spec.tag}`, { type: i.top.d.mediaType, body: i.top.body });
    for (const b of i.blobs) if (b.body) blobs.set(b.d.digest, b.body);
  }
  return createServer((req, res) => {
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^?]+)\?ns=bench\.local$/.exec(req.url ?? '');
    const found = m?.[2] === 'manifests' ? manifests.get(`${m[1]}/${m[3]}`) : m ? { type: 'application/octet-stream', body: blobs.get(m[3] ?? '') } : undefined;
    if (!found?.body) return void res.writeHead(404).end();
    const headers = { 'content-type': found.type, 'content-length': found.body.length, 'docker-content-digest': m?.[3] ?? '' };
    if (m?.[2] === 'manifests' && m[3]?.startsWith('sha256:') !== true) headers['docker-content-digest'] = images.find((i) => i.spec.name === m[1])?.top.d.digest ?? '';
    const ranged = req.headers.range === 'bytes=0-';
    res.writeHead(ranged ? 206 : 200, ranged ? { ...headers, 'content-range': `bytes 0-${found.body.length - 1}/${found.body.length}` } : headers);
    res.end(req.method === 'HEAD' ? undefined : found.body);
  });
}

describe('simulated nodes', () => {
  let dir: string;
  let images: StormImage[];
  let srv: Server;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'storm-nodes-'));
    images = await writeStormImages(dir, stormImageSet(64 * KiB, 0.002));
    srv = setServer(images).listen(0, '127.0.0.1');
    await once(srv, 'listening');
  });
  afterAll(async () => {
    srv.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("pull every image of the set as containerd does, each node its platform's closure once", async () => {
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const r = await runStorm({ url, ns: 'bench.local', nodes: [0, 1, 2], images: images.map((i) => i.spec), platform: NODE_PLATFORM, layerConcurrency: 3 });
    const c = nodeClosure(images);
    expect(r.nodes.map((n) => n.errors)).toEqual([[], [], []]);
    for (const n of r.nodes) {
      expect(n.bodyBytes).toBe(c.bytes);
      expect(n.requests).toBe(images.length + c.manifests + c.blobs);
      expect(n.endMs).toBeGreaterThan(n.startMs);
    }
  });

  it('reports a failed pull per image and goes on with the next', async () => {
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const list = [{ name: 'nope/missing', tag: 'v1' }, images[0]?.spec ?? { name: '', tag: '' }];
    const r = await runStorm({ url, ns: 'bench.local', nodes: [0], images: list, platform: NODE_PLATFORM, layerConcurrency: 3 });
    expect(r.nodes[0]?.errors).toEqual(['HEAD nope/missing:v1: 404']);
    expect(r.nodes[0]?.requests).toBeGreaterThan(3);
  });
});
