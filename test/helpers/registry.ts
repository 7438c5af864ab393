// A real upstream for integration tests: Debian's `docker-registry serve` (distribution 2.8) on
// 127.0.0.1 with filesystem storage in a temp dir, and pushing a generated layout into it with skopeo.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { runOk } from './binaries.js';
import { MediaType, splitRef, writeSkopeoDir, type LayoutDescription } from './images.js';

export interface Creds {
  user: string;
  pass: string;
}

export interface StartRegistryOptions {
  /** Turns on basic auth with this one user (bcrypt, the only hash distribution accepts). */
  htpasswd?: Creds;
  /** distribution log level; access logs are on only for 'debug'. Default 'warn'. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** `validation.manifests.urls.allow`: regexps of foreign-layer URLs a pushed manifest may carry (none by default). */
  manifestUrlsAllow?: string[];
}

export interface RunningRegistry {
  url: string;
  hostPort: string;
  port: number;
  /** Filesystem storage root (blobs under docker/registry/v2/blobs/sha256/xx/<hex>/data). */
  dir: string;
  logFile: string;
  stop(): Promise<void>;
}

export const ALL_MANIFEST_TYPES = [
  MediaType.dockerManifest,
  MediaType.dockerList,
  MediaType.ociManifest,
  MediaType.ociIndex,
].join(', ');

/** A port that was free a moment ago (listen on 0, read it, close). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return addr.port;
}

export const basicAuth = (c: Creds): string => 'Basic ' + Buffer.from(`${c.user}:${c.pass}`).toString('base64');

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RunningRegistry> {
  const root = await mkdtemp(join(tmpdir(), 'sluice-registry-'));
  const dir = join(root, 'storage');
  const logFile = join(root, 'registry.log');
  const port = await freePort();
  const hostPort = `127.0.0.1:${port}`;
  const level = opts.logLevel ?? 'warn';
  const lines = [
    'version: 0.1',
    `log: {level: ${level}, formatter: text, accesslog: {disabled: ${level !== 'debug'}}}`,
    'storage:',
    `  filesystem: {rootdirectory: ${dir}}`,
    '  delete: {enabled: true}',
    '  cache: {blobdescriptor: inmemory}',
    '  maintenance: {uploadpurging: {enabled: false}}',
    `http: {addr: "${hostPort}"}`,
  ];
  if (opts.manifestUrlsAllow) lines.push(`validation: {manifests: {urls: {allow: ${JSON.stringify(opts.manifestUrlsAllow)}}}}`);
  if (opts.htpasswd) {
    // Cost 4 (the minimum): distribution checks the hash on every request.
    const line = `${opts.htpasswd.user}:${bcrypt.hashSync(opts.htpasswd.pass, 4)}\n`;
    await writeFile(join(root, 'htpasswd'), line);
    lines.push(`auth: {htpasswd: {realm: sluice-test, path: ${join(root, 'htpasswd')}}}`);
  }
  await writeFile(join(root, 'config.yml'), lines.join('\n') + '\n');
  const log = await open(logFile, 'a');
  const child = spawn('docker-registry', ['serve', join(root, 'config.yml')], {
    stdio: ['ignore', log.fd, log.fd],
  });
  await log.close();
  let exited = false;
  const exit = once(child, 'exit').then(() => void (exited = true));
  child.on('error', () => void (exited = true));

  const stop = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGTERM');
      await exit;
    }
    await rm(root, { recursive: true, force: true });
  };

  // Process start only: a bounded poll of GET /v2/ (200 open, 401 with auth).
  for (let i = 0; i < 100 && !exited; i++) {
    const status = await fetch(`http://${hostPort}/v2/`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200 || status === 401) return { url: `http://${hostPort}`, hostPort, port, dir, logFile, stop };
    await delay(50);
  }
  const tail = await readFile(logFile, 'utf8').catch(() => '');
  await stop();
  throw new Error(`docker-registry did not answer on ${hostPort}:\n${tail.slice(-2000)}`);
}

/** HEAD manifests/<reference> with every manifest Accept type; returns Docker-Content-Digest. */
export async function headManifest(hostPort: string, name: string, reference: string, creds?: Creds): Promise<string | undefined> {
  const headers: Record<string, string> = { Accept: ALL_MANIFEST_TYPES };
  if (creds) headers.Authorization = basicAuth(creds);
  const r = await fetch(`http://${hostPort}/v2/${name}/manifests/${reference}`, { method: 'HEAD', headers });
  return r.ok ? (r.headers.get('docker-content-digest') ?? undefined) : undefined;
}

/**
 * Pushes every image of the layout to `hostPort/<name>:<tag>` (the reference without its
 * registry host) with skopeo, digests preserved, then checks the registry resolves each tag
 * to the layout's digest. OCI images go from the layout itself; Docker ones via `dir:`.
 */
export async function pushLayout(layoutDir: string, desc: LayoutDescription, hostPort: string, creds?: Creds): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'sluice-push-'));
  try {
    await Promise.all(
      desc.images.map(async (image, i) => {
        const { name, tag } = splitRef(image.ref);
        let src = `oci:${layoutDir}:${image.ref}`;
        if (image.kind.startsWith('docker')) {
          const out = join(scratch, String(i));
          await writeSkopeoDir(layoutDir, image.ref, out);
          src = `dir:${out}`;
        }
        const args = ['copy', '--quiet', '--insecure-policy', '--all', '--preserve-digests', '--dest-tls-verify=false'];
        if (creds) args.push('--dest-creds', `${creds.user}:${creds.pass}`);
        await runOk('skopeo', [...args, src, `docker://${hostPort}/${name}:${tag}`]);
        const served = await headManifest(hostPort, name, tag, creds);
        if (served !== image.digest) throw new Error(`${hostPort}/${name}:${tag} resolves to ${served}, expected ${image.digest}`);
      }),
    );
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
