// The readiness report's rules over an in-memory store: pins, tag globs and name globs, configured platforms
// the index lacks, signature tags (reported with their image, and counted when their blobs are missing).
import { describe, expect, test } from 'vitest';
import { coverageReport } from '../../src/jobs/coverage.js';
import { MediaType, type Descriptor } from '../../src/oci/manifest.js';
import { openMemoryStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { sha256 } from '../kit/oci.js';

/** Builds content in the in-memory store (store/memory): blobs, manifests and tags, as sync and import would. */
class Content {
  readonly store: Store = openMemoryStore();

  async blob(text: string): Promise<Descriptor> {
    const { digest } = await this.store.putBlob(Buffer.from(text));
    return { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: text.length };
  }

  async manifest(doc: object, mediaType: string): Promise<Descriptor> {
    const body = Buffer.from(JSON.stringify({ ...doc, mediaType }));
    const { digest } = await this.store.putManifest(body, mediaType);
    return { mediaType, digest, size: body.length };
  }

  async image(key: string): Promise<Descriptor> {
    const config = { ...(await this.blob(`config ${key}`)), mediaType: 'application/vnd.oci.image.config.v1+json' };
    return this.manifest({ schemaVersion: 2, config, layers: [await this.blob(`layer ${key}`)] }, MediaType.ociManifest);
  }

  /** `host/name:tag` → digest. */
  async tag(ref: string, digest: string): Promise<void> {
    const slash = ref.indexOf('/');
    const colon = ref.lastIndexOf(':');
    await this.store.setTag(ref.slice(0, slash), ref.slice(slash + 1, colon), ref.slice(colon + 1), digest);
  }
}

describe('coverageReport', () => {
  test('a pin, a tag glob and a name glob; signature tags belong to their image', async () => {
    const s = new Content();
    const app = await s.image('app');
    await s.tag('reg.example/team/app:1.0', app.digest);
    await s.tag('reg.example/team/app:1.1', (await s.image('app 1.1')).digest);
    const sig = await s.image('signature');
    await s.tag(`reg.example/team/app:sha256-${app.digest.slice(7)}.sig`, sig.digest);
    const report = await coverageReport(s.store, [`reg.example/team/app@${app.digest}`, 'reg.example/team/app:1.*', 'reg.example/team/**', 'reg.example/other/**']);
    expect(report.rules.map((r) => [r.kind, r.state])).toEqual([['digest', 'complete'], ['tags', 'complete'], ['repositories', 'complete'], ['repositories', 'empty']]);
    expect(report.rules[0]?.images[0]?.signatures.tags).toEqual([sig.digest]);
    expect(report.rules[2]?.images.map((i) => `${i.name}:${i.reference}`)).toEqual(['team/app:1.0', 'team/app:1.1']);
    expect(report.ready).toBe(true); // a glob matching nothing is nothing incomplete

    // The signature's layer goes: the signed image is incomplete.
    await s.store.deleteBlob(sha256('layer signature'));
    const after = await coverageReport(s.store, ['reg.example/team/app:1.0']);
    expect(after.rules[0]?.images[0]?.missingBlobs).toEqual([sha256('layer signature')]);
    expect(after.ready).toBe(false);
  });

  test('configured platforms: a platform the index lacks is reported, not counted; one not stored is', async () => {
    const s = new Content();
    const amd = await s.image('amd64');
    const arm: Descriptor = { mediaType: MediaType.ociManifest, digest: sha256('never stored'), size: 10 };
    const index = await s.manifest({ schemaVersion: 2, manifests: [
      { ...amd, platform: { os: 'linux', architecture: 'amd64' } },
      { ...arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ] }, MediaType.ociIndex);
    await s.tag('reg.example/multi:1', index.digest);
    const only = await coverageReport(s.store, ['reg.example/multi:1'], { platforms: ['linux/amd64', 'linux/s390x'] });
    expect(only.rules[0]?.images[0]?.platforms).toEqual({ expected: ['linux/amd64', 'linux/s390x'], present: ['linux/amd64'], missing: [], notInIndex: ['linux/s390x'] });
    expect(only.ready).toBe(true);
    const all = await coverageReport(s.store, ['reg.example/multi:1', 'reg.example/multi:2']);
    expect(all.rules[0]?.images[0]?.platforms?.missing).toEqual(['linux/arm64/v8']);
    expect(all.rules.map((r) => r.state)).toEqual(['incomplete', 'missing']);
    expect(all.summary).toEqual({ rules: 2, complete: 0, incomplete: 1, missing: 1, empty: 0 });
  });
});
