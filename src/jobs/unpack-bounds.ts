// How much an import may unpack from an archive (free space on the store's filesystem and storage.maxBytes), and
// a zstd decompressor that honours back-pressure: a bomb is refused or drained, never held in memory or on disk.
import { statfs } from 'node:fs/promises';
import zstd from 'zstd-napi/binding.js';
import type { Store } from '../store/store.js';

/** What an import may still unpack, and the words that say why to the operator. */
export interface UnpackRoom {
  bytes: number;
  why: string;
}

const GiB = 1024 ** 3;

/**
 * The one place that decides how much an archive may unpack into `dir` (a scratch folder of the store): half of
 * the free space above a reserve (5 % of the filesystem, at most 1 GiB), since every unpacked byte is copied once
 * more into the store, and no more than storage.maxBytes leaves, the unpacked copy counting as the store's.
 */
export async function unpackRoom(store: Store, dir: string): Promise<UnpackRoom> {
  const fs = await statfs(dir);
  const reserveBytes = Math.min(GiB, Math.floor(fs.blocks * fs.bsize * 0.05));
  const fsBytes = Math.max(0, Math.floor((fs.bavail * fs.bsize - reserveBytes) / 2));
  const room: UnpackRoom = { bytes: fsBytes, why: "the store's filesystem can take (half its free space above a reserve)" };
  if (store.maxBytes === undefined) return room;
  const left = Math.max(0, store.maxBytes - (await store.usage()).bytes);
  return left < room.bytes ? { bytes: left, why: `storage.maxBytes (${store.maxBytes}) leaves` } : room;
}

/** Counts what an archive unpacks against its room; each entry is weighed by its declared size before it is written. */
export class UnpackBudget {
  private usedBytes = 0;

  constructor(private readonly room: UnpackRoom) {}

  /** Why an entry of `sizeBytes` may not be unpacked, or undefined (then it is counted). */
  take(sizeBytes: number): string | undefined {
    const left = this.room.bytes - this.usedBytes;
    if (sizeBytes > left) return `unpacks to ${sizeBytes} bytes, more than the ${left} bytes ${this.room.why}`;
    this.usedBytes += sizeBytes;
    return undefined;
  }
}

/**
 * zstd decompression as an async generator: one output buffer per step, handed on only when the consumer asks,
 * so a chunk that expands a thousandfold costs one buffer at a time (zstd-napi's DecompressStream pushes it all).
 */
export async function* zstdDecompress(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const dctx = new zstd.DCtx();
  const outBytes = zstd.dStreamOutSize();
  let inFrame = false;
  for await (const chunk of source) {
    let src = chunk;
    for (;;) {
      const dst = Buffer.allocUnsafe(outBytes);
      const [ret, produced, consumed] = dctx.decompressStream(dst, src);
      src = src.subarray(consumed);
      if (produced > 0) yield dst.subarray(0, produced);
      if (src.length === 0 && (produced < dst.length || ret === 0)) {
        inFrame = ret !== 0;
        break;
      }
    }
  }
  if (inFrame) throw new Error('the zstd stream ends in the middle of a frame');
}
