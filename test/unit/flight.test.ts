// A Flight's growing file wakes its tailers in batches: a reader asking for a buffer's worth is woken once per
// buffer, not once per upstream chunk; the end and a failure still wake everyone, and the last byte still waits
// for verification.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Flight } from '../../src/mirror/flight.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { sha256 } from '../kit/oci.js';

let dir: string;
let store: Store;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-flight-'));
  store = await openStore({ storage: join(dir, 'data') });
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** The blob in `chunk`-byte pieces, a turn of the event loop between them (as an upstream body arrives); throws after `failAfter` pieces. */
async function* pieces(blob: Buffer, chunk: number, failAfter?: number): AsyncGenerator<Uint8Array> {
  for (let at = 0, n = 0; at < blob.length; at += chunk, n++) {
    if (n === failAfter) throw new Error('upstream cut the body');
    yield blob.subarray(at, at + chunk);
    await turn();
  }
}

async function flightOf(blob: Buffer, declared = true): Promise<Flight> {
  const writer = await store.beginIngest({ digest: sha256(blob), sizeBytes: blob.length });
  return new Flight(sha256(blob), declared ? blob.length : undefined, writer);
}

/** A reader as the blob sender tails: asks for `step` more bytes (or the rest) until it has every byte; counts its wake-ups. */
async function tail(f: Flight, size: number, step: number): Promise<{ wakes: number; sawResult: boolean[] }> {
  let pos = 0;
  let wakes = 0;
  const sawResult: boolean[] = [];
  while (pos < size) {
    if (f.growth.failure()) throw f.growth.failure();
    const mark = Math.min(size, pos + step);
    if (f.growth.available() < mark) {
      await f.growth.next(mark);
      wakes++;
      sawResult.push(f.result !== undefined);
    }
    pos = Math.max(pos, Math.min(f.growth.available(), mark));
  }
  return { wakes, sawResult };
}

describe('Flight.growth', () => {
  it('N tailers over a download of K chunks are each woken about once per step, not once per chunk', async () => {
    const blob = randomBytes(256 * 16 * 1024); // K = 256 chunks of 16 KiB, 4 MiB
    const f = await flightOf(blob);
    const step = 1024 * 1024;
    const tailers = Array.from({ length: 20 }, () => tail(f, blob.length, step));
    await f.run(pieces(blob, 16 * 1024));
    for (const t of await Promise.all(tailers)) {
      // 4 steps of 1 MiB; the last one waits for the commit.
      expect(t.wakes).toBeGreaterThanOrEqual(4);
      expect(t.wakes).toBeLessThanOrEqual(5);
      expect(t.sawResult.at(-1)).toBe(true);
    }
    expect((await f.done).sizeBytes).toBe(blob.length);
  });

  it('a bare next() still wakes at the next progress', async () => {
    const blob = randomBytes(8 * 1000);
    const f = await flightOf(blob);
    const woken = f.growth.next().then(() => f.growth.available());
    await f.run(pieces(blob, 1000));
    expect(await woken).toBe(1000);
  });

  it('a mark already reached, or a finished flight, resolves at once', async () => {
    const blob = randomBytes(3000);
    const f = await flightOf(blob);
    await f.run(pieces(blob, 1000));
    await f.growth.next(1);
    await f.growth.next(blob.length + 10);
    expect(f.growth.available()).toBe(blob.length);
  });

  it('the last bytes fewer than the step: nothing hangs, and the last byte waits for verification', async () => {
    const blob = randomBytes(100 * 1024 + 17);
    const f = await flightOf(blob);
    const t = tail(f, blob.length, 1024 * 1024);
    // A reader asking for the whole blob: woken only once it is verified, never with all bytes but the check.
    const whole = f.growth.next(blob.length).then(() => ({ result: f.result !== undefined, available: f.growth.available() }));
    await f.run(pieces(blob, 4096));
    expect((await t).wakes).toBe(1);
    expect((await t).sawResult).toEqual([true]);
    expect(await whole).toEqual({ result: true, available: blob.length });
  });

  it('a failure wakes every tailer, whatever it waits for', async () => {
    const blob = randomBytes(64 * 4096);
    const f = await flightOf(blob);
    const tailers = Array.from({ length: 10 }, (_, i) => tail(f, blob.length, (i + 1) * 1024 * 1024).then(() => 'finished', (e: Error) => e.message));
    await f.run(pieces(blob, 4096, 10));
    expect(await Promise.all(tailers)).toEqual(Array.from({ length: 10 }, () => 'upstream cut the body'));
    await expect(f.done).rejects.toThrow('upstream cut the body');
  });

  it('a download that fails verification wakes the reader waiting for its last byte, which never gets it', async () => {
    const blob = randomBytes(20 * 4096);
    const bad = Buffer.from(blob);
    bad[bad.length - 1] ^= 1;
    const writer = await store.beginIngest({ digest: sha256(blob), sizeBytes: blob.length });
    const f = new Flight(sha256(blob), blob.length, writer);
    const whole = f.growth.next(blob.length).then(() => ({ available: f.growth.available(), failed: f.growth.failure() !== undefined }));
    await f.run(pieces(bad, 4096));
    expect(await whole).toEqual({ available: blob.length - 1, failed: true });
  });

  it('a wait given up (its signal aborted) resolves at once and leaves nothing behind; the others still wake', async () => {
    const blob = randomBytes(64 * 1024);
    const f = await flightOf(blob);
    const stops = Array.from({ length: 50 }, () => new AbortController());
    const given = stops.map((c, k) => f.growth.next(1_000 + k, c.signal));
    const kept = f.growth.next(2_000);
    expect(f.waiting).toBe(51);
    for (const c of stops) c.abort();
    await Promise.all(given);
    expect(f.waiting).toBe(1);
    await f.run(pieces(blob, 16 * 1024));
    await kept;
    expect(f.waiting).toBe(0);
  });
});

describe('Flight: the first bytes held in memory', () => {
  /** A flight whose spool writes wait until `release` is called (a disk slow to take the first chunk). */
  async function stalledFlight(blob: Buffer, declared = blob.length): Promise<{ f: Flight; release: () => void }> {
    const writer = await store.beginIngest({ digest: sha256(blob), sizeBytes: declared });
    let release = (): void => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const write = writer.write.bind(writer);
    writer.write = async (chunk) => {
      await gate;
      return write(chunk);
    };
    return { f: new Flight(sha256(blob), declared, writer), release };
  }

  it('a tailer is woken and sent the first chunk before the spool has written it', async () => {
    const blob = randomBytes(1024 * 1024);
    const { f, release } = await stalledFlight(blob);
    const woken = f.growth.next(1);
    const run = f.run(pieces(blob, 64 * 1024));
    await woken;
    expect(f.growth.available()).toBe(64 * 1024);
    const buf = Buffer.alloc(1024 * 1024);
    expect(f.growth.copyHead?.(buf, buf.length, 0)).toBe(64 * 1024);
    expect(buf.subarray(0, 64 * 1024).equals(blob.subarray(0, 64 * 1024))).toBe(true);
    expect(f.growth.copyHead?.(buf, 100, 64 * 1024)).toBe(0);
    release();
    await run;
    // Verified and in place: the memory is let go, and the file has every byte.
    expect(f.growth.copyHead?.(buf, 100, 0)).toBe(0);
    expect(f.growth.available()).toBe(blob.length);
  });

  it('a blob held whole in memory still keeps its last byte back until verified', async () => {
    const blob = randomBytes(10 * 1000);
    const { f, release } = await stalledFlight(blob);
    const run = f.run(pieces(blob, blob.length));
    await f.growth.next(blob.length - 1);
    await turn();
    expect(f.growth.available()).toBe(blob.length - 1);
    const buf = Buffer.alloc(blob.length);
    expect(f.growth.copyHead?.(buf, blob.length, 0)).toBe(blob.length - 1);
    release();
    await run;
    expect(f.growth.available()).toBe(blob.length);
  });

  it('bytes past the declared size are never offered', async () => {
    const blob = randomBytes(3000);
    const { f, release } = await stalledFlight(blob, 2500);
    const waiting = f.growth.next(1);
    const run = f.run(pieces(blob, 3000));
    await turn();
    expect(f.growth.available()).toBe(0);
    release();
    await run;
    await expect(f.done).rejects.toThrow();
    expect(f.growth.available()).toBe(0);
    await waiting;
  });

  it('a download nobody waits on (a sync) holds nothing in memory', async () => {
    const blob = randomBytes(1024 * 1024);
    const { f, release } = await stalledFlight(blob);
    const run = f.run(pieces(blob, 64 * 1024));
    await turn();
    expect(f.growth.available()).toBe(0);
    expect(f.growth.copyHead?.(Buffer.alloc(100), 100, 0)).toBe(0);
    release();
    await run;
    expect(f.growth.available()).toBe(blob.length);
  });
});
