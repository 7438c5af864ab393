// Tag → digest: outside a window the store's last known digest; inside, coalesced and time-bounded upstream
// resolution (at most one per tag per TTL), falling back to the last known digest when the upstream fails.
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import { isDigest } from '../oci/reference.js';
import type { Store, StoredManifest } from '../store/store.js';
import type { UpstreamGate } from './access.js';
import { siteOwnedTag } from './site-tags.js';

export interface TagCacheDeps {
  store: Store;
  gate: UpstreamGate;
  fetchManifest: (host: string, name: string, reference: string) => Promise<StoredManifest>;
  ttlMs: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

/** Set by the caller's request when its answer had to be fetched from upstream (for the request metrics). */
export interface FetchNote {
  fetched: boolean;
}

interface Check {
  digest: string;
  /** The check fetched the manifest (a tag never seen, or one that moved), not just a HEAD. */
  fetched: boolean;
}

export class TagCache {
  private readonly checks: LRUCache<string, Check>;

  constructor(private readonly d: TagCacheDeps) {
    this.checks = new LRUCache<string, Check>({
      maxSize: 10_000,
      sizeCalculation: () => 1,
      ttl: Math.max(1, d.ttlMs),
      fetchMethod: async (key) => {
        const [host = '', name = '', tag = ''] = key.split('\u0000');
        return this.refresh(host, name, tag);
      },
    });
  }

  async resolve(host: string, name: string, tag: string, note?: FetchNote): Promise<string> {
    const { store, log } = this.d;
    if (!this.d.gate.isOpen()) {
      const known = await store.getTag(host, name, tag);
      if (known) return known;
      throw this.d.gate.closed('MANIFEST_UNKNOWN', { name, tag });
    }
    const owned = await siteOwnedTag(store, host, name, tag);
    if (owned) return owned;
    try {
      const status: LRUCache.Status<string, Check> | undefined = note ? {} : undefined;
      const check = await this.checks.fetch(`${host}\u0000${name}\u0000${tag}`, { status });
      // A check made earlier (a hit) fetched for an earlier request, not this one.
      if (note && check?.fetched && status?.fetch !== 'hit') note.fetched = true;
      if (check) return check.digest;
    } catch (e) {
      const known = await store.getTag(host, name, tag);
      if (known) {
        log('upstream tag resolution failed; serving the last known digest', { host, name, tag, digest: known, error: String(e) });
        return known;
      }
      throw e;
    }
    throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { name, tag });
  }

  /**
   * Resolves a tag upstream. A tag never seen is fetched with one GET; a known tag is re-checked with a HEAD
   * (registries such as Docker Hub count only GETs against pull limits) and its manifest is GET only if it moved.
   */
  private async refresh(host: string, name: string, tag: string): Promise<Check> {
    const { store, fetchManifest } = this.d;
    const fetch = async (): Promise<Check> => ({ digest: (await fetchManifest(host, name, tag)).digest, fetched: true });
    if (!(await store.getTag(host, name, tag))) return fetch();
    const head = await this.d.gate.upstream(host).headManifest(name, tag, [...MANIFEST_MEDIA_TYPES]);
    const known = head.digest && isDigest(head.digest) ? await store.getManifest(head.digest) : undefined;
    if (!known) return fetch();
    // One commit (store/commit-gate.ts), the manifest looked at again on the backend: a gc may just have removed it.
    const linked = await store.commits.commit(async () => {
      if (!(await store.blobs.stat(known.digest))) return false;
      await store.linkManifest(host, name, known);
      if ((await store.getTag(host, name, tag)) !== known.digest) await store.setTag(host, name, tag, known.digest);
      return true;
    });
    if (!linked) {
      store.forget(known.digest);
      return fetch();
    }
    return { digest: known.digest, fetched: false };
  }
}
