// Who sent a request, as the denied log and the request log name the node: its source address, plus the subject
// of its verified mTLS certificate or its basic-auth user when the listener has them (Talos sends no node id,
// and containerd's User-Agent names only containerd).
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';

export interface ClientIdentity {
  address: string;
  /** Subject of the client certificate the handshake verified (`CN=node1`), when mTLS is on. */
  cert?: string;
  /** The basic-auth user whose credentials were checked. */
  user?: string;
}

const users = new WeakMap<IncomingMessage, string>();
// A connection carries one certificate for its whole life: read it once per socket, not per request.
const subjects = new WeakMap<object, string | null>();

/** Called by the basic-auth check once credentials are verified. */
export function rememberUser(req: IncomingMessage, user: string): void {
  users.set(req, user);
}

export function identityOf(req: { ip: string; raw: IncomingMessage }): ClientIdentity {
  const cert = certSubject(req.raw);
  const user = users.get(req.raw);
  return { address: req.ip, ...(cert ? { cert } : {}), ...(user !== undefined ? { user } : {}) };
}

/** One line for the denied log's `client`: `10.5.0.2`, `10.5.0.2 (cert CN=node1)`, `10.5.0.2 (user node1)`. */
export function describeClient(id: ClientIdentity): string {
  const parts = [id.cert ? `cert ${id.cert}` : '', id.user !== undefined ? `user ${id.user}` : ''].filter(Boolean);
  return parts.length === 0 ? id.address : `${id.address} (${parts.join(', ')})`;
}

export function clientOf(req: { ip: string; raw: IncomingMessage }): string {
  const cert = certSubject(req.raw);
  const user = users.get(req.raw);
  // The common case (no mTLS, no basic auth) builds nothing: every request names its client.
  if (cert === undefined && user === undefined) return req.ip;
  return describeClient({ address: req.ip, ...(cert ? { cert } : {}), ...(user !== undefined ? { user } : {}) });
}

function certSubject(raw: IncomingMessage): string | undefined {
  const socket = raw.socket as Partial<TLSSocket> | null;
  if (!socket || typeof socket.getPeerCertificate !== 'function' || socket.authorized !== true) return undefined;
  const known = subjects.get(socket);
  if (known !== undefined) return known ?? undefined;
  const subject = formatSubject(socket.getPeerCertificate().subject);
  subjects.set(socket, subject ?? null);
  return subject;
}

/** `CN=node1,O=nodes`: the subject's attributes as the certificate lists them (multi-valued ones joined with +). */
function formatSubject(subject: unknown): string | undefined {
  if (typeof subject !== 'object' || subject === null) return undefined;
  const parts = Object.entries(subject as Record<string, unknown>)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : String(v)}`);
  return parts.length > 0 ? parts.join(',') : undefined;
}
