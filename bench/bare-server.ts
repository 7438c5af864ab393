// The two bare ceilings, with no sluice logic at all: a plain Node `http` server streaming the file
// (fs.createReadStream → pipe) and a plain fastify route answering small content from memory.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { MediaType } from '../test/kit/oci.js';

export type BareKind = 'node' | 'fastify';

const MAX_IN_MEMORY = 4 * 1024 * 1024;

function contentType(urlPath: string): string {
  return urlPath.includes('/manifests/') ? MediaType.ociManifest : 'application/octet-stream';
}

/** Maps a request path to a file under `root`, or undefined for anything outside /v2/<name>/(blobs|manifests)/. */
export function fileFor(root: string, url: string): string | undefined {
  const path = decodeURIComponent(url.split('?')[0] ?? '');
  if (!/^\/v2\/[a-z0-9._/-]+\/(blobs|manifests)\/[A-Za-z0-9_.:-]+$/.test(path) || path.includes('..')) return undefined;
  return join(root, path);
}

/** Plain `http` + createReadStream().pipe(res): what Node streams a file at, with a memoised stat. */
export function bareNodeServer(root: string): Server {
  const sizes = new Map<string, number>();
  return createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/v2/' || url === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 }).end('{}');
      return;
    }
    const file = fileFor(root, url);
    const known = file === undefined ? undefined : sizes.get(file);
    const answer = (size: number | undefined): void => {
      if (file === undefined || size === undefined) {
        res.writeHead(404, { 'content-length': 0 }).end();
        return;
      }
      res.writeHead(200, { 'content-type': contentType(url), 'content-length': size });
      if (req.method === 'HEAD') res.end();
      else createReadStream(file).pipe(res);
    };
    if (known !== undefined || file === undefined) {
      answer(known);
      return;
    }
    stat(file).then(
      (s) => {
        sizes.set(file, s.size);
        answer(s.size);
      },
      () => answer(undefined),
    );
  });
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** One fastify GET route answering every small file of the tree from memory (manifests, the 1 KiB blob). */
export async function bareFastify(root: string): Promise<FastifyInstance> {
  const bodies = new Map<string, { body: Buffer; type: string; digest: string }>();
  for (const file of await walk(join(root, 'v2'))) {
    if ((await stat(file)).size > MAX_IN_MEMORY) continue;
    const urlPath = file.slice(root.length);
    const body = await readFile(file);
    bodies.set(urlPath, { body, type: contentType(urlPath), digest: `sha256:${createHash('sha256').update(body).digest('hex')}` });
  }
  const app = Fastify({ logger: false, keepAliveTimeout: 65_000 });
  app.get('/v2/', async (_req, reply) => reply.header('content-type', 'application/json').send('{}'));
  app.get('/v2/*', async (req, reply) => {
    const hit = bodies.get(req.url.split('?')[0] ?? '');
    if (!hit) return reply.code(404).send();
    return reply.header('content-type', hit.type).header('docker-content-digest', hit.digest).send(hit.body);
  });
  return app;
}

/** Child-process entry: `node bare-server.js node|fastify ROOT PORT`. */
async function main(): Promise<void> {
  const [kind, root, portText] = process.argv.slice(2);
  const port = Number(portText);
  if ((kind !== 'node' && kind !== 'fastify') || !root || !Number.isInteger(port)) {
    process.stderr.write('usage: bare-server.js node|fastify ROOT PORT\n');
    process.exitCode = 2;
    return;
  }
  if (kind === 'node') {
    const srv = bareNodeServer(root);
    srv.keepAliveTimeout = 65_000;
    srv.listen(port, '127.0.0.1');
    process.once('SIGTERM', () => {
      srv.close();
      srv.closeAllConnections();
    });
  } else {
    const app = await bareFastify(root);
    await app.listen({ host: '127.0.0.1', port });
    process.once('SIGTERM', () => void app.close());
  }
  process.stdout.write(`bare ${kind} listening on 127.0.0.1:${port}\n`);
}

if (process.argv[1]?.endsWith('bare-server.js')) void main();
