// The signing commands as a real process: `signing init` writes the site key pair (0600, never over an existing
// key) and prints the public key; `import` signs what it brought in; `sign` keeps what is signed; `status
// --coverage` shows it; `talos patch --verify` puts the same public key in an ImageVerificationConfig.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { buildLayoutOf, type TestImage } from '../helpers/images.js';
import { runSluice, sluiceConfigYaml } from '../helpers/sluice.js';

describe('sluice signing, sign and talos patch --verify (real CLI)', () => {
  let dir: string;
  let config: string;
  let image: TestImage;
  let layout: string;
  let publicPem: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-signcli-'));
    layout = join(dir, 'layout');
    image = (await buildLayoutOf(layout, [{ ref: 'ghcr.io/siderolabs/kubelet:v1.34.0', kind: 'oci-index', sizes: [1024] }])).images[0]!;
    config = join(dir, 'sluice.yaml');
    await writeFile(config, sluiceConfigYaml('./data', {
      allowlist: ['ghcr.io/siderolabs/kubelet:v1.34.0'],
      extra: { signing: { key: './site.key', policy: 'allowlist' } },
    }));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('signing init writes a 0600 private key and prints the public key; it never overwrites one', async () => {
    const r = await runSluice(['signing', 'init', '--config', config]);
    expect(r.code, r.stderr).toBe(0);
    expect((await stat(join(dir, 'site.key'))).mode & 0o777).toBe(0o600);
    publicPem = await readFile(join(dir, 'site.key.pub'), 'utf8');
    expect(r.stdout.trim()).toBe(publicPem.trim());
    expect(publicPem).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    const again = await runSluice(['signing', 'init', '--config', config]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/never overwritten/);
  });

  test('import signs the admitted image it brought in; sign then keeps it; coverage shows it signed', async () => {
    const imp = await runSluice(['import', layout, '--config', config]);
    expect(imp.code, imp.stderr).toBe(0);
    // The index and its two platform manifests.
    expect(imp.stdout).toMatch(/site signatures: 3 made, 0 kept, 0 left unsigned/);
    const sign = await runSluice(['sign', '--json', '--config', config]);
    expect(sign.code, sign.stderr).toBe(0);
    expect(JSON.parse(sign.stdout)).toMatchObject({ signed: 0, kept: 3, unsigned: 0 });
    const cov = await runSluice(['status', '--coverage', '--json', '--config', config]);
    expect(cov.code, cov.stdout).toBe(0);
    const img = (JSON.parse(cov.stdout) as { rules: Array<{ images: Array<{ digest: string; siteSignatures: Array<{ signed: boolean; policy: string }> }> }> }).rules[0]!.images[0]!;
    expect(img.digest).toBe(image.digest);
    expect(img.siteSignatures.map((s) => [s.signed, s.policy])).toEqual([[true, 'allowlist'], [true, 'allowlist'], [true, 'allowlist']]);
  });

  test('an export bundle carries the site signatures: imported elsewhere, every one is there and current', async () => {
    const bundle = join(dir, 'bundle');
    const exp = await runSluice(['export', bundle, '--config', config]);
    expect(exp.code, exp.stderr).toBe(0);
    const other = join(dir, 'other.yaml');
    await writeFile(other, sluiceConfigYaml('./other-data', {
      allowlist: ['ghcr.io/siderolabs/kubelet:v1.34.0'],
      extra: { signing: { key: './site.key', policy: 'allowlist' } },
    }));
    const imp = await runSluice(['import', bundle, '--config', other]);
    expect(imp.code, imp.stderr).toBe(0);
    expect(imp.stdout).toMatch(/site signatures: 0 made, 3 kept, 0 left unsigned/);
  });

  test('sign refuses a rule that is not on the allowlist', async () => {
    const r = await runSluice(['sign', 'ghcr.io/other/thing:1', '--config', config]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not on the allowlist/);
  });

  test('talos patch --verify adds an ImageVerificationConfig with the site public key for every image', async () => {
    const r = await runSluice(['talos', 'patch', '--verify', '--endpoint', 'http://10.5.0.1:6000', '--config', config]);
    expect(r.code, r.stderr).toBe(0);
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJS() as Record<string, unknown>);
    expect(docs.map((d) => d.kind)).toEqual(['RegistryMirrorConfig', 'ImageVerificationConfig']);
    expect(docs[1]).toEqual({ apiVersion: 'v1alpha1', kind: 'ImageVerificationConfig', rules: [{ image: '*', publicKey: { certificate: publicPem.trim() } }] });
    const legacy = await runSluice(['talos', 'patch', '--verify', '--form', 'legacy', '--endpoint', 'http://10.5.0.1:6000', '--config', config]);
    expect(legacy.code).toBe(2);
    expect(legacy.stderr).toMatch(/use --form documents/);
  });

  test('sign without signing configured is a usage error naming the key to add', async () => {
    const plain = join(dir, 'plain.yaml');
    await writeFile(plain, sluiceConfigYaml('./data'));
    const r = await runSluice(['sign', '--config', plain]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/signing is not configured/);
  });
});
