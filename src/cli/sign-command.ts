// `sluice sign [RULE…] [--json]`: signs the admitted images (of the rules named, or of every rule) with the site
// key on the store, as the signing policy decides; and the one call `sluice import` makes after its commit.
import type { Config, SigningConfig } from '../config/config.js';
import { admittedImages, type AdmittedImage } from '../jobs/admitted-images.js';
import { signImages, type SignReport } from '../jobs/sign-run.js';
import { SiteKeyError } from '../jobs/site-key.js';
import { SiteSigner } from '../jobs/site-signer.js';
import { signatureSubject } from '../policy/allowlist.js';
import type { Store } from '../store/store.js';
import { UsageError, type ParsedArgs } from './args.js';
import { err, isJson, notifyStoreChanged, openAllowlist, openStore, out } from './commands.js';

export async function signCommand(args: ParsedArgs, config: () => Config): Promise<number> {
  const cfg = config();
  const signing = requireSigning(cfg);
  const store = await openStore(cfg);
  try {
    const allowlist = await openAllowlist(cfg);
    const rules = allowlist.list().map((r) => r.rule);
    allowlist.close();
    const unknown = args.positionals.filter((r) => !rules.includes(r));
    if (unknown.length > 0) throw new UsageError(`not on the allowlist (sluice allow ls lists the rules): ${unknown.join(', ')}`);
    const signer = await openSigner(store, signing);
    const report = await signImages(signer, store, await admittedImages(store, args.positionals.length > 0 ? args.positionals : rules));
    if (report.signed > 0) await notifyStoreChanged(cfg);
    if (isJson(args)) out(JSON.stringify(report, null, 2));
    else out(describe(report, signer));
    return report.unsigned > 0 || report.notStored.length > 0 ? 1 : 0;
  } finally {
    await store.close();
  }
}

/** After an import: signs the imported images the allowlist admits (nothing when signing is off). */
export async function signImported(cfg: Config, store: Store, imported: ReadonlyArray<{ ref: string }>): Promise<void> {
  if (!cfg.signing || imported.length === 0) return;
  const allowlist = await openAllowlist(cfg);
  const images: AdmittedImage[] = [];
  for (const { ref } of imported) {
    const image = parseRef(ref);
    if (!image) continue;
    const { host, name, reference } = image;
    const admitted = reference.startsWith('sha256:') ? allowlist.isDigestPinned(host, name, reference) : allowlist.matchTag(host, name, reference) !== undefined;
    if (admitted) images.push({ rule: ref, ...image });
  }
  allowlist.close();
  if (images.length === 0) return;
  let signer: SiteSigner;
  try {
    signer = await SiteSigner.open(store, cfg.signing);
  } catch (e) {
    if (!(e instanceof SiteKeyError)) throw e;
    err(`imported, but not site-signed: ${e.message}`);
    return;
  }
  const report = await signImages(signer, store, images);
  if (report.signed > 0) await notifyStoreChanged(cfg);
  out(`site signatures: ${report.signed} made, ${report.kept} kept, ${report.unsigned} left unsigned`);
  for (const i of report.images) for (const m of i.manifests) if (m.state === 'unsigned') err(`not site-signed ${i.reference} ${m.digest}: ${m.reason}`);
}

function requireSigning(cfg: Config): SigningConfig {
  if (!cfg.signing) throw new UsageError(`signing is not configured in ${cfg.file}: add signing: { key: ./site.key, ... } (sluice signing init writes the key)`);
  return cfg.signing;
}

async function openSigner(store: Store, signing: SigningConfig): Promise<SiteSigner> {
  try {
    return await SiteSigner.open(store, signing);
  } catch (e) {
    throw e instanceof SiteKeyError ? new UsageError(e.message) : e;
  }
}

/** `host/name:tag` or `host/name@sha256:…` as import reports it; signature tags are no images. */
function parseRef(ref: string): Omit<AdmittedImage, 'rule'> | undefined {
  const slash = ref.indexOf('/');
  const at = ref.indexOf('@');
  const colon = at === -1 ? ref.lastIndexOf(':') : -1;
  const split = at !== -1 ? at : colon;
  if (slash === -1 || split <= slash) return undefined;
  const reference = ref.slice(split + 1);
  if (signatureSubject(reference) !== undefined) return undefined;
  return { host: ref.slice(0, slash), name: ref.slice(slash + 1, split), reference };
}

function describe(r: SignReport, signer: SiteSigner): string {
  const lines: string[] = [];
  for (const i of r.images) {
    for (const m of i.manifests) {
      if (m.state === 'unsigned') lines.push(`UNSIGNED ${i.reference} ${m.digest}: ${m.reason}`);
      else lines.push(`${m.state.padEnd(8)} ${i.reference} ${m.digest} (${m.policy}: ${m.verified ?? ''})`);
    }
  }
  for (const n of r.notStored) lines.push(`NOT STORED ${n}: sync it in a window or import it, then sign`);
  lines.push(`site key ${signer.key.id.slice(0, 16)}…, policy ${signer.policy}: ${r.signed} signed, ${r.kept} already signed, ${r.unsigned} left unsigned, ${r.notStored.length} not stored`);
  return lines.join('\n');
}
