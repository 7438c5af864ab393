// The tag list a tags/list request is paged over: in a window the upstream's whole list (its pages followed,
// bounded), else the store's; always filtered by the allowlist first, so paging never sees a tag that is not allowed.
import { RegistryError } from '../oci/errors.js';
import type { Mirror } from '../mirror/mirror.js';
import type { Upstream } from '../upstream/client.js';
import type { UpstreamLookup } from '../upstream/pool.js';
import { upstreamTags } from '../mirror/upstream-tags.js';
import type { WindowState } from '../window/state.js';

export { MAX_UPSTREAM_TAG_PAGES, MAX_UPSTREAM_TAG_BYTES } from '../mirror/upstream-tags.js';

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
