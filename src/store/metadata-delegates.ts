// The metadata side of the Store (tags, links, referrers, repositories), delegated to its MetadataStore so
// callers keep one handle on the store.
import type { Descriptor } from '../oci/manifest.js';
import type { MetadataStore, RepositoryName } from './ports.js';
import type { StoredManifest } from './store.js';

export abstract class MetadataDelegates {
  protected constructor(
    /** Tags, links, referrers and the state documents. */
    readonly meta: MetadataStore,
  ) {}

  setTag(host: string, name: string, tag: string, digest: string): Promise<void> {
    return this.meta.setTag(host, name, tag, digest);
  }
  getTag(host: string, name: string, tag: string): Promise<string | undefined> {
    return this.meta.getTag(host, name, tag);
  }
  listTags(host: string, name: string): Promise<string[]> {
    return this.meta.listTags(host, name);
  }
  linkManifest(host: string, name: string, m: StoredManifest): Promise<void> {
    return this.meta.linkManifest(host, name, m);
  }
  linkBlob(host: string, name: string, digest: string): Promise<void> {
    return this.meta.linkBlob(host, name, digest);
  }
  isBlobLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.meta.isBlobLinked(host, name, digest);
  }
  isManifestLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.meta.isManifestLinked(host, name, digest);
  }
  linkedManifests(host: string, name: string): Promise<string[]> {
    return this.meta.linkedManifests(host, name);
  }
  referrers(host: string, name: string, subject: string): Promise<Descriptor[]> {
    return this.meta.referrers(host, name, subject);
  }
  repositories(opts?: { blobLinks?: boolean }): Promise<RepositoryName[]> {
    return this.meta.repositories(opts);
  }
  tagHistory(host: string, name: string, tag: string): Promise<string[]> {
    return this.meta.tagHistory(host, name, tag);
  }
}
