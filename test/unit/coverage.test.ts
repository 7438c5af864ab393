// The readiness report's rules over an in-memory store: pins, tag globs and name globs, configured platforms
// the index lacks, signature tags (reported with their image, and counted when their blobs are missing).
import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { coverageReport, type CoverageStore } from '../../src/jobs/coverage.js';
import { MediaType, type Descriptor } from '../../src/oci/manifest.js';
import type { StoredManifest } from '../../src/store/store.js';

const sha = (s: string | Buffer): string => `sha256:${createHash('sha256').update(s).digest('hex')}`;

class MemoryStore {
  blobs = new Set<string>();
  manifests = new Map<string, StoredManifest>();
  tags = new Map<string, string>();

  blob(text: string): Descriptor {
    const digest = sha(text);
    this.blobs.add(digest);
    return { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: text.length };
  }

  manifest(doc: object, mediaType: string): Descriptor {
    const body = Buffer.from(JSON.stringify({ ...doc, mediaType }));
    const digest = sha(body);
    this.manifests.set(digest, { digest, mediaType, body });
    this.blobs.add(digest);
    return { mediaType, digest, size: body.length };
  }

  image(key: string): Descriptor {
    const config = { ...this.blob(`config ${key}`), mediaType: 'application/vnd.oci.image.config.v1+json' };
    return this.manifest({ schemaVersion: 2, config, layers: [this.blob(`layer ${key}`)] }, MediaType.ociManifest);
  }

  get port(): CoverageStore {
    return {
      getTag: async (host, name, tag) => this.tags.get(`${host}/${name}:${tag}`),
      getManifest: async (d) => this.manifests.get(d),
      allBlobs: () => (async function* (all: Set<string>) { yield* all; })(this.blobs),
      referrers: async () => [],
      listTags: async (host, name) => [...this.tags.keys()].filter((k) => k.startsWith(`${host}/${name}:`)).map((k) => k.slice(host.length + name.length + 2)).sort(),
      repositories: async () => [...new Set([...this.tags.keys()].map((k) => k.slice(0, k.lastIndexOf(':'))))].map((r) => ({ host: r.slice(0, r.indexOf('/')), name: r.slice(r.indexOf('/') + 1) })),
    };
  }
}

describe('coverageReport', () => {
  test('a pin, a tag glob and a name glob; signature tags belong to their image', async () => {
    const s = new MemoryStore();
    const app = s.image('app');
    s.tags.set('reg.example/team/app:1.0', app.digest);
    s.tags.set('reg.example/team/app:1.1', s.image('app 1.1').digest);
    const sig = s.image('signature');
    s.tags.set(`reg.example/team/app:sha256-${app.digest.slice(7)}.sig`, sig.digest);
    const report = await coverageReport(s.port, [`reg.example/team/app@${app.digest}`, 'reg.example/team/app:1.*', 'reg.example/team/**', 'reg.example/other/**']);
    expect(report.rules.map((r) => [r.kind, r.state])).toEqual([['digest', 'complete'], ['tags', 'complete'], ['repositories', 'complete'], ['repositories', 'empty']]);
    expect(report.rules[0]?.images[0]?.signatures.tags).toEqual([sig.digest]);
    expect(report.rules[2]?.images.map((i) => `${i.name}:${i.reference}`)).toEqual(['team/app:1.0', 'team/app:1.1']);
    expect(report.ready).toBe(true); // a glob matching nothing is nothing incomplete

    // The signature's layer goes: the signed image is incomplete.
    s.blobs.delete(sha('layer signature'));
    const after = await coverageReport(s.port, ['reg.example/team/app:1.0']);
    expect(after.rules[0]?.images[0]?.missingBlobs).toEqual([sha('layer signature')]);
    expect(after.ready).toBe(false);
  });

  test('configured platforms: a platform the index lacks is reported, not counted; one not stored is', async () => {
    const s = new MemoryStore();
    const amd = s.image('amd64');
    const arm: Descriptor = { mediaType: MediaType.ociManifest, digest: sha('never stored'), size: 10 };
    const index = s.manifest({ schemaVersion: 2, manifests: [
      { ...amd, platform: { os: 'linux', architecture: 'amd64' } },
      { ...arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ] }, MediaType.ociIndex);
    s.tags.set('reg.example/multi:1', index.digest);
    const only = await coverageReport(s.port, ['reg.example/multi:1'], { platforms: ['linux/amd64', 'linux/s390x'] });
    expect(only.rules[0]?.images[0]?.platforms).toEqual({ expected: ['linux/amd64', 'linux/s390x'], present: ['linux/amd64'], missing: [], notInIndex: ['linux/s390x'] });
    expect(only.ready).toBe(true);
    const all = await coverageReport(s.port, ['reg.example/multi:1', 'reg.example/multi:2']);
    expect(all.rules[0]?.images[0]?.platforms?.missing).toEqual(['linux/arm64/v8']);
    expect(all.rules.map((r) => r.state)).toEqual(['incomplete', 'missing']);
    expect(all.summary).toEqual({ rules: 2, complete: 0, incomplete: 1, missing: 1, empty: 0 });
  });
});
