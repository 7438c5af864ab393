// Site signatures: signs an admitted image (its index and every stored platform manifest) with the site key in the
// three forms Talos looks up — bundle referrer, `sha256-<hex>` index, `sha256-<hex>.sig` — when the policy allows.
// Idempotent: what is signed with the current key already is kept; the upstream's own signatures stay beside it.
import type { SigningConfig, SigningPolicy, SigningRule } from '../config/config.js';
import { isIndexType, type Descriptor } from '../oci/manifest.js';
import {
  bundleReferrer, isBundleType, listed, bundleTagIndex, legacySignatureLayer, legacySignatureManifest, manifestAnnotations,
  messageSignatureBundle, simpleSigningPayload, siteKeyOf, SITE_KEY_ANNOTATION, SITE_POLICY_ANNOTATION, SITE_VERIFIED_ANNOTATION, type Part,
} from '../oci/site-signature.js';
import type { Store, StoredManifest } from '../store/store.js';
import { loadSiteKey, type SiteKey } from './site-key.js';
import { verifyUpstream, type Verification } from './upstream-signatures.js';
import { loadTrustedRoot, type KeylessTrust } from './keyless.js';
import { checkSite } from './site-check.js';

/** One manifest's outcome: signed now, already signed (kept), or left unsigned and why. */
export type ManifestSigning =
  | { digest: string; state: 'signed' | 'kept'; policy: SigningPolicy; verified?: string }
  | { digest: string; state: 'unsigned'; reason: string };

export interface ImageSigning {
  host: string;
  name: string;
  digest: string;
  manifests: ManifestSigning[];
}

/** What the readiness report shows of one manifest's site signature. */
export interface SiteSignatureState {
  digest: string;
  signed: boolean;
  policy?: string;
  verified?: string;
  /** Why it is not signed (the policy's reason, or that `sluice sign` has not run since). */
  reason?: string;
}

export class SiteSigner {
  constructor(
    private readonly store: Store,
    readonly key: SiteKey,
    readonly policy: SigningPolicy,
    private readonly rules: readonly SigningRule[],
    private readonly trust?: KeylessTrust,
  ) {}

  static async open(store: Store, cfg: SigningConfig): Promise<SiteSigner> {
    const trust = cfg.trustedRoot !== undefined ? await loadTrustedRoot(cfg.trustedRoot) : undefined;
    return new SiteSigner(store, await loadSiteKey(cfg.key), cfg.policy, cfg.rules, trust);
  }

  /** Signs the image `root` and the stored manifests of its index, each as the policy decides. */
  async signImage(host: string, name: string, root: string): Promise<ImageSigning> {
    const out: ImageSigning = { host, name, digest: root, manifests: [] };
    const m = await this.store.getManifest(root);
    if (!m) {
      out.manifests.push({ digest: root, state: 'unsigned', reason: `${root} is not stored` });
      return out;
    }
    const rootDecision = await this.decide(host, name, root);
    out.manifests.push(await this.signIf(host, name, m, rootDecision));
    for (const child of await this.storedChildren(m)) {
      // An index whose upstream signature verified vouches for every manifest it lists (their digests are in it).
      const d = rootDecision.verified ? { verified: true as const, rule: rootDecision.rule, via: `index ${root}` } : await this.decide(host, name, child.digest);
      out.manifests.push(await this.signIf(host, name, child, d));
    }
    return out;
  }

  /** The site signature state of the image and the stored manifests of its index (for the readiness report). */
  async status(host: string, name: string, root: string): Promise<SiteSignatureState[]> {
    const m = await this.store.getManifest(root);
    if (!m) return [];
    const out: SiteSignatureState[] = [];
    let rootDecision: Promise<Verification> | undefined;
    for (const x of [m, ...(await this.storedChildren(m))]) {
      const c = await checkSite(this.store, this.key, host, name, x);
      if (c.referrer && c.legacy && c.index) {
        out.push({ digest: x.digest, signed: true, policy: c.referrer.annotations?.[SITE_POLICY_ANNOTATION] ?? '', verified: c.referrer.annotations?.[SITE_VERIFIED_ANNOTATION] ?? '' });
        continue;
      }
      // As signImage decides: the image's own verdict, which for a platform manifest its verified index vouches for.
      rootDecision ??= this.decide(host, name, root);
      let v = await rootDecision;
      if (x !== m && !v.verified) v = await this.decide(host, name, x.digest);
      out.push({ digest: x.digest, signed: false, reason: v.verified ? 'not signed yet: run `sluice sign` (or a sync or import, which sign)' : v.reason });
    }
    return out;
  }

  private decide(host: string, name: string, digest: string): Promise<Verification> {
    if (this.policy === 'allowlist') return Promise.resolve({ verified: true, rule: 'policy allowlist (no upstream signature required)', via: '' });
    return verifyUpstream(this.store, this.rules, host, name, digest, this.trust);
  }

  private async signIf(host: string, name: string, m: StoredManifest, v: Verification): Promise<ManifestSigning> {
    if (!v.verified) return { digest: m.digest, state: 'unsigned', reason: v.reason };
    const verified = this.policy === 'allowlist' ? 'not verified (policy allowlist)' : `${v.rule}${v.via ? ` via ${v.via}` : ''}`;
    const c = await checkSite(this.store, this.key, host, name, m);
    if (c.referrer && c.legacy && c.index) return { digest: m.digest, state: 'kept', policy: this.policy, verified };
    const referrer = c.referrer ?? (await this.addReferrer(host, name, m, verified));
    if (!c.legacy) await this.writeLegacy(host, name, m.digest);
    await this.writeBundleTag(host, name, m.digest, referrer);
    return { digest: m.digest, state: 'signed', policy: this.policy, verified };
  }

  private async storedChildren(m: StoredManifest): Promise<StoredManifest[]> {
    if (!isIndexType(m.mediaType)) return [];
    const out: StoredManifest[] = [];
    for (const d of listed(m.body, 'manifests')) {
      const child = await this.store.getManifest(d.digest);
      if (child) out.push(child);
    }
    return out;
  }

  private async addReferrer(host: string, name: string, m: StoredManifest, verified: string): Promise<Descriptor> {
    const subject: Descriptor = { mediaType: m.mediaType, digest: m.digest, size: m.body.length };
    const bundle = messageSignatureBundle(this.key.id, m.digest, this.key.sign(m.body));
    const ref = bundleReferrer(subject, bundle, { [SITE_KEY_ANNOTATION]: this.key.id, [SITE_POLICY_ANNOTATION]: this.policy, [SITE_VERIFIED_ANNOTATION]: verified });
    await this.put(host, name, ref.manifest, ref.blobs);
    // The entry exactly as the referrers API lists it (artifactType and annotations included).
    const listedAs = (await this.store.referrers(host, name, m.digest)).find((d) => d.digest === ref.manifest.descriptor.digest);
    return listedAs ?? ref.manifest.descriptor;
  }

  /** `sha256-<hex>.sig`: the upstream's signature layers (if any) and one site layer, in one OCI manifest. */
  private async writeLegacy(host: string, name: string, digest: string): Promise<void> {
    const tag = `sha256-${digest.slice('sha256:'.length)}.sig`;
    const current = await this.tagged(host, name, tag);
    const layers = listed(current?.body, 'layers');
    // Called when no sound site layer is there: any layer marked as a site's is dropped (an old key's, or a forgery).
    const upstream = layers.filter((l) => siteKeyOf(l.annotations) === undefined);
    const payload = simpleSigningPayload(`${host}/${name}`, digest);
    const layer = legacySignatureLayer(payload, this.key.sign(payload), this.key.id);
    const sig = legacySignatureManifest([...upstream, layer.descriptor], this.key.id);
    await this.put(host, name, sig.manifest, [layer, sig.config], tag);
  }

  /** `sha256-<hex>`: an index of every bundle manifest of the image (the upstream's and the site's sound one). */
  private async writeBundleTag(host: string, name: string, digest: string, site: Descriptor): Promise<void> {
    const tag = `sha256-${digest.slice('sha256:'.length)}`;
    const entries: Descriptor[] = [site];
    for (const d of await this.store.referrers(host, name, digest)) {
      if (isBundleType(d.artifactType) && siteKeyOf(d.annotations) === undefined) entries.push(d);
    }
    const current = await this.tagged(host, name, tag);
    if (current) {
      if (isIndexType(current.mediaType)) entries.push(...listed(current.body, 'manifests').filter((d) => siteKeyOf(d.annotations) === undefined));
      else if (!siteKeyOf(manifestAnnotations(current.body))) entries.push({ mediaType: current.mediaType, digest: current.digest, size: current.body.length });
    }
    const seen = new Set<string>();
    const index = bundleTagIndex(entries.filter((d) => !seen.has(d.digest) && seen.add(d.digest)), this.key.id);
    await this.put(host, name, index, [], tag);
  }

  private async tagged(host: string, name: string, tag: string): Promise<StoredManifest | undefined> {
    const d = await this.store.getTag(host, name, tag);
    return d ? this.store.getManifest(d) : undefined;
  }

  /**
   * Stores blobs, then the manifest, links both to the repository and moves `tag` when given: one commit
   * (store/commit-gate.ts), so no gc sweeps a blob before what names it is stored; the backend itself is asked.
   */
  private async put(host: string, name: string, manifest: Part, blobs: Part[], tag?: string): Promise<void> {
    await this.store.commits.commit(async () => {
      for (const b of blobs) {
        if (!(await this.store.blobs.stat(b.descriptor.digest))) await this.store.putBlob(b.bytes, { digest: b.descriptor.digest, sizeBytes: b.bytes.length });
        await this.store.linkBlob(host, name, b.descriptor.digest);
      }
      const m = await this.store.putManifest(manifest.bytes, manifest.descriptor.mediaType, manifest.descriptor.digest);
      await this.store.linkManifest(host, name, m);
      if (tag !== undefined && (await this.store.getTag(host, name, tag)) !== m.digest) await this.store.setTag(host, name, tag, m.digest);
    });
  }
}
