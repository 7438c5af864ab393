// The bytes of a site signature, pure: the sigstore bundle v0.3 (message signature, public-key hint) and its OCI
// referrer manifest, cosign's legacy `sha256-<hex>.sig` manifest (simple signing payload layers) and the
// `sha256-<hex>` index, in the forms Talos's verifier looks up (siderolabs/talos cosign.go). The caller signs.
import { createHash } from 'node:crypto';
import { isDescriptor, MediaType, parseManifest, type Descriptor } from './manifest.js';

export const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
/** Talos keeps referrers whose artifactType starts with this. */
export const BUNDLE_MEDIA_TYPE_PREFIX = 'application/vnd.dev.sigstore.bundle';
const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
/** cosign's layer annotation holding the base64 signature of the layer (the payload). */
export const COSIGN_SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const COSIGN_CERTIFICATE_ANNOTATION = 'dev.sigstore.cosign/certificate';
/** cosign's Rekor bundle (signed entry timestamp and entry) on a legacy layer. */
export const COSIGN_REKOR_BUNDLE_ANNOTATION = 'dev.sigstore.cosign/bundle';
const OCI_MANIFEST = MediaType.ociManifest;
const OCI_INDEX = MediaType.ociIndex;
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const EMPTY_MEDIA_TYPE = 'application/vnd.oci.empty.v1+json';
const EMPTY_BLOB = Buffer.from('{}');

/** Marks everything sluice signed with the site key (value: the key id), and what it records about why. */
export const SITE_KEY_ANNOTATION = 'dev.sluice.site-signature.key';
export const SITE_POLICY_ANNOTATION = 'dev.sluice.site-signature.policy';
export const SITE_VERIFIED_ANNOTATION = 'dev.sluice.site-signature.verified';

const sha256Digest = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
const descriptorOf = (mediaType: string, bytes: Buffer, annotations?: Record<string, string>): Descriptor => ({
  mediaType, digest: sha256Digest(bytes), size: bytes.length, ...(annotations ? { annotations } : {}),
});

/** A blob or manifest to store, with the descriptor that names it. */
export interface Part {
  descriptor: Descriptor;
  bytes: Buffer;
}

/** cosign's simple signing payload for an image (the legacy form signs these bytes, not the manifest). */
export function simpleSigningPayload(dockerReference: string, digest: string): Buffer {
  const doc = {
    critical: { identity: { 'docker-reference': dockerReference }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' },
    optional: null,
  };
  return Buffer.from(JSON.stringify(doc));
}

/**
 * A sigstore bundle v0.3 whose message signature is over the manifest bytes (so its messageDigest is the image
 * digest), verified by a public key named by `hint`; no certificate, no transparency-log entry.
 */
export function messageSignatureBundle(hint: string, digest: string, signature: Buffer): Buffer {
  const doc = {
    mediaType: BUNDLE_MEDIA_TYPE,
    verificationMaterial: { publicKey: { hint }, tlogEntries: [], timestampVerificationData: { rfc3161Timestamps: [] } },
    messageSignature: {
      messageDigest: { algorithm: 'SHA2_256', digest: Buffer.from(digest.slice('sha256:'.length), 'hex').toString('base64') },
      signature: signature.toString('base64'),
    },
  };
  return Buffer.from(JSON.stringify(doc));
}

/** The OCI referrer of `subject` carrying one bundle, as cosign attaches bundles (artifactType = bundle type). */
export function bundleReferrer(subject: Descriptor, bundle: Buffer, annotations: Record<string, string>): { manifest: Part; blobs: Part[] } {
  const layer = descriptorOf(BUNDLE_MEDIA_TYPE, bundle);
  const config = descriptorOf(EMPTY_MEDIA_TYPE, EMPTY_BLOB);
  const doc = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: BUNDLE_MEDIA_TYPE,
    config,
    layers: [layer],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { 'dev.sigstore.bundle.content': 'message-signature', ...annotations },
  };
  const bytes = Buffer.from(JSON.stringify(doc));
  return { manifest: { descriptor: descriptorOf(OCI_MANIFEST, bytes), bytes }, blobs: [{ descriptor: config, bytes: EMPTY_BLOB }, { descriptor: layer, bytes: bundle }] };
}

/** One legacy signature layer: the payload blob, its signature in cosign's annotation, marked as the site's. */
export function legacySignatureLayer(payload: Buffer, signature: Buffer, keyId: string): Part {
  return { descriptor: descriptorOf(SIMPLE_SIGNING_MEDIA_TYPE, payload, { [COSIGN_SIGNATURE_ANNOTATION]: signature.toString('base64'), [SITE_KEY_ANNOTATION]: keyId }), bytes: payload };
}

/**
 * cosign's `.sig` image: an OCI manifest (Talos accepts no other media type there) whose layers are the signatures,
 * the upstream's kept beside the site's, with the config cosign writes for it.
 */
export function legacySignatureManifest(layers: readonly Descriptor[], keyId: string): { manifest: Part; config: Part } {
  const configDoc = {
    architecture: '', created: '0001-01-01T00:00:00Z', history: layers.map(() => ({ created: '0001-01-01T00:00:00Z' })), os: '',
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }, config: {},
  };
  const configBytes = Buffer.from(JSON.stringify(configDoc));
  const config = descriptorOf(OCI_CONFIG, configBytes);
  const doc = { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers, annotations: { [SITE_KEY_ANNOTATION]: keyId } };
  const bytes = Buffer.from(JSON.stringify(doc));
  return { manifest: { descriptor: descriptorOf(OCI_MANIFEST, bytes), bytes }, config: { descriptor: config, bytes: configBytes } };
}

/** The `sha256-<hex>` tag's index: every bundle manifest of the image (Talos reads each one's bundle layers). */
export function bundleTagIndex(manifests: readonly Descriptor[], keyId: string): Part {
  const doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests, annotations: { [SITE_KEY_ANNOTATION]: keyId } };
  const bytes = Buffer.from(JSON.stringify(doc));
  return { descriptor: descriptorOf(OCI_INDEX, bytes), bytes };
}

/** The site key id a stored manifest or descriptor was marked with, if sluice made it. */
export function siteKeyOf(annotations: Record<string, string> | undefined): string | undefined {
  return annotations?.[SITE_KEY_ANNOTATION];
}

/** The top-level annotations of a manifest body, or undefined when it is not a JSON object. */
export function manifestAnnotations(body: Buffer): Record<string, string> | undefined {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { annotations?: unknown };
    const a = doc.annotations;
    return typeof a === 'object' && a !== null ? (a as Record<string, string>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The well-formed descriptors a manifest lists under `layers` or `manifests` (an upstream's JSON is not trusted to
 * have the shape it claims); empty for a body that is not a manifest.
 */
export function listed(body: Buffer | undefined, list: 'layers' | 'manifests'): Descriptor[] {
  const items: unknown = body ? parseManifest(body)?.[list] : undefined;
  return Array.isArray(items) ? items.filter(isDescriptor) : [];
}

/** Whether a descriptor names a sigstore bundle (Talos's prefix test), from its artifactType or media type. */
export const isBundleType = (t: unknown): boolean => typeof t === 'string' && t.startsWith(BUNDLE_MEDIA_TYPE_PREFIX);
