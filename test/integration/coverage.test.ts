// The readiness report against a real docker-registry upstream. A half-synced store (one
// platform of an index left out, one layer removed behind the server's back) is red, through the admin API and
// `sluice status --coverage` (exit 1); after a full `sync` it is green (exit 0).
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { tempDir } from '../helpers/clients.js';
import { blobFile } from '../helpers/fs-store.js';
import { buildLayout, MediaType, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { pushLayout, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { runSluice, sluiceConfigYaml, startSluice, type InProcessSluice, type SluiceConfigOptions } from '../helpers/sluice.js';
import type { CoverageReport, RuleCoverage } from '../../src/jobs/coverage.js';

const ok = requireBinaries(['docker-registry', 'skopeo'], 'test/integration/coverage.test.ts');

const KUBELET = 'ghcr.io/siderolabs/kubelet:v1.34.0'; // OCI index, linux/amd64 + linux/arm64/v8
const BUSYBOX = 'docker.io/library/busybox:1.36';
const PAUSE = 'registry.k8s.io/pause:3.10';
const K8S_GLOB = 'registry.k8s.io/**';

describe.skipIf(!ok)('readiness report (sluice status --coverage), real docker-registry upstream', () => {
  let work: string;
  let layout: LayoutDescription;
  let registry: RunningRegistry;
  let sluice: InProcessSluice;
  let configFile: string;
  const image = (ref: string): TestImage => layout.images.find((i) => i.ref === ref) ?? (() => { throw new Error(ref); })();

  beforeAll(async () => {
    work = await tempDir('coverage');
    layout = await buildLayout(join(work, 'layout'));
    registry = await startRegistry();
    await pushLayout(layout.dir, layout, registry.hostPort);
    const up = { url: registry.url };
    const opts: SluiceConfigOptions = { windows: 'always', allowlist: [KUBELET, BUSYBOX, PAUSE, K8S_GLOB], upstreams: { 'docker.io': up, 'ghcr.io': up, 'registry.k8s.io': up } };
    sluice = await startSluice(opts);
    // The same config as a file, for the CLI (no admin listener answers, so it reads the store files).
    configFile = join(work, 'sluice.yaml');
    await writeFile(configFile, sluiceConfigYaml(sluice.storage, opts));
  }, 180_000);

  afterAll(async () => {
    await sluice?.close();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function apiReport(): Promise<CoverageReport> {
    const token = (await readFile(sluice.app.config.admin.tokenFile, 'utf8')).trim();
    const res = await sluice.app.admin.inject({ method: 'GET', url: '/api/v1/coverage', headers: { authorization: `Bearer ${token}` } });
    expect(res.statusCode, res.body).toBe(200);
    return res.json<CoverageReport>();
  }
  const rule = (r: CoverageReport, text: string): RuleCoverage => r.rules.find((x) => x.rule === text) ?? (() => { throw new Error(text); })();

  test('half-synced: red (platform missing, layer missing), and the CLI exits 1', async () => {
    const partial = await sluice.app.syncer.run({ platforms: ['linux/amd64'] });
    expect(partial.failed).toEqual([]);
    const busybox = image(BUSYBOX);
    const layer = busybox.blobs.find((b) => b.mediaType === MediaType.dockerLayer);
    if (!layer) throw new Error('busybox has no layer');
    await rm(blobFile(sluice.app.store, layer.digest));
    sluice.app.store.invalidate(); // as after another process changed the store

    const r = await apiReport();
    expect(r.ready).toBe(false);
    expect(r.platforms).toBe('all');
    const kubelet = rule(r, KUBELET);
    expect(kubelet.state).toBe('incomplete');
    expect(kubelet.images[0]?.digest).toBe(image(KUBELET).digest);
    expect(kubelet.images[0]?.platforms).toEqual({ expected: ['linux/amd64', 'linux/arm64/v8'], present: ['linux/amd64'], missing: ['linux/arm64/v8'], notInIndex: [] });
    const arm = image(KUBELET).platforms?.find((p) => p.arch === 'arm64');
    expect(kubelet.images[0]?.missingManifests).toEqual([arm?.digest]);
    const bb = rule(r, BUSYBOX);
    expect(bb.state).toBe('incomplete');
    expect(bb.images[0]?.missingBlobs).toEqual([layer.digest]);
    expect(rule(r, PAUSE).state).toBe('complete');
    const glob = rule(r, K8S_GLOB);
    expect(glob).toMatchObject({ kind: 'repositories', state: 'complete' });
    expect(glob.images.map((i) => `${i.name}:${i.reference}`)).toEqual(['pause:3.10']);
    expect(r.summary).toEqual({ rules: 4, complete: 2, incomplete: 2, missing: 0, empty: 0 });

    const cli = await runSluice(['status', '--coverage', '--config', configFile]);
    expect(cli.code, cli.stderr).toBe(1);
    expect(cli.stdout).toMatch(/INCOMPLETE\s+ghcr\.io\/siderolabs\/kubelet:v1\.34\.0/);
    expect(cli.stdout).toContain('missing linux/arm64/v8');
    expect(cli.stdout).toContain(`missing blobs: ${layer.digest}`);
    expect(cli.stdout).toContain('NOT READY');
  }, 120_000);

  test('after a full sync: green, and the CLI exits 0', async () => {
    const full = await sluice.app.syncer.run();
    expect(full.failed).toEqual([]);
    const r = await apiReport();
    expect(r.ready).toBe(true);
    expect(r.rules.map((x) => x.state)).toEqual(['complete', 'complete', 'complete', 'complete']);
    expect(rule(r, KUBELET).images[0]?.platforms?.missing).toEqual([]);
    const stored = rule(r, KUBELET).images[0];
    expect(stored?.storedBlobs).toBe(image(KUBELET).blobs.length);
    expect(stored?.storedBytes).toBe(image(KUBELET).blobs.reduce((n, b) => n + b.size, 0));

    const cli = await runSluice(['status', '--coverage', '--json', '--config', configFile]);
    expect(cli.code, cli.stderr).toBe(0);
    expect((JSON.parse(cli.stdout) as CoverageReport).ready).toBe(true);
  }, 120_000);
});
