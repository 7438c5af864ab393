// `sluice export`: writes the images the rules select as a standard OCI image layout (folder, .tar or .tar.zst),
// streaming every blob from the store and re-hashing it on the way, then the receipt beside it.
import { rename, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { MediaType } from '../oci/manifest.js';
import type { RuleSpec } from '../policy/allowlist.js';
import type { Store } from '../store/store.js';
import { openBundle, type BundleFormat, type BundleSink } from './bundle-sink.js';
import { ExportError, ProgressCounter, verified, type ExportProgress } from './export-blobs.js';
import { planExport, type ExportPlan, type PlannedBlob, type PlannedImage } from './export-plan.js';
import { knownDigests, RECEIPT_KIND, receiptPathFor, type ExportFormat, type Receipt } from './receipt.js';
import { isTalosCacheFormat, writeTalosCache } from './talos-cache-export.js';
import { planTalosCache } from './talos-cache-plan.js';

export { ExportError, type ExportProgress } from './export-blobs.js';

export const REF_NAME = 'org.opencontainers.image.ref.name';
/** On an index.json entry: the platforms an export was limited to (the importer then accepts the others absent). */
export const PLATFORMS_ANNOTATION = 'dev.sluice.export.platforms';
/** On index.json: the rules the bundle was made from, comma-separated (`import --allow` adds them). */
export const RULES_ANNOTATION = 'dev.sluice.export.rules';

export interface ExportOptions {
  out: string;
  /** An OCI image layout (folder, .tar, .tar.zst), or a Talos image cache (`talosctl images cache-create --layout flat|oci`). */
  format: ExportFormat;
  rules: readonly RuleSpec[];
  /** Rules came from the operator (an exact rule that finds nothing is an error) rather than the allowlist. */
  explicitRules: boolean;
  platforms?: string[];
  since?: Receipt;
  partial?: boolean;
  progress?: (p: ExportProgress) => void;
}

export interface ExportResult {
  receipt: Receipt;
  receiptPath: string;
  plan: ExportPlan;
}

/** Some images lack blobs in the store (and `--partial` was not given): nothing was written. */
export class IncompleteExportError extends ExportError {
  constructor(readonly images: PlannedImage[]) {
    super(`${images.length} image(s) are incomplete in the store; nothing was written:\n${describeMissing(images)}\n` +
      'give --partial to write them anyway, or --platform to export only the platforms that are stored');
  }
}

export function describeMissing(images: readonly PlannedImage[]): string {
  return images.map((i) => `  ${i.ref}: ${i.missing.length} missing: ${i.missing.join(', ')}`).join('\n');
}

/** Why `--since` cannot apply to the format, or undefined when it can. */
export function sinceRefusal(format: ExportFormat): string | undefined {
  return format === 'talos-cache-oci'
    ? 'a talos-cache-oci export cannot be incremental: the imager takes the whole cache as the one layer of one image; ' +
        'export it whole, or use --format talos-cache-flat --since to add what changed to a cache folder'
    : undefined;
}

export async function exportBundle(store: Store, opts: ExportOptions): Promise<ExportResult> {
  const platforms = opts.platforms ?? [];
  const refused = opts.since ? sinceRefusal(opts.format) : undefined;
  if (refused) throw new ExportError(refused);
  const since = opts.since ? knownDigests(opts.since) : undefined;
  const { plan, write } = await planFormat(store, opts, platforms, since);
  if (opts.explicitRules && plan.notStored.length > 0) {
    throw new ExportError(`not in the store: ${plan.notStored.join(', ')}; nothing was written`);
  }
  if (plan.images.length === 0) throw new ExportError('no stored image matches the rules; nothing to export');
  const incomplete = plan.images.filter((i) => i.missing.length > 0);
  if (incomplete.length > 0 && !opts.partial) throw new IncompleteExportError(incomplete);
  const checksum = await write();
  const receipt = makeReceipt(opts, plan, checksum);
  const receiptPath = receiptPathFor(opts.out);
  await writeFile(`${receiptPath}.tmp-${process.pid}`, `${JSON.stringify(receipt, null, 2)}\n`);
  await rename(`${receiptPath}.tmp-${process.pid}`, receiptPath);
  return { receipt, receiptPath, plan };
}

/** The plan for the format, and how to write it once the plan is accepted. */
async function planFormat(store: Store, opts: ExportOptions, platforms: string[], since?: ReadonlySet<string>): Promise<{ plan: ExportPlan; write: () => Promise<Receipt['checksum']> }> {
  const { format } = opts;
  if (isTalosCacheFormat(format)) {
    const plan = await planTalosCache(store, opts.rules, { platforms, since });
    return { plan, write: () => writeTalosCache(store, plan, { out: opts.out, format, platforms, progress: opts.progress }) };
  }
  const plan = await planExport(store, opts.rules, { platforms, since });
  return { plan, write: () => writeBundle(store, plan, { ...opts, format, platforms }) };
}

async function writeBundle(store: Store, plan: ExportPlan, opts: ExportOptions & { format: BundleFormat; platforms: string[] }): Promise<Receipt['checksum']> {
  const sink = await openBundle(opts.out, opts.format);
  try {
    await writeLayoutFiles(sink, plan, opts.rules, opts.platforms);
    await writeBlobs(store, sink, plan.blobs, opts.progress);
    return await sink.finish();
  } catch (e) {
    await sink.abort();
    throw e;
  }
}

/** oci-layout and index.json first: a bundle cut short in transit still says what it was meant to hold. */
async function writeLayoutFiles(sink: BundleSink, plan: ExportPlan, rules: readonly RuleSpec[], platforms: string[]): Promise<void> {
  const manifests = plan.images.map((i) => ({
    mediaType: i.root.mediaType,
    digest: i.root.digest,
    size: i.root.size,
    annotations: { [REF_NAME]: i.ref, ...(platforms.length > 0 ? { [PLATFORMS_ANNOTATION]: platforms.join(',') } : {}) },
  }));
  const index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests, annotations: { [RULES_ANNOTATION]: rules.map((r) => r.text).join(',') } };
  await addBuffer(sink, 'oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  await addBuffer(sink, 'index.json', Buffer.from(JSON.stringify(index)));
}

function addBuffer(sink: BundleSink, path: string, body: Buffer): Promise<void> {
  return sink.add(path, body.length, [body]);
}

async function writeBlobs(store: Store, sink: BundleSink, blobs: readonly PlannedBlob[], progress?: (p: ExportProgress) => void): Promise<void> {
  const counter = new ProgressCounter(blobs, progress);
  for (const b of blobs) {
    await sink.add(`blobs/sha256/${b.digest.slice(7)}`, b.sizeBytes, verified(store, b, counter.bytes));
    counter.blobDone();
  }
}

function makeReceipt(opts: ExportOptions, plan: ExportPlan, checksum: Receipt['checksum']): Receipt {
  return {
    kind: RECEIPT_KIND,
    version: 1,
    createdAt: new Date().toISOString(),
    bundle: basename(opts.out.replace(/\/+$/, '')),
    format: opts.format,
    rules: opts.rules.map((r) => r.text),
    platforms: opts.platforms ?? [],
    partial: opts.partial === true,
    since: opts.since ? { bundle: opts.since.bundle, checksum: opts.since.checksum.value } : null,
    images: plan.images.map((i) => ({ ref: i.ref, digest: i.root.digest, missing: i.missing })),
    blobs: plan.blobs.map((b) => ({ digest: b.digest, sizeBytes: b.sizeBytes })),
    assumed: plan.assumed,
    sizeBytes: plan.blobs.reduce((n, b) => n + b.sizeBytes, 0),
    checksum,
  };
}
