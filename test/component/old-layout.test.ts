// A store as the release before the storage ports wrote it (8615824: src/store.ts, src/allowlist.ts), made here
// with plain fs calls and nothing of the new code, then opened by the new code and read back in full: what an
// operator upgrading in place keeps.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { sluiceConfigDoc } from '../helpers/sluice.js';
import { MediaType } from '../kit/oci.js';

const hexOf = (body: Buffer): string => createHash('sha256').update(body).digest('hex');

/** Writes `content` at `path` under the store root, making folders as the old store did. */
async function put(root: string, path: string, content: string | Buffer): Promise<void> {
  await mkdir(dirname(join(root, path)), { recursive: true });
  await writeFile(join(root, path), content);
}

const blobPath = (hex: string): string => `blobs/sha256/${hex.slice(0, 2)}/${hex}`;
const repo = 'repositories/ghcr.io/team/app';

const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
const layer = randomBytes(200_000);
const image = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: MediaType.ociManifest,
  config: { mediaType: MediaType.ociConfig, digest: `sha256:${hexOf(config)}`, size: config.length },
  layers: [{ mediaType: MediaType.ociLayer, digest: `sha256:${hexOf(layer)}`, size: layer.length }],
}));
const sbom = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: MediaType.ociManifest,
  artifactType: 'application/spdx+json',
  config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: `sha256:${hexOf(config)}`, size: config.length },
  layers: [],
  subject: { mediaType: MediaType.ociManifest, digest: `sha256:${hexOf(image)}`, size: image.length },
}));
const rules = [
  { rule: 'ghcr.io/team/app:v1', addedBy: 'config', addedAt: '2026-11-01T10:00:00.000Z' },
  { rule: 'docker.io/library/busybox', note: 'base images', addedBy: 'ops', addedAt: '2026-11-02T10:00:00.000Z' },
];
const deniedEntries = [
  { host: 'docker.io', name: 'library/nginx', reference: 'latest', count: 3, firstSeen: '2026-11-03T10:00:00.000Z', lastSeen: '2026-11-03T11:00:00.000Z', client: '10.1.2.3' },
];
const manual = { openedAt: '2026-01-01T00:00:00.000Z', until: '2026-01-01T02:00:00.000Z', note: 'patch day', who: 'ops' };

/** The old layout: blobs by digest, a media-type file per manifest, a folder per repository, three JSON files. */
async function writeOldStore(root: string): Promise<void> {
  for (const body of [config, layer, image, sbom]) await put(root, blobPath(hexOf(body)), body);
  for (const body of [image, sbom]) {
    const hex = hexOf(body);
    await put(root, `manifests/sha256/${hex.slice(0, 2)}/${hex}.json`, JSON.stringify({ mediaType: MediaType.ociManifest, sizeBytes: body.length }));
    await put(root, `${repo}/_manifests/${hex}`, MediaType.ociManifest);
  }
  await put(root, `${repo}/_tags/v1`, `sha256:${hexOf(image)}`);
  await put(root, `${repo}/_tags/latest`, `sha256:${hexOf(image)}`);
  for (const body of [config, layer]) await put(root, `${repo}/_blobs/${hexOf(body)}`, '');
  const referrer = { mediaType: MediaType.ociManifest, digest: `sha256:${hexOf(sbom)}`, size: sbom.length, artifactType: 'application/spdx+json' };
  await put(root, `${repo}/_referrers/${hexOf(image)}/${hexOf(sbom)}`, JSON.stringify(referrer));
  // lowdb's JSONFile wrote these with two-space indentation.
  await put(root, 'allowlist.json', JSON.stringify({ version: 1, rules }, null, 2));
  await put(root, 'denied.json', JSON.stringify({ version: 1, entries: deniedEntries }, null, 2));
  await put(root, 'window.json', JSON.stringify(manual));
}

describe('a store written by the release before the storage ports', () => {
  let dir: string;
  let storage: string;
  let app: App;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-old-layout-'));
    storage = join(dir, 'data');
    await writeOldStore(storage);
    app = await buildApp(validateConfig(sluiceConfigDoc(storage), join(dir, 'sluice.yaml')));
  });
  afterAll(async () => {
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the manifest by tag and by digest, byte for byte', async () => {
    for (const ref of ['v1', `sha256:${hexOf(image)}`]) {
      const r = await app.registry.inject({ method: 'GET', url: `/v2/ghcr.io/team/app/manifests/${ref}`, headers: { accept: MediaType.ociManifest } });
      expect(r.statusCode).toBe(200);
      expect(r.headers['content-type']).toBe(MediaType.ociManifest);
      expect(r.headers['docker-content-digest']).toBe(`sha256:${hexOf(image)}`);
      expect(r.rawPayload.equals(image)).toBe(true);
    }
  });

  it('serves the blobs byte for byte', async () => {
    for (const body of [config, layer]) {
      const r = await app.registry.inject({ method: 'GET', url: `/v2/ghcr.io/team/app/blobs/sha256:${hexOf(body)}` });
      expect(r.statusCode).toBe(200);
      expect(r.rawPayload.equals(body)).toBe(true);
    }
  });

  it('reads the tags, the links and the referrers', async () => {
    expect(await app.store.listTags('ghcr.io', 'team/app')).toEqual(['latest', 'v1']);
    expect(await app.store.getTag('ghcr.io', 'team/app', 'latest')).toBe(`sha256:${hexOf(image)}`);
    expect(await app.store.repositories()).toEqual([{ host: 'ghcr.io', name: 'team/app' }]);
    expect((await app.store.linkedManifests('ghcr.io', 'team/app')).sort()).toEqual([`sha256:${hexOf(image)}`, `sha256:${hexOf(sbom)}`].sort());
    expect(await app.store.isBlobLinked('ghcr.io', 'team/app', `sha256:${hexOf(layer)}`)).toBe(true);
    expect((await app.store.referrers('ghcr.io', 'team/app', `sha256:${hexOf(image)}`)).map((d) => d.digest)).toEqual([`sha256:${hexOf(sbom)}`]);
  });

  it('keeps the allowlist rules, the denied entries and the manual window', async () => {
    expect(app.allowlist.list()).toEqual(rules);
    expect(app.allowlist.problem).toBeUndefined();
    expect(app.denied.list()).toEqual(deniedEntries);
    expect(app.window.manual(new Date('2026-01-01T01:00:00.000Z'))).toEqual(manual);
  });

  it('leaves the state files as they were when nothing changed', async () => {
    expect(JSON.parse(await readFile(join(storage, 'allowlist.json'), 'utf8'))).toEqual({ version: 1, rules });
    expect(JSON.parse(await readFile(join(storage, 'window.json'), 'utf8'))).toEqual(manual);
  });
});
