// Which repository may be handed which stored bytes: content is served through a repository only if it is linked
// to it (it arrived through it: pull-through, sync, import) or, inside a window, its own upstream confirms it (HEAD).
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import { MANIFEST_MEDIA_TYPES } from '../oci/manifest.js';
import type { Store, StoredManifest } from '../store/store.js';
import type { UpstreamGate } from './access.js';

export interface EntitlementDeps {
  store: Store;
  /** Confirmations are asked only inside a window; outside, the closed-window miss as every other miss. */
  gate: UpstreamGate;
}

export class Entitlement {
  // Links are only removed (by gc) with their blob, so a positive answer is remembered until a blob goes (the
  // blob may come back through another repository: this one's link did not); a negative one is never remembered.
  private readonly known = new LRUCache<string, true>({ maxSize: 200_000, sizeCalculation: () => 1 });
  private removalsSeen = 0;
  private readonly confirmations = new Map<string, Promise<void>>();

  constructor(private readonly d: EntitlementDeps) {}

  /** Resolves when host/name may be sent the blob; otherwise throws the 404 (or upstream error) the client gets. */
  async blob(host: string, name: string, digest: string): Promise<void> {
    if (await this.linked(host, name, digest)) return;
    await this.confirm(host, name, digest, 'BLOB_UNKNOWN', async () => {
      await this.d.gate.upstream(host).headBlob(name, digest);
      await this.d.store.linkBlob(host, name, digest);
    });
  }

  /** The same rule for a stored manifest asked for by digest (a manifest is a blob too). */
  async manifest(host: string, name: string, m: StoredManifest): Promise<void> {
    if (await this.linked(host, name, m.digest)) return;
    await this.confirm(host, name, m.digest, 'MANIFEST_UNKNOWN', async () => {
      const head = await this.d.gate.upstream(host).headManifest(name, m.digest, [...MANIFEST_MEDIA_TYPES]);
      if (head.digest !== undefined && head.digest !== m.digest) {
        throw new RegistryError('MANIFEST_UNKNOWN', `upstream ${host} has no manifest ${name}@${m.digest}`, { name, digest: m.digest });
      }
      await this.d.store.linkManifest(host, name, m);
    });
  }

  private async linked(host: string, name: string, digest: string): Promise<boolean> {
    const key = `${host}/${name}@${digest}`;
    const { store } = this.d;
    if (store.removals !== this.removalsSeen) {
      this.known.clear();
      this.removalsSeen = store.removals;
    }
    if (this.known.has(key)) return true;
    const yes = (await store.isBlobLinked(host, name, digest)) || (await store.isManifestLinked(host, name, digest));
    if (yes) this.known.set(key, true);
    return yes;
  }

  /** One HEAD per (repository, digest) at a time, however many nodes ask; never outside a window. */
  private async confirm(host: string, name: string, digest: string, kind: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN', run: () => Promise<void>): Promise<void> {
    this.d.gate.requireOpen(kind, { name, digest });
    const key = `${host}/${name}@${digest}`;
    const pending = this.confirmations.get(key);
    if (pending) return pending;
    const p = run()
      .then(() => void this.known.set(key, true))
      .finally(() => this.confirmations.delete(key));
    this.confirmations.set(key, p);
    return p;
  }
}
