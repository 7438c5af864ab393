// Site signatures end to end: a sync signs what the policy allows (verified: the vendor's own signature checked
// against a publicKey rule), and Talos's whole lookup sequence through sluice — referrers filtered by artifactType,
// then the `sha256-<hex>` tag, then `sha256-<hex>.sig` — finds signatures an independent verifier accepts, in a
// window and outside it, without the upstream being asked for a signature tag sluice owns.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../../src/app.js';
import { validateConfig } from '../../src/config/config.js';
import { coverageReport } from '../../src/jobs/coverage.js';
import { SiteSigner } from '../../src/jobs/site-signer.js';
import { admittedImages } from '../../src/jobs/admitted-images.js';
import { signImages } from '../../src/jobs/sign-run.js';
import { runSluice, sluiceConfigDoc, sluiceConfigYaml } from '../helpers/sluice.js';
import { exportBundle } from '../../src/jobs/exporter.js';
import { parseRule } from '../../src/policy/allowlist.js';
import { MiniUpstream, type MiniImage } from '../helpers/mini-upstream.js';
import { BUNDLE_V03, COSIGN_SIGNATURE, legacySignature, newKey, verifyBundle, verifyLegacyLayer, type TestKey } from '../helpers/cosign.js';
import { MediaType, sha256 } from '../kit/oci.js';
import { TestTrustRoot } from '../helpers/test-trust-root.js';

interface Desc { mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }
interface Doc { mediaType?: string; manifests?: Desc[]; layers?: Desc[]; subject?: Desc }

const hexOf = (d: string): string => d.slice('sha256:'.length);

describe('site signatures', () => {
  const mini = new MiniUpstream();
  const site = newKey();
  const vendor = newKey();
  const forger = newKey();
  let dir: string;
  let signed: MiniImage;
  let platforms: MiniImage[];
  let index: { digest: string; body: Buffer };
  let unsigned: MiniImage;
  let forged: MiniImage;
  let keyless: MiniImage;
  const root = new TestTrustRoot();
  const releaser = { subject: 'https://ci.vendor.example/release.yml@refs/tags/v1', issuer: 'https://token.ci.vendor.example' };

  function publish(name: string, digest: string, key: TestKey): void {
    const sig = legacySignature(key, `ghcr.io/${name}`, digest);
    for (const b of sig.blobs) mini.blobs.set(sha256(b), b);
    mini.manifests.set(`${name}:sha256-${hexOf(digest)}.sig`, sig.manifest);
    mini.manifests.set(`${name}:${sha256(sig.manifest)}`, sig.manifest);
  }

  beforeAll(async () => {
    await mini.start();
    dir = await mkdtemp(join(tmpdir(), 'sluice-sitesig-'));
    await writeFile(join(dir, 'site.key'), site.privatePem, { mode: 0o600 });
    signed = mini.addImage('acme/app', '1.0', [Buffer.from('app layer')]);
    publish('acme/app', signed.digest, vendor);
    // A two-platform index signed by the vendor on the index only (cosign's default).
    platforms = [mini.addImage('acme/multi', 'amd64', [Buffer.from('amd64')]), mini.addImage('acme/multi', 'arm64', [Buffer.from('arm64')])];
    const body = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.ociIndex,
      manifests: platforms.map((p, i) => ({ mediaType: MediaType.ociManifest, digest: p.digest, size: p.manifest.length, platform: { os: 'linux', architecture: i === 0 ? 'amd64' : 'arm64' } })),
    }));
    index = { digest: sha256(body), body };
    mini.manifests.set('acme/multi:2.0', body);
    mini.manifests.set(`acme/multi:${index.digest}`, body);
    publish('acme/multi', index.digest, vendor);
    unsigned = mini.addImage('acme/plain', '1.0', [Buffer.from('plain')]);
    forged = mini.addImage('acme/forged', '1.0', [Buffer.from('forged')]);
    publish('acme/forged', forged.digest, forger);
    // Signed keyless in CI, as Sidero and Kubernetes sign: certificate, SCT and Rekor bundle in the layer annotations.
    keyless = mini.addImage('acme/keyless', '1.0', [Buffer.from('keyless')]);
    const layer = root.legacyLayer(releaser, 'ghcr.io/acme/keyless', keyless.digest);
    mini.blobs.set(sha256(layer.payload), layer.payload);
    const emptyConfig = Buffer.from('{}');
    mini.blobs.set(sha256(emptyConfig), emptyConfig);
    const sigManifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: sha256(emptyConfig), size: 2 },
      layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest: sha256(layer.payload), size: layer.payload.length, annotations: layer.annotations }],
    }));
    mini.manifests.set(`acme/keyless:sha256-${hexOf(keyless.digest)}.sig`, sigManifest);
    mini.manifests.set(`acme/keyless:${sha256(sigManifest)}`, sigManifest);
    await writeFile(join(dir, 'trusted_root.json'), root.json());
  });

  afterAll(async () => {
    await mini.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function app(windows: 'always' | 'never'): Promise<{ app: App; url: string }> {
    const config = validateConfig(sluiceConfigDoc(join(dir, 'data'), {
      windows,
      allowlist: ['ghcr.io/acme/app:1.0', 'ghcr.io/acme/multi:2.0', 'ghcr.io/acme/plain:1.0', 'ghcr.io/acme/forged:1.0', 'ghcr.io/acme/keyless:1.0'],
      upstreams: { 'ghcr.io': { url: mini.url } },
      extra: {
        gcGrace: 0,
        signing: {
          key: './site.key',
          trustedRoot: './trusted_root.json',
          rules: [
            { image: 'ghcr.io/acme/keyless', keyless: { issuer: releaser.issuer, subjectRegex: '^https://ci\\.vendor\\.example/' } },
            { image: 'ghcr.io/acme/*', publicKey: { certificate: vendor.publicPem } },
          ],
        },
      },
    }), join(dir, 'sluice.yaml'));
    const a = await buildApp(config);
    const url = (await a.registry.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
    return { app: a, url };
  }

  async function get(url: string, path: string): Promise<{ status: number; body: Buffer; type: string }> {
    const res = await fetch(`${url}${path}${path.includes('?') ? '&' : '?'}ns=ghcr.io`, { headers: { accept: [MediaType.ociManifest, MediaType.ociIndex].join(', ') } });
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()), type: res.headers.get('content-type') ?? '' };
  }

  /** Talos's cosign.go order; returns what each step found for the site key (bundles verified, legacy layers checked). */
  async function talosLookup(url: string, name: string, digest: string, artifact: Buffer): Promise<{ referrer: boolean; bundleTag: boolean; legacy: boolean }> {
    const found = { referrer: false, bundleTag: false, legacy: false };
    const refs = await get(url, `/v2/${name}/referrers/${digest}?artifactType=${encodeURIComponent(BUNDLE_V03)}`);
    expect(refs.status).toBe(200);
    for (const r of (JSON.parse(refs.body.toString()) as Doc).manifests ?? []) {
      if (!r.artifactType?.startsWith('application/vnd.dev.sigstore.bundle')) continue;
      found.referrer ||= await bundleVerifies(url, name, r.digest, digest, artifact);
    }
    const tag = await get(url, `/v2/${name}/manifests/sha256-${hexOf(digest)}`);
    if (tag.status === 200) {
      expect(tag.type).toBe(MediaType.ociIndex);
      expect((await get(url, `/v2/${name}/manifests/${sha256(tag.body)}`)).body.equals(tag.body)).toBe(true);
      for (const m of (JSON.parse(tag.body.toString()) as Doc).manifests ?? []) found.bundleTag ||= await bundleVerifies(url, name, m.digest, digest, artifact);
    }
    const sig = await get(url, `/v2/${name}/manifests/sha256-${hexOf(digest)}.sig`);
    if (sig.status === 200) {
      expect(sig.type).toBe(MediaType.ociManifest);
      const byDigest = await get(url, `/v2/${name}/manifests/${sha256(sig.body)}`);
      expect(byDigest.body.equals(sig.body)).toBe(true);
      for (const l of (JSON.parse(sig.body.toString()) as Doc).layers ?? []) {
        const payload = await get(url, `/v2/${name}/blobs/${l.digest}`);
        found.legacy ||= verifyLegacyLayer(payload.body, l.annotations?.[COSIGN_SIGNATURE] ?? '', digest, site.publicPem);
      }
    }
    return found;
  }

  async function bundleVerifies(url: string, name: string, manifestDigest: string, digest: string, artifact: Buffer): Promise<boolean> {
    const m = await get(url, `/v2/${name}/manifests/${manifestDigest}`);
    const layers = (JSON.parse(m.body.toString()) as Doc).layers ?? [];
    if (layers.length !== 1 || layers[0]?.mediaType !== BUNDLE_V03) return false;
    const bundle = await get(url, `/v2/${name}/blobs/${layers[0].digest}`);
    try {
      verifyBundle(bundle.body, artifact, digest, site);
      return true;
    } catch {
      return false;
    }
  }

  it('a sync signs images whose vendor signature verifies, index and platforms, and names those it does not', async () => {
    const { app: a } = await app('always');
    try {
      const report = await a.syncer.run();
      expect(report.failed).toEqual([]);
      // app: 1, multi: the index and both platforms, keyless: 1.
      expect(report.signing?.signed).toBe(5);
      const reasons = Object.fromEntries((report.signing?.unsigned ?? []).map((u) => [u.reference, u.reason]));
      expect(Object.keys(reasons).sort()).toEqual(['ghcr.io/acme/forged:1.0', 'ghcr.io/acme/plain:1.0']);
      expect(reasons['ghcr.io/acme/plain:1.0']).toMatch(/no upstream signature .* is stored/);
      expect(reasons['ghcr.io/acme/forged:1.0']).toMatch(/no upstream signature verifies against publicKey rule ghcr\.io\/acme\/\*/);
      // A second run signs nothing again: the signatures made are kept.
      const again = await a.syncer.run();
      expect(again.signing).toMatchObject({ signed: 0, kept: 5 });
    } finally {
      await a.close();
    }
  });

  it('Talos finds a site signature by referrer, by the sha256-<hex> tag and by .sig, in a window and outside it', async () => {
    for (const windows of ['always', 'never'] as const) {
      const { app: a, url } = await app(windows);
      try {
        expect(await talosLookup(url, 'acme/app', signed.digest, signed.manifest), windows).toEqual({ referrer: true, bundleTag: true, legacy: true });
        expect(await talosLookup(url, 'acme/multi', index.digest, index.body), windows).toEqual({ referrer: true, bundleTag: true, legacy: true });
        for (const p of platforms) expect(await talosLookup(url, 'acme/multi', p.digest, p.manifest), windows).toEqual({ referrer: true, bundleTag: true, legacy: true });
        expect(await talosLookup(url, 'acme/keyless', keyless.digest, keyless.manifest), windows).toEqual({ referrer: true, bundleTag: true, legacy: true });
        expect(await talosLookup(url, 'acme/plain', unsigned.digest, unsigned.manifest)).toEqual({ referrer: false, bundleTag: false, legacy: false });
        expect(await talosLookup(url, 'acme/forged', forged.digest, forged.manifest)).toEqual({ referrer: false, bundleTag: false, legacy: false });
      } finally {
        await a.close();
      }
    }
  });

  it('the vendor signature stays in the .sig beside the site one', async () => {
    const { app: a, url } = await app('never');
    try {
      const sig = await get(url, `/v2/acme/app/manifests/sha256-${hexOf(signed.digest)}.sig`);
      const layers = (JSON.parse(sig.body.toString()) as Doc).layers ?? [];
      const checks = await Promise.all(layers.map(async (l) => {
        const payload = (await get(url, `/v2/acme/app/blobs/${l.digest}`)).body;
        const sigB64 = l.annotations?.[COSIGN_SIGNATURE] ?? '';
        return { vendor: verifyLegacyLayer(payload, sigB64, signed.digest, vendor.publicPem), site: verifyLegacyLayer(payload, sigB64, signed.digest, site.publicPem) };
      }));
      expect(checks).toEqual([{ vendor: true, site: false }, { vendor: false, site: true }]);
    } finally {
      await a.close();
    }
  });

  it('the upstream is never asked for a signature tag sluice owns', async () => {
    const { app: a, url } = await app('always');
    try {
      const path = `/v2/acme/app/manifests/sha256-${hexOf(signed.digest)}.sig`;
      const before = mini.count(path);
      const headBefore = [...mini.hits.entries()].filter(([p]) => p.includes(`sha256-${hexOf(signed.digest)}`)).reduce((n, [, c]) => n + c, 0);
      expect((await get(url, path.replace('/v2', '/v2'))).status).toBe(200);
      expect((await get(url, `/v2/acme/app/manifests/sha256-${hexOf(signed.digest)}`)).status).toBe(200);
      expect(mini.count(path)).toBe(before);
      const after = [...mini.hits.entries()].filter(([p]) => p.includes(`sha256-${hexOf(signed.digest)}`)).reduce((n, [, c]) => n + c, 0);
      expect(after).toBe(headBefore);
    } finally {
      await a.close();
    }
  });

  it('the signatures fail to verify once one byte of the image or of the signature changes', async () => {
    const { app: a, url } = await app('never');
    try {
      const refs = JSON.parse((await get(url, `/v2/acme/app/referrers/${signed.digest}`)).body.toString()) as Doc;
      const ref = (refs.manifests ?? []).find((d) => d.annotations?.['dev.sluice.site-signature.key'] === site.id);
      expect(ref).toBeDefined();
      const layer = ((JSON.parse((await get(url, `/v2/acme/app/manifests/${ref?.digest ?? ''}`)).body.toString()) as Doc).layers ?? [])[0];
      const bundle = (await get(url, `/v2/acme/app/blobs/${layer?.digest ?? ''}`)).body;
      expect(() => verifyBundle(bundle, signed.manifest, signed.digest, site)).not.toThrow();
      const image = Buffer.from(signed.manifest);
      image[10] = (image[10] ?? 0) ^ 1;
      expect(() => verifyBundle(bundle, image, sha256(image), site)).toThrow();
      const digest = `${signed.digest.slice(0, -1)}${signed.digest.endsWith('0') ? '1' : '0'}`;
      expect(() => verifyBundle(bundle, signed.manifest, digest, site)).toThrow(/bundle signs/);
      const doc = JSON.parse(bundle.toString()) as { messageSignature: { signature: string } };
      const sig = Buffer.from(doc.messageSignature.signature, 'base64');
      sig[sig.length - 3] = (sig[sig.length - 3] ?? 0) ^ 1;
      doc.messageSignature.signature = sig.toString('base64');
      expect(() => verifyBundle(Buffer.from(JSON.stringify(doc)), signed.manifest, signed.digest, site)).toThrow();

      const legacy = JSON.parse((await get(url, `/v2/acme/app/manifests/sha256-${hexOf(signed.digest)}.sig`)).body.toString()) as Doc;
      const own = (legacy.layers ?? []).find((l) => l.annotations?.['dev.sluice.site-signature.key'] === site.id);
      const payload = (await get(url, `/v2/acme/app/blobs/${own?.digest ?? ''}`)).body;
      const b64 = own?.annotations?.[COSIGN_SIGNATURE] ?? '';
      expect(verifyLegacyLayer(payload, b64, signed.digest, site.publicPem)).toBe(true);
      expect(verifyLegacyLayer(payload, b64, digest, site.publicPem)).toBe(false);
      const changedPayload = Buffer.from(payload.toString().replace(signed.digest, digest));
      expect(verifyLegacyLayer(changedPayload, b64, digest, site.publicPem)).toBe(false);
      const badSig = Buffer.from(b64, 'base64');
      badSig[badSig.length - 3] = (badSig[badSig.length - 3] ?? 0) ^ 1;
      expect(verifyLegacyLayer(payload, badSig.toString('base64'), signed.digest, site.publicPem)).toBe(false);
    } finally {
      await a.close();
    }
  });

  it('gc keeps the site signatures of the images it keeps', async () => {
    const { app: a, url } = await app('never');
    try {
      const report = await a.gc.run();
      // Only what the merged .sig replaced goes: the vendor's own .sig manifests and their configs (the vendor's
      // signature layer lives on in the merged one).
      const replaced = [['acme/app', signed.digest], ['acme/multi', index.digest]].flatMap(([name, digest]) => {
        const m = mini.manifests.get(`${name ?? ''}:sha256-${hexOf(digest ?? '')}.sig`) ?? Buffer.alloc(0);
        return [sha256(m), (JSON.parse(m.toString()) as { config: Desc }).config.digest];
      });
      // The keyless .sig's config is `{}`, the empty blob the site's referrers use too, so it stays.
      replaced.push(sha256(mini.manifests.get(`acme/keyless:sha256-${hexOf(keyless.digest)}.sig`) ?? Buffer.alloc(0)));
      expect(report.swept.map((x) => x.digest).sort()).toEqual(replaced.sort());
      expect(await talosLookup(url, 'acme/app', signed.digest, signed.manifest)).toEqual({ referrer: true, bundleTag: true, legacy: true });
      for (const p of platforms) expect(await talosLookup(url, 'acme/multi', p.digest, p.manifest)).toEqual({ referrer: true, bundleTag: true, legacy: true });
    } finally {
      await a.close();
    }
  });

  it('readiness names each admitted image without a site signature and why', async () => {
    const { app: a } = await app('never');
    try {
      const report = await coverageReport(a.store, a.allowlist.list().map((r) => r.rule), { signer: a.signer });
      const byRule = Object.fromEntries(report.rules.map((r) => [r.rule, r.images[0]]));
      expect(byRule['ghcr.io/acme/app:1.0']?.state).toBe('complete');
      expect(byRule['ghcr.io/acme/keyless:1.0']?.siteSignatures?.[0]?.verified).toMatch(/^keyless rule ghcr\.io\/acme\/keyless via legacy \.sig layer sha256:/);
      expect(byRule['ghcr.io/acme/multi:2.0']?.siteSignatures?.map((s) => s.signed)).toEqual([true, true, true]);
      expect(byRule['ghcr.io/acme/multi:2.0']?.siteSignatures?.[1]?.verified).toMatch(new RegExp(`via index ${index.digest}`));
      expect(byRule['ghcr.io/acme/plain:1.0']?.state).toBe('incomplete');
      expect(byRule['ghcr.io/acme/plain:1.0']?.siteSignatures?.[0]?.reason).toMatch(/no upstream signature/);
      expect(byRule['ghcr.io/acme/forged:1.0']?.siteSignatures?.[0]?.reason).toMatch(/does not|no upstream signature verifies/);
      expect(report.ready).toBe(false);
    } finally {
      await a.close();
    }
  });

  it('a new site key: readiness says "not signed yet" until a signing run, which adds the new signatures', async () => {
    const next = newKey();
    await writeFile(join(dir, 'next.key'), next.privatePem, { mode: 0o600 });
    const { app: a, url } = await app('never');
    try {
      const signing = a.config.signing;
      if (!signing) throw new Error('signing is configured above');
      const signer = await SiteSigner.open(a.store, { ...signing, key: join(dir, 'next.key') });
      const rules = a.allowlist.list().map((r) => r.rule);
      const before = await coverageReport(a.store, rules, { signer });
      const multi = before.rules.find((r) => r.rule === 'ghcr.io/acme/multi:2.0')?.images[0];
      expect(multi?.siteSignatures?.map((x) => x.reason)).toEqual(Array(3).fill('not signed yet: run `sluice sign` (or a sync or import, which sign)'));
      const report = await signImages(signer, a.store, await admittedImages(a.store, rules));
      expect(report).toMatchObject({ signed: 5, kept: 0 });
      const after = await coverageReport(a.store, rules, { signer });
      expect(after.rules.find((r) => r.rule === 'ghcr.io/acme/multi:2.0')?.images[0]?.siteSignatures?.every((x) => x.signed)).toBe(true);
      // The nodes trusting the new key find it by every route; the old key's referrer is still listed beside it.
      const refs = JSON.parse((await get(url, `/v2/acme/app/referrers/${signed.digest}`)).body.toString()) as Doc;
      expect((refs.manifests ?? []).map((d) => d.annotations?.['dev.sluice.site-signature.key']).sort()).toEqual([next.id, site.id].sort());
      const sig = JSON.parse((await get(url, `/v2/acme/app/manifests/sha256-${hexOf(signed.digest)}.sig`)).body.toString()) as Doc;
      const payloads = await Promise.all((sig.layers ?? []).map(async (l) => verifyLegacyLayer((await get(url, `/v2/acme/app/blobs/${l.digest}`)).body, l.annotations?.[COSIGN_SIGNATURE] ?? '', signed.digest, next.publicPem)));
      expect(payloads).toEqual([false, true]);
    } finally {
      await a.close();
    }
  });

  it('sluice import on the far side verifies the vendor signatures carried in a bundle and signs with its own key', async () => {
    const { app: a } = await app('never');
    const bundle = join(dir, 'bundle');
    try {
      await exportBundle(a.store, { out: bundle, format: 'dir', rules: a.allowlist.list().map((r) => parseRule(r.rule)), explicitRules: false });
    } finally {
      await a.close();
    }
    const far = newKey();
    await writeFile(join(dir, 'far.key'), far.privatePem, { mode: 0o600 });
    await writeFile(join(dir, 'far.yaml'), sluiceConfigYaml('./far-data', {
      allowlist: ['ghcr.io/acme/app:1.0', 'ghcr.io/acme/multi:2.0', 'ghcr.io/acme/plain:1.0', 'ghcr.io/acme/forged:1.0', 'ghcr.io/acme/keyless:1.0'],
      extra: {
        signing: {
          key: './far.key', trustedRoot: './trusted_root.json',
          rules: [
            { image: 'ghcr.io/acme/keyless', keyless: { issuer: releaser.issuer, subject: releaser.subject } },
            { image: 'ghcr.io/acme/*', publicKey: { certificate: vendor.publicPem } },
          ],
        },
      },
    }));
    const r = await runSluice(['import', bundle, '--config', join(dir, 'far.yaml')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/site signatures: 5 made, 0 kept, 2 left unsigned/);
    expect(r.stderr).toMatch(/not site-signed ghcr\.io\/acme\/plain:1\.0 .*no upstream signature/);
    expect(r.stderr).toMatch(/not site-signed ghcr\.io\/acme\/forged:1\.0 .*no upstream signature verifies/);
  });
});
