// The OCI image of sluice, built without a container engine: a runtime layer (image-runtime.ts) and an app layer
// (the bundle under /opt/sluice, a config with the store at /data), a config (non-root user, port 6000, entrypoint
// `sluice serve`), a manifest with OCI annotations, written as an OCI image layout and as an oci-archive tar.
import { createHash } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { walk } from './bundle.js';
import { debianRuntime, IMAGE_UID } from './image-runtime.js';
import { writeArchive, type Entry } from './tar.js';
import { NODE_FLAGS } from './node-flags.js';
import { configWithStore } from './texts.js';

const OCI = {
  config: 'application/vnd.oci.image.config.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

const APP_ROOT = 'opt/sluice';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string };
}

export interface ImageInput {
  /** The bundle's entries, paths relative to its root (node/bin/node included). */
  bundle: readonly Entry[];
  /** The default config/sluice.yaml. */
  defaultConfig: string;
  /** `name:tag` written as org.opencontainers.image.ref.name, e.g. localhost/sluice:0.1.0. */
  ref: string;
  version: string;
  revision: string;
  created: Date;
  ociArch: string;
  /** Paths on this host of the binaries whose libraries the runtime layer must hold (node, addons). */
  binaries: readonly string[];
}

export interface ImageOutput {
  layoutDir: string;
  archive: string;
  manifestDigest: string;
  debianPackages: string[];
}

async function putBlob(layout: string, body: Buffer, mediaType: string): Promise<Descriptor> {
  const hex = createHash('sha256').update(body).digest('hex');
  await writeFile(join(layout, 'blobs', 'sha256', hex), body);
  return { mediaType, digest: `sha256:${hex}`, size: body.length };
}

async function putLayer(layout: string, entries: readonly Entry[], mtime: Date): Promise<{ desc: Descriptor; diffId: string }> {
  const temp = join(layout, 'blobs', 'sha256', '.layer.tmp');
  const d = await writeArchive(temp, entries, { mtime, gzip: true });
  await rename(temp, join(layout, 'blobs', 'sha256', d.fileDigest.slice(7)));
  return { desc: { mediaType: OCI.layerGzip, digest: d.fileDigest, size: d.sizeBytes }, diffId: d.tarDigest };
}

const under = (prefix: string, e: Entry): Entry => ({ ...e, path: `${prefix}/${e.path}` });

/** The annotations of the manifest (and the config's labels): what the image is, from which commit, made when. */
function imageAnnotations(input: ImageInput, created: string): Record<string, string> {
  return {
    'org.opencontainers.image.title': 'sluice',
    'org.opencontainers.image.description': 'Read-only pull-through OCI registry mirror for air-gapped Talos Linux clusters',
    'org.opencontainers.image.version': input.version,
    'org.opencontainers.image.revision': input.revision,
    'org.opencontainers.image.created': created,
    'org.opencontainers.image.licenses': 'Apache-2.0',
  };
}

/** The image config: non-root, /data as the store and working folder, port 6000, `sluice serve`. */
function imageConfig(input: ImageInput, created: string, diffIds: string[], debianPackages: readonly string[]): object {
  return {
    created,
    architecture: input.ociArch,
    os: 'linux',
    config: {
      User: `${IMAGE_UID}:${IMAGE_UID}`,
      Env: [`PATH=/${APP_ROOT}/node/bin:/usr/bin:/bin`, 'SLUICE_CONFIG=/etc/sluice/sluice.yaml'],
      Entrypoint: [`/${APP_ROOT}/node/bin/node`, ...NODE_FLAGS, `/${APP_ROOT}/dist/src/main.js`, 'serve'],
      ExposedPorts: { '6000/tcp': {} },
      Volumes: { '/data': {} },
      WorkingDir: '/data',
      StopSignal: 'SIGTERM',
      Labels: imageAnnotations(input, created),
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: [
      { created, created_by: `sluice release: Node.js runtime and its libraries from Debian (${debianPackages.join(', ')})` },
      { created, created_by: `sluice release: sluice ${input.version} (${input.revision}) in /${APP_ROOT}` },
    ],
  };
}

/** The two layers: runtime (Debian libraries, user, node) and app (the rest of the bundle, the /data config). */
async function putLayers(layoutDir: string, input: ImageInput, runtimeEntries: readonly Entry[]): Promise<Array<{ desc: Descriptor; diffId: string }>> {
  const isRuntime = (e: Entry): boolean => e.path === 'node' || e.path.startsWith('node/');
  const runtime = [...runtimeEntries, ...input.bundle.filter(isRuntime).map((e) => under(APP_ROOT, e))];
  const app: Entry[] = [
    ...input.bundle.filter((e) => !isRuntime(e)).map((e) => under(APP_ROOT, e)),
    { kind: 'file', path: 'etc/sluice/sluice.yaml', mode: 0o644, source: Buffer.from(configWithStore(input.defaultConfig, '/data')) },
  ];
  return [await putLayer(layoutDir, runtime, input.created), await putLayer(layoutDir, app, input.created)];
}

export async function writeImage(outDir: string, baseName: string, input: ImageInput): Promise<ImageOutput> {
  const layoutDir = join(outDir, `${baseName}-oci`);
  await rm(layoutDir, { recursive: true, force: true });
  await mkdir(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  const runtime = await debianRuntime(input.ociArch, input.binaries);
  try {
    const layers = await putLayers(layoutDir, input, runtime.entries);
    const created = input.created.toISOString().replace(/\.\d{3}Z$/, 'Z');
    const annotations = imageAnnotations(input, created);
    const config = imageConfig(input, created, layers.map((l) => l.diffId), runtime.packages);
    const configDesc = await putBlob(layoutDir, Buffer.from(JSON.stringify(config)), OCI.config);
    const manifest = { schemaVersion: 2, mediaType: OCI.manifest, config: configDesc, layers: layers.map((l) => l.desc), annotations };
    const manifestDesc = await putBlob(layoutDir, Buffer.from(JSON.stringify(manifest)), OCI.manifest);
    const index = {
      schemaVersion: 2,
      mediaType: OCI.index,
      manifests: [{ ...manifestDesc, platform: { architecture: input.ociArch, os: 'linux' }, annotations: { 'org.opencontainers.image.ref.name': input.ref, ...annotations } }],
    };
    await writeFile(join(layoutDir, 'index.json'), JSON.stringify(index));
    await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const archive = join(outDir, `${baseName}-oci.tar`);
    const entries = (await walk(layoutDir, '.')).map((e) => ({ ...e, path: e.path.slice(2) }));
    await writeArchive(archive, entries, { mtime: input.created, gzip: false });
    return { layoutDir, archive, manifestDigest: manifestDesc.digest, debianPackages: runtime.packages };
  } finally {
    await rm(runtime.cleanupDir, { recursive: true, force: true });
  }
}
