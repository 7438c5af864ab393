// The request log (config `requestLog: true`): one entry per registry request when its answer has gone out or the
// client has left, naming the node (client-identity.ts). Off by default: a line per cached blob costs more than
// serving it. Written on the raw response's close, so streamed (hijacked) blob answers are logged too.
import type { FastifyInstance } from 'fastify';
import { identityOf, type ClientIdentity } from './client-identity.js';

export interface RequestLogEntry extends ClientIdentity {
  method: string;
  url: string;
  status: number;
  /** Bytes written to the connection for this answer, headers included (requests on a connection are sequential). */
  sentBytes: number;
  ms: number;
  /** False when the connection closed before the whole answer was written. */
  complete: boolean;
  userAgent?: string;
}

export function logRequests(app: FastifyInstance, write: (entry: RequestLogEntry) => void): void {
  app.addHook('onRequest', async (req, reply) => {
    const started = process.hrtime.bigint();
    const socket = req.raw.socket;
    const before = socket.bytesWritten;
    reply.raw.once('close', () => {
      const res = reply.raw;
      const ua = req.headers['user-agent'];
      write({
        method: req.method,
        url: req.url,
        status: res.statusCode,
        sentBytes: socket.bytesWritten - before,
        ms: Math.round(Number(process.hrtime.bigint() - started) / 1e5) / 10,
        complete: res.writableFinished,
        // The identity is read at the end: basic auth is checked after this hook.
        ...identityOf(req),
        ...(typeof ua === 'string' ? { userAgent: ua } : {}),
      });
    });
  });
}
