// The MetadataStore in memory: tags with their history, links, referrers and manifest types in maps shared by
// every instance opened over them (each instance is "a replica"). For tests of everything above the store.
import type { Descriptor } from '../../oci/manifest.js';
import type { FlightLeases, LinkableManifest, ManifestType, MetadataStore, RepositoryName, StateDocuments } from '../ports.js';
import { referrerDescriptor, subjectOf } from '../referrers.js';
import { MemoryLeases, type MemoryLeaseTable } from './leases.js';
import { memoryStateDocuments, MemoryStateData } from './state.js';

interface Repository {
  /** Per tag, the digests it pointed at, newest (the current one) first. */
  tags: Map<string, string[]>;
  /** Linked manifests, and the subject each refers to. */
  manifests: Map<string, { subject?: string; descriptor: Descriptor }>;
  blobs: Set<string>;
}

/** What instances over the same memory store share. */
export class MemoryMetadata {
  readonly repositories = new Map<string, Repository & RepositoryName>();
  readonly types = new Map<string, ManifestType>();
  readonly state = new MemoryStateData();
  readonly leases: MemoryLeaseTable = new Map();
}

/** Digests kept per tag's history, as on fs. */
const MAX_HISTORY = 100;

export class MemoryMetadataStore implements MetadataStore {
  private changes = 0;
  readonly state: StateDocuments;
  readonly leases: FlightLeases;

  constructor(readonly data: MemoryMetadata = new MemoryMetadata()) {
    this.state = memoryStateDocuments(data.state);
    this.leases = new MemoryLeases(data.leases);
  }

  get generation(): number {
    return this.changes;
  }

  private repo(host: string, name: string, create: true): Repository;
  private repo(host: string, name: string, create?: false): Repository | undefined;
  private repo(host: string, name: string, create = false): Repository | undefined {
    const key = `${host}/${name}`;
    let r = this.data.repositories.get(key);
    if (!r && create) {
      r = { host, name, tags: new Map(), manifests: new Map(), blobs: new Set() };
      this.data.repositories.set(key, r);
    }
    return r;
  }

  async setTag(host: string, name: string, tag: string, digest: string): Promise<void> {
    const tags = this.repo(host, name, true).tags;
    const history = tags.get(tag) ?? [];
    if (history[0] !== digest) tags.set(tag, [digest, ...history.filter((d) => d !== digest)].slice(0, MAX_HISTORY));
    this.changes++;
  }

  async getTag(host: string, name: string, tag: string): Promise<string | undefined> {
    return this.repo(host, name)?.tags.get(tag)?.[0];
  }

  async listTags(host: string, name: string): Promise<string[]> {
    return [...(this.repo(host, name)?.tags.keys() ?? [])].sort();
  }

  async tagHistory(host: string, name: string, tag: string): Promise<string[]> {
    return [...(this.repo(host, name)?.tags.get(tag) ?? [])];
  }

  async deleteTag(host: string, name: string, tag: string): Promise<boolean> {
    const existed = this.repo(host, name)?.tags.delete(tag) ?? false;
    this.changes++;
    return existed;
  }

  async linkManifest(host: string, name: string, m: LinkableManifest): Promise<void> {
    const subject = subjectOf(m.body);
    const entry = { descriptor: referrerDescriptor(m), ...(subject ? { subject } : {}) };
    this.repo(host, name, true).manifests.set(m.digest, entry);
    this.changes++;
  }

  async isManifestLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.repo(host, name)?.manifests.has(digest) ?? false;
  }

  async linkedManifests(host: string, name: string): Promise<string[]> {
    return [...(this.repo(host, name)?.manifests.keys() ?? [])];
  }

  async linkBlob(host: string, name: string, digest: string): Promise<void> {
    this.repo(host, name, true).blobs.add(digest);
  }

  async isBlobLinked(host: string, name: string, digest: string): Promise<boolean> {
    return this.repo(host, name)?.blobs.has(digest) ?? false;
  }

  async linkedBlobs(host: string, name: string): Promise<string[]> {
    return [...(this.repo(host, name)?.blobs ?? [])];
  }

  async unlinkManifest(host: string, name: string, m: LinkableManifest): Promise<void> {
    this.repo(host, name)?.manifests.delete(m.digest);
    this.changes++;
  }

  async unlinkBlob(host: string, name: string, digest: string): Promise<void> {
    this.repo(host, name)?.blobs.delete(digest);
  }

  async referrers(host: string, name: string, subject: string): Promise<Descriptor[]> {
    const out: Descriptor[] = [];
    for (const m of this.repo(host, name)?.manifests.values() ?? []) if (m.subject === subject) out.push({ ...m.descriptor });
    return out.sort((a, b) => a.digest.localeCompare(b.digest));
  }

  /** Those with a tag or a linked manifest (links of blobs alone make no repository, as on fs, unless asked: gc). */
  async repositories(opts: { blobLinks?: boolean } = {}): Promise<RepositoryName[]> {
    return [...this.data.repositories.values()]
      .filter((r) => r.tags.size > 0 || r.manifests.size > 0 || (opts.blobLinks === true && r.blobs.size > 0))
      .map((r) => ({ host: r.host, name: r.name }));
  }

  async putManifestType(digest: string, t: ManifestType): Promise<void> {
    this.data.types.set(digest, { mediaType: t.mediaType, sizeBytes: t.sizeBytes });
  }

  async manifestType(digest: string): Promise<ManifestType | undefined> {
    const t = this.data.types.get(digest);
    return t ? { ...t } : undefined;
  }

  async deleteManifestType(digest: string): Promise<void> {
    this.data.types.delete(digest);
  }

  /** Nothing is memoised (the maps are the truth); the generation still moves, as callers expect. */
  invalidate(): void {
    this.changes++;
  }

  async close(): Promise<void> {
    // Nothing to release: the maps live as long as their MemoryMetadata.
  }
}
