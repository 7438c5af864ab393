// The zero-copy blob sender (sendfile(2) through the sluice-sendfile addon) beside the buffered one it falls back
// to: exact bytes at sizes around its boundaries, descriptors closed after a client leaves, a cut connection that
// really ends (the addon's duplicate must not keep it open) and whose bytes never reach the next connection, and
// little left queued unsent in the kernel for a reader that stops.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireBinaries } from '../helpers/binaries.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { MiB, sha256 } from '../kit/oci.js';

const KiB = 1024;
// Under ZERO_COPY_MIN (4 MiB) all of it goes through Node; above, the first 64 KiB do; the addon's thread gives each
// client 4 MiB a turn.
const SIZES = [64 * KiB + 1, 128 * KiB + 1, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1, 4 * MiB + 64 * KiB, 8 * MiB + 64 * KiB - 1, 8 * MiB + 64 * KiB, 8 * MiB + 64 * KiB + 1, 9 * MiB + 12_345];
const BIG = 48 * MiB;

function get(url: string, range?: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    request(url, { headers: range ? { range } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    }).on('error', reject).end();
  });
}

const execFileP = promisify(execFile);
// ss (iproute2) shows a socket's unsent bytes.
const hasSs = requireBinaries(['ss'], 'blob-sendfile: unsent bytes (apt-get install iproute2)');

const fds = (): number => readdirSync('/proc/self/fd').length;

async function settledFds(limit: number): Promise<number> {
  // The server notices a closed connection on its next turns, the addon's thread right after.
  for (let i = 0; i < 300 && fds() > limit; i++) await new Promise((r) => setTimeout(r, 10));
  return fds();
}

/** A raw connection that sends `GET path` (Connection: close) and reads until it has `stopAt` bytes, then pauses. */
function stalledReader(port: number, path: string, stopAt: number): Promise<{ socket: Socket; got: () => number; all: Promise<Buffer> }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let got = 0;
    let stopped = false;
    const all = new Promise<Buffer>((r) => socket.once('close', () => r(Buffer.concat(chunks))));
    socket.on('error', () => undefined);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= stopAt && !stopped) {
        stopped = true;
        socket.pause();
        resolve({ socket, got: () => got, all });
      }
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  });
}

/** The body of a raw response. */
function bodyOf(text: Buffer): Buffer {
  return text.subarray(text.indexOf('\r\n\r\n') + 4);
}

for (const sendfile of [true, false]) {
  describe(`blob sender: ${sendfile ? 'sendfile' : 'buffers (the fallback)'}`, () => {
    let sluice: InProcessSluice;
    const blobs = [...SIZES, BIG].map((n) => randomBytes(n));
    const big = blobs[blobs.length - 1] as Buffer;
    const path = (blob: Buffer): string => `/v2/ghcr.io/x/y/blobs/${sha256(blob)}`;
    const url = (blob: Buffer): string => `${sluice.url}${path(blob)}`;

    beforeAll(async () => {
      sluice = await startSluice({ allowlist: ['ghcr.io/x/y'], build: { sendfile } });
      for (const blob of blobs) {
        await sluice.app.store.putBlob(blob);
        await sluice.app.store.linkBlob('ghcr.io', 'x/y', sha256(blob));
      }
    });
    afterAll(async () => sluice?.close());

    it('says which sender it uses (sluice_blob_sender)', async () => {
      const text = await sluice.app.metrics.render();
      expect(text).toContain(`sluice_blob_sender{sender="${sendfile ? 'sendfile' : 'buffers'}"} 1`);
    });

    it('whole blobs around the boundaries are exact', async () => {
      for (const blob of blobs) {
        const r = await get(url(blob));
        expect(r.status).toBe(200);
        expect(sha256(r.body), `${blob.length} bytes`).toBe(sha256(blob));
      }
    });

    it('ranges across the boundaries are exact', async () => {
      const b = blobs[SIZES.length - 1] as Buffer;
      const cases: Array<[number, number]> = [
        [0, 64 * KiB], [64 * KiB - 1, 64 * KiB], [1, 128 * KiB + 1], [5, 4 * MiB + 64 * KiB + 5], [64 * KiB, b.length - 1],
        [b.length - 128 * KiB - 2, b.length - 1], [4 * MiB - 1, 8 * MiB + 1],
      ];
      for (const [start, end] of cases) {
        const r = await get(url(b), `bytes=${start}-${end}`);
        expect(r.status).toBe(206);
        expect(sha256(r.body), `${start}-${end}`).toBe(sha256(b.subarray(start, end + 1)));
      }
    });

    it('a client that leaves mid-blob: no crash, every descriptor closed, the next GET exact', async () => {
      const before = fds();
      const port = Number(new URL(sluice.url).port);
      for (let i = 0; i < 4; i++) {
        const r = await stalledReader(port, path(big), (i + 1) * MiB);
        r.socket.destroy();
      }
      expect(await settledFds(before)).toBeLessThanOrEqual(before);
      expect(sha256((await get(url(big))).body)).toBe(sha256(big));
    });

    it('a broken request pipelined behind a blob GET never puts an error answer inside the blob\'s body', async () => {
      for (const broken of ['BROKEN\x00 REQUEST\r\n\r\n', `GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * KiB)}\r\n\r\n`]) {
        const r = await stalledReader(Number(new URL(sluice.url).port), path(big), MiB);
        r.socket.write(broken);
        // Node reads it while the body is on its way (with sendfile nothing is queued on its side of the socket).
        await new Promise((res) => setTimeout(res, 200));
        r.socket.resume();
        const text = await r.all;
        const body = bodyOf(text);
        expect(text.subarray(0, 15).toString('latin1')).toBe('HTTP/1.1 200 OK');
        // Cut short or complete, but every byte the client got is the blob's, in order.
        expect(body.length).toBeLessThanOrEqual(big.length);
        expect(body.equals(big.subarray(0, body.length)), 'the body is a prefix of the blob').toBe(true);
      }
    });

    it('a reader that stops for a while, then reads on, gets every byte', async () => {
      const r = await stalledReader(Number(new URL(sluice.url).port), path(big), 2 * MiB);
      // Its socket buffers fill up and the sender waits for it (EAGAIN, or a write that has not called back).
      await new Promise((res) => setTimeout(res, 300));
      r.socket.resume();
      expect(sha256(bodyOf(await r.all))).toBe(sha256(big));
    });

    it.runIf(sendfile && hasSs)('a reader that stops leaves little queued unsent in the server\'s socket (TCP_NOTSENT_LOWAT), and still gets every byte', async () => {
      const port = Number(new URL(sluice.url).port);
      const r = await stalledReader(port, path(big), 2 * MiB);
      // Wait until the sender is blocked on the full window: what it queued beyond that is the socket's unsent bytes.
      let notsent = 0;
      for (let i = 0, last = -1; i < 50; i++) {
        await new Promise((res) => setTimeout(res, 40));
        const { stdout } = await execFileP('ss', ['-tinH', 'state', 'established', `( sport = :${port} )`]);
        notsent = Math.max(0, ...[...stdout.matchAll(/notsent:(\d+)/g)].map((m) => Number(m[1])));
        if (notsent === last && i > 5) break;
        last = notsent;
      }
      // 32 KiB plus the one segment that crossed it; without the option the send buffer's megabytes sit here.
      expect(notsent).toBeLessThanOrEqual(256 * KiB);
      r.socket.resume();
      expect(sha256(bodyOf(await r.all))).toBe(sha256(big));
    });

    it('a connection the server cuts (as SIGTERM\'s grace deadline does) ends, and the next connection gets only its own bytes', async () => {
      const port = Number(new URL(sluice.url).port);
      const server = sluice.app.registry.server;
      const seen: Socket[] = [];
      const onConnection = (s: Socket): void => void seen.push(s);
      server.on('connection', onConnection);
      try {
        const before = fds();
        const a = await stalledReader(port, path(big), MiB);
        const serverSide = seen[seen.length - 1] as Socket;
        serverSide.destroy();
        // Opened right away: on the server it likely gets the descriptor number the cut connection had.
        const b = connect(port, '127.0.0.1');
        const bChunks: Buffer[] = [];
        b.on('data', (c: Buffer) => bChunks.push(c));
        const bClosed = new Promise<void>((r) => b.once('close', () => r()));
        await new Promise<void>((r) => b.once('connect', () => r()));
        // The cut client reads on: it must reach the end of the connection, not more of the blob forever.
        a.socket.resume();
        await a.all;
        expect(a.got()).toBeLessThan(big.length);
        b.write('GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        await bClosed;
        const text = Buffer.concat(bChunks).toString('latin1');
        expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
        expect(text.endsWith('\r\n\r\n{}')).toBe(true);
        expect(await settledFds(before)).toBeLessThanOrEqual(before);
      } finally {
        server.off('connection', onConnection);
      }
    });
  });
}
