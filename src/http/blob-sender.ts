// Sends a byte range of a file to an HTTP response from reused buffers: read the next chunk while the previous
// one is being written, and reuse a buffer only once its write has completed. Buffers come from a small shared
// pool, so serving a blob allocates nothing and leaves nothing for the garbage collector.
import { close, read } from 'node:fs';
import type { ServerResponse } from 'node:http';
import type { GrowingFile } from '../mirror/mirror.js';
export type { GrowingFile } from '../mirror/mirror.js';

/**
 * Two size classes keep memory bounded whatever the number of clients: 1 MiB buffers (fewest syscalls) while
 * fewer than LARGE_MAX are in use (96 MiB), 64 KiB ones beyond that (1,000 clients × 2 slots = 125 MiB).
 */
const LARGE = 1024 * 1024;
const SMALL = 64 * 1024;
const LARGE_MAX = 96;
const SMALL_IDLE_MAX = 2048;
/** The longest a client tailing a download waits for a full buffer while some bytes are there to send. */
export const TAIL_FLUSH_MS = 500;
const idle: Record<number, Buffer[]> = { [LARGE]: [], [SMALL]: [] };
let largeInUse = 0;

function acquire(): Buffer {
  if (largeInUse < LARGE_MAX) {
    largeInUse++;
    return idle[LARGE]?.pop() ?? Buffer.allocUnsafeSlow(LARGE);
  }
  return idle[SMALL]?.pop() ?? Buffer.allocUnsafeSlow(SMALL);
}

/** A buffer that must not be reused (its write may still be queued): give back its budget only. */
function discard(buf: Buffer): void {
  if (buf.length === LARGE) largeInUse--;
}

function release(buf: Buffer): void {
  if (buf.length === LARGE) {
    largeInUse--;
    idle[LARGE]?.push(buf);
  } else if ((idle[SMALL]?.length ?? 0) < SMALL_IDLE_MAX) {
    idle[SMALL]?.push(buf);
  }
}

function readAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, 0, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/**
 * Streams bytes [start, end] of `fd` (which it closes) to `res`, whose head has been written. Resolves (to the
 * bytes handed to the socket) when the last one is; a client that goes away ends it quietly; a short file destroys the response.
 * With `growing`, bytes are sent as they arrive, and a failed writer destroys the response.
 */
export async function sendFileRange(fd: number, start: number, end: number, res: ServerResponse, growing?: GrowingFile): Promise<number> {
  // Two slots: one being written while the other is read into. A slot's buffer is reused only after its write
  // called back, so the socket never sends bytes that were overwritten.
  const slots: Array<{ buf: Buffer; written: Promise<void>; settled: boolean } | undefined> = [undefined, undefined];
  // The client may go away with writes still queued whose callbacks never come (a pipelined response whose
  // connection closed first gets no 'close' of its own): watch the socket too, and never wait past it.
  // Every wait registers its wake-up here, so a gone client releases all of them at once. (Not Promise.race with
  // a "gone" promise: each race would leave a reaction on it for the whole transfer — a leak per chunk.)
  let gone = false;
  const waiting = new Set<() => void>();
  const markGone = (): void => {
    gone = true;
    for (const wake of waiting) wake();
    waiting.clear();
  };
  const wakeable = (start: (done: () => void) => void): Promise<void> =>
    new Promise<void>((resolve) => {
      if (gone) return resolve();
      const wake = (): void => {
        waiting.delete(wake);
        resolve();
      };
      waiting.add(wake);
      start(wake);
    });
  const untilGone = (p: Promise<void> | undefined): Promise<void> => (p ? wakeable((done) => void p.then(done)) : Promise.resolve());
  const socket = res.req.socket;
  // Once the head is on the socket, chunks go straight to it: ServerResponse's write path corks the socket and
  // uncorks it on the next tick for every chunk: about a sixth of the server's CPU per GB (bench/README.md).
  // A pipelined response still queued behind another (res.socket unset) keeps that path: its head must wait.
  res.flushHeaders();
  const out: { write(chunk: Buffer, cb: () => void): unknown } = res.socket === socket ? socket : res;
  let sent = 0;
  let sentAt = 0;
  /** The last wait for a full buffer timed out: send what is there now (the timer's clock may run a little ahead of ours). */
  let held = false;
  res.once('close', markGone);
  socket.once('close', markGone);
  // A pipelined request answered after its connection closed would otherwise wait for a 'close' that has passed.
  if (socket.destroyed) markGone();
  try {
    let pos = start;
    for (let i = 0; pos <= end && !gone; i ^= 1) {
      const last = growing ? Math.min(end, growing.available() - 1) : end;
      // Tailing a download: wait for a buffer's worth (or the rest), not each upstream chunk. The first bytes go at
      // once, and a slow upstream's bytes go within TAIL_FLUSH_MS: a client waits for a full buffer no longer than
      // that (Talos's puller gives up after 90 s without a byte).
      const flush = sent === 0 || held || performance.now() - sentAt >= TAIL_FLUSH_MS;
      const want = flush ? 1 : Math.min(end - pos + 1, slots[i]?.buf.length ?? LARGE);
      if (growing && last - pos + 1 < want) {
        const failed = growing.failure();
        if (failed) throw failed;
        // Whatever ends the wait (more bytes, the timer, the client gone), the other two are cancelled.
        const stop = new AbortController();
        let timer: ReturnType<typeof setTimeout> | undefined;
        await wakeable((done) => {
          if (!flush) timer = setTimeout(() => {
            held = true;
            done();
          }, TAIL_FLUSH_MS);
          void growing.next(pos + want, stop.signal).then(done);
        });
        clearTimeout(timer);
        stop.abort();
        i ^= 1;
        continue;
      }
      held = false;
      const slot = slots[i];
      if (slot) await untilGone(slot.written);
      if (gone) break;
      const next = { buf: slot?.buf ?? acquire(), written: Promise.resolve(), settled: true };
      slots[i] = next;
      const length = Math.min(next.buf.length, last - pos + 1);
      // A download's first bytes from memory: no file read queued behind the other clients' opens.
      const n = growing?.copyHead?.(next.buf, length, pos) || (await readAt(fd, next.buf, length, pos));
      if (n === 0) throw new Error('blob file is shorter than its recorded size');
      pos += n;
      sent += n;
      sentAt = performance.now();
      next.settled = false;
      next.written = new Promise<void>((resolve) => out.write(n === next.buf.length ? next.buf : next.buf.subarray(0, n), () => {
        next.settled = true;
        resolve();
      }));
    }
    await untilGone(Promise.all(slots.map((s) => s?.written)).then(() => undefined));
    if (!gone) res.end();
  } catch (e) {
    res.destroy(e as Error);
  } finally {
    res.off('close', markGone);
    socket.off('close', markGone);
    close(fd, () => undefined);
    // A buffer whose write never called back may still be referenced by a queued write: drop it, never reuse it.
    for (const s of slots) if (s) (s.settled ? release : discard)(s.buf);
  }
  return sent;
}
