// `signing:` in the config: key path resolved against the config folder, policy verified by default, rules written
// like Talos's ImageVerificationConfig (image + publicKey.certificate | keyless issuer/subject[Regex]), and every
// mistake named by its key path.
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../../src/config/config.js';
import { matchingRule } from '../../src/jobs/upstream-signatures.js';

const FILE = '/etc/sluice/sluice.yaml';
const base = { upstreams: { 'ghcr.io': { url: 'https://ghcr.io' } }, defaultUpstream: 'ghcr.io' };
const pem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();

function problems(signing: unknown): string[] {
  try {
    validateConfig({ ...base, signing }, FILE);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('signing config', () => {
  it('reads the key (relative to the config), the policy (verified by default) and publicKey rules', () => {
    const c = validateConfig({ ...base, signing: { key: './site.key', rules: [{ image: 'ghcr.io/siderolabs/*', publicKey: { certificate: pem } }] } }, FILE);
    expect(c.signing).toEqual({ key: '/etc/sluice/site.key', policy: 'verified', rules: [{ image: 'ghcr.io/siderolabs/*', publicKey: { certificate: pem } }] });
    expect(validateConfig({ ...base, signing: { key: '/k', policy: 'allowlist' } }, FILE).signing).toMatchObject({ policy: 'allowlist', rules: [] });
    expect(validateConfig(base, FILE).signing).toBeUndefined();
  });

  it('names every mistake with its key path', () => {
    expect(problems('yes')).toEqual(['signing: must be a mapping with at least key']);
    expect(problems({ policy: 'always', rules: [] })).toEqual([
      'signing.policy: must be verified or allowlist, not "always"',
      'signing.key: is required',
    ]);
    expect(problems({ key: './k' })).toEqual([expect.stringMatching(/^signing\.rules: policy verified .* give at least one, or policy: allowlist$/)]);
    expect(problems({ key: './k', rules: [{ image: 'a/*' }, { image: 'b/*', publicKey: { certificate: 'nope' } }, { publicKey: { certificate: pem }, keyless: { issuer: 'x', subject: 'y' }, extra: 1 }] })).toEqual([
      'signing.rules[0]: give exactly one of publicKey or keyless',
      expect.stringMatching(/^signing\.rules\[1\]\.publicKey\.certificate: not a PEM public key or certificate/),
      'signing.rules[2].extra: unknown key',
      'signing.rules[2].image: is required',
      'signing.rules[2]: give exactly one of publicKey or keyless',
      'signing.trustedRoot: keyless rules are verified offline against a sigstore trusted_root.json: give its path',
    ]);
    expect(problems({ key: './k', trustedRoot: './root.json', rules: [{ image: 'a/*', keyless: { issuer: 'https://i' } }, { image: 'b/*', keyless: { subject: 's', subjectRegex: '(' } }] })).toEqual([
      'signing.rules[0].keyless: give subject or subjectRegex',
      'signing.rules[1].keyless.issuer: is required',
      expect.stringMatching(/^signing\.rules\[1\]\.keyless\.subjectRegex: Invalid regular expression/),
    ]);
    expect(validateConfig({ ...base, signing: { key: './k', trustedRoot: './root.json', rules: [{ image: 'ghcr.io/*', keyless: { issuer: 'https://i', subjectRegex: '^x' } }] } }, FILE).signing)
      .toMatchObject({ trustedRoot: '/etc/sluice/root.json', rules: [{ image: 'ghcr.io/*', keyless: { issuer: 'https://i', subjectRegex: '^x' } }] });
  });

  it('matches rules as Talos does: the first whose image glob (* = any characters) matches host/name', () => {
    const rules = [{ image: 'ghcr.io/siderolabs/*', publicKey: { certificate: '1' } }, { image: '*', publicKey: { certificate: '2' } }];
    expect(matchingRule(rules, 'ghcr.io', 'siderolabs/kubelet')?.publicKey?.certificate).toBe('1');
    expect(matchingRule(rules, 'ghcr.io', 'siderolabs/deep/er')?.publicKey?.certificate).toBe('1');
    expect(matchingRule(rules, 'ghcr.io', 'other/x')?.publicKey?.certificate).toBe('2');
    expect(matchingRule(rules.slice(0, 1), 'docker.io', 'library/a.b')).toBeUndefined();
    expect(matchingRule([{ image: 'docker.io/library/a.b', publicKey: { certificate: '3' } }], 'docker.io', 'library/aXb')).toBeUndefined();
  });
});
