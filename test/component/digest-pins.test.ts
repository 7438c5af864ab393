// Digest-pinned pulls on a cold store against the in-process fake upstream: in a window a digest
// of a tag-ruled repository is decided from the rules' tags as the upstream has them now (exact tags, glob tags
// through tags/list), coalesced and cached; outside a window a store that cannot tell is the closed-window miss;
// a digest no allowed tag reaches stays 403; a pinned tag the upstream moved is reported by sync and status.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { statusReport } from '../../src/jobs/status.js';
import { sha256 } from '../kit/oci.js';
import { MiniUpstream, miniImage, type MiniImage } from '../helpers/mini-upstream.js';
import { sluiceConfigDoc } from '../helpers/sluice.js';

const REPO = 'siderolabs/installer';

interface Platform {
  manifest: Buffer;
  digest: string;
  config: Buffer;
  layer: Buffer;
}

interface Img {
  index: Buffer;
  digest: string;
  platforms: Platform[];
  entries: Array<{ image: MiniImage; platform: Record<string, string> }>;
}

const up = new MiniUpstream();

/** A two-platform index tagged `tag` in REPO upstream. */
function release(tag: string): Img {
  const entries = ['amd64', 'arm64'].map((architecture) => ({ image: miniImage(REPO, `${tag}-${architecture}`, [randomBytes(4096)]), platform: { os: 'linux', architecture } }));
  const { digest, body } = up.addIndex(REPO, tag, entries);
  const platforms = entries.map(({ image }) => ({ manifest: image.manifest, digest: image.digest, config: image.config.body, layer: image.layers[0]?.body ?? Buffer.alloc(0) }));
  return { index: body, digest, platforms, entries };
}

const v183 = release('v1.8.3');
const v182 = release('v1.8.2');
const v190 = release('v1.9.0');
const dirs: string[] = [];
const apps: App[] = [];

async function boot(opts: { storage?: string; windows: 'always' | 'never'; allowlist: string[] }): Promise<{ app: App; base: string; storage: string }> {
  const storage = opts.storage ?? join(await mkdtemp(join(tmpdir(), 'sluice-pins-')), 'data');
  dirs.push(join(storage, '..'));
  const doc = sluiceConfigDoc(storage, { windows: opts.windows, allowlist: opts.allowlist, upstreams: { 'ghcr.io': { url: up.url } } });
  const app = await buildApp(validateConfig(doc, join(storage, '..', 'sluice.yaml')));
  apps.push(app);
  const address = (await app.registry.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  return { app, base: `${address}/v2/${REPO}`, storage };
}

async function close(app: App): Promise<void> {
  apps.splice(apps.indexOf(app), 1);
  await app.close();
}

interface Answer {
  status: number;
  body: Buffer;
  code?: string;
  message?: string;
}

async function get(url: string): Promise<Answer> {
  const r = await fetch(`${url}?ns=ghcr.io`);
  const body = Buffer.from(await r.arrayBuffer());
  if (r.status < 400) return { status: r.status, body };
  const e = (JSON.parse(body.toString()) as { errors: Array<{ code: string; message: string }> }).errors[0];
  return { status: r.status, body, code: e?.code, message: e?.message };
}

beforeAll(async () => {
  await up.start();
});

afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

afterAll(async () => {
  await up.stop();
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describe('a digest-only pull of a tag-ruled image on a cold store', () => {
  it('in a window: index, platform manifest, config and layer by digest are served; the hot path asks nothing upstream', async () => {
    const { base } = await boot({ windows: 'always', allowlist: [`ghcr.io/${REPO}:v1.8.3`] });
    const from = up.seen.length;
    const index = await get(`${base}/manifests/${v183.digest}`);
    expect(index.status).toBe(200);
    expect(index.body.equals(v183.index)).toBe(true);
    // One resolution of the rule's tag; the index by digest is then the one it fetched.
    expect(up.since(from)).toEqual([`GET /v2/${REPO}/manifests/v1.8.3`]);
    const p = v183.platforms[0]!;
    expect((await get(`${base}/manifests/${p.digest}`)).body.equals(p.manifest)).toBe(true);
    expect((await get(`${base}/blobs/${sha256(p.config)}`)).body.equals(p.config)).toBe(true);
    expect((await get(`${base}/blobs/${sha256(p.layer)}`)).body.equals(p.layer)).toBe(true);
    const warm = up.seen.length;
    for (const d of [v183.digest, p.digest]) expect((await get(`${base}/manifests/${d}`)).status).toBe(200);
    for (const b of [p.config, p.layer]) expect((await get(`${base}/blobs/${sha256(b)}`)).status).toBe(200);
    expect(up.since(warm)).toEqual([]);
  });

  it('a layer asked for first (no manifest yet) is placed by fetching the platform manifests, nothing more', async () => {
    const { base } = await boot({ windows: 'always', allowlist: [`ghcr.io/${REPO}:v1.8.3`] });
    const layer = v183.platforms[1]!.layer;
    const from = up.seen.length;
    const got = await get(`${base}/blobs/${sha256(layer)}`);
    expect(got.status).toBe(200);
    expect(got.body.equals(layer)).toBe(true);
    const asked = up.since(from);
    expect(asked.filter((l) => l.includes('/manifests/'))).toHaveLength(3); // the tag and both platforms
    expect(asked.filter((l) => l.startsWith('GET') && l.includes('/blobs/'))).toEqual([`GET /v2/${REPO}/blobs/${sha256(layer)}`]);
  });

  it('a digest no allowed tag reaches is still 403 DENIED and logged, and none of its bytes go out', async () => {
    const { app, base } = await boot({ windows: 'always', allowlist: [`ghcr.io/${REPO}:v1.8.3`] });
    const other = v182.platforms[0]!;
    for (const url of [`${base}/manifests/${v182.digest}`, `${base}/manifests/${other.digest}`, `${base}/blobs/${sha256(other.layer)}`]) {
      const a = await get(url);
      expect(a.status, url).toBe(403);
      expect(a.code).toBe('DENIED');
      expect(a.body.includes(other.layer.subarray(0, 32))).toBe(false);
    }
    expect(up.seen.some((l) => l.includes(v182.digest) || l.includes(sha256(other.layer)))).toBe(false);
    const denied = app.denied.list().map((e) => e.reference);
    expect(denied).toEqual(expect.arrayContaining([v182.digest, other.digest, sha256(other.layer)]));
    // Decided once per tagTtl: asking again costs the upstream nothing.
    const from = up.seen.length;
    expect((await get(`${base}/manifests/${v182.digest}`)).status).toBe(403);
    expect(up.since(from)).toEqual([]);
  });

  it('twenty nodes asking at once cost one upstream resolution of the tag', async () => {
    const { base } = await boot({ windows: 'always', allowlist: [`ghcr.io/${REPO}:v1.8.3`] });
    const from = up.seen.length;
    const answers = await Promise.all(Array.from({ length: 20 }, () => get(`${base}/manifests/${v183.digest}`)));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    expect(up.since(from).filter((l) => l.endsWith('/manifests/v1.8.3'))).toHaveLength(1);
  });

  it('glob-tag rules resolve through the upstream tags/list: a matching tag allows its digest, another does not', async () => {
    const { base } = await boot({ windows: 'always', allowlist: [`ghcr.io/${REPO}:v1.8.*`] });
    const from = up.seen.length;
    expect((await get(`${base}/manifests/${v182.digest}`)).status).toBe(200);
    expect(up.since(from)).toContain(`GET /v2/${REPO}/tags/list`);
    expect((await get(`${base}/manifests/${v190.digest}`)).status).toBe(403);
    // The listing is cached for tagTtl.
    expect(up.since(from).filter((l) => l.endsWith('/tags/list'))).toHaveLength(1);
  });

  it('outside a window: the fast closed-window 404 on a cold store, 403 once the store knows every rule tag', async () => {
    const cold = await boot({ windows: 'never', allowlist: [`ghcr.io/${REPO}:v1.8.3`] });
    const from = up.seen.length;
    const m = await get(`${cold.base}/manifests/${v183.digest}`);
    expect([m.status, m.code]).toEqual([404, 'MANIFEST_UNKNOWN']);
    expect(m.message).toMatch(/not cached; upstream access closed/);
    const b = await get(`${cold.base}/blobs/${sha256(v183.platforms[0]!.layer)}`);
    expect([b.status, b.code]).toEqual([404, 'BLOB_UNKNOWN']);
    expect(up.since(from)).toEqual([]);
    await close(cold.app);
    // Warm the store in a window, then close it: a digest of v1.8.3 serves, one of v1.8.2 is refused.
    const open = await boot({ storage: cold.storage, windows: 'always', allowlist: [`ghcr.io/${REPO}:v1.8.3`] });
    expect((await get(`${open.base}/manifests/v1.8.3`)).status).toBe(200);
    await close(open.app);
    const warm = await boot({ storage: cold.storage, windows: 'never', allowlist: [`ghcr.io/${REPO}:v1.8.3`] });
    expect((await get(`${warm.base}/manifests/${v183.digest}`)).status).toBe(200);
    expect((await get(`${warm.base}/manifests/${v182.digest}`)).status).toBe(403);
    expect(up.since(from).filter((l) => !l.endsWith('/manifests/v1.8.3'))).toEqual([]);
  });
});

describe('a pinned tag the upstream has moved', () => {
  it('is reported by sync (report and event) and status, and the pin still serves', async () => {
    const rule = `ghcr.io/${REPO}:v1.8.2@${v182.digest}`;
    const { app, base } = await boot({ windows: 'always', allowlist: [rule, `ghcr.io/${REPO}:v1.8.3`] });
    up.addIndex(REPO, 'v1.8.2', v190.entries); // the upstream re-tags v1.8.2
    try {
      const events: unknown[] = [];
      const report = await app.syncer.run({ onEvent: (e) => events.push(e) });
      expect(report.failed).toEqual([]);
      const moved = { rule, tag: 'v1.8.2', pinned: v182.digest, upstream: v190.digest };
      expect(report.moved).toEqual([moved]);
      expect(events).toContainEqual({ type: 'moved', ...moved });
      const status = await statusReport({ config: app.config, window: app.window, store: app.store, allowlist: app.allowlist, denied: app.denied, syncer: app.syncer });
      expect(status.movedPins).toEqual([moved]);
      const pinned = await get(`${base}/manifests/${v182.digest}`);
      expect(pinned.status).toBe(200);
      expect(pinned.body.equals(v182.index)).toBe(true);
      // The tag itself is not what the pin allows; the image it now names is not allowed through it.
      expect((await get(`${base}/manifests/${v190.digest}`)).status).toBe(403);
    } finally {
      up.addIndex(REPO, 'v1.8.2', v182.entries);
    }
  });
});
