// Test PKI made with the openssl binary: a CA, a server certificate for 127.0.0.1/localhost, and client
// certificates signed by a separate client CA (for mTLS). Everything lives in one temp folder.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { runOk } from './binaries.js';

export interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCA: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate signed by a CA the server does not trust. */
  strangerCert: string;
  strangerKey: string;
  /** Issues another server certificate (new serial) over the same paths' siblings; returns its paths. */
  reissueServer(suffix: string): Promise<{ cert: string; key: string }>;
}

async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await runOk('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', key, '-out', cert]);
  return { cert, key };
}

async function issue(dir: string, name: string, ca: { cert: string; key: string }, server: boolean): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.crt`);
  const ext = join(dir, `${name}.ext`);
  await writeFile(ext, server
    ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
    : 'extendedKeyUsage=clientAuth\n');
  await runOk('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', key, '-out', csr]);
  await runOk('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', cert]);
  return { cert, key };
}

export async function makePki(): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-pki-'));
  const ca = await makeCa(dir, 'server-ca');
  const clientCa = await makeCa(dir, 'nodes-ca');
  const strangerCa = await makeCa(dir, 'stranger-ca');
  const server = await issue(dir, 'server', ca, true);
  const client = await issue(dir, 'node1', clientCa, false);
  const stranger = await issue(dir, 'stranger', strangerCa, false);
  return {
    dir,
    ca: ca.cert,
    serverCert: server.cert,
    serverKey: server.key,
    clientCA: clientCa.cert,
    clientCert: client.cert,
    clientKey: client.key,
    strangerCert: stranger.cert,
    strangerKey: stranger.key,
    reissueServer: (suffix) => issue(dir, `server-${suffix}`, ca, true),
  };
}

/** A PKI for the enclosing describe block: made before its tests (handed to `use` with the CA's bytes), removed after. */
export function usePki(use: (made: { pki: Pki; ca: Buffer }) => void): void {
  let pki: Pki | undefined;
  beforeAll(async () => {
    pki = await makePki();
    use({ pki, ca: await readFile(pki.ca) });
  });
  afterAll(async () => {
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });
}
