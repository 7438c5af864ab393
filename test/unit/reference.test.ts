// Table tests for the /v2/ path parser: routes, upstream host choice (ns, host prefix, default),
// Docker Hub normalisation, names holding route keywords, and every malformed name/tag/digest.
import { describe, expect, test } from 'vitest';
import { RegistryError } from '../../src/oci/errors.js';
import {
  MAX_NAME_LENGTH,
  canonicalHost,
  checkDigest,
  isValidHost,
  isValidName,
  isValidTag,
  normaliseName,
  parseReference,
  parseRegistryUrl,
  type HostTable,
  type Route,
} from '../../src/oci/reference.js';

const HOSTS = new Set(['docker.io', 'ghcr.io', 'registry.k8s.io', 'myreg.local:5000']);
const hosts: HostTable = { has: (h) => HOSTS.has(h), defaultHost: 'docker.io' };
const D = `sha256:${'a'.repeat(64)}`;
const D2 = `sha256:${'0123456789abcdef'.repeat(4)}`;

function parse(url: string, table: HostTable = hosts): { route: Route; ns?: string } {
  const p = parseRegistryUrl(url, table);
  return p.ns === undefined ? { route: p.route } : { route: p.route, ns: p.ns };
}

function failure(url: string): { kind: string; status: number } {
  try {
    parseRegistryUrl(url, hosts);
  } catch (e) {
    if (e instanceof RegistryError) return { kind: e.kind, status: e.status };
    throw e;
  }
  throw new Error(`${url} parsed`);
}

describe('parseRegistryUrl: routes and hosts', () => {
  const cases: Array<[string, { route: Route; ns?: string }]> = [
    ['/v2/', { route: { kind: 'base' } }],
    ['/v2', { route: { kind: 'base' } }],
    ['/v2/?ns=docker.io', { route: { kind: 'base' } }],
    // containerd's mirror form: host in ns, path without host, official images with library/.
    ['/v2/library/alpine/manifests/3.20?ns=docker.io', { route: { kind: 'manifest', host: 'docker.io', name: 'library/alpine', reference: { tag: '3.20' } }, ns: 'docker.io' }],
    ['/v2/siderolabs/kubelet/manifests/v1.34.0?ns=ghcr.io', { route: { kind: 'manifest', host: 'ghcr.io', name: 'siderolabs/kubelet', reference: { tag: 'v1.34.0' } }, ns: 'ghcr.io' }],
    [`/v2/pause/blobs/${D}?ns=registry.k8s.io`, { route: { kind: 'blob', host: 'registry.k8s.io', name: 'pause', digest: D }, ns: 'registry.k8s.io' }],
    ['/v2/foo/manifests/1?ns=myreg.local%3A5000', { route: { kind: 'manifest', host: 'myreg.local:5000', name: 'foo', reference: { tag: '1' } }, ns: 'myreg.local:5000' }],
    // Docker Hub aliases and case collapse onto docker.io; the raw ns is what is echoed.
    ['/v2/alpine/manifests/3?ns=index.docker.io', { route: { kind: 'manifest', host: 'docker.io', name: 'library/alpine', reference: { tag: '3' } }, ns: 'index.docker.io' }],
    ['/v2/alpine/manifests/3?ns=DOCKER.IO', { route: { kind: 'manifest', host: 'docker.io', name: 'library/alpine', reference: { tag: '3' } }, ns: 'DOCKER.IO' }],
    ['/v2/alpine/manifests/3?ns=registry-1.docker.io', { route: { kind: 'manifest', host: 'docker.io', name: 'library/alpine', reference: { tag: '3' } }, ns: 'registry-1.docker.io' }],
    // Prefix form (skopeo, conformance): a first segment equal to a configured host.
    ['/v2/ghcr.io/siderolabs/kubelet/manifests/v1.34.0', { route: { kind: 'manifest', host: 'ghcr.io', name: 'siderolabs/kubelet', reference: { tag: 'v1.34.0' } } }],
    [`/v2/registry.k8s.io/coredns/coredns/manifests/${D}`, { route: { kind: 'manifest', host: 'registry.k8s.io', name: 'coredns/coredns', reference: { digest: D } } }],
    ['/v2/docker.io/busybox/manifests/1.36', { route: { kind: 'manifest', host: 'docker.io', name: 'library/busybox', reference: { tag: '1.36' } } }],
    ['/v2/index.docker.io/library/busybox/tags/list', { route: { kind: 'tags', host: 'docker.io', name: 'library/busybox' } }],
    ['/v2/myreg.local:5000/team/app/tags/list', { route: { kind: 'tags', host: 'myreg.local:5000', name: 'team/app' } }],
    // A lone host segment is a name, not a prefix (there must be a repository after it).
    ['/v2/ghcr.io/tags/list', { route: { kind: 'tags', host: 'docker.io', name: 'library/ghcr.io' } }],
    // An unconfigured host-looking segment stays part of the name under the default upstream.
    ['/v2/quay.io/foo/bar/manifests/1', { route: { kind: 'manifest', host: 'docker.io', name: 'quay.io/foo/bar', reference: { tag: '1' } } }],
    // With ns, the path is taken as the name as it is (no prefix stripping).
    ['/v2/ghcr.io/x/manifests/1?ns=ghcr.io', { route: { kind: 'manifest', host: 'ghcr.io', name: 'ghcr.io/x', reference: { tag: '1' } }, ns: 'ghcr.io' }],
    // Default upstream and Docker Hub normalisation.
    ['/v2/busybox/manifests/latest', { route: { kind: 'manifest', host: 'docker.io', name: 'library/busybox', reference: { tag: 'latest' } } }],
    ['/v2/library/busybox/manifests/latest', { route: { kind: 'manifest', host: 'docker.io', name: 'library/busybox', reference: { tag: 'latest' } } }],
    ['/v2/someone/tool/manifests/latest', { route: { kind: 'manifest', host: 'docker.io', name: 'someone/tool', reference: { tag: 'latest' } } }],
    // Route keywords inside names: the keyword is found from the end.
    ['/v2/a/manifests/b/manifests/latest', { route: { kind: 'manifest', host: 'docker.io', name: 'a/manifests/b', reference: { tag: 'latest' } } }],
    [`/v2/blobs/blobs/${D}`, { route: { kind: 'blob', host: 'docker.io', name: 'library/blobs', digest: D } }],
    [`/v2/x/blobs/y/blobs/${D}`, { route: { kind: 'blob', host: 'docker.io', name: 'x/blobs/y', digest: D } }],
    ['/v2/manifests/manifests/manifests', { route: { kind: 'manifest', host: 'docker.io', name: 'library/manifests', reference: { tag: 'manifests' } } }],
    ['/v2/tags/list/tags/list', { route: { kind: 'tags', host: 'docker.io', name: 'tags/list' } }],
    [`/v2/ghcr.io/a/referrers/b/referrers/${D2}?artifactType=x`, { route: { kind: 'referrers', host: 'ghcr.io', name: 'a/referrers/b', digest: D2 } }],
    [`/v2/ghcr.io/siderolabs/kubelet/referrers/${D}`, { route: { kind: 'referrers', host: 'ghcr.io', name: 'siderolabs/kubelet', digest: D } }],
    // Grammar corners that are valid.
    ['/v2/a__b/c-----d/e.f_g/manifests/_tag', { route: { kind: 'manifest', host: 'docker.io', name: 'a__b/c-----d/e.f_g', reference: { tag: '_tag' } } }],
    [`/v2/x/manifests/${'T'.repeat(128)}`, { route: { kind: 'manifest', host: 'docker.io', name: 'library/x', reference: { tag: 'T'.repeat(128) } } }],
  ];
  test.each(cases)('%s', (url, want) => {
    expect(parse(url)).toEqual(want);
  });

  test('the query survives for the routes (n, last, artifactType)', () => {
    const p = parseRegistryUrl('/v2/ghcr.io/a/b/tags/list?n=2&last=v1', hosts);
    expect(p.query.get('n')).toBe('2');
    expect(p.query.get('last')).toBe('v1');
  });

  test('the default upstream comes from the host table', () => {
    const table: HostTable = { has: (h) => h === 'ghcr.io', defaultHost: 'ghcr.io' };
    expect(parse('/v2/busybox/manifests/1', table).route).toEqual({ kind: 'manifest', host: 'ghcr.io', name: 'busybox', reference: { tag: '1' } });
  });
});

describe('parseRegistryUrl: malformed requests', () => {
  const long = (n: number): string => 'a'.repeat(n);
  const cases: Array<[string, string]> = [
    // Names.
    ['/v2/Upper/manifests/1', 'NAME_INVALID'],
    ['/v2/../manifests/1', 'NAME_INVALID'],
    ['/v2/a/../b/manifests/1', 'NAME_INVALID'],
    ['/v2/a/./b/manifests/1', 'NAME_INVALID'],
    ['/v2/%2e%2e/manifests/1', 'NAME_INVALID'],
    ['/v2/%2e%2e/%2e%2e/etc/manifests/1', 'NAME_INVALID'],
    ['/v2/a%2f..%2fb/manifests/1', 'NAME_INVALID'],
    ['/v2/a%00b/manifests/1', 'NAME_INVALID'],
    ['/v2/a//b/manifests/1', 'NAME_INVALID'],
    ['/v2//manifests/1', 'NAME_INVALID'],
    ['/v2/a-/manifests/1', 'NAME_INVALID'],
    ['/v2/-a/manifests/1', 'NAME_INVALID'],
    ['/v2/a.-b/manifests/1', 'NAME_INVALID'],
    ['/v2/a___b/manifests/1', 'NAME_INVALID'],
    ['/v2/a b/manifests/1', 'NAME_INVALID'],
    ['/v2/localhost:5000/foo/manifests/1', 'NAME_INVALID'],
    [`/v2/${long(MAX_NAME_LENGTH + 1)}/manifests/1`, 'NAME_INVALID'],
    [`/v2/${'a/'.repeat(200)}b/manifests/1`, 'NAME_INVALID'],
    [`/v2/${long(64 * 1024)}/manifests/1`, 'NAME_INVALID'],
    // Tags outside the grammar name nothing: 404, as the conformance pull tests require.
    ['/v2/a/manifests/.INVALID_MANIFEST_NAME', 'MANIFEST_UNKNOWN'],
    ['/v2/a/manifests/-x', 'MANIFEST_UNKNOWN'],
    ['/v2/a/manifests/.x', 'MANIFEST_UNKNOWN'],
    [`/v2/a/manifests/${'t'.repeat(129)}`, 'MANIFEST_UNKNOWN'],
    ['/v2/a/manifests/%2e%2e', 'MANIFEST_UNKNOWN'],
    ['/v2/a/manifests/..', 'MANIFEST_UNKNOWN'],
    ['/v2/a/manifests/a%00', 'MANIFEST_UNKNOWN'],
    ['/v2/a/manifests/', 'MANIFEST_UNKNOWN'],
    // The name is checked first.
    ['/v2/A/manifests/.x', 'NAME_INVALID'],
    // Digests: malformed, unsupported algorithm, wrong hex.
    ['/v2/a/manifests/sha256:totallywrong', 'DIGEST_INVALID'],
    ['/v2/a/blobs/sha256:totallywrong', 'DIGEST_INVALID'],
    [`/v2/a/manifests/sha512:${'a'.repeat(128)}`, 'DIGEST_INVALID'],
    [`/v2/a/blobs/sha512:${'a'.repeat(128)}`, 'DIGEST_INVALID'],
    [`/v2/a/blobs/sha256:${'A'.repeat(64)}`, 'DIGEST_INVALID'],
    [`/v2/a/blobs/sha256:${'a'.repeat(63)}`, 'DIGEST_INVALID'],
    [`/v2/a/blobs/sha256:${'a'.repeat(65)}`, 'DIGEST_INVALID'],
    [`/v2/a/blobs/sha256:${'g'.repeat(64)}`, 'DIGEST_INVALID'],
    ['/v2/a/blobs/sha256:../../../etc/passwd', 'NOT_FOUND'],
    ['/v2/a/blobs/sha256:..%2f..%2fetc', 'DIGEST_INVALID'],
    ['/v2/a/blobs/latest', 'DIGEST_INVALID'],
    ['/v2/a/blobs/', 'DIGEST_INVALID'],
    ['/v2/a/blobs/md5:abc', 'DIGEST_INVALID'],
    ['/v2/a/blobs/:', 'DIGEST_INVALID'],
    ['/v2/a/referrers/sha256:totallywrong', 'DIGEST_INVALID'],
    // ns: anything not a configured host is unknown, and is never dialled.
    ['/v2/a/manifests/1?ns=quay.io', 'NAME_UNKNOWN'],
    ['/v2/a/manifests/1?ns=127.0.0.1:22', 'NAME_UNKNOWN'],
    ['/v2/a/manifests/1?ns=127.0.0.1%3A22', 'NAME_UNKNOWN'],
    ['/v2/a/manifests/1?ns=../../etc', 'NAME_UNKNOWN'],
    ['/v2/a/manifests/1?ns=', 'NAME_UNKNOWN'],
    ['/v2/a/manifests/1?ns=docker.io%00', 'NAME_UNKNOWN'],
    ['/v2/a/manifests/1?ns=http://docker.io', 'NAME_UNKNOWN'],
    ['/v2/a/manifests/1?ns=evil.example&ns=docker.io', 'NAME_UNKNOWN'],
    [`/v2/a/manifests/1?ns=${'a'.repeat(70_000)}`, 'NAME_UNKNOWN'],
    // Not registry routes.
    ['/', 'NOT_FOUND'],
    ['/v1/_ping', 'NOT_FOUND'],
    ['/v2x/a/manifests/1', 'NOT_FOUND'],
    ['/v2/a', 'NOT_FOUND'],
    ['/v2/a/manifests', 'NOT_FOUND'],
    ['/v2/manifests/1', 'NOT_FOUND'],
    ['/v2/a/tags', 'NOT_FOUND'],
    ['/v2/a/tags/list/', 'NOT_FOUND'],
    ['/v2/a/blobs/uploads/', 'NOT_FOUND'],
    ['/v2/a/blobs/uploads/1234', 'NOT_FOUND'],
    ['/v2/_catalog', 'NOT_FOUND'],
    ['/v2/a/unknown/1', 'NOT_FOUND'],
  ];
  test.each(cases)('%s → %s', (url, kind) => {
    const got = failure(url.length > 200 ? url : url);
    expect(got.kind).toBe(kind);
    expect(got.status).toBeGreaterThanOrEqual(400);
    expect(got.status).toBeLessThan(500);
  });

  test('unsupported algorithms are told apart from malformed digests', () => {
    expect(() => checkDigest(`sha512:${'a'.repeat(128)}`)).toThrow(/unsupported digest algorithm/);
    expect(() => checkDigest('sha256:totallywrong')).toThrow(/^invalid digest$/);
    expect(checkDigest(D)).toBe(D);
  });

  test('error details are bounded even for huge inputs', () => {
    for (const url of [`/v2/${'a'.repeat(64 * 1024)}/manifests/1`, `/v2/a/manifests/sha256:${'z'.repeat(64 * 1024)}`]) {
      try {
        parseRegistryUrl(url, hosts);
        throw new Error('parsed');
      } catch (e) {
        expect(e).toBeInstanceOf(RegistryError);
        expect(JSON.stringify((e as RegistryError).toBody()).length).toBeLessThan(1024);
      }
    }
  });
});

describe('grammar helpers', () => {
  test.each([
    ['a', true], ['a/b/c', true], ['a.b-c_d__e', true], ['a'.repeat(255), true], ['a'.repeat(256), false],
    ['A', false], ['a/', false], ['/a', false], ['a..b', false], ['', false],
  ])('isValidName(%j) = %s', (name, ok) => expect(isValidName(name)).toBe(ok));

  test.each([
    ['latest', true], ['_x', true], ['v1.2.3-rc.1_b', true], ['x'.repeat(128), true], ['x'.repeat(129), false],
    ['-x', false], ['.x', false], ['', false], ['a:b', false], ['a/b', false],
  ])('isValidTag(%j) = %s', (tag, ok) => expect(isValidTag(tag)).toBe(ok));

  test.each([
    ['docker.io', true], ['myreg.local:5000', true], ['localhost', true], ['127.0.0.1:22', true],
    ['../../etc', false], ['', false], ['a_b.com', false], ['-a.com', false], ['a.com:', false], ['a.com:123456', false],
  ])('isValidHost(%j) = %s', (host, ok) => expect(isValidHost(host)).toBe(ok));

  test('canonicalHost folds Docker Hub aliases and case', () => {
    expect(['index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com', 'Docker.IO'].map(canonicalHost)).toEqual(Array(4).fill('docker.io'));
    expect(canonicalHost('GHCR.io')).toBe('ghcr.io');
  });

  test('normaliseName adds library/ only for single-segment Docker Hub names', () => {
    expect(normaliseName('docker.io', 'busybox')).toBe('library/busybox');
    expect(normaliseName('docker.io', 'library/busybox')).toBe('library/busybox');
    expect(normaliseName('docker.io', 'user/tool')).toBe('user/tool');
    expect(normaliseName('ghcr.io', 'busybox')).toBe('busybox');
  });

  test('parseReference tells tags from digests', () => {
    expect(parseReference('v1')).toEqual({ tag: 'v1' });
    expect(parseReference(D)).toEqual({ digest: D });
    expect(() => parseReference('sha256:totallywrong')).toThrow(RegistryError);
    expect(() => parseReference('-bad')).toThrow(/invalid tag/);
  });
});
