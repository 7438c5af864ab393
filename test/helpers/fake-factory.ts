// A fake Talos Image Factory on loopback: like factory.talos.dev it answers a manifest by tag with a 307 to another
// registry by digest, and every blob with a 307; a tag's first request may "build" for a while before any answer.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { closeServer, json, listenLoopback } from './http-server.js';

export interface FakeFactoryOptions {
  /** Where redirects point: `http://HOST:PORT` of the registry holding the images. */
  target: string;
  /** Factory name → name in the target registry, e.g. `metal-installer/<schematic>` → `factory/metal-installer/<schematic>`. */
  names: Record<string, string>;
  /** tag → digest, as the factory knows once built. */
  digests: Record<string, string>;
  /** How long a tag's first request waits before its answer (its build); later requests are answered at once. */
  buildMs?: number;
  /** Blob redirects go here instead of `target` (to test redirectHosts). */
  blobTarget?: string;
}

export interface FakeFactory {
  url: string;
  host: string;
  /** Every request line, in order. */
  requests: string[];
  /** Resolves once the first build of `tag` has finished (whether or not its client waited). */
  built(tag: string): Promise<void>;
  close(): Promise<void>;
}

export async function startFakeFactory(opts: FakeFactoryOptions): Promise<FakeFactory> {
  const requests: string[] = [];
  const builds = new Map<string, Promise<void>>();
  const build = (tag: string): Promise<void> => {
    let b = builds.get(tag);
    if (!b) {
      // The build runs on its own: a client that gives up does not cancel it, as with the real Factory.
      b = new Promise<void>((resolve) => setTimeout(resolve, opts.buildMs ?? 0).unref());
      builds.set(tag, b);
    }
    return b;
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    requests.push(`${req.method} ${req.url}`);
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/v2/' || path === '/v2') return json(res, 200, {});
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    const target = m ? opts.names[m[1]!] : undefined;
    if (!m || !target) return json(res, 404, { errors: [{ code: 'NAME_UNKNOWN', message: 'no such image', detail: null }] });
    const [, , kind, reference] = m as unknown as [string, string, string, string];
    let digest = reference;
    if (kind === 'manifests' && !reference.startsWith('sha256:')) {
      const known = opts.digests[reference];
      if (!known) return json(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'no such version', detail: null }] });
      await build(reference);
      digest = known;
    }
    const base = kind === 'blobs' && opts.blobTarget ? opts.blobTarget : opts.target;
    res.writeHead(307, { location: `${base}/v2/${target}/${kind}/${digest}`, 'content-length': 0 });
    res.end();
  };
  const server: Server = createServer((req, res) => void handle(req, res));
  const url = await listenLoopback(server);
  return {
    url,
    host: new URL(url).host,
    requests,
    built: (tag) => build(tag),
    close: () => closeServer(server),
  };
}

/** A server that only counts what reaches it (it should see nothing) and answers 404. */
export async function startCountingServer(): Promise<{ url: string; host: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    json(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'nothing here', detail: null }] });
  });
  const url = await listenLoopback(server);
  return { url, host: new URL(url).host, requests, close: () => closeServer(server) };
}
