// How many blobs a store holds and their bytes (fs and S3 alike): one scan when first asked, then kept current by
// the commits and deletes of this process; a scan racing them stays exact by going one digest prefix at a time.
import { hexOf } from '../digest.js';
import type { BlobStat, BlobUsage } from '../ports.js';

interface Scan {
  /** The prefix folder being read: changes below it are counted as deltas, in it are re-looked at, above it are seen. */
  prefix: string;
  touched: Set<string>;
  totals: BlobUsage;
}

const PREFIXES = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export class BlobUsageCount {
  private totals: BlobUsage | undefined;
  private counting: Promise<BlobUsage> | undefined;
  private scan: Scan | undefined;
  private stale = false;
  /** New blobs being placed: a scan leaves them to `adding`'s own count, whenever their placing ends. */
  private readonly placing = new Set<string>();

  constructor(
    private readonly statOf: (digest: string) => Promise<BlobStat | undefined>,
    /** Digests committed under one prefix folder (`blobs/sha256/<prefix>/`). */
    private readonly listPrefix: (prefix: string) => Promise<string[]>,
  ) {}

  async get(): Promise<BlobUsage> {
    const t = this.totals ?? (await (this.counting ??= this.countAll()));
    return { blobs: t.blobs, bytes: t.bytes };
  }

  /** Forget the totals (another process changed the blobs): the next `get` counts again. */
  reset(): void {
    if (this.counting) this.stale = true;
    this.totals = undefined;
  }

  /**
   * Places a blob that was not there (`place` renames or uploads it) and counts it once: a scan that lists it while
   * it is placed (before `place` resolves) skips it, and the count arrives when placing ends.
   */
  async adding(digest: string, bytes: number, place: () => Promise<void>): Promise<void> {
    this.placing.add(digest);
    try {
      await place();
    } finally {
      this.placing.delete(digest);
    }
    this.change(digest, 1, bytes);
  }

  /** A blob came (+1, +size) or went (−1, −size) in this process. */
  change(digest: string, blobs: number, bytes: number): void {
    const target = this.totals ?? this.scanTarget(digest);
    if (!target) return;
    target.blobs += blobs;
    target.bytes += bytes;
  }

  private scanTarget(digest: string): BlobUsage | undefined {
    const scan = this.scan;
    if (!scan) return undefined;
    const prefix = hexOf(digest).slice(0, 2);
    if (prefix < scan.prefix) return scan.totals;
    if (prefix === scan.prefix) scan.touched.add(digest);
    return undefined;
  }

  private async countAll(): Promise<BlobUsage> {
    const scan: Scan = (this.scan = { prefix: '', touched: new Set(), totals: { blobs: 0, bytes: 0 } });
    try {
      scan.prefix = PREFIXES[0] ?? '';
      for (let i = 0; i < PREFIXES.length; i++) await this.countPrefix(scan, PREFIXES[i + 1] ?? 'g');
      if (!this.stale) this.totals = scan.totals;
      return scan.totals;
    } finally {
      this.scan = undefined;
      this.counting = undefined;
      this.stale = false;
    }
  }

  /**
   * One folder; digests changed meanwhile are looked at again until none is left, so none counts twice. Moving on to
   * `next` happens in the same turn as the last look, so a change landing after it is counted as a delta.
   */
  private async countPrefix(scan: Scan, next: string): Promise<void> {
    const counted = new Map<string, number>();
    const add = async (digest: string): Promise<void> => {
      const s = await this.statOf(digest);
      if (!s) return;
      counted.set(digest, s.sizeBytes);
      scan.totals.blobs++;
      scan.totals.bytes += s.sizeBytes;
    };
    for (const digest of await this.listPrefix(scan.prefix)) if (!scan.touched.has(digest) && !this.placing.has(digest)) await add(digest);
    for (let digest = first(scan.touched); digest !== undefined; digest = first(scan.touched)) {
      scan.touched.delete(digest);
      const before = counted.get(digest);
      if (before !== undefined) {
        counted.delete(digest);
        scan.totals.blobs--;
        scan.totals.bytes -= before;
      }
      await add(digest);
    }
    scan.prefix = next;
    scan.touched = new Set();
  }
}

function first(set: Set<string>): string | undefined {
  for (const v of set) return v;
  return undefined;
}
