// The single-platform OCI images MiniUpstream serves (and tests write into layouts): a config naming the
// repository and tag, the given layers, and the manifest over them.
import { MediaType, sha256 } from '../kit/oci.js';

export interface MiniImage {
  name: string;
  tag: string;
  digest: string;
  manifest: Buffer;
  config: { digest: string; body: Buffer };
  layers: Array<{ digest: string; body: Buffer }>;
  /** Every blob of the image, the manifest first. */
  digests: string[];
  sizeBytes: number;
}

/** An image of `layers` for `name:tag`, not served by anyone yet (for a layout to import, or `MiniUpstream.push`). */
export function miniImage(name: string, tag: string, layers: Buffer[], layerMediaType: string = MediaType.ociLayer): MiniImage {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', tag, name }));
  const cfg = { digest: sha256(config), body: config };
  const ls = layers.map((body) => ({ digest: sha256(body), body }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: cfg.digest, size: config.length },
    layers: ls.map((l) => ({ mediaType: layerMediaType, digest: l.digest, size: l.body.length })),
  }));
  const digest = sha256(manifest);
  const digests = [digest, cfg.digest, ...ls.map((l) => l.digest)];
  const sizeBytes = manifest.length + config.length + ls.reduce((n, l) => n + l.body.length, 0);
  return { name, tag, digest, manifest, config: cfg, layers: ls, digests, sizeBytes };
}
