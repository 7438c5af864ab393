// Deterministic test images, generated offline into an OCI image layout (oci-layout, index.json,
// blobs/sha256/<hex>), plus a .tar of a layout, blob corruption, and skopeo's `dir:` format.
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdir, open, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { blobPath, hexOf, KiB, MediaType, MiB, mkLayoutDir, REF_NAME_ANNOTATION, seededBytes, sha256, writeBlob, writeLayoutIndex, type Descriptor } from '../kit/oci.js';

export { blobPath, MediaType, REF_NAME_ANNOTATION, sha256 } from '../kit/oci.js';

export type ImageKind = 'oci-index' | 'oci-manifest' | 'docker-manifest' | 'docker-list';

export type BlobDescriptor = Descriptor;

export interface PlatformManifest {
  os: string;
  arch: string;
  variant?: string;
  digest: string;
}

export interface TestImage {
  /** Full reference, registry host included: `ghcr.io/siderolabs/kubelet:v1.34.0`. */
  ref: string;
  /** Digest of the top manifest or index, as the tag resolves to. */
  digest: string;
  mediaType: string;
  size: number;
  kind: ImageKind;
  platforms?: PlatformManifest[];
  /** Every blob reachable from the tag, manifests and indexes included, top first. */
  blobs: BlobDescriptor[];
}

export interface LayoutDescription {
  dir: string;
  images: TestImage[];
}

const EPOCH = '2024-10-01T00:00:00Z';


/** Splits a full reference into registry host, repository name and tag. */
export function splitRef(ref: string): { host: string; name: string; tag: string } {
  const slash = ref.indexOf('/');
  const colon = ref.lastIndexOf(':');
  if (slash < 0 || colon < slash) throw new Error(`not a full tagged reference: ${ref}`);
  return { host: ref.slice(0, slash), name: ref.slice(slash + 1, colon), tag: ref.slice(colon + 1) };
}

/** A ustar archive holding one regular file (fixed mtime/owner, so the bytes are reproducible). */
function tarOne(name: string, data: Buffer): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number): void => void h.write(s, off, len, 'ascii');
  const oct = (v: number, len: number): string => v.toString(8).padStart(len - 1, '0') + '\0';
  put(name, 0, 100);
  put(oct(0o755, 8), 100, 8);
  put(oct(0, 8), 108, 8);
  put(oct(0, 8), 116, 8);
  put(oct(data.length, 12), 124, 12);
  put(oct(1_700_000_000, 12), 136, 12);
  put('        ', 148, 8);
  put('0', 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([h, data, pad, Buffer.alloc(1024)]);
}

/** One test image to generate: its full reference, its kind and its layer sizes (per platform). */
export interface ImageSpec {
  ref: string;
  kind: ImageKind;
  sizes: number[];
}

function specs(large: boolean): ImageSpec[] {
  const big = large ? 64 * MiB : 4 * MiB;
  return [
    { ref: 'ghcr.io/siderolabs/kubelet:v1.34.0', kind: 'oci-index', sizes: [1 * KiB, 1 * MiB, big] },
    { ref: 'docker.io/library/busybox:1.36', kind: 'docker-manifest', sizes: [1 * MiB] },
    { ref: 'registry.k8s.io/coredns/coredns:v1.11.3', kind: 'docker-list', sizes: [1 * KiB, 256 * KiB] },
    { ref: 'registry.k8s.io/pause:3.10', kind: 'oci-manifest', sizes: [1 * KiB] },
  ];
}

interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}
const PLATFORMS: Platform[] = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64', variant: 'v8' },
];

class LayoutWriter {
  constructor(readonly dir: string) {}

  async blob(buf: Buffer, mediaType: string, out: BlobDescriptor[]): Promise<BlobDescriptor> {
    const d = await writeBlob(this.dir, buf, mediaType);
    if (!out.some((b) => b.digest === d.digest)) out.push(d);
    return d;
  }

  json(obj: object, mediaType: string, out: BlobDescriptor[]): Promise<BlobDescriptor> {
    return this.blob(Buffer.from(JSON.stringify(obj)), mediaType, out);
  }

  /** One platform image: gzip (level 0: valid, fast, reproducible) tar layers, config, manifest. */
  async image(spec: ImageSpec, p: Platform, out: BlobDescriptor[]): Promise<BlobDescriptor> {
    const docker = spec.kind.startsWith('docker');
    const layers: BlobDescriptor[] = [];
    const diffIds: string[] = [];
    for (const [i, n] of spec.sizes.entries()) {
      const layerTar = tarOne(`data/layer${i}.bin`, seededBytes(n, `sluice-test:${spec.ref}/${p.architecture}/${i}`));
      diffIds.push(sha256(layerTar));
      layers.push(await this.blob(gzipSync(layerTar, { level: 0 }), docker ? MediaType.dockerLayer : MediaType.ociLayer, []));
    }
    const config = {
      created: EPOCH,
      architecture: p.architecture,
      os: p.os,
      ...(p.variant ? { variant: p.variant } : {}),
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Entrypoint: ['/data/layer0.bin'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: spec.sizes.map((n, i) => ({ created: EPOCH, created_by: `sluice test layer ${i} (${n} bytes)` })),
    };
    const manifestType = docker ? MediaType.dockerManifest : MediaType.ociManifest;
    const cfg = await this.json(config, docker ? MediaType.dockerConfig : MediaType.ociConfig, []);
    const manifest = { schemaVersion: 2, mediaType: manifestType, config: cfg, layers };
    const m = await this.json(manifest, manifestType, out);
    out.push(cfg, ...layers);
    return m;
  }

  async build(spec: ImageSpec): Promise<TestImage> {
    const blobs: BlobDescriptor[] = [];
    if (spec.kind === 'oci-manifest' || spec.kind === 'docker-manifest') {
      const m = await this.image(spec, PLATFORMS[0]!, blobs);
      return { ref: spec.ref, digest: m.digest, mediaType: m.mediaType, size: m.size, kind: spec.kind, blobs };
    }
    const children: BlobDescriptor[] = [];
    const platforms: PlatformManifest[] = [];
    const manifests: Array<BlobDescriptor & { platform: Platform }> = [];
    for (const p of PLATFORMS) {
      const m = await this.image(spec, p, children);
      manifests.push({ ...m, platform: p });
      platforms.push({ os: p.os, arch: p.architecture, ...(p.variant ? { variant: p.variant } : {}), digest: m.digest });
    }
    const type = spec.kind === 'docker-list' ? MediaType.dockerList : MediaType.ociIndex;
    const top = await this.json({ schemaVersion: 2, mediaType: type, manifests }, type, blobs);
    blobs.push(...children);
    return { ref: spec.ref, digest: top.digest, mediaType: type, size: top.size, kind: spec.kind, platforms, blobs };
  }
}

/**
 * Writes the test images into an OCI image layout at `dir`. Every index.json entry carries the
 * full reference in `org.opencontainers.image.ref.name`. `large` puts a 64 MiB layer per
 * kubelet platform (4 MiB otherwise). The same options always give the same digests.
 */
export async function buildLayout(dir: string, opts: { large?: boolean } = {}): Promise<LayoutDescription> {
  return buildLayoutOf(dir, specs(opts.large ?? false));
}

/** The same for images of the caller's choosing (names, kinds, sizes); deterministic too. */
export async function buildLayoutOf(dir: string, wanted: ImageSpec[]): Promise<LayoutDescription> {
  await mkLayoutDir(dir);
  const w = new LayoutWriter(dir);
  const images: TestImage[] = [];
  for (const spec of wanted) images.push(await w.build(spec));
  await writeLayoutIndex(dir, images.map((i) => ({ ref: i.ref, top: { mediaType: i.mediaType, digest: i.digest, size: i.size } })));
  return { dir, images };
}

async function listFiles(root: string, sub = ''): Promise<string[]> {
  const entries = await readdir(join(root, sub), { withFileTypes: true });
  const out: string[] = [];
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(rel + '/', ...(await listFiles(root, rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out;
}

/** Archives a directory (e.g. a layout) as a plain tar with entries at its root, as `docker save` does. */
export async function writeTar(dir: string, tarPath: string): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(tarPath));
  const mtime = new Date(1_700_000_000_000);
  for (const rel of await listFiles(dir)) {
    if (rel.endsWith('/')) {
      pack.entry({ name: rel, type: 'directory', mode: 0o755, mtime });
      continue;
    }
    const file = join(dir, rel);
    const { size } = await stat(file);
    await pipeline(createReadStream(file), pack.entry({ name: relative(dir, file), size, mode: 0o644, mtime }));
  }
  pack.finalize();
  await done;
}

/** Flips one byte in the middle of a blob of the layout, in place (size unchanged, digest broken). */
export async function corruptBlob(dir: string, digest: string): Promise<void> {
  const fh = await open(blobPath(dir, digest), 'r+');
  try {
    const { size } = await fh.stat();
    const pos = Math.floor(size / 2);
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, pos);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, pos);
  } finally {
    await fh.close();
  }
}

interface ManifestJson {
  mediaType?: string;
  manifests?: BlobDescriptor[];
  config?: BlobDescriptor;
  layers?: BlobDescriptor[];
}

/**
 * Writes one image of the layout in skopeo's `dir:` format (version, manifest.json = the tagged
 * manifest, <hex>.manifest.json per list instance, <hex> per blob). skopeo 1.9's `oci:` transport
 * cannot read Docker-media-type entries of an OCI layout; this is how such images get pushed.
 */
export async function writeSkopeoDir(layoutDir: string, imageRef: string, outDir: string): Promise<void> {
  const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as {
    manifests: Array<BlobDescriptor & { annotations?: Record<string, string> }>;
  };
  const top = index.manifests.find((m) => m.annotations?.[REF_NAME_ANNOTATION] === imageRef);
  if (!top) throw new Error(`${imageRef} is not in ${layoutDir}/index.json`);
  await mkdir(outDir, { recursive: true });
  // Copies, not hard links: corruptBlob on the layout must not reach into this copy.
  const copy = (digest: string, name: string): Promise<void> =>
    copyFile(blobPath(layoutDir, digest), join(outDir, name), constants.COPYFILE_FICLONE);
  const readManifest = async (digest: string): Promise<ManifestJson> =>
    JSON.parse(await readFile(blobPath(layoutDir, digest), 'utf8')) as ManifestJson;
  const copyImage = async (m: ManifestJson): Promise<void> => {
    for (const b of [...(m.config ? [m.config] : []), ...(m.layers ?? [])]) await copy(b.digest, hexOf(b.digest));
  };
  const topManifest = await readManifest(top.digest);
  await copy(top.digest, 'manifest.json');
  if (topManifest.manifests) {
    for (const child of topManifest.manifests) {
      await copy(child.digest, `${hexOf(child.digest)}.manifest.json`);
      await copyImage(await readManifest(child.digest));
    }
  } else {
    await copyImage(topManifest);
  }
  await writeFile(join(outDir, 'version'), 'Directory Transport Version: 1.1\n');
}
