// The boot-storm's simulated nodes, run as a child process so the client has its own event loop. Each node
// pulls the image list one image after another as containerd does (HEAD the tag, GET the index by digest,
// GET its platform's manifest, then config and layers, 3 at a time, with `Range: bytes=0-`), over its own
// undici pool of keep-alive connections, counting body bytes as they arrive and keeping none of them.
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { Pool, type Dispatcher } from 'undici';

export interface StormPlan {
  url: string;
  /** containerd's `?ns=<registry host>` on every mirror request. */
  ns?: string;
  /** Global numbers of the nodes this process simulates. */
  nodes: number[];
  images: Array<{ name: string; tag: string }>;
  platform: { os: string; architecture: string };
  /** containerd's max_concurrent_downloads (3 by default in the CRI plugin). */
  layerConcurrency: number;
}

export interface NodeResult {
  node: number;
  startMs: number;
  endMs: number;
  requests: number;
  bodyBytes: number;
  errors: string[];
}

export interface StormClientResult {
  nodes: NodeResult[];
  cpuSeconds: number;
  maxRssBytes: number;
}

const epochMs = (): number => performance.timeOrigin + performance.now();

export const CONTAINERD_ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*';

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string };
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  bytes: number;
  body?: Buffer;
}

/** One request; the body is counted and dropped unless `keep` (manifests). */
export function call(pool: Dispatcher, opts: { method: 'GET' | 'HEAD'; path: string; headers: Record<string, string> }, keep = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const a: Answer = { status: 0, headers: {}, bytes: 0 };
    const chunks: Buffer[] = [];
    pool.dispatch(opts, {
      // undici takes a handler for its new API only when it has onRequestStart.
      onRequestStart() {},
      onResponseStart(_c, status, headers) {
        a.status = status;
        a.headers = headers;
      },
      onResponseData(_c, chunk) {
        a.bytes += chunk.length;
        if (keep) chunks.push(chunk);
      },
      onResponseEnd() {
        if (keep) a.body = Buffer.concat(chunks);
        resolve(a);
      },
      onResponseError(_c, e) {
        reject(e);
      },
    });
  });
}

/** The manifest of `platform` in an index or list (the first match, as containerd's default matcher). */
export function pickPlatform(index: { manifests?: Desc[] }, platform: { os: string; architecture: string }): Desc | undefined {
  return (index.manifests ?? []).find((m) => m.platform?.os === platform.os && m.platform?.architecture === platform.architecture);
}

/** Runs `fn` over `items`, at most `limit` at a time. */
export async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

class Node {
  readonly result: NodeResult;
  /** The node's content store: a blob already fetched is not fetched again (shared base layers). */
  private readonly have = new Set<string>();

  constructor(
    private readonly plan: StormPlan,
    private readonly pool: Pool,
    node: number,
  ) {
    this.result = { node, startMs: 0, endMs: 0, requests: 0, bodyBytes: 0, errors: [] };
  }

  private path(name: string, kind: 'manifests' | 'blobs', ref: string): string {
    return `/v2/${name}/${kind}/${ref}${this.plan.ns ? `?ns=${encodeURIComponent(this.plan.ns)}` : ''}`;
  }

  private async get(method: 'GET' | 'HEAD', path: string, headers: Record<string, string>, keep: boolean): Promise<Answer> {
    this.result.requests++;
    const a = await call(this.pool, { method, path, headers: { 'user-agent': 'containerd/1.7 (sluice bench)', ...headers } }, keep);
    this.result.bodyBytes += a.bytes;
    return a;
  }

  private async manifest(name: string, d: Desc): Promise<{ doc: { manifests?: Desc[]; config?: Desc; layers?: Desc[] } }> {
    const a = await this.get('GET', this.path(name, 'manifests', d.digest), { accept: `${d.mediaType}, */*` }, true);
    const body = a.body ?? Buffer.alloc(0);
    if (a.status !== 200) throw new Error(`GET ${name} manifest ${d.digest}: ${a.status} ${body.subarray(0, 200).toString()}`);
    const got = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (got !== d.digest) throw new Error(`${name} manifest ${d.digest} arrived as ${got}`);
    return { doc: JSON.parse(body.toString('utf8')) as { manifests?: Desc[]; config?: Desc; layers?: Desc[] } };
  }

  private async blob(name: string, d: Desc): Promise<void> {
    if (this.have.has(d.digest)) return;
    const a = await this.get('GET', this.path(name, 'blobs', d.digest), { accept: `${d.mediaType}, */*`, range: 'bytes=0-' }, false);
    if ((a.status !== 200 && a.status !== 206) || a.bytes !== d.size) throw new Error(`GET ${name} blob ${d.digest}: ${a.status}, ${a.bytes} of ${d.size} bytes`);
    this.have.add(d.digest);
  }

  private async image(name: string, tag: string): Promise<void> {
    const head = await this.get('HEAD', this.path(name, 'manifests', tag), { accept: CONTAINERD_ACCEPT }, false);
    const digest = head.headers['docker-content-digest'];
    const type = head.headers['content-type'];
    if (head.status !== 200 || typeof digest !== 'string' || typeof type !== 'string') throw new Error(`HEAD ${name}:${tag}: ${head.status}`);
    let top = await this.manifest(name, { mediaType: type, digest, size: Number(head.headers['content-length'] ?? 0) });
    if (INDEX_TYPES.has(type)) {
      const child = pickPlatform(top.doc, this.plan.platform);
      if (!child) throw new Error(`${name}:${tag} has no ${this.plan.platform.os}/${this.plan.platform.architecture} manifest`);
      top = await this.manifest(name, child);
    }
    const blobs = [...(top.doc.config ? [top.doc.config] : []), ...(top.doc.layers ?? [])];
    await mapLimit(blobs, this.plan.layerConcurrency, (d) => this.blob(name, d));
  }

  async pull(): Promise<NodeResult> {
    this.result.startMs = epochMs();
    for (const img of this.plan.images) {
      try {
        await this.image(img.name, img.tag);
      } catch (e) {
        this.result.errors.push(e instanceof Error ? e.message : String(e));
      }
    }
    this.result.endMs = epochMs();
    return this.result;
  }
}

/** Every node of the plan, started together; each node is its own machine with its own connections. */
export async function runStorm(plan: StormPlan): Promise<StormClientResult> {
  const pools = plan.nodes.map(() => new Pool(plan.url, { connections: plan.layerConcurrency, keepAliveTimeout: 30_000 }));
  const cpu0 = process.cpuUsage();
  try {
    const nodes = await Promise.all(plan.nodes.map((n, i) => new Node(plan, pools[i] as Pool, n).pull()));
    const cpu = process.cpuUsage(cpu0);
    return { nodes, cpuSeconds: (cpu.user + cpu.system) / 1e6, maxRssBytes: process.resourceUsage().maxRSS * 1024 };
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
}

/** Child-process entry: `node storm-client.js '<StormPlan JSON>'`; prints `ready`, waits for `go` on stdin, prints the result. */
async function main(): Promise<void> {
  const plan = JSON.parse(process.argv[2] ?? '') as StormPlan;
  // Open the connections' event loop and JIT before the start signal, so every process starts alike.
  process.stdout.write('ready\n');
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() !== 'go') continue;
    lines.close();
    process.stdout.write(`${JSON.stringify(await runStorm(plan))}\n`);
    return;
  }
}

if (process.argv[1]?.endsWith('storm-client.js')) void main();
