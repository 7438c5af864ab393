// Property test (fast-check) of the request policy as a whole: random allowlists × random request sequences
// (some concurrent) × window open/close, against the counting fake upstream, which knows which repository holds
// which blob. Asserts: no blob or manifest byte reaches a client through a repository not entitled to it, no
// upstream request is sent while the window is closed, HEAD and GET agree, and a legitimate pull succeeds.
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importPath } from '../../src/jobs/importer.js';
import { MediaType, mkLayoutDir, sha256, writeBlob, writeLayoutIndex } from '../kit/oci.js';
import { tempDir } from '../helpers/clients.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

const RUNS = Number(process.env.SLUICE_POLICY_FUZZ_RUNS ?? 40);
const FOREIGN_LAYER = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';

interface Blob {
  digest: string;
  body: Buffer;
}
interface Image {
  name: string;
  tag: string;
  manifest: Blob;
  blobs: Blob[];
}

function blob(text: string): Blob {
  const body = Buffer.from(`${text}\n`.repeat(200));
  return { digest: sha256(body), body };
}

function image(name: string, tag: string, layers: Blob[], foreign: Blob[] = []): Image {
  const config = blob(`{"config":"${name}"}`);
  const descriptor = (b: Blob, mediaType: string): Record<string, unknown> => ({ mediaType, digest: b.digest, size: b.body.length });
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: descriptor(config, MediaType.ociConfig),
    layers: [
      ...layers.map((l) => descriptor(l, MediaType.ociLayerTar)),
      // A foreign layer the upstream does not hold in this repository: naming a digest proves nothing.
      ...foreign.map((l) => ({ ...descriptor(l, FOREIGN_LAYER), urls: ['https://example.invalid/layer'] })),
    ],
  };
  const body = Buffer.from(JSON.stringify(doc));
  return { name, tag, manifest: { digest: sha256(body), body }, blobs: [config, ...layers] };
}

const shared = blob('shared layer');
const installerLayer = blob('installer layer');
const installer = image('x/installer', 'v1', [installerLayer]);
const IMAGES: Image[] = [
  image('x/app', 'v1', [blob('app layer'), shared]),
  image('x/lib', 'v2', [blob('lib layer'), shared]),
  image('evil/app', 'v1', [blob('evil layer')], [installerLayer]),
  installer,
];
/** What the upstream holds per repository: the manifest and the blobs it really stores there. */
const upstreamHas = new Map(IMAGES.map((i) => [i.name, new Map([i.manifest, ...i.blobs].map((b) => [b.digest, b]))]));
const ALL_DIGESTS = [...new Set(IMAGES.flatMap((i) => [i.manifest.digest, ...i.blobs.map((b) => b.digest), installerLayer.digest]))];

const RULES = [
  'docker.io/x/app:v1', 'docker.io/x/app', 'docker.io/x/lib:v2', 'docker.io/x/lib', 'docker.io/evil/app:v1',
  'docker.io/evil/app', 'docker.io/x/installer:v1', 'docker.io/x/*', `docker.io/x/lib@${IMAGES[1]?.manifest.digest ?? ''}`,
];

// ---------------------------------------------------------------------------------------------------------------
// The model: which repository may hand out which digest under a given allowlist.

interface ParsedRule {
  name: string;
  tag?: string;
  digest?: string;
}
function parseRule(r: string): ParsedRule {
  const rest = r.slice('docker.io/'.length);
  const at = rest.indexOf('@');
  if (at >= 0) return { name: rest.slice(0, at), digest: rest.slice(at + 1) };
  const colon = rest.indexOf(':');
  return colon >= 0 ? { name: rest.slice(0, colon), tag: rest.slice(colon + 1) } : { name: rest };
}
const nameMatches = (rule: ParsedRule, name: string): boolean =>
  rule.name === name || (rule.name.endsWith('/*') && name.startsWith(rule.name.slice(0, -1)) && !name.slice(rule.name.length - 1).includes('/'));

/** Entitled: the repository itself holds the digest (upstream or imported through it) and a rule reaches it. */
function entitled(rules: string[], name: string, digest: string): boolean {
  const own = upstreamHas.get(name);
  if (!own?.has(digest)) return false;
  for (const rule of rules.map(parseRule).filter((r) => nameMatches(r, name))) {
    if (rule.tag === undefined && rule.digest === undefined) return true;
    if (rule.digest !== undefined && rule.digest === digest) return true;
    const img = IMAGES.find((i) => i.name === name);
    if (img && (rule.tag === img.tag || rule.digest === img.manifest.digest)) return true;
  }
  return false;
}
const repositoryNamed = (rules: string[], name: string): boolean => rules.map(parseRule).some((r) => nameMatches(r, name));

// ---------------------------------------------------------------------------------------------------------------
// The counting upstream: serves each repository's own content, slowly enough for flights to overlap.

interface UpstreamRequest {
  method: string;
  path: string;
  windowOpen: boolean;
}

const upstream = new MiniUpstream();
upstream.scopeBlobs = true;
// Half now, half a moment later: a concurrent request for the same digest finds the flight running.
upstream.midwayDelayMs = 15;
for (const img of IMAGES) {
  upstream.putManifest(img.name, img.tag, img.manifest.body);
  for (const b of img.blobs) upstream.putBlob(img.name, b.body);
}
let current: { sluice?: InProcessSluice; seen: UpstreamRequest[] } = { seen: [] };
upstream.on('request', (line: string) => {
  const [method = '', path = ''] = line.split(' ');
  current.seen.push({ method, path, windowOpen: current.sluice?.app.window.isOpen() ?? false });
});

/** An OCI layout holding x/installer:v1, imported (so linked to x/installer only) before every run. */
async function writeInstallerLayout(dir: string): Promise<void> {
  await mkLayoutDir(dir);
  for (const b of installer.blobs) await writeBlob(dir, b.body, MediaType.ociLayerTar);
  const top = await writeBlob(dir, installer.manifest.body, MediaType.ociManifest);
  await writeLayoutIndex(dir, [{ ref: 'docker.io/x/installer:v1', top }]);
}

// ---------------------------------------------------------------------------------------------------------------
// Steps

type Step =
  | { kind: 'window'; open: boolean }
  | { kind: 'requests'; batch: Array<{ name: string; what: 'manifests' | 'blobs'; reference: string; headFirst: boolean }> }
  | { kind: 'tags'; name: string; headFirst: boolean }
  | { kind: 'pull'; name: string }
  | { kind: 'cross'; through: string; from: string };

const NAMES = IMAGES.map((i) => i.name);
const request = fc.record({
  name: fc.constantFrom(...NAMES),
  what: fc.constantFrom('manifests' as const, 'blobs' as const),
  reference: fc.oneof(fc.constantFrom(...ALL_DIGESTS), fc.constantFrom('v1', 'v2')),
  headFirst: fc.boolean(),
});
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 2, arbitrary: fc.boolean().map((open) => ({ kind: 'window' as const, open })) },
  { weight: 6, arbitrary: fc.array(request, { minLength: 1, maxLength: 3 }).map((batch) => ({ kind: 'requests' as const, batch })) },
  { weight: 1, arbitrary: fc.record({ name: fc.constantFrom(...NAMES), headFirst: fc.boolean() }).map((s) => ({ kind: 'tags' as const, ...s })) },
  { weight: 2, arbitrary: fc.constantFrom(...NAMES).map((name) => ({ kind: 'pull' as const, name })) },
  // Another image's blobs asked through this repository while that image is being pulled (flights shared?).
  { weight: 3, arbitrary: fc.record({ through: fc.constantFrom(...NAMES), from: fc.constantFrom(...NAMES) }).map((s) => ({ kind: 'cross' as const, ...s })) },
);

interface Answer {
  status: number;
  body: Buffer;
  length: string | null;
  digest: string | null;
}

async function ask(method: 'GET' | 'HEAD', path: string): Promise<Answer> {
  // A hang is a failure with a name, not a test timeout.
  const signal = AbortSignal.timeout(5_000);
  const res = await fetch(`${current.sluice?.url ?? ''}${path}`, { method, headers: { accept: `${MediaType.ociManifest}, */*` }, signal })
    .catch((e: unknown) => { throw new Error(`${method} ${path}: ${String(e)}`); });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer().catch((e: unknown) => { throw new Error(`${method} ${path} body: ${String(e)}`); })), length: res.headers.get('content-length'), digest: res.headers.get('docker-content-digest') };
}

/**
 * HEAD and GET of one path in either order; they must agree, and a 200 must be an entitled, exact body. A request
 * running beside them may store the digest between the two (a manifest pulled through another repository: first
 * "not stored, and the upstream has none here" 404, then "stored, not this repository's" 403), so a pair that
 * disagrees is asked again: the store only grows within a step, and in the same state the two must agree.
 */
async function both(rules: string[], name: string, what: 'manifests' | 'blobs', reference: string, headFirst: boolean): Promise<Answer> {
  const path = `/v2/docker.io/${name}/${what}/${reference}`;
  const [first, second] = headFirst ? ['HEAD', 'GET'] as const : ['GET', 'HEAD'] as const;
  let a = await ask(first, path);
  let b = await ask(second, path);
  if (a.status !== b.status) {
    a = await ask(first, path);
    b = await ask(second, path);
  }
  const [head, get] = headFirst ? [a, b] : [b, a];
  expect(head.status, `HEAD vs GET ${path}`).toBe(get.status);
  if (get.status === 200) {
    const digest = reference.startsWith('sha256:') ? reference : get.digest ?? '';
    expect(entitled(rules, name, digest), `${digest} served through ${name} under [${rules.join(', ')}]`).toBe(true);
    expect(sha256(get.body)).toBe(digest);
    expect(head.length).toBe(String(get.body.length));
  }
  return get;
}

async function runStep(rules: string[], s: Step): Promise<void> {
  const app = current.sluice?.app;
  if (!app) throw new Error('no sluice');
  switch (s.kind) {
    case 'window':
      if (s.open) app.window.open(60_000, 'fuzz', 'test');
      else app.window.close();
      return;
    case 'requests':
      await Promise.all(s.batch.map((r) => both(rules, r.name, r.what, r.reference, r.headFirst)));
      return;
    case 'tags': {
      const path = `/v2/docker.io/${s.name}/tags/list`;
      const [a, b] = [await ask(s.headFirst ? 'HEAD' : 'GET', path), await ask(s.headFirst ? 'GET' : 'HEAD', path)];
      expect(a.status, `HEAD vs GET ${path}`).toBe(b.status);
      if (!repositoryNamed(rules, s.name)) expect(a.status).toBe(403);
      return;
    }
    case 'pull': {
      // What containerd does for an image: its tag, then every blob. Allowed and in a window, it must work.
      const img = IMAGES.find((i) => i.name === s.name);
      if (!img) return;
      const open = app.window.isOpen();
      const m = await both(rules, img.name, 'manifests', img.tag, false);
      const legit = open && entitled(rules, img.name, img.manifest.digest) && rules.map(parseRule).some((r) => nameMatches(r, img.name) && (r.tag === undefined || r.tag === img.tag) && r.digest === undefined);
      if (legit) expect(m.status, `pull of ${img.name}:${img.tag}`).toBe(200);
      if (m.status !== 200) return;
      await Promise.all(img.blobs.map(async (b) => {
        const got = await both(rules, img.name, 'blobs', b.digest, false);
        if (open) expect(got.status, `blob ${b.digest} of ${img.name}`).toBe(200);
      }));
      return;
    }
    case 'cross': {
      const from = IMAGES.find((i) => i.name === s.from);
      const through = IMAGES.find((i) => i.name === s.through);
      if (!from || !through) return;
      await both(rules, through.name, 'manifests', through.tag, false);
      const digests = [...from.blobs.map((b) => b.digest), installerLayer.digest];
      await Promise.all([
        runStep(rules, { kind: 'pull', name: from.name }),
        ...digests.map((d) => both(rules, through.name, 'blobs', d, true)),
      ]);
      return;
    }
  }
}

describe('request policy under random allowlists, requests and windows', () => {
  let work: string;
  let layoutDir: string;
  beforeAll(async () => {
    work = await tempDir('policy-fuzz');
    layoutDir = join(work, 'layout');
    await writeInstallerLayout(layoutDir);
    await upstream.start();
  });
  afterAll(async () => {
    await upstream.stop();
  });

  it('never hands out what a repository is not entitled to, never dials while closed, HEAD = GET', async () => {
    await fc.assert(
      fc.asyncProperty(fc.subarray(RULES, { minLength: 1 }), fc.boolean(), fc.array(step, { minLength: 1, maxLength: 14 }), async (rules, openFirst, steps) => {
        current = { seen: [] };
        const sluice = await startSluice({ allowlist: rules, windows: 'never', upstreams: { 'docker.io': { url: upstream.url } } });
        current.sluice = sluice;
        try {
          const imported = await importPath(sluice.app.store, layoutDir);
          expect(imported.failed).toEqual([]);
          for (const s of openFirst ? [{ kind: 'window' as const, open: true }, ...steps] : steps) await runStep(rules, s);
          for (const r of current.seen) {
            expect(r.windowOpen, `${r.method} ${r.path} sent while the window was closed`).toBe(true);
            const name = /^\/v2\/(.+)\/(?:manifests|blobs|tags|referrers)\//.exec(r.path)?.[1];
            if (name !== undefined) expect(repositoryNamed(rules, name), `${r.method} ${r.path} for a repository no rule names`).toBe(true);
          }
        } finally {
          current.sluice = undefined;
          await sluice.close();
        }
      }),
      { numRuns: RUNS, ...(process.env.SLUICE_FUZZ_SEED ? { seed: Number(process.env.SLUICE_FUZZ_SEED), endOnFailure: true, verbose: 2 } : {}) },
    );
  });
});
