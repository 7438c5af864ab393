// In a window, whether a digest is reachable from the tags a repository's rules name *as the upstream has them
// now*: the tags are resolved upstream (bounded, coalesced, cached for tagTtl), then walked with the one graph
// walker, manifests read from the store or fetched (and stored, bounded) when absent; a "no" holds for tagTtl.
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import { walkGraph, type GraphSource } from '../oci/graph.js';
import { repositoryGraph } from '../oci/repository-graph.js';
import { isIndexType, MANIFEST_MEDIA_TYPES, type Descriptor } from '../oci/manifest.js';
import { isDigest } from '../oci/reference.js';
import type { TagRules } from '../policy/allowlist.js';
import type { Store, StoredManifest } from '../store/store.js';

/** At most this many tags of one repository are resolved upstream for one decision (exact rules first). */
export const MAX_RESOLVED_TAGS = 100;
/**
 * At most this many manifests are fetched upstream for one decision: an index of 10,000 entries must not cost
 * 10,000 GETs for one request of a random digest. What lies beyond is not reached (the answer is "no").
 */
export const MAX_FETCHED_MANIFESTS = 100;
/** Tags resolved upstream at once. */
const RESOLVE_CONCURRENCY = 8;
const MAX_DEPTH = 4;
const MAX_NODES = 50_000;

/** What the decision asks of upstream access (upstream-access.ts): tag resolution, a bounded tags/list, manifest pulls. */
export interface UpstreamView {
  isOpen(): boolean;
  /** host/name:tag as the upstream has it now: coalesced, at most once per tagTtl; manifest and tag are stored. */
  resolveTag(host: string, name: string, tag: string): Promise<string>;
  /** The upstream's tags of host/name (every page, bounded). */
  listTags(host: string, name: string): Promise<string[]>;
  /** A manifest of host/name by digest: fetched, verified and stored (one fetch per digest at a time). */
  pullManifest(host: string, name: string, digest: string): Promise<StoredManifest>;
}

/** What is asked for: a manifest (met in an index) or a blob (met in an image manifest). */
export type TargetKind = 'manifest' | 'blob';

interface Target {
  digest: string;
  kind: TargetKind;
}

/** Thrown through the walker to end it as soon as the digest is met. */
class Found extends Error {}

interface Answer {
  version: number;
  yes: boolean;
}

/** Every digest one finished walk of a repository's rule tags met, for the allowlist version it was made under. */
interface Walked {
  version: number;
  reached: Set<string>;
}

/** One decision's walk: what it met, and how many manifests it may still fetch. */
interface Budget {
  reached: Set<string>;
  fetchesLeft: number;
  failures: unknown[];
}

export class UpstreamReach {
  private readonly listings: LRUCache<string, string[]>;
  private readonly answers: LRUCache<string, Answer>;
  /** Per repository and kind: a walk that found nothing answers every other digest too, until tagTtl passes. */
  private readonly walked: LRUCache<string, Walked>;
  private readonly pending = new Map<string, Promise<boolean>>();

  constructor(
    private readonly view: UpstreamView,
    private readonly store: Store,
    ttlMs: number,
  ) {
    const ttl = Math.max(1, ttlMs);
    this.listings = new LRUCache<string, string[]>({
      max: 2_000,
      ttl,
      fetchMethod: async (key) => {
        const [host = '', name = ''] = key.split('\u0000');
        return this.view.listTags(host, name);
      },
    });
    this.answers = new LRUCache<string, Answer>({ maxSize: 20_000, sizeCalculation: () => 1, ttl });
    this.walked = new LRUCache<string, Walked>({ max: 2_000, maxSize: 1_000_000, sizeCalculation: (w) => w.reached.size + 1, ttl });
  }

  /**
   * Whether `digest` is reachable from a tag `rules` name, as the upstream has it now. One decision per
   * (repository, digest) at a time; its answer holds for tagTtl or until the rules change (`version`).
   * When no tag could be resolved and some upstream request failed, that failure is thrown instead of "no".
   * A manifest can only be listed by an index, so for one only indexes are read: an image manifest's children
   * are configs and layers, and it is fetched only when a blob is asked for.
   */
  reachable(host: string, name: string, digest: string, kind: TargetKind, rules: TagRules, version: number): Promise<boolean> {
    const key = `${host}/${name}@${digest}\u0000${kind}`;
    const known = this.answers.get(key);
    if (known && known.version === version) return Promise.resolve(known.yes);
    // A walk of this repository's rule tags that found nothing already met everything it could: no upstream request.
    const walk = this.walked.get(`${host}/${name}\u0000${kind}`);
    if (walk && walk.version === version) return Promise.resolve(walk.reached.has(digest));
    const running = this.pending.get(key);
    if (running) return running;
    const p = this.decide(host, name, { digest, kind }, rules, version)
      .then((yes) => {
        this.answers.set(key, { version, yes });
        return yes;
      })
      .finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    return p;
  }

  private async decide(host: string, name: string, target: Target, rules: TagRules, version: number): Promise<boolean> {
    const budget: Budget = { reached: new Set(), fetchesLeft: MAX_FETCHED_MANIFESTS, failures: [] };
    const { failures } = budget;
    const tags = await this.tagsToResolve(host, name, rules, failures);
    for (let i = 0; i < tags.length; i += RESOLVE_CONCURRENCY) {
      const batch = tags.slice(i, i + RESOLVE_CONCURRENCY);
      const roots = await Promise.allSettled(batch.map((t) => this.view.resolveTag(host, name, t)));
      for (const r of roots) {
        if (r.status === 'rejected') {
          if (!isNotFound(r.reason)) failures.push(r.reason);
          continue;
        }
        if (r.value === target.digest || (await this.walkFinds(host, name, r.value, target, budget))) return true;
      }
    }
    if (failures.length > 0) throw failures[0];
    this.walked.set(`${host}/${name}\u0000${target.kind}`, { version, reached: budget.reached });
    return false;
  }

  /** The exact tags (sorted), then glob matches from the upstream's list (newest-looking first), bounded. */
  private async tagsToResolve(host: string, name: string, rules: TagRules, failures: unknown[]): Promise<string[]> {
    const out = [...rules.exact].sort();
    if (rules.patterns.length > 0 && out.length < MAX_RESOLVED_TAGS) {
      try {
        const listed = (await this.listings.fetch(`${host}\u0000${name}`)) ?? [];
        const matches = listed.filter((t) => !rules.exact.has(t) && rules.patterns.some((re) => re.test(t)));
        out.push(...matches.sort().reverse());
      } catch (e) {
        if (!isNotFound(e)) failures.push(e);
      }
    }
    return out.slice(0, MAX_RESOLVED_TAGS);
  }

  /** Walks from `root` (store first, upstream for an absent manifest, within the budget) until `target` is met. */
  private async walkFinds(host: string, name: string, root: string, target: Target, budget: Budget): Promise<boolean> {
    // The repository's graph as the store has it, with absent manifests fetched upstream.
    const source: GraphSource = { ...repositoryGraph(this.store, host, name), manifest: (d) => this.manifest(host, name, d, budget) };
    const meet = (d: string): void => {
      budget.reached.add(d);
      if (d === target.digest) throw new Found();
    };
    meet(root);
    try {
      await walkGraph(source, [root], {
        children: 'all',
        // A config or layer is never fetched as a manifest: met by its digest, not followed.
        follow: (child: Descriptor) => {
          meet(child.digest);
          const read = target.kind === 'blob' ? MANIFEST_MEDIA_TYPES.includes(child.mediaType) : isIndexType(child.mediaType);
          return isDigest(child.digest) && read;
        },
        signatures: 'all',
        maxDepth: MAX_DEPTH,
        maxNodes: MAX_NODES,
        onNode: (node) => meet(node.digest),
      });
    } catch (e) {
      if (e instanceof Found) return true;
      throw e;
    }
    return false;
  }

  private async manifest(host: string, name: string, digest: string, budget: Budget): Promise<StoredManifest | undefined> {
    const stored = await this.store.getManifest(digest);
    if (stored || !this.view.isOpen() || budget.fetchesLeft <= 0) return stored;
    budget.fetchesLeft--;
    try {
      return await this.view.pullManifest(host, name, digest);
    } catch (e) {
      if (!isNotFound(e)) budget.failures.push(e);
      return undefined;
    }
  }
}

function isNotFound(e: unknown): boolean {
  return e instanceof RegistryError && e.status === 404;
}
