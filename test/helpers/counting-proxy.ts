// A counting HTTP proxy in front of the test object store (RGW): every request the S3 client makes is counted by
// method before it is passed on unchanged (the Host header too, so SigV4 signatures still verify). A test can hold
// GET bodies after their first chunk, to catch a process mid-download.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface CountingProxy {
  url: string;
  /** Requests seen, by method (GET, HEAD, PUT, …). */
  counts: Record<string, number>;
  /** GETs only, whose responses carry bytes. */
  gets(): number;
  /** While true, a GET's body stops after its first chunk (until released); `onHeld` fires then. */
  hold: boolean;
  onHeld?: () => void;
  release(): void;
  close(): Promise<void>;
}

export async function countingProxy(target: string): Promise<CountingProxy> {
  const to = new URL(target);
  const held: Array<() => void> = [];
  const proxy: CountingProxy = {
    url: '',
    counts: {},
    gets: () => proxy.counts.GET ?? 0,
    hold: false,
    release: () => {
      proxy.hold = false;
      for (const go of held.splice(0)) go();
    },
    close: () => new Promise<void>((resolve) => {
      proxy.release();
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
  const pass = (req: IncomingMessage, res: ServerResponse): void => {
    const method = req.method ?? 'GET';
    proxy.counts[method] = (proxy.counts[method] ?? 0) + 1;
    const out = request({ host: to.hostname, port: to.port, method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      if (method !== 'GET' || !proxy.hold) return void up.pipe(res);
      up.once('data', (first: Buffer) => {
        res.write(first);
        up.pause();
        held.push(() => {
          up.pipe(res);
          up.resume();
        });
        proxy.onHeld?.();
      });
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  };
  const server: Server = createServer(pass);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
