// Small pieces for the fake upstreams the tests write with node:http: listening on loopback and closing, a JSON
// answer, and a write that respects backpressure and notices a client that went away.
import { once } from 'node:events';
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Listens on 127.0.0.1 on a free port; resolves to the server's `http://127.0.0.1:PORT`. */
export async function listenLoopback(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Cuts every connection (kept-alive ones too) and waits until the server has closed. */
export async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

export function json(res: ServerResponse, status: number, doc: unknown): void {
  const body = JSON.stringify(doc);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Writes a piece, waiting for 'drain' when the socket is full; false once the response is gone. */
export async function write(res: ServerResponse, piece: Buffer): Promise<boolean> {
  if (res.destroyed) return false;
  if (!res.write(piece)) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        res.off('drain', done).off('close', done);
        resolve();
      };
      res.on('drain', done).on('close', done);
    });
  }
  return !res.destroyed;
}
