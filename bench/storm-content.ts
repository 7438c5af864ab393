// The boot-storm case's image set: a dozen Talos-like images (OCI indexes and Docker manifest lists for
// amd64 and arm64, one single-platform manifest, one large installer layer, base layers shared between
// images), written to a folder and pushed to docker-registry over the registry API as they are.
import { join } from 'node:path';
import { request } from 'undici';
import { createReadStream } from 'node:fs';
import { KiB, MediaType, MiB, seededBytes, sha256, writeSeededBlob, type Descriptor } from '../test/kit/oci.js';

export type StormKind = 'oci-index' | 'docker-list' | 'oci-manifest';

/** A layer named by a key; the same key in two images is the same blob (a shared base layer). */
export interface LayerSpec {
  key: string;
  bytes: number;
}

export interface StormImageSpec {
  name: string;
  tag: string;
  kind: StormKind;
  layers: LayerSpec[];
}

export const STORM_ARCHES = ['amd64', 'arm64'] as const;
/** The platform every simulated node pulls. */
export const NODE_PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

/**
 * The Talos v1.8 boot set (talosctl images default, plus the installer and one extension), with sizes
 * close to the real compressed layers. `installerBytes` is the one large layer; the others are scaled.
 */
export function stormImageSet(installerBytes: number, scale = 1): StormImageSpec[] {
  const b = (n: number): number => Math.max(KiB, Math.round(n * scale));
  const staticBase = { key: 'distroless-static', bytes: b(512 * KiB) };
  const goRunner = { key: 'go-runner', bytes: b(1 * MiB) };
  const k8s = (name: string, own: number): StormImageSpec => ({ name, tag: 'v1.31.2', kind: 'docker-list', layers: [staticBase, goRunner, { key: name, bytes: b(own) }] });
  return [
    { name: 'siderolabs/installer', tag: 'v1.8.3', kind: 'oci-index', layers: [{ key: 'installer-base', bytes: b(4 * MiB) }, { key: 'installer', bytes: installerBytes }, { key: 'installer-meta', bytes: KiB }] },
    { name: 'siderolabs/kubelet', tag: 'v1.31.2', kind: 'oci-index', layers: [{ key: 'debian-base', bytes: b(8 * MiB) }, { key: 'kubelet', bytes: b(16 * MiB) }] },
    { name: 'etcd-development/etcd', tag: 'v3.5.16', kind: 'oci-index', layers: [staticBase, { key: 'etcd', bytes: b(8 * MiB) }] },
    k8s('kube-apiserver', 8 * MiB),
    k8s('kube-controller-manager', 6 * MiB),
    k8s('kube-scheduler', 3 * MiB),
    { name: 'kube-proxy', tag: 'v1.31.2', kind: 'docker-list', layers: [{ key: 'iptables-base', bytes: b(6 * MiB) }, { key: 'kube-proxy', bytes: b(4 * MiB) }] },
    { name: 'coredns/coredns', tag: 'v1.11.3', kind: 'docker-list', layers: [staticBase, { key: 'coredns', bytes: b(4 * MiB) }] },
    { name: 'pause', tag: '3.10', kind: 'docker-list', layers: [{ key: 'pause', bytes: b(300 * KiB) }] },
    { name: 'siderolabs/flannel', tag: 'v0.25.7', kind: 'oci-index', layers: [staticBase, { key: 'flannel', bytes: b(4 * MiB) }] },
    { name: 'siderolabs/install-cni', tag: 'v1.8.0', kind: 'oci-index', layers: [staticBase, { key: 'install-cni', bytes: b(2 * MiB) }] },
    { name: 'siderolabs/iscsi-tools', tag: 'v0.1.5', kind: 'oci-manifest', layers: [{ key: 'iscsi-tools', bytes: b(1 * MiB) }] },
  ];
}

/** A blob as written: its descriptor and where its bytes are (small ones stay in memory). */
export interface StormBlob {
  d: Descriptor;
  body?: Buffer;
  file?: string;
}

export interface StormManifest {
  d: Descriptor;
  body: Buffer;
  /** The blobs it references directly (config and layers), or none for an index. */
  blobs: Descriptor[];
}

export interface StormImage {
  spec: StormImageSpec;
  /** The tagged manifest (an index or list, or the image manifest itself). */
  top: StormManifest;
  /** Per-platform image manifests, by architecture (for 'oci-manifest' only amd64, which is the top). */
  platforms: Map<string, StormManifest>;
  /** Every blob the repository needs (all platforms). */
  blobs: StormBlob[];
}

const types = (kind: StormKind) =>
  kind === 'docker-list'
    ? { index: MediaType.dockerList, manifest: MediaType.dockerManifest, config: MediaType.dockerConfig, layer: MediaType.dockerLayer }
    : { index: MediaType.ociIndex, manifest: MediaType.ociManifest, config: MediaType.ociConfig, layer: MediaType.ociLayer };

const jsonManifest = (doc: object, mediaType: string, blobs: Descriptor[]): StormManifest => {
  const body = Buffer.from(JSON.stringify(doc));
  return { d: { mediaType, digest: sha256(body), size: body.length }, body, blobs };
};

/** Layer bytes above this go to a file; below, they stay in memory. */
const IN_MEMORY_BYTES = 4 * MiB;

/** Writes (or reuses, for a shared key) the blob of one layer of one architecture. */
async function layerBlob(dir: string, cache: Map<string, StormBlob>, l: LayerSpec, arch: string, mediaType: string): Promise<StormBlob> {
  const id = `${l.key}/${arch}/${l.bytes}`;
  const known = cache.get(id);
  if (known) return { ...known, d: { ...known.d, mediaType } };
  let blob: StormBlob;
  if (l.bytes <= IN_MEMORY_BYTES) {
    const body = seededBytes(l.bytes, `sluice-storm:${id}`);
    blob = { d: { mediaType, digest: sha256(body), size: body.length }, body };
  } else {
    const file = join(dir, id.replace(/\//g, '_'));
    blob = { d: await writeSeededBlob(file, l.bytes, `sluice-storm:${id}`, mediaType), file };
  }
  cache.set(id, blob);
  return blob;
}

async function platformManifest(dir: string, cache: Map<string, StormBlob>, spec: StormImageSpec, arch: string, blobs: StormBlob[]): Promise<StormManifest> {
  const t = types(spec.kind);
  const layers: StormBlob[] = [];
  for (const l of spec.layers) layers.push(await layerBlob(dir, cache, l, arch, t.layer));
  const configBody = Buffer.from(JSON.stringify({ architecture: arch, os: 'linux', config: { Labels: { image: `${spec.name}:${spec.tag}` } }, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.d.digest) } }));
  const config: StormBlob = { d: { mediaType: t.config, digest: sha256(configBody), size: configBody.length }, body: configBody };
  blobs.push(config, ...layers);
  const refs = [config.d, ...layers.map((l) => l.d)];
  return jsonManifest({ schemaVersion: 2, mediaType: t.manifest, config: config.d, layers: layers.map((l) => l.d) }, t.manifest, refs);
}

/** Builds every image of `specs`, big layers written under `dir`. */
export async function writeStormImages(dir: string, specs: StormImageSpec[]): Promise<StormImage[]> {
  const cache = new Map<string, StormBlob>();
  const out: StormImage[] = [];
  for (const spec of specs) {
    const blobs: StormBlob[] = [];
    const platforms = new Map<string, StormManifest>();
    const arches = spec.kind === 'oci-manifest' ? [NODE_PLATFORM.architecture] : [...STORM_ARCHES];
    for (const arch of arches) platforms.set(arch, await platformManifest(dir, cache, spec, arch, blobs));
    let top = platforms.get(NODE_PLATFORM.architecture) as StormManifest;
    if (spec.kind !== 'oci-manifest') {
      const t = types(spec.kind);
      const manifests = [...platforms].map(([arch, m]) => ({ ...m.d, platform: { architecture: arch, os: 'linux', ...(arch === 'arm64' ? { variant: 'v8' } : {}) } }));
      top = jsonManifest({ schemaVersion: 2, mediaType: t.index, manifests }, t.index, []);
    }
    out.push({ spec, top, platforms, blobs });
  }
  return out;
}

/** What one node needs of the set (its platform's closure, shared blobs once), in requests and bytes. */
export function nodeClosure(images: StormImage[]): { manifests: number; blobs: number; bytes: number } {
  const seen = new Set<string>();
  let manifests = 0;
  let bytes = 0;
  for (const img of images) {
    const m = img.platforms.get(NODE_PLATFORM.architecture);
    if (!m) throw new Error(`${img.spec.name} has no ${NODE_PLATFORM.architecture} manifest`);
    const tops = img.top.d.digest === m.d.digest ? [m] : [img.top, m];
    for (const t of tops) {
      manifests++;
      bytes += t.d.size;
    }
    for (const b of m.blobs) {
      if (seen.has(b.digest)) continue;
      seen.add(b.digest);
      bytes += b.size;
    }
  }
  return { manifests, blobs: seen.size, bytes };
}

// ---- pushing, over the registry API (skopeo's oci: transport skips Docker-typed index entries) ----------------

async function pushBlob(base: string, name: string, b: StormBlob): Promise<void> {
  const head = await request(`${base}/v2/${name}/blobs/${b.d.digest}`, { method: 'HEAD' });
  await head.body.dump();
  if (head.statusCode === 200) return;
  const start = await request(`${base}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  await start.body.dump();
  const location = start.headers.location;
  if (start.statusCode !== 202 || typeof location !== 'string') throw new Error(`upload of ${name} ${b.d.digest} not started: ${start.statusCode}`);
  const url = new URL(location, base);
  url.searchParams.set('digest', b.d.digest);
  const body = b.body ?? (b.file !== undefined ? createReadStream(b.file) : undefined);
  if (body === undefined) throw new Error(`blob ${b.d.digest} has neither bytes nor a file`);
  const put = await request(url, { method: 'PUT', body, headers: { 'content-type': 'application/octet-stream', 'content-length': String(b.d.size) } });
  const text = await put.body.text();
  if (put.statusCode !== 201) throw new Error(`upload of ${name} ${b.d.digest}: ${put.statusCode} ${text.slice(0, 300)}`);
}

async function pushManifest(base: string, name: string, ref: string, m: StormManifest): Promise<void> {
  const r = await request(`${base}/v2/${name}/manifests/${ref}`, { method: 'PUT', body: m.body, headers: { 'content-type': m.d.mediaType } });
  const text = await r.body.text();
  if (r.statusCode !== 201) throw new Error(`PUT ${name}:${ref}: ${r.statusCode} ${text.slice(0, 300)}`);
}

/** Pushes every image (blobs, platform manifests by digest, then the tag) and checks the tag's digest. */
export async function pushStormImages(base: string, images: StormImage[]): Promise<void> {
  for (const img of images) {
    const { name, tag } = img.spec;
    for (const b of img.blobs) await pushBlob(base, name, b);
    for (const m of img.platforms.values()) if (m !== img.top) await pushManifest(base, name, m.d.digest, m);
    await pushManifest(base, name, tag, img.top);
    const r = await request(`${base}/v2/${name}/manifests/${tag}`, { method: 'HEAD', headers: { accept: img.top.d.mediaType } });
    await r.body.dump();
    if (r.headers['docker-content-digest'] !== img.top.d.digest) throw new Error(`docker-registry serves ${name}:${tag} as ${String(r.headers['docker-content-digest'])}, expected ${img.top.d.digest}`);
  }
}
