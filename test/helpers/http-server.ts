// Small pieces for the fake upstreams the tests write with node:http: a JSON answer, and a write that respects
// backpressure and notices a client that went away.
import type { ServerResponse } from 'node:http';

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
