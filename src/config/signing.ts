// `signing:` — the site key sluice signs admitted images with, when to sign (policy), and the rules upstream
// signatures are verified against, written like Talos's ImageVerificationConfig rules (image, publicKey, keyless).
import { createPublicKey } from 'node:crypto';
import { isObject, str } from './values.js';

export type SigningPolicy = 'verified' | 'allowlist';

export interface SigningRule {
  /** Glob over `host/name` (`*` matches any run of characters, `/` included, as Talos's rule matcher). */
  image: string;
  publicKey?: { certificate: string };
  keyless?: { issuer: string; subject?: string; subjectRegex?: string };
}

export interface SigningConfig {
  /** PEM file of the site's ECDSA P-256 private key (`sluice signing init` writes it). */
  key: string;
  policy: SigningPolicy;
  rules: SigningRule[];
  /** Sigstore `trusted_root.json` carried across, for keyless rules. */
  trustedRoot?: string;
}

const RULE_KEYS = ['image', 'publicKey', 'keyless'];

export function parseSigning(v: unknown, p: string[], path: (s: string) => string): SigningConfig | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v)) {
    p.push('signing: must be a mapping with at least key');
    return undefined;
  }
  for (const k of Object.keys(v)) if (!['key', 'policy', 'rules', 'trustedRoot'].includes(k)) p.push(`signing.${k}: unknown key`);
  const policy = v.policy ?? 'verified';
  if (policy !== 'verified' && policy !== 'allowlist') p.push(`signing.policy: must be verified or allowlist, not ${JSON.stringify(policy)}`);
  const rules = parseRules(v.rules ?? [], p);
  if (policy === 'verified' && rules.length === 0 && !p.some((x) => x.startsWith('signing.rules'))) {
    p.push('signing.rules: policy verified (the default) signs only images whose upstream signature verifies against a rule: give at least one, or policy: allowlist');
  }
  const out: SigningConfig = { key: path(str(v.key, 'signing.key', p)), policy: policy === 'allowlist' ? 'allowlist' : 'verified', rules };
  if (v.trustedRoot !== undefined) out.trustedRoot = path(str(v.trustedRoot, 'signing.trustedRoot', p));
  if (rules.some((r) => r.keyless) && out.trustedRoot === undefined) p.push('signing.trustedRoot: keyless rules are verified offline against a sigstore trusted_root.json: give its path');
  return out;
}

function parseRules(v: unknown, p: string[]): SigningRule[] {
  if (!Array.isArray(v)) {
    p.push('signing.rules: must be a list of { image, publicKey | keyless }');
    return [];
  }
  return v.flatMap((r: unknown, i) => {
    const at = `signing.rules[${i}]`;
    if (!isObject(r)) {
      p.push(`${at}: must be a mapping with image and publicKey or keyless`);
      return [];
    }
    for (const k of Object.keys(r)) if (!RULE_KEYS.includes(k)) p.push(`${at}.${k}: unknown key`);
    const rule: SigningRule = { image: str(r.image, `${at}.image`, p) };
    if ((r.publicKey === undefined) === (r.keyless === undefined)) p.push(`${at}: give exactly one of publicKey or keyless`);
    if (r.publicKey !== undefined) rule.publicKey = { certificate: publicKeyPem(r.publicKey, `${at}.publicKey`, p) };
    if (r.keyless !== undefined) rule.keyless = keyless(r.keyless, `${at}.keyless`, p);
    return [rule];
  });
}

function publicKeyPem(v: unknown, at: string, p: string[]): string {
  if (!isObject(v)) {
    p.push(`${at}: must be a mapping with certificate (a PEM public key)`);
    return '';
  }
  const pem = str(v.certificate, `${at}.certificate`, p);
  if (!pem) return '';
  try {
    createPublicKey(pem);
  } catch (e) {
    p.push(`${at}.certificate: not a PEM public key or certificate (${(e as Error).message})`);
  }
  return pem;
}

function keyless(v: unknown, at: string, p: string[]): SigningRule['keyless'] {
  if (!isObject(v)) {
    p.push(`${at}: must be a mapping with issuer and subject or subjectRegex`);
    return undefined;
  }
  const out: NonNullable<SigningRule['keyless']> = { issuer: str(v.issuer, `${at}.issuer`, p) };
  if (typeof v.subject === 'string') out.subject = v.subject;
  if (typeof v.subjectRegex === 'string') {
    out.subjectRegex = v.subjectRegex;
    try {
      new RegExp(v.subjectRegex);
    } catch (e) {
      p.push(`${at}.subjectRegex: ${(e as Error).message}`);
    }
  }
  if (out.subject === undefined && out.subjectRegex === undefined) p.push(`${at}: give subject or subjectRegex`);
  return out;
}
