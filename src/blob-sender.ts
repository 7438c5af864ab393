// Sends a byte range of a file to an HTTP response from reused buffers: read the next chunk while the previous
// one is being written, and reuse a buffer only once its write has completed. Buffers come from a small shared
// pool, so serving a blob allocates nothing and leaves nothing for the garbage collector.
import { close, read } from 'node:fs';
import type { ServerResponse } from 'node:http';

/**
 * Two size classes keep memory bounded whatever the number of clients: 1 MiB buffers (fewest syscalls) while
 * fewer than LARGE_MAX are in use (96 MiB), 64 KiB ones beyond that (1,000 clients × 2 slots = 125 MiB).
 */
const LARGE = 1024 * 1024;
const SMALL = 64 * 1024;
const LARGE_MAX = 96;
const SMALL_IDLE_MAX = 2048;
const idle: Record<number, Buffer[]> = { [LARGE]: [], [SMALL]: [] };
let largeInUse = 0;

function acquire(): Buffer {
  if (largeInUse < LARGE_MAX) {
    largeInUse++;
    return idle[LARGE]?.pop() ?? Buffer.allocUnsafeSlow(LARGE);
  }
  return idle[SMALL]?.pop() ?? Buffer.allocUnsafeSlow(SMALL);
}

function release(buf: Buffer): void {
  if (buf.length === LARGE) {
    largeInUse--;
    idle[LARGE]?.push(buf);
  } else if ((idle[SMALL]?.length ?? 0) < SMALL_IDLE_MAX) {
    idle[SMALL]?.push(buf);
  }
}

/** A file still being written (a blob arriving from upstream): how much may be sent, and a wait for more. */
export interface GrowingFile {
  /** Bytes that may be sent now; never more than are on disk. */
  available(): number;
  /** Set once the writer failed: the response is then cut short. */
  failure(): Error | undefined;
  /** Resolves at the writer's next progress. */
  next(): Promise<void>;
}

function readAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, 0, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/**
 * Streams bytes [start, end] of `fd` (which it closes) to `res`, whose head has been written. Resolves when the
 * last byte is handed to the socket; a client that goes away ends it quietly; a short file destroys the response.
 * With `growing`, bytes are sent as they arrive, and a failed writer destroys the response.
 */
export async function sendFileRange(fd: number, start: number, end: number, res: ServerResponse, growing?: GrowingFile): Promise<void> {
  // Two slots: one being written while the other is read into. A slot's buffer returns to the pool only after
  // its write completed, so the socket never sends bytes that were overwritten.
  const slots: Array<{ buf: Buffer; written: Promise<void> } | undefined> = [undefined, undefined];
  let gone = false;
  const onClose = (): void => {
    gone = true;
  };
  res.once('close', onClose);
  try {
    let pos = start;
    for (let i = 0; pos <= end && !gone; i ^= 1) {
      const last = growing ? Math.min(end, growing.available() - 1) : end;
      if (pos > last) {
        const failed = growing?.failure();
        if (failed) throw failed;
        await growing?.next();
        i ^= 1;
        continue;
      }
      const slot = slots[i];
      if (slot) await slot.written;
      const buf = slot?.buf ?? acquire();
      const n = await readAt(fd, buf, Math.min(buf.length, last - pos + 1), pos);
      if (n === 0) {
        slots[i] = { buf, written: Promise.resolve() };
        throw new Error('blob file is shorter than its recorded size');
      }
      pos += n;
      const written = new Promise<void>((resolve) => res.write(n === buf.length ? buf : buf.subarray(0, n), () => resolve()));
      slots[i] = { buf, written };
    }
    await Promise.all(slots.map((s) => s?.written));
    if (!gone) res.end();
  } catch (e) {
    res.destroy(e as Error);
  } finally {
    res.off('close', onClose);
    close(fd, () => undefined);
    // A destroyed response may never call back its writes; only buffers whose writes settled are reused.
    for (const s of slots) if (s) void s.written.then(() => release(s.buf));
  }
}
