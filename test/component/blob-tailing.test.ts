// Clients tailing a download through the pooled sender: each is sent a buffer's worth per wake-up, not one small
// write per upstream chunk; its first bytes go as soon as the first chunk lands; every body is exact.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sendFileRange, TAIL_FLUSH_MS } from '../../src/http/blob-sender.js';
import { Flight } from '../../src/mirror/flight.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { MiB, sha256 } from '../kit/oci.js';

let dir: string;
let store: Store;
let server: Server | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-tailing-'));
  store = await openStore({ storage: join(dir, 'data') });
});

afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  await rm(dir, { recursive: true, force: true });
});

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Serves `flight`'s growing file to every GET, counting each response's writes. */
async function serve(flight: Flight, size: number, writes: number[]): Promise<string> {
  server = createServer((req, res) => {
    const me = writes.push(0) - 1;
    // Counted on the socket: the sender writes there once the head is out (the head is one of the writes).
    const socket = req.socket;
    const write = socket.write.bind(socket) as (chunk: Buffer, cb: () => void) => boolean;
    socket.write = ((chunk: Buffer, cb: () => void) => {
      writes[me] = (writes[me] ?? 0) + 1;
      return write(chunk, cb);
    }) as typeof socket.write;
    res.writeHead(200, { 'content-length': size });
    void flight.openFd().then((fd) => sendFileRange(fd, 0, size - 1, res, flight.growth));
  });
  await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
  const addr = server.address();
  return `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/`;
}

function get(url: string, firstBytes: () => void): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      const chunks: Buffer[] = [];
      res.once('data', firstBytes);
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    }).on('error', reject).end();
  });
}

describe('tailing a download', () => {
  it('30 clients over 256 upstream chunks: a handful of writes each, the first right after the first chunk, every body exact', async () => {
    const blob = randomBytes(4 * MiB);
    const chunk = 16 * 1024;
    const writer = await store.beginIngest({ digest: sha256(blob), sizeBytes: blob.length });
    const flight = new Flight(sha256(blob), blob.length, writer);
    const writes: number[] = [];
    const url = await serve(flight, blob.length, writes);
    const clients = 30;
    let firsts = 0;
    let allFirst!: () => void;
    const everyFirst = new Promise<void>((r) => (allFirst = r));
    const bodies = Array.from({ length: clients }, () => get(url, () => ++firsts === clients && allFirst()));
    while (writes.length < clients) await turn();
    let firstsAfterFirstChunk = -1;
    const t0 = performance.now();
    await flight.run((async function* () {
      for (let at = 0; at < blob.length; at += chunk) {
        yield blob.subarray(at, at + chunk);
        // After the first chunk, wait for every client's first bytes (the upstream sends nothing more until then).
        if (at === 0) firstsAfterFirstChunk = await Promise.race([everyFirst.then(() => firsts), new Promise<number>((r) => setTimeout(() => r(firsts), 10_000))]);
        await turn();
      }
    })());
    for (const body of await Promise.all(bodies)) expect(body.equals(blob)).toBe(true);
    expect(firstsAfterFirstChunk).toBe(clients);
    // Per client: the head, the first chunk, then 1 MiB at a time (4 MiB), a possible short write before the commit,
    // and one more for each TAIL_FLUSH_MS the download took (a slow upstream's bytes are not held back longer).
    const bound = 8 + Math.ceil((performance.now() - t0) / TAIL_FLUSH_MS);
    expect(bound).toBeLessThan(64);
    for (const n of writes) expect(n).toBeLessThanOrEqual(bound);
  });

  it('a slow upstream: bytes short of a buffer still reach the client while the download goes on', async () => {
    const blob = randomBytes(MiB / 2);
    const writer = await store.beginIngest({ digest: sha256(blob), sizeBytes: blob.length });
    const flight = new Flight(sha256(blob), blob.length, writer);
    const url = await serve(flight, blob.length, []);
    let received = 0;
    const body = new Promise<Buffer>((resolve, reject) => {
      request(url, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          received += c.length;
          chunks.push(c);
        });
        res.on('end', () => resolve(Buffer.concat(chunks)));
        res.on('error', reject);
      }).on('error', reject).end();
    });
    const step = 64 * 1024;
    /** The bytes the client holds once it has had `n`, or what it has after 10 s. */
    const clientHas = async (n: number): Promise<number> => {
      for (const t0 = Date.now(); received < n && Date.now() - t0 < 10_000;) await new Promise((r) => setTimeout(r, 5));
      return received;
    };
    const seen: number[] = [];
    const waiting: number[] = [];
    await flight.run((async function* () {
      for (let at = 0; at < blob.length; at += step) {
        yield blob.subarray(at, at + step);
        // The upstream sends its next chunk only once the client holds this one: with a wait for a full buffer
        // (the 1 MiB buffer is more than the rest), the client would hold only the first chunk until the download ended.
        if (at + step < blob.length) {
          seen.push(await clientHas(at + step));
          // A wait the sender gave up on (it sent what was there instead) is forgotten, not left on the flight.
          waiting.push(flight.waiting);
        }
      }
    })());
    expect((await body).equals(blob)).toBe(true);
    expect(seen).toEqual(seen.map((_, k) => (k + 1) * step));
    expect(Math.max(...waiting)).toBeLessThanOrEqual(1);
  });
});
