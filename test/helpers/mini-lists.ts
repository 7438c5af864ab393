// The list documents MiniUpstream answers, as plain values: one page of a repository's tags (distribution's
// n/last paging and Link) and the referrers index of a digest.
import { MediaType, sha256 } from '../kit/oci.js';

/** The page of `all` (sorted) after `last`, at most `n` (capped at `pageSize`), and the next page's Link if any. */
export function tagPage(name: string, all: string[], query: URLSearchParams, pageSize: number): { tags: string[]; link?: string } {
  const last = query.get('last');
  const n = Math.min(Number(query.get('n') ?? pageSize) || pageSize, pageSize);
  const after = last === null ? all : all.filter((t) => t > last);
  const tags = after.slice(0, n);
  if (tags.length === after.length) return { tags };
  return { tags, link: `</v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(tags.at(-1) ?? '')}>; rel="next"` };
}

/** The OCI referrers index of `digest` among `bodies` (a repository's manifests by digest). */
export function referrersIndex(bodies: Buffer[], digest: string): string {
  const manifests = bodies
    .map((body) => ({ body, doc: JSON.parse(body.toString('utf8')) as { mediaType?: string; artifactType?: string; subject?: { digest?: string } } }))
    .filter(({ doc }) => doc.subject?.digest === digest)
    .map(({ body, doc }) => ({ mediaType: doc.mediaType ?? MediaType.ociManifest, digest: sha256(body), size: body.length, ...(doc.artifactType ? { artifactType: doc.artifactType } : {}) }));
  return JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });
}
