// One platform rule for sync and the readiness report: with `platforms: [linux/amd64]`, an index entry that names no
// os/arch (`platform: {}`) is not platform-specific, so sync fetches it and coverage counts the image complete.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { coverageReport } from '../../src/jobs/coverage.js';
import { MiniUpstream, type MiniImage } from '../helpers/mini-upstream.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { seededBytes } from '../kit/oci.js';

describe('platform filter shared by sync and coverage', () => {
  let up: MiniUpstream;
  let s: InProcessSluice;
  let amd: MiniImage;
  let arm: MiniImage;
  let generic: MiniImage;

  beforeAll(async () => {
    up = await new MiniUpstream().start();
    amd = up.addImage('team/multi', 'amd', [seededBytes(2048, 'amd')]);
    arm = up.addImage('team/multi', 'arm', [seededBytes(2048, 'arm')]);
    generic = up.addImage('team/multi', 'generic', [seededBytes(2048, 'generic')]);
    up.addIndex('team/multi', '1', [
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64' } },
      { image: generic, platform: {} },
    ]);
    s = await startSluice({
      windows: 'always',
      upstreams: { 'ghcr.io': { url: up.url } },
      allowlist: ['ghcr.io/team/multi:1'],
      extra: { platforms: ['linux/amd64'] },
    });
  });
  afterAll(async () => {
    await s?.close();
    await up?.stop();
  });

  test('sync fetches the wanted platform and the entry with no os/arch, not the other platform; coverage agrees', async () => {
    const report = await s.app.syncer.run();
    expect(report.failed).toEqual([]);
    expect(await s.app.store.hasManifest(amd.digest)).toBe(true);
    expect(await s.app.store.hasManifest(generic.digest)).toBe(true);
    expect(await s.app.store.hasManifest(arm.digest)).toBe(false);
    const coverage = await coverageReport(s.app.store, ['ghcr.io/team/multi:1'], { platforms: ['linux/amd64'] });
    expect(coverage.rules[0]?.state).toBe('complete');
    expect(coverage.ready).toBe(true);
  });
});
