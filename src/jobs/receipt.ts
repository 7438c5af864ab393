// The receipt `sluice export` writes beside a bundle: what it contains, what it assumes the other side has,
// the rules it was made from and a checksum of the bundle. `--since RECEIPT` reads it back; import checks it.
import { readFile } from 'node:fs/promises';
import type { BundleChecksum, BundleFormat } from './bundle-sink.js';
import type { TalosCacheFormat } from './talos-cache-export.js';

export const RECEIPT_KIND = 'sluice-export-receipt';
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export interface Receipt {
  kind: typeof RECEIPT_KIND;
  version: 1;
  createdAt: string;
  /** The bundle's file or folder name (beside the receipt). */
  bundle: string;
  format: ExportFormat;
  rules: string[];
  /** Platforms the export was limited to; empty = all. */
  platforms: string[];
  partial: boolean;
  /** The receipt `--since` named (its bundle name and checksum), or null for a full bundle. */
  since: { bundle: string; checksum: string } | null;
  images: Array<{ ref: string; digest: string; missing: string[] }>;
  /** Every blob the bundle holds, manifests included. */
  blobs: Array<{ digest: string; sizeBytes: number }>;
  /** Blobs the images need that were left out (the `--since` receipt has them): the importing store must hold them. */
  assumed: string[];
  sizeBytes: number;
  checksum: BundleChecksum;
}

export type ExportFormat = BundleFormat | TalosCacheFormat;

export class ReceiptError extends Error {}

/** The path of the receipt of a bundle: beside it, `<bundle>.receipt.json`. */
export const receiptPathFor = (bundle: string): string => `${bundle.replace(/\/+$/, '')}.receipt.json`;

/** Everything a later export may leave out: what the bundle holds and what it assumed itself. */
export function knownDigests(r: Receipt): Set<string> {
  return new Set([...r.blobs.map((b) => b.digest), ...r.assumed]);
}

export async function readReceipt(file: string): Promise<Receipt> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ReceiptError(`cannot read the receipt ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? (e as Error).message)}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ReceiptError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  const problem = receiptProblem(doc);
  if (problem) throw new ReceiptError(`${file} is not a sluice export receipt: ${problem}`);
  return doc as Receipt;
}

function receiptProblem(doc: unknown): string | undefined {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return 'not a JSON object';
  const r = doc as Record<string, unknown>;
  if (r.kind !== RECEIPT_KIND) return `kind is ${JSON.stringify(r.kind)}, not "${RECEIPT_KIND}"`;
  if (r.version !== 1) return `version ${JSON.stringify(r.version)} is not supported (1 is)`;
  if (!Array.isArray(r.blobs) || !r.blobs.every((b) => typeof b === 'object' && b !== null && DIGEST_RE.test(String((b as { digest?: unknown }).digest)))) {
    return 'blobs must be a list of {digest, sizeBytes}';
  }
  if (!Array.isArray(r.assumed) || !r.assumed.every((d) => typeof d === 'string' && DIGEST_RE.test(d))) return 'assumed must be a list of digests';
  const c = r.checksum as Record<string, unknown> | undefined;
  if (typeof c !== 'object' || c === null || typeof c.value !== 'string') return 'checksum is missing';
  return undefined;
}
