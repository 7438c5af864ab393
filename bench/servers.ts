// Starting every target on 127.0.0.1 as its own process: sluice (the built CLI), docker-registry, nginx
// (sendfile on), the bare Node and fastify ceilings, and the counting proxy in front of the upstream.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { freePort, startProc, waitForHttp, type Proc } from '../test/kit/proc.js';
import { startRegistry as startDockerRegistry } from '../test/kit/registry.js';
import { sluiceConfigDoc } from '../test/kit/sluice-config.js';
import { SERVE_NODE_FLAGS, SLUICE_MAIN } from '../test/kit/sluice.js';
import { BENCH_HOST } from './content.js';

/** dist/bench when run as built: the bare servers, the counting proxy and the getter are beside this file. */
export const BENCH_DIST = dirname(fileURLToPath(import.meta.url));

/** What a case needs of a target: where it answers and which process tree does the work. */
export interface Target {
  name: string;
  url: string;
  pid: number;
}

export interface Server extends Target {
  port: number;
  proc: Proc;
  stop(): Promise<void>;
}

async function server(name: string, proc: Proc, port: number, readyPath = '/v2/', timeoutMs = 20_000): Promise<Server> {
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${url}${readyPath}`, proc, { timeoutMs });
  } catch (e) {
    await proc.stop(1_000);
    throw e;
  }
  return { name, url, port, pid: proc.pid, proc, stop: async () => void (await proc.stop()) };
}

/** Debian's `docker-registry serve` (distribution 2.8) with filesystem storage under `dir` (the test kit's, as the tests use). */
export async function startRegistry(dir: string): Promise<Server> {
  const r = await startDockerRegistry({ dir });
  return { name: 'docker-registry', url: r.url, port: r.port, pid: r.proc.pid, proc: r.proc, stop: r.stop };
}

/** The same docker-registry in its pull-through cache mode (`proxy.remoteurl`), storage under `dir`. */
export async function startRegistryProxy(dir: string, remoteUrl: string): Promise<Server> {
  const r = await startDockerRegistry({ dir, proxyRemoteUrl: remoteUrl });
  return { name: 'docker-registry proxy', url: r.url, port: r.port, pid: r.proc.pid, proc: r.proc, stop: r.stop };
}

/**
 * nginx serving `root` statically with sendfile; manifests get the OCI manifest type. The workers of a
 * root-started nginx run as nobody, so `root` and its parents must be world-readable (the caller's job).
 */
export async function startNginx(dir: string, root: string): Promise<Server> {
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const port = await freePort();
  const tmp = join(dir, 'tmp');
  const conf = `worker_processes auto;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 65s;
  client_body_temp_path ${tmp}; proxy_temp_path ${tmp}; fastcgi_temp_path ${tmp}; uwsgi_temp_path ${tmp}; scgi_temp_path ${tmp};
  types { }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    root ${root};
    location = /v2/ { default_type application/json; return 200 '{}'; }
    location ~ /manifests/ { default_type application/vnd.oci.image.manifest.v1+json; }
  }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const proc = await startProc('nginx', 'nginx', ['-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-p', dir, '-g', 'daemon off;'], join(dir, 'nginx.out'));
  return server('nginx', proc, port);
}

/** One of the bare ceilings (bare-server.ts) as its own process. */
export async function startBare(kind: 'node' | 'fastify', dir: string, root: string): Promise<Server> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const proc = await startProc(`bare-${kind}`, process.execPath, [join(BENCH_DIST, 'bare-server.js'), kind, root, String(port)], join(dir, `bare-${kind}.log`));
  return server(`bare ${kind}`, proc, port);
}

/** The counting proxy (count-proxy.ts) in front of `targetHostPort`. */
export async function startCountingProxy(dir: string, targetHostPort: string): Promise<Server> {
  const port = await freePort();
  const proc = await startProc('count-proxy', process.execPath, [join(BENCH_DIST, 'count-proxy.js'), String(port), targetHostPort], join(dir, 'proxy.log'));
  return server('count-proxy', proc, port);
}

export interface BenchSluiceOptions {
  storage: string;
  port: number;
  upstreamUrl: string;
  windows: 'always' | 'never';
  allowlist: string[];
}

/** The YAML config a bench sluice serves with: the bench host as defaultUpstream, so URL paths match every target. */
function sluiceConfigYaml(o: BenchSluiceOptions, adminPort: number): string {
  return toYaml(
    sluiceConfigDoc(o.storage, {
      windows: o.windows,
      allowlist: o.allowlist,
      extra: {
        listen: `127.0.0.1:${o.port}`,
        defaultUpstream: BENCH_HOST,
        upstreams: { [BENCH_HOST]: { url: o.upstreamUrl } },
        admin: { listen: `127.0.0.1:${adminPort}` },
      },
    }),
  );
}

export async function writeSluiceConfig(dir: string, o: Omit<BenchSluiceOptions, 'port'>): Promise<{ file: string; port: number }> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const file = join(dir, 'sluice.yaml');
  await writeFile(file, sluiceConfigYaml({ ...o, port }, await freePort()));
  return { file, port };
}

/** `node [nodeArgs] dist/src/main.js serve --config FILE`, ready once GET /v2/ answers 200. */
export async function startSluice(configFile: string, port: number, opts: { nodeArgs?: string[]; name?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Server> {
  const dir = dirname(configFile);
  const proc = await startProc(opts.name ?? 'sluice', process.execPath, [...SERVE_NODE_FLAGS, ...(opts.nodeArgs ?? []), SLUICE_MAIN, 'serve', '--config', configFile], join(dir, `${opts.name ?? 'sluice'}.log`), { cwd: dir, env: opts.env ?? process.env });
  return server(opts.name ?? 'sluice', proc, port);
}
