// Signatures as a vendor publishes them, made by the test with its own keys in cosign's published legacy format
// (simple signing payload layer + `dev.cosignproject.cosign/signature`), and the independent checks of what sluice
// signed: the sigstore project's verifier (@sigstore/verify) for bundles, cosign's format rules for `.sig` layers.
import { createHash, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { bundleFromJSON } from '@sigstore/bundle';
import { toSignedEntity, Verifier, type TrustMaterial } from '@sigstore/verify';
import { MediaType, sha256 } from '../kit/oci.js';

export const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE = 'dev.cosignproject.cosign/signature';
export const BUNDLE_V03 = 'application/vnd.dev.sigstore.bundle.v0.3+json';

export interface TestKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  privatePem: string;
  publicPem: string;
  /** sha256 of the DER SubjectPublicKeyInfo, hex. */
  id: string;
}

export function newKey(): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privateKey, publicKey,
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    id: createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex'),
  };
}

export const payloadFor = (ref: string, digest: string): Buffer => Buffer.from(JSON.stringify({
  critical: { identity: { 'docker-reference': ref }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' },
  optional: null,
}));

/** A legacy cosign `.sig` image signed by `key`: the manifest and the blobs it names. */
export function legacySignature(key: TestKey, ref: string, digest: string): { manifest: Buffer; blobs: Buffer[] } {
  const payload = payloadFor(ref, digest);
  const signature = sign('sha256', payload, key.privateKey).toString('base64');
  const config = Buffer.from(JSON.stringify({ architecture: '', os: '', rootfs: { type: 'layers', diff_ids: [sha256(payload)] }, config: {} }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: SIMPLE_SIGNING, digest: sha256(payload), size: payload.length, annotations: { [COSIGN_SIGNATURE]: signature } }],
  }));
  return { manifest, blobs: [payload, config] };
}

/**
 * Verifies a sigstore bundle with @sigstore/verify trusting `key` under its hint (no tlog, no certificate), and
 * checks its message digest is `digest`, as Talos's verifier does with the image digest. Throws when it fails.
 */
export function verifyBundle(bundleJson: Buffer, artifact: Buffer, digest: string, key: TestKey): void {
  const bundle = bundleFromJSON(JSON.parse(bundleJson.toString('utf8')));
  if (bundle.verificationMaterial.content.$case !== 'publicKey') throw new Error('bundle has no public-key verification material');
  const trust: TrustMaterial = {
    certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [],
    publicKey: (hint) => {
      if (hint !== key.id) throw new Error(`unknown key hint ${hint}`);
      return { publicKey: key.publicKey, validFor: () => true };
    },
  };
  new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(toSignedEntity(bundle, artifact));
  if (bundle.content.$case !== 'messageSignature') throw new Error('not a message signature');
  const signed = Buffer.from(bundle.content.messageSignature.messageDigest?.digest ?? []).toString('hex');
  if (`sha256:${signed}` !== digest) throw new Error(`bundle signs sha256:${signed}, not ${digest}`);
}

/** cosign's legacy check: the payload names `digest` and the layer's signature verifies over the payload with `key`. */
export function verifyLegacyLayer(payload: Buffer, signatureB64: string, digest: string, publicPem: string): boolean {
  const doc = JSON.parse(payload.toString('utf8')) as { critical?: { type?: string; image?: Record<string, string> } };
  if (doc.critical?.type !== 'cosign container image signature' || doc.critical.image?.['docker-manifest-digest'] !== digest) return false;
  return verify('sha256', payload, createPublicKey(publicPem), Buffer.from(signatureB64, 'base64'));
}
