// What a Talos image cache export holds, decided before a byte is written: for each image the rules select, the
// files `talosctl images cache-create` writes for it (siderolabs/talos pkg/imager/cache/cache.go), nothing more.
import { walkGraph } from '../oci/graph.js';
import { isIndexType, type Descriptor } from '../oci/manifest.js';
import type { RuleSpec } from '../policy/allowlist.js';
import type { Store } from '../store/store.js';
import { selectRoots, type ExportPlan, type PlannedImage, type Root } from './export-plan.js';
import { platformWanted } from '../oci/platform.js';
import { BLOB_DIR, blobFile, digestFile, digestFileName, referenceFile, repositoryDir } from './talos-cache-paths.js';

const MAX_DEPTH = 4;

/** One file of the tree: a manifest (under `reference/` or `digest/`) or a blob, with the digest of its bytes. */
export interface CacheFile {
  path: string;
  digest: string;
  sizeBytes: number;
  /** The first image that needs it (for messages). */
  ref: string;
}

export interface CachePlan extends ExportPlan {
  /** Every file to write, each path once, in the order first met (manifests of an image before its blobs). */
  files: CacheFile[];
  /** Folders cache.go creates even when empty (`reference/` of an image cached by digest only, `blob/`). */
  dirs: string[];
}

export interface CachePlanOptions {
  /** `os/arch[/variant]` as `cache-create --platform`; empty = every platform (`--platform all`). */
  platforms: readonly string[];
  /** Digests the other side already has: their `digest/` and `blob/` files are left out (a tag's file never is). */
  since?: ReadonlySet<string>;
}

/**
 * The tags `cache-create --cosign-signatures` (its default) looks for beside an image, in its order: the first one
 * stored is cached with everything it references (processCosignSignature), the other is not. A signature sluice
 * stores under either tag — upstream's or the site's own — goes into the cache this way; referrers do not, since
 * neither cache-create nor the cache's registry (`talosctl image cache-serve`, machined's registryd) has the API.
 */
export const cosignSignatureTags = (digest: string): string[] => [`${digestFileName(digest)}.sig`, digestFileName(digest)];

export async function planTalosCache(store: Store, rules: readonly RuleSpec[], opts: CachePlanOptions): Promise<CachePlan> {
  const plan: CachePlan = { images: [], blobs: [], assumed: [], notStored: [], files: [], dirs: [BLOB_DIR] };
  const tree = new TreeBuilder(plan, opts.since);
  for (const root of await selectRoots(store, rules, plan)) {
    const image = await walkCached(store, root, opts.platforms, tree);
    tree.add(plan.images, image);
    const signature = await storedSignature(store, root);
    if (signature) tree.add(plan.images, await walkCached(store, signature, [], tree));
  }
  return plan;
}

/** The first of cosign's tags for the image that the store holds, as an image of its own (with its tag). */
async function storedSignature(store: Store, image: Root): Promise<Root | undefined> {
  for (const tag of cosignSignatureTags(image.root.digest)) {
    const digest = await store.getTag(image.host, image.name, tag);
    const m = digest === undefined ? undefined : await store.getManifest(digest);
    if (m) return { ref: `${image.host}/${image.name}:${tag}`, host: image.host, name: image.name, root: { mediaType: m.mediaType, digest: m.digest, size: m.body.length } };
  }
  return undefined;
}

/**
 * One image as cache.go writes it: its tag's file, its manifest under `digest/`, then — for an index — only the
 * children of the chosen platforms (`remote.WithPlatform`; every child for `all`), their manifests under `digest/`
 * and their config and layers under `blob/`. A chosen platform the index does not have is missing (cache-create fails).
 */
async function walkCached(store: Store, root: Root, platforms: readonly string[], tree: TreeBuilder): Promise<PlannedImage> {
  const missing: string[] = [];
  const { host, name } = root;
  tree.dir(`${repositoryDir(host, name)}/reference`);
  tree.dir(`${repositoryDir(host, name)}/digest`);
  const tag = root.ref.startsWith(`${host}/${name}:`) ? root.ref.slice(host.length + name.length + 2) : undefined;
  if (tag !== undefined) tree.file({ path: referenceFile(host, name, tag), digest: root.root.digest, sizeBytes: root.root.size, ref: root.ref }, true);
  await walkGraph({ manifest: (digest) => store.getManifest(digest) }, [root.root], {
    order: 'depth',
    children: 'by-media-type',
    follow: (child) => platformWanted(child, platforms),
    maxDepth: MAX_DEPTH,
    onNode: async (node) => {
      if (node.kind === 'missing' || node.kind === 'truncated' || node.kind === 'invalid') {
        missing.push(node.digest);
      } else if (node.manifest) {
        tree.file({ path: digestFile(host, name, node.digest), digest: node.digest, sizeBytes: node.manifest.body.length, ref: root.ref });
        if (node.via === 'root' && isIndexType(node.manifest.mediaType)) missing.push(...absentPlatforms(node.children, platforms));
      } else {
        const info = await store.stat(node.digest);
        if (info) tree.file({ path: blobFile(node.digest), digest: node.digest, sizeBytes: info.sizeBytes, ref: root.ref });
        else missing.push(node.digest);
      }
    },
  });
  return { ...root, missing };
}

/** Chosen platforms a platform index lacks; an index of artifacts (no child names a platform) lacks none. */
function absentPlatforms(children: readonly Descriptor[], platforms: readonly string[]): string[] {
  if (!children.some((c) => c.platform?.os !== undefined && c.platform.os !== 'unknown')) return [];
  return platforms.filter((p) => !children.some((c) => c.platform && platformWanted(c, [p]))).map((p) => `${p} (the index has no such platform)`);
}

/** Collects files (each path once), folders, and the digests written or left out for `--since`. */
class TreeBuilder {
  private readonly paths = new Set<string>();
  private readonly written = new Set<string>();
  private readonly assumed = new Set<string>();
  private readonly dirs = new Set<string>();

  constructor(
    private readonly plan: CachePlan,
    private readonly since: ReadonlySet<string> | undefined,
  ) {}

  dir(path: string): void {
    if (this.dirs.has(path)) return;
    this.dirs.add(path);
    this.plan.dirs.push(path);
  }

  /** A tag's file is always written (a tag may have moved); any other known digest is left out under `--since`. */
  file(f: CacheFile, isTag = false): void {
    if (this.paths.has(f.path)) return;
    this.paths.add(f.path);
    if (!isTag && this.since?.has(f.digest)) {
      if (!this.assumed.has(f.digest)) this.plan.assumed.push(f.digest);
      this.assumed.add(f.digest);
      return;
    }
    this.plan.files.push(f);
    if (isTag || this.written.has(f.digest)) return;
    this.written.add(f.digest);
    this.plan.blobs.push({ digest: f.digest, sizeBytes: f.sizeBytes, ref: f.ref });
  }

  add(images: PlannedImage[], image: PlannedImage): void {
    if (!images.some((i) => i.ref === image.ref)) images.push(image);
  }
}
