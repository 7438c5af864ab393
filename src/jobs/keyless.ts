// Keyless rules, offline: a vendor signature made with a short-lived certificate verifies when the certificate chains
// to a CA of the operator's `trusted_root.json`, carries an SCT of one of its CT logs, the signature is in one of its
// transparency logs (signed entry timestamp), and the certificate names the rule's issuer and subject — all checked
// by @sigstore/verify, as the sigstore clients do; nothing is fetched.
import { readFile } from 'node:fs/promises';
import { createHash, X509Certificate } from 'node:crypto';
import { bundleFromJSON, type Bundle } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { toSignedEntity, toTrustMaterial, Verifier, type VerificationPolicy } from '@sigstore/verify';
import type { SigningRule } from '../config/config.js';
import { SiteKeyError } from './site-key.js';

/** The operator's trust root, read once per signing run. */
export interface KeylessTrust {
  verifier: Verifier;
}

export async function loadTrustedRoot(file: string): Promise<KeylessTrust> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new SiteKeyError(`signing.trustedRoot ${file} cannot be read as JSON (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return { verifier: new Verifier(toTrustMaterial(TrustedRoot.fromJSON(json))) };
  } catch (e) {
    throw new SiteKeyError(`signing.trustedRoot ${file} is not a sigstore trusted root (${(e as Error).message})`);
  }
}

type Keyless = NonNullable<SigningRule['keyless']>;

/** Verifies a parsed bundle for `artifact`; undefined when it verifies and names the rule's identity, else why not. */
export function checkKeylessBundle(trust: KeylessTrust, rule: Keyless, bundle: Bundle, artifact: Buffer | undefined): string | undefined {
  const policy: VerificationPolicy = { extensions: { issuer: rule.issuer }, ...(rule.subject !== undefined ? { subjectAlternativeName: rule.subject } : {}) };
  let san: string | undefined;
  try {
    san = trust.verifier.verify(toSignedEntity(bundle, artifact), policy).identity?.subjectAlternativeName;
  } catch (e) {
    return (e as Error).message;
  }
  // cosign's --certificate-identity-regexp (and Talos's subjectRegex) is an unanchored Go regexp match.
  if (rule.subjectRegex !== undefined && !new RegExp(rule.subjectRegex).test(san ?? '')) return `certificate subject ${san ?? '(none)'} does not match ${rule.subjectRegex}`;
  return undefined;
}

/** The Rekor bundle cosign puts in a legacy layer's `dev.sigstore.cosign/bundle` annotation. */
interface RekorBundle {
  SignedEntryTimestamp?: string;
  Payload?: { body?: string; integratedTime?: number; logIndex?: number; logID?: string };
}

/**
 * cosign's legacy keyless layer as a v0.1 sigstore bundle: the certificate annotation as verification material,
 * the Rekor bundle annotation as a transparency-log entry with its inclusion promise, the layer's signature over the
 * payload as the message signature. Undefined when an annotation is missing or malformed.
 */
export function legacyKeylessBundle(payload: Buffer, signatureB64: string, certificatePem: string, rekorJson: string | undefined): Bundle | undefined {
  if (rekorJson === undefined) return undefined;
  try {
    const rekor = JSON.parse(rekorJson) as RekorBundle;
    const p = rekor.Payload;
    if (!p?.body || p.integratedTime === undefined || p.logIndex === undefined || !p.logID || !rekor.SignedEntryTimestamp) return undefined;
    const body = JSON.parse(Buffer.from(p.body, 'base64').toString('utf8')) as { kind?: string; apiVersion?: string };
    return bundleFromJSON({
      mediaType: 'application/vnd.dev.sigstore.bundle+json;version=0.1',
      verificationMaterial: {
        x509CertificateChain: { certificates: [{ rawBytes: new X509Certificate(certificatePem).raw.toString('base64') }] },
        tlogEntries: [{
          logIndex: String(p.logIndex),
          logId: { keyId: Buffer.from(p.logID, 'hex').toString('base64') },
          kindVersion: { kind: body.kind ?? '', version: body.apiVersion ?? '' },
          integratedTime: String(p.integratedTime),
          inclusionPromise: { signedEntryTimestamp: rekor.SignedEntryTimestamp },
          canonicalizedBody: p.body,
        }],
      },
      messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: createHash('sha256').update(payload).digest('base64') }, signature: signatureB64 },
    });
  } catch {
    return undefined;
  }
}
