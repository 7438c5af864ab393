// Small one-off images for export/import tests, written with the test kit's OCI vocabulary (never sluice's own):
// a single-layer image, a cosign-style signature of a digest and an OCI referrer with a subject.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MediaType, mkLayoutDir, seededBytes, writeBlob, writeJsonBlob, writeLayoutIndex, type Descriptor } from '../kit/oci.js';

export interface SmallImage {
  ref: string;
  top: Descriptor;
  /** Every blob of the image, the manifest first. */
  blobs: Descriptor[];
}

/** One OCI image of one `layerBytes`-byte layer (seeded by `seed`) into the layout at `dir`. */
export async function writeSmallImage(dir: string, ref: string, seed: string, layerBytes = 4096): Promise<SmallImage> {
  await mkLayoutDir(dir);
  const layer = await writeBlob(dir, seededBytes(layerBytes, seed), MediaType.ociLayerTar);
  const config = await writeJsonBlob(dir, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] } }, MediaType.ociConfig);
  const top = await writeJsonBlob(dir, { schemaVersion: 2, mediaType: MediaType.ociManifest, config, layers: [layer] }, MediaType.ociManifest);
  return { ref, top, blobs: [top, config, layer] };
}

/** An artifact manifest (one small blob) about `subject`: a cosign signature when tagged, an OCI referrer via `subject`. */
export async function writeArtifact(dir: string, ref: string, subject: Descriptor, seed: string, withSubject: boolean): Promise<SmallImage> {
  await mkLayoutDir(dir);
  const payload = await writeBlob(dir, Buffer.from(`artifact about ${subject.digest} (${seed})`), 'application/vnd.dev.cosign.simplesigning.v1+json');
  const config = await writeBlob(dir, Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
    config,
    layers: [payload],
    ...(withSubject ? { subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size } } : {}),
  };
  const top = await writeJsonBlob(dir, doc, MediaType.ociManifest);
  return { ref, top, blobs: [top, config, payload] };
}

/** index.json naming each image by its reference (as skopeo and sluice import expect). */
export function writeIndex(dir: string, images: SmallImage[]): Promise<void> {
  return writeLayoutIndex(dir, images.map((i) => ({ ref: i.ref, top: i.top })));
}

export interface BundleIndexEntry extends Descriptor {
  annotations?: Record<string, string>;
}

export async function readBundleIndex(dir: string): Promise<{ manifests: BundleIndexEntry[]; annotations?: Record<string, string> }> {
  return JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: BundleIndexEntry[]; annotations?: Record<string, string> };
}

/** The digests of every blob file of a layout folder. */
export async function layoutBlobDigests(dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'blobs', 'sha256'))).map((h) => `sha256:${h}`).sort();
}
