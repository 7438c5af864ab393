// `sluice talos patch` as a real process against a config with TLS, mTLS and basic auth: the PEM files inlined
// are the config's (and the operator's), credentials are checked against the htpasswd file, and what is missing is named.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { requireBinaries } from '../helpers/binaries.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { runSluice, sluiceConfigYaml } from '../helpers/sluice.js';

const ok = requireBinaries(['openssl'], 'test/component/talos-patch-cli.test.ts');

describe.skipIf(!ok)('sluice talos patch (real CLI)', () => {
  let pki: Pki;
  let config: string;
  let plainConfig: string;
  let password: string;

  beforeAll(async () => {
    pki = await makePki();
    await writeFile(join(pki.dir, 'htpasswd'), `node1:${bcrypt.hashSync('s3cret', 4)}\n`);
    password = join(pki.dir, 'password');
    await writeFile(password, 's3cret\n');
    config = join(pki.dir, 'sluice.yaml');
    await writeFile(config, sluiceConfigYaml('./data', {
      extra: { listen: '10.5.0.1:6000', tls: { cert: pki.serverCert, key: pki.serverKey, clientCA: pki.clientCA }, auth: { htpasswd: './htpasswd' } },
    }));
    plainConfig = join(pki.dir, 'plain.yaml');
    await writeFile(plainConfig, sluiceConfigYaml('./data', { extra: { listen: '0.0.0.0:6000' } }));
  });
  afterAll(async () => {
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });

  const full = (): string[] => ['talos', 'patch', '--config', config, '--ca', pki.ca, '--client-cert', pki.clientCert, '--client-key', pki.clientKey, '--username', 'node1', '--password-file', password];

  test('documents form: endpoint from listen (https, since tls is on), CA, client identity and credentials inlined', async () => {
    const r = await runSluice(full());
    expect(r.code, r.stderr).toBe(0);
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJS() as Record<string, unknown>);
    expect(docs.map((d) => d.kind)).toEqual(['RegistryMirrorConfig', 'RegistryTLSConfig', 'RegistryAuthConfig']);
    expect(docs[0]).toMatchObject({ name: '*', endpoints: [{ url: 'https://10.5.0.1:6000' }], skipFallback: true });
    const ca = (await readFile(pki.ca, 'utf8')).trim();
    expect(docs[1]).toMatchObject({ name: '10.5.0.1:6000', ca, clientIdentity: { cert: (await readFile(pki.clientCert, 'utf8')).trim(), key: (await readFile(pki.clientKey, 'utf8')).trim() } });
    expect(docs[2]).toMatchObject({ name: '10.5.0.1:6000', username: 'node1', password: 's3cret' });
  });

  test('legacy form: the same, base64, under machine.registries.config["host:port"]', async () => {
    const r = await runSluice([...full(), '--form', 'legacy', '--endpoint', 'https://sluice.lan:6000']);
    expect(r.code, r.stderr).toBe(0);
    const doc = parse(r.stdout) as { machine: { registries: { mirrors: unknown; config: Record<string, { tls: { ca: string }; auth: unknown }> } } };
    expect(doc.machine.registries.mirrors).toEqual({ '*': { endpoints: ['https://sluice.lan:6000'], skipFallback: true } });
    const entry = doc.machine.registries.config['sluice.lan:6000']!;
    expect(Buffer.from(entry.tls.ca, 'base64').toString('utf8')).toBe(await readFile(pki.ca, 'utf8'));
    expect(entry.auth).toEqual({ username: 'node1', password: 's3cret' });
  });

  test('without --ca the top certificate of tls.cert is trusted', async () => {
    const args = full().filter((a, i, all) => a !== '--ca' && all[i - 1] !== '--ca');
    const r = await runSluice(args);
    expect(r.code, r.stderr).toBe(0);
    expect(parseAllDocuments(r.stdout)[1]?.toJS()).toMatchObject({ ca: (await readFile(pki.serverCert, 'utf8')).trim() });
  });

  test.each([
    ['a wrong password', (a: string[]) => a.map((x) => (x === 'node1' ? 'node2' : x)), /not in .*htpasswd/],
    ['no client certificate under mTLS', (a: string[]) => a.slice(0, 6).concat(a.slice(10)), /mTLS is on/],
    ['no credentials under basic auth', (a: string[]) => a.slice(0, 10), /basic auth is on/],
    ['an unknown form', (a: string[]) => [...a, '--form', 'v2'], /--form must be legacy or documents/],
  ])('%s is a usage error naming it (exit 2, nothing printed)', async (_n, edit, message) => {
    const r = await runSluice(edit(full()));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  test('a wildcard listen address needs --endpoint; plain HTTP gives the mirror alone', async () => {
    const bare = await runSluice(['talos', 'patch', '--config', plainConfig]);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain('give --endpoint http://HOST:6000');
    const r = await runSluice(['talos', 'patch', '--config', plainConfig, '--endpoint', 'http://10.5.0.1:6000']);
    expect(r.code, r.stderr).toBe(0);
    expect(parseAllDocuments(r.stdout).map((d) => d.toJS())).toEqual([
      { apiVersion: 'v1alpha1', kind: 'RegistryMirrorConfig', name: '*', endpoints: [{ url: 'http://10.5.0.1:6000' }], skipFallback: true },
    ]);
  });
});
