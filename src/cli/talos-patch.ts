// The Talos machine-config patch for the nodes of this mirror, as plain data in, YAML text out (pure): a '*'
// mirror with skipFallback, plus TLS trust, client identity and basic auth for the endpoint when sluice has them.
import { stringify } from 'yaml';

export type PatchForm = 'legacy' | 'documents';

export interface PatchInput {
  /** What the nodes dial, e.g. `https://sluice.lan:6000`. */
  endpoint: URL;
  /** PEM of the CA the nodes should trust for the endpoint (https only). */
  caPem?: string;
  /** The node's client certificate and key, PEM (sluice with tls.clientCA). */
  clientIdentity?: { certPem: string; keyPem: string };
  /** Basic-auth credentials (sluice with auth.htpasswd). */
  auth?: { username: string; password: string };
  /** The site public key (PEM): adds an ImageVerificationConfig whose one rule requires its signature on every image. */
  verifyPublicKeyPem?: string;
}

export class PatchInputError extends Error {}

/** `host:port` as Talos keys registry config by it: the endpoint URL's host part. */
export function endpointKey(endpoint: URL): string {
  return endpoint.host;
}

/** Checks what the two forms share: an http(s) URL with no path, and nothing TLS-only over plain HTTP. */
function check(input: PatchInput): void {
  const { endpoint } = input;
  if (endpoint.protocol !== 'https:' && endpoint.protocol !== 'http:') throw new PatchInputError(`endpoint ${endpoint.href} must be an http:// or https:// URL`);
  if (endpoint.pathname !== '/' || endpoint.search || endpoint.hash) throw new PatchInputError(`endpoint ${endpoint.href} must have no path: nodes add /v2/ themselves`);
  if (endpoint.username || endpoint.password) throw new PatchInputError('endpoint must not carry credentials; they go in the auth stanza');
  const plain = endpoint.protocol === 'http:';
  if (plain && (input.caPem || input.clientIdentity)) throw new PatchInputError(`endpoint ${endpoint.href} is plain HTTP, but TLS settings were given: use https://`);
  if (plain && input.auth) throw new PatchInputError(`endpoint ${endpoint.href} is plain HTTP: basic auth would send the password in clear`);
}

/** The endpoint URL as Talos wants it: origin only, no trailing slash. */
const endpointUrl = (u: URL): string => u.origin;

const b64 = (pem: string): string => Buffer.from(pem, 'utf8').toString('base64');

/** `machine.registries` (v1alpha1): PEM files as base64, one config entry keyed by the endpoint's host:port. */
export function legacyPatch(input: PatchInput): Record<string, unknown> {
  check(input);
  if (input.verifyPublicKeyPem) throw new PatchInputError('ImageVerificationConfig is a config document (Talos 1.13+): use --form documents with --verify');
  const config: Record<string, unknown> = {};
  const tls: Record<string, unknown> = {};
  if (input.caPem) tls.ca = b64(input.caPem);
  if (input.clientIdentity) tls.clientIdentity = { crt: b64(input.clientIdentity.certPem), key: b64(input.clientIdentity.keyPem) };
  if (Object.keys(tls).length > 0) config.tls = tls;
  if (input.auth) config.auth = { username: input.auth.username, password: input.auth.password };
  const registries: Record<string, unknown> = { mirrors: { '*': { endpoints: [endpointUrl(input.endpoint)], skipFallback: true } } };
  if (Object.keys(config).length > 0) registries.config = { [endpointKey(input.endpoint)]: config };
  return { machine: { registries } };
}

/** Talos 1.12+ documents: RegistryMirrorConfig, then RegistryTLSConfig and RegistryAuthConfig when needed, PEM as text. */
export function documentsPatch(input: PatchInput): Array<Record<string, unknown>> {
  check(input);
  const name = endpointKey(input.endpoint);
  const docs: Array<Record<string, unknown>> = [
    { apiVersion: 'v1alpha1', kind: 'RegistryMirrorConfig', name: '*', endpoints: [{ url: endpointUrl(input.endpoint) }], skipFallback: true },
  ];
  if (input.caPem || input.clientIdentity) {
    const tls: Record<string, unknown> = { apiVersion: 'v1alpha1', kind: 'RegistryTLSConfig', name };
    if (input.caPem) tls.ca = input.caPem.trim();
    if (input.clientIdentity) tls.clientIdentity = { cert: input.clientIdentity.certPem.trim(), key: input.clientIdentity.keyPem.trim() };
    docs.push(tls);
  }
  if (input.auth) docs.push({ apiVersion: 'v1alpha1', kind: 'RegistryAuthConfig', name, username: input.auth.username, password: input.auth.password });
  if (input.verifyPublicKeyPem) docs.push(imageVerificationConfig(input.verifyPublicKeyPem));
  return docs;
}

/**
 * Talos's ImageVerificationConfig (reference/configuration/security/imageverificationconfig): `rules[]` of
 * `image` (a glob over registry and repository; `*` matches every image) and `publicKey.certificate` (PEM). Every
 * image the nodes pull through sluice is admitted, so every one carries the site signature.
 */
export function imageVerificationConfig(publicKeyPem: string): Record<string, unknown> {
  return { apiVersion: 'v1alpha1', kind: 'ImageVerificationConfig', rules: [{ image: '*', publicKey: { certificate: publicKeyPem.trim() } }] };
}

/** The patch as YAML, ready for `talosctl patch mc --patch @file` (documents separated by `---`). */
export function renderPatch(form: PatchForm, input: PatchInput): string {
  const opts = { lineWidth: 0 };
  if (form === 'legacy') return stringify(legacyPatch(input), opts);
  return documentsPatch(input).map((d) => stringify(d, opts)).join('---\n');
}

/** The last certificate of a PEM bundle (a chain's top; a self-signed certificate's only one), or undefined. */
export function lastCertificate(pem: string): string | undefined {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  return blocks?.[blocks.length - 1] ? `${blocks[blocks.length - 1]}\n` : undefined;
}
