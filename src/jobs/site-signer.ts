// Site signatures: signs an admitted image (its index and every stored platform manifest) with the site key in the
// three forms Talos looks up — bundle referrer, `sha256-<hex>` index, `sha256-<hex>.sig` — when the policy allows.
// Idempotent: what is signed with the current key already is kept; the upstream's own signatures stay beside it.
import type { SigningConfig, SigningPolicy, SigningRule } from '../config/config.js';
import { isIndexType, parseManifest, type Descriptor } from '../oci/manifest.js';
import {
  BUNDLE_MEDIA_TYPE_PREFIX, bundleReferrer, bundleTagIndex, legacySignatureLayer, legacySignatureManifest, manifestAnnotations,
  messageSignatureBundle, simpleSigningPayload, siteKeyOf, SITE_KEY_ANNOTATION, SITE_POLICY_ANNOTATION, SITE_VERIFIED_ANNOTATION, type Part,
} from '../oci/site-signature.js';
import type { Store, StoredManifest } from '../store/store.js';
import { loadSiteKey, type SiteKey } from './site-key.js';
import { verifyUpstream, type Verification } from './upstream-signatures.js';
import { loadTrustedRoot, type KeylessTrust } from './keyless.js';

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
      const signed = await this.siteReferrer(host, name, x.digest);
      if (signed !== undefined && (await this.tagsCurrent(host, name, x.digest))) {
        out.push({ digest: x.digest, signed: true, policy: signed.annotations?.[SITE_POLICY_ANNOTATION] ?? '', verified: signed.annotations?.[SITE_VERIFIED_ANNOTATION] ?? '' });
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
    const existing = await this.siteReferrer(host, name, m.digest);
    if (existing && (await this.tagsCurrent(host, name, m.digest))) return { digest: m.digest, state: 'kept', policy: this.policy, verified };
    if (!existing) await this.addReferrer(host, name, m, verified);
    await this.writeLegacy(host, name, m.digest);
    await this.writeBundleTag(host, name, m.digest);
    return { digest: m.digest, state: 'signed', policy: this.policy, verified };
  }

  private async storedChildren(m: StoredManifest): Promise<StoredManifest[]> {
    if (!isIndexType(m.mediaType)) return [];
    const out: StoredManifest[] = [];
    for (const d of parseManifest(m.body)?.manifests ?? []) {
      const child = await this.store.getManifest(d.digest);
      if (child) out.push(child);
    }
    return out;
  }

  private async siteReferrer(host: string, name: string, digest: string): Promise<Descriptor | undefined> {
    return (await this.store.referrers(host, name, digest)).find((d) => siteKeyOf(d.annotations) === this.key.id);
  }

  /** Both signature tags point at what sluice made with the current key. */
  private async tagsCurrent(host: string, name: string, digest: string): Promise<boolean> {
    const hex = digest.slice('sha256:'.length);
    for (const tag of [`sha256-${hex}`, `sha256-${hex}.sig`]) {
      const d = await this.store.getTag(host, name, tag);
      const t = d ? await this.store.getManifest(d) : undefined;
      if (!t || siteKeyOf(manifestAnnotations(t.body)) !== this.key.id) return false;
    }
    return true;
  }

  private async addReferrer(host: string, name: string, m: StoredManifest, verified: string): Promise<void> {
    const subject: Descriptor = { mediaType: m.mediaType, digest: m.digest, size: m.body.length };
    const bundle = messageSignatureBundle(this.key.id, m.digest, this.key.sign(m.body));
    const ref = bundleReferrer(subject, bundle, { [SITE_KEY_ANNOTATION]: this.key.id, [SITE_POLICY_ANNOTATION]: this.policy, [SITE_VERIFIED_ANNOTATION]: verified });
    await this.put(host, name, ref.manifest, ref.blobs);
  }

  /** `sha256-<hex>.sig`: the upstream's signature layers (if any) and one site layer, in one OCI manifest. */
  private async writeLegacy(host: string, name: string, digest: string): Promise<void> {
    const tag = `sha256-${digest.slice('sha256:'.length)}.sig`;
    const current = await this.tagged(host, name, tag);
    const layers = parseManifest(current?.body ?? Buffer.alloc(0))?.layers ?? [];
    const upstream = layers.filter((l) => siteKeyOf(l.annotations) === undefined);
    const own = layers.find((l) => siteKeyOf(l.annotations) === this.key.id);
    const blobs: Part[] = [];
    let site = own;
    if (!site) {
      const payload = simpleSigningPayload(`${host}/${name}`, digest);
      const layer = legacySignatureLayer(payload, this.key.sign(payload), this.key.id);
      blobs.push(layer);
      site = layer.descriptor;
    }
    const sig = legacySignatureManifest([...upstream, site], this.key.id);
    await this.put(host, name, sig.manifest, [...blobs, sig.config], tag);
  }

  /** `sha256-<hex>`: an index of every bundle manifest of the image (the upstream's and the site's). */
  private async writeBundleTag(host: string, name: string, digest: string): Promise<void> {
    const tag = `sha256-${digest.slice('sha256:'.length)}`;
    const entries: Descriptor[] = [];
    for (const d of await this.store.referrers(host, name, digest)) {
      const key = siteKeyOf(d.annotations);
      if (d.artifactType?.startsWith(BUNDLE_MEDIA_TYPE_PREFIX) && (key === undefined || key === this.key.id)) entries.push(d);
    }
    const current = await this.tagged(host, name, tag);
    if (current) {
      const doc = parseManifest(current.body);
      if (isIndexType(current.mediaType)) entries.push(...(doc?.manifests ?? []).filter((d) => siteKeyOf(d.annotations) === undefined));
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

  /** Stores blobs, then the manifest, links both to the repository and moves `tag` when given. */
  private async put(host: string, name: string, manifest: Part, blobs: Part[], tag?: string): Promise<void> {
    for (const b of blobs) {
      if (!(await this.store.stat(b.descriptor.digest))) await this.store.putBlob(b.bytes, { digest: b.descriptor.digest, sizeBytes: b.bytes.length });
      await this.store.linkBlob(host, name, b.descriptor.digest);
    }
    const m = await this.store.putManifest(manifest.bytes, manifest.descriptor.mediaType, manifest.descriptor.digest);
    await this.store.linkManifest(host, name, m);
    if (tag !== undefined && (await this.store.getTag(host, name, tag)) !== m.digest) await this.store.setTag(host, name, tag, m.digest);
  }
}
