// Slow and oversized clients against both listeners (and the registry over TLS): slowloris headers are cut
// by the 10 s headers timeout, unfinished request bodies do not hold an answer back, headers over 16 KiB
// and a 100 KiB URL are refused with 431, and the server answers normally afterwards.
import { readFile, rm } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makePki, type Pki } from '../helpers/certs.js';
import { requireBinaries } from '../helpers/binaries.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

const HEADERS_TIMEOUT_MS = 10_000;

interface Target {
  label: string;
  port: number;
  tls: boolean;
}

let plain: InProcessSluice;
let secure: InProcessSluice;
let pki: Pki | undefined;
let adminToken: string;
const targets: Target[] = [];

function open(t: Target): Socket {
  return t.tls ? tlsConnect({ host: '127.0.0.1', port: t.port, rejectUnauthorized: false }) : netConnect({ host: '127.0.0.1', port: t.port });
}

interface Outcome {
  /** The status line's code, or 0 when the connection ended without one. */
  status: number;
  text: string;
  /** From the first byte written to the close of the connection, or to the status line when `untilStatus`. */
  elapsedMs: number;
}

/**
 * Writes `head` at once, then `drip` one byte per `dripMs` (the slow client's own pace, not a wait in the test),
 * and resolves when the server ends the connection — or, with `untilStatus`, as soon as a status line arrives.
 */
function exchange(t: Target, head: string, opts: { drip?: string; dripMs?: number; untilStatus?: boolean; timeoutMs?: number } = {}): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const socket = open(t);
    const started = performance.now();
    let text = '';
    let dripper: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => {
      finish();
      reject(new Error(`${t.label}: no end after ${opts.timeoutMs ?? 30_000} ms; got ${JSON.stringify(text.slice(0, 200))}`));
    }, opts.timeoutMs ?? 30_000);
    const status = (): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
    const finish = (): Outcome => {
      clearInterval(dripper);
      clearTimeout(guard);
      socket.destroy();
      return { status: status(), text, elapsedMs: performance.now() - started };
    };
    socket.setEncoding('latin1');
    socket.on('data', (s: string) => {
      text += s;
      if (opts.untilStatus && /^HTTP\/1\.1 \d{3}[^\n]*\n/.test(text)) resolve(finish());
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(finish()));
    socket.write(head);
    if (opts.drip !== undefined) {
      let i = 0;
      const drip = opts.drip;
      dripper = setInterval(() => {
        if (!socket.destroyed) socket.write(drip[i++ % drip.length] ?? 'a');
      }, opts.dripMs ?? 500);
    }
  });
}

async function healthy(t: Target): Promise<void> {
  const path = t.label.includes('admin') ? '/api/v1/status' : '/v2/';
  const auth = t.label.includes('admin') ? `Authorization: Bearer ${adminToken}\r\n` : '';
  const o = await exchange(t, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}Connection: close\r\n\r\n`, { timeoutMs: 5_000 });
  expect(o.status, `${t.label} after the abuse`).toBe(200);
}

const hasOpenssl = requireBinaries(['openssl'], 'slow-clients over TLS');

beforeAll(async () => {
  plain = await startSluice();
  await plain.app.admin.listen({ host: '127.0.0.1', port: 0 });
  adminToken = (await readFile(plain.app.config.admin.tokenFile, 'utf8')).trim();
  const adminPort = (plain.app.admin.server.address() as { port: number }).port;
  targets.push({ label: 'registry', port: Number(new URL(plain.url).port), tls: false });
  targets.push({ label: 'admin', port: adminPort, tls: false });
  if (hasOpenssl) {
    pki = await makePki();
    secure = await startSluice({ extra: { tls: { cert: pki.serverCert, key: pki.serverKey } } });
    targets.push({ label: 'registry over TLS', port: Number(new URL(secure.url.replace('http:', 'https:')).port), tls: true });
  }
});

afterAll(async () => {
  await plain?.close();
  await secure?.close();
  if (pki) await rm(pki.dir, { recursive: true, force: true });
});

describe('slow and oversized clients', () => {
  it('slowloris: headers sent one byte every 500 ms are cut off by the 10 s headers timeout (408), on every listener', async () => {
    const outcomes = await Promise.all(targets.map((t) =>
      exchange(t, 'GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ', { drip: 'abcdefghijklmnopqrstuvwxyz', dripMs: 500 })));
    for (const [i, o] of outcomes.entries()) {
      const label = targets[i]?.label;
      // headersTimeout is checked every connectionsCheckingInterval (1 s): cut between 10 and ~11 s, with slack for a busy box.
      expect(o.elapsedMs, `${label} cut after ${Math.round(o.elapsedMs)} ms`).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 500);
      expect(o.elapsedMs, `${label} cut after ${Math.round(o.elapsedMs)} ms`).toBeLessThan(HEADERS_TIMEOUT_MS + 4_000);
      expect(o.status, `${label}: ${o.text.slice(0, 80)}`).toBe(408);
    }
    for (const t of targets) await healthy(t);
  });

  it('a body that never finishes does not hold back the answer to a write (405) or an unauthenticated admin call (401)', async () => {
    const started = performance.now();
    const writes = await Promise.all(['PUT', 'POST', 'PATCH'].flatMap((method) => targets.filter((t) => t.label !== 'admin').map((t) =>
      exchange(t, `${method} /v2/library/x/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 10485760\r\n\r\n${'x'.repeat(100)}`, { untilStatus: true, timeoutMs: 5_000 }))));
    for (const o of writes) {
      expect(o.status, o.text.slice(0, 80)).toBe(405);
      expect(o.text).toContain('"UNSUPPORTED"');
    }
    const admin = targets.find((t) => t.label === 'admin') as Target;
    const refused = await exchange(admin, `POST /api/v1/allowlist HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"rules":[`, { untilStatus: true, timeoutMs: 5_000 });
    expect(refused.status).toBe(401);
    // Chunked, never terminated.
    const chunked = await exchange(targets[0] as Target, `POST /v2/library/x/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`, { untilStatus: true, timeoutMs: 5_000 });
    expect(chunked.status).toBe(405);
    expect(performance.now() - started).toBeLessThan(5_000);
    for (const t of targets) await healthy(t);
  });

  it('a header block over 16 KiB is refused with 431, on every listener', async () => {
    for (const t of targets) {
      const o = await exchange(t, `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`, { timeoutMs: 5_000 });
      expect(o.status, `${t.label}: ${o.text.slice(0, 80)}`).toBe(431);
      await healthy(t);
    }
  });

  it('a 100 KiB URL is refused with a 4xx (431: the request line counts against the header limit), not a crash', async () => {
    for (const t of targets) {
      const path = t.label === 'admin' ? `/api/v1/${'a'.repeat(100 * 1024)}` : `/v2/library/${'a'.repeat(100 * 1024)}/manifests/latest`;
      const o = await exchange(t, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, { timeoutMs: 5_000 });
      expect(o.status, `${t.label}: ${o.text.slice(0, 80)}`).toBe(431);
      await healthy(t);
    }
  });

  it('both servers are still listening after all of it', async () => {
    for (const t of targets) await healthy(t);
    expect(plain.app.registry.server.listening && plain.app.admin.server.listening).toBe(true);
  });
});
