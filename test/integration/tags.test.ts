// tags/list through a real `sluice serve` from a real docker-registry upstream (distribution 2.8, which ignores
// `n`/`last` and lists unsorted): the mirror pages over the allowed tags itself, and `skopeo list-tags` sees only those.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireBinaries, runOk } from '../helpers/binaries.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';
import { tempDir } from '../helpers/clients.js';
import { MediaType, sha256 } from '../kit/oci.js';

const ok = requireBinaries(['docker-registry', 'skopeo'], 'test/integration/tags.test.ts');

const HIDDEN = ['internal-secret-build', 'zz-hidden', 'a-private', 'w1-internal'];
const ALLOWED = ['v1', 'v1.1', 'v1.2', 'v1.3', 'v1.4'];

/** One empty OCI image pushed over the registry API, tagged with every name in `tags`. */
async function pushTags(upstream: string, name: string, tags: string[]): Promise<void> {
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const started = await fetch(`${upstream}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  const location = new URL(started.headers.get('location') ?? '', upstream);
  location.searchParams.set('digest', sha256(config));
  expect((await fetch(location, { method: 'PUT', body: config, headers: { 'content-type': 'application/octet-stream' } })).status).toBe(201);
  const mediaType = MediaType.ociManifest;
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType,
    config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length },
    layers: [],
  });
  for (const tag of tags) {
    const res = await fetch(`${upstream}/v2/${name}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'content-type': mediaType } });
    expect(res.status).toBe(201);
  }
}

describe.skipIf(!ok)('tags/list from a real docker-registry', () => {
  let registry: RunningRegistry;
  let sluice: SluiceProcess;
  let storage: string;

  beforeAll(async () => {
    registry = await startRegistry();
    await pushTags(registry.url, 'x/app', [...HIDDEN, ...ALLOWED]);
    storage = await tempDir('tags');
    const yaml = sluiceConfigYaml(storage, {
      windows: 'always',
      allowlist: ['docker.io/x/app:v1*'],
      upstreams: { 'docker.io': { url: registry.url } },
    });
    sluice = await startSluiceProcess(yaml);
  });
  afterAll(async () => {
    await sluice?.stop();
    await registry?.stop();
    if (storage) await rm(storage, { recursive: true, force: true });
  });

  it('n=1 pages one allowed tag at a time, and no page names a hidden tag', async () => {
    const pages: string[][] = [];
    let next: string | undefined = '/v2/docker.io/x/app/tags/list?n=1';
    while (next !== undefined && pages.length < 20) {
      const res: Response = await fetch(`${sluice.url}${next}`);
      expect(res.status).toBe(200);
      const text = `${await res.text()} ${res.headers.get('link') ?? ''}`;
      for (const hidden of HIDDEN) expect(text).not.toContain(hidden);
      pages.push((JSON.parse(text.slice(0, text.lastIndexOf('}') + 1)) as { tags: string[] }).tags);
      next = /<([^>]*)>/.exec(res.headers.get('link') ?? '')?.[1];
    }
    expect(pages).toEqual(ALLOWED.map((t) => [t]));
  });

  it('skopeo list-tags through the mirror sees exactly the allowed tags', async () => {
    const r = await runOk('skopeo', ['list-tags', '--tls-verify=false', '--no-creds', `docker://${sluice.hostPort}/docker.io/x/app`]);
    expect(((JSON.parse(r.stdout) as { Tags: string[] }).Tags).sort()).toEqual(ALLOWED);
  });
});
