// The `verified` policy's check of the vendor's own signatures in the store: sigstore bundles attached as OCI
// referrers (message signature over the manifest, or a DSSE in-toto statement naming the digest) and under the
// `sha256-<hex>` tag, against publicKey rules — each made here with the test's own keys, checked by @sigstore/verify.
import { createHash, sign } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { openStore } from '../../src/store/open.js';
import { verifyUpstream } from '../../src/jobs/upstream-signatures.js';
import { BUNDLE_V03, newKey, SIMPLE_SIGNING, type TestKey } from '../helpers/cosign.js';
import { TestTrustRoot } from '../helpers/test-trust-root.js';
import { loadTrustedRoot } from '../../src/jobs/keyless.js';
import { writeFile } from 'node:fs/promises';
import { MediaType, sha256 } from '../kit/oci.js';

const HOST = 'ghcr.io';
const b64 = (b: Buffer): string => b.toString('base64');

function messageBundle(key: TestKey, artifact: Buffer): Buffer {
  return Buffer.from(JSON.stringify({
    mediaType: BUNDLE_V03,
    verificationMaterial: { publicKey: { hint: 'vendor' }, tlogEntries: [] },
    messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: b64(createHash('sha256').update(artifact).digest()) }, signature: b64(sign('sha256', artifact, key.privateKey)) },
  }));
}

function dsseBundle(key: TestKey, digest: string): Buffer {
  const payloadType = 'application/vnd.in-toto+json';
  const payload = Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', subject: [{ name: 'image', digest: { sha256: digest.slice(7) } }], predicateType: 'https://sigstore.dev/cosign/sign/v1', predicate: {} }));
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${payloadType.length} ${payloadType} ${payload.length} `), payload]);
  return Buffer.from(JSON.stringify({
    mediaType: BUNDLE_V03,
    verificationMaterial: { publicKey: { hint: 'vendor' }, tlogEntries: [] },
    dsseEnvelope: { payload: b64(payload), payloadType, signatures: [{ sig: b64(sign('sha256', pae, key.privateKey)), keyid: '' }] },
  }));
}

describe('verifying the vendor signature against publicKey rules', () => {
  let dir: string;
  let store: Store;
  const vendor = newKey();
  const other = newKey();
  const rules = [{ image: 'ghcr.io/vendor/*', publicKey: { certificate: vendor.publicPem } }];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-upsig-'));
    store = await openStore({ storage: join(dir, 'data') });
  });
  afterAll(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function image(name: string, seed: string): Promise<{ digest: string; body: Buffer }> {
    const config = Buffer.from(JSON.stringify({ seed }));
    await store.putBlob(config);
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length }, layers: [] }));
    const m = await store.putManifest(body, MediaType.ociManifest);
    await store.linkManifest(HOST, name, m);
    return { digest: m.digest, body };
  }

  /** A bundle manifest; a referrer of `subject` when given, else tagged `sha256-<hex>` of `tagFor`. */
  async function attach(name: string, bundle: Buffer, subject: { digest: string; body: Buffer }, how: 'referrer' | 'tag'): Promise<void> {
    const empty = Buffer.from('{}');
    await store.putBlob(empty);
    await store.putBlob(bundle);
    const doc = {
      schemaVersion: 2, mediaType: MediaType.ociManifest, artifactType: BUNDLE_V03,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(empty), size: 2 },
      layers: [{ mediaType: BUNDLE_V03, digest: sha256(bundle), size: bundle.length }],
      ...(how === 'referrer' ? { subject: { mediaType: MediaType.ociManifest, digest: subject.digest, size: subject.body.length } } : {}),
    };
    const m = await store.putManifest(Buffer.from(JSON.stringify(doc)), MediaType.ociManifest);
    await store.linkManifest(HOST, name, m);
    if (how === 'tag') await store.setTag(HOST, name, `sha256-${subject.digest.slice(7)}`, m.digest);
  }

  it('a message-signature bundle referrer over the manifest verifies; one by another key does not', async () => {
    const good = await image('vendor/a', 'a');
    await attach('vendor/a', messageBundle(vendor, good.body), good, 'referrer');
    expect(await verifyUpstream(store, rules, HOST, 'vendor/a', good.digest)).toMatchObject({ verified: true, rule: 'publicKey rule ghcr.io/vendor/*', via: expect.stringMatching(/^bundle sha256:/) });
    const bad = await image('vendor/b', 'b');
    await attach('vendor/b', messageBundle(other, bad.body), bad, 'referrer');
    expect(await verifyUpstream(store, rules, HOST, 'vendor/b', bad.digest)).toMatchObject({ verified: false, reason: expect.stringMatching(/no upstream signature verifies .*signature verification failed/) });
  });

  it('a bundle signing another manifest does not verify this one', async () => {
    const target = await image('vendor/c', 'c');
    const elsewhere = await image('vendor/c', 'elsewhere');
    await attach('vendor/c', messageBundle(vendor, elsewhere.body), target, 'referrer');
    expect(await verifyUpstream(store, rules, HOST, 'vendor/c', target.digest)).toMatchObject({ verified: false, reason: expect.stringMatching(/signs another digest/) });
  });

  it('a DSSE bundle under the sha256-<hex> tag verifies when its statement names the digest', async () => {
    const good = await image('vendor/d', 'd');
    await attach('vendor/d', dsseBundle(vendor, good.digest), good, 'tag');
    expect(await verifyUpstream(store, rules, HOST, 'vendor/d', good.digest)).toMatchObject({ verified: true });
    const wrong = await image('vendor/e', 'e');
    await attach('vendor/e', dsseBundle(vendor, good.digest), wrong, 'tag');
    expect(await verifyUpstream(store, rules, HOST, 'vendor/e', wrong.digest)).toMatchObject({ verified: false, reason: expect.stringMatching(/statement does not name this digest/) });
  });

  it('an image no rule covers, or with no stored signature, is named with the reason', async () => {
    const lone = await image('vendor/f', 'f');
    expect(await verifyUpstream(store, rules, HOST, 'vendor/f', lone.digest)).toMatchObject({ verified: false, reason: expect.stringMatching(/no upstream signature of sha256:.* is stored/) });
    expect(await verifyUpstream(store, rules, HOST, 'elsewhere/f', lone.digest)).toEqual({ verified: false, reason: 'no signing rule matches ghcr.io/elsewhere/f' });
  });

  describe('keyless rules, offline against the operator\'s trusted_root.json', () => {
    const root = new TestTrustRoot();
    const stranger = new TestTrustRoot();
    const who = { subject: 'release@vendor.example', issuer: 'https://accounts.vendor.example' };
    const keyless = (k: { subject?: string; subjectRegex?: string; issuer?: string }): Array<{ image: string; keyless: { issuer: string; subject?: string; subjectRegex?: string } }> =>
      [{ image: 'ghcr.io/vendor/*', keyless: { issuer: k.issuer ?? who.issuer, ...(k.subject !== undefined ? { subject: k.subject } : {}), ...(k.subjectRegex !== undefined ? { subjectRegex: k.subjectRegex } : {}) } }];

    /** A legacy `.sig` of `digest` whose one layer is `layer` (payload + cosign annotations). */
    async function legacy(name: string, digest: string, layer: { payload: Buffer; annotations: Record<string, string> }): Promise<void> {
      await store.putBlob(layer.payload);
      const config = Buffer.from('{}');
      await store.putBlob(config);
      const body = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length },
        layers: [{ mediaType: SIMPLE_SIGNING, digest: sha256(layer.payload), size: layer.payload.length, annotations: layer.annotations }],
      }));
      const m = await store.putManifest(body, MediaType.ociManifest);
      await store.linkManifest(HOST, name, m);
      await store.setTag(HOST, name, `sha256-${digest.slice(7)}.sig`, m.digest);
    }

    it('a cosign keyless signature verifies: chain, SCT, Rekor promise, issuer and subject (or subject regex)', async () => {
      const file = join(dir, 'trusted_root.json');
      await writeFile(file, root.json());
      const trust = await loadTrustedRoot(file);
      const img = await image('vendor/k', 'k');
      await legacy('vendor/k', img.digest, root.legacyLayer(who, `ghcr.io/vendor/k`, img.digest));
      expect(await verifyUpstream(store, keyless({ subject: who.subject }), HOST, 'vendor/k', img.digest, trust)).toMatchObject({ verified: true, rule: 'keyless rule ghcr.io/vendor/*' });
      expect(await verifyUpstream(store, keyless({ subjectRegex: '@vendor\\.example$' }), HOST, 'vendor/k', img.digest, trust)).toMatchObject({ verified: true });
      expect(await verifyUpstream(store, keyless({ subject: 'someone@else.example' }), HOST, 'vendor/k', img.digest, trust)).toMatchObject({ verified: false });
      expect(await verifyUpstream(store, keyless({ subjectRegex: '@else\\.example$' }), HOST, 'vendor/k', img.digest, trust)).toMatchObject({ verified: false, reason: expect.stringMatching(/does not match/) });
      expect(await verifyUpstream(store, keyless({ subject: who.subject, issuer: 'https://other.issuer' }), HOST, 'vendor/k', img.digest, trust)).toMatchObject({ verified: false });
      expect(await verifyUpstream(store, keyless({ subject: who.subject }), HOST, 'vendor/k', img.digest)).toMatchObject({ verified: false, reason: expect.stringMatching(/need signing\.trustedRoot/) });
    });

    it('a certificate from another trust root, or a tampered transparency-log entry, does not verify', async () => {
      const file = join(dir, 'trusted_root.json');
      await writeFile(file, root.json());
      const trust = await loadTrustedRoot(file);
      const img = await image('vendor/s', 's');
      await legacy('vendor/s', img.digest, stranger.legacyLayer(who, 'ghcr.io/vendor/s', img.digest));
      expect(await verifyUpstream(store, keyless({ subject: who.subject }), HOST, 'vendor/s', img.digest, trust)).toMatchObject({ verified: false });
      const img2 = await image('vendor/t', 't');
      const layer = root.legacyLayer(who, 'ghcr.io/vendor/t', img2.digest);
      const rekor = JSON.parse(layer.annotations['dev.sigstore.cosign/bundle'] ?? '{}') as { Payload: { integratedTime: number } };
      rekor.Payload.integratedTime += 1;
      await legacy('vendor/t', img2.digest, { ...layer, annotations: { ...layer.annotations, 'dev.sigstore.cosign/bundle': JSON.stringify(rekor) } });
      expect(await verifyUpstream(store, keyless({ subject: who.subject }), HOST, 'vendor/t', img2.digest, trust)).toMatchObject({ verified: false, reason: expect.stringMatching(/inclusion promise/) });
    });
  });
});
