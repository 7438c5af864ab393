// What a manifest says about referrers: its subject (the manifest it refers to) and the descriptor the referrers
// API lists for it (OCI distribution-spec, "Listing Referrers"). Pure; every MetadataStore derives both here.
import type { Descriptor } from '../oci/manifest.js';
import { HEX_RE } from './digest.js';
import type { LinkableManifest } from './ports.js';

export function subjectOf(body: Buffer): string | undefined {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { subject?: { digest?: unknown } };
    const d = doc.subject?.digest;
    return typeof d === 'string' && d.startsWith('sha256:') && HEX_RE.test(d.slice(7)) ? d : undefined;
  } catch {
    return undefined;
  }
}

export function referrerDescriptor(m: LinkableManifest): Descriptor {
  const doc = JSON.parse(m.body.toString('utf8')) as {
    artifactType?: string;
    config?: { mediaType?: string };
    annotations?: Record<string, string>;
  };
  const d: Descriptor = { mediaType: m.mediaType, digest: m.digest, size: m.body.length };
  const artifactType = doc.artifactType ?? doc.config?.mediaType;
  if (artifactType) d.artifactType = artifactType;
  if (doc.annotations) d.annotations = doc.annotations;
  return d;
}
