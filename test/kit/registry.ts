// The real upstream: Debian's `docker-registry serve` (distribution 2.8) on 127.0.0.1 with filesystem
// storage, optionally behind basic auth. Tests give it a temp folder; the bench its work folder.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { freePort, startProc, waitForHttp, type Proc } from './proc.js';

export interface Creds {
  user: string;
  pass: string;
}

export const basicAuth = (c: Creds): string => 'Basic ' + Buffer.from(`${c.user}:${c.pass}`).toString('base64');

export interface StartRegistryOptions {
  /** Its folder (config, log, storage); kept by stop. Default a fresh temp folder, removed by stop. */
  dir?: string;
  /** Turns on basic auth with this one user (bcrypt, the only hash distribution accepts). */
  htpasswd?: Creds;
  /** distribution log level; access logs are on only for 'debug'. Default 'warn'. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** `validation.manifests.urls.allow`: regexps of foreign-layer URLs a pushed manifest may carry (none by default). */
  manifestUrlsAllow?: string[];
  /** distribution's pull-through cache mode (`proxy.remoteurl`): this registry mirrors that one. */
  proxyRemoteUrl?: string;
}

export interface RunningRegistry {
  url: string;
  hostPort: string;
  port: number;
  /** Filesystem storage root (blobs under docker/registry/v2/blobs/sha256/xx/<hex>/data). */
  dir: string;
  logFile: string;
  proc: Proc;
  stop(): Promise<void>;
}

async function writeConfig(root: string, hostPort: string, opts: StartRegistryOptions): Promise<string> {
  const level = opts.logLevel ?? 'warn';
  const lines = [
    'version: 0.1',
    `log: {level: ${level}, formatter: text, accesslog: {disabled: ${level !== 'debug'}}}`,
    'storage:',
    `  filesystem: {rootdirectory: ${join(root, 'storage')}}`,
    '  delete: {enabled: true}',
    '  cache: {blobdescriptor: inmemory}',
    '  maintenance: {uploadpurging: {enabled: false}}',
    `http: {addr: "${hostPort}"}`,
  ];
  if (opts.proxyRemoteUrl) lines.push(`proxy: {remoteurl: "${opts.proxyRemoteUrl}"}`);
  if (opts.manifestUrlsAllow) lines.push(`validation: {manifests: {urls: {allow: ${JSON.stringify(opts.manifestUrlsAllow)}}}}`);
  if (opts.htpasswd) {
    // Cost 4 (the minimum): distribution checks the hash on every request.
    const line = `${opts.htpasswd.user}:${bcrypt.hashSync(opts.htpasswd.pass, 4)}\n`;
    await writeFile(join(root, 'htpasswd'), line);
    lines.push(`auth: {htpasswd: {realm: sluice-test, path: ${join(root, 'htpasswd')}}}`);
  }
  const file = join(root, 'config.yml');
  await writeFile(file, lines.join('\n') + '\n');
  return file;
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RunningRegistry> {
  const root = opts.dir ?? (await mkdtemp(join(tmpdir(), 'sluice-registry-')));
  await mkdir(root, { recursive: true });
  const port = await freePort();
  const hostPort = `127.0.0.1:${port}`;
  const logFile = join(root, 'registry.log');
  const config = await writeConfig(root, hostPort, opts);
  const proc = await startProc('docker-registry', 'docker-registry', ['serve', config], logFile);
  const stop = async (): Promise<void> => {
    await proc.stop();
    if (opts.dir === undefined) await rm(root, { recursive: true, force: true });
  };
  try {
    // 200 open, 401 with auth.
    await waitForHttp(`http://${hostPort}/v2/`, proc, { ok: [200, 401] });
  } catch (e) {
    await stop();
    throw e;
  }
  return { url: `http://${hostPort}`, hostPort, port, dir: join(root, 'storage'), logFile, proc, stop };
}
