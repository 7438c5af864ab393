// Real pull clients for integration tests: skopeo (copy --all to `dir:`, then verify every file)
// and a private containerd daemon driven with `ctr --hosts-dir`, as Talos nodes pull.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { run, type RunResult } from './binaries.js';
import type { Creds } from './registry.js';

export interface SkopeoOptions {
  creds?: Creds;
  /** Default false: the test registries and sluice speak plain HTTP or self-signed TLS. */
  tlsVerify?: boolean;
  extraArgs?: string[];
  timeoutMs?: number;
}

/** `skopeo copy --all --preserve-digests docker://... dir:DEST`; never rejects on a failed copy. */
export async function skopeoCopyAll(srcRef: string, destDir: string, opts: SkopeoOptions = {}): Promise<RunResult> {
  await mkdir(destDir, { recursive: true });
  const args = ['copy', '--quiet', '--insecure-policy', '--all', '--preserve-digests', `--src-tls-verify=${opts.tlsVerify ?? false}`];
  // --src-no-creds keeps credentials stored on the host out of anonymous tests.
  args.push(...(opts.creds ? ['--src-creds', `${opts.creds.user}:${opts.creds.pass}`] : ['--src-no-creds']));
  args.push(...(opts.extraArgs ?? []), srcRef, `dir:${destDir}`);
  return run('skopeo', args, { timeoutMs: opts.timeoutMs ?? 180_000 });
}

async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return 'sha256:' + h.digest('hex');
}

/**
 * Checks that every file of a skopeo `dir:` named by hex (`<hex>`, `<hex>.manifest.json`) has that
 * sha256; throws listing every mismatch. Returns the digest of manifest.json (the tagged manifest).
 */
export async function verifyDirDigests(dir: string): Promise<string> {
  const bad: string[] = [];
  for (const f of await readdir(dir)) {
    const m = /^([0-9a-f]{64})(\.manifest\.json)?$/.exec(f);
    if (!m) continue;
    const got = await fileDigest(join(dir, f));
    if (got !== `sha256:${m[1]}`) bad.push(`${f} hashes to ${got}`);
  }
  if (bad.length > 0) throw new Error(`digest mismatch in ${dir}:\n${bad.join('\n')}`);
  return fileDigest(join(dir, 'manifest.json'));
}

export interface HostsTomlOptions {
  https?: boolean;
  caFile?: string;
  clientCert?: { cert: string; key: string };
  skipVerify?: boolean;
}

/**
 * Writes `<dir>/<registryHost>/hosts.toml` sending pulls and resolves to the mirror, as Talos does
 * for a mirror (`_default` for `'*'`). `server` is a dead loopback port, so containerd's fallback
 * after a mirror error never leaves the box. Returns the file path.
 */
export async function writeHostsToml(dir: string, registryHost: string, mirrorHostPort: string, opts: HostsTomlOptions = {}): Promise<string> {
  const lines = ['server = "http://127.0.0.1:9"', '', `[host."${opts.https ? 'https' : 'http'}://${mirrorHostPort}"]`];
  lines.push('  capabilities = ["pull", "resolve"]');
  if (opts.caFile) lines.push(`  ca = ${JSON.stringify(opts.caFile)}`);
  if (opts.clientCert) lines.push(`  client = [[${JSON.stringify(opts.clientCert.cert)}, ${JSON.stringify(opts.clientCert.key)}]]`);
  if (opts.skipVerify) lines.push('  skip_verify = true');
  await mkdir(join(dir, registryHost), { recursive: true });
  const file = join(dir, registryHost, 'hosts.toml');
  await writeFile(file, lines.join('\n') + '\n');
  return file;
}

export interface Containerd {
  socket: string;
  dir: string;
  /** `ctr images pull --hosts-dir DIR --plain-http REF` (fetch + unpack for the host platform). */
  pull(ref: string, hostsDir: string, extraArgs?: string[]): Promise<RunResult>;
  /** `ctr content fetch` (no unpack, no image record). */
  fetch(ref: string, hostsDir: string, extraArgs?: string[]): Promise<RunResult>;
  /** Target digest of a pulled image record, or undefined. */
  imageDigest(ref: string): Promise<string | undefined>;
  /** Digests of everything in the content store. */
  contentDigests(): Promise<string[]>;
  /** Removes the image and waits for GC, so the next pull goes to the network again. */
  rmi(ref: string): Promise<void>;
  ctr(args: string[]): Promise<RunResult>;
  stop(): Promise<void>;
}

const NAMESPACE = 'test';

/**
 * Starts a private containerd 1.6 (CRI and unneeded snapshotters off) with everything in a temp dir; with `netns`,
 * it and every ctr call run inside that network namespace (`ip netns exec`), where ctr's pulls then happen.
 */
export async function startContainerd(opts: { netns?: string } = {}): Promise<Containerd> {
  // Short path: the unix socket path must stay under 108 bytes.
  const dir = await mkdtemp('/tmp/sluice-ctrd-');
  const socket = join(dir, 'c.sock');
  const config = `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "${socket}"
[ttrpc]
  address = "${socket}.ttrpc"
[debug]
  address = "${dir}/debug.sock"
  level = "info"
[metrics]
  address = ""
`;
  await writeFile(join(dir, 'config.toml'), config);
  const log = await open(join(dir, 'containerd.log'), 'a');
  const inNs = (cmd: string, args: string[]): [string, string[]] => (opts.netns ? ['ip', ['netns', 'exec', opts.netns, cmd, ...args]] : [cmd, args]);
  const child = spawn(...inNs('containerd', ['--config', join(dir, 'config.toml')]), { stdio: ['ignore', log.fd, log.fd] });
  await log.close();
  let exited = false;
  const exit = once(child, 'exit').then(() => void (exited = true));
  child.on('error', () => void (exited = true));

  const ctr = (args: string[]): Promise<RunResult> => run(...inNs('ctr', ['-a', socket, '-n', NAMESPACE, ...args]), { timeoutMs: 180_000 });
  const stop = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGTERM');
      await exit;
    }
    // Unpacked snapshots may still be mounted if containerd died hard; best effort.
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  };

  const api: Containerd = {
    socket,
    dir,
    ctr,
    pull: (ref, hostsDir, extra = []) => ctr(['images', 'pull', '--hosts-dir', hostsDir, '--plain-http', ...extra, ref]),
    fetch: (ref, hostsDir, extra = []) => ctr(['content', 'fetch', '--hosts-dir', hostsDir, '--plain-http', ...extra, ref]),
    async imageDigest(ref) {
      const r = await ctr(['images', 'ls']);
      const row = r.stdout.split('\n').map((l) => l.trim().split(/\s+/)).find((cols) => cols[0] === ref);
      return row?.find((c) => c.startsWith('sha256:'));
    },
    async contentDigests() {
      const r = await ctr(['content', 'ls', '-q']);
      return r.stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('sha256:'));
    },
    async rmi(ref) {
      await ctr(['images', 'rm', '--sync', ref]);
    },
    stop,
  };

  // Process start only: a bounded poll of `ctr version`.
  for (let i = 0; i < 100 && !exited; i++) {
    if ((await ctr(['version'])).code === 0) return api;
    await delay(100);
  }
  const tail = await readFile(join(dir, 'containerd.log'), 'utf8').catch(() => '');
  await stop();
  throw new Error(`containerd did not start:\n${tail.slice(-2000)}`);
}

/** A fresh temp dir for hosts.toml files or skopeo output; remove it with `rm -rf` in afterAll. */
export const tempDir = (prefix: string): Promise<string> => mkdtemp(join(tmpdir(), `sluice-${prefix}-`));
