// The registry read API over HTTP against an in-process sluice filled by `importPath` (and the real
// `sluice import` CLI): every response shape of the distribution-spec pull workflow in read-only mode.
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { importPath } from '../../src/jobs/importer.js';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../helpers/clients.js';
import { blobPath, buildLayout, corruptBlob, splitRef, writeTar, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml, startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { blobFile, spoolDir } from '../helpers/fs-store.js';
import { MediaType, sha256 } from '../kit/oci.js';

const ACCEPT_ALL = [
  MediaType.dockerManifest,
  MediaType.dockerList,
  MediaType.ociManifest,
  MediaType.ociIndex,
  '*/*',
].join(', ');
const SIGSTORE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const MISSING = `sha256:${'0'.repeat(64)}`;

let work: string;
let layout: LayoutDescription;
let sluice: InProcessSluice;

const image = (ref: string): TestImage => {
  const found = layout.images.find((i) => i.ref === ref);
  if (!found) throw new Error(`no ${ref}`);
  return found;
};
/** The prefix-form path of an image's repository: /v2/<host>/<name>. */
const repoPath = (img: TestImage): string => {
  const { host, name } = splitRef(img.ref);
  return `/v2/${host}/${name}`;
};
const get = (path: string, init: RequestInit = {}): Promise<Response> => fetch(`${sluice.url}${path}`, { redirect: 'manual', ...init });
const layoutBytes = (digest: string): Promise<Buffer> => readFile(blobPath(layout.dir, digest));

async function expectOciError(r: Response, status: number, code: string): Promise<{ code: string; message: string; detail: unknown }> {
  expect(r.status).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await r.json()) as { errors: Array<{ code: string; message: string; detail: unknown }> };
  expect(body.errors).toHaveLength(1);
  const e = body.errors[0]!;
  expect(e.code).toBe(code);
  expect(typeof e.message).toBe('string');
  expect(e).toHaveProperty('detail');
  return e;
}

beforeAll(async () => {
  work = await tempDir('read-api');
  layout = await buildLayout(join(work, 'layout'));
  sluice = await startSluice({
    allowlist: [
      'ghcr.io/siderolabs/kubelet:v1.34.0',
      'docker.io/library/busybox:1.36',
      'registry.k8s.io/coredns/coredns:v1.11.3',
      // Any tag of pause: for tags/list pagination and the missing-manifest/blob answers.
      'registry.k8s.io/pause',
    ],
  });
  const result = await importPath(sluice.app.store, layout.dir);
  expect(result.failed).toEqual([]);
  expect(result.imported.map((i) => i.ref).sort()).toEqual(layout.images.map((i) => i.ref).sort());
});

afterAll(async () => {
  await sluice?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('base', () => {
  test('GET /v2/ → 200 {} with the API version header', async () => {
    for (const path of ['/v2/', '/v2']) {
      const r = await get(path);
      expect(r.status).toBe(200);
      expect(r.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
      expect(await r.json()).toEqual({});
    }
    const head = await get('/v2/', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });
});

describe('manifests', () => {
  test('GET by tag and by digest: exact bytes, own Content-Type, Content-Length, Docker-Content-Digest, ETag', async () => {
    for (const img of layout.images) {
      const { tag } = splitRef(img.ref);
      const want = await layoutBytes(img.digest);
      for (const ref of [tag, img.digest]) {
        const r = await get(`${repoPath(img)}/manifests/${ref}`, { headers: { accept: ACCEPT_ALL } });
        expect(r.status, `${img.ref} ${ref}`).toBe(200);
        const body = Buffer.from(await r.arrayBuffer());
        expect(body.equals(want), `${img.ref} bytes`).toBe(true);
        expect(r.headers.get('content-type')).toBe(img.mediaType);
        expect(r.headers.get('content-length')).toBe(String(want.length));
        expect(r.headers.get('docker-content-digest')).toBe(img.digest);
        expect(r.headers.get('etag')).toBe(`"${img.digest}"`);
      }
      // Every child manifest of an index by digest, with its own media type.
      for (const p of img.platforms ?? []) {
        const r = await get(`${repoPath(img)}/manifests/${p.digest}`);
        expect(r.status).toBe(200);
        expect(Buffer.from(await r.arrayBuffer()).equals(await layoutBytes(p.digest))).toBe(true);
        expect(r.headers.get('content-type')).toBe(img.kind === 'docker-list' ? MediaType.dockerManifest : MediaType.ociManifest);
      }
    }
  });

  test('HEAD is GET minus the body, Content-Length and Docker-Content-Digest included', async () => {
    for (const img of layout.images) {
      const path = `${repoPath(img)}/manifests/${splitRef(img.ref).tag}`;
      const g = await get(path, { headers: { accept: ACCEPT_ALL } });
      await g.arrayBuffer();
      const h = await get(path, { method: 'HEAD', headers: { accept: ACCEPT_ALL } });
      expect(h.status).toBe(200);
      expect(await h.text()).toBe('');
      for (const name of ['content-type', 'content-length', 'docker-content-digest', 'etag', 'docker-distribution-api-version']) {
        expect(h.headers.get(name), name).toBe(g.headers.get(name));
      }
      expect(h.headers.get('content-length')).toBe(String(img.size));
    }
  });

  test('If-None-Match with the ETag → 304 without a body, on GET and HEAD', async () => {
    const img = image('registry.k8s.io/pause:3.10');
    for (const method of ['GET', 'HEAD']) {
      for (const ref of ['3.10', img.digest]) {
        const r = await get(`${repoPath(img)}/manifests/${ref}`, { method, headers: { 'if-none-match': `"${img.digest}"` } });
        expect(r.status).toBe(304);
        expect(await r.text()).toBe('');
        expect(r.headers.get('etag')).toBe(`"${img.digest}"`);
        expect(r.headers.get('docker-content-digest')).toBe(img.digest);
      }
    }
    const other = await get(`${repoPath(img)}/manifests/3.10`, { headers: { 'if-none-match': `"${MISSING}"` } });
    expect(other.status).toBe(200);
  });

  test('a manifest ignores Range and is served whole', async () => {
    const img = image('registry.k8s.io/pause:3.10');
    const r = await get(`${repoPath(img)}/manifests/3.10`, { headers: { range: 'bytes=0-3' } });
    expect(r.status).toBe(200);
    expect((await r.arrayBuffer()).byteLength).toBe(img.size);
  });

  test('host resolution: ?ns= (echoed as OCI-Namespace), the host prefix, and the default upstream with library/', async () => {
    const busybox = image('docker.io/library/busybox:1.36');
    const kubelet = image('ghcr.io/siderolabs/kubelet:v1.34.0');
    const cases: Array<[string, string, string | null]> = [
      ['/v2/library/busybox/manifests/1.36?ns=docker.io', busybox.digest, 'docker.io'],
      ['/v2/busybox/manifests/1.36?ns=docker.io', busybox.digest, 'docker.io'],
      ['/v2/library/busybox/manifests/1.36?ns=index.docker.io', busybox.digest, 'index.docker.io'],
      ['/v2/docker.io/library/busybox/manifests/1.36', busybox.digest, null],
      ['/v2/docker.io/busybox/manifests/1.36', busybox.digest, null],
      ['/v2/library/busybox/manifests/1.36', busybox.digest, null],
      ['/v2/busybox/manifests/1.36', busybox.digest, null],
      ['/v2/siderolabs/kubelet/manifests/v1.34.0?ns=ghcr.io', kubelet.digest, 'ghcr.io'],
      ['/v2/ghcr.io/siderolabs/kubelet/manifests/v1.34.0', kubelet.digest, null],
      [`/v2/pause/manifests/3.10?ns=registry.k8s.io`, image('registry.k8s.io/pause:3.10').digest, 'registry.k8s.io'],
    ];
    for (const [path, digest, ns] of cases) {
      for (const method of ['GET', 'HEAD']) {
        const r = await get(path, { method });
        expect(r.status, `${method} ${path}`).toBe(200);
        expect(r.headers.get('docker-content-digest')).toBe(digest);
        expect(r.headers.get('oci-namespace')).toBe(ns);
        await r.arrayBuffer();
      }
    }
  });

  test('errors: unknown ns host → 404 NAME_UNKNOWN, missing manifest → 404 MANIFEST_UNKNOWN, not allowed → 403 DENIED', async () => {
    const unknown = await get('/v2/library/busybox/manifests/1.36?ns=quay.io');
    await expectOciError(unknown, 404, 'NAME_UNKNOWN');
    expect(unknown.headers.get('oci-namespace')).toBe(null);
    await expectOciError(await get('/v2/library/busybox/manifests/1.36?ns=127.0.0.1:22'), 404, 'NAME_UNKNOWN');
    const missingTag = await expectOciError(await get('/v2/registry.k8s.io/pause/manifests/nope'), 404, 'MANIFEST_UNKNOWN');
    expect(missingTag.message).toMatch(/not cached; upstream access closed/);
    await expectOciError(await get(`/v2/registry.k8s.io/pause/manifests/${MISSING}`), 404, 'MANIFEST_UNKNOWN');
    await expectOciError(await get('/v2/ghcr.io/siderolabs/kubelet/manifests/v9'), 403, 'DENIED');
    await expectOciError(await get('/v2/registry.k8s.io/coredns/coredns/manifests/sha256:totallywrong'), 400, 'DIGEST_INVALID');
    await expectOciError(await get(`/v2/registry.k8s.io/coredns/coredns/manifests/sha512:${'a'.repeat(128)}`), 400, 'DIGEST_INVALID');
    await expectOciError(await get('/v2/registry.k8s.io/coredns/coredns/manifests/-bad'), 404, 'MANIFEST_UNKNOWN');
    await expectOciError(await get('/v2/Bad/manifests/1'), 400, 'NAME_INVALID');
    // HEAD errors carry the status and no body.
    const head = await get('/v2/registry.k8s.io/pause/manifests/nope', { method: 'HEAD' });
    expect(head.status).toBe(404);
    expect(await head.text()).toBe('');
  });

  test('the conformance pull suite’s error requests: .INVALID_MANIFEST_NAME → 404, sha256:totallywrong (GET with a body) → 400 OCI JSON', async () => {
    for (const method of ['GET', 'HEAD']) {
      const r = await get('/v2/registry.k8s.io/pause/manifests/.INVALID_MANIFEST_NAME', { method });
      expect(r.status, method).toBe(404);
      await r.arrayBuffer();
    }
    // distribution-spec conformance (v1.1) "400 response body should contain OCI-conforming JSON message".
    // fetch refuses a GET body; node:http sends it as reggie does.
    const raw = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
      const q = request(`${sluice.url}/v2/registry.k8s.io/pause/manifests/sha256:totallywrong`, {
        method: 'GET',
        headers: { 'content-type': MediaType.ociManifest, 'content-length': '9' },
      }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => void (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      });
      q.on('error', reject);
      q.end('blablabla');
    });
    const r = new Response(raw.body, { status: raw.status, headers: { 'content-type': raw.type } });
    const e = await expectOciError(r, 400, 'DIGEST_INVALID');
    expect(e.message).toMatch(/invalid digest/);
  });

  test('a digest of another repository is not served through this one', async () => {
    const kubelet = image('ghcr.io/siderolabs/kubelet:v1.34.0');
    const r = await get(`/v2/registry.k8s.io/coredns/coredns/manifests/${kubelet.digest}`);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
  });
});

describe('blobs', () => {
  const layer = (): { img: TestImage; digest: string; size: number } => {
    const img = image('ghcr.io/siderolabs/kubelet:v1.34.0');
    const b = [...img.blobs].sort((x, y) => y.size - x.size)[0]!;
    return { img, digest: b.digest, size: b.size };
  };

  test('GET every blob of every image: exact bytes, Content-Length, Docker-Content-Digest, Accept-Ranges', async () => {
    for (const img of layout.images) {
      for (const b of img.blobs) {
        const r = await get(`${repoPath(img)}/blobs/${b.digest}`);
        expect(r.status, `${img.ref} ${b.digest}`).toBe(200);
        const body = Buffer.from(await r.arrayBuffer());
        expect(sha256(body)).toBe(b.digest);
        expect(r.headers.get('content-length')).toBe(String(b.size));
        expect(r.headers.get('docker-content-digest')).toBe(b.digest);
        expect(r.headers.get('accept-ranges')).toBe('bytes');
        expect(r.headers.get('etag')).toBe(`"${b.digest}"`);
      }
    }
  });

  test('HEAD carries the same headers, no body, and never opens the file', async () => {
    const { img, digest, size } = layer();
    // openFd is a bound property (present on a filesystem store), not a method: spied through its own type.
    const fdStore = sluice.app.store as unknown as { openFd: (digest: string) => Promise<number | undefined> };
    const spies = [vi.spyOn(sluice.app.store, 'openBlob'), vi.spyOn(fdStore, 'openFd'), vi.spyOn(sluice.app.store, 'readSmallBlob')];
    try {
      const h = await get(`${repoPath(img)}/blobs/${digest}`, { method: 'HEAD' });
      expect(h.status).toBe(200);
      expect(await h.text()).toBe('');
      expect(h.headers.get('content-length')).toBe(String(size));
      expect(h.headers.get('docker-content-digest')).toBe(digest);
      expect(h.headers.get('accept-ranges')).toBe('bytes');
      for (const spy of spies) expect(spy).not.toHaveBeenCalled();
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
  });

  test('a blob gone from disk after its size was memoised is answered as any miss: 404 with the next window, not a 500', async () => {
    const { img, digest, size } = layer();
    expect((await get(`${repoPath(img)}/blobs/${digest}`, { method: 'HEAD' })).status).toBe(200); // size memoised
    const file = blobFile(sluice.app.store, digest);
    const bytes = await readFile(file);
    await rm(file);
    try {
      const variants: Array<Record<string, string>> = [{}, { range: 'bytes=1-' }];
      for (const headers of variants) {
        const e = await expectOciError(await get(`${repoPath(img)}/blobs/${digest}`, { headers }), 404, 'BLOB_UNKNOWN');
        expect(e.detail).toHaveProperty('nextWindow');
      }
    } finally {
      await writeFile(file, bytes);
    }
    const again = await get(`${repoPath(img)}/blobs/${digest}`);
    expect(again.status).toBe(200);
    expect(Buffer.from(await again.arrayBuffer()).length).toBe(size);
  });

  test('single Range → 206 with Content-Range: bytes=N-M, bytes=N-, suffix, and containerd’s bytes=0-', async () => {
    const { img, digest, size } = layer();
    const whole = await layoutBytes(digest);
    const cases: Array<[string, number, number]> = [
      ['bytes=0-99', 0, 99],
      ['bytes=1000-', 1000, size - 1],
      ['bytes=-512', size - 512, size - 1],
      ['bytes=0-', 0, size - 1],
      [`bytes=${size - 1}-${size + 1000}`, size - 1, size - 1],
    ];
    for (const [range, start, end] of cases) {
      const r = await get(`${repoPath(img)}/blobs/${digest}`, { headers: { range } });
      expect(r.status, range).toBe(206);
      expect(r.headers.get('content-range')).toBe(`bytes ${start}-${end}/${size}`);
      expect(r.headers.get('content-length')).toBe(String(end - start + 1));
      expect(r.headers.get('docker-content-digest')).toBe(digest);
      expect(Buffer.from(await r.arrayBuffer()).equals(whole.subarray(start, end + 1)), range).toBe(true);
    }
    const head = await get(`${repoPath(img)}/blobs/${digest}`, { method: 'HEAD', headers: { range: 'bytes=10-19' } });
    expect(head.status).toBe(206);
    expect(head.headers.get('content-length')).toBe('10');
  });

  test('unsatisfiable Range → 416 with Content-Range: bytes */SIZE; bad syntax is ignored (200)', async () => {
    const { img, digest, size } = layer();
    for (const range of [`bytes=${size}-`, `bytes=${size + 10}-${size + 20}`, 'bytes=-0']) {
      const r = await get(`${repoPath(img)}/blobs/${digest}`, { headers: { range } });
      expect(r.status, range).toBe(416);
      expect(r.headers.get('content-range')).toBe(`bytes */${size}`);
      await r.arrayBuffer();
    }
    for (const range of ['bytes=5-1', 'bytes=0-1,4-5', 'lines=1-2', 'bytes=x']) {
      const r = await get(`${repoPath(img)}/blobs/${digest}`, { headers: { range } });
      expect(r.status, range).toBe(200);
      expect(r.headers.get('content-length')).toBe(String(size));
      await r.arrayBuffer();
    }
  });

  test('If-None-Match on a blob → 304', async () => {
    const { img, digest } = layer();
    const r = await get(`${repoPath(img)}/blobs/${digest}`, { headers: { 'if-none-match': `"${digest}"` } });
    expect(r.status).toBe(304);
    expect(await r.text()).toBe('');
  });

  test('blob by ?ns= form and the missing / malformed answers', async () => {
    const busybox = image('docker.io/library/busybox:1.36');
    const b = busybox.blobs[busybox.blobs.length - 1]!;
    const r = await get(`/v2/library/busybox/blobs/${b.digest}?ns=docker.io`);
    expect(r.status).toBe(200);
    expect(r.headers.get('oci-namespace')).toBe('docker.io');
    expect(sha256(Buffer.from(await r.arrayBuffer()))).toBe(b.digest);
    await expectOciError(await get(`/v2/registry.k8s.io/pause/blobs/${MISSING}`), 404, 'BLOB_UNKNOWN');
    const head = await get(`/v2/registry.k8s.io/pause/blobs/${MISSING}`, { method: 'HEAD' });
    expect(head.status).toBe(404);
    expect(await head.text()).toBe('');
    await expectOciError(await get('/v2/registry.k8s.io/pause/blobs/sha256:totallywrong'), 400, 'DIGEST_INVALID');
    await expectOciError(await get(`/v2/registry.k8s.io/pause/blobs/sha512:${'a'.repeat(128)}`), 400, 'DIGEST_INVALID');
    await expectOciError(await get(`/v2/library/busybox/blobs/${b.digest}?ns=nowhere.example`), 404, 'NAME_UNKNOWN');
  });
});

describe('tags/list', () => {
  const pause = (): TestImage => image('registry.k8s.io/pause:3.10');
  const extra = ['latest', 'a', 'b', '3.9', 'v1', 'Z', '_x'];

  beforeAll(async () => {
    for (const t of extra) await sluice.app.store.setTag('registry.k8s.io', 'pause', t, pause().digest);
  });

  test('sorted, whole list without n', async () => {
    const r = await get('/v2/registry.k8s.io/pause/tags/list');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    const all = ['3.10', ...extra].sort();
    expect(await r.json()).toEqual({ name: 'pause', tags: all });
    expect(r.headers.get('link')).toBe(null);
  });

  test('n and last paginate, with a Link rel="next" until the end', async () => {
    const all = ['3.10', ...extra].sort();
    const seen: string[] = [];
    let path: string | undefined = '/v2/registry.k8s.io/pause/tags/list?n=3';
    let pages = 0;
    while (path !== undefined && pages++ < 10) {
      const r = await get(path);
      expect(r.status).toBe(200);
      const body = (await r.json()) as { name: string; tags: string[] };
      expect(body.tags.length).toBeLessThanOrEqual(3);
      seen.push(...body.tags);
      const link = r.headers.get('link');
      const m = link === null ? null : /^<([^>]+)>; rel="next"$/.exec(link);
      if (link !== null) expect(m).not.toBe(null);
      path = m?.[1];
    }
    expect(seen).toEqual(all);
    expect(pages).toBe(Math.ceil(all.length / 3));
    const after = await get(`/v2/registry.k8s.io/pause/tags/list?n=2&last=${encodeURIComponent(all[2]!)}`);
    expect(((await after.json()) as { tags: string[] }).tags).toEqual(all.slice(3, 5));
    const none = await get('/v2/registry.k8s.io/pause/tags/list?n=0');
    expect(((await none.json()) as { tags: string[] }).tags).toEqual([]);
    const end = await get(`/v2/registry.k8s.io/pause/tags/list?last=${encodeURIComponent(all[all.length - 1]!)}`);
    expect(((await end.json()) as { tags: string[] }).tags).toEqual([]);
    expect(end.headers.get('link')).toBe(null);
  });

  test('the ns form keeps ns in the Link and echoes OCI-Namespace', async () => {
    const r = await get('/v2/pause/tags/list?ns=registry.k8s.io&n=1');
    expect(r.headers.get('oci-namespace')).toBe('registry.k8s.io');
    expect(r.headers.get('link')).toMatch(/^<\/v2\/pause\/tags\/list\?ns=registry\.k8s\.io&n=1&last=[^>]+>; rel="next"$/);
  });

  test('only allowed tags are listed; a bad n is 400', async () => {
    await sluice.app.store.setTag('ghcr.io', 'siderolabs/kubelet', 'not-allowed', image('ghcr.io/siderolabs/kubelet:v1.34.0').digest);
    const r = await get('/v2/ghcr.io/siderolabs/kubelet/tags/list');
    expect(await r.json()).toEqual({ name: 'siderolabs/kubelet', tags: ['v1.34.0'] });
    await expectOciError(await get('/v2/registry.k8s.io/pause/tags/list?n=-1'), 400, 'PAGINATION_NUMBER_INVALID');
    await expectOciError(await get('/v2/registry.k8s.io/pause/tags/list?n=abc'), 400, 'PAGINATION_NUMBER_INVALID');
  });
});

describe('referrers', () => {
  let sig: { digest: string; size: number };
  let sbom: { digest: string; size: number };

  beforeAll(async () => {
    const subject = image('registry.k8s.io/pause:3.10');
    const store = sluice.app.store;
    const empty = await store.putBlob(Buffer.from('{}'));
    const artifact = async (artifactType: string | undefined, configType: string): Promise<{ digest: string; size: number }> => {
      const doc = {
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        ...(artifactType ? { artifactType } : {}),
        config: { mediaType: configType, digest: empty.digest, size: empty.sizeBytes },
        layers: [],
        subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
      };
      const m = await store.putManifest(Buffer.from(JSON.stringify(doc)), MediaType.ociManifest);
      await store.linkManifest('registry.k8s.io', 'pause', m);
      return { digest: m.digest, size: m.body.length };
    };
    sig = await artifact(SIGSTORE, 'application/vnd.oci.empty.v1+json');
    sbom = await artifact(undefined, 'application/spdx+json');
  });

  test('always 200 with an OCI index of what is stored', async () => {
    const subject = image('registry.k8s.io/pause:3.10');
    const r = await get(`/v2/registry.k8s.io/pause/referrers/${subject.digest}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe(MediaType.ociIndex);
    const body = (await r.json()) as { schemaVersion: number; mediaType: string; manifests: Array<{ digest: string; artifactType?: string; size: number; mediaType: string }> };
    expect(body.schemaVersion).toBe(2);
    expect(body.mediaType).toBe(MediaType.ociIndex);
    expect(body.manifests.map((m) => m.digest).sort()).toEqual([sig.digest, sbom.digest].sort());
    expect(body.manifests.find((m) => m.digest === sig.digest)).toMatchObject({ artifactType: SIGSTORE, size: sig.size, mediaType: MediaType.ociManifest });
    expect(body.manifests.find((m) => m.digest === sbom.digest)).toMatchObject({ artifactType: 'application/spdx+json' });
    expect(r.headers.get('oci-filters-applied')).toBe(null);
  });

  test('artifactType filter → only matching, with OCI-Filters-Applied', async () => {
    const subject = image('registry.k8s.io/pause:3.10');
    const r = await get(`/v2/pause/referrers/${subject.digest}?ns=registry.k8s.io&artifactType=${encodeURIComponent(SIGSTORE)}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('oci-filters-applied')).toBe('artifactType');
    expect(r.headers.get('oci-namespace')).toBe('registry.k8s.io');
    const body = (await r.json()) as { manifests: Array<{ digest: string }> };
    expect(body.manifests.map((m) => m.digest)).toEqual([sig.digest]);
  });

  test('an allowed digest without referrers → 200 with an empty index', async () => {
    const kubelet = image('ghcr.io/siderolabs/kubelet:v1.34.0');
    for (const path of [`/v2/ghcr.io/siderolabs/kubelet/referrers/${kubelet.digest}`, `/v2/registry.k8s.io/pause/referrers/${MISSING}`]) {
      const r = await get(path);
      expect(r.status, path).toBe(200);
      expect(r.headers.get('content-type')).toBe(MediaType.ociIndex);
      expect(await r.json()).toEqual({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] });
    }
    await expectOciError(await get('/v2/registry.k8s.io/pause/referrers/sha256:totallywrong'), 400, 'DIGEST_INVALID');
  });
});

describe('writes and unknown paths', () => {
  const writePaths = [
    '/v2/registry.k8s.io/pause/manifests/3.10',
    '/v2/registry.k8s.io/pause/blobs/uploads/',
    `/v2/registry.k8s.io/pause/blobs/uploads/abc?digest=${MISSING}`,
    `/v2/registry.k8s.io/pause/blobs/${MISSING}`,
    '/v2/',
    '/',
    '/anything/else',
  ];
  test.each(['PUT', 'POST', 'PATCH', 'DELETE'])('%s anywhere → 405 UNSUPPORTED, with or without a body', async (method) => {
    for (const path of writePaths) {
      for (const init of [
        {},
        { body: '{"schemaVersion":2}', headers: { 'content-type': MediaType.ociManifest } },
        { body: Buffer.alloc(2 * 1024 * 1024, 1), headers: { 'content-type': 'application/octet-stream' } },
        { body: 'x', headers: { 'content-type': 'application/json' } },
      ]) {
        const r = await get(path, { method, ...init });
        const e = await expectOciError(r, 405, 'UNSUPPORTED');
        expect(e.message).toMatch(/read-only/);
      }
    }
    expect(await sluice.app.store.getTag('registry.k8s.io', 'pause', '3.10')).toBe(image('registry.k8s.io/pause:3.10').digest);
  });

  test('unknown paths → 404 in the OCI error format', async () => {
    for (const path of ['/', '/v1/_ping', '/v2/_catalog', '/v2/pause', '/v2/registry.k8s.io/pause/blobs/uploads/', '/favicon.ico', '/v2/a/unknown/b']) {
      await expectOciError(await get(path), 404, 'NOT_FOUND');
    }
    for (const method of ['OPTIONS', 'PROPFIND']) {
      const r = await get('/v2/', { method });
      expect(r.status, method).toBeGreaterThanOrEqual(400);
      expect(r.status, method).toBeLessThan(500);
    }
  });
});

describe('sluice import (real CLI)', () => {
  let cli: string;
  let config: string;
  let storage: string;
  const sluiceCli = (args: string[]): ReturnType<typeof runSluice> => runSluice([...args, '--config', config]);

  beforeAll(async () => {
    cli = await tempDir('import-cli');
    storage = join(cli, 'data');
    config = join(cli, 'sluice.yaml');
    await writeFile(config, sluiceConfigYaml('./data'));
  });
  afterAll(async () => {
    if (cli) await rm(cli, { recursive: true, force: true });
  });

  async function storeFiles(): Promise<Set<string>> {
    const out = new Set<string>();
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory()) await walk(join(d, e.name));
        else out.add(join(d, e.name).slice(storage.length + 1));
      }
    };
    await walk(storage);
    return out;
  }

  test('a .tar of the layout imports every image, exit 0, and leaves no temp files', async () => {
    const tarPath = join(cli, 'layout.tar');
    await writeTar(layout.dir, tarPath);
    const r = await sluiceCli(['import', tarPath]);
    expect(r.code, r.stderr).toBe(0);
    for (const img of layout.images) expect(r.stdout).toContain(`imported ${img.ref} ${img.digest}`);
    const store = await openStore({ storage });
    for (const img of layout.images) {
      const { host, name, tag } = splitRef(img.ref);
      expect(await store.getTag(host, name, tag)).toBe(img.digest);
      for (const b of img.blobs) expect(await store.stat(b.digest), b.digest).toEqual({ digest: b.digest, sizeBytes: b.size });
    }
    expect([...(await storeFiles())].filter((f) => f.startsWith('tmp/'))).toEqual([]);
  });

  test('--as REF names a single image; with several images it is a failure', async () => {
    const single = await buildLayout(join(cli, 'single'));
    const pause = single.images.find((i) => i.ref === 'registry.k8s.io/pause:3.10')!;
    const index = JSON.parse(await readFile(join(single.dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    index.manifests = index.manifests.filter((m) => m.digest === pause.digest);
    await writeFile(join(single.dir, 'index.json'), JSON.stringify(index));
    const r = await sluiceCli(['import', single.dir, '--as', 'ghcr.io/mirror/pause:copied']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`imported ghcr.io/mirror/pause:copied ${pause.digest}`);
    const store = await openStore({ storage });
    expect(await store.getTag('ghcr.io', 'mirror/pause', 'copied')).toBe(pause.digest);
    // Docker Hub short forms normalise.
    const short = await sluiceCli(['import', single.dir, '--as', 'pause:short']);
    expect(short.code, short.stderr).toBe(0);
    expect(await (await openStore({ storage })).getTag('docker.io', 'library/pause', 'short')).toBe(pause.digest);
    const many = await sluiceCli(['import', layout.dir, '--as', 'ghcr.io/x/y:z']);
    expect(many.code).toBe(2); // a usage error: --as cannot name several images
    expect(many.stderr).toMatch(/--as names one image/);
  });

  test('a corrupt layout imports nothing of the bad image, names the bad blob, and exits 1', async () => {
    const bad = await buildLayout(join(cli, 'corrupt'));
    // A fresh store, so nothing of the bad image can already be there from the earlier imports.
    const freshCli = join(cli, 'fresh');
    const freshConfig = join(freshCli, 'sluice.yaml');
    await rm(freshCli, { recursive: true, force: true });
    await import('node:fs/promises').then((fs) => fs.mkdir(freshCli, { recursive: true }));
    await writeFile(freshConfig, sluiceConfigYaml('./data'));
    const victimImage = bad.images.find((i) => i.ref === 'ghcr.io/siderolabs/kubelet:v1.34.0')!;
    // The last blob is a layer of the arm64 platform: every other blob of the image is valid.
    const victim = victimImage.blobs[victimImage.blobs.length - 1]!;
    await corruptBlob(bad.dir, victim.digest);
    const r = await runSluice(['import', bad.dir, '--config', freshConfig]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(victim.digest);
    expect(r.stderr).toContain(victimImage.ref);
    const store = await openStore({ storage: join(freshCli, 'data') });
    const { host, name, tag } = splitRef(victimImage.ref);
    expect(await store.getTag(host, name, tag)).toBeUndefined();
    expect(await store.linkedManifests(host, name)).toEqual([]);
    const others = new Set(bad.images.filter((i) => i !== victimImage).flatMap((i) => i.blobs.map((b) => b.digest)));
    for (const b of victimImage.blobs) {
      if (others.has(b.digest)) continue;
      expect(await store.stat(b.digest), `${b.digest} of the bad image is in the store`).toBeUndefined();
      expect(existsSync(blobFile(store, b.digest))).toBe(false);
    }
    // The good images of the same layout were imported.
    for (const img of bad.images.filter((i) => i !== victimImage)) {
      const ref = splitRef(img.ref);
      expect(await store.getTag(ref.host, ref.name, ref.tag)).toBe(img.digest);
    }
    expect(await readdir(spoolDir(store))).toEqual([]);
  });

  test('a missing path or a folder that is not a layout fails without a stack trace', async () => {
    const missing = await sluiceCli(['import', join(cli, 'does-not-exist')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no such file or directory/);
    expect(missing.stderr).not.toMatch(/\n\s+at /);
    const notLayout = await sluiceCli(['import', cli]);
    expect(notLayout.code).toBe(1);
    expect(notLayout.stderr).toMatch(/not an OCI image layout/);
    const usage = await sluiceCli(['import']);
    expect(usage.code).toBe(2);
  });
});
