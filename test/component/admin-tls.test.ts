// The admin listener over TLS with a private CA: the API answers over HTTPS with the bearer token, and the
// real CLI (node dist/src/main.js) trusts it through admin.tls.cert alone, with no NODE_EXTRA_CA_CERTS.
import { readFile, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RuleRecord } from '../../src/policy/allowlist.js';
import { requireBinaries, runOk, type RunResult } from '../helpers/binaries.js';
import { usePki, type Pki } from '../helpers/certs.js';
import { freePort } from '../helpers/registry.js';
import { runSluice, sluiceConfigYaml, startSluice, startSluiceProcess, type InProcessSluice, type SluiceProcess } from '../helpers/sluice.js';

interface Answer {
  status: number;
  body: string;
}

function get(url: string, opts: { ca?: Buffer; token?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = opts.token ? { authorization: `Bearer ${opts.token}` } : {};
    const req = httpsRequest(url, { ca: opts.ca, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A server certificate from the test CA naming only `sluice.lan` (not 127.0.0.1, which the CLI dials). */
async function issueForName(pki: Pki, name: string): Promise<{ cert: string; key: string }> {
  const base = join(pki.dir, name);
  await writeFile(`${base}.ext`, `subjectAltName=DNS:${name}\nextendedKeyUsage=serverAuth\n`);
  await runOk('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${base}.key`, '-out', `${base}.csr`]);
  await runOk('openssl', ['x509', '-req', '-in', `${base}.csr`, '-CA', pki.ca, '-CAkey', join(pki.dir, 'server-ca.key'),
    '-CAcreateserial', '-days', '2', '-extfile', `${base}.ext`, '-out', `${base}.crt`]);
  return { cert: `${base}.crt`, key: `${base}.key` };
}

function expectRc(r: RunResult, code: number): void {
  expect(r.code, `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toBe(code);
}

const ok = requireBinaries(['openssl'], 'test/component/admin-tls.test.ts');

describe.skipIf(!ok)('admin listener over TLS', () => {
  let pki: Pki;
  let ca: Buffer;
  usePki((made) => ({ pki, ca } = made));

  describe('the API (in process)', () => {
    let s: InProcessSluice;
    let adminUrl: string;
    let token: string;
    beforeAll(async () => {
      s = await startSluice({
        allowlist: ['docker.io/library/busybox:1.36'],
        extra: { admin: { listen: '127.0.0.1:0', tls: { cert: pki.serverCert, key: pki.serverKey } } },
      });
      adminUrl = (await s.app.admin.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
      token = (await readFile(s.app.config.admin.tokenFile, 'utf8')).trim();
    });
    afterAll(async () => s?.close());

    it('answers over HTTPS with the bearer token', async () => {
      expect(adminUrl.startsWith('https://')).toBe(true);
      const r = await get(`${adminUrl}/api/v1/allowlist`, { ca, token });
      expect(r.status, r.body).toBe(200);
      expect(r.body).toContain('docker.io/library/busybox:1.36');
    });

    it('without the token → 401, over TLS as well', async () => {
      expect((await get(`${adminUrl}/api/v1/allowlist`, { ca })).status).toBe(401);
      expect((await get(`${adminUrl}/api/v1/allowlist`, { ca, token: 'x'.repeat(64) })).status).toBe(401);
    });

    it('a client that does not trust the private CA is refused by its own TLS check', async () => {
      await expect(get(`${adminUrl}/api/v1/allowlist`, { token })).rejects.toThrow(/unable to verify|self.signed|certificate/i);
    });

    it('plain HTTP to the TLS port gets no admin answer', async () => {
      const r = await fetch(adminUrl.replace('https:', 'http:') + '/api/v1/allowlist', { headers: { authorization: `Bearer ${token}` } })
        .then((res) => res.status, (e: unknown) => String(e));
      expect(r).not.toBe(200);
    });
  });

  describe('the CLI against a running `sluice serve` with admin.tls', () => {
    let server: SluiceProcess;
    let work: string;
    let config: string;
    const cli = (...args: string[]): Promise<RunResult> =>
      // No NODE_EXTRA_CA_CERTS: the CLI must trust the server through admin.tls.cert alone.
      runSluice([...args, '--config', config], { env: { ...process.env, NODE_EXTRA_CA_CERTS: '' } });

    beforeAll(async () => {
      // The certificate names sluice.lan only: the CLI dials 127.0.0.1 and still accepts it, because it is
      // exactly the certificate in admin.tls.cert (pinned), chained to a CA the system does not know.
      const named = await issueForName(pki, 'sluice.lan');
      const port = await freePort();
      work = pki.dir;
      const yaml = sluiceConfigYaml('./data', {
        allowlist: ['docker.io/library/busybox:1.36'],
        extra: { admin: { listen: `127.0.0.1:${port}`, tls: { cert: named.cert, key: named.key } } },
      });
      server = await startSluiceProcess(yaml);
      config = server.configFile;
    });
    afterAll(async () => {
      const code = await server?.stop();
      if (server && code !== 0) console.warn(`sluice exited ${String(code)}:\n${server.stderr().slice(-2000)}`);
    });

    it('`sluice allow ls` lists the rules through the HTTPS admin API', async () => {
      const r = await cli('allow', 'ls', '--json');
      expectRc(r, 0);
      const rules = JSON.parse(r.stdout) as RuleRecord[];
      expect(rules.map((x) => x.rule)).toEqual(['docker.io/library/busybox:1.36']);
    });

    it('`sluice allow add` applies live through it, and `sluice status` reports the server as running', async () => {
      expectRc(await cli('allow', 'add', 'ghcr.io/siderolabs/kubelet:v1.34.0', '--note', 'tls test'), 0);
      const ls = await cli('allow', 'ls', '--json');
      expectRc(ls, 0);
      expect((JSON.parse(ls.stdout) as RuleRecord[]).map((x) => x.rule)).toContain('ghcr.io/siderolabs/kubelet:v1.34.0');
      const status = await cli('status', '--json');
      expectRc(status, 0);
      const report = JSON.parse(status.stdout) as { server: { running: boolean; url: string | null } };
      expect(report.server.running).toBe(true);
      expect(report.server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    });

    it('a CLI whose admin.tls.cert is some other certificate refuses the server (no offline fallback)', async () => {
      const other = join(work, 'other-admin.yaml');
      const text = (await readFile(config, 'utf8')).replace(/cert: .*sluice\.lan\.crt/, `cert: ${pki.serverCert}`);
      expect(text).toContain(pki.serverCert);
      await writeFile(other, text.replace(/storage: .*/, `storage: ${join(server.dir, 'data')}`));
      const r = await runSluice(['allow', 'ls', '--config', other]);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(r.stderr).toMatch(/admin API at https:\/\/127\.0\.0\.1:\d+: .*(altnames|certificate)/i);
      expect(r.stderr).toContain('the CLI trusts only the certificate in admin.tls.cert');
    });
  });
});
