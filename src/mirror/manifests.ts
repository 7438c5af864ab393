// Manifests from upstream: fetched by tag or digest, verified, stored and linked to the repository (and the tag);
// N nodes asking for the same uncached manifest at once cost one upstream GET.
import { RegistryError } from '../oci/errors.js';
import { isIndexType, manifestMediaType, parseManifest, MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import type { Store, StoredManifest } from '../store/store.js';
import type { UpstreamGate } from './access.js';

export interface ManifestFetchDeps {
  store: Store;
  gate: Pick<UpstreamGate, 'upstream'>;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** A caller joined a fetch already under way. */
  joined?: () => void;
}

export class ManifestFetcher {
  private readonly pulls = new Map<string, Promise<StoredManifest>>();

  constructor(private readonly d: ManifestFetchDeps) {}

  /** One upstream GET per repository and digest at a time; the caller has checked the window. */
  pull(host: string, name: string, digest: string): Promise<StoredManifest> {
    const key = `${host}/${name}@${digest}`;
    const joined = this.pulls.get(key);
    if (joined) {
      this.d.joined?.();
      return joined;
    }
    const pending = this.fetch(host, name, digest).finally(() => this.pulls.delete(key));
    this.pulls.set(key, pending);
    return pending;
  }

  /** Fetches a manifest by tag or digest, verifies it, stores it, links it (and the tag) to the repository. */
  async fetch(host: string, name: string, reference: string): Promise<StoredManifest> {
    const got = await this.d.gate.upstream(host).getManifest(name, reference, [...MANIFEST_MEDIA_TYPES]);
    const doc = parseManifest(got.body);
    const mediaType = doc && manifestMediaType(doc, got.mediaType);
    if (!mediaType) {
      throw new RegistryError('UPSTREAM_FAILED', `upstream ${host} returned something that is not a manifest`, { name, reference });
    }
    const byDigest = reference.startsWith('sha256:');
    // A digest reference is its own proof; a tag answer must at least match what the upstream claims.
    const expect = byDigest ? reference : got.digest;
    const { store } = this.d;
    // One commit (store/commit-gate.ts): no gc sweeps between the manifest landing and its link and tag.
    const m = await store.commits.commit(async () => {
      const stored = await store.putManifest(got.body, mediaType, expect);
      await store.linkManifest(host, name, stored);
      if (!byDigest) await store.setTag(host, name, reference, stored.digest);
      return stored;
    });
    this.d.log('fetched manifest from upstream', { host, name, reference, digest: m.digest, index: isIndexType(mediaType) });
    return m;
  }
}
