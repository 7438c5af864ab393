// The allowlist applied to requests: tags by rule, digests by pin or by reachability from the allowed
// tags and pins of the same repository in the store; every refusal is recorded in the denied log.
import type { Allowlist } from '../policy/allowlist.js';
import { signatureSubject } from '../policy/allowlist.js';
import type { DeniedLog } from '../policy/denied.js';
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import { isDigest } from '../oci/reference.js';
import { walkGraph, type GraphSource } from '../oci/graph.js';
import type { Policy } from './mirror.js';
import type { Store } from '../store/store.js';

const MAX_REACHABLE = 50_000;
const MAX_DEPTH = 4;

interface Reach {
  allowlistVersion: number;
  storeGeneration: number;
  digests: Set<string>;
}

export class AllowlistPolicy implements Policy {
  // Bounded: keys come from request paths, though only names some rule could allow get this far.
  private readonly reach = new LRUCache<string, Reach>({ max: 2_000 });

  constructor(
    private readonly allowlist: Allowlist,
    private readonly store: Store,
    private readonly denied?: DeniedLog,
  ) {}

  async checkTag(host: string, name: string, tag: string, client?: string): Promise<void> {
    if (await this.tagAllowed(host, name, tag)) return;
    throw this.deny(host, name, `:${tag}`, client);
  }

  async checkDigest(host: string, name: string, digest: string, client?: string): Promise<void> {
    if (await this.digestAllowed(host, name, digest)) return;
    throw this.deny(host, name, `@${digest}`, client);
  }

  async checkRepository(host: string, name: string, client?: string): Promise<void> {
    if (this.allowlist.matchesRepository(host, name)) return;
    throw this.deny(host, name, '/', client);
  }

  async filterTags(host: string, name: string, tags: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const t of tags) if (await this.tagAllowed(host, name, t)) out.push(t);
    return out;
  }

  private async tagAllowed(host: string, name: string, tag: string): Promise<boolean> {
    if (this.allowlist.matchTag(host, name, tag)) return true;
    // Talos' signature checks ask for sha256-<hex> and sha256-<hex>.sig of an image it may pull.
    const subject = signatureSubject(tag);
    return subject !== undefined && (await this.digestAllowed(host, name, subject));
  }

  private async digestAllowed(host: string, name: string, digest: string): Promise<boolean> {
    // A repository no rule names costs nothing more than this lookup.
    if (!this.allowlist.matchesRepository(host, name)) return false;
    if (this.allowlist.isDigestPinned(host, name, digest)) return true;
    const reachable = await this.reachable(host, name);
    if (reachable.has(digest)) return true;
    // A repository allowed for every tag may fetch any digest of its own from upstream (the upstream
    // enforces membership), but a cached digest is served only when this repository links to it:
    // reachable from its manifests, or fetched through it.
    if (!this.allowlist.allowsAnyTag(host, name)) return false;
    return !(await this.store.stat(digest)) || (await this.store.isBlobLinked(host, name, digest));
  }

  /** Every digest reachable from the repository's allowed tags and pins; cached until either side changes. */
  private async reachable(host: string, name: string): Promise<Set<string>> {
    const key = `${host}/${name}`;
    const cached = this.reach.get(key);
    if (cached && cached.allowlistVersion === this.allowlist.version && cached.storeGeneration === this.store.generation) {
      return cached.digests;
    }
    const allowlistVersion = this.allowlist.version;
    const storeGeneration = this.store.generation;
    const roots = new Set(this.allowlist.pinnedDigests(host, name));
    const tagAllowed = this.allowlist.tagRulesFor(host, name);
    for (const tag of await this.store.listTags(host, name)) {
      if (!tagAllowed(tag)) continue;
      const d = await this.store.getTag(host, name, tag);
      if (d) roots.add(d);
    }
    if (this.allowlist.allowsAnyTag(host, name)) for (const d of await this.store.linkedManifests(host, name)) roots.add(d);
    const digests = await this.walk(host, name, [...roots]);
    this.reach.set(key, { allowlistVersion, storeGeneration, digests });
    return digests;
  }

  /** Digests reachable from `roots` through the stored manifests, referrers and signature tags of this repository. */
  private async walk(host: string, name: string, roots: string[]): Promise<Set<string>> {
    const source: GraphSource = {
      manifest: (digest) => this.store.getManifest(digest),
      referrers: (digest) => this.store.referrers(host, name, digest),
      tag: (tag) => this.store.getTag(host, name, tag),
    };
    // Only sha256 children can be stored or asked for; anything else an upstream wrote is skipped, not fatal.
    const graph = await walkGraph(source, roots, {
      children: 'all',
      follow: (child) => isDigest(child.digest),
      signatures: 'all',
      maxDepth: MAX_DEPTH,
      maxNodes: MAX_REACHABLE,
    });
    return new Set(graph.nodes.map((n) => n.digest));
  }

  private deny(host: string, name: string, reference: string, client?: string): RegistryError {
    // '/' is the repository itself (tags/list): recorded with an empty reference, which the denied log reads as such.
    const ref = reference.slice(1);
    this.denied?.record({ host, name, reference: ref, client: client ?? '' });
    const message = reference === '/'
      ? `repository ${host}/${name} has no image on the allowlist of this mirror`
      : `${host}/${name}${reference} is not on the allowlist of this mirror`;
    return new RegistryError('DENIED', message, { host, name, reference: ref });
  }
}
