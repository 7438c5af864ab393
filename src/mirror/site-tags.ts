// Signature tags sluice owns: a `sha256-<hex>[.sig]` tag whose stored manifest sluice made with the site key is
// answered from the store, in a window too — the upstream is never asked for it, so it cannot replace it.
import { signatureSubject } from '../policy/matcher.js';
import { manifestAnnotations, siteKeyOf } from '../oci/site-signature.js';
import type { Store } from '../store/store.js';

/**
 * The stored digest of a site-owned signature tag, or undefined when the tag is the upstream's (or unknown). The mark
 * is not proof (jobs/site-check.ts verifies): an upstream manifest wearing it only stops this tag's refreshes, and
 * the next signing run replaces it.
 */
export async function siteOwnedTag(store: Pick<Store, 'getTag' | 'getManifest'>, host: string, name: string, tag: string): Promise<string | undefined> {
  if (signatureSubject(tag) === undefined) return undefined;
  const digest = await store.getTag(host, name, tag);
  const m = digest ? await store.getManifest(digest) : undefined;
  return m && siteKeyOf(manifestAnnotations(m.body)) !== undefined ? m.digest : undefined;
}
