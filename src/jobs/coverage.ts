// The air-gap readiness report (`sluice status --coverage`, GET /api/v1/coverage): for every allowlist rule,
// what the store holds for it — resolved digest, platforms present vs. expected, missing blobs, signatures.
// Reads the store through the one graph walker (oci/graph.ts); writes nothing.
import { walkGraph, type GraphNode } from '../oci/graph.js';
import { repositoryGraph } from '../oci/repository-graph.js';
import { platformOf, platformWanted } from '../oci/platform.js';
import { nameGlobToRegExp, signatureSubject, tagGlobToRegExp } from '../policy/matcher.js';
import { parseRule, type RuleSpec } from '../policy/rules.js';
import type { Store } from '../store/store.js';
import type { SiteSignatureState, SiteSigner } from './site-signer.js';

/** What the report reads; the Store provides all of it. */
export type CoverageStore = Pick<Store, 'getTag' | 'getManifest' | 'allBlobs' | 'referrers' | 'listTags' | 'repositories'>;

/** The lookups one image's walk needs: `hasBlob` answers from one listing of the store, not a stat per blob. */
interface ImageSource extends Pick<CoverageStore, 'getTag' | 'getManifest' | 'referrers'> {
  hasBlob(digest: string): boolean;
}

/** complete: everything there; incomplete: the image is there but not all of it; missing: nothing for it. */
export type ImageState = 'complete' | 'incomplete' | 'missing';
/** A rule's state; `empty`: a glob or any-tag rule that matches nothing stored yet (nothing is incomplete). */
export type RuleState = ImageState | 'empty';

export interface PlatformCoverage {
  /** What the index should hold: the configured `platforms`, or every platform the index lists. */
  expected: string[];
  /** Expected platforms whose manifest is stored (their blobs may still be missing: see missingBlobs). */
  present: string[];
  /** Expected platforms the index lists whose manifest is not stored: a sync fetches them. */
  missing: string[];
  /** Configured platforms the index does not list: no sync can fetch them (reported, not counted as incomplete). */
  notInIndex: string[];
}

export interface ImageCoverage {
  /** The tag or digest the image is known by. */
  reference: string;
  /** What the tag resolves to in the store (the digest itself for a pin); null when the tag is unknown. */
  digest: string | null;
  mediaType: string | null;
  state: ImageState;
  platforms: PlatformCoverage | null;
  /** Manifests the graph names that are not stored (a platform, a signature), digests. */
  missingManifests: string[];
  /** Configs and layers the stored manifests name that are not stored. */
  missingBlobs: string[];
  /** cosign signature/attestation tags and referrers stored for the image (digests). */
  signatures: { tags: string[]; referrers: string[] };
  /** Stored manifests and blobs of the image, and their bytes. */
  storedBlobs: number;
  storedBytes: number;
  /** With signing on: the site signature of the image and of each stored manifest of its index (all needed). */
  siteSignatures?: SiteSignatureState[];
}

export interface RuleCoverage {
  rule: string;
  /** tag / digest: one exact image; tags: a tag glob or every tag of a repository; repositories: a name glob. */
  kind: 'tag' | 'digest' | 'tags' | 'repositories';
  state: RuleState;
  images: Array<ImageCoverage & { name: string }>;
}

export interface CoverageReport {
  generatedAt: string;
  /** The configured expectation, 'all' when none is configured. */
  platforms: string[] | 'all';
  /** True when no rule is incomplete or missing: the store holds everything the allowlist names. */
  ready: boolean;
  summary: Record<RuleState, number> & { rules: number };
  rules: RuleCoverage[];
}

export interface CoverageOptions {
  /** `os/arch[/variant]` every index should hold; empty or absent: all of the index. */
  platforms?: readonly string[];
  now?: () => Date;
  /** With signing on: an admitted image without a site signature is incomplete. */
  signer?: Pick<SiteSigner, 'status'>;
}

/** Lookups in flight at once: the store answers from files, so a cold run waits on the disk, not the CPU. */
const CONCURRENCY = 16;

export async function coverageReport(store: CoverageStore, rules: readonly string[], opts: CoverageOptions = {}): Promise<CoverageReport> {
  const platforms = opts.platforms ?? [];
  // One listing of every blob (a few hundred ms for 100,000 on fs, a few list calls on an object store) is
  // cheaper than a stat per layer, and is the truth now rather than a memo of earlier stats.
  const present = new Set<string>();
  for await (const digest of store.allBlobs()) present.add(digest);
  const run = new ReportRun(store, present, platforms, opts.signer);
  const out = await mapLimit(rules, (text) => run.rule(parseRule(text)));
  const summary = { rules: out.length, complete: 0, incomplete: 0, missing: 0, empty: 0 };
  for (const r of out) summary[r.state]++;
  return {
    generatedAt: (opts.now?.() ?? new Date()).toISOString(),
    platforms: platforms.length > 0 ? [...platforms] : 'all',
    ready: summary.incomplete === 0 && summary.missing === 0,
    summary,
    rules: out,
  };
}

/** One report: each repository's tag list is read once, so absent signature tags cost no lookup. */
class ReportRun {
  private readonly tagLists = new Map<string, Promise<Set<string>>>();

  constructor(
    private readonly store: CoverageStore,
    private readonly present: ReadonlySet<string>,
    private readonly platforms: readonly string[],
    private readonly signer?: Pick<SiteSigner, 'status'>,
  ) {}

  tags(host: string, name: string): Promise<Set<string>> {
    const key = `${host}/${name}`;
    let p = this.tagLists.get(key);
    if (!p) this.tagLists.set(key, (p = this.store.listTags(host, name).then((t) => new Set(t))));
    return p;
  }

  async rule(spec: RuleSpec): Promise<RuleCoverage> {
    const exact = spec.digest ?? (spec.tag !== undefined && !spec.tag.includes('*') ? spec.tag : undefined);
    if (!spec.nameGlob && exact !== undefined) {
      const image = await this.image(spec.host, spec.name, exact);
      return { rule: spec.text, kind: spec.digest ? 'digest' : 'tag', state: image.state, images: [{ name: spec.name, ...image }] };
    }
    const names = spec.nameGlob ? await matchingNames(this.store, spec) : [spec.name];
    const tagRe = spec.tag === undefined ? undefined : tagGlobToRegExp(spec.tag);
    const wantedTags: Array<{ name: string; tag: string }> = [];
    for (const name of names) {
      for (const tag of [...(await this.tags(spec.host, name))].sort()) {
        // Signature tags are reported with the image they sign, not as images of their own.
        if (signatureSubject(tag) === undefined && (!tagRe || tagRe.test(tag))) wantedTags.push({ name, tag });
      }
    }
    const images = await mapLimit(wantedTags, async ({ name, tag }) => ({ name, ...(await this.image(spec.host, name, tag)) }));
    return { rule: spec.text, kind: spec.nameGlob ? 'repositories' : 'tags', state: globState(images), images };
  }

  async image(host: string, name: string, reference: string): Promise<ImageCoverage> {
    const tags = await this.tags(host, name);
    const s = this.store;
    const source: ImageSource = {
      getTag: async (h, n, t) => (tags.has(t) ? s.getTag(h, n, t) : undefined),
      getManifest: (d) => s.getManifest(d),
      referrers: (h, n, d) => s.referrers(h, n, d),
      hasBlob: (d) => this.present.has(d),
    };
    const image = await imageCoverage(source, host, name, reference, this.platforms);
    if (this.signer && image.digest && image.state !== 'missing') {
      image.siteSignatures = await this.signer.status(host, name, image.digest);
      if (image.siteSignatures.some((s) => !s.signed)) image.state = 'incomplete';
    }
    return image;
  }
}

/** `fn` over `items` with at most CONCURRENCY at once; results in the order of `items`. */
async function mapLimit<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i] as T);
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker));
  return out;
}

function globState(images: readonly ImageCoverage[]): RuleState {
  if (images.length === 0) return 'empty';
  return images.every((i) => i.state === 'complete') ? 'complete' : 'incomplete';
}

async function matchingNames(store: CoverageStore, spec: RuleSpec): Promise<string[]> {
  const re = nameGlobToRegExp(spec.name);
  return (await store.repositories()).filter((r) => r.host === spec.host && re.test(r.name)).map((r) => r.name).sort();
}

/** One image as a client pulls it (the wanted platforms of an index, their configs and layers) and its signatures. */
export async function imageCoverage(
  store: ImageSource, host: string, name: string, reference: string, platforms: readonly string[],
): Promise<ImageCoverage> {
  const digest = reference.startsWith('sha256:') ? reference : await store.getTag(host, name, reference);
  const image: ImageCoverage = {
    reference, digest: digest ?? null, mediaType: null, state: 'missing', platforms: null,
    missingManifests: [], missingBlobs: [], signatures: { tags: [], referrers: [] }, storedBlobs: 0, storedBytes: 0,
  };
  if (!digest) return image;
  const walk = await walkGraph(repositoryGraph(store, host, name), [digest], {
    children: 'by-parent',
    follow: (child) => platformWanted(child, platforms),
    signatures: 'roots-and-indexes',
    onNode: (node) => countNode(store, image, node),
  });
  const root = walk.nodes[0];
  if (!root || root.kind === 'missing' || root.kind === 'blob') return image;
  image.mediaType = root.manifest?.mediaType ?? null;
  if (root.kind === 'index') image.platforms = platformCoverage(walk.nodes, platforms);
  const whole = image.missingManifests.length === 0 && image.missingBlobs.length === 0 && root.kind !== 'invalid';
  image.state = whole ? 'complete' : 'incomplete';
  return image;
}

function countNode(store: ImageSource, image: ImageCoverage, node: GraphNode): void {
  if (node.via === 'signature') image.signatures.tags.push(node.digest);
  if (node.via === 'referrer') image.signatures.referrers.push(node.digest);
  if (node.kind === 'missing') {
    if (node.via !== 'root') image.missingManifests.push(node.digest);
    return;
  }
  if (!node.manifest) return;
  image.storedBlobs++;
  image.storedBytes += node.manifest.body.length;
  if (node.kind !== 'manifest') return;
  const seen = new Set<string>();
  for (const d of node.children) {
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    if (!store.hasBlob(d.digest)) image.missingBlobs.push(d.digest);
    else {
      // A stored blob matched its digest at ingest, so its size is the descriptor's.
      image.storedBlobs++;
      image.storedBytes += d.size;
    }
  }
}

function platformCoverage(nodes: readonly GraphNode[], platforms: readonly string[]): PlatformCoverage {
  const listed: string[] = [];
  const present: string[] = [];
  const missing: string[] = [];
  for (const n of nodes) {
    if (n.via !== 'child' || !n.descriptor) continue;
    const p = platformOf(n.descriptor);
    if (p === undefined) continue;
    listed.push(p);
    (n.kind === 'missing' ? missing : present).push(p);
  }
  const covers = (want: string): boolean => listed.some((p) => p === want || p.split('/').slice(0, 2).join('/') === want);
  const notInIndex = platforms.filter((want) => !covers(want));
  return { expected: platforms.length > 0 ? [...platforms] : listed, present, missing, notInIndex };
}
