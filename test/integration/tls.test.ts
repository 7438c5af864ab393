// TLS with real processes: a `sluice serve` over HTTPS (custom CA, then mTLS, then basic auth)
// with an imported store, pulled by real containerd (`ctr --hosts-dir`, a `_default/hosts.toml` as Talos
// writes it for a '*' mirror) and real skopeo (`--src-cert-dir`, `--src-creds`); and SIGHUP swapping the
// certificate under a running process. Everything stays on 127.0.0.1.
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries, run, which, type RunResult } from '../helpers/binaries.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { skopeoCopyAll, startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd, type HostsTomlOptions } from '../helpers/clients.js';
import { buildLayout, splitRef, type LayoutDescription, type TestImage } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml, startSluiceProcess, type SluiceProcess } from '../helpers/sluice.js';

const ok = requireBinaries(['skopeo', 'containerd', 'ctr', 'openssl'], 'test/integration/tls.test.ts');

interface Answer {
  status: number;
  body: string;
  serial: string;
}

/** One HTTPS GET; `serial` is the certificate the server presented on this connection. */
function get(url: string, opts: { ca: Buffer; agent?: Agent }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca: opts.ca, agent: opts.agent ?? new Agent({ maxCachedSessions: 0 }) }, (res) => {
      const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), serial }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Resolves once `pattern` appears in the process's stdout (event-driven; rejects if the process exits first). */
async function waitForLog(s: SluiceProcess, pattern: RegExp, after: number): Promise<void> {
  const seen = (): boolean => pattern.test(s.stdout().slice(after));
  if (seen()) return;
  await new Promise<void>((resolve, reject) => {
    const onData = (): void => {
      if (!seen()) return;
      cleanup();
      resolve();
    };
    const onExit = (): void => {
      cleanup();
      reject(new Error(`sluice exited while waiting for ${pattern}:\n${s.stderr().slice(-2000)}`));
    };
    const cleanup = (): void => {
      s.proc.stdout?.off('data', onData);
      s.proc.off('exit', onExit);
    };
    s.proc.stdout?.on('data', onData);
    s.proc.once('exit', onExit);
  });
}

const sameSerial = (a: string, b: string): boolean => a.replace(/^0+/, '').toUpperCase() === b.replace(/^0+/, '').toUpperCase();

describe.skipIf(!ok)('TLS, mTLS and basic auth with real clients (sluice process, containerd, skopeo)', () => {
  let work: string;
  let pki: Pki;
  let ca: Buffer;
  let layout: LayoutDescription;
  let containerd: Containerd;
  const running: SluiceProcess[] = [];
  const image = (ref: string): TestImage => {
    const img = layout.images.find((i) => i.ref === ref);
    if (!img) throw new Error(`no test image ${ref}`);
    return img;
  };
  const BUSYBOX = 'docker.io/library/busybox:1.36';
  const KUBELET = 'ghcr.io/siderolabs/kubelet:v1.34.0';

  beforeAll(async () => {
    work = await tempDir('tls');
    pki = await makePki();
    ca = await readFile(pki.ca);
    layout = await buildLayout(join(work, 'layout'));
    containerd = await startContainerd();
  });

  afterAll(async () => {
    await containerd?.stop();
    for (const s of running) {
      const code = await s.stop();
      if (code !== 0) console.warn(`sluice exited ${String(code)}:\n${s.stderr().slice(-2000)}`);
    }
    if (work) await rm(work, { recursive: true, force: true });
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });

  /** A store with the whole layout imported by the real CLI, then `sluice serve` on it with `extra` config. */
  async function startWith(name: string, extra: Record<string, unknown>): Promise<SluiceProcess> {
    const dir = join(work, name);
    await mkdir(dir, { recursive: true });
    const yaml = sluiceConfigYaml('./data', { allowlist: layout.images.map((i) => i.ref), extra });
    await writeFile(join(dir, 'sluice.yaml'), yaml);
    const imported = await runSluice(['import', layout.dir, '--config', join(dir, 'sluice.yaml')], { timeoutMs: 300_000 });
    expect(imported.code, imported.stderr).toBe(0);
    const s = await startSluiceProcess(yaml, { dir });
    running.push(s);
    expect(s.url.startsWith('https://127.0.0.1:')).toBe(true);
    return s;
  }

  /** `_default/hosts.toml` for a '*' mirror at sluice over https, as Talos writes it; returns the hosts dir. */
  async function hostsDir(name: string, s: SluiceProcess, opts: HostsTomlOptions): Promise<string> {
    const dir = join(work, 'certs.d', name);
    await writeHostsToml(dir, '_default', s.hostPort, { https: true, ...opts });
    return dir;
  }

  /** `ctr images pull --hosts-dir` as a node does (no --plain-http), from an empty content store. */
  async function ctrPull(ref: string, hosts: string, extra: string[] = []): Promise<RunResult> {
    await containerd.rmi(ref);
    return containerd.ctr(['images', 'pull', '--hosts-dir', hosts, ...extra, ref]);
  }

  async function expectPulled(r: RunResult, img: TestImage): Promise<void> {
    expect(r.code, `${img.ref}: ${r.stderr}${r.stdout}`).toBe(0);
    expect(await containerd.imageDigest(img.ref)).toBe(img.digest);
  }

  /** skopeo's --src-cert-dir: ca.crt is trusted, client.cert/client.key is presented. */
  async function certDir(name: string, client?: { cert: string; key: string }): Promise<string> {
    const dir = join(work, 'skopeo-certs', name);
    await mkdir(dir, { recursive: true });
    await copyFile(pki.ca, join(dir, 'ca.crt'));
    if (client) {
      await copyFile(client.cert, join(dir, 'client.cert'));
      await copyFile(client.key, join(dir, 'client.key'));
    }
    return dir;
  }

  function skopeo(s: SluiceProcess, ref: string, dest: string, certs: string, creds?: { user: string; pass: string }): Promise<RunResult> {
    const { host, name, tag } = splitRef(ref);
    return skopeoCopyAll(`docker://${s.hostPort}/${host}/${name}:${tag}`, join(work, 'skopeo-out', dest), {
      tlsVerify: true,
      creds,
      extraArgs: ['--src-cert-dir', certs],
    });
  }

  describe('(a) TLS with a private CA, and SIGHUP reload', () => {
    let s: SluiceProcess;
    let cert: string;
    let key: string;
    beforeAll(async () => {
      // The config names these files; the SIGHUP test overwrites them in place, as an operator (or certbot) would.
      cert = join(work, 'live.crt');
      key = join(work, 'live.key');
      await copyFile(pki.serverCert, cert);
      await copyFile(pki.serverKey, key);
      s = await startWith('tls', { tls: { cert, key } });
    });

    test('containerd pulls an index through _default/hosts.toml with `ca`', async () => {
      const hosts = await hostsDir('tls', s, { caFile: pki.ca });
      await expectPulled(await ctrPull(KUBELET, hosts), image(KUBELET));
    });

    test('containerd without the CA refuses the certificate (and the dead fallback fails too)', async () => {
      const hosts = await hostsDir('tls-no-ca', s, {});
      const r = await ctrPull(BUSYBOX, hosts);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/x509: certificate signed by unknown authority/);
    });

    test('skopeo copy --src-cert-dir (ca.crt) --src-tls-verify=true gets the original digests', async () => {
      const r = await skopeo(s, BUSYBOX, 'tls', await certDir('tls'));
      expect(r.code, r.stderr).toBe(0);
      expect(await verifyDirDigests(join(work, 'skopeo-out', 'tls'))).toBe(image(BUSYBOX).digest);
    });

    test('the registry listener does not serve the admin API', async () => {
      const r = await get(`${s.url}/api/v1/status`, { ca });
      expect(r.status).toBe(404);
      expect(r.body).not.toContain('allowlist');
    });

    test('SIGHUP: new connections get the replaced certificate, an open one carries on, the process keeps serving', async () => {
      const keepAlive = new Agent({ keepAlive: true, maxSockets: 1, maxCachedSessions: 0 });
      const before = await get(`${s.url}/v2/`, { ca, agent: keepAlive });
      expect(before.status).toBe(200);
      expect(sameSerial(before.serial, new X509Certificate(await readFile(pki.serverCert)).serialNumber)).toBe(true);

      const next = await pki.reissueServer('hup');
      const nextSerial = new X509Certificate(await readFile(next.cert)).serialNumber;
      expect(sameSerial(nextSerial, before.serial)).toBe(false);
      await writeFile(cert, await readFile(next.cert));
      await writeFile(key, await readFile(next.key));
      const logAt = s.stdout().length;
      expect(s.proc.kill('SIGHUP')).toBe(true);
      await waitForLog(s, /TLS certificates reloaded/, logAt);

      const fresh = await get(`${s.url}/v2/`, { ca });
      expect(fresh.status).toBe(200);
      expect(sameSerial(fresh.serial, nextSerial)).toBe(true);
      const kept = await get(`${s.url}/v2/`, { ca, agent: keepAlive });
      expect(kept.status).toBe(200);
      expect(sameSerial(kept.serial, before.serial)).toBe(true);
      keepAlive.destroy();

      expect(s.proc.exitCode).toBeNull();
      expect(s.proc.pid).toBeDefined();
      const hosts = await hostsDir('tls-after-hup', s, { caFile: pki.ca });
      await expectPulled(await ctrPull(BUSYBOX, hosts), image(BUSYBOX));
      const r = await skopeo(s, 'registry.k8s.io/pause:3.10', 'after-hup', await certDir('after-hup'));
      expect(r.code, r.stderr).toBe(0);
      expect(await verifyDirDigests(join(work, 'skopeo-out', 'after-hup'))).toBe(image('registry.k8s.io/pause:3.10').digest);
    });

    test('SIGHUP with a broken key file keeps the previous certificate and keeps running', async () => {
      const current = (await get(`${s.url}/v2/`, { ca })).serial;
      await writeFile(key, 'not a key\n');
      const logAt = s.stdout().length;
      s.proc.kill('SIGHUP');
      await waitForLog(s, /TLS reload failed; keeping the previous certificates/, logAt);
      const after = await get(`${s.url}/v2/`, { ca });
      expect(after.status).toBe(200);
      expect(sameSerial(after.serial, current)).toBe(true);
      expect(s.proc.exitCode).toBeNull();
    });
  });

  describe('(b) mutual TLS', () => {
    let s: SluiceProcess;
    const node = (): { cert: string; key: string } => ({ cert: pki.clientCert, key: pki.clientKey });
    beforeAll(async () => {
      s = await startWith('mtls', { tls: { cert: pki.serverCert, key: pki.serverKey, clientCA: pki.clientCA } });
    });

    test('containerd with `client = [[cert, key]]` pulls', async () => {
      const hosts = await hostsDir('mtls', s, { caFile: pki.ca, clientCert: node() });
      await expectPulled(await ctrPull(BUSYBOX, hosts), image(BUSYBOX));
    });

    test('containerd without a client certificate cannot pull', async () => {
      const hosts = await hostsDir('mtls-none', s, { caFile: pki.ca });
      const r = await ctrPull(BUSYBOX, hosts);
      expect(r.code, r.stdout).not.toBe(0);
      expect(r.stderr).toMatch(/remote error: tls: (certificate required|bad certificate)/);
      expect(await containerd.imageDigest(BUSYBOX)).toBeUndefined();
    });

    test('containerd with a certificate from another CA cannot pull', async () => {
      const hosts = await hostsDir('mtls-stranger', s, { caFile: pki.ca, clientCert: { cert: pki.strangerCert, key: pki.strangerKey } });
      const r = await ctrPull(BUSYBOX, hosts);
      expect(r.code, r.stdout).not.toBe(0);
      // Go sends no certificate the server's CA list does not cover, so this is "required" rather than "bad".
      expect(r.stderr).toMatch(/remote error: tls: (certificate required|bad certificate|unknown certificate authority)/);
    });

    test('skopeo with client.cert/client.key in --src-cert-dir copies; without them it is refused in the handshake', async () => {
      const good = await skopeo(s, 'registry.k8s.io/coredns/coredns:v1.11.3', 'mtls', await certDir('mtls', node()));
      expect(good.code, good.stderr).toBe(0);
      expect(await verifyDirDigests(join(work, 'skopeo-out', 'mtls'))).toBe(image('registry.k8s.io/coredns/coredns:v1.11.3').digest);
      const bad = await skopeo(s, BUSYBOX, 'mtls-none', await certDir('mtls-none'));
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/tls: (certificate required|bad certificate)/);
    });
  });

  describe('(c) basic auth (bcrypt htpasswd) over TLS', () => {
    let s: SluiceProcess;
    const creds = { user: 'node', pass: 'pull-secret-1' };
    beforeAll(async () => {
      const htpasswd = join(work, 'htpasswd');
      // The way the README tells operators to make the file; bcryptjs where apache2-utils is absent.
      if (which('htpasswd')) {
        const r = await run('htpasswd', ['-B', '-b', '-c', htpasswd, creds.user, creds.pass]);
        expect(r.code, r.stderr).toBe(0);
      } else {
        await writeFile(htpasswd, `${creds.user}:${bcrypt.hashSync(creds.pass, 10)}\n`);
      }
      s = await startWith('auth', { tls: { cert: pki.serverCert, key: pki.serverKey }, auth: { htpasswd } });
    });

    test('containerd with `ctr images pull --user` answers the Basic challenge and pulls', async () => {
      const hosts = await hostsDir('auth', s, { caFile: pki.ca });
      await expectPulled(await ctrPull(BUSYBOX, hosts, ['--user', `${creds.user}:${creds.pass}`]), image(BUSYBOX));
    });

    test('containerd without credentials, or with a wrong password, cannot pull', async () => {
      const hosts = await hostsDir('auth-none', s, { caFile: pki.ca });
      const none = await ctrPull(BUSYBOX, hosts);
      expect(none.code, none.stdout).not.toBe(0);
      expect(none.stderr).toMatch(/401 Unauthorized/);
      const wrong = await ctrPull(BUSYBOX, hosts, ['--user', `${creds.user}:nope`]);
      expect(wrong.code, wrong.stdout).not.toBe(0);
      expect(wrong.stderr).toMatch(/401 Unauthorized/);
      expect(await containerd.imageDigest(BUSYBOX)).toBeUndefined();
    });

    test('skopeo --src-creds copies; --src-no-creds gets 401', async () => {
      const certs = await certDir('auth');
      const good = await skopeo(s, KUBELET, 'auth', certs, creds);
      expect(good.code, good.stderr).toBe(0);
      expect(await verifyDirDigests(join(work, 'skopeo-out', 'auth'))).toBe(image(KUBELET).digest);
      const bad = await skopeo(s, BUSYBOX, 'auth-none', certs);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/401|unauthorized|authentication required/i);
    });
  });
});
