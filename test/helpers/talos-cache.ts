// Talos image caches built from the facts of siderolabs/talos pkg/imager/cache/cache.go (talosctl is not installable
// here): the flat tree for one chosen platform, cosign signature tags, a digest-only image, a `host_port_` registry,
// and the OCI form that wraps the tree as the single gzip layer of one unnamed image.
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { createWriteStream } from 'node:fs';
import tar from 'tar-stream';
import { blobPath, hexOf, MediaType, mkLayoutDir, sha256, writeBlob, type Descriptor } from '../kit/oci.js';
import { splitRef, type LayoutDescription, type TestImage } from './images.js';

export interface CacheImage {
  /** As the cache names it: `host/name:tag`, or `host/name@digest` for a digest-only entry. */
  ref: string;
  host: string;
  name: string;
  tag?: string;
  /** The top manifest or index (what the reference file holds). */
  digest: string;
  /** The chosen platform's manifest (the top one for a single-platform image). */
  platformDigest: string;
  /** Every digest the cache holds for this image (top, platform manifest, config, layers). */
  digests: string[];
  /** Platforms of the index the cache leaves out. */
  missing: string[];
}

export interface TalosCache {
  dir: string;
  images: CacheImage[];
  /** Cosign-style signature tags written (`sha256-<hex>.sig`, `sha256-<hex>`), with what they resolve to. */
  signatures: Array<{ ref: string; subject: string; digest: string; digests: string[] }>;
}

/** `host:port` → `host_port_`, as cache.go's rewriteRegistry writes it (vfat has no colons). */
export const registryDir = (host: string): string => host.replace(/:(\d+)$/, '_$1_');

interface Manifest {
  mediaType?: string;
  manifests?: Array<Descriptor & { platform?: { os: string; architecture: string; variant?: string } }>;
  config?: Descriptor;
  layers?: Descriptor[];
}

class TreeWriter {
  constructor(private readonly dir: string, private readonly layout: string) {}

  repo(host: string, name: string): string {
    return join(this.dir, 'manifests', registryDir(host), name);
  }

  async manifestFile(host: string, name: string, sub: 'reference' | 'digest', file: string, body: Buffer): Promise<void> {
    const out = join(this.repo(host, name), sub, file);
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, body);
  }

  async blob(digest: string, body?: Buffer): Promise<void> {
    const out = join(this.dir, 'blob', `sha256-${hexOf(digest)}`);
    await mkdir(dirname(out), { recursive: true });
    if (body) await writeFile(out, body);
    else await copyFile(blobPath(this.layout, digest), out);
  }

  read(digest: string): Promise<Buffer> {
    return readFile(blobPath(this.layout, digest));
  }
}

/** The platform image's manifest under digest/, its config and layers under blob/ (cache.go's cacheImage). */
async function writePlatformImage(w: TreeWriter, host: string, name: string, digest: string): Promise<string[]> {
  const body = await w.read(digest);
  await w.manifestFile(host, name, 'digest', `sha256-${hexOf(digest)}`, body);
  const m = JSON.parse(body.toString('utf8')) as Manifest;
  const blobs = [m.config!, ...(m.layers ?? [])];
  for (const b of blobs) await w.blob(b.digest);
  return [digest, ...blobs.map((b) => b.digest)];
}

async function writeImage(w: TreeWriter, image: TestImage, byDigestOnly: boolean): Promise<CacheImage> {
  const { host, name, tag } = splitRef(image.ref);
  const top = await w.read(image.digest);
  if (!byDigestOnly) await w.manifestFile(host, name, 'reference', tag, top);
  await w.manifestFile(host, name, 'digest', `sha256-${hexOf(image.digest)}`, top);
  const doc = JSON.parse(top.toString('utf8')) as Manifest;
  const chosen = doc.manifests?.find((m) => m.platform?.architecture === 'amd64');
  const platformDigest = chosen?.digest ?? image.digest;
  const digests = await writePlatformImage(w, host, name, platformDigest);
  const missing = (doc.manifests ?? []).filter((m) => m !== chosen).map((m) => [m.platform?.os, m.platform?.architecture, m.platform?.variant].filter(Boolean).join('/'));
  return {
    ref: byDigestOnly ? `${host}/${name}@${image.digest}` : image.ref,
    host, name, tag: byDigestOnly ? undefined : tag,
    digest: image.digest, platformDigest, digests: chosen ? [image.digest, ...digests] : digests, missing,
  };
}

/** A cosign-like signature image: an OCI manifest whose one layer is a small JSON payload. */
async function writeSignature(w: TreeWriter, image: CacheImage, tag: string, layerType: string): Promise<TalosCache['signatures'][number]> {
  const payload = Buffer.from(JSON.stringify({ critical: { image: { 'docker-manifest-digest': image.digest }, type: 'cosign container image signature' } }));
  const config = Buffer.from(JSON.stringify({ architecture: '', os: '', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(payload)] } }));
  const layer = { mediaType: layerType, digest: sha256(payload), size: payload.length, annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ==' } };
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256(config), size: config.length }, layers: [layer],
  }));
  await w.blob(sha256(payload), payload);
  await w.blob(sha256(config), config);
  await w.manifestFile(image.host, image.name, 'reference', tag, manifest);
  await w.manifestFile(image.host, image.name, 'digest', `sha256-${hexOf(sha256(manifest))}`, manifest);
  return { ref: `${image.host}/${image.name}:${tag}`, subject: image.digest, digest: sha256(manifest), digests: [sha256(manifest), sha256(config), sha256(payload)] };
}

/**
 * The flat cache (`--layout flat`, platform linux/amd64) of the layout's images: `digestOnly` names the one image
 * cached by digest (no reference file), `copies` maps a reference of the layout to another one it is also cached
 * under; the first tagged image gets a `.sig` tag and the second a bare `sha256-<hex>` tag.
 */
export async function buildFlatCache(dir: string, layout: LayoutDescription, digestOnly: string, copies: Record<string, string> = {}): Promise<TalosCache> {
  const w = new TreeWriter(dir, layout.dir);
  const images: CacheImage[] = [];
  for (const image of layout.images) images.push(await writeImage(w, image, image.ref === digestOnly));
  // The same image under another reference (e.g. a `host:port` registry, written `host_port_`).
  for (const [from, to] of Object.entries(copies)) images.push(await writeImage(w, { ...layout.images.find((i) => i.ref === from)!, ref: to }, false));
  const [first, second] = images.filter((i) => i.tag !== undefined);
  const signatures = [
    await writeSignature(w, first!, `sha256-${hexOf(first!.digest)}.sig`, 'application/vnd.dev.cosign.simplesigning.v1+json'),
    await writeSignature(w, second!, `sha256-${hexOf(second!.digest)}`, 'application/vnd.dev.sigstore.bundle.v0.3+json'),
  ];
  return { dir, images, signatures };
}

async function listFiles(root: string, sub = ''): Promise<string[]> {
  const { readdir } = await import('node:fs/promises');
  const out: string[] = [];
  for (const e of (await readdir(join(root, sub), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(`${rel}/`, ...(await listFiles(root, rel)));
    else out.push(rel);
  }
  return out;
}

/** A tar of a tree (directories and files, names relative, sorted like filemap.Layer); `extra` appends raw entries. */
export async function tarTree(dir: string | undefined, out: string, opts: { gzip?: boolean; extra?: Array<Partial<tar.Header> & Pick<tar.Header, 'name'> & { body?: string }> } = {}): Promise<void> {
  const pack = tar.pack();
  const sink = createWriteStream(out);
  const done = opts.gzip === false ? pipeline(pack, sink) : pipeline(pack, createGzip(), sink);
  for (const rel of dir ? await listFiles(dir) : []) {
    if (rel.endsWith('/')) {
      pack.entry({ name: rel.slice(0, -1), type: 'directory', mode: 0o755 });
      continue;
    }
    const file = join(dir!, rel);
    await pipeline(createReadStream(file), pack.entry({ name: relative(dir!, file), size: (await stat(file)).size, mode: 0o644 }));
  }
  for (const { body, ...header } of opts.extra ?? []) pack.entry(header, body ?? '');
  pack.finalize();
  await done;
}

/**
 * The OCI form (`--layout oci`, the default): an OCI layout whose index.json holds one image manifest with a
 * platform and no ref.name; its one layer is the tar (gzip, as go-containerregistry's tarball layers are) of the tree.
 */
export async function wrapAsOciCache(layerTar: string, outDir: string): Promise<Descriptor> {
  await mkLayoutDir(outDir);
  const layerBody = await readFile(layerTar);
  const layer = await writeBlob(outDir, layerBody, MediaType.dockerLayer);
  const config = await writeBlob(outDir, Buffer.from(JSON.stringify({ architecture: '', os: '', config: {}, created: '2026-01-01T00:00:00Z', rootfs: { type: 'layers', diff_ids: [] } })), MediaType.ociConfig);
  const manifest = await writeBlob(outDir, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config, layers: [layer] })), MediaType.ociManifest);
  await writeFile(join(outDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const entry = { ...manifest, platform: { architecture: 'amd64', os: 'linux' } };
  await writeFile(join(outDir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [entry] }));
  return manifest;
}
