// The upstream's whole tag list of one repository, its pages followed within fixed bounds; shared by the
// tags/list (mirror.ts) and the digest decision for glob-tag rules (upstream-reach.ts).
import type { Upstream } from '../upstream/client.js';

/** Bounds on one upstream listing: pages followed, and bytes of tag names (JSON quoting included). */
export const MAX_UPSTREAM_TAG_PAGES = 100;
export const MAX_UPSTREAM_TAG_BYTES = 4 * 1024 * 1024;

/**
 * Every tag the upstream lists, following its `Link: rel="next"` pages. The window is checked before each page:
 * one closing mid-listing stops it. Past the bounds the listing fails rather than answer from a partial list.
 */
export async function upstreamTags(window: { isOpen(): boolean }, upstream: Upstream, name: string): Promise<string[]> {
  const tags = new Set<string>();
  let bytes = 0;
  let last: string | undefined;
  for (let page = 0; page < MAX_UPSTREAM_TAG_PAGES; page++) {
    if (!window.isOpen()) throw new Error('the sync window closed while listing tags');
    const got = await upstream.tagsList(name, undefined, last);
    for (const t of got.tags) {
      if (tags.has(t)) continue;
      tags.add(t);
      bytes += Buffer.byteLength(t) + 3;
    }
    if (bytes > MAX_UPSTREAM_TAG_BYTES) throw new Error(`upstream tags list larger than ${MAX_UPSTREAM_TAG_BYTES} bytes`);
    // A cursor that does not move on would page forever.
    if (got.nextLast === undefined || got.nextLast === last) return [...tags];
    last = got.nextLast;
  }
  throw new Error(`upstream tags list longer than ${MAX_UPSTREAM_TAG_PAGES} pages`);
}
