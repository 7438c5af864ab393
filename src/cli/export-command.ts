// `sluice export OUT [RULE…] [--since RECEIPT] [--platform P,…] [--format dir|tar|tar.zst|talos-cache-flat|talos-cache-oci] [--partial] [--json]`:
// parses and checks the options, runs the export on the store, shows progress on a terminal and prints the receipt.
import { flag, UsageError, type ParsedArgs } from './args.js';
import { err, isJson, openAllowlist, out, type Command, openStore } from './commands.js';
import { formatBytes } from './commands.js';
import { ProgressReporter } from './progress.js';
import { BUNDLE_FORMATS, BundleExistsError } from '../jobs/bundle-sink.js';
import { describeMissing, ExportError, exportBundle, sinceRefusal } from '../jobs/exporter.js';
import { exportRules } from '../jobs/export-plan.js';
import { readReceipt, ReceiptError, type ExportFormat, type Receipt } from '../jobs/receipt.js';
import { isTalosCacheFormat, TALOS_CACHE_FORMATS } from '../jobs/talos-cache-export.js';
import { RuleError, type RuleSpec } from '../policy/allowlist.js';
import { Store } from '../store/store.js';

const PLATFORM_RE = /^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/;

export const exportCommand: Command = async (args, config) => {
  const [outPath, ...ruleTexts] = args.positionals;
  if (outPath === undefined) throw new UsageError('export needs OUT: the folder or file to write');
  const format = formatOf(outPath, flag(args, 'format'));
  const asked = platformsOf(flag(args, 'platform'));
  const explicit = ruleTexts.length > 0;
  let rules: RuleSpec[] = explicit ? usageRules(ruleTexts) : [];
  const sinceFile = flag(args, 'since');
  const refused = sinceFile === undefined ? undefined : sinceRefusal(format);
  if (refused) throw new UsageError(`--since: ${refused}`);
  const since = sinceFile === undefined ? undefined : await usageReceipt(sinceFile);
  const cfg = config();
  // As sync and the readiness report: the config's `platforms` unless --platform names others.
  const platforms = asked.length > 0 ? asked : cfg.platforms;
  if (!explicit) rules = exportRules((await openAllowlist(cfg)).list().map((r) => r.rule));
  if (rules.length === 0) {
    err('sluice export: the allowlist is empty and no RULE was given: nothing to export');
    return 1;
  }
  const store = await openStore(cfg);
  const progress = new ProgressReporter('export', process.stderr, { quiet: isJson(args) });
  try {
    const partial = args.flags.get('partial') === true;
    const result = await exportBundle(store, { out: outPath, format, rules, explicitRules: explicit, platforms, since, partial, progress: (p) => progress.update({ unit: 'blobs', done: p.blobsDone, total: p.blobsTotal, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal }) });
    progress.done();
    const r = result.receipt;
    if (isJson(args)) out(JSON.stringify({ receipt: result.receiptPath, ...r }, null, 2));
    else printSummary(outPath, result.receiptPath, r, result.plan.notStored);
    const incomplete = result.plan.images.filter((i) => i.missing.length > 0);
    if (incomplete.length > 0) err(`warning: --partial: these images are incomplete in the bundle:\n${describeMissing(incomplete)}`);
    return 0;
  } catch (e) {
    progress.done();
    if (e instanceof ExportError || e instanceof BundleExistsError) {
      err(`sluice export: ${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    await store.close();
  }
};

function printSummary(outPath: string, receiptPath: string, r: Receipt, notStored: string[]): void {
  for (const i of r.images) out(`exported ${i.ref} ${i.digest}`);
  const since = r.since ? `, ${r.assumed.length} left out (already in ${r.since.bundle})` : '';
  out(`wrote ${outPath} (${r.format}): ${r.images.length} image(s), ${r.blobs.length} blob(s), ${formatBytes(r.sizeBytes)}${since}`);
  out(`receipt ${receiptPath} (${r.checksum.algorithm} ${r.checksum.value})`);
  if (r.format === 'talos-cache-flat') out(`serve it to nodes with: talosctl image cache-serve --image-cache-path ${outPath}`);
  if (r.format === 'talos-cache-oci') out(`build boot media with the imager: … iso --image-cache ${outPath} (platform of the cache: ${r.platforms[0] ?? 'linux/amd64'})`);
  for (const n of notStored) err(`note: ${n} is on the allowlist but not in the store; not exported`);
}

const FORMATS: readonly ExportFormat[] = [...BUNDLE_FORMATS, ...TALOS_CACHE_FORMATS];

function formatOf(outPath: string, given: string | undefined): ExportFormat {
  if (given !== undefined) {
    const format = FORMATS.find((f) => f === given);
    if (format === undefined) throw new UsageError(`--format must be ${FORMATS.join(', ')}; got "${given}"`);
    if (isTalosCacheFormat(format) && /\.tar(\.zst)?$/.test(outPath)) throw new UsageError(`--format ${format} writes a folder (as talosctl images cache-create does); OUT must not end in .tar or .tar.zst`);
    return format;
  }
  return outPath.endsWith('.tar.zst') ? 'tar.zst' : outPath.endsWith('.tar') ? 'tar' : 'dir';
}

function platformsOf(v: string | undefined): string[] {
  const list = (v ?? '').split(',').map((p) => p.trim()).filter((p) => p !== '');
  const bad = list.filter((p) => !PLATFORM_RE.test(p));
  if (bad.length > 0) throw new UsageError(`invalid platform(s) ${bad.join(', ')}: use os/arch[/variant], e.g. linux/amd64`);
  return list;
}

function usageRules(texts: string[]): RuleSpec[] {
  try {
    return exportRules(texts);
  } catch (e) {
    throw e instanceof RuleError ? new UsageError(e.message) : e;
  }
}

/** The operator named the receipt: one that cannot be read or is not a receipt is a usage error. */
async function usageReceipt(file: string): Promise<Receipt> {
  try {
    return await readReceipt(file);
  } catch (e) {
    throw e instanceof ReceiptError ? new UsageError(`--since: ${e.message}`) : e;
  }
}
