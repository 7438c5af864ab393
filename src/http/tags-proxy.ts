// The tag list a tags/list request is paged over: in a window the upstream's whole list (its pages followed,
// bounded), else the store's; always filtered by the allowlist first, so paging never sees a tag that is not allowed.
import { RegistryError } from '../oci/errors.js';
import type { Mirror } from '../mirror/mirror.js';
import type { Upstream } from '../upstream/client.js';
import type { UpstreamLookup } from '../upstream/pool.js';
import type { WindowState } from '../window/state.js';

/** Bounds on one upstream listing: pages followed, and bytes of tag names (JSON quoting included). */
export const MAX_UPSTREAM_TAG_PAGES = 100;
export const MAX_UPSTREAM_TAG_BYTES = 4 * 1024 * 1024;

export type TagsLog = (msg: string, fields: Record<string, unknown>) => void;

/** Where a tag list comes from: the mirror's (allowlist-filtered) store list, or the upstream in a window. */
export interface TagSources {
  mirror: Pick<Mirror, 'tags' | 'filterTags'>;
  window: WindowState;
  upstreams: UpstreamLookup;
}

/**
 * The allowed tags of a repository the caller has already checked with `checkRepository`. An upstream that
 * does not know the repository is NAME_UNKNOWN; any other upstream failure falls back to the store's list.
 */
export async function allowedTags(src: TagSources, host: string, name: string, log: TagsLog): Promise<string[]> {
  const { mirror, window } = src;
  const upstream = prepare(src, host);
  if (!upstream) return mirror.tags(host, name);
  let listed: string[];
  try {
    listed = await upstreamTags(window, upstream, name);
  } catch (e) {
    if (e instanceof RegistryError && e.kind === 'NAME_UNKNOWN') throw e;
    log('tags/list from the store instead of the upstream', { host, name, why: e instanceof Error ? e.message : String(e) });
    return mirror.tags(host, name);
  }
  return mirror.filterTags(host, name, listed);
}

/** The upstream to list tags from: only while a window is open and the host is configured. */
function prepare({ window, upstreams }: TagSources, host: string): Upstream | undefined {
  return window.isOpen() ? upstreams.get(host) : undefined;
}

/**
 * Every tag the upstream lists, following its `Link: rel="next"` pages. The window is checked before each page:
 * one closing mid-listing stops it. Past the bounds the listing fails rather than answer from a partial list.
 */
async function upstreamTags(window: WindowState, upstream: Upstream, name: string): Promise<string[]> {
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
