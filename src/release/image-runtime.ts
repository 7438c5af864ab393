// The image's runtime layer: Node.js and exactly the shared libraries it and the bundled addons load, taken from
// Debian's packages (`apt-get download`, unpacked with dpkg-deb) and found by those packages' own dynamic loader
// (`ld.so --list`), so the host's libraries never decide; plus their copyright files, the user and /tmp, /data.
import { execFile } from 'node:child_process';
import { chmod, lstat, mkdtemp, readdir, readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { normalMode, type Entry } from './tar.js';

const exec = promisify(execFile);

/** The Debian packages holding what `ldd node` names: glibc, libstdc++ and libgcc_s. */
const DEBIAN_PACKAGES = ['libc6', 'libstdc++6', 'libgcc-s1'] as const;
const MULTIARCH: Readonly<Record<string, string>> = { amd64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' };
const LOADER: Readonly<Record<string, string>> = { amd64: 'ld-linux-x86-64.so.2', arm64: 'ld-linux-aarch64.so.1' };

export const IMAGE_UID = 10001;

export interface DebianRuntime {
  entries: Entry[];
  /** name=version of each package used, for the layer's history. */
  packages: string[];
  cleanupDir: string;
}

async function download(dir: string, names: readonly string[]): Promise<void> {
  try {
    await exec('apt-get', ['download', ...names], { cwd: dir });
  } catch (e) {
    throw new Error(`apt-get download ${names.join(' ')} failed (the image's libraries come from Debian; run apt-get update): ${e instanceof Error ? e.message : String(e)}`);
  }
}

async function unpack(dir: string, root: string, done: Set<string>): Promise<string[]> {
  const packages: string[] = [];
  for (const deb of (await readdir(dir)).filter((f) => f.endsWith('.deb') && !done.has(f)).sort()) {
    done.add(deb);
    await exec('dpkg-deb', ['-x', join(dir, deb), root]);
    const { stdout } = await exec('dpkg-deb', ['-f', join(dir, deb), 'Package', 'Version']);
    packages.push(stdout.trim().split('\n').map((l) => l.split(': ')[1]).join('='));
  }
  return packages;
}

/**
 * The packages unpacked under root, and their copyright files: a package whose doc folder is a symlink
 * (libstdc++6 → gcc-12-base) has its copyright in the target package, which is fetched too.
 */
async function unpackDebs(ociArch: string): Promise<{ root: string; packages: string[]; docs: Entry[]; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-release-debs-'));
  await chmod(dir, 0o777); // apt-get download drops to the _apt user when it can write here
  const root = join(dir, 'root');
  const done = new Set<string>();
  await download(dir, DEBIAN_PACKAGES.map((p) => `${p}:${ociArch}`));
  const packages = await unpack(dir, root, done);
  const docs: Entry[] = [];
  const owners = new Set<string>();
  for (const p of DEBIAN_PACKAGES) {
    const doc = `usr/share/doc/${p}`;
    const st = await lstat(join(root, doc));
    if (st.isSymbolicLink()) {
      const target = await readlink(join(root, doc));
      docs.push({ kind: 'symlink', path: doc, target });
      owners.add(target);
    } else owners.add(p);
  }
  const extra = [...owners].filter((o) => !(DEBIAN_PACKAGES as readonly string[]).includes(o)).sort();
  if (extra.length > 0) {
    await download(dir, extra.map((p) => `${p}:${ociArch}`));
    packages.push(...(await unpack(dir, root, done)));
  }
  for (const o of [...owners].sort()) docs.push({ kind: 'file', path: `usr/share/doc/${o}/copyright`, mode: 0o644, source: join(root, 'usr', 'share', 'doc', o, 'copyright') });
  return { root, packages: packages.sort(), docs, dir };
}

/** The files the loader resolves for `binaries`, as paths under root (symlinks kept, with what they point to). */
async function neededLibraries(root: string, ociArch: string, binaries: readonly string[]): Promise<Set<string>> {
  const multiarch = MULTIARCH[ociArch];
  const loader = LOADER[ociArch];
  if (!multiarch || !loader) throw new Error(`no image runtime for ${ociArch}`);
  const libDirs = [`lib/${multiarch}`, `usr/lib/${multiarch}`].map((d) => join(root, d));
  const found = new Set<string>([`lib/${multiarch}/${loader}`, `lib64/${loader}`]);
  for (const binary of binaries) {
    const { stdout } = await exec(join(root, 'lib', multiarch, loader), ['--library-path', libDirs.join(':'), '--list', binary]);
    for (const m of stdout.matchAll(/=> (\S+) \(0x/g)) {
      const path = m[1] ?? '';
      if (!path.startsWith(`${root}/`)) throw new Error(`${binary} needs ${path}, which is not in ${DEBIAN_PACKAGES.join(', ')}`);
      found.add(relative(root, path));
    }
  }
  for (const path of [...found]) {
    const st = await lstat(join(root, path));
    if (st.isSymbolicLink()) {
      const target = await readlink(join(root, path));
      if (!target.startsWith('/')) found.add(join(path, '..', target));
    }
  }
  return found;
}

export async function debianRuntime(ociArch: string, binaries: readonly string[]): Promise<DebianRuntime> {
  const { root, packages, docs, dir } = await unpackDebs(ociArch);
  const entries: Entry[] = [];
  for (const path of [...(await neededLibraries(root, ociArch, binaries))].sort()) {
    const abs = join(root, path);
    const st = await lstat(abs);
    entries.push(st.isSymbolicLink() ? { kind: 'symlink', path, target: await readlink(abs) } : { kind: 'file', path, mode: normalMode(st.mode), source: abs });
  }
  entries.push(...docs);
  const text = (path: string, body: string): Entry => ({ kind: 'file', path, mode: 0o644, source: Buffer.from(body) });
  entries.push(
    text('etc/passwd', `root:x:0:0:root:/root:/usr/sbin/nologin\nsluice:x:${IMAGE_UID}:${IMAGE_UID}:sluice:/data:/usr/sbin/nologin\n`),
    text('etc/group', `root:x:0:\nsluice:x:${IMAGE_UID}:\n`),
    { kind: 'dir', path: 'tmp', mode: 0o1777 },
    { kind: 'dir', path: 'data', mode: 0o750, uid: IMAGE_UID, gid: IMAGE_UID },
  );
  return { entries, packages, cleanupDir: dir };
}
