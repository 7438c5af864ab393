// Verifies the upstream's own signatures of an image, as stored by sync or import (sigstore bundles as referrers
// or under the `sha256-<hex>` tag, cosign's legacy `.sig` layers), against the `signing.rules`, offline, with the
// sigstore project's verifier (@sigstore/verify). A publicKey rule checks as Talos's does (tlog ignored); a keyless
// rule checks certificate, SCT, transparency-log promise and identity against the operator's trusted root (keyless.ts).
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { bundleFromJSON, type Bundle } from '@sigstore/bundle';
import { toSignedEntity, Verifier, type TrustMaterial } from '@sigstore/verify';
import type { SigningRule } from '../config/config.js';
import { isIndexType, type Descriptor } from '../oci/manifest.js';
import { BUNDLE_MEDIA_TYPE, COSIGN_CERTIFICATE_ANNOTATION, isBundleType, listed, COSIGN_REKOR_BUNDLE_ANNOTATION, COSIGN_SIGNATURE_ANNOTATION, manifestAnnotations, siteKeyOf } from '../oci/site-signature.js';
import { checkKeylessBundle, legacyKeylessBundle, type KeylessTrust } from './keyless.js';
import type { Store } from '../store/store.js';

/** Talos reads bundles and payloads up to 1 MiB; nothing larger is read here either. */
const MAX_SIGNATURE_BYTES = 1024 * 1024;

export type SignatureStore = Pick<Store, 'getManifest' | 'getTag' | 'referrers' | 'readBlob' | 'stat'>;

export type Verification =
  | { verified: true; rule: string; via: string }
  | { verified: false; reason: string };

/** Talos's rule matcher: the first rule whose `image` glob (`*` = any characters) matches `host/name`. */
export function matchingRule(rules: readonly SigningRule[], host: string, name: string): SigningRule | undefined {
  const ref = `${host}/${name}`;
  return rules.find((r) => new RegExp(`^${r.image.split('*').map(escapeRegExp).join('.*')}$`).test(ref));
}

const escapeRegExp = (s: string): string => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');

export const describeRule = (r: SigningRule): string => `${r.publicKey ? 'publicKey' : 'keyless'} rule ${r.image}`;

/** How one rule checks a bundle (the artifact is what a message signature signs); undefined when it verifies. */
type BundleCheck = (bundle: Bundle, artifact: Buffer | undefined) => string | undefined;

/** Whether one of the image's stored upstream signatures verifies against the rule `rules` give its repository. */
export async function verifyUpstream(
  store: SignatureStore, rules: readonly SigningRule[], host: string, name: string, digest: string, trust?: KeylessTrust,
): Promise<Verification> {
  const rule = matchingRule(rules, host, name);
  if (!rule) return { verified: false, reason: `no signing rule matches ${host}/${name}` };
  const manifest = await store.getManifest(digest);
  if (!manifest) return { verified: false, reason: `${digest} is not stored` };
  const check = bundleCheck(rule, trust);
  if (typeof check === 'string') return { verified: false, reason: `${describeRule(rule)}: ${check}` };
  const candidates = await collect(store, host, name, digest);
  if (candidates.length === 0) return { verified: false, reason: `no upstream signature of ${digest} is stored (sync it in a window, or import it with its signatures)` };
  const failures: string[] = [];
  for (const c of candidates) {
    const why = c.kind === 'bundle' ? checkBundle(c.bytes, check, manifest.body, digest) : checkLegacy(c, check, rule.keyless !== undefined, digest);
    if (why === undefined) return { verified: true, rule: describeRule(rule), via: `${c.where} ${c.digest}` };
    failures.push(`${c.where} ${c.digest.slice(0, 19)}…: ${why}`);
  }
  return { verified: false, reason: `no upstream signature verifies against ${describeRule(rule)} (${failures.join('; ')})` };
}

/** The rule's check, or why it cannot be made. */
function bundleCheck(rule: SigningRule, trust: KeylessTrust | undefined): BundleCheck | string {
  if (rule.publicKey) {
    const verifier = keyVerifier(createPublicKey(rule.publicKey.certificate));
    return (bundle, artifact) => {
      // As a publicKey rule in Talos (cosign CheckOpts IgnoreTlog): transparency-log entries are not required or read.
      try {
        verifier.verify({ ...toSignedEntity(bundle, artifact), tlogEntries: [], timestamps: [] });
        return undefined;
      } catch (e) {
        return (e as Error).message;
      }
    };
  }
  const keyless = rule.keyless;
  if (!keyless) return 'the rule has neither publicKey nor keyless';
  if (!trust) return 'keyless rules need signing.trustedRoot (the trusted_root.json carried across)';
  return (bundle, artifact) => checkKeylessBundle(trust, keyless, bundle, artifact);
}

type Candidate =
  | { kind: 'bundle'; where: string; digest: string; bytes: Buffer }
  | { kind: 'legacy'; where: string; digest: string; bytes: Buffer; signature: string; annotations: Record<string, string> };

/** Every stored upstream signature of `digest`; what sluice signed itself is skipped. */
async function collect(store: SignatureStore, host: string, name: string, digest: string): Promise<Candidate[]> {
  const out: Candidate[] = [];
  const hex = digest.slice('sha256:'.length);
  const bundleManifests: Descriptor[] = (await store.referrers(host, name, digest)).filter((d) => isBundleType(d.artifactType) && !siteKeyOf(d.annotations));
  const tagged = await store.getTag(host, name, `sha256-${hex}`);
  const tagManifest = tagged ? await store.getManifest(tagged) : undefined;
  if (tagManifest && !siteKeyOf(manifestAnnotations(tagManifest.body))) {
    if (isIndexType(tagManifest.mediaType)) bundleManifests.push(...listed(tagManifest.body, 'manifests'));
    else bundleManifests.push({ mediaType: tagManifest.mediaType, digest: tagManifest.digest, size: tagManifest.body.length });
  }
  for (const d of unique(bundleManifests)) {
    const m = await store.getManifest(d.digest);
    for (const layer of listed(m?.body, 'layers')) {
      if (!isBundleType(layer.mediaType)) continue;
      const bytes = await readSmall(store, layer.digest);
      if (bytes) out.push({ kind: 'bundle', where: 'bundle', digest: d.digest, bytes });
    }
  }
  const sig = await store.getTag(host, name, `sha256-${hex}.sig`);
  const sigManifest = sig ? await store.getManifest(sig) : undefined;
  for (const layer of listed(sigManifest?.body, 'layers')) {
    const signature = layer.annotations?.[COSIGN_SIGNATURE_ANNOTATION];
    if (typeof signature !== 'string' || siteKeyOf(layer.annotations)) continue;
    const bytes = await readSmall(store, layer.digest);
    if (bytes) out.push({ kind: 'legacy', where: 'legacy .sig layer', digest: layer.digest, bytes, signature, annotations: layer.annotations ?? {} });
  }
  return out;
}

function unique(ds: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  return ds.filter((d) => !seen.has(d.digest) && seen.add(d.digest));
}

async function readSmall(store: SignatureStore, digest: string): Promise<Buffer | undefined> {
  const s = await store.stat(digest);
  if (!s || s.sizeBytes > MAX_SIGNATURE_BYTES) return undefined;
  return store.readBlob(digest);
}

/** A verifier trusting exactly `key`, whatever hint a bundle names (a publicKey rule names the key itself). */
function keyVerifier(key: KeyObject): Verifier {
  const trust: TrustMaterial = {
    certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [],
    publicKey: () => ({ publicKey: key, validFor: () => true }),
  };
  return new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
}

/** Undefined when the bundle verifies for the image `digest`; else why not. */
function checkBundle(bytes: Buffer, check: BundleCheck, manifestBody: Buffer, digest: string): string | undefined {
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(JSON.parse(bytes.toString('utf8')));
  } catch (e) {
    return `not a sigstore bundle (${(e as Error).message})`;
  }
  if (bundle.mediaType !== BUNDLE_MEDIA_TYPE) return `bundle version ${bundle.mediaType} is older than v0.3`;
  const content = bundle.content;
  if (content.$case === 'messageSignature') {
    const d = content.messageSignature.messageDigest;
    if (!d || Buffer.from(d.digest).toString('hex') !== digest.slice('sha256:'.length)) return 'signs another digest';
  }
  const why = check(bundle, content.$case === 'messageSignature' ? manifestBody : undefined);
  if (why !== undefined) return why;
  if (content.$case === 'dsseEnvelope' && !statementNames(Buffer.from(content.dsseEnvelope.payload), digest)) return 'its in-toto statement does not name this digest';
  return undefined;
}

function statementNames(payload: Buffer, digest: string): boolean {
  try {
    const doc = JSON.parse(payload.toString('utf8')) as { subject?: Array<{ digest?: { sha256?: string } }> };
    return (doc.subject ?? []).some((s) => s.digest?.sha256 === digest.slice('sha256:'.length));
  } catch {
    return false;
  }
}

/** cosign's legacy form: the signature is over the simple signing payload, which must name the image digest. */
function checkLegacy(c: Extract<Candidate, { kind: 'legacy' }>, check: BundleCheck, keyless: boolean, digest: string): string | undefined {
  let named: unknown;
  try {
    named = (JSON.parse(c.bytes.toString('utf8')) as { critical?: { image?: Record<string, unknown> } }).critical?.image?.['docker-manifest-digest'];
  } catch {
    return 'its payload is not JSON';
  }
  if (named !== digest) return 'its payload signs another digest';
  const certificate = c.annotations[COSIGN_CERTIFICATE_ANNOTATION];
  if (keyless) {
    if (certificate === undefined) return 'it has no certificate (signed with a key, not keyless)';
    const bundle = legacyKeylessBundle(c.bytes, c.signature, certificate, c.annotations[COSIGN_REKOR_BUNDLE_ANNOTATION]);
    return bundle ? check(bundle, c.bytes) : 'it has no readable transparency-log bundle (dev.sigstore.cosign/bundle)';
  }
  const bundle = bundleFromJSON({
    mediaType: BUNDLE_MEDIA_TYPE,
    verificationMaterial: { publicKey: { hint: '' }, tlogEntries: [], timestampVerificationData: { rfc3161Timestamps: [] } },
    messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: createHash('sha256').update(c.bytes).digest('base64') }, signature: c.signature },
  });
  return check(bundle, c.bytes);
}
