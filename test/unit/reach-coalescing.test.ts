// The allowlist decision's reach of a repository (every digest its allowed tags lead to) is walked once for a
// cold burst of requests, not once per request, and walked again once the store or the allowlist changed.
import { describe, expect, test } from 'vitest';
import { AllowlistPolicy } from '../../src/mirror/decision.js';
import { UpstreamAccess } from '../../src/mirror/upstream-access.js';
import { MediaType } from '../../src/oci/manifest.js';
import { Allowlist } from '../../src/policy/allowlist.js';
import { openMemoryStore } from '../../src/store/open.js';
import type { Upstream } from '../../src/upstream/client.js';
import { WindowState } from '../../src/window/state.js';

const HOST = 'ghcr.io';
const NAME = 'team/app';

async function setUp(): Promise<{ policy: AllowlistPolicy; allowlist: Allowlist; layer: string; walks: () => number; tag: (t: string) => Promise<void> }> {
  const store = openMemoryStore();
  const config = await store.putBlob(Buffer.from('{}'));
  const layer = await store.putBlob(Buffer.from('a layer'));
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: 2 },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer.digest, size: 7 }],
  }));
  const m = await store.putManifest(body, MediaType.ociManifest);
  await store.setTag(HOST, NAME, '1.0', m.digest);
  // Each walk of the reach starts by listing the repository's tags.
  let listed = 0;
  const listTags = store.listTags.bind(store);
  store.listTags = (host, name) => {
    listed++;
    return listTags(host, name);
  };
  const allowlist = await Allowlist.open(store.meta.state.allowlist, [`${HOST}/${NAME}:1.0`]);
  const access = new UpstreamAccess({ store, window: new WindowState('never'), upstreams: new Map<string, Upstream>(), tagTtlMs: 60_000, log: () => undefined });
  const policy = new AllowlistPolicy(allowlist, store, access);
  return { policy, allowlist, layer: layer.digest, walks: () => listed, tag: (t) => store.setTag(HOST, NAME, t, m.digest) };
}

describe('AllowlistPolicy: one walk of a repository for many requests', () => {
  test('50 concurrent blob requests of a cold repository walk it once, and all are allowed', async () => {
    const { policy, layer, walks } = await setUp();
    await Promise.all(Array.from({ length: 50 }, () => policy.checkDigest(HOST, NAME, layer, undefined, 'BLOB_UNKNOWN')));
    expect(walks()).toBe(1);
    await policy.checkDigest(HOST, NAME, layer, undefined, 'BLOB_UNKNOWN');
    expect(walks()).toBe(1);
  });

  test('a store change or an allowlist edit makes the next request walk again', async () => {
    const { policy, allowlist, layer, walks, tag } = await setUp();
    await policy.checkDigest(HOST, NAME, layer, undefined, 'BLOB_UNKNOWN');
    await tag('1.1');
    await Promise.all([1, 2, 3].map(() => policy.checkDigest(HOST, NAME, layer, undefined, 'BLOB_UNKNOWN')));
    expect(walks()).toBe(2);
    await allowlist.add([`${HOST}/${NAME}:2.0`], { by: 'test' });
    await policy.checkDigest(HOST, NAME, layer, undefined, 'BLOB_UNKNOWN');
    expect(walks()).toBe(3);
  });
});
