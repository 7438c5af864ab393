// Whether a manifest's site signature is there and sound in each form: checked with the site key, never taken on
// the word of an annotation (an upstream's referrer or `.sig` could carry sluice's annotations too).
import type { Descriptor } from '../oci/manifest.js';
import { COSIGN_SIGNATURE_ANNOTATION, listed, manifestAnnotations, siteKeyOf } from '../oci/site-signature.js';
import type { Store, StoredManifest } from '../store/store.js';
import type { SiteKey } from './site-key.js';

export type SiteCheckStore = Pick<Store, 'referrers' | 'getManifest' | 'getTag' | 'readBlob'>;

export interface SiteCheck {
  /** The bundle referrer whose signature verifies with the site key over this manifest. */
  referrer?: Descriptor;
  /** `sha256-<hex>.sig` is sluice's, with a site layer that verifies. */
  legacy: boolean;
  /** `sha256-<hex>` is sluice's index and lists that referrer. */
  index: boolean;
}

export async function checkSite(store: SiteCheckStore, key: SiteKey, host: string, name: string, m: StoredManifest): Promise<SiteCheck> {
  const hex = m.digest.slice('sha256:'.length);
  let referrer: Descriptor | undefined;
  for (const d of await store.referrers(host, name, m.digest)) {
    if (siteKeyOf(d.annotations) === key.id && (await bundleSigns(store, key, d.digest, m))) {
      referrer = d;
      break;
    }
  }
  const sig = await tagged(store, host, name, `sha256-${hex}.sig`, key.id);
  let legacy = false;
  for (const l of listed(sig?.body, 'layers')) {
    const signature = l.annotations?.[COSIGN_SIGNATURE_ANNOTATION];
    if (siteKeyOf(l.annotations) !== key.id || typeof signature !== 'string') continue;
    const payload = await store.readBlob(l.digest);
    if (payload && payloadNames(payload, m.digest) && key.verify(payload, Buffer.from(signature, 'base64'))) legacy = true;
  }
  const index = await tagged(store, host, name, `sha256-${hex}`, key.id);
  const listsReferrer = referrer !== undefined && listed(index?.body, 'manifests').some((d) => d.digest === referrer.digest);
  return { ...(referrer ? { referrer } : {}), legacy, index: listsReferrer };
}

/** The manifest a tag points at, when sluice made it with this key. */
async function tagged(store: SiteCheckStore, host: string, name: string, tag: string, keyId: string): Promise<StoredManifest | undefined> {
  const d = await store.getTag(host, name, tag);
  const t = d ? await store.getManifest(d) : undefined;
  return t && siteKeyOf(manifestAnnotations(t.body)) === keyId ? t : undefined;
}

async function bundleSigns(store: SiteCheckStore, key: SiteKey, referrer: string, m: StoredManifest): Promise<boolean> {
  const [layer] = listed((await store.getManifest(referrer))?.body, 'layers');
  const bytes = layer ? await store.readBlob(layer.digest) : undefined;
  if (!bytes) return false;
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as { messageSignature?: { messageDigest?: { digest?: unknown }; signature?: unknown } };
    const ms = doc.messageSignature;
    if (typeof ms?.signature !== 'string' || typeof ms.messageDigest?.digest !== 'string') return false;
    if (Buffer.from(ms.messageDigest.digest, 'base64').toString('hex') !== m.digest.slice('sha256:'.length)) return false;
    return key.verify(m.body, Buffer.from(ms.signature, 'base64'));
  } catch {
    return false;
  }
}

function payloadNames(payload: Buffer, digest: string): boolean {
  try {
    return (JSON.parse(payload.toString('utf8')) as { critical?: { image?: Record<string, unknown> } }).critical?.image?.['docker-manifest-digest'] === digest;
  } catch {
    return false;
  }
}
