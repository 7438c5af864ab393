// Who pulled: the denied log and the request log name the node by source address, and by its
// mTLS certificate subject or basic-auth user when the listener has them; streamed blob answers are logged too.
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { mkdtemp, writeFile } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importPath } from '../../src/jobs/importer.js';
import type { RequestLogEntry } from '../../src/http/request-log.js';
import { which } from '../helpers/binaries.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { buildLayoutOf } from '../helpers/images.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

/** Request log entries as they are written, and a way to wait for the next one (no sleeps). */
class Entries {
  readonly all: RequestLogEntry[] = [];
  private waiters: Array<() => void> = [];
  readonly write = (e: RequestLogEntry): void => {
    this.all.push(e);
    for (const w of this.waiters.splice(0)) w();
  };

  async forUrl(path: string): Promise<RequestLogEntry> {
    for (;;) {
      const hit = this.all.find((e) => e.url.startsWith(path));
      if (hit) return hit;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

function get(url: string, opts: { ca?: Buffer; cert?: Buffer; key?: Buffer; authorization?: string } = {}): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca: opts.ca, cert: opts.cert, key: opts.key, headers: opts.authorization ? { authorization: opts.authorization } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const ok = which('openssl') !== undefined;
if (!ok) console.warn('\n*** SKIPPING who-pulled tests: install openssl (apt-get install -y openssl) ***\n');
const DENIED_PATH = '/v2/siderolabs/kubelet/manifests/v9.9.9?ns=ghcr.io';

describe.skipIf(!ok)('who pulled: the node named in the denied log and the request log', () => {
  let pki: Pki;
  let ca: Buffer;
  const started: InProcessSluice[] = [];
  beforeAll(async () => {
    pki = await makePki();
    ca = await readFile(pki.ca);
  });
  afterAll(async () => {
    for (const s of started) await s.close();
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });

  async function boot(extra: Record<string, unknown>): Promise<{ s: InProcessSluice; log: Entries }> {
    const log = new Entries();
    const s = await startSluice({ allowlist: ['ghcr.io/siderolabs/kubelet:v1.34.0'], extra: { requestLog: true, ...extra }, build: { requestLog: log.write } });
    started.push(s);
    return { s, log };
  }

  it('mTLS: the certificate subject beside the address, in both logs', async () => {
    const { s, log } = await boot({ tls: { cert: pki.serverCert, key: pki.serverKey, clientCA: pki.clientCA } });
    const r = await get(`${s.url}${DENIED_PATH}`, { ca, cert: await readFile(pki.clientCert), key: await readFile(pki.clientKey) });
    expect(r.status).toBe(403);
    expect(s.app.denied.list()).toEqual([expect.objectContaining({ reference: 'v9.9.9', client: '127.0.0.1 (cert CN=node1)' })]);
    const entry = await log.forUrl('/v2/siderolabs/kubelet/manifests/v9.9.9');
    expect(entry).toMatchObject({ method: 'GET', status: 403, address: '127.0.0.1', cert: 'CN=node1', complete: true });
    expect(entry.user).toBeUndefined();
  });

  it('basic auth: the user beside the address; a refused login is logged without one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sluice-who-'));
    const htpasswd = join(dir, 'htpasswd');
    await writeFile(htpasswd, `worker-3:${bcrypt.hashSync('s3cret', 5)}\n`);
    try {
      const { s, log } = await boot({ tls: { cert: pki.serverCert, key: pki.serverKey }, auth: { htpasswd } });
      const authorization = `Basic ${Buffer.from('worker-3:s3cret').toString('base64')}`;
      expect((await get(`${s.url}${DENIED_PATH}`, { ca, authorization })).status).toBe(403);
      expect(s.app.denied.list()[0]?.client).toBe('127.0.0.1 (user worker-3)');
      expect(await log.forUrl('/v2/siderolabs/kubelet/manifests/v9.9.9')).toMatchObject({ status: 403, address: '127.0.0.1', user: 'worker-3' });
      const wrong = `Basic ${Buffer.from('worker-3:nope').toString('base64')}`;
      expect((await get(`${s.url}/v2/?who=wrong`, { ca, authorization: wrong })).status).toBe(401);
      const refused = await log.forUrl('/v2/?who=wrong');
      expect(refused).toMatchObject({ status: 401, address: '127.0.0.1' });
      expect(refused.user).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('plain HTTP: the address alone; a streamed blob answer is logged with the bytes sent', async () => {
    const { s, log } = await boot({ windows: 'never' });
    const dir = await mkdtemp(join(tmpdir(), 'sluice-who-layout-'));
    try {
      const layout = await buildLayoutOf(dir, [{ ref: 'ghcr.io/siderolabs/kubelet:v1.34.0', kind: 'oci-manifest', sizes: [256 * 1024] }]);
      expect((await importPath(s.app.store, dir)).failed).toEqual([]);
      const layer = layout.images[0]!.blobs.reduce((a, b) => (b.size > a.size ? b : a));
      const r = await fetch(`${s.url}/v2/siderolabs/kubelet/blobs/${layer.digest}?ns=ghcr.io`);
      expect(r.status).toBe(200);
      expect((await r.arrayBuffer()).byteLength).toBe(layer.size);
      const entry = await log.forUrl(`/v2/siderolabs/kubelet/blobs/${layer.digest}`);
      expect(entry).toMatchObject({ status: 200, address: '127.0.0.1', complete: true });
      expect(entry.sentBytes).toBeGreaterThan(layer.size);
      expect(entry.sentBytes).toBeLessThan(layer.size + 1024); // the body and its headers
      expect((await fetch(`${s.url}${DENIED_PATH}`)).status).toBe(403);
      expect(s.app.denied.list()[0]?.client).toBe('127.0.0.1');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
