// ---------------------------------------------------------------------------------------------------------------
// MetadataStore: what the store knows besides blob bytes — tags, which manifests and blobs a repository holds,
// referrers by subject, and the state documents (allowlist, denied log, manual window). store/fs fills it on
// today's layout; a database can fill it for several replicas. Callers hand it plain values.
import type { Descriptor } from '../oci/manifest.js';
import type { AllowlistStorage } from '../policy/allowlist.js';
import type { DeniedStorage } from '../policy/denied.js';
import type { ManualWindowStorage } from '../window/manual-store.js';

export interface RepositoryName {
  host: string;
  name: string;
}

/** A committed manifest as linking needs it: its referrer entry is derived from the body. */
export interface LinkableManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
}

/** The documents policy and window state persist through; each declares its own interface. */
export interface StateDocuments {
  allowlist: AllowlistStorage;
  denied: DeniedStorage;
  window: ManualWindowStorage;
}

export interface MetadataStore {
  /** Bumped whenever a tag or a manifest link changes, so derived sets (reachability) know to recompute. */
  readonly generation: number;
  setTag(host: string, name: string, tag: string, digest: string): Promise<void>;
  getTag(host: string, name: string, tag: string): Promise<string | undefined>;
  /** Sorted. */
  listTags(host: string, name: string): Promise<string[]>;
  /** Records that a manifest belongs to a repository; indexes it as a referrer when it has a subject. */
  linkManifest(host: string, name: string, m: LinkableManifest): Promise<void>;
  isManifestLinked(host: string, name: string, digest: string): Promise<boolean>;
  /** Digests of every manifest linked to a repository. */
  linkedManifests(host: string, name: string): Promise<string[]>;
  /** Records that a blob arrived through a repository (fetched, confirmed by its upstream, or imported). */
  linkBlob(host: string, name: string, digest: string): Promise<void>;
  isBlobLinked(host: string, name: string, digest: string): Promise<boolean>;
  /** Descriptors of the manifests whose subject is `subject`, by digest. */
  referrers(host: string, name: string, subject: string): Promise<Descriptor[]>;
  /** Every repository with a tag or a linked manifest. */
  repositories(): Promise<RepositoryName[]>;
  /** Drops what is memoised and bumps the generation: another process (import, offline sync) changed the store. */
  invalidate(): void;
  readonly state: StateDocuments;
}
