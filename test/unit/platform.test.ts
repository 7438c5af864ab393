// The one platform rule (src/oci/platform.ts) that sync, coverage, export and import share, as a table.
import { describe, expect, test } from 'vitest';
import { platformOf, platformWanted } from '../../src/oci/platform.js';
import type { Descriptor } from '../../src/oci/manifest.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const d = (platform: Descriptor['platform'], mediaType = OCI_MANIFEST): Descriptor => ({ mediaType, digest: `sha256:${'a'.repeat(64)}`, size: 1, ...(platform ? { platform } : {}) });

describe('platformOf', () => {
  test.each([
    [{ os: 'linux', architecture: 'amd64' }, 'linux/amd64'],
    [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, 'linux/arm64/v8'],
    [{ os: 'linux', architecture: 'arm', variant: '' }, 'linux/arm'],
    [{ os: 'unknown', architecture: 'unknown' }, 'unknown/unknown'],
    [{}, undefined],
    [{ os: 'linux' }, undefined],
    [{ architecture: 'amd64' }, undefined],
    [{ os: '', architecture: 'amd64' }, undefined],
    [undefined, undefined],
  ] as Array<[Descriptor['platform'], string | undefined]>)('%j → %s', (platform, want) => {
    expect(platformOf(d(platform))).toBe(want);
  });
});

describe('platformWanted', () => {
  test.each([
    // [platform, media type, filter, wanted]
    [{ os: 'linux', architecture: 'amd64' }, OCI_MANIFEST, [], true],
    [{ os: 'linux', architecture: 'amd64' }, OCI_MANIFEST, undefined, true],
    [{ os: 'linux', architecture: 'amd64' }, OCI_MANIFEST, ['linux/amd64'], true],
    [{ os: 'linux', architecture: 'arm64' }, OCI_MANIFEST, ['linux/amd64'], false],
    [{ os: 'linux', architecture: 'arm64' }, DOCKER_MANIFEST, ['linux/amd64'], false],
    [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, OCI_MANIFEST, ['linux/arm64'], true],
    [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, OCI_MANIFEST, ['linux/arm64/v8'], true],
    [{ os: 'linux', architecture: 'arm', variant: 'v7' }, OCI_MANIFEST, ['linux/arm/v6'], false],
    [{ os: 'linux', architecture: 'arm64' }, OCI_MANIFEST, ['linux/arm64/v8'], false],
    [{ os: 'unknown', architecture: 'unknown' }, OCI_MANIFEST, ['linux/amd64'], false],
    // Not platform-specific: no platform, or one without os/arch, is always wanted.
    [undefined, OCI_MANIFEST, ['linux/amd64'], true],
    [{}, OCI_MANIFEST, ['linux/amd64'], true],
    [{ os: 'linux' }, OCI_MANIFEST, ['linux/amd64'], true],
    // Only manifests are filtered: a layer that carries a platform is still part of its image.
    [{ os: 'linux', architecture: 'arm64' }, LAYER, ['linux/amd64'], true],
  ] as Array<[Descriptor['platform'], string, string[] | undefined, boolean]>)('%j %s under %j → %s', (platform, mediaType, filter, want) => {
    expect(platformWanted(d(platform, mediaType), filter)).toBe(want);
  });
});
