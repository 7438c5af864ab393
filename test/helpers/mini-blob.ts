// How MiniUpstream sends a blob body: in chunks, with the faults a test scripts (a short or corrupted body, a cut or
// a stall at a share of it, a hand on the tap before each chunk, a pause at the half).
import type { ServerResponse } from 'node:http';
import { write } from './http-server.js';
import { MiB } from '../kit/oci.js';

export interface BlobBehaviour {
  /** Bytes per write; default 1 MiB. */
  chunkBytes?: number;
  /** Awaited before chunk `i` of `n` is written: the test's hand on the tap. */
  beforeChunk?: (i: number, n: number) => Promise<void>;
  /** Flip one byte in the middle (or the last one): the right length, the wrong digest. */
  corrupt?: boolean | 'last';
  /** Destroy the connection once this share of the body is out. */
  cutAtPercent?: number;
  /** The cut is a TCP reset (RST) rather than a close. */
  reset?: boolean;
  /** With `shortBytes`: Content-Length still says the whole size, and the short body ends with a clean close. */
  lyingLength?: boolean;
  /** No Content-Length (a chunked body): the size is known only at the end. */
  noLength?: boolean;
  /** Send this share of the body, then nothing, holding the connection open. */
  stallAtPercent?: number;
  /** A complete, well-formed answer of only this many bytes (Content-Length says so too). */
  shortBytes?: number;
}

/** How a body's sending ended: all of it, cut, stalled on purpose, or the client went away. */
export type SendOutcome = 'sent' | 'cut' | 'stalled' | 'gone';

/** The bytes `b` says to send of `real`: the first `shortBytes`, one byte flipped if `corrupt`. */
export function scriptedBytes(real: Buffer, b: BlobBehaviour): Buffer {
  const bytes = b.shortBytes !== undefined ? real.subarray(0, b.shortBytes) : real;
  if (!b.corrupt || bytes.length === 0) return bytes;
  // A copy: the stored blob stays intact for the next request.
  const flipped = Buffer.from(bytes);
  const at = b.corrupt === 'last' ? flipped.length - 1 : flipped.length >> 1;
  flipped[at] = (flipped[at] ?? 0) ^ 0xff;
  return flipped;
}

/** Writes `bytes` as `b` scripts it; `atHalf` is awaited once the first half is out (before any cut there). */
export async function sendScripted(res: ServerResponse, bytes: Buffer, b: BlobBehaviour, atHalf: () => Promise<void>): Promise<SendOutcome> {
  const share = (percent: number | undefined): number | undefined => (percent === undefined ? undefined : Math.floor((bytes.length * percent) / 100));
  const half = bytes.length >> 1;
  const cutAt = share(b.cutAtPercent);
  const stallAt = share(b.stallAtPercent);
  const chunk = b.chunkBytes ?? MiB;
  const n = Math.max(1, Math.ceil(bytes.length / chunk));
  let sent = 0;
  for (let i = 0; i < n; i++) {
    await b.beforeChunk?.(i, n);
    const end = Math.min((i + 1) * chunk, bytes.length);
    const stops = [...new Set([half, cutAt, stallAt, end])].filter((s): s is number => s !== undefined && s > sent && s <= end).sort((x, y) => x - y);
    for (const stop of stops) {
      if (!(await write(res, bytes.subarray(sent, stop)))) return 'gone';
      sent = stop;
      if (sent === half) await atHalf();
      if (sent === cutAt) {
        if (b.reset) res.socket?.resetAndDestroy();
        else res.destroy();
        return 'cut';
      }
      if (sent === stallAt) return 'stalled';
    }
  }
  if (b.lyingLength) res.socket?.end();
  else res.end();
  return 'sent';
}
