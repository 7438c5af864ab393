// One repository's manifest graph as the mirror serves it: stored manifests, and the repository's own signature
// tags and referrers. The decision, gc, coverage, export and upstream reach all read it here, so "what the
// allowlist allows" and "what gc keeps" are the same walk. Pure over the lookups the caller passes in.
import { walkGraph, type GraphSource, type ManifestBody, type Root } from './graph.js';
import type { Descriptor } from './manifest.js';
import { isDigest } from './reference.js';

type Maybe<T> = Promise<T> | T;

/** What a repository's graph is read from (the Store has all three). */
export interface RepositoryLookup {
  getManifest(digest: string): Maybe<ManifestBody | undefined>;
  getTag(host: string, name: string, tag: string): Maybe<string | undefined>;
  referrers(host: string, name: string, digest: string): Maybe<readonly Descriptor[]>;
}

/** The graph of host/name: manifests by digest (any repository's bytes), tags and referrers of host/name only. */
export function repositoryGraph(lookup: RepositoryLookup, host: string, name: string): GraphSource {
  return {
    manifest: (digest) => lookup.getManifest(digest),
    referrers: (digest) => lookup.referrers(host, name, digest),
    tag: (tag) => lookup.getTag(host, name, tag),
  };
}

export interface ReachLimits {
  /** Nodes deeper than this are not looked up (roots are depth 0). */
  maxDepth?: number;
  /** No further level is looked up once this many digests are known. */
  maxNodes?: number;
}

/**
 * Every digest reachable from `roots`: manifests, configs, layers, signature tags and referrers, at every level.
 * Only sha256 children can be stored or asked for; anything else an upstream wrote is skipped, not fatal.
 */
export async function reachableFrom(graph: GraphSource, roots: readonly Root[], limits: ReachLimits = {}): Promise<Set<string>> {
  if (roots.length === 0) return new Set();
  const walk = await walkGraph(graph, roots, {
    children: 'all',
    follow: (child) => isDigest(child.digest),
    signatures: 'all',
    maxDepth: limits.maxDepth,
    maxNodes: limits.maxNodes,
  });
  return new Set(walk.nodes.map((n) => n.digest));
}
