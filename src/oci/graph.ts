// The one walker of the manifest graph: index → manifests → config/layers, plus referrers and cosign's
// signature tags. Pure over a lookup its caller passes in; policy, sync, verify and import all walk with it.
import { childDescriptors, isIndexType, MANIFEST_MEDIA_TYPES, parseManifest, type Descriptor, type ManifestDoc } from './manifest.js';

export interface ManifestBody {
  mediaType: string;
  body: Buffer;
  /** The parsed body, when the lookup parsed it already. */
  doc?: ManifestDoc;
}

/** What the walker may ask; each may answer synchronously or with a promise, and may throw to end the walk. */
export interface GraphSource {
  /** The manifest stored under `digest`, or undefined (absent, or not a manifest). */
  manifest(digest: string, descriptor?: Descriptor): Promise<ManifestBody | undefined> | ManifestBody | undefined;
  /** Referrers of `digest` (OCI referrers API / the store's subject index). */
  referrers?(digest: string): Promise<readonly Descriptor[]> | readonly Descriptor[];
  /** The digest a tag points at, or undefined. */
  tag?(name: string): Promise<string | undefined> | string | undefined;
}

/**
 * index / manifest: read; invalid: read but not a JSON object; missing: looked up, not found;
 * blob: not looked up (its descriptor is no manifest); truncated: beyond the walk's limits, not looked up.
 */
export type NodeKind = 'index' | 'manifest' | 'invalid' | 'missing' | 'blob' | 'truncated';

export interface GraphNode {
  digest: string;
  /** The descriptor it was reached through (absent for roots given as digests and for signature tags). */
  descriptor?: Descriptor;
  via: 'root' | 'child' | 'referrer' | 'signature';
  depth: number;
  kind: NodeKind;
  manifest?: ManifestBody;
  doc?: ManifestDoc;
  /** Every descriptor the manifest lists (manifests, layers, blobs, config), duplicates kept. */
  children: Descriptor[];
}

export interface WalkOptions {
  /** breadth: level by level (pulls, reachability); depth: children before the next sibling (layouts). */
  order?: 'breadth' | 'depth';
  /**
   * Which child descriptors become nodes. all (the default): every one, each looked up (reachability);
   * by-media-type: every one, looked up when its media type is a manifest's (layouts);
   * by-parent: an index's children only; a manifest's config and layers stay in `children` (pulls).
   */
  children?: 'all' | 'by-media-type' | 'by-parent';
  /** A child descriptor is walked only if this says so (platform filters, digest algorithms). */
  follow?: (child: Descriptor, parent: GraphNode) => boolean;
  /** Whose signature tags and referrers are looked up: every looked-up node, roots and indexes, or none. */
  signatures?: 'all' | 'roots-and-indexes' | 'none';
  /** Nodes deeper than this are not looked up (roots are depth 0). */
  maxDepth?: number;
  /** No further level (breadth) or node (depth) is looked up once this many digests are known. */
  maxNodes?: number;
  /** Called for each node once it is looked up (or found beyond the limits), before its children. */
  onNode?: (node: GraphNode) => void | Promise<void>;
  /** depth order only: called after a read node's children. */
  onLeave?: (node: GraphNode) => void | Promise<void>;
}

export interface GraphWalk {
  /** Every node, in visiting order. */
  nodes: GraphNode[];
  /** Digests looked up as manifests and not found. */
  missing: string[];
  /** Whether a limit kept some node from being looked up. */
  truncated: boolean;
}

/** cosign's signature, attestation and plain tags for a digest, in the order they are asked for. */
export function signatureTags(digest: string): string[] {
  const hex = digest.slice('sha256:'.length);
  return [`sha256-${hex}.sig`, `sha256-${hex}.att`, `sha256-${hex}`];
}

export type Root = string | Descriptor;

export async function walkGraph(source: GraphSource, roots: readonly Root[], opts: WalkOptions = {}): Promise<GraphWalk> {
  const walker = new Walker(source, opts);
  const start = roots.map((r) => walker.discover(typeof r === 'string' ? r : r.digest, typeof r === 'string' ? undefined : r, 'root', 0));
  const first = start.filter((n): n is GraphNode => n !== undefined);
  if (opts.order === 'depth') for (const n of first) await walker.depthFirst(n);
  else await walker.breadthFirst(first);
  return walker.result;
}

interface Edge {
  digest: string;
  descriptor?: Descriptor;
  via: GraphNode['via'];
}

class Walker {
  readonly result: GraphWalk = { nodes: [], missing: [], truncated: false };
  private readonly seen = new Set<string>();
  private readonly maxDepth: number;
  private readonly maxNodes: number;

  constructor(
    private readonly source: GraphSource,
    private readonly opts: WalkOptions,
  ) {
    this.maxDepth = opts.maxDepth ?? Infinity;
    this.maxNodes = opts.maxNodes ?? Infinity;
  }

  /** A node for a digest not seen before (the seen set is what makes cycles harmless). */
  discover(digest: string, descriptor: Descriptor | undefined, via: GraphNode['via'], depth: number): GraphNode | undefined {
    if (this.seen.has(digest)) return undefined;
    this.seen.add(digest);
    return { digest, descriptor, via, depth, kind: 'truncated', children: [] };
  }

  async breadthFirst(level: GraphNode[]): Promise<void> {
    for (let depth = 0; level.length > 0; depth++) {
      const within = depth <= this.maxDepth && this.seen.size < this.maxNodes;
      const next: GraphNode[] = [];
      for (const node of level) {
        await this.visit(node, within);
        if (!within) continue;
        for (const e of await this.edges(node)) {
          const child = this.discover(e.digest, e.descriptor, e.via, depth + 1);
          if (child) next.push(child);
        }
      }
      level = next;
    }
  }

  /** Each child is claimed only when its turn comes, so a node is visited where depth-first first meets it. */
  async depthFirst(node: GraphNode): Promise<void> {
    const within = node.depth <= this.maxDepth && this.seen.size <= this.maxNodes;
    await this.visit(node, within);
    if (!within || !isRead(node)) return;
    for (const e of await this.edges(node)) {
      const child = this.discover(e.digest, e.descriptor, e.via, node.depth + 1);
      if (child) await this.depthFirst(child);
    }
    await this.opts.onLeave?.(node);
  }

  /** Looks the node up (unless beyond the limits or a plain blob), records it and tells the caller. */
  private async visit(node: GraphNode, within: boolean): Promise<void> {
    if (this.opts.children === 'by-media-type' && node.descriptor && !MANIFEST_MEDIA_TYPES.includes(node.descriptor.mediaType)) node.kind = 'blob';
    else if (!within) this.result.truncated = true;
    else await this.read(node);
    this.result.nodes.push(node);
    await this.opts.onNode?.(node);
  }

  private async read(node: GraphNode): Promise<void> {
    const m = await this.source.manifest(node.digest, node.descriptor);
    if (!m) {
      const isManifest = !node.descriptor || MANIFEST_MEDIA_TYPES.includes(node.descriptor.mediaType);
      node.kind = isManifest ? 'missing' : 'blob';
      if (isManifest) this.result.missing.push(node.digest);
      return;
    }
    node.manifest = m;
    node.doc = m.doc ?? parseManifest(m.body);
    node.kind = !node.doc ? 'invalid' : isIndexType(m.mediaType) ? 'index' : 'manifest';
    if (node.doc) node.children = childDescriptors(node.doc);
  }

  /** The steps out of `node`: its walked children, then its signature tags, then its referrers. */
  private async edges(node: GraphNode): Promise<Edge[]> {
    const out: Edge[] = [];
    const walked = this.opts.children === 'by-parent' && node.kind !== 'index' ? [] : node.children;
    for (const c of walked) if (this.opts.follow?.(c, node) ?? true) out.push({ digest: c.digest, descriptor: c, via: 'child' });
    if (!this.wantsSignatures(node)) return out;
    for (const tag of signatureTags(node.digest)) {
      const digest = await this.source.tag?.(tag);
      if (digest) out.push({ digest, via: 'signature' });
    }
    for (const r of (await this.source.referrers?.(node.digest)) ?? []) out.push({ digest: r.digest, descriptor: r, via: 'referrer' });
    return out;
  }

  private wantsSignatures(node: GraphNode): boolean {
    const which = this.opts.signatures ?? 'none';
    if (which === 'none' || node.kind === 'truncated') return false;
    return which === 'all' || node.via === 'root' || node.kind === 'index';
  }
}

function isRead(node: GraphNode): boolean {
  return node.kind === 'index' || node.kind === 'manifest' || node.kind === 'invalid';
}
