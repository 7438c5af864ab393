// Re-resolving a known tag costs one HEAD upstream (Docker Hub counts GETs against pull limits); the manifest
// is fetched again only when the tag has moved. Each app below starts with a cold tag cache on the same store.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { MiniUpstream, type MiniImage } from '../helpers/mini-upstream.js';
import { sluiceConfigDoc } from '../helpers/sluice.js';

describe('tag re-resolution', () => {
  const up = new MiniUpstream();
  let dir: string;
  let first: MiniImage;
  let second: MiniImage;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-tagref-'));
    await up.start();
    second = up.addImage('library/app', '2.0', []);
    first = up.addImage('library/app', '1.0', []);
  });
  afterAll(async () => {
    await up.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function resolveOnce(): Promise<string | null> {
    const config = validateConfig(sluiceConfigDoc(join(dir, 'data'), {
      windows: 'always',
      allowlist: ['docker.io/library/app:1.0'],
      upstreams: { 'docker.io': { url: up.url } },
    }), join(dir, 'sluice.yaml'));
    const app = await buildApp(config);
    try {
      const res = await app.registry.inject({ method: 'HEAD', url: '/v2/library/app/manifests/1.0?ns=docker.io' });
      expect(res.statusCode).toBe(200);
      return String(res.headers['docker-content-digest']);
    } finally {
      await app.close();
    }
  }

  const manifestRequests = (): string[] => up.seen.filter((s) => s.includes('/manifests/'));

  it('first sight: one GET; unchanged: one HEAD; moved: HEAD then GET', async () => {
    expect(await resolveOnce()).toBe(first.digest);
    expect(manifestRequests()).toEqual(['GET /v2/library/app/manifests/1.0']);

    up.reset();
    expect(await resolveOnce()).toBe(first.digest);
    expect(manifestRequests()).toEqual(['HEAD /v2/library/app/manifests/1.0']);

    up.reset();
    up.retag(second, '1.0');
    expect(await resolveOnce()).toBe(second.digest);
    expect(manifestRequests()).toEqual([
      'HEAD /v2/library/app/manifests/1.0',
      'GET /v2/library/app/manifests/1.0',
    ]);
  });
});
