// The allowlist applied to requests: tags by rule, digests by pin or by reachability from the allowed
// tags and pins of the same repository in the store, else (in a window) from the rules' tags as the upstream
// has them now (upstream-reach.ts); every refusal is recorded in the denied log.
import type { Allowlist } from '../policy/allowlist.js';
import { signatureSubject } from '../policy/allowlist.js';
import type { DeniedLog } from '../policy/denied.js';
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import { reachableFrom, repositoryGraph } from '../oci/repository-graph.js';
import type { Policy } from './mirror.js';
import type { Store } from '../store/store.js';
import type { ClosedKind } from './access.js';
import type { UpstreamAccess } from './upstream-access.js';
import { unconfirmedError } from './window-gate.js';
import { UpstreamReach, type TargetKind } from './upstream-reach.js';

const MAX_REACHABLE = 50_000;
const MAX_DEPTH = 4;

/** yes / no, or unknown: outside a window the store cannot tell (a rule's tag was never fetched). */
type Verdict = 'yes' | 'no' | 'unknown';

interface Reach {
  allowlistVersion: number;
  storeGeneration: number;
  /** Shared while it is computed: a cold burst of requests for one repository walks its graph once, not once each. */
  digests: Promise<Set<string>>;
}

export class AllowlistPolicy implements Policy {
  // Bounded: keys come from request paths, though only names some rule could allow get this far.
  private readonly reach = new LRUCache<string, Reach>({ max: 2_000 });
  /** Digests decided from the upstream's tags in a window. */
  private readonly upstreamReach: UpstreamReach;

  constructor(
    private readonly allowlist: Allowlist,
    private readonly store: Store,
    private readonly access: UpstreamAccess,
    private readonly denied?: DeniedLog,
  ) {
    this.upstreamReach = new UpstreamReach(access, store, access.tagTtlMs);
  }

  /** A replica that cannot confirm the shared allowlist decides nothing from it (fail closed, 503 naming why). */
  private confirmed(): void {
    const reason = this.store.unconfirmed();
    if (reason) throw unconfirmedError(reason, 'not served: this replica cannot confirm the allowlist in force');
  }

  async checkTag(host: string, name: string, tag: string, client?: string): Promise<void> {
    this.confirmed();
    const verdict = await this.tagVerdict(host, name, tag);
    if (verdict === 'yes') return;
    if (verdict === 'unknown') throw this.access.closed('MANIFEST_UNKNOWN', { name, tag });
    throw this.deny(host, name, `:${tag}`, client);
  }

  async checkDigest(host: string, name: string, digest: string, client?: string, miss: ClosedKind = 'MANIFEST_UNKNOWN'): Promise<void> {
    this.confirmed();
    const verdict = await this.digestVerdict(host, name, digest, miss === 'BLOB_UNKNOWN' ? 'blob' : 'manifest');
    if (verdict === 'yes') return;
    if (verdict === 'unknown') throw this.access.closed(miss, { name, digest });
    throw this.deny(host, name, `@${digest}`, client);
  }

  async checkRepository(host: string, name: string, client?: string): Promise<void> {
    this.confirmed();
    if (this.allowlist.matchesRepository(host, name)) return;
    throw this.deny(host, name, '/', client);
  }

  async filterTags(host: string, name: string, tags: string[]): Promise<string[]> {
    this.confirmed();
    const out: string[] = [];
    // A listing is filtered by what the store can place: a page of signature tags must not cost a walk upstream each.
    for (const t of tags) if ((await this.tagVerdict(host, name, t, false)) === 'yes') out.push(t);
    return out;
  }

  private async tagVerdict(host: string, name: string, tag: string, askUpstream = true): Promise<Verdict> {
    if (this.allowlist.matchTag(host, name, tag)) return 'yes';
    // Talos' signature checks ask for sha256-<hex> and sha256-<hex>.sig of an image it may pull.
    const subject = signatureSubject(tag);
    return subject === undefined ? 'no' : this.digestVerdict(host, name, subject, askUpstream ? 'manifest' : undefined);
  }

  /** `kind` undefined: decide from the store alone. */
  private async digestVerdict(host: string, name: string, digest: string, kind: TargetKind | undefined): Promise<Verdict> {
    // A repository no rule names costs nothing more than this lookup.
    if (!this.allowlist.matchesRepository(host, name)) return 'no';
    if (this.allowlist.isDigestPinned(host, name, digest)) return 'yes';
    const reachable = await this.reachable(host, name);
    if (reachable.has(digest)) return 'yes';
    // A repository allowed for every tag may fetch any digest of its own from upstream (the upstream
    // enforces membership), but a cached digest is served only when this repository links to it:
    // reachable from its manifests, or fetched through it.
    if (this.allowlist.allowsAnyTag(host, name)) {
      return !(await this.store.stat(digest)) || (await this.store.isBlobLinked(host, name, digest)) ? 'yes' : 'no';
    }
    return kind === undefined ? 'no' : this.fromRuleTags(host, name, digest, kind);
  }

  /** The store could not place the digest: in a window ask the upstream's tags; outside, only a full store says no. */
  private async fromRuleTags(host: string, name: string, digest: string, kind: TargetKind): Promise<Verdict> {
    const rules = this.allowlist.namedTags(host, name);
    if (rules.exact.size === 0 && rules.patterns.length === 0) return 'no';
    if (this.access.isOpen()) {
      return (await this.upstreamReach.reachable(host, name, digest, kind, rules, this.allowlist.version)) ? 'yes' : 'no';
    }
    if (rules.patterns.length > 0) return 'unknown';
    for (const tag of rules.exact) if (!(await this.store.getTag(host, name, tag))) return 'unknown';
    return 'no';
  }

  /** Every digest reachable from the repository's allowed tags and pins; cached until either side changes. */
  private reachable(host: string, name: string): Promise<Set<string>> {
    const key = `${host}/${name}`;
    const cached = this.reach.get(key);
    if (cached && cached.allowlistVersion === this.allowlist.version && cached.storeGeneration === this.store.generation) {
      return cached.digests;
    }
    // Labelled with the versions it started from: a change made while it walks makes the next request walk again.
    const entry: Reach = { allowlistVersion: this.allowlist.version, storeGeneration: this.store.generation, digests: this.computeReach(host, name) };
    this.reach.set(key, entry);
    // A failed walk (a store read error) is not remembered.
    entry.digests.catch(() => {
      if (this.reach.get(key) === entry) this.reach.delete(key);
    });
    return entry.digests;
  }

  private async computeReach(host: string, name: string): Promise<Set<string>> {
    const roots = new Set(this.allowlist.pinnedDigests(host, name));
    const tagAllowed = this.allowlist.tagRulesFor(host, name);
    for (const tag of await this.store.listTags(host, name)) {
      if (!tagAllowed(tag)) continue;
      const d = await this.store.getTag(host, name, tag);
      if (d) roots.add(d);
    }
    if (this.allowlist.allowsAnyTag(host, name)) for (const d of await this.store.linkedManifests(host, name)) roots.add(d);
    return this.walk(host, name, [...roots]);
  }

  /** Digests reachable from `roots` through the stored manifests, referrers and signature tags of this repository. */
  private walk(host: string, name: string, roots: string[]): Promise<Set<string>> {
    return reachableFrom(repositoryGraph(this.store, host, name), roots, { maxDepth: MAX_DEPTH, maxNodes: MAX_REACHABLE });
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
