// `sluice talos patch`'s generator: each form parsed back as YAML and checked field by field against the Talos
// schema (machine.registries for v1alpha1; RegistryMirrorConfig / RegistryTLSConfig / RegistryAuthConfig for 1.12+).
import { describe, expect, test } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { lastCertificate, PatchInputError, renderPatch, type PatchInput } from '../../src/cli/talos-patch.js';

const CA = '-----BEGIN CERTIFICATE-----\nMIIBCA==\n-----END CERTIFICATE-----\n';
const CRT = '-----BEGIN CERTIFICATE-----\nMIIBNODE==\n-----END CERTIFICATE-----\n';
const KEY = '-----BEGIN PRIVATE KEY-----\nMIIEKEY==\n-----END PRIVATE KEY-----\n';
const b64 = (s: string): string => Buffer.from(s).toString('base64');

interface Case {
  name: string;
  input: PatchInput;
  /** Expected config entry of the legacy form (undefined: no machine.registries.config at all). */
  legacyConfig?: Record<string, unknown>;
  /** Expected documents after the RegistryMirrorConfig. */
  extraDocs: Array<Record<string, unknown>>;
}

const plain = new URL('http://10.5.0.1:6000');
const tls = new URL('https://sluice.lan:6000');
const CASES: Case[] = [
  { name: 'plain HTTP: the mirror alone', input: { endpoint: plain }, extraDocs: [] },
  {
    name: 'TLS: trust the CA',
    input: { endpoint: tls, caPem: CA },
    legacyConfig: { tls: { ca: b64(CA) } },
    extraDocs: [{ apiVersion: 'v1alpha1', kind: 'RegistryTLSConfig', name: 'sluice.lan:6000', ca: CA.trim() }],
  },
  {
    name: 'mTLS: CA and client identity',
    input: { endpoint: tls, caPem: CA, clientIdentity: { certPem: CRT, keyPem: KEY } },
    legacyConfig: { tls: { ca: b64(CA), clientIdentity: { crt: b64(CRT), key: b64(KEY) } } },
    extraDocs: [{ apiVersion: 'v1alpha1', kind: 'RegistryTLSConfig', name: 'sluice.lan:6000', ca: CA.trim(), clientIdentity: { cert: CRT.trim(), key: KEY.trim() } }],
  },
  {
    name: 'basic auth over TLS',
    input: { endpoint: tls, caPem: CA, auth: { username: 'node1', password: 'p: #"\'x' } },
    legacyConfig: { tls: { ca: b64(CA) }, auth: { username: 'node1', password: 'p: #"\'x' } },
    extraDocs: [
      { apiVersion: 'v1alpha1', kind: 'RegistryTLSConfig', name: 'sluice.lan:6000', ca: CA.trim() },
      { apiVersion: 'v1alpha1', kind: 'RegistryAuthConfig', name: 'sluice.lan:6000', username: 'node1', password: 'p: #"\'x' },
    ],
  },
  {
    name: 'default https port: the key is the bare host',
    input: { endpoint: new URL('https://mirror.example'), caPem: CA },
    legacyConfig: { tls: { ca: b64(CA) } },
    extraDocs: [{ apiVersion: 'v1alpha1', kind: 'RegistryTLSConfig', name: 'mirror.example', ca: CA.trim() }],
  },
];

describe('legacy form (machine.registries)', () => {
  test.each(CASES)('$name', ({ input, legacyConfig }) => {
    const doc = parse(renderPatch('legacy', input)) as { machine: { registries: Record<string, unknown> } };
    expect(Object.keys(doc)).toEqual(['machine']);
    const registries = doc.machine.registries;
    expect(registries.mirrors).toEqual({ '*': { endpoints: [input.endpoint.origin], skipFallback: true } });
    if (legacyConfig) expect(registries.config).toEqual({ [input.endpoint.host]: legacyConfig });
    else expect(registries).not.toHaveProperty('config');
  });
});

describe('documents form (Talos 1.12+)', () => {
  test.each(CASES)('$name', ({ input, extraDocs }) => {
    const docs = parseAllDocuments(renderPatch('documents', input));
    expect(docs.every((d) => d.errors.length === 0)).toBe(true);
    const values = docs.map((d) => d.toJS() as Record<string, unknown>);
    expect(values[0]).toEqual({ apiVersion: 'v1alpha1', kind: 'RegistryMirrorConfig', name: '*', endpoints: [{ url: input.endpoint.origin }], skipFallback: true });
    expect(values.slice(1)).toEqual(extraDocs);
  });
});

describe('refused inputs', () => {
  test.each([
    ['a path', { endpoint: new URL('https://sluice.lan:6000/v2/') }, /no path/],
    ['credentials in the URL', { endpoint: new URL('https://u:p@sluice.lan:6000') }, /credentials/],
    ['TLS over http', { endpoint: plain, caPem: CA }, /plain HTTP/],
    ['basic auth over http', { endpoint: plain, auth: { username: 'a', password: 'b' } }, /in clear/],
    ['not http', { endpoint: new URL('ftp://sluice.lan') }, /http/],
  ] as Array<[string, PatchInput, RegExp]>)('%s', (_name, input, message) => {
    for (const form of ['legacy', 'documents'] as const) expect(() => renderPatch(form, input)).toThrow(PatchInputError);
    expect(() => renderPatch('legacy', input)).toThrow(message);
  });
});

test('lastCertificate takes the top of a chain, and nothing from a file without one', () => {
  expect(lastCertificate(`${CRT}${CA}`)).toBe(CA);
  expect(lastCertificate(KEY)).toBeUndefined();
});
