// Pure knowledge of manifest documents: media types, the descriptors a manifest points at (its children),
// and validation of a manifest body against its declared media type.

/** An OCI content descriptor (image-spec descriptor.md). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;

export const MANIFEST_MEDIA_TYPES: readonly string[] = Object.values(MediaType);

export function isIndexType(mediaType: string): boolean {
  return mediaType === MediaType.ociIndex || mediaType === MediaType.dockerList;
}

export interface ManifestDoc {
  mediaType?: string;
  schemaVersion?: number;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
  blobs?: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
}

/** Parses a manifest body; undefined when it is not a JSON object. */
export function parseManifest(body: Buffer): ManifestDoc | undefined {
  try {
    const doc: unknown = JSON.parse(body.toString('utf8'));
    return typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as ManifestDoc) : undefined;
  } catch {
    return undefined;
  }
}

/** The descriptors a manifest references directly: platform manifests of an index, or config and layers. */
export function childDescriptors(doc: ManifestDoc): Descriptor[] {
  const out: Descriptor[] = [];
  for (const list of [doc.manifests, doc.layers, doc.blobs]) {
    if (Array.isArray(list)) for (const d of list) if (isDescriptor(d)) out.push(d);
  }
  if (isDescriptor(doc.config)) out.push(doc.config);
  return out;
}

export function isDescriptor(d: unknown): d is Descriptor {
  if (typeof d !== 'object' || d === null) return false;
  const x = d as Record<string, unknown>;
  return typeof x.digest === 'string' && typeof x.size === 'number' && typeof x.mediaType === 'string';
}

/** The media type a manifest declares, or the one its shape implies (OCI allows omitting it). */
export function manifestMediaType(doc: ManifestDoc, fallback?: string): string | undefined {
  if (typeof doc.mediaType === 'string' && MANIFEST_MEDIA_TYPES.includes(doc.mediaType)) return doc.mediaType;
  if (fallback && MANIFEST_MEDIA_TYPES.includes(fallback)) return fallback;
  if (Array.isArray(doc.manifests)) return MediaType.ociIndex;
  if (doc.config !== undefined) return MediaType.ociManifest;
  return undefined;
}
