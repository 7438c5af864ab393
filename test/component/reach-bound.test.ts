// What one request may cost upstream when a digest is decided from a tag rule: the manifests fetched for one
// decision are bounded (as the tags are), and a "no" holds for the repository for tagTtl, whatever digest is asked next.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_FETCHED_MANIFESTS } from '../../src/mirror/upstream-reach.js';
import { MiniUpstream } from '../helpers/mini-upstream.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { MediaType, sha256 } from '../kit/oci.js';

const CHILDREN = 1_000;

/** A small image manifest of its own per index entry (its config and layer never asked for). */
function child(i: number): Buffer {
  const config = sha256(Buffer.from(`config ${i}`));
  const layer = sha256(Buffer.from(`layer ${i}`));
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: config, size: 10 },
    layers: [{ mediaType: MediaType.ociLayer, digest: layer, size: 10 }],
  }));
}

describe('deciding a digest from a tag rule is bounded upstream', () => {
  let up: MiniUpstream;
  let s: InProcessSluice;
  const manifestGets = (): number => up.requests.filter((r) => r.method === 'GET' && r.path.includes('/manifests/')).length;
  const randomDigest = (): string => `sha256:${randomBytes(32).toString('hex')}`;

  beforeAll(async () => {
    up = await new MiniUpstream().start();
    up.addIndex('team/big', 'v1', Array.from({ length: CHILDREN }, (_, i) => child(i)));
    s = await startSluice({ windows: 'always', allowlist: ['ghcr.io/team/big:v1'], upstreams: { 'ghcr.io': { url: up.url } } });
  });
  afterAll(async () => {
    await s?.close();
    await up?.stop();
  });

  it('a random blob digest under a tag whose index has 1,000 entries costs at most the bound in manifest fetches', async () => {
    const res = await fetch(`${s.url}/v2/team/big/blobs/${randomDigest()}?ns=ghcr.io`);
    expect(res.status).toBe(403);
    // The tag's index, then at most MAX_FETCHED_MANIFESTS of its entries.
    expect(manifestGets()).toBeLessThanOrEqual(1 + MAX_FETCHED_MANIFESTS);
  });

  it('the next random digests of that repository are refused from the remembered answer, with no upstream request', async () => {
    const before = up.requests.length;
    for (let i = 0; i < 3; i++) expect((await fetch(`${s.url}/v2/team/big/blobs/${randomDigest()}?ns=ghcr.io`)).status).toBe(403);
    expect(up.requests.length).toBe(before);
  });
});
