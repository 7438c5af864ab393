// What `sluice export` writes, decided before a byte is written: the images the rules select in the store, every
// blob each needs (platforms, signature tags and referrers included), what is missing, and what `--since` leaves out.
import { walkGraph, type GraphNode, type GraphSource } from '../oci/graph.js';
import { repositoryGraph } from '../oci/repository-graph.js';
import type { Descriptor } from '../oci/manifest.js';
import { platformWanted } from '../oci/platform.js';
import { Matcher, parseRule, type RuleSpec } from '../policy/allowlist.js';
import type { Store } from '../store/store.js';

const MAX_DEPTH = 4;

/** One index.json entry of the bundle: an image under its full reference (a tag, or a digest for referrers). */
export interface PlannedImage {
  /** `host/name:tag` or `host/name@sha256:…`. */
  ref: string;
  host: string;
  name: string;
  root: Descriptor;
  /** Manifests and blobs this image needs that the store does not hold. */
  missing: string[];
}

export interface PlannedBlob {
  digest: string;
  sizeBytes: number;
  /** The first image that needs it (for messages). */
  ref: string;
}

export interface ExportPlan {
  images: PlannedImage[];
  /** Every blob to write, manifests included, each once, in the order first met. */
  blobs: PlannedBlob[];
  /** Blobs the images need that `since` lists: left out; the importing store must hold them. */
  assumed: string[];
  /** Exact rules (a tag or a digest) that name nothing in the store. */
  notStored: string[];
}

export interface PlanOptions {
  /** `os/arch[/variant]`: only these platforms of an index; empty or absent = all. */
  platforms?: string[];
  /** Digests the other side already has (a receipt's contents): never written. */
  since?: ReadonlySet<string>;
}

/** Parses the rules an export selects by (the operator's, or the allowlist's); throws RuleError on a bad one. */
export function exportRules(texts: readonly string[]): RuleSpec[] {
  return texts.map((t) => parseRule(t));
}

export async function planExport(store: Store, rules: readonly RuleSpec[], opts: PlanOptions = {}): Promise<ExportPlan> {
  const plan: ExportPlan = { images: [], blobs: [], assumed: [], notStored: [] };
  const roots = await selectRoots(store, rules, plan);
  const seenBlobs = new Set<string>();
  const seenRefs = new Set<string>();
  const add = (image: PlannedImage): void => {
    if (seenRefs.has(image.ref)) return;
    seenRefs.add(image.ref);
    plan.images.push(image);
  };
  for (const root of roots) {
    const found = await walkImage(store, root, opts.platforms ?? []);
    add({ ...root, missing: found.missing });
    for (const extra of found.extraRoots) add({ ...extra, missing: [] });
    for (const b of found.blobs) {
      if (seenBlobs.has(b.digest)) continue;
      seenBlobs.add(b.digest);
      if (opts.since?.has(b.digest)) plan.assumed.push(b.digest);
      else plan.blobs.push({ ...b, ref: root.ref });
    }
  }
  return plan;
}

/** An image the rules select, before its blobs are looked at. */
export type Root = Omit<PlannedImage, 'missing'>;

/** Stored tags the rules allow, and stored manifests they pin; exact rules that find nothing are noted. */
export async function selectRoots(store: Store, rules: readonly RuleSpec[], plan: ExportPlan): Promise<Root[]> {
  const matcher = new Matcher(rules.map((spec) => ({ spec, record: spec.text })));
  const out: Root[] = [];
  const hit = new Set<string>();
  const repos = (await store.repositories()).sort((a, b) => `${a.host}/${a.name}`.localeCompare(`${b.host}/${b.name}`));
  for (const { host, name } of repos) {
    if (!matcher.matchesRepository(host, name)) continue;
    for (const tag of await store.listTags(host, name)) {
      const rule = matcher.matchTag(host, name, tag);
      const digest = rule === undefined ? undefined : await store.getTag(host, name, tag);
      const m = digest === undefined ? undefined : await store.getManifest(digest);
      if (!rule || !m) continue;
      hit.add(rule);
      hit.add(`${host}/${name}:${tag}`);
      out.push({ ref: `${host}/${name}:${tag}`, host, name, root: { mediaType: m.mediaType, digest: m.digest, size: m.body.length } });
    }
    for (const digest of matcher.pinnedDigests(host, name)) {
      const m = await store.getManifest(digest);
      if (!m) continue;
      hit.add(`${host}/${name}@${digest}`);
      out.push({ ref: `${host}/${name}@${digest}`, host, name, root: { mediaType: m.mediaType, digest, size: m.body.length } });
    }
  }
  for (const r of rules) {
    const exact = !r.nameGlob && (r.digest !== undefined || (r.tag !== undefined && !r.tag.includes('*')));
    const key = r.digest !== undefined ? `${r.host}/${r.name}@${r.digest}` : r.text;
    if (exact && !hit.has(key) && !hit.has(r.text)) plan.notStored.push(r.text);
  }
  return out;
}

interface Walked {
  blobs: Array<{ digest: string; sizeBytes: number }>;
  missing: string[];
  /** Signature tags and referrers met on the way: imported as their own entries so their tags and subjects come too. */
  extraRoots: Root[];
}

/** Every blob of one image as it is in the store; absent ones are listed, never guessed. */
async function walkImage(store: Store, root: Root, platforms: string[]): Promise<Walked> {
  const out: Walked = { blobs: [], missing: [], extraRoots: [] };
  // Which tag each signature came from, so it is exported under that tag.
  const signatureTags = new Map<string, string>();
  const graph = repositoryGraph(store, root.host, root.name);
  const source: GraphSource = {
    ...graph,
    tag: async (tag) => {
      const d = await graph.tag?.(tag);
      if (d) signatureTags.set(d, tag);
      return d;
    },
  };
  await walkGraph(source, [root.root], {
    order: 'depth',
    children: 'by-media-type',
    follow: (child) => platformWanted(child, platforms),
    // Every manifest's: site signatures are made per platform manifest too, and a bundle must carry them.
    signatures: 'all',
    maxDepth: MAX_DEPTH,
    onNode: async (node) => {
      await record(store, node, out);
      const extra = extraRoot(root, node, signatureTags);
      if (extra) out.extraRoots.push(extra);
    },
  });
  return out;
}

async function record(store: Store, node: GraphNode, out: Walked): Promise<void> {
  if (node.kind === 'missing' || node.kind === 'truncated' || node.kind === 'invalid') {
    out.missing.push(node.digest);
    return;
  }
  if (node.manifest) {
    out.blobs.push({ digest: node.digest, sizeBytes: node.manifest.body.length });
    return;
  }
  const info = await store.stat(node.digest);
  if (info) out.blobs.push({ digest: node.digest, sizeBytes: info.sizeBytes });
  else out.missing.push(node.digest);
}

function extraRoot(root: Root, node: GraphNode, signatureTags: Map<string, string>): Root | undefined {
  if ((node.via !== 'signature' && node.via !== 'referrer') || !node.manifest) return undefined;
  const tag = node.via === 'signature' ? signatureTags.get(node.digest) : undefined;
  const ref = tag ? `${root.host}/${root.name}:${tag}` : `${root.host}/${root.name}@${node.digest}`;
  return { ref, host: root.host, name: root.name, root: { mediaType: node.manifest.mediaType, digest: node.digest, size: node.manifest.body.length } };
}
