// The pooled blob sender reuses 1 MiB buffers across requests: bytes must be exact for every client however
// they read — fast, slow, ranged across chunk boundaries, aborting — and no buffer may leak into another reply.
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';
import { MiB, sha256 } from '../kit/oci.js';

function get(url: string, opts: { range?: string; slow?: boolean; abortAfterBytes?: number } = {}): Promise<{ status: number; body: Buffer; aborted: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: opts.range ? { range: opts.range } : {} }, (res) => {
      const chunks: Buffer[] = [];
      let got = 0;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (opts.abortAfterBytes !== undefined && got >= opts.abortAfterBytes) {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), aborted: true });
          return;
        }
        if (opts.slow) {
          // A slow reader: stop reading until the other clients have moved on (next turn of the event loop).
          res.pause();
          setImmediate(() => res.resume());
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), aborted: false }));
      res.on('error', reject);
    });
    req.on('error', (e) => (opts.abortAfterBytes !== undefined ? undefined : reject(e)));
    req.end();
  });
}

describe('pooled blob sender', () => {
  let sluice: InProcessSluice;
  const a = randomBytes(9 * MiB + 12_345);
  const b = randomBytes(5 * MiB + 7);
  const url = (blob: Buffer): string => `${sluice.url}/v2/ghcr.io/x/y/blobs/${sha256(blob)}`;

  beforeAll(async () => {
    sluice = await startSluice({ allowlist: [`ghcr.io/x/y@${sha256(a)}`, `ghcr.io/x/y@${sha256(b)}`] });
    // Stored as if fetched through ghcr.io/x/y: only then are they that repository's to serve.
    for (const blob of [a, b]) {
      await sluice.app.store.putBlob(blob);
      await sluice.app.store.linkBlob('ghcr.io', 'x/y', sha256(blob));
    }
  });
  afterAll(async () => sluice?.close());

  it('16 concurrent clients of two blobs, half of them slow, a few aborting: every complete body is exact', async () => {
    const runs = Array.from({ length: 16 }, (_, i) => {
      const blob = i % 2 === 0 ? a : b;
      const abortAfterBytes = i % 5 === 4 ? 2 * MiB : undefined;
      return get(url(blob), { slow: i % 4 < 2, abortAfterBytes }).then((r) => ({ r, blob }));
    });
    for (const { r, blob } of await Promise.all(runs)) {
      expect(r.status).toBe(200);
      if (r.aborted) expect(r.body.equals(blob.subarray(0, r.body.length))).toBe(true);
      else expect(sha256(r.body)).toBe(sha256(blob));
    }
    // And afterwards (buffers back in the pool) still exact.
    expect(sha256((await get(url(b))).body)).toBe(sha256(b));
    expect(sha256((await get(url(a))).body)).toBe(sha256(a));
  });

  it('past the 1 MiB buffer budget (96 in use) clients get 64 KiB buffers, and every body is still exact', async () => {
    const runs = Array.from({ length: 120 }, (_, i) => get(url(i % 3 === 0 ? a : b), { slow: i % 2 === 0 }).then((r) => ({ r, blob: i % 3 === 0 ? a : b })));
    for (const { r, blob } of await Promise.all(runs)) {
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(blob.length);
      expect(r.body.equals(blob)).toBe(true);
    }
  });

  it('pipelined requests on a connection that closes early leave no open file and no hung sender', async () => {
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let round = 0; round < 5; round++) {
      const socket = connect(Number(new URL(sluice.url).port), '127.0.0.1');
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      const path = `/v2/ghcr.io/x/y/blobs/${sha256(a)}`;
      socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\nGET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await new Promise<void>((resolve) => socket.once('data', () => resolve()));
      socket.destroy();
    }
    // The server notices the closed connections on its next turns; then every descriptor it opened is closed again.
    for (let i = 0; i < 200 && fds() > before; i++) await new Promise((r) => setTimeout(r, 10));
    expect(fds()).toBeLessThanOrEqual(before);
    expect(sha256((await get(url(a))).body)).toBe(sha256(a));
  });

  it('pipelined requests on one connection get their responses whole and in order (the second waits for the first)', async () => {
    const socket = connect(Number(new URL(sluice.url).port), '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const get1 = (blob: Buffer, last: boolean): string =>
      `GET /v2/ghcr.io/x/y/blobs/${sha256(blob)} HTTP/1.1\r\nHost: x\r\n${last ? 'Connection: close\r\n' : ''}\r\n`;
    socket.write(get1(a, false) + get1(b, false) + get1(a, true));
    await closed;
    let rest = Buffer.concat(chunks);
    for (const blob of [a, b, a]) {
      const headEnd = rest.indexOf('\r\n\r\n');
      const head = rest.subarray(0, headEnd).toString('latin1');
      expect(head).toMatch(/^HTTP\/1\.1 200 /);
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]);
      expect(length).toBe(blob.length);
      const body = rest.subarray(headEnd + 4, headEnd + 4 + length);
      expect(body.equals(blob)).toBe(true);
      rest = rest.subarray(headEnd + 4 + length);
    }
    expect(rest.length).toBe(0);
  });

  it('ranges across 1 MiB chunk boundaries are exact', async () => {
    const cases: Array<[number, number]> = [
      [0, 0], [MiB - 1, MiB], [MiB - 1, 2 * MiB], [MiB, 3 * MiB - 1], [123, 4 * MiB + 5], [a.length - 1, a.length - 1],
    ];
    for (const [start, end] of cases) {
      const r = await get(url(a), { range: `bytes=${start}-${end}` });
      expect(r.status).toBe(206);
      expect(r.body.equals(a.subarray(start, end + 1)), `${start}-${end}`).toBe(true);
    }
    const tail = await get(url(a), { range: `bytes=${a.length - MiB - 3}-` });
    expect(tail.body.equals(a.subarray(a.length - MiB - 3))).toBe(true);
  });
});
