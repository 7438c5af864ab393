// Pure OCI grammar: repository names, tags, digests, and the parse of a /v2/ request path
// into a registry route with its upstream host (ns, host prefix or default) and Docker Hub normalisation.
import { RegistryError } from './errors.js';

// distribution-spec "Pulling manifests": name and tag grammar, verbatim.
const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
// OCI image-spec digest grammar: anything shaped like a digest but not sha256 is "unsupported", not "unknown".
const DIGEST_SHAPE_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const HOST_RE = /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?$/;

export const MAX_NAME_LENGTH = 255;

export type Reference = { tag: string; digest?: undefined } | { digest: string; tag?: undefined };

export type Route =
  | { kind: 'base' }
  | { kind: 'manifest'; host: string; name: string; reference: Reference }
  | { kind: 'blob'; host: string; name: string; digest: string }
  | { kind: 'tags'; host: string; name: string }
  | { kind: 'referrers'; host: string; name: string; digest: string };

export interface ParsedRequest {
  route: Route;
  /** The `ns` query value when the client sent one (echoed as OCI-Namespace). */
  ns?: string;
  /** Read-only: a parse may be shared by every request for the same URL. */
  query: Pick<URLSearchParams, 'get' | 'has'>;
}

const NO_QUERY: ParsedRequest['query'] = { get: () => null, has: () => false };

export interface HostTable {
  /** Registry hosts sluice may serve (the configured upstreams), canonical form. */
  has(host: string): boolean;
  defaultHost: string;
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export function isValidHost(host: string): boolean {
  return host.length <= 255 && HOST_RE.test(host);
}

export function canonicalHost(host: string): string {
  const h = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(h) ? DOCKER_HUB : h;
}

/** Docker Hub keeps official images under library/ (docker.io/busybox is docker.io/library/busybox). */
export function normaliseName(host: string, name: string): string {
  return host === DOCKER_HUB && !name.includes('/') ? `library/${name}` : name;
}

export function checkName(name: string): string {
  if (!isValidName(name)) {
    throw new RegistryError('NAME_INVALID', 'invalid repository name', { name: name.slice(0, 300) });
  }
  return name;
}

export function checkDigest(digest: string): string {
  if (SHA256_RE.test(digest)) return digest;
  if (DIGEST_SHAPE_RE.test(digest) && !digest.startsWith('sha256:')) {
    throw new RegistryError('DIGEST_INVALID', 'unsupported digest algorithm: only sha256 is accepted', {
      digest: digest.slice(0, 200),
    });
  }
  throw new RegistryError('DIGEST_INVALID', 'invalid digest', { digest: digest.slice(0, 200) });
}

export function isDigest(s: string): boolean {
  return SHA256_RE.test(s);
}

/** Shaped like a digest of any algorithm (OCI image-spec grammar); what an upstream may be asked for or answer. */
export function isDigestShape(s: string): boolean {
  return DIGEST_SHAPE_RE.test(s);
}

export function parseReference(ref: string): Reference {
  if (ref.includes(':')) return { digest: checkDigest(ref) };
  if (!isValidTag(ref)) throw new RegistryError('TAG_INVALID', 'invalid tag', { tag: ref.slice(0, 200) });
  return { tag: ref };
}

/** Split a raw request URL (path + query, undecoded) for a /v2/ route; throws RegistryError on anything malformed. */
export function parseRegistryUrl(rawUrl: string, hosts: HostTable): ParsedRequest {
  const q = rawUrl.indexOf('?');
  const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
  const query = q === -1 ? NO_QUERY : new URLSearchParams(rawUrl.slice(q + 1));
  if (path === '/v2/' || path === '/v2') return { route: { kind: 'base' }, query };
  if (!path.startsWith('/v2/')) throw notFound();
  const segments = path.slice(4).split('/');
  const routed = splitRoute(segments);
  const ns = query.get('ns') ?? undefined;
  const { host, nameSegments } = pickHost(routed.nameSegments, ns, hosts);
  const name = normaliseName(host, checkName(nameSegments.join('/')));
  const route = buildRoute(routed, host, name);
  return ns === undefined ? { route, query } : { route, ns, query };
}

interface SplitRoute {
  nameSegments: string[];
  kind: 'manifest' | 'blob' | 'tags' | 'referrers';
  last: string;
}

// The kind keyword sits at a fixed place from the end, so a name may itself contain "manifests" or "blobs".
function splitRoute(segments: string[]): SplitRoute {
  const n = segments.length;
  if (n >= 3 && segments[n - 2] === 'tags' && segments[n - 1] === 'list') {
    return { nameSegments: segments.slice(0, n - 2), kind: 'tags', last: '' };
  }
  if (n >= 3) {
    const keyword = segments[n - 2];
    const last = segments[n - 1] ?? '';
    if (keyword === 'manifests') return { nameSegments: segments.slice(0, n - 2), kind: 'manifest', last };
    if (keyword === 'blobs') return { nameSegments: segments.slice(0, n - 2), kind: 'blob', last };
    if (keyword === 'referrers') return { nameSegments: segments.slice(0, n - 2), kind: 'referrers', last };
  }
  throw notFound();
}

function pickHost(nameSegments: string[], ns: string | undefined, hosts: HostTable): { host: string; nameSegments: string[] } {
  if (ns !== undefined) {
    const host = canonicalHost(ns);
    if (!isValidHost(host) || !hosts.has(host)) throw unknownHost(ns);
    return { host, nameSegments };
  }
  const first = nameSegments[0] ?? '';
  if (nameSegments.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    const host = canonicalHost(first);
    if (hosts.has(host)) return { host, nameSegments: nameSegments.slice(1) };
  }
  return { host: hosts.defaultHost, nameSegments };
}

function buildRoute(r: SplitRoute, host: string, name: string): Route {
  switch (r.kind) {
    case 'tags':
      return { kind: 'tags', host, name };
    case 'manifest':
      // A tag outside the grammar can name nothing stored: "manifest unknown" (404), as the reference registry
      // answers and the distribution-spec conformance pull tests require (".INVALID_MANIFEST_NAME" → 404).
      if (!r.last.includes(':') && !isValidTag(r.last)) {
        throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown: not a valid tag', { tag: r.last.slice(0, 200) });
      }
      return { kind: 'manifest', host, name, reference: parseReference(r.last) };
    case 'blob':
      return { kind: 'blob', host, name, digest: checkDigest(r.last) };
    case 'referrers':
      return { kind: 'referrers', host, name, digest: checkDigest(r.last) };
  }
}

function notFound(): RegistryError {
  return new RegistryError('NOT_FOUND', 'no such route in the registry API');
}

function unknownHost(ns: string): RegistryError {
  return new RegistryError('NAME_UNKNOWN', 'registry host is not a configured upstream of this mirror', {
    ns: ns.slice(0, 255),
  });
}
