// The offline release on a disconnected host: built twice from one commit (identical bytes), its SBOM is exactly
// its node_modules, and unpacked into an empty folder it runs with its own runtime (no node on PATH) inside a
// network namespace that has nothing but loopback, where real skopeo and containerd pull an imported layout.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { requireBinaries, requireRoot, run, runOk } from '../helpers/binaries.js';
import { startContainerd, tempDir, verifyDirDigests, writeHostsToml, type Containerd } from '../helpers/clients.js';
import { buildLayout, splitRef, type LayoutDescription } from '../helpers/images.js';
import { buildRelease, makeNetns, pathWithoutNode, unpackRelease, type Release } from '../helpers/release.js';
import { REPO_ROOT, sluiceConfigYaml } from '../helpers/sluice.js';
import { startProc, type Proc } from '../kit/proc.js';

const SUITE = 'test/integration/release-bundle.test.ts';
const ok = requireBinaries(['skopeo', 'containerd', 'ctr', 'ip', 'curl', 'tar', 'apt-get', 'dpkg-deb'], SUITE) && requireRoot(SUITE);

async function sha256(file: string): Promise<string> {
  return createHash('sha256').update(await readFile(file)).digest('hex');
}

/** name@version of every package folder under a node_modules (scoped and nested ones too). */
async function installedPackages(nodeModules: string): Promise<Map<string, { license: unknown }>> {
  const out = new Map<string, { license: unknown }>();
  const visit = async (dir: string): Promise<void> => {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (name.startsWith('.')) continue;
      if (name.startsWith('@')) {
        for (const sub of await readdir(join(dir, name))) await visitPackage(join(dir, name, sub));
      } else await visitPackage(join(dir, name));
    }
  };
  const visitPackage = async (dir: string): Promise<void> => {
    const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { name: string; version: string; license?: unknown };
    out.set(`${pkg.name}@${pkg.version}`, { license: pkg.license });
    await visit(join(dir, 'node_modules'));
  };
  await visit(nodeModules);
  return out;
}

describe.skipIf(!ok)('the release tarball, unpacked on a host with no network and no node', () => {
  let work: string;
  let release: Release;
  let root: string;
  let noNode: string;
  let layout: LayoutDescription;
  let ns: Awaited<ReturnType<typeof makeNetns>> | undefined;
  let server: Proc | undefined;
  let containerd: Containerd | undefined;

  beforeAll(async () => {
    work = await tempDir('release');
    release = await buildRelease(join(work, 'first'));
    root = await unpackRelease(release, join(work, 'host'));
    noNode = await pathWithoutNode(join(work, 'no-node-bin'));
  }, 600_000);

  afterAll(async () => {
    await containerd?.stop();
    await server?.stop();
    await ns?.remove();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('SHA256SUMS names every artefact with its digest, and a second run from the same commit gives identical bytes', async () => {
    const sums = await readFile(join(release.outDir, 'SHA256SUMS'), 'utf8');
    const listed = sums.trim().split('\n').map((l) => l.split('  '));
    expect(listed.map(([, f]) => f).sort()).toEqual([`${release.base}-oci.tar`, `${release.base}.cdx.json`, `${release.base}.tar.gz`]);
    for (const [digest, file] of listed) expect(await sha256(join(release.outDir, file ?? '')), file).toBe(digest);

    const again = await buildRelease(join(work, 'second'));
    expect(await readFile(join(again.outDir, 'SHA256SUMS'), 'utf8')).toBe(sums);
    const layoutFiles = async (dir: string): Promise<string[]> => (await readdir(dir, { recursive: true })).map(String).sort();
    const files = await layoutFiles(release.ociLayout);
    expect(await layoutFiles(again.ociLayout)).toEqual(files);
    for (const f of files.filter((x) => x.includes('sha256/') || x.endsWith('.json') || x === 'oci-layout')) {
      expect(await sha256(join(again.ociLayout, f)), f).toBe(await sha256(join(release.ociLayout, f)));
    }
    // Stamped from the commit: every entry's mtime is the commit's date, every owner root.
    const listing = (await runOk('tar', ['--numeric-owner', '--full-time', '-tvzf', release.tarball])).stdout.trim().split('\n');
    const committed = new Date(Number((await runOk('git', ['-C', REPO_ROOT, 'show', '-s', '--format=%ct', 'HEAD'])).stdout.trim()) * 1000);
    const stamp = committed.toISOString().slice(0, 19).replace('T', ' ');
    for (const line of listing) {
      expect(line, line).toContain(' 0/0 ');
      expect(line, line).toContain(stamp);
    }
  }, 600_000);

  test('the SBOM lists every package in node_modules with its version and licence, the runtime, and nothing else', async () => {
    const sbom = JSON.parse(await readFile(join(root, 'sbom.cdx.json'), 'utf8')) as {
      bomFormat: string;
      components: Array<{ type: string; name: string; version: string; licenses?: Array<{ license?: { id?: string; name?: string }; expression?: string }> }>;
    };
    expect(sbom.bomFormat).toBe('CycloneDX');
    expect(await readFile(join(root, 'sbom.cdx.json'), 'utf8')).toBe(await readFile(release.sbom, 'utf8'));
    const installed = await installedPackages(join(root, 'node_modules'));
    const libraries = sbom.components.filter((c) => c.type === 'library');
    expect(new Set(libraries.map((c) => `${c.name}@${c.version}`))).toEqual(new Set(installed.keys()));
    expect(libraries).toHaveLength(installed.size);
    for (const c of libraries) {
      const declared = installed.get(`${c.name}@${c.version}`)?.license;
      const listed = c.licenses?.map((l) => l.license?.id ?? l.license?.name ?? l.expression);
      expect(listed?.length, `${c.name} has no licence`).toBeGreaterThan(0);
      if (typeof declared === 'string') expect(listed?.join(' '), c.name).toContain(declared.replace(/^\((.*)\)$/, '$1').split(' ')[0]);
    }
    const platform = sbom.components.filter((c) => c.type !== 'library');
    expect(platform.map((c) => [c.type, c.name, c.version])).toEqual([['platform', 'node', release.runtimeVersion]]);
    const notices = await readFile(join(root, 'THIRD-PARTY-NOTICES'), 'utf8');
    for (const key of installed.keys()) expect(notices, key).toContain(`=== ${key.replace(/@([^@]+)$/, ' $1')}`);
    expect(await readFile(join(root, 'LICENSE'), 'utf8')).toContain('Apache License');
  });

  test('bin/sluice version runs the bundled Node.js runtime, with no node on PATH', async () => {
    expect((await run('sh', ['-c', 'command -v node'], { env: { PATH: noNode } })).code).not.toBe(0);
    const r = await runOk(join(root, 'bin', 'sluice'), ['version', '--json'], { env: { PATH: noNode } });
    const head = (await runOk('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD'])).stdout.trim();
    expect(JSON.parse(r.stdout)).toMatchObject({ version: release.version, node: `v${release.runtimeVersion}`, platform: 'linux/x64', storeFormat: 1 });
    expect((JSON.parse(r.stdout) as { revision: string }).revision).toMatch(new RegExp(`^${head}(-dirty)?$`));
  });

  test('inside a network namespace with only loopback: import a layout, serve it, skopeo and containerd pull by tag and by digest', async () => {
    ns = await makeNetns(`sluice-rel-${process.pid}`);
    expect((await ns.exec('ip', ['-o', 'link'])).stdout.trim().split('\n')).toHaveLength(1); // lo, nothing else
    expect((await ns.exec('ip', ['route', 'get', '1.1.1.1'])).code).not.toBe(0);
    layout = await buildLayout(join(work, 'layout'));
    const config = join(work, 'host', 'sluice.yaml');
    await writeFile(config, sluiceConfigYaml(join(work, 'host', 'data'), { allowlist: layout.images.map((i) => i.ref), extra: { listen: '127.0.0.1:6000', admin: { listen: '127.0.0.1:6001' } } }));
    const sluice = (args: string[]): string[] => ['env', '-i', `PATH=${noNode}`, join(root, 'bin', 'sluice'), ...args, '--config', config];
    const [envCmd = 'env', ...envArgs] = sluice(['import', layout.dir]);
    const imported = await ns.exec(envCmd, envArgs);
    expect(imported.code, imported.stderr).toBe(0);
    for (const img of layout.images) expect(imported.stdout).toContain(`imported ${img.ref} ${img.digest}`);
    // zstd is the bundled native addon (zstd-napi, Node-API): it loads under the bundled runtime.
    const [c, ...a] = sluice(['export', join(work, 'export.tar.zst'), '--format', 'tar.zst']);
    const exported = await ns.exec(c ?? 'env', a);
    expect(exported.code, exported.stderr).toBe(0);
    expect((await readFile(join(work, 'export.tar.zst'))).subarray(0, 4).toString('hex')).toBe('28b52ffd');

    server = await startProc('release-sluice', 'ip', ['netns', 'exec', `sluice-rel-${process.pid}`, ...sluice(['serve'])], join(work, 'serve.log'));
    for (let i = 0; i < 200 && server.running; i++) {
      // Process start: the one bounded poll, from inside the namespace (the host cannot reach it).
      if ((await ns.exec('curl', ['-sf', '-o', '/dev/null', 'http://127.0.0.1:6000/v2/'])).code === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(server.running, await server.log()).toBe(true);
    expect((await server.log())).toContain('registry listening');
    // The sendfile addon (sluice's own, src/http/sendfile) is bundled built, as zstd-napi is, and loads under the bundled runtime.
    expect(await server.log()).toContain('blobs are sent with sendfile');

    for (const img of layout.images) {
      const { host, name, tag } = splitRef(img.ref);
      for (const [how, ref] of [['tag', `${host}/${name}:${tag}`], ['digest', `${host}/${name}@${img.digest}`]] as const) {
        const dest = join(work, 'skopeo', `${name.replace(/\//g, '_')}-${how}`);
        await mkdir(dest, { recursive: true });
        const r = await ns.exec('skopeo', ['copy', '--quiet', '--insecure-policy', '--all', '--preserve-digests', '--src-tls-verify=false', '--src-no-creds', `docker://127.0.0.1:6000/${ref}`, `dir:${dest}`]);
        expect(r.code, `${ref}: ${r.stderr}`).toBe(0);
        expect(await verifyDirDigests(dest)).toBe(img.digest);
      }
    }

    containerd = await startContainerd({ netns: `sluice-rel-${process.pid}` });
    const hosts = join(work, 'certs.d');
    for (const host of ['docker.io', 'ghcr.io', '_default']) await writeHostsToml(hosts, host, '127.0.0.1:6000');
    for (const img of layout.images) {
      const { host, name } = splitRef(img.ref);
      const byTag = await containerd.pull(img.ref, hosts);
      expect(byTag.code, `${img.ref}: ${byTag.stderr}`).toBe(0);
      expect(await containerd.imageDigest(img.ref)).toBe(img.digest);
      const byDigest = `${host}/${name}@${img.digest}`;
      await containerd.rmi(img.ref);
      const r = await containerd.pull(byDigest, hosts);
      expect(r.code, `${byDigest}: ${r.stderr}`).toBe(0);
      expect(await containerd.imageDigest(byDigest)).toBe(img.digest);
    }
    const content = new Set(await containerd.contentDigests());
    const busybox = layout.images.find((i) => i.ref === 'docker.io/library/busybox:1.36');
    for (const b of busybox?.blobs ?? []) expect(content.has(b.digest), b.digest).toBe(true);
  }, 600_000);
});
