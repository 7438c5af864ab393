// Where things live in a flat Talos image cache (siderolabs/talos pkg/imager/cache/cache.go): blobs, a tag's
// manifest, a manifest by digest, and a registry's folder name. `sluice import` reads and `sluice export` writes by these.
import { canonicalHost } from '../oci/reference.js';

export const BLOB_DIR = 'blob';
export const MANIFESTS_DIR = 'manifests';

/** `sha256-<hex>`: how the tree names a blob or a manifest (a colon is not allowed on vfat). */
export const DIGEST_FILE = /^sha256-([a-f0-9]{64})$/;

export const digestFileName = (digest: string): string => digest.replace('sha256:', 'sha256-');

/** The digest a `sha256-<hex>` file name stands for, or undefined for any other name. */
export function digestOfFileName(file: string): string | undefined {
  const m = DIGEST_FILE.exec(file);
  return m ? `sha256:${m[1]}` : undefined;
}

/** `host:port` → `host_port_`, as cache.go's rewriteRegistry writes it (its last colon only). */
export function registryDir(host: string): string {
  const i = host.lastIndexOf(':');
  return i > 0 ? `${host.slice(0, i)}_${host.slice(i + 1)}_` : host;
}

/** `host_port_` → `host:port`; other names as they are. */
export function registryOfDir(dir: string): string {
  const m = /^(.+)_(\d{1,5})_$/.exec(dir);
  return canonicalHost(m ? `${m[1]}:${m[2]}` : dir);
}

/** `manifests/<registry>/<repository>`: the folder holding `reference/` and `digest/`. */
export const repositoryDir = (host: string, name: string): string => `${MANIFESTS_DIR}/${registryDir(host)}/${name}`;

/** The manifest a tag resolves to (the same bytes as its `digest/` copy). */
export const referenceFile = (host: string, name: string, tag: string): string => `${repositoryDir(host, name)}/reference/${tag}`;

/** Every manifest of the repository's images, by digest. */
export const digestFile = (host: string, name: string, digest: string): string => `${repositoryDir(host, name)}/digest/${digestFileName(digest)}`;

/** Configs and layers, shared by every repository. */
export const blobFile = (digest: string): string => `${BLOB_DIR}/${digestFileName(digest)}`;
