// The registry listener over TLS: plain TLS, mutual TLS (no client certificate → handshake refused),
// certificates reloaded without dropping open connections, and bcrypt basic auth for nodes.
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { request as httpsRequest, Agent } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reloadListeners } from '../../src/app.js';
import { requireBinaries } from '../helpers/binaries.js';
import { usePki, type Pki } from '../helpers/certs.js';
import { startSluice, type InProcessSluice } from '../helpers/sluice.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  serial?: string;
}

function get(url: string, opts: { ca?: Buffer; cert?: Buffer; key?: Buffer; agent?: Agent; authorization?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, {
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      agent: opts.agent,
      headers: opts.authorization ? { authorization: opts.authorization } : {},
    }, (res) => {
      const serial = (res.socket as TLSSocket | null)?.getPeerCertificate?.().serialNumber;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        body: Buffer.concat(chunks).toString(),
        serial,
      }));
    });
    req.on('error', reject);
    req.end();
  });
}

const ok = requireBinaries(['openssl'], 'test/component/tls-auth.test.ts');

describe.skipIf(!ok)('TLS, mTLS and basic auth on the registry listener', () => {
  let pki: Pki;
  let ca: Buffer;
  usePki((made) => ({ pki, ca } = made));

  describe('TLS with certificate reload', () => {
    let s: InProcessSluice;
    let certPath: string;
    let keyPath: string;
    beforeAll(async () => {
      certPath = join(pki.dir, 'live.crt');
      keyPath = join(pki.dir, 'live.key');
      await copyFile(pki.serverCert, certPath);
      await copyFile(pki.serverKey, keyPath);
      s = await startSluice({ allowlist: ['ghcr.io/x/y'], extra: { tls: { cert: certPath, key: keyPath } } });
    });
    afterAll(async () => s?.close());

    it('a blob big enough for sendfile comes through TLS intact (its bytes must go through OpenSSL, not around it)', async () => {
      const blob = randomBytes(9 * 1024 * 1024 + 7);
      const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
      await s.app.store.putBlob(blob);
      await s.app.store.linkBlob('ghcr.io', 'x/y', digest);
      const body = await new Promise<Buffer>((resolve, reject) => {
        httpsRequest(`${s.url}/v2/ghcr.io/x/y/blobs/${digest}`, { ca }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(Buffer.concat(chunks)));
          res.on('error', reject);
        }).on('error', reject).end();
      });
      expect(body.equals(blob)).toBe(true);
    });

    it('answers over HTTPS with the configured certificate', async () => {
      expect(s.url.startsWith('https://')).toBe(true);
      const r = await get(`${s.url}/v2/`, { ca });
      expect(r.status).toBe(200);
      expect(r.body).toBe('{}');
    });

    it('refuses a client that does not trust the certificate', async () => {
      await expect(get(`${s.url}/v2/`)).rejects.toThrow(/self.signed|unable to verify|certificate/i);
    });

    it('reloads certificate and key without dropping an open connection', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const first = await get(`${s.url}/v2/`, { ca, agent });
      const next = await pki.reissueServer('reload');
      await writeFile(certPath, await readFile(next.cert));
      await writeFile(keyPath, await readFile(next.key));
      reloadListeners(s.app);
      // The kept-alive connection still works and still shows the old certificate...
      const again = await get(`${s.url}/v2/`, { ca, agent });
      expect(again.status).toBe(200);
      expect(again.serial).toBe(first.serial);
      // ...while a new connection gets the new one.
      // (a new agent: the global one would resume the old TLS session and report its certificate)
      const fresh = await get(`${s.url}/v2/`, { ca, agent: new Agent({ maxCachedSessions: 0 }) });
      expect(fresh.status).toBe(200);
      expect(fresh.serial).not.toBe(first.serial);
      agent.destroy();
    });
  });

  describe('mutual TLS', () => {
    let s: InProcessSluice;
    beforeAll(async () => {
      s = await startSluice({ extra: { tls: { cert: pki.serverCert, key: pki.serverKey, clientCA: pki.clientCA } } });
    });
    afterAll(async () => s?.close());

    it('a node with a certificate from the nodes CA gets in', async () => {
      const r = await get(`${s.url}/v2/`, { ca, cert: await readFile(pki.clientCert), key: await readFile(pki.clientKey) });
      expect(r.status).toBe(200);
    });

    it('no client certificate: the handshake itself is refused', async () => {
      await expect(get(`${s.url}/v2/`, { ca })).rejects.toThrow(/certificate|socket hang up|ECONNRESET|alert/i);
    });

    it('a certificate from another CA is refused', async () => {
      await expect(get(`${s.url}/v2/`, { ca, cert: await readFile(pki.strangerCert), key: await readFile(pki.strangerKey) }))
        .rejects.toThrow(/certificate|socket hang up|ECONNRESET|alert/i);
    });
  });

  describe('basic auth from a bcrypt htpasswd file', () => {
    let s: InProcessSluice;
    let htpasswd: string;
    const basic = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
    beforeAll(async () => {
      htpasswd = join(pki.dir, 'htpasswd');
      await writeFile(htpasswd, `node:${bcrypt.hashSync('s3cret', 5)}\n`);
      s = await startSluice({ extra: { tls: { cert: pki.serverCert, key: pki.serverKey }, auth: { htpasswd } } });
    });
    afterAll(async () => s?.close());

    it('no credentials → 401 UNAUTHORIZED with a Basic challenge, in the OCI format', async () => {
      const r = await get(`${s.url}/v2/`, { ca });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Basic realm="sluice"');
      expect(JSON.parse(r.body).errors[0].code).toBe('UNAUTHORIZED');
    });

    it('wrong password or unknown user → 401', async () => {
      expect((await get(`${s.url}/v2/`, { ca, authorization: basic('node', 'nope') })).status).toBe(401);
      expect((await get(`${s.url}/v2/`, { ca, authorization: basic('ghost', 's3cret') })).status).toBe(401);
      expect((await get(`${s.url}/v2/`, { ca, authorization: 'Basic !!!' })).status).toBe(401);
    });

    it('the right credentials → 200, and the allowlist still applies after auth', async () => {
      expect((await get(`${s.url}/v2/`, { ca, authorization: basic('node', 's3cret') })).status).toBe(200);
      const denied = await get(`${s.url}/v2/library/busybox/manifests/1.36`, { ca, authorization: basic('node', 's3cret') });
      expect(denied.status).toBe(403);
    });

    it('a reload (SIGHUP) swaps the users; a broken file keeps the previous ones', async () => {
      await writeFile(htpasswd, `node2:${bcrypt.hashSync('n3w', 5)}\n`);
      reloadListeners(s.app);
      expect((await get(`${s.url}/v2/`, { ca, authorization: basic('node2', 'n3w') })).status).toBe(200);
      // The old user's header was remembered as verified; a reload must forget that too.
      expect((await get(`${s.url}/v2/`, { ca, authorization: basic('node', 's3cret') })).status).toBe(401);
      await writeFile(htpasswd, 'node3:plaintext-is-refused\n');
      expect(() => reloadListeners(s.app)).toThrow(/bcrypt/);
      expect((await get(`${s.url}/v2/`, { ca, authorization: basic('node2', 'n3w') })).status).toBe(200);
    });
  });
});
